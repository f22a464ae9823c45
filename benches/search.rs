//! The range search alone (`search::find_free`) over the memory store, at every fill level of
//! ranges from a /24 to a /8 and a /64: its cost must not follow the fill, nor where the free
//! addresses lie, nor the size of the range.
//!
//! Ids: `hinted/<range>/<fill>`, and `keys_read/<range>/<fill>` is printed on stderr once per
//! case: how many keys one search reads, on average over 200 searches.
//!
//! - Ranges: `v4_24`, `v4_16`, `v4_12`, `v4_8` are whole subnets; `v6_64` a whole /64, of
//!   which only the fills that can be written exist (empty, and the /12-sized clustered case:
//!   2^20 addresses taken at the start of the range).
//! - Fills: `0`, `50`, `90`, `99`, `99.9`, `99.99` per cent taken, spread evenly over the range
//!   (address `i` taken iff `i * K mod size` is below the number to take), at least one free;
//!   `one` (exactly one free, at a random spot); `clustered` (99.9 % taken, every free address
//!   in one run at the end of the range, what raising `rangeEnd` produces); `full`.
//!
//! Each store is filled once, the hints written by twenty searches before measuring (as the first
//! ADDs after an import write them), and nothing is committed while measuring, so the fill
//! stays put. The /8 cases above 50 % need several GiB and minutes of setup: they run only
//! when named (`cargo bench --bench search -- 'hinted/v4_8/99|hinted/v4_8/full'`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use kube_ipam::config::Range;
use kube_ipam::engine::search::find_free;
use kube_ipam::engine::Pool;
use kube_ipam_store::spy::{Spy, Tally};
use kube_ipam_store::{Keys, LeaseStore, Mutation};

type Case = (&'static str, &'static str, &'static str, &'static str);

const RANGES: [Case; 5] = [
    ("v4_24", "10.0.0.0/24", "10.0.0.1", "10.0.0.254"),
    ("v4_16", "10.0.0.0/16", "10.0.0.1", "10.0.255.254"),
    ("v4_12", "10.0.0.0/12", "10.0.0.1", "10.15.255.254"),
    ("v4_8", "10.0.0.0/8", "10.0.0.1", "10.255.255.254"),
    ("v6_64", "fd00::/64", "fd00::1", "fd00::ffff:ffff:ffff:ffff"),
];

#[derive(Clone, Copy)]
enum Fill {
    /// Per million taken, spread evenly.
    Spread(u128),
    One,
    Clustered,
    Full,
}

const FILLS: [(&str, Fill); 9] = [
    ("0", Fill::Spread(0)),
    ("50", Fill::Spread(500_000)),
    ("90", Fill::Spread(900_000)),
    ("99", Fill::Spread(990_000)),
    ("99.9", Fill::Spread(999_000)),
    ("99.99", Fill::Spread(999_900)),
    ("one", Fill::One),
    ("clustered", Fill::Clustered),
    ("full", Fill::Full),
];

const SPREAD: u128 = 2_654_435_761;

fn pool(case: Case) -> Pool {
    Pool::new(&Range {
        subnet: case.1.parse().expect("subnet"),
        range_start: case.2.parse().expect("start"),
        range_end: case.3.parse().expect("end"),
        gateway: None,
        fixed: None,
        exclude: vec![],
    })
}

/// Offsets in the range that are taken, or `None` when the case cannot be written.
fn taken(size: u128, fill: Fill) -> Option<Box<dyn Iterator<Item = u128>>> {
    const MAX: u128 = 20_000_000;
    let n = match fill {
        Fill::Spread(ppm) => (size * ppm / 1_000_000).min(size - 1),
        Fill::One => size - 1,
        Fill::Clustered => size - size / 1000,
        Fill::Full => size,
    };
    if n > MAX {
        // A /64 can hold only the clustered slice: 2^20 taken at its start.
        return matches!(fill, Fill::Clustered).then(|| Box::new(0..1u128 << 20) as Box<_>);
    }
    Some(match fill {
        _ if n == 0 => Box::new(std::iter::empty()),
        Fill::Spread(_) => Box::new((0..size).filter(move |i| i * SPREAD % size < n)),
        Fill::One => {
            let free = size * 7 / 11;
            Box::new((0..size).filter(move |i| *i != free))
        }
        Fill::Clustered | Fill::Full => Box::new(0..n),
    })
}

/// What one search read, in keys: each entry and each key looked up.
fn keys_read(t: Tally) -> usize {
    t.gets + t.entries
}

fn search(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let keys = Keys::new("/kube-ipam", "bench");
    // Criterion's filter is a regular expression; plain ids joined by `|` are all this
    // setup needs to know, so that only the cases asked for are written.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .flat_map(|a| a.split('|').map(str::to_owned).collect::<Vec<_>>())
        .collect();
    for case in RANGES {
        for (label, fill) in FILLS {
            let id = format!("{}/{label}", case.0);
            let wanted = filter.is_empty()
                || filter
                    .iter()
                    .any(|f| format!("hinted/{id}").contains(f.as_str()));
            let p = pool(case);
            let size = p.end - p.start + 1;
            if !wanted {
                continue;
            }
            let Some(offsets) = taken(size, fill) else {
                continue;
            };
            // Large fills only by name: they need GiB.
            if filter.is_empty()
                && case.0 == "v4_8"
                && !matches!(fill, Fill::Spread(0) | Fill::Spread(500_000))
            {
                continue;
            }
            let store = Spy::default();
            let mut state = 0x9e37_79b9_7f4a_7c15u64;
            let mut rnd = move || {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (state >> 11) as u128
            };
            rt.block_on(async {
                let mut batch = Vec::with_capacity(100_000);
                for o in offsets {
                    batch.push(Mutation::Put(keys.ip(p.addr(p.start + o)), vec![]));
                    if batch.len() == 100_000 {
                        store.inner().commit(&[], &batch).await.expect("fill");
                        batch.clear();
                    }
                }
                store.inner().commit(&[], &batch).await.expect("fill");
                // The first searches after a fill written behind the engine's back write the
                // hints: one that finds a free address stops there, so the blocks after it
                // are marked by later ones. A few of them heal the whole range.
                for _ in 0..20 {
                    find_free(&store, &keys, &p, &mut rnd)
                        .await
                        .expect("search");
                }
                store.take();
                for _ in 0..200 {
                    find_free(&store, &keys, &p, &mut rnd)
                        .await
                        .expect("search");
                }
                eprintln!(
                    "keys_read/{id}: {:.0} per search",
                    keys_read(store.take()) as f64 / 200.0
                );
            });
            let mut g = c.benchmark_group("hinted");
            g.bench_function(&id, |b| {
                b.iter(|| {
                    rt.block_on(async {
                        black_box(
                            find_free(&store, &keys, &p, &mut rnd)
                                .await
                                .expect("search"),
                        )
                    })
                })
            });
            g.finish();
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(1));
    targets = search
}
criterion_main!(benches);
