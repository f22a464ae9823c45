//! Who is asking: the pod behind a call, as the Kubernetes API describes it.
//!
//! Fixed and sticky addresses come from pod annotations, and a fixed address held by a pod
//! that no longer exists may be taken over. Both need the API; when it cannot answer, ADD
//! fails with "try again later" rather than guess.

pub mod annotations;
pub mod kube;

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
    async fn pod(&self, namespace: &str, name: &str) -> Result<Option<PodMeta>>;

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
