//! containerd, the runtime kubelet drives, running kube-ipam as kubelet makes it run: RunPodSandbox
//! over CRI, containerd's CNI library executes Debian's `bridge` plugin from the conflist, and
//! the bridge plugin delegates IPAM to kube-ipam. Each test runs its own containerd (config,
//! root, state, socket and runc state under a temp dir), so it runs beside other tests and
//! leaves nothing behind; the sandbox image is built here as an OCI archive of a busybox-static
//! root and imported with `ctr`, no registry involved.
//!
//! Needs root, containerd, runc and busybox-static (scripts/install-deps.sh installs them).

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ImageSpec, ImageStatusRequest, LinuxPodSandboxConfig, ListPodSandboxRequest, PodSandboxConfig,
    PodSandboxMetadata, PodSandboxState, PodSandboxStatusRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StatusRequest, StopPodSandboxRequest,
};
use kube_ipam_etcd::testing::EtcdServer;
use serde_json::{json, Value};
use support::netns::is_root;
use support::{check_store, held};
use tonic::transport::{Channel, Endpoint, Uri};

const IMAGE: &str = "localhost/kube-ipam-sandbox:test";
/// One CRI call; RunPodSandbox of 20 at once on two loaded cores stays far below it.
const CALL: Duration = Duration::from_secs(120);

type Cri = RuntimeServiceClient<Channel>;

/// One containerd of its own, its CRI plugin set up as on a node.
struct Containerd {
    dir: tempfile::TempDir,
    daemon: Option<Child>,
    bridge: String,
    net: String,
    /// The cgroup every sandbox of this test goes under, as kubelet puts pods under kubepods.
    cgroup: String,
}

impl Containerd {
    /// Lays out the config, the CNI bin dir and the conflist; containerd is not started yet.
    fn new(net: &str, subnet: &str, ipam: Value) -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("kipam-ctrd-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        let tag = std::process::id() % 100_000;
        let bridge = format!("kcd{tag}{}", &net[net.len() - 1..]);
        for sub in ["net.d", "root", "state", "runc", "logs"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        let bin = support::netns::cni_path(d);
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin}"
    conf_dir = "{d}/net.d"
    max_conf_num = 1
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = d.join("containerd.sock").display(),
            d = d.display(),
            bin = bin.display(),
        );
        std::fs::write(d.join("config.toml"), config).expect("config.toml");

        let mut base = json!({
            "type": "kube-ipam",
            "subnet": subnet,
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": d.join("store"),
            "logFile": d.join("kube-ipam.log"),
            "logLevel": "debug",
        });
        support::merge(&mut base, ipam);
        // No host address on the bridge: the test needs no routes of its own on the host.
        let list = json!({
            "cniVersion": "1.0.0",
            "name": net,
            "plugins": [{
                "type": "bridge", "bridge": bridge, "isGateway": false, "ipMasq": false,
                "capabilities": {"io.kubernetes.cri.pod-annotations": true},
                "ipam": base,
            }],
        });
        // containerd's watcher reads a file copied in place half-written.
        let tmp = d.join("net.d/.conflist.tmp");
        std::fs::write(&tmp, list.to_string()).expect("conflist");
        std::fs::rename(&tmp, d.join(format!("net.d/10-{net}.conflist"))).expect("rename");
        // As unique as the temp dir it is named after.
        let cgroup = d
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Containerd {
            dir,
            daemon: None,
            bridge,
            net: net.to_owned(),
            cgroup,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn socket(&self) -> PathBuf {
        self.path().join("containerd.sock")
    }

    fn conflist(&self) -> PathBuf {
        self.path().join(format!("net.d/10-{}.conflist", self.net))
    }

    /// Starts containerd and waits until CRI says the runtime and the network are ready.
    async fn start(&mut self) -> Cri {
        assert!(self.daemon.is_none(), "containerd is running already");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path().join("containerd.log"))
            .expect("log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(self.path().join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self
                .daemon
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("containerd exited with {status}:\n{}", self.log());
            }
            if let Ok(mut cri) = connect(&self.socket()).await {
                let ready = cri
                    .status(StatusRequest { verbose: false })
                    .await
                    .ok()
                    .and_then(|r| r.into_inner().status)
                    .is_some_and(|s| {
                        ["RuntimeReady", "NetworkReady"]
                            .iter()
                            .all(|want| s.conditions.iter().any(|c| c.r#type == *want && c.status))
                    });
                if ready {
                    return cri;
                }
            }
            assert!(
                Instant::now() < deadline,
                "containerd not ready within 60 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills containerd outright, as a crash or an OOM kill would; shims and sandboxes stay.
    fn kill(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.path().join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Builds the sandbox image and imports it into containerd's `k8s.io` namespace.
    async fn import_image(&self) {
        let archive = sandbox_image(self.path());
        let out = Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["-n", "k8s.io", "images", "import"])
            .arg(&archive)
            .output()
            .expect("run ctr");
        assert!(
            out.status.success(),
            "ctr images import: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // CRI learns of the image from containerd's event stream.
        let channel = channel(&self.socket()).await.expect("connect");
        let mut images = ImageServiceClient::new(channel);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = images
                .image_status(ImageStatusRequest {
                    image: Some(ImageSpec {
                        image: IMAGE.into(),
                        ..Default::default()
                    }),
                    verbose: false,
                })
                .await
                .is_ok_and(|r| r.into_inner().image.is_some());
            if found {
                return;
            }
            assert!(Instant::now() < deadline, "CRI does not see {IMAGE}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The addresses kube-ipam's store holds for the network.
    fn held(&self) -> BTreeSet<String> {
        held(&self.conflist()).into_values().collect()
    }

    /// How many DEL calls kube-ipam logged for `container`.
    fn dels_logged(&self, container: &str) -> usize {
        std::fs::read_to_string(self.path().join("kube-ipam.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("command=\"DEL\"") || l.contains("command=DEL"))
            .filter(|l| l.contains(container) && l.contains("done"))
            .count()
    }
}

impl Drop for Containerd {
    /// Whatever state a failed test left: containerd, the sandboxes' processes, the shims, every
    /// mount under the temp dir (netns, rootfs, shm) and the bridge go.
    fn drop(&mut self) {
        self.kill();
        let d = self.path().to_owned();
        let runc_root = d.join("runc/k8s.io");
        let ids: Vec<String> = Command::new("runc")
            .arg("--root")
            .arg(&runc_root)
            .args(["list", "-q"])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        for id in &ids {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&runc_root)
                .args(["delete", "--force", id])
                .output();
        }
        let sock = self.socket().display().to_string();
        for pid in processes_naming(&sock) {
            // SAFETY: kill has no memory effects; the pid is a shim of this test's containerd.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        // A killed shim leaves its socket where containerd 1.6 puts every shim's:
        // /run/containerd/s/<sha256 of "<containerd socket>/<namespace>/<id>">.
        for id in &ids {
            let _ = std::fs::remove_file(format!(
                "/run/containerd/s/{}",
                sha256(format!("{sock}/k8s.io/{id}").as_bytes())
            ));
        }
        unmount_under(&d);
        remove_cgroup(&self.cgroup);
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

/// Pids of processes whose command line contains `needle`.
fn processes_naming(needle: &str) -> Vec<libc::pid_t> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// Removes the cgroup `name` and what is left below it, in every hierarchy (cgroup v1
/// controllers and the unified one).
fn remove_cgroup(name: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hierarchies.flatten() {
        let top = h.path().join(name);
        let mut dirs = vec![top.clone()];
        let mut i = 0;
        while i < dirs.len() {
            if let Ok(entries) = std::fs::read_dir(&dirs[i]) {
                dirs.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
            i += 1;
        }
        for dir in dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Detaches every mount at or below `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.display().to_string();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let Ok(c) = std::ffi::CString::new(p) else {
            continue;
        };
        // SAFETY: a valid NUL-terminated path; MNT_DETACH only unhooks the mount.
        unsafe {
            libc::umount2(c.as_ptr(), libc::MNT_DETACH);
        }
    }
}

async fn channel(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.to_owned();
    // The URI is required by tonic and ignored: every connection goes to the socket.
    Endpoint::from_static("http://[::1]:0")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
}

async fn connect(socket: &Path) -> Result<Cri, tonic::transport::Error> {
    Ok(RuntimeServiceClient::new(channel(socket).await?))
}

fn sha256(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// An OCI image archive of a busybox-static root whose entry point sleeps, as a pause image
/// does nothing but hold the sandbox's namespaces.
fn sandbox_image(dir: &Path) -> PathBuf {
    let rootfs = dir.join("image/rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).expect("mkdir");
    std::fs::copy("/usr/bin/busybox", rootfs.join("bin/busybox")).expect("busybox");
    for applet in ["sh", "sleep"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).expect("applet");
    }
    let layer_tar = dir.join("image/layer.tar");
    let ok = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&layer_tar)
        .arg(".")
        .status()
        .expect("tar")
        .success();
    assert!(ok, "tar of the rootfs failed");
    let layer = std::fs::read(&layer_tar).expect("layer");
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = json!({
        "architecture": arch, "os": "linux",
        "config": {"Entrypoint": ["/bin/sleep", "86400"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256(&layer))]},
    })
    .to_string()
    .into_bytes();
    let descriptor = |media: &str, blob: &[u8]| json!({"mediaType": media, "digest": format!("sha256:{}", sha256(blob)), "size": blob.len()});
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", &layer)],
    })
    .to_string()
    .into_bytes();
    let mut entry = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
    entry["annotations"] = json!({
        "io.containerd.image.name": IMAGE,
        "org.opencontainers.image.ref.name": "test",
    });
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry],
    });
    let layout = dir.join("image/layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    for blob in [&layer, &config, &manifest] {
        std::fs::write(blobs.join(sha256(blob)), blob).expect("blob");
    }
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
    std::fs::write(layout.join("index.json"), index.to_string()).expect("index.json");
    let archive = dir.join("image/sandbox.tar");
    let ok = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .status()
        .expect("tar")
        .success();
    assert!(ok, "tar of the image layout failed");
    archive
}

/// A pod as kubelet describes it to the runtime.
#[derive(Clone)]
struct PodSpec {
    namespace: String,
    name: String,
    uid: String,
    annotations: HashMap<String, String>,
}

impl PodSpec {
    fn new(namespace: &str, name: &str) -> PodSpec {
        PodSpec {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid(),
            annotations: HashMap::new(),
        }
    }
}

fn uid() -> String {
    let n: u128 = rand_u128();
    let h = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn rand_u128() -> u128 {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).expect("random");
    u128::from_le_bytes(b)
}

async fn run_sandbox(
    cri: &mut Cri,
    dir: &Path,
    cgroup: &str,
    pod: &PodSpec,
) -> Result<String, String> {
    let config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            namespace: pod.namespace.clone(),
            attempt: 0,
        }),
        hostname: pod.name.clone(),
        log_directory: dir.join("logs").join(&pod.uid).display().to_string(),
        annotations: pod.annotations.clone(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: format!("/{cgroup}"),
            ..Default::default()
        }),
        ..Default::default()
    };
    let call = cri.run_pod_sandbox(RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: String::new(),
    });
    match tokio::time::timeout(CALL, call).await {
        Ok(Ok(r)) => Ok(r.into_inner().pod_sandbox_id),
        Ok(Err(status)) => Err(status.message().to_owned()),
        Err(_) => Err(format!("no answer within {CALL:?}")),
    }
}

/// The sandbox's state and its address as CRI reports them.
async fn sandbox_status(cri: &mut Cri, id: &str) -> (i32, String) {
    let r = tokio::time::timeout(
        CALL,
        cri.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        }),
    )
    .await
    .expect("PodSandboxStatus answers")
    .expect("PodSandboxStatus")
    .into_inner();
    let s = r.status.expect("a status");
    (s.state, s.network.map(|n| n.ip).unwrap_or_default())
}

async fn stop(cri: &mut Cri, id: &str) {
    tokio::time::timeout(
        CALL,
        cri.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        }),
    )
    .await
    .expect("StopPodSandbox answers")
    .unwrap_or_else(|e| panic!("StopPodSandbox {id}: {}", e.message()));
}

async fn remove(cri: &mut Cri, id: &str) {
    tokio::time::timeout(
        CALL,
        cri.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        }),
    )
    .await
    .expect("RemovePodSandbox answers")
    .unwrap_or_else(|e| panic!("RemovePodSandbox {id}: {}", e.message()));
}

async fn sandbox_ids(cri: &mut Cri) -> Vec<String> {
    cri.list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items
        .into_iter()
        .map(|s| s.id)
        .collect()
}

async fn remove_all(cri: &mut Cri) {
    for id in sandbox_ids(cri).await {
        stop(cri, &id).await;
        remove(cri, &id).await;
    }
    assert!(sandbox_ids(cri).await.is_empty());
}

fn ready() -> bool {
    if !is_root() {
        eprintln!("skipped: needs root");
        return false;
    }
    for tool in [
        "/usr/bin/containerd",
        "/usr/bin/ctr",
        "/usr/bin/containerd-shim-runc-v2",
        "/usr/sbin/runc",
        "/usr/bin/busybox",
        "/usr/lib/cni/bridge",
        "/usr/lib/cni/loopback",
    ] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: run scripts/install-deps.sh"
        );
    }
    true
}

/// Everything on one store, in the order a node lives it.
async fn tour(c: &mut Containerd, prefix: &str) {
    let mut cri = c.start().await;
    c.import_image().await;
    let dir = c.path().to_owned();

    // Three pods: distinct addresses, each the one CRI reports, each held in the store.
    let pods: Vec<PodSpec> = (0..3)
        .map(|i| PodSpec::new("web", &format!("web-{i}")))
        .collect();
    let mut ids = Vec::new();
    for pod in &pods {
        ids.push(
            run_sandbox(&mut cri, &dir, &c.cgroup, pod)
                .await
                .expect("RunPodSandbox"),
        );
    }
    let mut addrs = BTreeMap::new();
    for id in &ids {
        let (state, ip) = sandbox_status(&mut cri, id).await;
        assert_eq!(state, PodSandboxState::SandboxReady as i32);
        assert!(ip.starts_with(prefix), "{ip}");
        addrs.insert(id.clone(), ip);
    }
    let distinct: BTreeSet<String> = addrs.values().cloned().collect();
    assert_eq!(distinct.len(), 3, "{addrs:?}");
    assert_eq!(c.held(), distinct);
    assert_eq!(
        held(&c.conflist()).keys().cloned().collect::<BTreeSet<_>>(),
        ids.iter().cloned().collect()
    );

    // Stop frees the address; a second stop and the removal send DEL again with an empty
    // CNI_NETNS, which must succeed and touch nobody else's address.
    let first = &ids[0];
    stop(&mut cri, first).await;
    assert!(
        !c.held().contains(&addrs[first]),
        "stop did not free {}",
        addrs[first]
    );
    stop(&mut cri, first).await;
    remove(&mut cri, first).await;
    assert!(
        c.dels_logged(first) >= 2,
        "containerd sent {} DEL for {first}",
        c.dels_logged(first)
    );
    let others: BTreeSet<String> = ids[1..].iter().map(|id| addrs[id].clone()).collect();
    assert_eq!(
        c.held(),
        others,
        "a repeated DEL freed another pod's address"
    );
    assert_eq!(check_store(&c.conflist()), 2);

    // containerd dies with sandboxes running and comes back: they keep their addresses, and
    // removing them afterwards frees everything.
    c.kill();
    let mut cri = c.start().await;
    for id in &ids[1..] {
        let (state, ip) = sandbox_status(&mut cri, id).await;
        assert_eq!(
            state,
            PodSandboxState::SandboxReady as i32,
            "{id} after restart"
        );
        assert_eq!(ip, addrs[id], "{id} changed address across the restart");
    }
    remove_all(&mut cri).await;
    assert!(c.held().is_empty(), "left held: {:?}", c.held());
    assert_eq!(check_store(&c.conflist()), 0);

    // Twenty pods at once.
    let mut burst = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (mut cri, dir, cgroup) = (cri.clone(), dir.clone(), c.cgroup.clone());
        let pod = PodSpec::new("burst", &format!("burst-{i}"));
        burst.spawn(async move { run_sandbox(&mut cri, &dir, &cgroup, &pod).await });
    }
    let mut started = Vec::new();
    while let Some(r) = burst.join_next().await {
        started.push(r.expect("task").expect("RunPodSandbox in the burst"));
    }
    let mut burst_ips = BTreeSet::new();
    for id in &started {
        let (state, ip) = sandbox_status(&mut cri, id).await;
        assert_eq!(state, PodSandboxState::SandboxReady as i32);
        assert!(ip.starts_with(prefix), "{ip}");
        burst_ips.insert(ip);
    }
    assert_eq!(burst_ips.len(), 20, "duplicate addresses: {burst_ips:?}");
    assert_eq!(c.held(), burst_ips);
    assert_eq!(check_store(&c.conflist()), 20);
    remove_all(&mut cri).await;
    assert!(c.held().is_empty(), "left held: {:?}", c.held());
    assert_eq!(check_store(&c.conflist()), 0);

    fixed_from_the_runtime(c, &mut cri, prefix).await;
}

/// A pod's `kube-ipam.ip` as containerd passes it (the conflist declares the
/// `io.kubernetes.cri.pod-annotations` capability), with no kubeconfig anywhere: the address
/// is the pod's, and the pod recreated under a new uid gets it again once the old sandbox's
/// DEL has come. Before that nothing can vouch that the old pod is gone, so the ADD fails
/// closed and kubelet would retry.
async fn fixed_from_the_runtime(c: &Containerd, cri: &mut Cri, prefix: &str) {
    assert!(
        !Path::new(kube_ipam::pod::DEFAULT_KUBECONFIG).exists(),
        "{} exists: this case needs a node without a kubeconfig",
        kube_ipam::pod::DEFAULT_KUBECONFIG
    );
    let dir = c.path().to_owned();
    let fixed = format!("{prefix}250");
    let mut pod = PodSpec::new("db", "database-0");
    pod.annotations.insert("kube-ipam.ip".into(), fixed.clone());
    let first = run_sandbox(cri, &dir, &c.cgroup, &pod)
        .await
        .expect("RunPodSandbox with a fixed address");
    assert_eq!(sandbox_status(cri, &first).await.1, fixed);
    assert_eq!(held(&c.conflist()).get(&first), Some(&fixed));

    // Deleted and recreated: same name, new uid, the old sandbox not yet torn down.
    let recreated = PodSpec {
        uid: uid(),
        ..pod.clone()
    };
    let refused = run_sandbox(cri, &dir, &c.cgroup, &recreated)
        .await
        .expect_err("the address is still held by the old sandbox");
    assert!(refused.contains(&fixed), "{refused}");
    assert_eq!(held(&c.conflist()).get(&first), Some(&fixed));
    stop(cri, &first).await;
    remove(cri, &first).await;
    let second = run_sandbox(cri, &dir, &c.cgroup, &recreated)
        .await
        .expect("RunPodSandbox of the recreated pod");
    assert_eq!(sandbox_status(cri, &second).await.1, fixed);
    assert_eq!(held(&c.conflist()).get(&second), Some(&fixed));
    remove_all(cri).await;
    assert!(c.held().is_empty(), "left held: {:?}", c.held());
    assert_eq!(check_store(&c.conflist()), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_on_the_embedded_store() {
    if !ready() {
        return;
    }
    let mut c = Containerd::new("kipam-ce", "10.231.0.0/24", json!({}));
    tour(&mut c, "10.231.0.").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_on_etcd() {
    if !ready() {
        return;
    }
    let etcd = EtcdServer::start().expect("etcd");
    let mut c = Containerd::new(
        "kipam-ct",
        "10.232.0.0/24",
        json!({"etcdConfig": {"etcdURL": etcd.endpoint()}}),
    );
    tour(&mut c, "10.232.0.").await;
}
