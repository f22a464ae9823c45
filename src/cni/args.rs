//! `CNI_ARGS`: `K=V;K=V`, as container runtimes send it.

use crate::config::RequestedIp;
use crate::{Error, Result};

/// What kube-ipam reads from `CNI_ARGS`; every other key is ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
    pub infra_container_id: Option<String>,
    /// `IP=`: one or more addresses, comma separated, each optionally with `/len`.
    pub ips: Vec<RequestedIp>,
    /// Why the pod identity was dropped: a namespace, name or uid that is not a Kubernetes
    /// name (podman sends container names such as `My_Web` as `K8S_POD_NAME`). The call goes
    /// on without a pod: no lookup, no sticky binding.
    pub not_a_pod: Option<String>,
}

impl CniArgs {
    /// Lenient like libcni's users: any order, empty pairs skipped, unknown keys ignored
    /// (runtimes send `IgnoreUnknown=1` precisely because plugins differ in what they read).
    pub fn parse(raw: &str) -> Result<CniArgs> {
        let mut out = CniArgs::default();
        for pair in raw.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(bad(raw, format!("{pair:?} is not KEY=VALUE")));
            };
            let v = v.trim();
            let value = (!v.is_empty()).then(|| v.to_owned());
            let k = k.trim();
            // Pod identity becomes store keys and API paths: only what Kubernetes allows.
            if let (Some(rule), Some(v)) = (identity_rule(k), &value) {
                if let Err(why) = rule(v) {
                    let shown: String = v.chars().take(256).collect();
                    out.not_a_pod.get_or_insert(format!("{k}={shown:?}: {why}"));
                }
            }
            match k {
                "K8S_POD_NAMESPACE" => out.pod_namespace = value,
                "K8S_POD_NAME" => out.pod_name = value,
                "K8S_POD_UID" => out.pod_uid = value,
                "K8S_POD_INFRA_CONTAINER_ID" => out.infra_container_id = value,
                "IP" => {
                    for ip in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        out.ips.push(
                            RequestedIp::parse(ip)
                                .map_err(|why| bad(raw, format!("IP={ip}: {why}")))?,
                        );
                    }
                }
                _ => {}
            }
        }
        if out.not_a_pod.is_some() {
            out.pod_namespace = None;
            out.pod_name = None;
            out.pod_uid = None;
        }
        Ok(out)
    }
}

type Rule = fn(&str) -> std::result::Result<(), String>;

fn identity_rule(key: &str) -> Option<Rule> {
    match key {
        "K8S_POD_NAMESPACE" => Some(|v| dns_name(v, 63, false)),
        "K8S_POD_NAME" => Some(|v| dns_name(v, 253, true)),
        "K8S_POD_UID" => Some(|v| {
            if v.len() <= 128 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                Ok(())
            } else {
                Err("a uid holds at most 128 letters, digits and '-'".into())
            }
        }),
        _ => None,
    }
}

/// RFC 1123 label (namespaces) or subdomain (pod names), as the API server enforces them.
fn dns_name(v: &str, max: usize, dots: bool) -> std::result::Result<(), String> {
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let ok = v.len() <= max
        && if dots {
            v.split('.').all(ok_label)
        } else {
            ok_label(v)
        };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "not a valid Kubernetes name (lowercase letters, digits{}, '-', at most {max} characters)",
            if dots { ", '.'" } else { "" }
        ))
    }
}

fn bad(raw: &str, reason: String) -> Error {
    Error::InvalidEnv {
        name: "CNI_ARGS".into(),
        value: raw.chars().take(256).collect(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_order_and_unknown_keys() {
        let a = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_UID=u-1;K8S_POD_NAME=web-0;FOO=bar;;K8S_POD_NAMESPACE=prod;K8S_POD_INFRA_CONTAINER_ID=abc;IP=10.0.0.5,fd00::5/64",
        )
        .unwrap();
        assert_eq!(a.pod_namespace.as_deref(), Some("prod"));
        assert_eq!(a.pod_name.as_deref(), Some("web-0"));
        assert_eq!(a.pod_uid.as_deref(), Some("u-1"));
        assert_eq!(a.infra_container_id.as_deref(), Some("abc"));
        assert_eq!(a.ips.len(), 2);
        assert_eq!(a.ips[1].prefix_len, Some(64));
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
    }

    #[test]
    fn malformed_is_an_env_error_naming_the_value() {
        let e = CniArgs::parse("K8S_POD_NAME").unwrap_err();
        assert_eq!(e.code(), 4);
        assert!(e.to_string().contains("K8S_POD_NAME"));
        let e = CniArgs::parse("IP=10.0.0.300").unwrap_err();
        assert!(e.to_string().contains("10.0.0.300"), "{e}");
        let e = CniArgs::parse("IP=10.0.0.3/33").unwrap_err();
        assert!(e.to_string().contains("33"), "{e}");
    }

    #[test]
    fn a_pod_identity_that_is_no_kubernetes_name_means_no_pod() {
        for bad in [
            "K8S_POD_NAME=../../x",
            "K8S_POD_NAME=a/b",
            "K8S_POD_NAME=Web",
            "K8S_POD_NAME=My_Web",
            "K8S_POD_NAME=-a",
            "K8S_POD_NAMESPACE=a.b",
            "K8S_POD_UID=u/1",
        ] {
            let a = CniArgs::parse(&format!(
                "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_UID=u1;{bad}"
            ))
            .unwrap();
            assert_eq!(
                (a.pod_namespace, a.pod_name, a.pod_uid),
                (None, None, None),
                "{bad}"
            );
            let why = a.not_a_pod.unwrap_or_default();
            let (k, _) = bad.split_once('=').unwrap();
            assert!(why.contains(k), "{why}");
        }
        let a = CniArgs::parse("K8S_POD_NAME=web-0.x;K8S_POD_NAMESPACE=kube-system").unwrap();
        assert_eq!(a.pod_name.as_deref(), Some("web-0.x"));
    }
}
