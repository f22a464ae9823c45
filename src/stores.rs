//! Opens the store a network config asks for: etcd when `etcdConfig` is given, else the
//! embedded SQLite store.

use std::time::Instant;

use kube_ipam_etcd::{EtcdOptions, EtcdStore, TlsFiles};
use kube_ipam_sqlite::SqliteStore;
use kube_ipam_store::LeaseStore;

use crate::config::NetConf;
use crate::{Error, Result};

/// The embedded store's place for this network: one database per network, so networks never
/// wait on each other's writers.
pub fn embedded_path(conf: &NetConf) -> std::path::PathBuf {
    conf.ipam.data_dir.join(&conf.name)
}

/// Opens the store of an existing network, for the operator commands: a mistyped network
/// name or dataDir must be an error naming both, not a new empty store that says "nothing
/// held".
pub async fn open_existing(conf: &NetConf) -> Result<Box<dyn LeaseStore>> {
    if conf.ipam.etcd.is_none() && !embedded_path(conf).exists() {
        return Err(Error::Io {
            path: embedded_path(conf).display().to_string(),
            reason: format!(
                "no store of network {:?} in dataDir {}: check the config's name and dataDir \
                 (a store is created by the first ADD)",
                conf.name,
                conf.ipam.data_dir.display()
            ),
        });
    }
    open(conf).await
}

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
            let left = deadline.saturating_duration_since(Instant::now());
            Ok(Box::new(SqliteStore::open(&embedded_path(conf), left)?))
        }
    }
}
