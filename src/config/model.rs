//! The validated network config the rest of the plugin works from. Parsing and checking live in
//! the sibling modules; nothing here can hold an invalid value once `parse` has returned it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

/// The whole stdin of a CNI call, as far as kube-ipam cares.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    /// Network name; part of every store key, so limited to `[A-Za-z0-9_.-]`.
    pub name: String,
    /// `type` of the main plugin (bridge, macvlan, ...), for logs.
    pub plugin_type: String,
    pub ipam: IpamConf,
    /// `runtimeConfig.ips`: the CNI `ips` capability (Multus fills it from the selection annotation).
    pub runtime_ips: Vec<RequestedIp>,
    /// `args.cni.ips`.
    pub args_ips: Vec<RequestedIp>,
    /// `prevResult`, raw: only CHECK reads it, and in the caller's result shape.
    pub prev_result: Option<serde_json::Value>,
    /// GC: `cni.dev/valid-attachments` (or the older `cni.dev/attachments`). `None`: not given.
    pub valid_attachments: Option<Vec<AttachmentRef>>,
    /// `runtimeConfig["io.kubernetes.cri.pod-annotations"]`: the pod's annotations as the
    /// runtime knows them. `None`: the runtime passed none, ask the API.
    pub pod_annotations: Option<BTreeMap<String, String>>,
}

/// What an absent or empty `cniVersion` means: libcni and host-local read it as 0.1.0, and
/// libcni writes `""` into single-plugin configs that have none (Multus delegates).
pub const UNVERSIONED: &str = "0.1.0";

/// An address asked for by name, with an optional prefix length (`10.1.2.3/24` or `10.1.2.3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestedIp {
    pub address: IpAddr,
    pub prefix_len: Option<u8>,
}

impl RequestedIp {
    /// `10.1.2.3` or `10.1.2.3/24`, as every source writes them (runtimeConfig, args,
    /// CNI_ARGS, pod annotations); blanks around either part are dropped. The prefix length,
    /// when given, is kept apart because the address itself is what is asked for (it may
    /// well have host bits, being a host). The reason of a refusal names no value: the
    /// caller's error names the source and the value.
    pub fn parse(s: &str) -> Result<RequestedIp, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let address: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| "is not an IP address (address or address/prefix length)".to_owned())?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len {
            None => None,
            Some(l) => match l.trim().parse::<u8>() {
                Ok(n) if n <= max => Some(n),
                _ => return Err(format!("has a prefix length that is not 0 to {max}")),
            },
        };
        Ok(RequestedIp {
            address,
            prefix_len,
        })
    }
}

/// One entry of a pod's address pool (`kube-ipam.ip-pool`): an address or an inclusive range
/// of one family, with the netmask and gateway the pod gave for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSpan {
    pub first: IpAddr,
    pub last: IpAddr,
    pub prefix_len: Option<u8>,
    pub gateway: Option<IpAddr>,
}

/// One entry of the GC attachment list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentRef {
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IpamConf {
    /// `type` of the ipam block (normally `kube-ipam`).
    pub ipam_type: String,
    /// One address is handed out per range set: one set per family in a dual-stack network.
    /// The top-level `subnet`/`rangeStart`/... form becomes a single set with a single range.
    pub range_sets: Vec<RangeSet>,
    pub routes: Vec<Route>,
    /// `resolvConf`: host file whose nameservers/search/options go into the result's `dns`.
    pub resolv_conf: Option<PathBuf>,
    /// `etcdConfig`; `None` means the embedded store.
    pub etcd: Option<EtcdConf>,
    /// `kubeConfig`, at ipam level or inside `etcdConfig`.
    pub kube_config: Option<PathBuf>,
    /// `dataDir`: the embedded store's directory (default `/var/lib/cni/kube-ipam`).
    pub data_dir: PathBuf,
    pub log: LogConf,
    /// `stickyIPs`: every pod of the network keeps its first dynamic address.
    pub sticky_ips: bool,
    /// `keyPrefix`: root of every store key (default `/kube-ipam`).
    pub key_prefix: String,
    /// `writeOriginalKeys`: during a rolling upgrade from the original plugin, every claim
    /// also writes its `used/<ip>` key and every release deletes it, so nodes still running
    /// the original see what this one holds.
    pub write_original_keys: bool,
    /// `callTimeout` in seconds (default 20): the most one call may take, on either store,
    /// waits for other processes and retries included.
    pub call_timeout: Duration,
    /// How long a node must have been not Ready before a terminating pod on it gives up the
    /// address another pod asks for (`nodeLostAfter`, default 300 s); `None` when
    /// `takeoverFromLostNodes` is false: such addresses wait until the pod object is gone.
    pub node_lost_after: Option<Duration>,
    /// `reuseDelay` (default 30 s, 0: none): while another address of its range is free, an
    /// address just released does not go to another attachment for this long.
    pub reuse_delay: Duration,
}

/// Where and how much a call logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConf {
    /// `logFile` (default `/var/log/kube-ipam.log`).
    pub file: PathBuf,
    /// `logLevel`: error, warn, info (default), debug, trace.
    pub level: String,
    /// `logMaxSize` in MiB (default 10), in bytes: past it the file is moved to `<logFile>.1`.
    pub max_bytes: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RangeSet {
    pub ranges: Vec<Range>,
}

/// One range: a subnet, the dynamic part of it, and the optional fixed zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// Network address with prefix; host bits are rejected, never silently cleared.
    pub subnet: IpNet,
    /// First and last address handed out dynamically (defaults as host-local).
    pub range_start: IpAddr,
    pub range_end: IpAddr,
    /// `gateway`; default network+1. Never handed out.
    pub gateway: Option<IpAddr>,
    /// `fixedStart`..=`fixedEnd`: where fixed addresses must lie. Never handed out dynamically.
    pub fixed: Option<(IpAddr, IpAddr)>,
    /// `exclude`: spans of the subnet never handed out, dynamically or by name.
    pub exclude: Vec<(IpAddr, IpAddr)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    pub attrs: RouteAttrs,
}

/// The route fields CNI 1.1.0 added; answered only to callers of 1.1.0 and later.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteAttrs {
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    pub priority: Option<u32>,
    pub table: Option<u32>,
    pub scope: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConf {
    /// `etcdURL` split on commas, trimmed, each `http://` or `https://`.
    pub endpoints: Vec<String>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// `etcdTrustedCAFileFile` (the original plugin's spelling; `etcdTrustedCAFile` accepted too).
    pub ca_file: Option<PathBuf>,
    /// `dialTimeout` in seconds inside etcdConfig (default 3).
    pub connect_timeout: Duration,
    /// `requestTimeout` in seconds inside etcdConfig (default 5).
    pub request_timeout: Duration,
}
