//! Pod lookups through the Kubernetes API with a kubeconfig file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use super::{NodeState, Owner, PodDirectory, PodId, PodMeta};
use crate::{Error, Result};

/// Deadline of one API request, connect included: kubelet waits on us, and a hung API must
/// turn into "try again later", not into a hung pod sandbox.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

pub struct KubeDirectory {
    client: Client,
    path: PathBuf,
    timeout: Duration,
}

impl KubeDirectory {
    /// The service account of the pod this runs in (`kube-ipam gc` as a CronJob).
    pub fn in_cluster(timeout: Duration) -> Result<KubeDirectory> {
        let fail = |why: String| Error::Kubernetes(format!("no in-cluster config: {why}"));
        let config = Config::incluster().map_err(|e| fail(e.to_string()))?;
        let client = client(config, timeout).map_err(fail)?;
        Ok(KubeDirectory {
            client,
            path: PathBuf::from("(in-cluster)"),
            timeout,
        })
    }

    /// Reads the kubeconfig and builds a client; no request is made yet.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<KubeDirectory> {
        let fail = |why: String| {
            Error::Kubernetes(format!("cannot use kubeconfig {}: {why}", path.display()))
        };
        let kc = Kubeconfig::read_from(path).map_err(|e| fail(e.to_string()))?;
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| fail(e.to_string()))?;
        let client = client(config, timeout).map_err(fail)?;
        Ok(KubeDirectory {
            client,
            path: path.to_owned(),
            timeout,
        })
    }
}

/// A client that gives up after `timeout` and reports the first answer as it is: the client's
/// own retries of 429/503/504 would wait out kubelet's patience behind our deadline and turn
/// "API unavailable" into "no answer", while kubelet retries the whole ADD anyway.
fn client(mut config: Config, timeout: Duration) -> std::result::Result<Client, String> {
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    config.default_retry = false;
    Client::try_from(config).map_err(|e| e.to_string())
}

impl KubeDirectory {
    /// One request within the deadline; errors name what was asked and the kubeconfig.
    async fn within<T>(
        &self,
        what: &str,
        request: impl std::future::Future<Output = kube::Result<T>>,
    ) -> Result<T> {
        let fail = |why: String| {
            Error::Kubernetes(format!(
                "cannot look up {what} (kubeconfig {}): {why}",
                self.path.display()
            ))
        };
        match tokio::time::timeout(self.timeout, request).await {
            Err(_) => Err(fail(format!(
                "no answer within {} s",
                self.timeout.as_secs_f32()
            ))),
            Ok(Err(e)) => Err(fail(e.to_string())),
            Ok(Ok(v)) => Ok(v),
        }
    }
}

fn unix(t: &Time) -> i64 {
    t.0.as_second()
}

fn meta(m: ObjectMeta, node: Option<String>) -> PodMeta {
    let controller = m
        .owner_references
        .unwrap_or_default()
        .into_iter()
        .find(|o| o.controller == Some(true))
        .map(|o| Owner {
            kind: o.kind,
            name: o.name,
        });
    PodMeta {
        uid: m.uid,
        annotations: m.annotations.unwrap_or_default(),
        controller,
        deletion: m.deletion_timestamp.as_ref().map(unix),
        node,
    }
}

#[async_trait]
impl PodDirectory for KubeDirectory {
    async fn pod(&self, namespace: &str, name: &str) -> Result<Option<PodMeta>> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        // Metadata only: it holds everything a pod asking for itself needs, and a pod's spec
        // can be large.
        let what = format!("pod {namespace}/{name}");
        let found = self.within(&what, api.get_metadata_opt(name)).await?;
        Ok(found.map(|m| meta(m.metadata, None)))
    }

    async fn holder(&self, namespace: &str, name: &str) -> Result<Option<PodMeta>> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        // The whole pod: the node it runs on is in its spec. Asked only when the address is
        // held by someone else, never on the common path.
        let what = format!("pod {namespace}/{name}");
        let found = self.within(&what, api.get_opt(name)).await?;
        Ok(found.map(|p| {
            let node = p.spec.and_then(|s| s.node_name);
            meta(p.metadata, node)
        }))
    }

    async fn node(&self, name: &str) -> Result<Option<NodeState>> {
        let api: Api<Node> = Api::all(self.client.clone());
        let found = self
            .within(&format!("node {name}"), api.get_opt(name))
            .await?;
        Ok(found.map(|n| {
            let ready = n
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "Ready")
                .map(|c| (c.status, c.last_transition_time.as_ref().map(unix)));
            let taints = n
                .spec
                .and_then(|s| s.taints)
                .unwrap_or_default()
                .into_iter()
                .map(|t| (t.key, t.effect))
                .collect();
            NodeState { ready, taints }
        }))
    }

    async fn list(&self) -> Result<Vec<PodId>> {
        let api: Api<Pod> = Api::all(self.client.clone());
        let fail = |why: String| {
            Error::Kubernetes(format!(
                "cannot list pods (kubeconfig {}): {why}",
                self.path.display()
            ))
        };
        let mut out = Vec::new();
        let mut params = ListParams::default().limit(500);
        // Pages keep each answer small on large clusters; a partial list would make live
        // pods look gone, so any failing page fails the whole list.
        loop {
            let page = tokio::time::timeout(self.timeout, api.list_metadata(&params))
                .await
                .map_err(|_| fail(format!("no answer within {} s", self.timeout.as_secs_f32())))?
                .map_err(|e| fail(e.to_string()))?;
            for m in page.items {
                if let (Some(namespace), Some(name)) = (m.metadata.namespace, m.metadata.name) {
                    out.push(PodId {
                        namespace,
                        name,
                        uid: m.metadata.uid,
                    });
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(out),
            }
        }
    }
}
