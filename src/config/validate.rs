//! From the raw config to the validated model, collecting every problem on the way.
//!
//! Each check reports itself and carries on, so that `kube-ipam config check` can list all the
//! mistakes of a file at once; the CNI path simply reports the first. Every error names the key
//! path the user wrote and the value found there.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde_json::Value;

use super::model::{
    AttachmentRef, EtcdConf, IpamConf, NetConf, Range, RangeSet, RequestedIp, Route,
};
use super::raw::{RawAttachment, RawEtcd, RawIpam, RawNetConf, RawRange, RawRoute};
use crate::error::Error;

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/kube-ipam";
pub const DEFAULT_LOG_FILE: &str = "/var/log/kube-ipam.log";
/// Size at which the log file is rotated, in MiB.
pub const DEFAULT_LOG_MAX_MIB: u64 = 10;
pub const DEFAULT_LOG_LEVEL: &str = "info";
pub const DEFAULT_KEY_PREFIX: &str = "/kube-ipam";
pub const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(3);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Well below the runtime's own patience (kubelet gives a sandbox minutes), well above a
/// burst of pods queueing on one node's store or a few etcd retries.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// A timeout beyond this is a typo (milliseconds written as seconds) rather than a wish: the
/// runtime kills a CNI call long before.
const MAX_TIMEOUT_SECS: f64 = 3600.0;

/// Shown as the value of a key that is missing.
const NONE: &str = "(none)";

/// The single-range keys of the `ipam` block, in the order users write them.
const RANGE_KEYS: [&str; 6] = [
    "subnet",
    "rangeStart",
    "rangeEnd",
    "gateway",
    "fixedStart",
    "fixedEnd",
];

#[derive(Default)]
struct Errors(Vec<Error>);

impl Errors {
    fn push(&mut self, field: impl Into<String>, value: impl ToString, reason: impl Into<String>) {
        self.0.push(Error::config(field, value, reason));
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// One optional key after parsing: absent and malformed must be told apart, so that a
/// malformed `fixedStart` is not also reported as missing.
enum Field<T> {
    Absent,
    Invalid,
    Valid(T),
}

impl<T: Copy> Field<T> {
    fn valid(&self) -> Option<T> {
        match self {
            Field::Valid(v) => Some(*v),
            _ => None,
        }
    }
}

/// Checks the raw config; `doc` is the untyped document, for `prevResult`.
pub(crate) fn validate(raw: RawNetConf, doc: &Value) -> Result<NetConf, Vec<Error>> {
    let mut errs = Errors::default();

    let cni_version = match nonempty(&raw.cni_version) {
        Some(v) => v.to_owned(),
        None => {
            errs.push("cniVersion", NONE, "is required");
            String::new()
        }
    };
    let name = network_name(raw.name.as_deref(), &mut errs);
    let ipam = match &raw.ipam {
        Some(ipam) => Some(ipam_conf(ipam, &mut errs)),
        None => {
            errs.push(
                "ipam",
                NONE,
                "is required: the block with \"type\": \"kube-ipam\" and the address ranges",
            );
            None
        }
    };
    let runtime_ips = requested_ips(
        "runtimeConfig.ips",
        raw.runtime_config.as_ref().and_then(|r| r.ips.as_deref()),
        &mut errs,
    );
    let args_ips = requested_ips(
        "args.cni.ips",
        raw.args
            .as_ref()
            .and_then(|a| a.cni.as_ref())
            .and_then(|c| c.ips.as_deref()),
        &mut errs,
    );
    let valid_attachments = match (&raw.valid_attachments, &raw.attachments) {
        (Some(list), _) => Some(attachments("cni.dev/valid-attachments", list, &mut errs)),
        (None, Some(list)) => Some(attachments("cni.dev/attachments", list, &mut errs)),
        (None, None) => None,
    };
    let prev_result = doc.get("prevResult").filter(|v| !v.is_null()).cloned();

    match ipam {
        Some(ipam) if errs.0.is_empty() => Ok(NetConf {
            cni_version,
            name,
            plugin_type: raw.plugin_type.unwrap_or_default(),
            ipam,
            runtime_ips,
            args_ips,
            prev_result,
            valid_attachments,
        }),
        _ => Err(errs.0),
    }
}

/// The name becomes a store key segment and a directory name, so it must not be able to
/// climb out of either.
fn network_name(name: Option<&str>, errs: &mut Errors) -> String {
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        errs.push("name", NONE, "is required");
        return String::new();
    };
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if !name.chars().all(allowed) {
        errs.push(
            "name",
            format!("{name:?}"),
            "must match ^[A-Za-z0-9_.-]+$: it becomes part of store keys and paths",
        );
    } else if name == "." || name == ".." {
        errs.push(
            "name",
            format!("{name:?}"),
            "must not be . or ..: it becomes a directory name",
        );
    }
    name.to_owned()
}

fn ipam_conf(ipam: &RawIpam, errs: &mut Errors) -> IpamConf {
    let ipam_type = match nonempty(&ipam.ipam_type) {
        Some(t) => t.to_owned(),
        None => {
            errs.push("ipam.type", NONE, "is required");
            String::new()
        }
    };
    let range_sets = range_sets(ipam, errs);
    let routes = ipam
        .routes
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, r)| route(&format!("ipam.routes[{i}]"), r, errs))
        .collect();
    let etcd = ipam.etcd_config.as_ref().and_then(|e| etcd(e, errs));
    let kube_config = nonempty(&ipam.kube_config)
        .or_else(|| {
            ipam.etcd_config
                .as_ref()
                .and_then(|e| nonempty(&e.kube_config))
        })
        .map(PathBuf::from);
    let data_dir = absolute_path("ipam.dataDir", &ipam.data_dir, DEFAULT_DATA_DIR, errs);
    let log_file = absolute_path("ipam.logFile", &ipam.log_file, DEFAULT_LOG_FILE, errs);
    let log_level = match nonempty(&ipam.log_level) {
        None => DEFAULT_LOG_LEVEL.to_owned(),
        Some(level) => {
            let lower = level.to_ascii_lowercase();
            if !LOG_LEVELS.contains(&lower.as_str()) {
                errs.push(
                    "ipam.logLevel",
                    format!("{level:?}"),
                    format!("must be one of {}", LOG_LEVELS.join(", ")),
                );
            }
            lower
        }
    };
    let log_max_mib = ipam.log_max_size.unwrap_or(DEFAULT_LOG_MAX_MIB);
    if !(1..=10_240).contains(&log_max_mib) {
        errs.push(
            "ipam.logMaxSize",
            log_max_mib.to_string(),
            "must be 1 to 10240 (MiB)",
        );
    }
    let key_prefix = match nonempty(&ipam.key_prefix) {
        None => DEFAULT_KEY_PREFIX.to_owned(),
        Some(p) => {
            if !p.starts_with('/') {
                errs.push(
                    "ipam.keyPrefix",
                    format!("{p:?}"),
                    "must start with '/': every store key is rooted at it",
                );
            }
            p.to_owned()
        }
    };
    IpamConf {
        ipam_type,
        range_sets,
        routes,
        resolv_conf: nonempty(&ipam.resolv_conf).map(PathBuf::from),
        etcd,
        kube_config,
        data_dir,
        log_file,
        log_level,
        log_max_bytes: log_max_mib << 20,
        sticky_ips: ipam.sticky_ips.unwrap_or(false),
        key_prefix,
        call_timeout: timeout(
            "ipam.callTimeout",
            ipam.call_timeout,
            DEFAULT_CALL_TIMEOUT,
            errs,
        ),
    }
}

/// The plugin runs with the runtime's working directory, which nobody controls: a relative
/// path would land somewhere different on each node.
fn absolute_path(field: &str, raw: &Option<String>, default: &str, errs: &mut Errors) -> PathBuf {
    let path = PathBuf::from(nonempty(raw).unwrap_or(default));
    if !path.is_absolute() {
        errs.push(field, path.display(), "must be an absolute path");
    }
    path
}

// ---------------------------------------------------------------------------------------------
// Ranges

/// A range that passed its own checks, with where it came from, for the cross-range checks.
struct Placed {
    set: usize,
    path: String,
    range: Range,
}

fn range_sets(ipam: &RawIpam, errs: &mut Errors) -> Vec<RangeSet> {
    let top = ipam.top_level_range();
    let top_given: Vec<(&str, &str)> = RANGE_KEYS
        .iter()
        .zip(top.values())
        .filter_map(|(k, v)| nonempty(v).map(|v| (*k, v)))
        .collect();
    let sets: &[Vec<RawRange>] = ipam.ranges.as_deref().unwrap_or_default();

    let raw_sets: Vec<(String, Vec<(String, RawRange)>)> = if !sets.is_empty() {
        for (key, value) in &top_given {
            errs.push(
                format!("ipam.{key}"),
                value,
                "cannot be combined with ipam.ranges: give either the single-range keys or \
                 ranges, and move it into a ranges entry",
            );
        }
        sets.iter()
            .enumerate()
            .map(|(i, set)| {
                let path = format!("ipam.ranges[{i}]");
                let ranges = set
                    .iter()
                    .enumerate()
                    .map(|(j, r)| (format!("{path}[{j}]"), r.clone()))
                    .collect();
                (path, ranges)
            })
            .collect()
    } else if top_given.is_empty() {
        errs.push(
            "ipam.subnet",
            NONE,
            "is required: give ipam.subnet (one range) or ipam.ranges (range sets)",
        );
        Vec::new()
    } else {
        vec![("ipam".to_owned(), vec![("ipam".to_owned(), top)])]
    };

    let mut placed = Vec::new();
    let mut subnets = Vec::new();
    let mut sets_out = Vec::new();
    for (set_idx, (set_path, ranges)) in raw_sets.iter().enumerate() {
        if ranges.is_empty() {
            errs.push(
                set_path.as_str(),
                "[]",
                "is empty: a range set needs at least one range",
            );
        }
        let mut out = Vec::new();
        for (path, raw) in ranges {
            let (net, range) = range(path, raw, errs);
            if let Some(net) = net {
                subnets.push((set_idx, path.as_str(), net));
            }
            if let Some(range) = range {
                out.push(range.clone());
                placed.push(Placed {
                    set: set_idx,
                    path: path.clone(),
                    range,
                });
            }
        }
        sets_out.push(RangeSet { ranges: out });
    }
    check_families(&subnets, errs);
    check_overlaps(&placed, errs);
    sets_out
}

/// One range on its own: syntax, containment, order, the fixed zone, and host-local's defaults.
/// The subnet comes back on its own as soon as it is valid, for the family check of the set.
fn range(prefix: &str, raw: &RawRange, errs: &mut Errors) -> (Option<IpNet>, Option<Range>) {
    let before = errs.len();
    let subnet = match nonempty(&raw.subnet) {
        None => {
            errs.push(format!("{prefix}.subnet"), NONE, "is required");
            None
        }
        Some(s) => subnet(&format!("{prefix}.subnet"), s, errs),
    };
    let range = range_in(prefix, subnet, raw, errs);
    (subnet, range.filter(|_| errs.len() == before))
}

fn range_in(
    prefix: &str,
    subnet: Option<IpNet>,
    raw: &RawRange,
    errs: &mut Errors,
) -> Option<Range> {
    let field = |key: &str| format!("{prefix}.{key}");
    let start = address(&field("rangeStart"), &raw.range_start, errs);
    let end = address(&field("rangeEnd"), &raw.range_end, errs);
    let gateway = address(&field("gateway"), &raw.gateway, errs);
    let fixed_start = address(&field("fixedStart"), &raw.fixed_start, errs);
    let fixed_end = address(&field("fixedEnd"), &raw.fixed_end, errs);

    match (&fixed_start, &fixed_end) {
        (Field::Absent, Field::Valid(_) | Field::Invalid) => errs.push(
            field("fixedStart"),
            NONE,
            "is required when fixedEnd is set: the fixed zone needs both ends",
        ),
        (Field::Valid(_) | Field::Invalid, Field::Absent) => errs.push(
            field("fixedEnd"),
            NONE,
            "is required when fixedStart is set: the fixed zone needs both ends",
        ),
        _ => {}
    }

    let subnet = subnet?;
    let usable = |key: &str, f: &Field<IpAddr>, errs: &mut Errors| -> Option<IpAddr> {
        let addr = f.valid()?;
        if !subnet.contains(&addr) {
            errs.push(field(key), addr, format!("is outside subnet {subnet}"));
            return None;
        }
        if let IpNet::V4(net) = subnet {
            if IpAddr::V4(net.network()) == addr {
                errs.push(
                    field(key),
                    addr,
                    format!("is the network address of {subnet}"),
                );
                return None;
            }
            if IpAddr::V4(net.broadcast()) == addr {
                errs.push(
                    field(key),
                    addr,
                    format!("is the broadcast address of {subnet}"),
                );
                return None;
            }
        }
        Some(addr)
    };
    let start_ok = usable("rangeStart", &start, errs);
    let end_ok = usable("rangeEnd", &end, errs);
    let gateway_ok = usable("gateway", &gateway, errs);
    let fixed_start_ok = usable("fixedStart", &fixed_start, errs);
    let fixed_end_ok = usable("fixedEnd", &fixed_end, errs);

    // host-local's defaults: the gateway is skipped by the engine, not by moving rangeStart.
    let first = next(subnet.network());
    let last = match subnet {
        IpNet::V4(_) => prev(subnet.broadcast()),
        IpNet::V6(_) => subnet.broadcast(),
    };
    let range_start = start_ok.unwrap_or(first);
    let range_end = end_ok.unwrap_or(last);
    let dynamic_defaulted = matches!(start, Field::Absent) || matches!(end, Field::Absent);
    let bound_ok = |f: &Field<IpAddr>, ok: Option<IpAddr>| match f {
        Field::Absent => true,
        Field::Invalid => false,
        Field::Valid(_) => ok.is_some(),
    };
    let dynamic_ok = bound_ok(&start, start_ok) && bound_ok(&end, end_ok);
    if dynamic_ok && range_start > range_end {
        errs.push(
            field("rangeStart"),
            range_start,
            format!("is after rangeEnd {range_end}"),
        );
    }

    let fixed = match (fixed_start_ok, fixed_end_ok) {
        (Some(fs), Some(fe)) => {
            if fs > fe {
                errs.push(field("fixedStart"), fs, format!("is after fixedEnd {fe}"));
            } else if dynamic_ok && range_start <= range_end && fs <= range_end && range_start <= fe
            {
                let hint = if dynamic_defaulted {
                    " (rangeStart/rangeEnd not both set, so the dynamic range defaults to the \
                     whole subnet; set them around the fixed zone)"
                } else {
                    ""
                };
                errs.push(
                    field("fixedStart"),
                    format!("{fs}-{fe}"),
                    format!(
                        "the fixed zone overlaps the dynamic range {range_start}-{range_end}{hint}"
                    ),
                );
            }
            Some((fs, fe))
        }
        _ => None,
    };

    Some(Range {
        subnet,
        range_start,
        range_end,
        gateway: Some(gateway_ok.unwrap_or(first)),
        fixed,
    })
}

/// A subnet must be given exactly: silently clearing host bits would hide a typo that moves
/// the whole network.
fn subnet(field: &str, s: &str, errs: &mut Errors) -> Option<IpNet> {
    let Ok(net) = IpNet::from_str(s) else {
        errs.push(field, s, "is not a CIDR (address/prefix length)");
        return None;
    };
    if net.trunc() != net {
        errs.push(
            field,
            s,
            format!("{s} has host bits set; did you mean {}", net.trunc()),
        );
        return None;
    }
    if net.prefix_len() + 2 > net.max_prefix_len() {
        errs.push(
            field,
            s,
            format!(
                "is too small: a /{} leaves no address to hand out besides network and gateway",
                net.prefix_len()
            ),
        );
        return None;
    }
    Some(net)
}

fn address(field: &str, raw: &Option<String>, errs: &mut Errors) -> Field<IpAddr> {
    match nonempty(raw) {
        None => Field::Absent,
        Some(s) => match IpAddr::from_str(s) {
            Ok(a) => Field::Valid(a),
            Err(_) => {
                errs.push(field, s, "is not an IP address");
                Field::Invalid
            }
        },
    }
}

/// One range set hands out one address: mixing families in it would make the family of that
/// address depend on which range happens to have room.
fn check_families(subnets: &[(usize, &str, IpNet)], errs: &mut Errors) {
    for (i, (set, path, net)) in subnets.iter().enumerate() {
        let Some((_, first_path, first)) = subnets[..i].iter().find(|(s, _, _)| s == set) else {
            continue;
        };
        if is_v6(first) != is_v6(net) {
            errs.push(
                format!("{path}.subnet"),
                net,
                format!(
                    "is {} but {first_path}.subnet {first} is {}: a range set holds one family; \
                     put each family in its own set",
                    family(net),
                    family(first)
                ),
            );
        }
    }
}

/// No address may belong to two ranges: two ranges handing out the same address would each
/// believe it free, and a fixed address would have two owners.
fn check_overlaps(placed: &[Placed], errs: &mut Errors) {
    for (i, b) in placed.iter().enumerate() {
        for a in &placed[..i] {
            let (sa, sb) = (a.range.subnet, b.range.subnet);
            if a.set == b.set && (sa.contains(&sb.network()) || sb.contains(&sa.network())) {
                errs.push(
                    format!("{}.subnet", b.path),
                    sb,
                    format!(
                        "overlaps subnet {sa} of {} in the same range set: a set's ranges must \
                         be disjoint subnets",
                        a.path
                    ),
                );
                continue;
            }
            'pair: for (kb, bs, be) in zones(&b.range) {
                for (ka, as_, ae) in zones(&a.range) {
                    if as_.is_ipv6() == bs.is_ipv6() && as_ <= be && bs <= ae {
                        let key = if kb == DYNAMIC {
                            "rangeStart"
                        } else {
                            "fixedStart"
                        };
                        errs.push(
                            format!("{}.{key}", b.path),
                            format!("{bs}-{be}"),
                            format!(
                                "the {kb} overlaps the {ka} {as_}-{ae} of {}: ranges must not \
                                 share addresses",
                                a.path
                            ),
                        );
                        break 'pair;
                    }
                }
            }
        }
    }
}

const DYNAMIC: &str = "dynamic range";
const FIXED: &str = "fixed zone";

fn zones(r: &Range) -> Vec<(&'static str, IpAddr, IpAddr)> {
    let mut z = vec![(DYNAMIC, r.range_start, r.range_end)];
    if let Some((s, e)) = r.fixed {
        z.push((FIXED, s, e));
    }
    z
}

fn is_v6(net: &IpNet) -> bool {
    matches!(net, IpNet::V6(_))
}

fn family(net: &IpNet) -> &'static str {
    if is_v6(net) {
        "IPv6"
    } else {
        "IPv4"
    }
}

fn next(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).saturating_add(1))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).saturating_add(1))),
    }
}

fn prev(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).saturating_sub(1))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).saturating_sub(1))),
    }
}

// ---------------------------------------------------------------------------------------------
// Routes, etcd, requests, GC

fn route(path: &str, raw: &RawRoute, errs: &mut Errors) -> Option<Route> {
    let before = errs.len();
    let dst = match nonempty(&raw.dst) {
        None => {
            errs.push(format!("{path}.dst"), NONE, "is required");
            None
        }
        Some(s) => match IpNet::from_str(s) {
            Err(_) => {
                errs.push(
                    format!("{path}.dst"),
                    s,
                    "is not a CIDR (address/prefix length)",
                );
                None
            }
            Ok(net) if net.trunc() != net => {
                errs.push(
                    format!("{path}.dst"),
                    s,
                    format!("{s} has host bits set; did you mean {}", net.trunc()),
                );
                None
            }
            Ok(net) => Some(net),
        },
    };
    let gw = match address(&format!("{path}.gw"), &raw.gw, errs) {
        Field::Valid(gw) => {
            if let Some(dst) = dst.filter(|d| d.addr().is_ipv6() != gw.is_ipv6()) {
                errs.push(
                    format!("{path}.gw"),
                    gw,
                    format!("is not of the same family as dst {dst}"),
                );
            }
            Some(gw)
        }
        _ => None,
    };
    let dst = dst?;
    (errs.len() == before).then_some(Route { dst, gw })
}

fn etcd(raw: &RawEtcd, errs: &mut Errors) -> Option<EtcdConf> {
    const P: &str = "ipam.etcdConfig";
    let before = errs.len();
    let endpoints = match nonempty(&raw.etcd_url) {
        None => {
            errs.push(
                format!("{P}.etcdURL"),
                NONE,
                "is required when etcdConfig is given (leave etcdConfig out for the embedded store)",
            );
            Vec::new()
        }
        Some(urls) => endpoints(&format!("{P}.etcdURL"), urls, errs),
    };
    let cert_file = nonempty(&raw.cert_file).map(PathBuf::from);
    let key_file = nonempty(&raw.key_file).map(PathBuf::from);
    match (&cert_file, &key_file) {
        (Some(c), None) => errs.push(
            format!("{P}.etcdKeyFile"),
            NONE,
            format!(
                "is required with etcdCertFile {}: a client certificate needs its key",
                c.display()
            ),
        ),
        (None, Some(k)) => errs.push(
            format!("{P}.etcdCertFile"),
            NONE,
            format!(
                "is required with etcdKeyFile {}: a client key needs its certificate",
                k.display()
            ),
        ),
        _ => {}
    }
    let ca_file = match (nonempty(&raw.ca_file_file), nonempty(&raw.ca_file)) {
        (Some(a), Some(b)) if a != b => {
            errs.push(
                format!("{P}.etcdTrustedCAFile"),
                b,
                format!("contradicts etcdTrustedCAFileFile {a}: give one of the two"),
            );
            None
        }
        (a, b) => a.or(b).map(PathBuf::from),
    };
    let connect_timeout = timeout(
        &format!("{P}.dialTimeout"),
        raw.dial_timeout,
        DEFAULT_DIAL_TIMEOUT,
        errs,
    );
    let request_timeout = timeout(
        &format!("{P}.requestTimeout"),
        raw.request_timeout,
        DEFAULT_REQUEST_TIMEOUT,
        errs,
    );
    (errs.len() == before).then_some(EtcdConf {
        endpoints,
        cert_file,
        key_file,
        ca_file,
        connect_timeout,
        request_timeout,
    })
}

fn endpoints(field: &str, urls: &str, errs: &mut Errors) -> Vec<String> {
    let mut out = Vec::new();
    for entry in urls.split(',').map(str::trim) {
        if entry.is_empty() {
            errs.push(
                field,
                format!("{urls:?}"),
                "has an empty entry: endpoints are separated by single commas",
            );
            continue;
        }
        let lower = entry.to_ascii_lowercase();
        let rest = lower
            .strip_prefix("http://")
            .or_else(|| lower.strip_prefix("https://"));
        match rest {
            Some(host) if !host.is_empty() && !host.starts_with('/') => {
                out.push(entry.to_owned());
            }
            Some(_) => errs.push(field, entry, "has no host after the scheme"),
            None => errs.push(
                field,
                entry,
                "is not an http:// or https:// URL (etcd endpoints are comma separated URLs)",
            ),
        }
    }
    out
}

fn timeout(field: &str, raw: Option<f64>, default: Duration, errs: &mut Errors) -> Duration {
    let Some(secs) = raw else {
        return default;
    };
    if !(secs > 0.0 && secs <= MAX_TIMEOUT_SECS) {
        errs.push(
            field,
            secs,
            format!("must be a number of seconds above 0 and at most {MAX_TIMEOUT_SECS}"),
        );
        return default;
    }
    Duration::try_from_secs_f64(secs).unwrap_or(default)
}

fn requested_ips(path: &str, list: Option<&[String]>, errs: &mut Errors) -> Vec<RequestedIp> {
    list.unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match requested_ip(s) {
            Ok(ip) => Some(ip),
            Err(reason) => {
                errs.push(format!("{path}[{i}]"), s, reason);
                None
            }
        })
        .collect()
}

/// `10.1.2.3` or `10.1.2.3/24`; the prefix length, when given, is kept apart because the
/// address itself is what is asked for (it may well have host bits, being a host).
fn requested_ip(s: &str) -> Result<RequestedIp, String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let address =
        IpAddr::from_str(addr).map_err(|_| "is not an IP address (addr or addr/len)".to_owned())?;
    let max = if address.is_ipv6() { 128 } else { 32 };
    let prefix_len = match len {
        None => None,
        Some(l) => match l.parse::<u8>() {
            Ok(n) if n <= max => Some(n),
            _ => return Err(format!("has a prefix length that is not 0..={max}")),
        },
    };
    Ok(RequestedIp {
        address,
        prefix_len,
    })
}

fn attachments(path: &str, list: &[RawAttachment], errs: &mut Errors) -> Vec<AttachmentRef> {
    list.iter()
        .enumerate()
        .filter_map(|(i, a)| {
            let container_id = nonempty(&a.container_id);
            let ifname = nonempty(&a.ifname);
            if container_id.is_none() {
                errs.push(format!("{path}[{i}].containerID"), NONE, "is required");
            }
            if ifname.is_none() {
                errs.push(format!("{path}[{i}].ifname"), NONE, "is required");
            }
            Some(AttachmentRef {
                container_id: container_id?.to_owned(),
                ifname: ifname?.to_owned(),
            })
        })
        .collect()
}

/// The original plugin's users write `""` for keys they do not use; Go reads that as unset.
fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}
