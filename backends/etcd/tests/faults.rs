//! Failures of etcd itself: every request ends within its deadline with `Unavailable`, and
//! the store recovers once etcd is back.

use std::time::{Duration, Instant};

use kube_ipam_etcd::testing::{EtcdCluster, EtcdServer};
use kube_ipam_etcd::{EtcdOptions, EtcdStore};
use kube_ipam_store::{Compare, LeaseStore, Mutation, StoreError};

/// Slack for scheduling on a loaded machine on top of a configured deadline.
const MARGIN: Duration = Duration::from_millis(1500);

fn put(key: &str, value: &str) -> Vec<Mutation> {
    vec![Mutation::Put(key.into(), value.as_bytes().to_vec())]
}

fn quick(mut opts: EtcdOptions) -> EtcdOptions {
    opts.connect_timeout = Duration::from_secs(1);
    opts.request_timeout = Duration::from_secs(2);
    opts
}

fn expect_unavailable<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) -> String {
    match r {
        Err(StoreError::Unavailable(m)) => m,
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    }
}

/// Repeats `f` until it returns `Ok`, at most `tries` times, for the moments right after a
/// failure when the client is still finding a live member.
async fn eventually<T, F, Fut>(tries: usize, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut last = None;
    for _ in 0..tries {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                assert!(e.is_transient(), "permanent error: {e}");
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    panic!("still failing after {tries} tries: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_etcd_is_unavailable_and_the_store_recovers_after_restart() {
    let mut server = EtcdServer::start().expect("etcd starts");
    let opts = quick(server.options());
    let budget = opts.request_timeout + MARGIN;
    let store = EtcdStore::connect(opts.clone()).await.expect("connects");
    assert!(store
        .commit(&[Compare::Absent("/f/a".into())], &put("/f/a", "1"))
        .await
        .expect("commit"));

    server.kill().expect("kill");
    let t = Instant::now();
    let m = expect_unavailable(store.get("/f/a").await, "get");
    assert!(t.elapsed() < budget, "get took {:?}", t.elapsed());
    assert!(m.contains(&server.endpoint()), "{m}");
    let t = Instant::now();
    expect_unavailable(store.commit(&[], &put("/f/b", "1")).await, "commit");
    assert!(t.elapsed() < budget, "commit took {:?}", t.elapsed());
    let t = Instant::now();
    expect_unavailable(EtcdStore::connect(opts.clone()).await, "connect");
    assert!(
        t.elapsed() < opts.connect_timeout + MARGIN,
        "connect took {:?}",
        t.elapsed()
    );

    server.restart().expect("etcd restarts");
    let e = eventually(10, || store.get("/f/a"))
        .await
        .expect("kept /f/a");
    assert_eq!(e.value, b"1");
    let fresh = EtcdStore::connect(opts)
        .await
        .expect("a new store connects");
    assert!(fresh.get("/f/b").await.expect("get").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_etcd_times_out_within_the_request_deadline() {
    let mut server = EtcdServer::start().expect("etcd starts");
    let opts = quick(server.options());
    let budget = opts.request_timeout + MARGIN;
    let store = EtcdStore::connect(opts.clone()).await.expect("connects");

    server.freeze().expect("SIGSTOP");
    let t = Instant::now();
    let m = expect_unavailable(store.get("/h/a").await, "get");
    assert!(t.elapsed() < budget, "get took {:?}", t.elapsed());
    assert!(m.contains("no answer"), "{m}");
    let t = Instant::now();
    let m = expect_unavailable(store.commit(&[], &put("/h/a", "1")).await, "commit");
    assert!(t.elapsed() < budget, "commit took {:?}", t.elapsed());
    assert!(m.contains("may or may not have been applied"), "{m}");
    let t = Instant::now();
    expect_unavailable(store.ping().await, "ping");
    assert!(t.elapsed() < budget, "ping took {:?}", t.elapsed());
    let t = Instant::now();
    expect_unavailable(EtcdStore::connect(opts.clone()).await, "connect");
    assert!(
        t.elapsed() < opts.connect_timeout + MARGIN,
        "connect took {:?}",
        t.elapsed()
    );

    server.thaw().expect("SIGCONT");
    eventually(10, || store.ping()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_unavailable_naming_the_endpoint() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    let m = expect_unavailable(
        EtcdStore::connect(quick(EtcdOptions::new([endpoint.clone()]))).await,
        "connect",
    );
    assert!(t.elapsed() < Duration::from_secs(1) + MARGIN);
    assert!(m.contains(&endpoint), "{m}");
}

/// Claims `key`, retrying while the cluster is unavailable. A retried claim that reports
/// `false` may have been applied by the attempt that timed out; the value tells.
async fn claim(store: &EtcdStore, key: &str, value: &str) {
    for _ in 0..10 {
        match store
            .commit(&[Compare::Absent(key.into())], &put(key, value))
            .await
        {
            Ok(true) => return,
            Ok(false) => {
                let e = eventually(10, || store.get(key)).await;
                assert_eq!(
                    e.map(|e| e.value),
                    Some(value.as_bytes().to_vec()),
                    "{key} taken by someone else"
                );
                return;
            }
            Err(e) if e.is_transient() => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("claim {key}: {e}"),
        }
    }
    panic!("claim {key}: still unavailable after 10 tries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_member_cluster_survives_a_dead_member() {
    let mut cluster = EtcdCluster::start(3).expect("cluster starts");
    let store = EtcdStore::connect(cluster.options())
        .await
        .expect("connects");
    for i in 0..10 {
        claim(&store, &format!("/c/{i:04}"), "before").await;
    }

    cluster.kill_member(0).expect("kill member 0");
    for i in 10..40 {
        claim(&store, &format!("/c/{i:04}"), "after").await;
    }
    let n = eventually(10, || store.count("/c/", "/c/~")).await;
    assert_eq!(n, 40);

    // A client started while the member is down connects through the others.
    let fresh = EtcdStore::connect(cluster.options())
        .await
        .expect("connects with one member down");
    let entries = eventually(10, || fresh.range("/c/", "/c/~", 0)).await;
    assert_eq!(entries.len(), 40);

    // A second member down loses quorum: requests fail in time instead of hanging.
    cluster.kill_member(1).expect("kill member 1");
    let t = Instant::now();
    let r = store.commit(&[], &put("/c/lost", "x")).await;
    let m = expect_unavailable(r, "commit without quorum");
    assert!(m.contains("may or may not have been applied"), "{m}");
    assert!(
        t.elapsed() < EtcdOptions::default().request_timeout + MARGIN,
        "took {:?}",
        t.elapsed()
    );
}
