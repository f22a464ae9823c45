//! Opens the store a network config asks for: etcd when `etcdConfig` is given, else the
//! embedded SQLite store.

use std::path::PathBuf;
use std::time::Instant;

use kube_ipam_etcd::{EtcdOptions, EtcdStore, TlsFiles};
use kube_ipam_sqlite::SqliteStore;
use kube_ipam_store::{Keys, LeaseStore};

use crate::config::NetConf;
use crate::{Error, Result};

/// The embedded store's place: one database per data directory, shared by every network
/// that names it, so that they hand out each address once. `_space` cannot be a network name.
pub fn embedded_path(conf: &NetConf) -> PathBuf {
    conf.ipam.data_dir.join(SHARED_DIR)
}

/// Directory of the shared database inside `dataDir`.
pub const SHARED_DIR: &str = "_space";

/// Where earlier releases kept this network's own database.
pub fn previous_path(conf: &NetConf) -> PathBuf {
    conf.ipam.data_dir.join(&conf.name)
}

/// Opens the store of an existing network, for the operator commands: a mistyped network
/// name or dataDir must be an error naming both, not a new empty store that says "nothing
/// held".
pub async fn open_existing(conf: &NetConf) -> Result<Box<dyn LeaseStore>> {
    let previous = previous_path(conf).join(kube_ipam_sqlite::DB_FILE);
    if conf.ipam.etcd.is_none() {
        kube_ipam_sqlite::refuse_unconverted(&previous_path(conf))?;
    }
    if conf.ipam.etcd.is_none() && !embedded_path(conf).exists() && !previous.exists() {
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
            // Before anything is created: a network still in the sled store of an earlier
            // release is refused until converted.
            kube_ipam_sqlite::refuse_unconverted(&previous_path(conf))?;
            let store = SqliteStore::open(&embedded_path(conf), left)?;
            // A store of an earlier release, one database per network, is taken in first.
            let keys = Keys::new(&conf.ipam.key_prefix, &conf.name);
            let copied = store.adopt(&previous_path(conf), &keys.network_marker())?;
            if copied > 0 {
                tracing::info!(
                    network = %conf.name,
                    keys = copied,
                    from = %previous_path(conf).display(),
                    "took the network's own database of an earlier release into the data \
                     directory's shared store"
                );
            }
            Ok(Box::new(store))
        }
    }
}
