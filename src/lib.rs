//! kube-ipam: a CNI IPAM plugin handing out cluster-unique, fixed and sticky pod addresses.

pub mod cli;
pub mod cni;
pub mod config;
pub mod dns;
pub mod engine;
pub mod error;
pub mod gc;
pub mod log;
pub mod metrics;
pub mod pod;
pub mod stores;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{Error, Result};

/// The node this call runs on, as recorded in every record: `KUBE_IPAM_NODE`, else
/// `NODE_NAME` (the usual downward-API variable), else the host name.
pub fn node_name() -> String {
    ["KUBE_IPAM_NODE", "NODE_NAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_default()
}
