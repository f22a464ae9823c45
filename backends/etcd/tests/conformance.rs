//! The shared LeaseStore conformance suite against real etcd, in plain text and over
//! mutual TLS.

use std::sync::Arc;

use kube_ipam_etcd::testing::EtcdServer;
use kube_ipam_etcd::EtcdStore;
use kube_ipam_store::{conformance, Answer, LeaseStore, Mutation, Read};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plain_etcd_passes_conformance() {
    let server = EtcdServer::start().expect("etcd starts");
    let store = EtcdStore::connect(server.options())
        .await
        .expect("connects");
    if let Err(e) = conformance::run(Arc::new(store), "/conformance/plain").await {
        panic!("{e} (etcd log: {})", server.log_path().display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutual_tls_etcd_passes_conformance() {
    let server = EtcdServer::start_tls().expect("etcd with TLS starts");
    assert!(server.endpoint().starts_with("https://"));
    let store = EtcdStore::connect(server.options())
        .await
        .expect("connects over mutual TLS");
    if let Err(e) = conformance::run(Arc::new(store), "/conformance/tls").await {
        panic!("{e} (etcd log: {})", server.log_path().display());
    }
}

/// Rounds of consensus etcd has committed, from its metrics: a read that became one would
/// cost a disk write.
fn proposals(server: &EtcdServer) -> u64 {
    use std::io::{Read as _, Write as _};
    let endpoint = server.endpoint();
    let addr = endpoint.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).expect("metrics connection");
    write!(conn, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("metrics request");
    let mut body = String::new();
    conn.read_to_string(&mut body).expect("metrics answer");
    body.lines()
        .find_map(|l| l.strip_prefix("etcd_server_proposals_committed_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .expect("etcd reports committed proposals")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_are_left_out_by_a_condition_of_a_plain_read() {
    let server = EtcdServer::start().expect("etcd starts");
    let store = EtcdStore::connect(server.options())
        .await
        .expect("connects");
    let puts: Vec<Mutation> = ["/g/a", "/g/b", "/r/1", "/r/2", "/r/3"]
        .iter()
        .map(|k| Mutation::Put((*k).into(), vec![]))
        .collect();
    assert!(store.commit(&[], &puts).await.unwrap());
    let counts = |skip: &[&str]| Read::Counts {
        ranges: vec![
            ("/r/".into(), "/r/~".into()),
            ("/r/2".into(), "/r/~".into()),
        ],
        skip_if_present: skip.iter().map(|k| (*k).to_owned()).collect(),
    };
    let window = Read::Range {
        from: "/r/".into(),
        to: "/r/~".into(),
        limit: 0,
        keys_only: true,
    };
    let before = proposals(&server);
    let answers = store
        .reads(&[
            window.clone(),
            counts(&["/g/a", "/g/b"]),
            counts(&["/g/a", "/g/missing"]),
        ])
        .await
        .unwrap();
    assert!(
        matches!(&answers[0], Answer::Entries(e) if e.len() == 3),
        "{answers:?}"
    );
    assert_eq!(answers[1], Answer::Counts(None));
    assert_eq!(answers[2], Answer::Counts(Some(vec![3, 2])));
    let answers = store
        .reads(&[counts(&["/g/missing", "/g/a"]), window])
        .await
        .unwrap();
    assert_eq!(answers[0], Answer::Counts(Some(vec![3, 2])));
    assert_eq!(
        proposals(&server),
        before,
        "a batch of reads went through consensus"
    );
}
