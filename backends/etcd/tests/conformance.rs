//! The shared LeaseStore conformance suite against real etcd, in plain text and over
//! mutual TLS.

use std::sync::Arc;

use kube_ipam_etcd::testing::EtcdServer;
use kube_ipam_etcd::EtcdStore;
use kube_ipam_store::conformance;

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
