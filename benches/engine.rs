//! Engine benches: the bitmap alone, and a full allocate + release cycle over the in-memory
//! store in ranges from a /24 to a /64, so growth with range size shows directly.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use kube_ipam::config::{IpamConf, Range, RangeSet};
use kube_ipam::engine::{AddRequest, Allocator, Bitmap, Pool};
use kube_ipam_store::{Compare, Holder, Keys, LeaseStore, MemoryStore, Mutation};

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
            }],
        }],
        routes: vec![],
        resolv_conf: None,
        etcd: None,
        kube_config: None,
        data_dir: PathBuf::new(),
        log_file: PathBuf::new(),
        log_level: "info".into(),
        sticky_ips: false,
        log_max_bytes: 10 << 20,
        key_prefix: "/kube-ipam".into(),
    }
}

fn bitmap(c: &mut Criterion) {
    let mut g = c.benchmark_group("bitmap");
    for fill in [0usize, 50, 99] {
        let mut b = Bitmap::new(1024);
        for i in 0..1024 * fill / 100 {
            b.set(i * 7919 % 1024);
        }
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

fn cycle(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("add_release");
    // Empty ranges of every size, and a /24 half full: cost should not follow the size.
    let cases = [
        ("v4_24", "10.0.0.0/24", "10.0.0.1", "10.0.0.254", false),
        (
            "v4_24_half_full",
            "10.0.0.0/24",
            "10.0.0.1",
            "10.0.0.254",
            true,
        ),
        ("v4_16", "10.0.0.0/16", "10.0.0.1", "10.0.255.254", false),
        ("v4_8", "10.0.0.0/8", "10.0.0.1", "10.255.255.254", false),
        (
            "v6_64",
            "fd00::/64",
            "fd00::1",
            "fd00::ffff:ffff:ffff:ffff",
            false,
        ),
    ];
    for (name, subnet, start, end, half) in cases {
        let conf = conf(subnet, start, end);
        let store = MemoryStore::new();
        let keys = Keys::new("/kube-ipam", "bench");
        if half {
            let pool = Pool::new(&conf.range_sets[0].ranges[0]);
            rt.block_on(async {
                for v in (pool.start..=pool.end).step_by(2) {
                    let k = keys.ip(pool.addr(v));
                    let _ = store
                        .commit(
                            &[Compare::Absent(k.clone())],
                            &[Mutation::Put(k, b"{}".to_vec())],
                        )
                        .await;
                }
            });
        }
        let alloc = Allocator::new(store, keys, &conf);
        let mut n = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                n += 1;
                let req = AddRequest {
                    holder: Holder {
                        container_id: format!("c{n}"),
                        ifname: "eth0".into(),
                        pod: None,
                        node: "n".into(),
                    },
                    wanted: vec![],
                    sticky: false,
                };
                rt.block_on(async {
                    let att = alloc.add(&req).await.expect("add");
                    alloc
                        .release(&req.holder.container_id, "eth0")
                        .await
                        .expect("release");
                    black_box(att)
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bitmap, cycle);
criterion_main!(benches);
