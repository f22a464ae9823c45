//! Writes address and owner records straight into the store of a network config, in the
//! plugin's own format, as if that many ADDs had run: the fast way to put a store at a fill
//! level for `scripts/scale.sh`. Writes no hints, like a store filled by an older version.
//!
//! ```text
//! fill CONF MODE [N]
//!   MODE spread   N = taken per million, spread evenly over the first range (one left free)
//!        one      every dynamic address but one
//!        cluster  N = taken per million, the free ones in one run at the end of the range
//!        full     every dynamic address
//!        count    N addresses from the start of the range
//! ```

use std::net::IpAddr;
use std::time::Instant;

use kube_ipam::engine::{unix_now, Pool};
use kube_ipam_store::records::encode;
use kube_ipam_store::{AttachedIp, Attachment, Holder, IpRecord, Keys, Kind, LeaseStore, Mutation};

/// etcd takes at most 128 operations per transaction by default; the embedded store pays a
/// flush per commit, so it gets bigger ones.
const ETCD_BATCH: usize = 120;
const EMBEDDED_BATCH: usize = 20_000;
const SPREAD: u128 = 2_654_435_761;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: fill CONF spread|one|cluster|full|count [N]");
        std::process::exit(2);
    }
    let n: u128 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
    let text = std::fs::read(&args[1]).expect("read the config");
    let conf = kube_ipam::config::parse(&text).expect("a kube-ipam network config");
    let pool = Pool::new(&conf.ipam.range_sets[0].ranges[0]);
    let size = pool.end - pool.start + 1;
    let dynamic = pool.size();
    let taken: Box<dyn Iterator<Item = u128>> = match args[2].as_str() {
        "spread" => {
            let k = (size * n / 1_000_000).min(dynamic - 1);
            Box::new((0..size).filter(move |i| i * SPREAD % size < k))
        }
        "one" => {
            let free = size * 7 / 11;
            Box::new((0..size).filter(move |i| *i != free))
        }
        "cluster" => Box::new(0..size * n / 1_000_000),
        "full" => Box::new(0..size),
        "count" => Box::new(0..n.min(size)),
        other => panic!("unknown mode {other}"),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = kube_ipam::stores::open(&conf)
            .await
            .expect("open the store");
        let keys = Keys::new(&conf.ipam.key_prefix, &conf.name);
        let started = Instant::now();
        let now = unix_now();
        let limit = if conf.ipam.etcd.is_some() {
            ETCD_BATCH
        } else {
            EMBEDDED_BATCH
        };
        let mut batch = Vec::with_capacity(limit);
        let mut written = 0u64;
        for v in taken
            .map(|o| pool.start + o)
            .filter(|v| pool.contains_dynamic(*v))
        {
            let addr: IpAddr = pool.addr(v);
            let holder = Holder {
                container_id: format!("fill{v:032x}"),
                ifname: "eth0".into(),
                pod: None,
                node: "fill".into(),
            };
            let rec = IpRecord {
                network: conf.name.clone(),
                holder: holder.clone(),
                kind: Kind::Dynamic,
                range: pool.id.clone(),
                created: now,
            };
            let att = Attachment {
                holder: holder.clone(),
                ips: vec![AttachedIp {
                    address: addr,
                    prefix_len: pool.prefix_len(),
                    gateway: pool.range.gateway,
                    kind: Kind::Dynamic,
                    range: pool.id.clone(),
                }],
                created: now,
            };
            batch.push(Mutation::Put(keys.ip(addr), encode(&rec)));
            batch.push(Mutation::Put(
                keys.owner(&holder.container_id, "eth0"),
                encode(&att),
            ));
            written += 1;
            if batch.len() >= limit {
                assert!(store.commit(&[], &batch).await.expect("commit"));
                batch.clear();
            }
        }
        if !batch.is_empty() {
            assert!(store.commit(&[], &batch).await.expect("commit"));
        }
        eprintln!("fill: {written} addresses in {:.1?}", started.elapsed());
    });
}
