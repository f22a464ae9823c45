//! The network config as users write it, before any checking.
//!
//! Every field is optional here, even the ones the plugin cannot do without: a missing key is a
//! validation error with the key's path, reported together with every other problem, instead of
//! a decoder error that stops at the first one. Unknown keys are ignored at every level because
//! main plugins, runtimes and Multus all add their own.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawNetConf {
    #[serde(rename = "cniVersion")]
    pub cni_version: Option<String>,
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub plugin_type: Option<String>,
    pub ipam: Option<RawIpam>,
    #[serde(rename = "runtimeConfig")]
    pub runtime_config: Option<RawRuntimeConfig>,
    pub args: Option<RawArgs>,
    #[serde(rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<RawAttachment>>,
    #[serde(rename = "cni.dev/attachments")]
    pub attachments: Option<Vec<RawAttachment>>,
}

/// The `ipam` block. The single-range keys sit at this level in the original plugin's format;
/// they are repeated here rather than flattened because serde's flatten loses the key path of
/// type errors.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawIpam {
    #[serde(rename = "type")]
    pub ipam_type: Option<String>,
    pub subnet: Option<String>,
    #[serde(rename = "rangeStart")]
    pub range_start: Option<String>,
    #[serde(rename = "rangeEnd")]
    pub range_end: Option<String>,
    pub gateway: Option<String>,
    #[serde(rename = "fixedStart")]
    pub fixed_start: Option<String>,
    #[serde(rename = "fixedEnd")]
    pub fixed_end: Option<String>,
    /// Addresses and CIDRs of the top-level range never handed out.
    pub exclude: Option<Vec<String>>,
    pub ranges: Option<Vec<Vec<RawRange>>>,
    pub routes: Option<Vec<RawRoute>>,
    #[serde(rename = "resolvConf")]
    pub resolv_conf: Option<String>,
    #[serde(rename = "etcdConfig")]
    pub etcd_config: Option<RawEtcd>,
    #[serde(rename = "kubeConfig")]
    pub kube_config: Option<String>,
    #[serde(rename = "dataDir")]
    pub data_dir: Option<String>,
    #[serde(rename = "logFile")]
    pub log_file: Option<String>,
    #[serde(rename = "logLevel")]
    pub log_level: Option<String>,
    /// MiB.
    #[serde(rename = "logMaxSize")]
    pub log_max_size: Option<u64>,
    #[serde(rename = "stickyIPs")]
    pub sticky_ips: Option<bool>,
    #[serde(rename = "keyPrefix")]
    pub key_prefix: Option<String>,
    #[serde(rename = "writeOriginalKeys")]
    pub write_original_keys: Option<bool>,
    /// Seconds.
    #[serde(rename = "callTimeout")]
    pub call_timeout: Option<f64>,
    /// Seconds a node must have been not Ready before the addresses of its terminating pods
    /// may be taken over.
    #[serde(rename = "nodeLostAfter")]
    pub node_lost_after: Option<f64>,
    #[serde(rename = "takeoverFromLostNodes")]
    pub takeover_from_lost_nodes: Option<bool>,
    /// Seconds a released address waits before it goes to another attachment.
    #[serde(rename = "reuseDelay")]
    pub reuse_delay: Option<f64>,
}

impl RawIpam {
    /// The single-range keys, as one range entry.
    pub fn top_level_range(&self) -> RawRange {
        RawRange {
            subnet: self.subnet.clone(),
            range_start: self.range_start.clone(),
            range_end: self.range_end.clone(),
            gateway: self.gateway.clone(),
            fixed_start: self.fixed_start.clone(),
            fixed_end: self.fixed_end.clone(),
            exclude: self.exclude.clone(),
        }
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct RawRange {
    pub subnet: Option<String>,
    #[serde(rename = "rangeStart")]
    pub range_start: Option<String>,
    #[serde(rename = "rangeEnd")]
    pub range_end: Option<String>,
    pub gateway: Option<String>,
    #[serde(rename = "fixedStart")]
    pub fixed_start: Option<String>,
    #[serde(rename = "fixedEnd")]
    pub fixed_end: Option<String>,
    /// Addresses and CIDRs of the range's subnet never handed out.
    pub exclude: Option<Vec<String>>,
}

impl RawRange {
    /// subnet, rangeStart, rangeEnd, gateway, fixedStart, fixedEnd.
    pub fn values(&self) -> [&Option<String>; 6] {
        [
            &self.subnet,
            &self.range_start,
            &self.range_end,
            &self.gateway,
            &self.fixed_start,
            &self.fixed_end,
        ]
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawRoute {
    pub dst: Option<String>,
    pub gw: Option<String>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    pub priority: Option<u32>,
    pub table: Option<u32>,
    pub scope: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawEtcd {
    #[serde(rename = "etcdURL")]
    pub etcd_url: Option<String>,
    #[serde(rename = "etcdCertFile")]
    pub cert_file: Option<String>,
    #[serde(rename = "etcdKeyFile")]
    pub key_file: Option<String>,
    /// The original plugin's spelling.
    #[serde(rename = "etcdTrustedCAFileFile")]
    pub ca_file_file: Option<String>,
    /// The spelling people guess; kept apart from the other so that both present is not a
    /// decoder error.
    #[serde(rename = "etcdTrustedCAFile")]
    pub ca_file: Option<String>,
    #[serde(rename = "kubeConfig")]
    pub kube_config: Option<String>,
    #[serde(rename = "dialTimeout")]
    pub dial_timeout: Option<f64>,
    #[serde(rename = "requestTimeout")]
    pub request_timeout: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawRuntimeConfig {
    pub ips: Option<Vec<String>>,
    /// The `ipRanges` capability: range sets that come before the configured ones.
    #[serde(rename = "ipRanges")]
    pub ip_ranges: Option<Vec<Vec<RawRange>>>,
    /// The pod's annotations, which containerd and CRI-O pass to plugins that declare the
    /// `io.kubernetes.cri.pod-annotations` capability.
    #[serde(rename = "io.kubernetes.cri.pod-annotations")]
    pub pod_annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawArgs {
    pub cni: Option<RawCniArgs>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawCniArgs {
    pub ips: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawAttachment {
    #[serde(rename = "containerID")]
    pub container_id: Option<String>,
    pub ifname: Option<String>,
}
