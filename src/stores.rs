//! Opens the store a network config asks for: etcd when `etcdConfig` is given, else sled.

use std::time::Duration;

use kube_ipam_etcd::{EtcdOptions, EtcdStore, TlsFiles};
use kube_ipam_sled::SledStore;
use kube_ipam_store::LeaseStore;

use crate::config::NetConf;
use crate::Result;

/// How long a call waits for other calls on the same node to finish with the embedded store.
/// Well below kubelet's patience, well above the time of a burst of pods.
const LOCK_TIMEOUT: Duration = Duration::from_secs(20);

pub async fn open(conf: &NetConf) -> Result<Box<dyn LeaseStore>> {
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
            // One database per network, so networks never wait on each other's lock.
            let dir = conf.ipam.data_dir.join(&conf.name);
            Ok(Box::new(SledStore::open(&dir, LOCK_TIMEOUT)?))
        }
    }
}
