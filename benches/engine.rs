//! Engine benches: the window bitmap alone, the range search alone, and a full allocate +
//! release cycle, over the in-memory store and the SQLite store, in ranges from a /24 to a /8
//! and a /64, each pre-filled to a given level. The search counts the records of a window in
//! parts and reads only a part with room, guided by the free-space hints (docs/design.md), so
//! its cost follows neither the size of the range nor its fill.
//!
//! Groups and ids:
//!
//! - `bitmap/next_clear_wrapping/<fill>`: one 1024-bit window, fills 0, 50, 99 and 99.9 %
//!   (99.9 % is 1023 of 1024 bits set).
//! - `add_release/<store>/<range>/<fill>`: `Allocator::add` of one dynamic address then
//!   `Allocator::release` of it, so the fill stays the same from one iteration to the next.
//! - `search/<range>/<fill>`: `search::find_free` alone over the memory store, nothing committed.
//!
//! Ranges: `v4_24`, `v4_16` and `v4_8` are whole subnets (rangeStart..rangeEnd is every host
//! address of the /24, /16 or /8: 254, 65 534 and 16 777 214 addresses). `v6_64` is a /64 whose
//! dynamic range is the whole subnet (2^64 - 1 addresses): only its empty case is measured, as
//! 2^64 records cannot be written. `v6_64_dense` is a /64 subnet whose dynamic range
//! (rangeStart..rangeEnd) is a 2^20 slice of it, that slice pre-filled like the IPv4 ranges: it
//! shows IPv6 keys in a crowded neighbourhood, not a crowded /64.
//!
//! Fill: the address records are written straight into the store before measuring, spread
//! over the whole dynamic range (address index `i` is taken iff `i * K mod size` is below the
//! number to take, `K` a prime that does not divide `size`). The free addresses then form an
//! arithmetic progression modulo `size`, which is not always even: at 99.9 % the /8 has a free
//! address in 60 % of its 1024-address windows (as a random fill would), the /16 in only 20 of
//! its 64 windows (gaps of up to 10 windows), so the /16 at 99.9 % is the worst case here. The number taken is
//! `size * fill` rounded down but always leaves one address free: a /24 "at 99.9 %" is 253 of
//! 254 taken (99.6 %), "at 99 %" 251 of 254 (98.8 %). The records hold an empty value: the
//! search only looks at which keys exist, and the cycle never reads another holder's record.
//!
//! Setup of each case happens only when its id passes the command-line filter, once, and is
//! reported on stderr (`setup <id>: <n> records in <s>, rss <MiB>`). Over the memory store the
//! /8 at 99.9 % (16.8 M records) takes about 9 s to write and 2.5 GiB. The SQLite store
//! measures the /8 empty only: its records go in through `commit` (the store exposes nothing
//! faster), and the /8 at 99 % (16.6 M) needs minutes of setup. Set
//! `KUBE_IPAM_BENCH_SQLITE_BIG=1` to add `add_release/sqlite/v4_8/99` anyway.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use kube_ipam::config::{IpamConf, Range, RangeSet};
use kube_ipam::engine::search::find_free;
use kube_ipam::engine::{AddRequest, Allocator, Bitmap, Pool};
use kube_ipam_sqlite::SqliteStore;
use kube_ipam_store::{Holder, Keys, LeaseStore, MemoryStore, Mutation};

fn conf(subnet: &str, start: &str, end: &str) -> IpamConf {
    IpamConf {
        ipam_type: "kube-ipam".into(),
        range_sets: vec![RangeSet {
            ranges: vec![Range {
                subnet: subnet.parse().expect("subnet"),
                range_start: start.parse().expect("start"),
                range_end: end.parse().expect("end"),
                gateway: None,
                fixed: None,
                exclude: vec![],
            }],
        }],
        routes: vec![],
        resolv_conf: None,
        etcd: None,
        kube_config: None,
        data_dir: PathBuf::new(),
        log: kube_ipam::config::LogConf {
            file: PathBuf::new(),
            level: "info".into(),
            max_bytes: 10 << 20,
        },
        sticky_ips: false,
        key_prefix: "/kube-ipam".into(),
        write_original_keys: false,
        call_timeout: kube_ipam::config::DEFAULT_CALL_TIMEOUT,
        node_lost_after: Some(kube_ipam::config::DEFAULT_NODE_LOST_AFTER),
        reuse_delay: std::time::Duration::ZERO,
    }
}

/// A range to bench: name in the ids, subnet, rangeStart, rangeEnd.
type Case = (&'static str, &'static str, &'static str, &'static str);

const V4_24: Case = ("v4_24", "10.0.0.0/24", "10.0.0.1", "10.0.0.254");
const V4_16: Case = ("v4_16", "10.0.0.0/16", "10.0.0.1", "10.0.255.254");
const V4_8: Case = ("v4_8", "10.0.0.0/8", "10.0.0.1", "10.255.255.254");
const V6_64: Case = ("v6_64", "fd00::/64", "fd00::1", "fd00::ffff:ffff:ffff:ffff");
/// A /64 subnet whose dynamic range is the 2^20 addresses fd00::1..=fd00::10:0000.
const V6_64_DENSE: Case = ("v6_64_dense", "fd00::/64", "fd00::1", "fd00::10:0");

/// Fill levels: label in the ids, per mille of the dynamic range taken.
const FILLS: [(&str, u128); 4] = [("0", 0), ("50", 500), ("99", 990), ("99.9", 999)];

/// Multiplier of the even spread; a prime, checked not to divide the range size.
const SPREAD: u128 = 2_654_435_761;

fn keys() -> Keys {
    Keys::new("/kube-ipam", "bench")
}

/// The address keys of `pool` taken at `permille`, evenly spread, one address always left free.
fn taken_keys(pool: &Pool, keys: &Keys, permille: u128) -> impl Iterator<Item = String> {
    let size = pool.end - pool.start + 1;
    assert!(pool.holes.is_empty(), "bench ranges have no holes");
    assert_ne!(size % SPREAD, 0, "spread multiplier divides the range size");
    let take = (size * permille / 1000).min(size - 1);
    let (start, keys) = (pool.start, keys.clone());
    let addr = {
        let pool = pool.clone();
        move |v| pool.addr(v)
    };
    (0..if take == 0 { 0 } else { size })
        .filter(move |i| i * SPREAD % size < take)
        .map(move |i| keys.ip(addr(start + i)))
}

/// Writes the fill of `pool` into `store` through `commit`, `batch` records per commit.
/// Returns how many records were written.
fn prefill<S: LeaseStore>(
    rt: &tokio::runtime::Runtime,
    store: &S,
    pool: &Pool,
    permille: u128,
    batch: usize,
) -> usize {
    let keys = keys();
    let mut n = 0;
    let mut muts = Vec::with_capacity(batch);
    rt.block_on(async {
        for k in taken_keys(pool, &keys, permille) {
            muts.push(Mutation::Put(k, Vec::new()));
            if muts.len() == batch {
                n += muts.len();
                assert!(store.commit(&[], &muts).await.expect("prefill"));
                muts.clear();
            }
        }
        if !muts.is_empty() {
            n += muts.len();
            assert!(store.commit(&[], &muts).await.expect("prefill"));
        }
    });
    n
}

/// Resident set size of this process, in MiB.
fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

fn pool_of(conf: &IpamConf) -> Pool {
    Pool::new(&conf.range_sets[0].ranges[0])
}

/// An allocator over `store` pre-filled for `case` at `permille`, with the setup reported.
fn allocator<S: LeaseStore>(
    rt: &tokio::runtime::Runtime,
    id: &str,
    store: S,
    case: Case,
    permille: u128,
    batch: usize,
) -> Allocator<S> {
    let conf = conf(case.1, case.2, case.3);
    let started = Instant::now();
    let n = prefill(rt, &store, &pool_of(&conf), permille, batch);
    eprintln!(
        "setup {id}: {n} records in {:.1?}, rss {} MiB",
        started.elapsed(),
        rss_mib()
    );
    Allocator::new(store, keys(), &conf)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// One measured add + release of a dynamic address; `n` makes every container id new.
fn add_release<S: LeaseStore>(rt: &tokio::runtime::Runtime, alloc: &Allocator<S>, n: u64) {
    let req = AddRequest {
        holder: Holder {
            container_id: format!("c{n}"),
            ifname: "eth0".into(),
            pod: None,
            node: "n".into(),
        },
        wanted: vec![],
        sticky: false,
        pool: None,
    };
    rt.block_on(async {
        let att = alloc.add(&req).await.expect("add");
        alloc
            .release(&req.holder.container_id, "eth0")
            .await
            .expect("release");
        black_box(att)
    });
}

fn bitmap(c: &mut Criterion) {
    let mut g = c.benchmark_group("bitmap");
    for (fill, set) in [("0", 0usize), ("50", 512), ("99", 1014), ("99.9", 1023)] {
        let mut b = Bitmap::new(1024);
        for i in 0..set {
            b.set(i * 7919 % 1024);
        }
        assert_eq!(b.count_clear(), 1024 - set);
        g.bench_with_input(
            BenchmarkId::new("next_clear_wrapping", fill),
            &b,
            |bench, b| {
                let mut spot = 0;
                bench.iter(|| {
                    spot = (spot + 389) % 1024;
                    black_box(b.next_clear_wrapping(spot))
                })
            },
        );
    }
    g.finish();
}

/// The memory store: add + release, then the search alone on the same pre-filled store, so
/// each fill of each range is written once.
fn memory(c: &mut Criterion) {
    let rt = runtime();
    let mut cases: Vec<(Case, &str, u128)> = Vec::new();
    for case in [V4_24, V4_16, V4_8] {
        for (label, permille) in FILLS {
            cases.push((case, label, permille));
        }
    }
    cases.push((V6_64, "0", 0));
    cases.push((V6_64_DENSE, "99", 990));
    for (case, label, permille) in cases {
        let id = format!("{}/{label}", case.0);
        let mut made: Option<Allocator<MemoryStore>> = None;
        let made_for = |made: &mut Option<Allocator<MemoryStore>>| {
            if made.is_none() {
                let what = format!("memory/{id}");
                *made = Some(allocator(
                    &rt,
                    &what,
                    MemoryStore::new(),
                    case,
                    permille,
                    4096,
                ));
            }
        };

        let mut g = c.benchmark_group("add_release");
        let mut n = 0u64;
        g.bench_function(format!("memory/{id}"), |b| {
            made_for(&mut made);
            let alloc = made.as_ref().expect("made");
            b.iter(|| {
                n += 1;
                add_release(&rt, alloc, n)
            })
        });
        g.finish();

        let mut g = c.benchmark_group("search");
        g.bench_function(&id, |b| {
            made_for(&mut made);
            let alloc = made.as_ref().expect("made");
            let pool = alloc.pools().next().expect("pool").clone();
            let mut state = 0x9e37_79b9_7f4a_7c15u64;
            let mut rnd = move || {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (state >> 11) as u128
            };
            b.iter(|| {
                rt.block_on(async {
                    let found = find_free(alloc.store(), alloc.keys(), &pool, &mut rnd)
                        .await
                        .expect("search");
                    black_box(found.expect("a free address"))
                })
            })
        });
        g.finish();
        // The store of this case is dropped here, before the next one is written.
    }
}

/// A SQLite store in a temporary directory; the store closes before the directory goes.
struct Sqlite {
    alloc: Allocator<SqliteStore>,
    _dir: tempfile::TempDir,
}

fn sqlite(c: &mut Criterion) {
    let rt = runtime();
    let mut cases: Vec<(Case, &str, u128)> = Vec::new();
    for case in [V4_24, V4_16] {
        for (label, permille) in FILLS {
            cases.push((case, label, permille));
        }
    }
    cases.push((V4_8, "0", 0));
    // 16.6 M records through `commit` take about three minutes to write: opt in.
    if std::env::var_os("KUBE_IPAM_BENCH_SQLITE_BIG").is_some() {
        cases.push((V4_8, "99", 990));
    }
    let mut g = c.benchmark_group("add_release");
    for (case, label, permille) in cases {
        let id = format!("sqlite/{}/{label}", case.0);
        let mut made: Option<Sqlite> = None;
        let mut n = 0u64;
        g.bench_function(&id, |b| {
            let s = made.get_or_insert_with(|| {
                let dir = tempfile::tempdir().expect("tempdir");
                let store = SqliteStore::open(dir.path(), Duration::from_secs(5)).expect("sqlite");
                Sqlite {
                    alloc: allocator(&rt, &id, store, case, permille, 10_000),
                    _dir: dir,
                }
            });
            b.iter(|| {
                n += 1;
                add_release(&rt, &s.alloc, n)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bitmap, memory, sqlite);
criterion_main!(benches);
