//! etcd out of space: its `--quota-backend-bytes` reached, the NOSPACE alarm raised. ADD
//! fails with a message that says what to run; DEL, which only deletes, still works; and
//! once an operator has compacted, defragmented and disarmed, ADD works again.

mod support;

use kube_ipam_etcd::testing::EtcdServer;
use kube_ipam_etcd::EtcdStore;
use kube_ipam_store::{LeaseStore, Mutation, StoreError};
use serde_json::json;
use support::{call, Scratch};

/// Small enough to fill in a moment; etcd's fresh database is a few dozen KiB.
const QUOTA: u64 = 1 << 20;
/// Filler values: the quota is reached after a few dozen of them.
const FILLER: usize = 64 << 10;

fn etcdctl(etcd: &EtcdServer, args: &[&str]) -> String {
    let out = etcd.etcdctl(args).expect("etcdctl");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_full_etcd_names_the_fix_del_still_works_and_add_works_again_after_it() {
    let etcd = EtcdServer::start_with(&[&format!("--quota-backend-bytes={QUOTA}")])
        .expect("start etcd with a small quota");
    let s = Scratch::new();
    let (conf, file) = s.etcd_network(
        "quota",
        json!({"etcdURL": etcd.endpoint()}),
        json!({"subnet": "10.204.0.0/24"}),
    );
    call("ADD", "before", "eth0", &[], &conf).ip();

    // Fill etcd until it refuses a write.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let refusal = rt.block_on(async {
        let store = EtcdStore::connect(etcd.options()).await.expect("connect");
        for i in 0.. {
            let put = [Mutation::Put(format!("/filler/{i:04}"), vec![b'x'; FILLER])];
            match store.commit(&[], &put).await {
                Ok(applied) => assert!(applied),
                Err(e) => return e,
            }
            assert!(i < 1000, "etcd took {i} fillers past its quota");
        }
        unreachable!()
    });
    assert!(matches!(refusal, StoreError::Full(_)), "{refusal:?}");
    assert!(etcdctl(&etcd, &["alarm", "list"]).contains("NOSPACE"));

    // ADD says what is wrong and what to run, as an I/O failure like a full disk.
    let details = call("ADD", "after", "eth0", &[], &conf).err(5);
    for words in [
        "database space exceeded",
        "--quota-backend-bytes",
        "NOSPACE",
        "etcdctl compact",
        "etcdctl defrag",
        "etcdctl alarm disarm",
    ] {
        assert!(details.contains(words), "{words:?} missing: {details}");
    }
    // Reads and deletes go on.
    assert_eq!(support::check_store(&file), 1);
    call("DEL", "before", "eth0", &[], &conf).quiet();
    assert!(support::held(&file).is_empty());

    // What the message says: free space, compact, defragment, disarm.
    etcdctl(&etcd, &["del", "--prefix", "/filler/"]);
    let rev = etcd.revision().expect("revision");
    etcdctl(&etcd, &["compact", &rev.to_string()]);
    etcdctl(&etcd, &["defrag"]);
    etcdctl(&etcd, &["alarm", "disarm"]);
    assert!(!etcdctl(&etcd, &["alarm", "list"]).contains("NOSPACE"));

    let again = call("ADD", "after", "eth0", &[], &conf).ip();
    assert_eq!(support::held(&file).get("after"), Some(&again));
    assert_eq!(support::check_store(&file), 1);
}
