//! Calls made for Kubernetes pods, and what the store says of them, for the tests that serve
//! pods from the stand-in API.

use std::path::PathBuf;

use serde_json::Value;

use super::{call, cli, Out, Scratch};

/// A call as kubelet's runtime makes it for pod `namespace/name` (uid `uid`) on `node`.
pub fn pod_call(
    cmd: &str,
    container: &str,
    (namespace, name): (&str, &str),
    uid: &str,
    node: &str,
    conf: &str,
) -> Out {
    let args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={container};K8S_POD_UID={uid}"
    );
    call(
        cmd,
        container,
        "eth0",
        &[("CNI_ARGS", &args), ("KUBE_IPAM_NODE", node)],
        conf,
    )
}

/// The addresses of an ADD result, with their prefix lengths.
pub fn addresses(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .map(|ips| {
            ips.iter()
                .filter_map(|i| i["address"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `conf` written to a file of the scratch directory, for the operator CLI.
pub fn conf_file(s: &Scratch, conf: &str) -> PathBuf {
    let path = s.path().join("net.conf");
    std::fs::write(&path, conf).expect("write conf");
    path
}

/// Every row `kube-ipam ls --output json` prints for the network in `conf`.
pub fn listed(s: &Scratch, conf: &str) -> Vec<Value> {
    let path = conf_file(s, conf);
    let (code, out, err) = cli(&[
        "ls",
        "--conf",
        &path.display().to_string(),
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "ls failed: {err}");
    serde_json::from_str::<Value>(&out)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_else(|| panic!("ls printed {out:?}"))
}

/// `kube-ipam usage --output json` of the network in `conf`: one item per range.
pub fn usage(s: &Scratch, conf: &str) -> Vec<Value> {
    let path = conf_file(s, conf);
    let (code, out, err) = cli(&[
        "usage",
        "--conf",
        &path.display().to_string(),
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "usage failed: {err}");
    serde_json::from_str::<Value>(&out)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_else(|| panic!("usage printed {out:?}"))
}

/// `kube-ipam check-store` finds nothing wrong with the network in `conf`.
pub fn consistent(s: &Scratch, conf: &str) {
    super::check_store(&conf_file(s, conf));
}
