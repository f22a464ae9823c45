//! Mutual TLS against a real etcd: the server certificate is verified against the
//! configured CA and nothing else, and a client that fails verification writes nothing.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use kube_ipam_etcd::testing::EtcdServer;
use kube_ipam_etcd::{EtcdOptions, EtcdStore, TlsFiles};
use kube_ipam_store::{Compare, LeaseStore, Mutation, StoreError};

/// Tries to connect and write `key` with `opts`; returns the error that stopped it.
async fn write_fails(opts: EtcdOptions, key: &str) -> StoreError {
    match EtcdStore::connect(opts).await {
        Err(e) => e,
        Ok(store) => match store
            .commit(
                &[Compare::Absent(key.into())],
                &[Mutation::Put(key.into(), b"intruder".to_vec())],
            )
            .await
        {
            Err(e) => e,
            Ok(applied) => panic!("a misconfigured client committed (applied: {applied})"),
        },
    }
}

async fn assert_absent(server: &EtcdServer, prefix: &str) {
    let good = EtcdStore::connect(server.options())
        .await
        .expect("the correctly configured client connects");
    let n = good
        .count(prefix, &format!("{prefix}~"))
        .await
        .expect("count");
    assert_eq!(n, 0, "keys under {prefix} were written");
}

fn mentions_tls(e: &StoreError) -> bool {
    let m = e.to_string().to_lowercase();
    m.contains("certificate") || m.contains("tls")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_certificate_from_another_ca_is_refused() {
    let server = EtcdServer::start_tls().expect("etcd with TLS starts");
    let tls = server.tls().expect("TLS paths").clone();
    let mut opts = server.options();
    opts.tls.ca = Some(tls.wrong_ca.clone());

    let e = write_fails(opts, "/tls/wrong-ca/k").await;
    assert!(
        matches!(e, StoreError::Config(_) | StoreError::Unavailable(_)),
        "{e:?}"
    );
    assert!(mentions_tls(&e), "error does not say why: {e}");
    assert!(e.to_string().contains(&server.endpoint()), "{e}");
    // The file to fix, by its field and path; not the client certificate, which is fine.
    let named = format!("etcdTrustedCAFileFile {}", tls.wrong_ca.display());
    assert!(e.to_string().contains(&named), "{e}");
    assert!(!e.to_string().contains("client.pem"), "{e}");
    assert_absent(&server, "/tls/wrong-ca/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_etcd_does_not_trust_is_named() {
    let server = EtcdServer::start_tls().expect("etcd with TLS starts");
    let tls = server.tls().expect("TLS paths").clone();
    let mut opts = server.options();
    opts.tls.cert = Some(tls.stranger_cert.clone());
    opts.tls.key = Some(tls.stranger_key.clone());

    let e = write_fails(opts, "/tls/stranger/k").await;
    assert!(
        matches!(e, StoreError::Config(_) | StoreError::Unavailable(_)),
        "{e:?}"
    );
    let named = format!("etcdCertFile {}", tls.stranger_cert.display());
    assert!(e.to_string().contains(&named), "{e}");
    assert!(!e.to_string().contains("ca.pem"), "{e}");
    assert_absent(&server, "/tls/stranger/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_without_certificate_is_refused() {
    let server = EtcdServer::start_tls().expect("etcd with TLS starts");
    let tls = server.tls().expect("TLS paths").clone();
    let mut opts = server.options();
    opts.tls = TlsFiles {
        ca: Some(tls.ca.clone()),
        cert: None,
        key: None,
    };

    let e = write_fails(opts, "/tls/anonymous/k").await;
    assert!(
        matches!(e, StoreError::Config(_) | StoreError::Unavailable(_)),
        "{e:?}"
    );
    assert!(mentions_tls(&e), "error does not say why: {e}");
    assert_absent(&server, "/tls/anonymous/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_with_the_wrong_key_is_a_config_error() {
    let server = EtcdServer::start_tls().expect("etcd with TLS starts");
    let tls = server.tls().expect("TLS paths").clone();
    let mut opts = server.options();
    opts.tls.key = Some(tls.server_key.clone());

    let e = write_fails(opts, "/tls/mismatch/k").await;
    assert!(matches!(e, StoreError::Config(_)), "{e:?}");
    assert_absent(&server, "/tls/mismatch/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_without_ca_fails_before_any_connection() {
    // Any connection attempt would be queued on this listener.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();

    let started = Instant::now();
    let e = EtcdStore::connect(EtcdOptions::new([format!("https://127.0.0.1:{port}")]))
        .await
        .expect_err("https without a CA must not connect");
    match e {
        StoreError::Config(m) => {
            assert_eq!(m, "etcdTrustedCAFileFile is required for https endpoints")
        }
        other => panic!("expected a Config error, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the client opened a connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_ca_file_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-ca.pem");
    let mut opts = EtcdOptions::new(["https://127.0.0.1:2379"]);
    opts.tls.ca = Some(missing.clone());
    match EtcdStore::connect(opts).await {
        Err(StoreError::Config(m)) => assert!(m.contains("no-such-ca.pem"), "{m}"),
        other => panic!("expected a Config error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localhost_name_is_verified_too() {
    let server = EtcdServer::start_tls().expect("etcd with TLS starts");
    let mut opts = server.options();
    opts.endpoints = vec![server.endpoint().replace("127.0.0.1", "localhost")];
    let store = EtcdStore::connect(opts)
        .await
        .expect("SAN DNS:localhost matches");
    store.ping().await.expect("ping");
}
