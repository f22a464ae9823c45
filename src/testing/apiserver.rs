//! A stand-in Kubernetes API server: HTTPS with its own CA, a bearer token, and real
//! `k8s-openapi` objects, enough for what kube-ipam asks of a cluster: one pod's metadata or
//! the whole pod, the pod list, one node. Pods carry what real API servers serve of them:
//! controller owner references, the node they are bound to, and the deletion marks of a
//! graceful delete (`deletionTimestamp` = request time + grace period,
//! `deletionGracePeriodSeconds`), under which the object stays until its kubelet confirms.
//! Nodes carry their `Ready` condition with its `lastTransitionTime`, and the taints the node
//! lifecycle controller adds to a node that is not Ready. Tests reach it through real
//! kubeconfig files.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, Node, NodeCondition, NodeSpec, NodeStatus, Pod, PodSpec, PodStatus, Taint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rand::Rng;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiMode {
    Serve,
    /// 403 to everything, as for a service account without RBAC.
    Forbidden,
    /// 503 to everything, as an overloaded or restarting API server.
    Unavailable,
    /// Reads each request and never answers, as a wedged API server or a black-holed route.
    Hang,
}

#[derive(Default)]
struct State {
    pods: BTreeMap<(String, String), Pod>,
    nodes: BTreeMap<String, Node>,
    requests: Vec<String>,
    version: u64,
    /// Replaces the token of `start` once set (`set_token`).
    token: Option<String>,
}

/// The taints the node lifecycle controller puts on a node whose Ready condition is `False`
/// or `Unknown`.
const NOT_READY: &str = "node.kubernetes.io/not-ready";
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// A time `ago` before now, as the API writes times (whole seconds).
fn time_ago(ago: Duration) -> Time {
    let secs = i64::try_from(ago.as_secs()).unwrap_or(i64::MAX);
    let now = Timestamp::now();
    let t = now
        .checked_sub(SignedDuration::from_secs(secs))
        .unwrap_or(now);
    Time(Timestamp::from_second(t.as_second()).unwrap_or(t))
}

/// A pod to add: [`KubeApi::pod`].
pub struct NewPod<'a> {
    api: &'a KubeApi,
    namespace: String,
    name: String,
    node: Option<String>,
    owner: Option<(String, String)>,
    annotations: Vec<(String, String)>,
}

impl NewPod<'_> {
    /// Bound to `node` (`spec.nodeName`).
    pub fn on(mut self, node: &str) -> Self {
        self.node = Some(node.to_owned());
        self
    }

    /// Controlled by a workload: an owner reference with `controller: true`, as a
    /// StatefulSet (`apps/v1`) or a ReplicaSet writes it on the pods it creates.
    pub fn controlled_by(mut self, kind: &str, name: &str) -> Self {
        self.owner = Some((kind.to_owned(), name.to_owned()));
        self
    }

    pub fn annotations(mut self, annotations: &[(&str, &str)]) -> Self {
        self.annotations = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self
    }

    /// Adds or replaces the pod; returns its new uid (a recreated pod gets a new one).
    pub fn create(self) -> String {
        self.api.put_pod(self)
    }
}

pub struct KubeApi {
    addr: SocketAddr,
    token: String,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    ca: PathBuf,
    wrong_ca: PathBuf,
    state: Arc<Mutex<State>>,
    mode: Arc<Mutex<ApiMode>>,
    stopped: Arc<AtomicBool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test thread that panicked while holding the lock must not hide the real failure.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn random_uid() -> String {
    format!(
        "{}-{}-{}-{}-{}",
        random_hex(4),
        random_hex(2),
        random_hex(2),
        random_hex(2),
        random_hex(6)
    )
}

fn random_hex(bytes: usize) -> String {
    let mut rng = rand::rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

impl KubeApi {
    /// Serves HTTPS on a free loopback port with a fresh CA and a random token.
    pub fn start() -> io::Result<KubeApi> {
        let dir = tempfile::tempdir()?;
        let tls = kube_ipam_etcd::testing::generate_certs(&dir.path().join("pki"))?;
        let certs = CertificateDer::pem_file_iter(&tls.server_cert)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| io::Error::other(format!("server certificate: {e}")))?;
        let key = PrivateKeyDer::from_pem_file(&tls.server_key)
            .map_err(|e| io::Error::other(format!("server key: {e}")))?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(io::Error::other)?;
        let config = Arc::new(config);

        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let token = random_hex(16);
        let state = Arc::new(Mutex::new(State::default()));
        let mode = Arc::new(Mutex::new(ApiMode::Serve));
        let stopped = Arc::new(AtomicBool::new(false));
        let api = KubeApi {
            addr,
            kubeconfig: dir.path().join("kubeconfig"),
            ca: tls.ca.clone(),
            wrong_ca: tls.wrong_ca.clone(),
            token: token.clone(),
            dir,
            state: state.clone(),
            mode: mode.clone(),
            stopped: stopped.clone(),
        };
        api.write_kubeconfig(&api.kubeconfig, &token, &api.ca)?;

        thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(sock) = conn else { continue };
                let (config, token, state, mode) =
                    (config.clone(), token.clone(), state.clone(), mode.clone());
                thread::spawn(move || {
                    let _ = serve(sock, config, &token, &state, &mode);
                });
            }
            // Dropping the listener here closes the port: clients now get "connection refused".
        });
        Ok(api)
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// A kubeconfig with the server, its CA and the token.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A kubeconfig with another token, which the server refuses (401).
    pub fn kubeconfig_with_token(&self, token: &str) -> PathBuf {
        let p = self
            .dir
            .path()
            .join(format!("kubeconfig-token-{}", random_hex(4)));
        let _ = self.write_kubeconfig(&p, token, &self.ca);
        p
    }

    /// A kubeconfig trusting a CA that did not sign the server's certificate.
    pub fn kubeconfig_with_wrong_ca(&self) -> PathBuf {
        let p = self.dir.path().join("kubeconfig-wrong-ca");
        let _ = self.write_kubeconfig(&p, &self.token, &self.wrong_ca);
        p
    }

    fn write_kubeconfig(&self, path: &Path, token: &str, ca: &Path) -> io::Result<()> {
        let doc = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "standin", "cluster": {
                "server": self.url(), "certificate-authority": ca}}],
            "users": [{"name": "kube-ipam", "user": {"token": token}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "kube-ipam"}}],
            "current-context": "standin",
        });
        std::fs::write(path, doc.to_string())
    }

    /// Adds or replaces a pod; returns its new uid (a recreated pod gets a new one).
    pub fn add_pod(&self, namespace: &str, name: &str, annotations: &[(&str, &str)]) -> String {
        self.pod(namespace, name).annotations(annotations).create()
    }

    /// Same, scheduled on `node`.
    pub fn add_pod_on(
        &self,
        namespace: &str,
        name: &str,
        node: &str,
        annotations: &[(&str, &str)],
    ) -> String {
        self.pod(namespace, name)
            .on(node)
            .annotations(annotations)
            .create()
    }

    /// A pod to describe further, then [`NewPod::create`].
    pub fn pod(&self, namespace: &str, name: &str) -> NewPod<'_> {
        NewPod {
            api: self,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            node: None,
            owner: None,
            annotations: Vec::new(),
        }
    }

    fn put_pod(&self, new: NewPod<'_>) -> String {
        let uid = random_uid();
        let mut st = lock(&self.state);
        st.version += 1;
        let annotations: BTreeMap<String, String> = new.annotations.into_iter().collect();
        let owner_references = new.owner.map(|(kind, name)| {
            vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind,
                name,
                uid: random_uid(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]
        });
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(new.name.clone()),
                namespace: Some(new.namespace.clone()),
                uid: Some(uid.clone()),
                resource_version: Some(st.version.to_string()),
                annotations: (!annotations.is_empty()).then_some(annotations),
                owner_references,
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: new.node,
                containers: vec![Container {
                    name: "app".into(),
                    image: Some("busybox".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                ..Default::default()
            }),
        };
        st.pods.insert((new.namespace, new.name), pod);
        uid
    }

    /// A graceful delete of the pod, requested `ago` with a grace period of `grace_secs`: the
    /// API marks the object and keeps it until its kubelet confirms (never, on a lost node).
    /// Returns whether the pod exists.
    pub fn mark_for_deletion(
        &self,
        namespace: &str,
        name: &str,
        grace_secs: i64,
        ago: Duration,
    ) -> bool {
        let mut st = lock(&self.state);
        st.version += 1;
        let version = st.version.to_string();
        let Some(pod) = st.pods.get_mut(&(namespace.to_owned(), name.to_owned())) else {
            return false;
        };
        let requested = time_ago(ago).0;
        let at = requested
            .checked_add(SignedDuration::from_secs(grace_secs))
            .unwrap_or(requested);
        pod.metadata.deletion_timestamp = Some(Time(at));
        pod.metadata.deletion_grace_period_seconds = Some(grace_secs);
        pod.metadata.resource_version = Some(version);
        true
    }

    /// Adds or replaces a node, Ready since now.
    pub fn add_node(&self, name: &str) {
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                uid: Some(random_uid()),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus::default()),
        };
        lock(&self.state).nodes.insert(name.to_owned(), node);
        self.set_node_ready(name, "True", Duration::ZERO);
    }

    /// Sets the node's Ready condition to `status` (`True`, `False`, `Unknown`) since `ago`,
    /// with the taints the node lifecycle controller keeps in step with it: `not-ready` for
    /// `False`, `unreachable` for `Unknown`, each `NoSchedule` and `NoExecute`. Returns
    /// whether the node exists.
    pub fn set_node_ready(&self, name: &str, status: &str, ago: Duration) -> bool {
        let mut st = lock(&self.state);
        st.version += 1;
        let Some(node) = st.nodes.get_mut(name) else {
            return false;
        };
        let since = time_ago(ago);
        let (reason, message) = match status {
            "True" => ("KubeletReady", "kubelet is posting ready status"),
            "False" => ("KubeletNotReady", "container runtime network not ready"),
            _ => ("NodeStatusUnknown", "Kubelet stopped posting node status."),
        };
        let status_ = node.status.get_or_insert_with(Default::default);
        let conditions = status_.conditions.get_or_insert_with(Vec::new);
        conditions.retain(|c| c.type_ != "Ready");
        conditions.push(NodeCondition {
            type_: "Ready".into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_heartbeat_time: Some(since.clone()),
            last_transition_time: Some(since.clone()),
        });
        let taints = node
            .spec
            .get_or_insert_with(Default::default)
            .taints
            .get_or_insert_with(Vec::new);
        taints.retain(|t| t.key != NOT_READY && t.key != UNREACHABLE);
        let key = match status {
            "True" => None,
            "False" => Some(NOT_READY),
            _ => Some(UNREACHABLE),
        };
        for effect in key.map_or(&[][..], |_| &["NoSchedule", "NoExecute"][..]) {
            taints.push(Taint {
                key: key.unwrap_or_default().into(),
                effect: (*effect).into(),
                time_added: Some(since.clone()),
                value: None,
            });
        }
        true
    }

    /// Adds a taint, as an operator does with `kubectl taint` (e.g. the out-of-service taint
    /// of a non-graceful node shutdown). Returns whether the node exists.
    pub fn taint_node(&self, name: &str, key: &str, value: &str, effect: &str) -> bool {
        let mut st = lock(&self.state);
        st.version += 1;
        let Some(node) = st.nodes.get_mut(name) else {
            return false;
        };
        node.spec
            .get_or_insert_with(Default::default)
            .taints
            .get_or_insert_with(Vec::new)
            .push(Taint {
                key: key.into(),
                value: Some(value.into()),
                effect: effect.into(),
                time_added: Some(time_ago(Duration::ZERO)),
            });
        true
    }

    pub fn remove_node(&self, name: &str) -> bool {
        let mut st = lock(&self.state);
        st.version += 1;
        st.nodes.remove(name).is_some()
    }

    pub fn remove_pod(&self, namespace: &str, name: &str) -> bool {
        let mut st = lock(&self.state);
        st.version += 1;
        st.pods
            .remove(&(namespace.to_owned(), name.to_owned()))
            .is_some()
    }

    pub fn set_mode(&self, mode: ApiMode) {
        *lock(&self.mode) = mode;
    }

    /// Every request seen, as `METHOD PATH | Accept`.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.state).requests.clone()
    }

    /// Stops listening: from now on the port refuses connections.
    pub fn stop(&self) {
        if !self.stopped.swap(true, Ordering::SeqCst) {
            // Wake the accept loop so it sees the flag and drops the listener.
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            // Wait until the port is really closed, so callers can rely on it.
            for _ in 0..200 {
                if TcpStream::connect_timeout(&self.addr, Duration::from_millis(50)).is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// From now on only `token` is accepted, as after a service-account token rotation; the
    /// kubeconfigs written before hold the old one and get 401.
    pub fn set_token(&self, token: &str) {
        lock(&self.state).token = Some(token.to_owned());
    }

    /// The CA that signed the server's certificate (PEM), as a pod finds it in `ca.crt`.
    pub fn ca(&self) -> &Path {
        &self.ca
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One connection: one request, one answer, then close.
fn serve(
    sock: TcpStream,
    config: Arc<rustls::ServerConfig>,
    token: &str,
    state: &Mutex<State>,
    mode: &Mutex<ApiMode>,
) -> io::Result<()> {
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    sock.set_write_timeout(Some(Duration::from_secs(5)))?;
    let conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let (method, target, headers) = {
        let mut reader = BufReader::new(&mut tls);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let target = parts.next().unwrap_or_default().to_owned();
        let mut headers = BTreeMap::new();
        let mut body_len = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_owned());
                if k == "content-length" {
                    body_len = v.parse().unwrap_or(0);
                }
                headers.insert(k, v);
            }
        }
        let mut body = vec![0; body_len.min(1 << 20)];
        reader.read_exact(&mut body)?;
        (method, target, headers)
    };
    let accept = headers.get("accept").cloned().unwrap_or_default();
    lock(state)
        .requests
        .push(format!("{method} {target} | {accept}"));
    // Hold the connection open without a word until the mode changes (bounded, so a
    // forgotten Hang cannot keep a test thread alive forever).
    let hung = Instant::now();
    while *lock(mode) == ApiMode::Hang && hung.elapsed() < Duration::from_secs(60) {
        thread::sleep(Duration::from_millis(10));
    }
    if *lock(mode) == ApiMode::Hang {
        return Ok(());
    }
    let (code, body) = answer(&method, &target, &accept, &headers, token, state, mode);
    let body = body.to_string();
    let reason = match code {
        200 => "OK",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Service Unavailable",
    };
    write!(
        tls,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    tls.flush()?;
    tls.conn.send_close_notify();
    tls.flush()
}

fn status(code: u16, reason: &str, message: String) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

fn partial(pod: &Pod) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": pod.metadata})
}

fn answer(
    method: &str,
    target: &str,
    accept: &str,
    headers: &BTreeMap<String, String>,
    token: &str,
    state: &Mutex<State>,
    mode: &Mutex<ApiMode>,
) -> (u16, Value) {
    let token = lock(state)
        .token
        .clone()
        .unwrap_or_else(|| token.to_owned());
    if headers.get("authorization").map(String::as_str) != Some(&format!("Bearer {token}")) {
        return status(401, "Unauthorized", "Unauthorized".into());
    }
    let path = target.split('?').next().unwrap_or_default();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match *lock(mode) {
        ApiMode::Serve | ApiMode::Hang => {}
        ApiMode::Forbidden => {
            let resource = if segs.contains(&"nodes") {
                "nodes"
            } else {
                "pods"
            };
            return status(
                403,
                "Forbidden",
                format!("{resource} is forbidden: User \"system:serviceaccount:kube-system:kube-ipam\" cannot {method} {path}"),
            );
        }
        ApiMode::Unavailable => {
            return status(
                503,
                "ServiceUnavailable",
                "the server is currently unable to handle the request".into(),
            )
        }
    }
    let st = lock(state);
    let list = |items: Vec<&Pod>| {
        if accept.contains("as=PartialObjectMetadataList") {
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                   "metadata": {"resourceVersion": st.version.to_string()},
                   "items": items.into_iter().map(partial).collect::<Vec<_>>()})
        } else {
            json!({"apiVersion": "v1", "kind": "PodList",
                   "metadata": {"resourceVersion": st.version.to_string()},
                   "items": items.into_iter().map(|p| {
                       let mut v = serde_json::to_value(p).unwrap_or_default();
                       v["apiVersion"] = json!("v1");
                       v["kind"] = json!("Pod");
                       v
                   }).collect::<Vec<_>>()})
        }
    };
    match (method, segs.as_slice()) {
        ("GET", ["api", "v1", "pods"]) => (200, list(st.pods.values().collect())),
        ("GET", ["api", "v1", "namespaces", ns, "pods"]) => (
            200,
            list(
                st.pods
                    .iter()
                    .filter(|((n, _), _)| n == ns)
                    .map(|(_, p)| p)
                    .collect(),
            ),
        ),
        ("GET", ["api", "v1", "nodes", name]) => match st.nodes.get(*name) {
            None => status(404, "NotFound", format!("nodes \"{name}\" not found")),
            Some(n) => {
                let mut v = serde_json::to_value(n).unwrap_or_default();
                v["apiVersion"] = json!("v1");
                v["kind"] = json!("Node");
                (200, v)
            }
        },
        ("GET", ["api", "v1", "namespaces", ns, "pods", name]) => {
            match st.pods.get(&(ns.to_string(), name.to_string())) {
                None => status(404, "NotFound", format!("pods \"{name}\" not found")),
                Some(p) if accept.contains("as=PartialObjectMetadata") => (200, partial(p)),
                Some(p) => {
                    let mut v = serde_json::to_value(p).unwrap_or_default();
                    v["apiVersion"] = json!("v1");
                    v["kind"] = json!("Pod");
                    (200, v)
                }
            }
        }
        _ => status(404, "NotFound", format!("the server could not find {path}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::ListParams;
    use kube::config::{KubeConfigOptions, Kubeconfig};
    use kube::{Api, Client, Config};

    async fn api(kubeconfig: &Path) -> Api<Pod> {
        let kc = Kubeconfig::read_from(kubeconfig).unwrap();
        let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap();
        Api::namespaced(Client::try_from(cfg).unwrap(), "ns")
    }

    #[tokio::test(flavor = "current_thread")]
    async fn serves_pods_to_the_kube_client() {
        let server = KubeApi::start().unwrap();
        let uid = server.add_pod("ns", "p", &[("kube-ipam.ip", "10.0.0.5")]);
        let pods = api(server.kubeconfig()).await;
        let m = pods.get_metadata_opt("p").await.unwrap().unwrap();
        assert_eq!(m.metadata.uid.as_deref(), Some(uid.as_str()));
        assert_eq!(m.metadata.annotations.unwrap()["kube-ipam.ip"], "10.0.0.5");
        assert!(pods.get_metadata_opt("nope").await.unwrap().is_none());
        let full = pods.get("p").await.unwrap();
        assert_eq!(full.spec.unwrap().containers[0].name, "app");
        let all = pods.list_metadata(&ListParams::default()).await.unwrap();
        assert_eq!(all.items.len(), 1);
        assert!(server
            .requests()
            .iter()
            .any(|r| r.contains("/pods/p | ") && r.contains("as=PartialObjectMetadata")));

        let wrong = api(&server.kubeconfig_with_token("nope")).await;
        assert!(wrong.get_metadata_opt("p").await.is_err());
        // Workload pods: controller, node, the marks of a graceful delete; nodes.
        let owned = server
            .pod("ns", "db-0")
            .on("n1")
            .controlled_by("StatefulSet", "db")
            .create();
        assert!(server.mark_for_deletion("ns", "db-0", 30, Duration::from_secs(100)));
        let p = pods.get("db-0").await.unwrap();
        assert_eq!(p.metadata.uid.as_deref(), Some(owned.as_str()));
        let refs = p.metadata.owner_references.unwrap();
        assert_eq!(
            (refs[0].kind.as_str(), refs[0].controller),
            ("StatefulSet", Some(true))
        );
        assert_eq!(p.spec.unwrap().node_name.as_deref(), Some("n1"));
        let at = p.metadata.deletion_timestamp.unwrap().0.as_second();
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        assert!((now - 71..=now - 69).contains(&at), "{at} vs {now}");
        assert_eq!(p.metadata.deletion_grace_period_seconds, Some(30));
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(pods.clone().into_client());
        assert!(nodes.get_opt("n1").await.unwrap().is_none());
        server.add_node("n1");
        assert!(server.set_node_ready("n1", "Unknown", Duration::from_secs(400)));
        let n = nodes.get("n1").await.unwrap();
        let ready = &n.status.unwrap().conditions.unwrap()[0];
        assert_eq!(
            (ready.type_.as_str(), ready.status.as_str()),
            ("Ready", "Unknown")
        );
        let taints = n.spec.unwrap().taints.unwrap();
        assert!(taints
            .iter()
            .any(|t| t.key == UNREACHABLE && t.effect == "NoExecute"));
        assert!(server.remove_node("n1"));
        assert!(nodes.get_opt("n1").await.unwrap().is_none());

        let untrusted = api(&server.kubeconfig_with_wrong_ca()).await;
        assert!(untrusted.get_metadata_opt("p").await.is_err());
        server.set_mode(ApiMode::Forbidden);
        let e = pods.get_metadata_opt("p").await.unwrap_err();
        assert!(e.to_string().contains("forbidden"), "{e}");
        server.set_mode(ApiMode::Serve);
        server.stop();
        assert!(TcpStream::connect(server.addr).is_err());
        assert!(api(server.kubeconfig())
            .await
            .get_metadata_opt("p")
            .await
            .is_err());
    }
}
