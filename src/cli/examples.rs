//! Working configs to start from, one per common main plugin.

use serde_json::{json, Value};

use super::ExampleType;

fn ipam() -> Value {
    json!({
        "type": "kube-ipam",
        "kubeConfig": "/etc/kubernetes/pki/kubectl.kubeconfig",
        "etcdConfig": {
            "etcdURL": "https://192.168.1.50:2379,https://192.168.1.51:2379,https://192.168.1.52:2379",
            "etcdCertFile": "/etc/kubernetes/ssl/etcd.pem",
            "etcdKeyFile": "/etc/kubernetes/ssl/etcd-key.pem",
            "etcdTrustedCAFileFile": "/etc/kubernetes/ssl/ca.pem"
        },
        "subnet": "10.188.0.0/16",
        "fixedStart": "10.188.0.10",
        "fixedEnd": "10.188.0.255",
        "rangeStart": "10.188.1.0",
        "rangeEnd": "10.188.255.254",
        "gateway": "10.188.0.1",
        "routes": [{"dst": "0.0.0.0/0"}],
        "resolvConf": "/etc/resolv.conf"
    })
}

/// containerd and CRI-O then pass the pod's annotations in `runtimeConfig`, and kube-ipam
/// reads them there instead of asking the API server for the pod on every ADD.
fn capabilities() -> Value {
    json!({"io.kubernetes.cri.pod-annotations": true})
}

pub fn example(kind: ExampleType) -> String {
    let conf = match kind {
        ExampleType::Macvlan => json!({
            "cniVersion": "1.0.0", "name": "macvlan-net", "type": "macvlan",
            "master": "eth0", "mode": "bridge", "capabilities": capabilities(), "ipam": ipam()
        }),
        ExampleType::Ipvlan => json!({
            "cniVersion": "1.0.0", "name": "ipvlan-net", "type": "ipvlan",
            "master": "eth0", "mode": "l2", "capabilities": capabilities(), "ipam": ipam()
        }),
        ExampleType::Bridge => json!({
            "cniVersion": "1.0.0", "name": "bridge-net", "type": "bridge",
            "bridge": "cni0", "isGateway": true, "ipMasq": true,
            "capabilities": capabilities(), "ipam": ipam()
        }),
        ExampleType::Multus => json!({
            "cniVersion": "1.0.0", "name": "multus-cni-network", "type": "multus",
            "kubeconfig": "/etc/cni/net.d/multus.d/multus.kubeconfig",
            "delegates": [{
                "cniVersion": "1.0.0", "name": "database-net", "type": "macvlan",
                "master": "eth0", "mode": "bridge", "capabilities": capabilities(),
                "ipam": ipam()
            }]
        }),
    };
    serde_json::to_string_pretty(&conf).unwrap_or_default()
}
