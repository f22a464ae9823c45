//! The CNI protocol: one call in (environment + stdin), one answer out (stdout + exit code).

pub mod args;
pub mod env;
pub mod result;
pub mod version;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use kube_ipam_store::{Holder, Keys, LeaseStore, PodRef};
use serde_json::{json, Value};

use crate::config::{self, NetConf};
use crate::engine::{AddRequest, Allocator, PoolRequest, Wanted};
use crate::pod::kube::KubeDirectory;
use crate::pod::{self, annotations, PodDirectory};
use crate::{dns, stores, Error, Result};
use env::{Command, Env};
use version::{Version, LATEST, SUPPORTED, UNVERSIONED};

/// What the process prints on stdout and exits with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub stdout: Vec<u8>,
    pub exit_code: i32,
}

impl Reply {
    fn ok(body: Option<Value>) -> Reply {
        Reply {
            stdout: body.map(|v| to_line(&v)).unwrap_or_default(),
            exit_code: 0,
        }
    }

    fn err(version: &str, e: &Error) -> Reply {
        Reply {
            stdout: to_line(&result::error_result(version, e)),
            exit_code: 1,
        }
    }
}

fn to_line(v: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec(v).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Runs one CNI call. Never panics on input; every failure becomes a CNI error reply.
pub async fn run(vars: &HashMap<String, String>, stdin: &[u8]) -> Reply {
    let started = Instant::now();
    let env = match Env::from_vars(vars) {
        Ok(env) => env,
        Err(e) => {
            crate::log::init(&config::log_conf_of(stdin));
            tracing::error!(error = %e, "rejected call");
            return Reply::err(&caller_version(stdin), &e);
        }
    };
    if env.command == Command::Version {
        return Reply::ok(Some(
            json!({"cniVersion": LATEST, "supportedVersions": SUPPORTED}),
        ));
    }
    let conf = match config::parse(stdin) {
        Ok(c) => c,
        Err(e) => {
            crate::log::init(&config::log_conf_of(stdin));
            tracing::error!(command = env.command.as_str(), container = %env.container_id, error = %e, "invalid network config");
            return Reply::err(&caller_version(stdin), &e);
        }
    };
    crate::log::init(&conf.ipam.log);
    let deadline = started + conf.ipam.call_timeout;
    let within = tokio::time::timeout_at(deadline.into(), dispatch(&env, &conf, deadline));
    let answer = within.await.unwrap_or_else(|_| {
        Err(Error::TryAgain(format!(
            "the call did not finish within ipam.callTimeout ({:?})",
            conf.ipam.call_timeout
        )))
    });
    match answer {
        Ok(body) => Reply::ok(body),
        Err(e) => {
            tracing::error!(
                command = env.command.as_str(),
                network = %conf.name,
                container = %env.container_id,
                ifname = %env.ifname,
                pod = %pod_label(&env),
                code = e.code(),
                error = %e,
                elapsed_ms = elapsed_ms(started),
                "failed"
            );
            Reply::err(&conf.cni_version, &e)
        }
    }
}

/// The error's cniVersion echoes the caller's when it can be read at all. Only failed calls
/// need it, so the success path decodes stdin once.
fn caller_version(stdin: &[u8]) -> String {
    let Ok(doc) = serde_json::from_slice::<Value>(stdin) else {
        return LATEST.to_owned();
    };
    match doc.get("cniVersion") {
        None | Some(Value::Null) => UNVERSIONED.to_owned(),
        Some(Value::String(v)) if v.is_empty() => UNVERSIONED.to_owned(),
        Some(Value::String(v)) if SUPPORTED.contains(&v.as_str()) => v.clone(),
        Some(_) => LATEST.to_owned(),
    }
}

/// A 0.1.0 or 0.2.0 result has one `ip4` and one `ip6`; a second range set of a family has
/// nowhere to go (host-local refuses such configs the same way).
fn one_address_per_family(conf: &NetConf) -> Result<()> {
    let mut seen = [false, false];
    for set in &conf.ipam.range_sets {
        let Some(r) = set.ranges.first() else {
            continue;
        };
        let f = usize::from(r.subnet.addr().is_ipv6());
        if seen[f] {
            return Err(Error::config(
                "cniVersion",
                format!("{:?}", conf.cni_version),
                "answers one address per family, but ipam.ranges has two range sets of one \
                 family: use cniVersion 0.3.0 or later",
            ));
        }
        seen[f] = true;
    }
    Ok(())
}

/// Milliseconds to a tenth: finer digits are noise, and they made log lines hard to scan.
fn elapsed_ms(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1e4).round() / 10.0
}

fn pod_label(env: &Env) -> String {
    match (&env.args.pod_namespace, &env.args.pod_name) {
        (Some(ns), Some(n)) => format!("{ns}/{n}"),
        _ => String::new(),
    }
}

async fn dispatch(env: &Env, conf: &NetConf, deadline: Instant) -> Result<Option<Value>> {
    if let Some(why) = &env.args.not_a_pod {
        tracing::warn!(
            command = env.command.as_str(),
            container = %env.container_id,
            reason = %why,
            "CNI_ARGS name no Kubernetes pod: no lookup and no sticky binding for this call"
        );
    }
    let version = match Version::parse(&conf.cni_version) {
        Ok(v) => v,
        // A teardown that can never succeed blocks the pod's removal for good, and DEL
        // prints nothing whose shape the version would decide.
        Err(e) if env.command == Command::Del => {
            tracing::warn!(version = %conf.cni_version, error = %e, "DEL of an unsupported cniVersion goes ahead");
            Version::parse(LATEST)?
        }
        Err(e) => return Err(e),
    };
    let needs = match env.command {
        Command::Check if !version.has_check() => Some("0.4.0"),
        Command::Gc | Command::Status if !version.has_gc_and_status() => Some("1.1.0"),
        _ => None,
    };
    if let Some(needs) = needs {
        return Err(Error::IncompatibleVersion {
            version: conf.cni_version.clone(),
            reason: format!("{} needs cniVersion {needs} or later", env.command.as_str()),
        });
    }
    if env.command == Command::Add && version.per_family_result() {
        one_address_per_family(conf)?;
    }
    let started = Instant::now();
    // Who asks is settled before the store is opened: a call the API cannot vouch for holds
    // no lock and writes nothing.
    let asker = match env.command {
        Command::Add => Some(Asker::resolve(env, conf).await?),
        _ => None,
    };
    let store = match stores::open_until(conf, deadline).await {
        Ok(s) => s,
        // STATUS answers "not now" only for what may pass; a wrong config stays error 7.
        Err(e)
            if env.command == Command::Status
                && e.code() == crate::error::code::TRY_AGAIN_LATER =>
        {
            return Err(Error::StatusUnavailable(e.to_string()))
        }
        Err(e) => return Err(e),
    };
    let keys = Keys::new(&conf.ipam.key_prefix, &conf.name);
    let mut alloc = Allocator::new(store, keys, &conf.ipam);
    if let Some(pods) = asker.as_ref().and_then(|a| a.pods.clone()) {
        alloc = alloc.with_pods(pods);
    }
    alloc.settle_layout(env.command == Command::Add).await?;
    let out = verb(env, conf, version, &alloc, asker).await?;
    tracing::info!(
        command = env.command.as_str(),
        network = %conf.name,
        container = %env.container_id,
        ifname = %env.ifname,
        pod = %pod_label(env),
        addresses = %out.1,
        elapsed_ms = elapsed_ms(started),
        "done"
    );
    Ok(out.0)
}

/// The verbs proper; returns the reply body and a summary of the addresses for the log.
async fn verb<S: LeaseStore>(
    env: &Env,
    conf: &NetConf,
    version: Version,
    alloc: &Allocator<S>,
    asker: Option<Asker>,
) -> Result<(Option<Value>, String)> {
    match env.command {
        Command::Add => {
            let req = match asker {
                Some(a) => a.request(env, conf)?,
                None => return Err(Error::Internal("ADD without a resolved caller".into())),
            };
            // Whatever can refuse the call runs before the claim commits: a refused ADD
            // writes nothing.
            let dns = match &conf.ipam.resolv_conf {
                Some(path) => {
                    dns::parse_resolv_conf(&std::fs::read_to_string(path).map_err(|e| {
                        Error::Io {
                            path: path.display().to_string(),
                            reason: e.to_string(),
                        }
                    })?)
                }
                None => dns::Dns::default(),
            };
            let att = alloc.add(&req).await?;
            let summary = addresses(&att);
            Ok((
                Some(result::add_result(version, &att, &conf.ipam.routes, &dns)),
                summary,
            ))
        }
        Command::Del => {
            let freed = alloc.release(&env.container_id, &env.ifname).await?;
            Ok((None, freed.as_ref().map(addresses).unwrap_or_default()))
        }
        Command::Check => {
            let prev = conf.prev_result.as_ref().ok_or_else(|| Error::Decode {
                what: "prevResult".into(),
                reason: "CHECK needs prevResult".into(),
            })?;
            let ips = result::prev_result_ips(prev)?;
            alloc.check(&holder(env), &ips).await?;
            Ok((None, format!("{ips:?}")))
        }
        Command::Gc => {
            let Some(valid) = &conf.valid_attachments else {
                // No list means the runtime did not say what is alive: free nothing.
                return Ok((None, String::new()));
            };
            let freed = alloc.gc(valid).await?;
            let summary = freed.iter().map(addresses).collect::<Vec<_>>().join(" ");
            Ok((None, summary))
        }
        Command::Status => {
            alloc.status().await?;
            Ok((None, String::new()))
        }
        Command::Version => Ok((None, String::new())),
    }
}

/// The caller of an ADD: its attachment, and what its pod's annotations ask for.
struct Asker {
    holder: Holder,
    annotations: BTreeMap<String, String>,
    /// The pod's ordinal when a StatefulSet controls it.
    ordinal: Option<u64>,
    /// Lookups of other pods: whether the holder of an address asked for is gone.
    pods: Option<Arc<dyn PodDirectory>>,
}

impl Asker {
    /// Finds out who asks. The pod's annotations come from the runtime when it passes them
    /// (the `io.kubernetes.cri.pod-annotations` capability), else from the API when CNI_ARGS
    /// name a pod and this node can reach it. Once the API is asked, every failure is "try
    /// again later": an annotated pod must never get a random address because the API was
    /// slow.
    async fn resolve(env: &Env, conf: &NetConf) -> Result<Asker> {
        let mut holder = holder(env);
        let mut asker = Asker {
            holder: holder.clone(),
            annotations: BTreeMap::new(),
            ordinal: None,
            pods: None,
        };
        let Some(pod) = holder.pod.as_mut() else {
            return Ok(asker);
        };
        let Some(path) = pod::kubeconfig(conf.ipam.kube_config.as_deref()) else {
            tracing::debug!(
                "no kubeConfig and no {}: only the runtime's pod annotations are read",
                pod::DEFAULT_KUBECONFIG
            );
            asker.annotations = conf.pod_annotations.clone().unwrap_or_default();
            return Ok(asker);
        };
        // Building the client reads the kubeconfig and asks nothing yet.
        let dir = KubeDirectory::connect(&path, pod::kube::REQUEST_TIMEOUT).await?;
        // A pool serves a StatefulSet's pods by ordinal, and only the API knows the pod's
        // controller: with a pool, the pod is looked up even when the runtime passed its
        // annotations.
        let needs_api = conf
            .pod_annotations
            .as_ref()
            .is_none_or(|a| a.contains_key(annotations::IP_POOL));
        if needs_api {
            let Some(meta) = dir.pod(&pod.namespace, &pod.name).await? else {
                return Err(Error::Kubernetes(format!(
                    "pod {}/{} does not exist",
                    pod.namespace, pod.name
                )));
            };
            if pod.uid.is_none() {
                pod.uid.clone_from(&meta.uid);
            }
            asker.ordinal = meta.stateful_ordinal(&pod.name);
            asker.annotations = meta.annotations;
        }
        if let Some(given) = &conf.pod_annotations {
            asker.annotations = given.clone();
        }
        asker.holder = holder;
        asker.pods = Some(Arc::new(dir));
        Ok(asker)
    }

    /// Addresses asked for by name: every runtime source together (as host-local reads
    /// them), else the pod's annotations.
    fn request(self, env: &Env, conf: &NetConf) -> Result<AddRequest> {
        let mut wanted = wanted(env, conf);
        let mut pool = None;
        let sticky = if wanted.is_empty() {
            let intent = annotations::parse(&self.annotations)?;
            wanted = annotated(intent.ips, &self.annotations, conf);
            pool = pooled(intent.pool, &self.annotations, conf, self.ordinal);
            intent.sticky
        } else {
            annotations::sticky(&self.annotations)?
        };
        Ok(AddRequest {
            holder: self.holder,
            wanted,
            sticky: sticky || conf.ipam.sticky_ips,
            pool,
        })
    }
}

fn subnets(conf: &NetConf) -> Vec<ipnet::IpNet> {
    conf.ipam
        .range_sets
        .iter()
        .flat_map(|s| s.ranges.iter().map(|r| r.subnet))
        .collect()
}

fn field(annotation: &str) -> String {
    format!("pod annotation {annotation}")
}

/// One annotation may serve several networks, so one that names nothing of this network is
/// no error; but it is most likely a typo, and must be findable.
fn names_nothing_here(annotation: &str, raw: &BTreeMap<String, String>, subnets: &[ipnet::IpNet]) {
    tracing::warn!(
        annotation,
        value = %raw.get(annotation).map(String::as_str).unwrap_or_default(),
        subnets = %subnets.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        "the annotation names no address in this network's subnets; a dynamic address is handed out"
    );
}

/// The annotated addresses that belong to this network. One pod annotation may serve several
/// networks (Multus attachments): each takes the addresses in its own subnets, and a gateway
/// that lies in none of them belongs to another network's address of that family.
fn annotated(
    ips: Vec<(config::RequestedIp, Option<std::net::IpAddr>)>,
    raw: &BTreeMap<String, String>,
    conf: &NetConf,
) -> Vec<Wanted> {
    let subnets = subnets(conf);
    let ours = |a: &std::net::IpAddr| subnets.iter().any(|n| n.contains(a));
    let (mine, others): (Vec<_>, Vec<_>) = ips.into_iter().partition(|(ip, _)| ours(&ip.address));
    if mine.is_empty() && !others.is_empty() {
        names_nothing_here(annotations::IP, raw, &subnets);
    } else if !others.is_empty() {
        tracing::debug!(
            others = %others.iter().map(|(ip, _)| ip.address.to_string()).collect::<Vec<_>>().join(","),
            "annotated addresses outside this network's subnets are left to other networks"
        );
    }
    let ip_field = field(annotations::IP);
    let gw_field = field(annotations::GATEWAY);
    let mask_field = if raw.contains_key(annotations::NETMASK) {
        field(annotations::NETMASK)
    } else {
        ip_field.clone()
    };
    mine.into_iter()
        .map(|(ip, gw)| {
            let shared_family = others
                .iter()
                .any(|(o, _)| o.address.is_ipv4() == ip.address.is_ipv4());
            let gw = gw.filter(|g| !shared_family || ours(g));
            Wanted {
                source: ip_field.clone(),
                ip,
                mask_source: Some(mask_field.clone()),
                gateway: gw.map(|g| (gw_field.clone(), g)),
            }
        })
        .collect()
}

/// The pod's pool as far as this network goes: the entries that reach into its subnets,
/// each with its gateway under the same rule as [`annotated`]'s.
fn pooled(
    spans: Vec<config::PoolSpan>,
    raw: &BTreeMap<String, String>,
    conf: &NetConf,
    ordinal: Option<u64>,
) -> Option<PoolRequest> {
    if spans.is_empty() {
        return None;
    }
    let subnets = subnets(conf);
    let reaches = |s: &config::PoolSpan| {
        subnets.iter().any(|n| {
            n.addr().is_ipv4() == s.first.is_ipv4()
                && n.network() <= s.last
                && s.first <= n.broadcast()
        })
    };
    let (mine, others): (Vec<_>, Vec<_>) = spans.into_iter().partition(|s| reaches(s));
    if mine.is_empty() {
        names_nothing_here(annotations::IP_POOL, raw, &subnets);
        return None;
    }
    let ours = |a: &std::net::IpAddr| subnets.iter().any(|n| n.contains(a));
    let spans = mine
        .into_iter()
        .map(|s| {
            let shared_family = others
                .iter()
                .any(|o| o.first.is_ipv4() == s.first.is_ipv4());
            config::PoolSpan {
                gateway: s.gateway.filter(|g| !shared_family || ours(g)),
                ..s
            }
        })
        .collect();
    let source = field(annotations::IP_POOL);
    Some(PoolRequest {
        mask_source: if raw.contains_key(annotations::NETMASK) {
            field(annotations::NETMASK)
        } else {
            source.clone()
        },
        gateway_source: field(annotations::GATEWAY),
        source,
        spans,
        ordinal,
    })
}

fn holder(env: &Env) -> Holder {
    let a = &env.args;
    let pod = match (&a.pod_namespace, &a.pod_name) {
        (Some(ns), Some(name)) => Some(PodRef {
            namespace: ns.clone(),
            name: name.clone(),
            uid: a.pod_uid.clone(),
        }),
        _ => None,
    };
    Holder {
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        pod,
        node: crate::node_name(),
    }
}

/// Addresses named by the runtime, from every source as host-local takes them: CNI_ARGS
/// `IP=`, `args.cni.ips`, `runtimeConfig.ips`. The engine counts a repeated address once.
fn wanted(env: &Env, conf: &NetConf) -> Vec<Wanted> {
    let sources = [
        ("CNI_ARGS IP", &env.args.ips),
        ("args.cni.ips", &conf.args_ips),
        ("runtimeConfig.ips", &conf.runtime_ips),
    ];
    sources
        .into_iter()
        .flat_map(|(source, ips)| {
            ips.iter().map(move |ip| Wanted {
                source: source.to_owned(),
                ip: *ip,
                mask_source: None,
                gateway: None,
            })
        })
        .collect()
}

fn addresses(att: &kube_ipam_store::Attachment) -> String {
    att.ips
        .iter()
        .map(|i| format!("{}/{}", i.address, i.prefix_len))
        .collect::<Vec<_>>()
        .join(",")
}
