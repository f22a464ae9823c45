//! Who is asking: the pod behind a call, as the Kubernetes API describes it.
//!
//! Fixed and sticky addresses come from pod annotations, and a fixed address held by a pod
//! that no longer exists may be taken over. Both need the API; when it cannot answer, ADD
//! fails with "try again later" rather than guess.

pub mod annotations;
pub mod kube;
pub mod lost;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::Result;

pub use annotations::Intent;

/// Where the original plugin read its kubeconfig from; used when `kubeConfig` is unset and
/// the file exists.
pub const DEFAULT_KUBECONFIG: &str = "/etc/kubernetes/pki/kubectl.kubeconfig";

/// What kube-ipam needs to know of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodMeta {
    pub uid: Option<String>,
    pub annotations: BTreeMap<String, String>,
    /// The owner reference marked `controller` (a ReplicaSet, a StatefulSet, ...).
    pub controller: Option<Owner>,
    /// `metadata.deletionTimestamp` in Unix seconds: the pod is marked for deletion, and its
    /// grace period ends then.
    pub deletion: Option<i64>,
    /// `spec.nodeName`. Only a lookup of the whole pod ([`PodDirectory::holder`]) fills it.
    pub node: Option<String>,
}

/// An owner reference, as far as telling workloads apart goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub kind: String,
    pub name: String,
}

impl PodMeta {
    /// The pod's ordinal when a StatefulSet controls it: its name is `<set>-<ordinal>`.
    pub fn stateful_ordinal(&self, pod_name: &str) -> Option<u64> {
        let owner = self
            .controller
            .as_ref()
            .filter(|o| o.kind == "StatefulSet")?;
        let (_, n) = pod_name.rsplit_once('-')?;
        // The controller names its pods `<set>-<ordinal>`; a name that does not is not one
        // of its replicas as the ordinal rule knows them.
        if pod_name.len() != owner.name.len() + 1 + n.len() || !pod_name.starts_with(&owner.name) {
            return None;
        }
        if n.is_empty()
            || !n.bytes().all(|b| b.is_ascii_digit())
            || (n.len() > 1 && n.starts_with('0'))
        {
            return None;
        }
        n.parse().ok()
    }
}

/// A node, as far as telling whether Kubernetes has given it up goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeState {
    /// Status of the `Ready` condition (`True`, `False`, `Unknown`) and its
    /// `lastTransitionTime` in Unix seconds; `None` when the node reports no such condition.
    pub ready: Option<(String, Option<i64>)>,
    /// Taint keys with their effects.
    pub taints: Vec<(String, String)>,
}

/// A pod as the pod list names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodId {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
}

/// Pod lookups. `Ok(None)` is the API's word that the pod does not exist; anything the API
/// could not answer is an error.
#[async_trait]
pub trait PodDirectory: Send + Sync {
    /// The pod's metadata: what a pod asking for an address needs of itself.
    async fn pod(&self, namespace: &str, name: &str) -> Result<Option<PodMeta>>;

    /// The pod holding an address someone else asks for: metadata and the node it runs on.
    async fn holder(&self, namespace: &str, name: &str) -> Result<Option<PodMeta>>;

    /// A node; `Ok(None)` when the API says it does not exist.
    async fn node(&self, name: &str) -> Result<Option<NodeState>>;

    /// Every pod of the cluster, complete or not at all.
    async fn list(&self) -> Result<Vec<PodId>>;
}

/// The kubeconfig to use: the configured one (which must then work), else the default path
/// if it exists. `None` means this node is not set up to read pods.
pub fn kubeconfig(configured: Option<&Path>) -> Option<PathBuf> {
    match configured {
        Some(p) => Some(p.to_owned()),
        None => {
            let d = Path::new(DEFAULT_KUBECONFIG);
            d.exists().then(|| d.to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned_by(kind: &str, name: &str) -> PodMeta {
        PodMeta {
            controller: Some(Owner {
                kind: kind.into(),
                name: name.into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_a_statefulset_names_its_pods_by_ordinal() {
        let sts = owned_by("StatefulSet", "mysql");
        assert_eq!(sts.stateful_ordinal("mysql-0"), Some(0));
        assert_eq!(sts.stateful_ordinal("mysql-12"), Some(12));
        for name in [
            "mysql",
            "mysql-",
            "mysql-01",
            "mysql-x1",
            "other-1",
            "mysql-1-2",
        ] {
            assert_eq!(sts.stateful_ordinal(name), None, "{name}");
        }
        let set_with_dashes = owned_by("StatefulSet", "db-main");
        assert_eq!(set_with_dashes.stateful_ordinal("db-main-3"), Some(3));
        // A ReplicaSet's pod name can end in digits too.
        assert_eq!(
            owned_by("ReplicaSet", "web-7f9").stateful_ordinal("web-7f9-24567"),
            None
        );
        assert_eq!(PodMeta::default().stateful_ordinal("mysql-0"), None);
    }
}
