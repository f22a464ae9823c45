//! Opens the store a network config asks for: etcd when `etcdConfig` is given, else the
//! embedded SQLite store.

use std::time::Instant;

use kube_ipam_etcd::{EtcdOptions, EtcdStore, TlsFiles};
use kube_ipam_sqlite::SqliteStore;
use kube_ipam_store::LeaseStore;

use crate::config::NetConf;
use crate::Result;

/// Opens the store, allowing waits for other processes for `callTimeout` from now.
pub async fn open(conf: &NetConf) -> Result<Box<dyn LeaseStore>> {
    open_until(conf, Instant::now() + conf.ipam.call_timeout).await
}

/// Opens the store for a call that must be over by `deadline`.
///
/// The embedded store waits for other writers inside SQLite, synchronously, where no outer
/// timer can cut the wait short: it is given only the time the call has left.
pub async fn open_until(conf: &NetConf, deadline: Instant) -> Result<Box<dyn LeaseStore>> {
    match &conf.ipam.etcd {
        Some(etcd) => {
            let opts = EtcdOptions {
                endpoints: etcd.endpoints.clone(),
                tls: TlsFiles {
                    cert: etcd.cert_file.clone(),
                    key: etcd.key_file.clone(),
                    ca: etcd.ca_file.clone(),
                },
                connect_timeout: etcd.connect_timeout,
                request_timeout: etcd.request_timeout,
            };
            Ok(Box::new(EtcdStore::connect(opts).await?))
        }
        None => {
            // One database per network, so networks never wait on each other's writers.
            let dir = conf.ipam.data_dir.join(&conf.name);
            let left = deadline.saturating_duration_since(Instant::now());
            Ok(Box::new(SqliteStore::open(&dir, left)?))
        }
    }
}
