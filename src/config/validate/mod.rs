//! From the raw config to the validated model, collecting every problem on the way.
//!
//! Each check reports itself and carries on, so that `kube-ipam config check` can list all the
//! mistakes of a file at once; the CNI path simply reports the first. Every error names the key
//! path the user wrote and the value found there.

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;

use super::model::{IpamConf, NetConf};
use super::raw::{RawIpam, RawNetConf, RawRange};
use crate::error::Error;

mod etcd;
mod log;
mod ranges;
mod requests;
mod routes;

use etcd::{etcd, timeout};
use log::log_conf;
pub use log::log_conf_of;
use ranges::range_sets;
use requests::{attachments, requested_ips};
use routes::route;

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
/// Kubernetes' own patience with an unreachable node: pods tolerate its `unreachable` taint
/// for 300 s by default before they are marked for deletion.
pub const DEFAULT_NODE_LOST_AFTER: Duration = Duration::from_secs(300);
/// A week: past that, a longer wait is a typo (minutes or milliseconds meant).
const MAX_NODE_LOST_AFTER_SECS: f64 = 7.0 * 86_400.0;
/// AWS VPC CNI's cooling period for a released address: long enough for neighbours' ARP
/// caches and conntrack to move on, short enough not to strand addresses.
pub const DEFAULT_REUSE_DELAY: Duration = Duration::from_secs(30);
/// A day: past that, a delay is a typo.
const MAX_REUSE_DELAY_SECS: f64 = 86_400.0;

/// A timeout beyond this is a typo (milliseconds written as seconds) rather than a wish: the
/// runtime kills a CNI call long before.
pub(super) const MAX_TIMEOUT_SECS: f64 = 3600.0;

/// Shown as the value of a key that is missing.
pub(super) const NONE: &str = "(none)";

#[derive(Default)]
pub(super) struct Errors(Vec<Error>);

impl Errors {
    pub(super) fn push(
        &mut self,
        field: impl Into<String>,
        value: impl ToString,
        reason: impl Into<String>,
    ) {
        self.0.push(Error::config(field, value, reason));
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}

/// One optional key after parsing: absent and malformed must be told apart, so that a
/// malformed `fixedStart` is not also reported as missing.
pub(super) enum Field<T> {
    Absent,
    Invalid,
    Valid(T),
}

impl<T: Copy> Field<T> {
    pub(super) fn valid(&self) -> Option<T> {
        match self {
            Field::Valid(v) => Some(*v),
            _ => None,
        }
    }
}

/// Checks the raw config; `doc` is the untyped document, for `prevResult`.
pub(crate) fn validate(mut raw: RawNetConf, doc: &Value) -> Result<NetConf, Vec<Error>> {
    let mut errs = Errors::default();

    // libcni and host-local read an absent or empty version as 0.1.0; Multus delegates arrive
    // that way, and a teardown must never fail over it.
    let cni_version = nonempty(&raw.cni_version)
        .unwrap_or(super::model::UNVERSIONED)
        .to_owned();
    let name = network_name(raw.name.as_deref(), &mut errs);
    let ipam = match &raw.ipam {
        Some(ipam) => {
            let runtime_ranges = raw
                .runtime_config
                .as_ref()
                .and_then(|r| r.ip_ranges.as_deref());
            Some(ipam_conf(ipam, runtime_ranges, &mut errs))
        }
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
    let pod_annotations = raw
        .runtime_config
        .as_mut()
        .and_then(|r| r.pod_annotations.take());

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
            pod_annotations,
        }),
        _ => Err(errs.0),
    }
}

/// The name becomes a store key segment and a directory name, so it must not be able to
/// climb out of either; the rule is libcni's and host-local's (`^[A-Za-z0-9][A-Za-z0-9_.-]*$`),
/// so a name one of them refuses is refused here too.
fn network_name(name: Option<&str>, errs: &mut Errors) -> String {
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        errs.push("name", NONE, "is required");
        return String::new();
    };
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    let first_ok = name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if !first_ok || !name.chars().all(allowed) {
        errs.push(
            "name",
            format!("{name:?}"),
            "must match ^[A-Za-z0-9][A-Za-z0-9_.-]*$ (start with a letter or digit): it becomes \
             part of store keys and paths",
        );
    }
    name.to_owned()
}

fn ipam_conf(
    ipam: &RawIpam,
    runtime_ranges: Option<&[Vec<RawRange>]>,
    errs: &mut Errors,
) -> IpamConf {
    let ipam_type = match nonempty(&ipam.ipam_type) {
        Some(t) => t.to_owned(),
        None => {
            errs.push("ipam.type", NONE, "is required");
            String::new()
        }
    };
    let range_sets = range_sets(ipam, runtime_ranges, errs);
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
    let log = log_conf(&ipam.log_file, &ipam.log_level, ipam.log_max_size, errs);
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
    let write_original_keys = ipam.write_original_keys.unwrap_or(false);
    if write_original_keys && ipam.etcd_config.is_none() {
        errs.push(
            "ipam.writeOriginalKeys",
            "true",
            "needs etcdConfig: the original plugin's records live in etcd, where its nodes read them",
        );
    }
    let lost_after = node_lost_after(ipam.node_lost_after, errs);
    let node_lost_after = match ipam.takeover_from_lost_nodes {
        Some(false) => None,
        _ => Some(lost_after),
    };
    IpamConf {
        ipam_type,
        range_sets,
        routes,
        resolv_conf: nonempty(&ipam.resolv_conf).map(PathBuf::from),
        etcd,
        kube_config,
        data_dir,
        log,
        sticky_ips: ipam.sticky_ips.unwrap_or(false),
        key_prefix,
        write_original_keys,
        call_timeout: timeout(
            "ipam.callTimeout",
            ipam.call_timeout,
            DEFAULT_CALL_TIMEOUT,
            errs,
        ),
        node_lost_after,
        reuse_delay: seconds(
            "ipam.reuseDelay",
            ipam.reuse_delay,
            DEFAULT_REUSE_DELAY,
            MAX_REUSE_DELAY_SECS,
            errs,
        ),
    }
}

/// `nodeLostAfter`: 0 is allowed (a node reported not Ready is lost at once).
fn node_lost_after(raw: Option<f64>, errs: &mut Errors) -> Duration {
    seconds(
        "ipam.nodeLostAfter",
        raw,
        DEFAULT_NODE_LOST_AFTER,
        MAX_NODE_LOST_AFTER_SECS,
        errs,
    )
}

/// A number of seconds from 0 to `max`.
fn seconds(
    field: &str,
    raw: Option<f64>,
    default: Duration,
    max: f64,
    errs: &mut Errors,
) -> Duration {
    let Some(secs) = raw else {
        return default;
    };
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if secs <= max => d,
        _ => {
            errs.push(
                field,
                secs,
                format!("must be a number of seconds from 0 to {max}"),
            );
            default
        }
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

/// The original plugin's users write `""` for keys they do not use; Go reads that as unset.
pub(super) fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

pub(super) fn address(field: &str, raw: &Option<String>, errs: &mut Errors) -> Field<IpAddr> {
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
