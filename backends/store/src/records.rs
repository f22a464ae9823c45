//! Values stored under the keys of [`crate::keys`]. JSON, so operators can read them with
//! `etcdctl get` as easily as with the CLI.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::StoreError;

/// How an address came to be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Picked at random from the dynamic range.
    Dynamic,
    /// Asked for by name (annotation, runtimeConfig, CNI_ARGS).
    Fixed,
    /// Dynamic at first, then kept for the pod across recreations.
    Sticky,
    /// Taken from an address pool named on the pod (`kube-ipam.ip-pool`); a StatefulSet's pod
    /// keeps it across recreations as a sticky address is kept.
    Pool,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Dynamic => "dynamic",
            Kind::Fixed => "fixed",
            Kind::Sticky => "sticky",
            Kind::Pool => "pool",
        })
    }
}

/// The pod behind an attachment, from CNI_ARGS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// Who holds an address: one attachment (container id + interface) of one pod on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Holder {
    pub container_id: String,
    pub ifname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    #[serde(default)]
    pub node: String,
}

impl Holder {
    /// The holder of a sticky address between two lives of its pod: the pod's binding, with
    /// no attachment. Container ids are never empty, so this never matches a real attachment.
    pub fn binding(pod: PodRef) -> Holder {
        Holder {
            container_id: String::new(),
            ifname: String::new(),
            pod: Some(pod),
            node: String::new(),
        }
    }

    /// Held by a pod binding rather than by a live attachment.
    pub fn is_binding(&self) -> bool {
        self.container_id.is_empty()
    }

    /// An attachment taken over from a plugin that never recorded the interface name (the
    /// original kube-ipam): the container's DEL releases it whatever `CNI_IFNAME` it carries.
    /// Runtimes never send an empty `CNI_IFNAME`, so no live attachment looks like this.
    pub fn is_any_interface(&self) -> bool {
        !self.container_id.is_empty() && self.ifname.is_empty()
    }

    /// Same attachment, whatever else differs.
    pub fn same_attachment(&self, other: &Holder) -> bool {
        self.container_id == other.container_id && self.ifname == other.ifname
    }

    /// Same pod by namespace/name (any uid).
    pub fn same_pod_name(&self, pod: &PodRef) -> bool {
        self.pod
            .as_ref()
            .is_some_and(|p| p.namespace == pod.namespace && p.name == pod.name)
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.pod {
            Some(p) if self.is_binding() => {
                return write!(
                    f,
                    "the binding of pod {}/{} (kept between its lives)",
                    p.namespace, p.name
                )
            }
            Some(p) => write!(
                f,
                "pod {}/{} (container {}, {}",
                p.namespace, p.name, self.container_id, self.ifname
            )?,
            None if self.is_any_interface() => {
                write!(f, "container {} (any interface", self.container_id)?
            }
            None => write!(f, "container {} ({}", self.container_id, self.ifname)?,
        }
        if !self.node.is_empty() {
            write!(f, ", node {}", self.node)?;
        }
        f.write_str(")")
    }
}

/// The record of one held address: the single source of truth for "is this IP taken".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpRecord {
    /// The network whose attachment or pod holds the address. Records of the layout before
    /// the shared address space lack it: they lie under their network's own keys.
    #[serde(default)]
    pub network: String,
    pub holder: Holder,
    pub kind: Kind,
    /// The range it was given from, by content (`subnet` or `subnet start-end`).
    pub range: String,
    /// Unix seconds.
    pub created: u64,
}

/// One address as an attachment holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachedIp {
    pub address: IpAddr,
    pub prefix_len: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    pub kind: Kind,
    pub range: String,
}

/// Everything one attachment holds; written in the same transaction as its address records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    pub holder: Holder,
    pub ips: Vec<AttachedIp>,
    pub created: u64,
}

/// Addresses bound to a pod identity (namespace/name) beyond the life of one attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Binding {
    pub pod: PodRef,
    pub ips: Vec<AttachedIp>,
    pub created: u64,
}

/// JSON encoding shared by every record type.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail: no maps with non-string keys, no I/O.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Decodes a stored record, naming the key on failure.
pub fn decode<T: for<'de> Deserialize<'de>>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_and_corruption() {
        let r = IpRecord {
            network: "net".into(),
            holder: Holder {
                container_id: "c1".into(),
                ifname: "eth0".into(),
                pod: Some(PodRef {
                    namespace: "ns".into(),
                    name: "p".into(),
                    uid: None,
                }),
                node: "n1".into(),
            },
            kind: Kind::Fixed,
            range: "10.0.0.0/24".into(),
            created: 5,
        };
        let bytes = encode(&r);
        assert_eq!(decode::<IpRecord>("k", &bytes).unwrap(), r);
        let err = decode::<IpRecord>("k", b"{").unwrap_err();
        assert!(err.to_string().contains("corrupt record at k"));
    }
}
