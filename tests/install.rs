//! `kube-ipam install` as the DaemonSet runs it: the binary copied, a kubeconfig written from a
//! service-account directory laid out as kubelet lays out a projected volume, the plugin it
//! installed reading pods from the stand-in API (HTTPS, its own CA) with that kubeconfig, and
//! the kubeconfig rewritten when kubelet swaps the token.

mod support;

use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube_ipam::testing::apiserver::KubeApi;
use serde_json::json;
use support::{run, Out, BIN};

/// A projected service-account volume as kubelet's atomic writer keeps it: the files live in a
/// timestamped directory, `..data` points at it, and `token`, `ca.crt`, `namespace` point
/// through `..data`. A rotation writes a new directory and renames a new `..data` link over
/// the old one, so readers see one generation or the other.
struct ServiceAccount {
    dir: PathBuf,
    generation: u32,
    ca: Vec<u8>,
}

impl ServiceAccount {
    fn new(dir: PathBuf, token: &str, ca: &Path) -> ServiceAccount {
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut sa = ServiceAccount {
            dir,
            generation: 0,
            ca: std::fs::read(ca).expect("read the CA"),
        };
        sa.publish(token);
        for name in ["token", "ca.crt", "namespace"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), sa.dir.join(name))
                .expect("symlink");
        }
        sa
    }

    /// Writes a new generation holding `token` and swaps `..data` to it.
    fn publish(&mut self, token: &str) {
        let old = self.generation_dir();
        self.generation += 1;
        let new = self.generation_dir();
        std::fs::create_dir(self.dir.join(&new)).expect("mkdir generation");
        std::fs::write(self.dir.join(&new).join("token"), token).expect("token");
        std::fs::write(self.dir.join(&new).join("ca.crt"), &self.ca).expect("ca.crt");
        std::fs::write(self.dir.join(&new).join("namespace"), "kube-system").expect("ns");
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&new, &tmp).expect("symlink ..data_tmp");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("swap ..data");
        if self.generation > 1 {
            std::fs::remove_dir_all(self.dir.join(old)).expect("remove old generation");
        }
    }

    fn generation_dir(&self) -> String {
        format!(
            "..2026_12_01_10_00_{:02}.{}",
            self.generation,
            1000 + self.generation
        )
    }
}

/// The installer running with `--watch`; killed when the test ends, whatever happens.
struct Watching(Option<Child>);

impl Watching {
    /// Sends SIGTERM and returns the exit code, waiting up to 10 s.
    fn terminate(&mut self) -> Option<i32> {
        let mut child = self.0.take()?;
        // SAFETY: kill has no memory effects; the pid is our own unreaped child.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("install --watch did not stop within 10 s of SIGTERM");
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `kube-ipam install ARGS` with the service variables a pod has, pointing at `api`.
fn install(api: Option<&KubeApi>, args: &[&dyn AsRef<OsStr>]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .arg("install")
        .args(args.iter().map(|a| a.as_ref()));
    if let Some(api) = api {
        let url = api.url();
        let (host, port) = url
            .trim_start_matches("https://")
            .rsplit_once(':')
            .expect("host:port");
        cmd.env("KUBERNETES_SERVICE_HOST", host)
            .env("KUBERNETES_SERVICE_PORT", port);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Polls until `done` holds, up to `limit`.
fn await_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

/// ADD through `plugin` for pod `ns/name` with the network config `conf`.
fn add(plugin: &Path, conf: &Path, container: &str, ns: &str, name: &str, uid: &str) -> Out {
    let mut cmd = Command::new(plugin);
    cmd.env_clear()
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", container)
        .env("CNI_IFNAME", "net1")
        .env("CNI_NETNS", "/var/run/netns/install-test")
        .env("CNI_PATH", "/opt/cni/bin")
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name};K8S_POD_UID={uid}"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    run(
        cmd,
        &std::fs::read(conf).expect("read the installed config"),
    )
}

#[test]
fn installed_plugin_reads_pods_with_the_written_kubeconfig_across_a_token_rotation() {
    let api = KubeApi::start().expect("stand-in API");
    let d = tempfile::tempdir().expect("tempdir");
    let (bin, etc, src) = (
        d.path().join("bin"),
        d.path().join("etc"),
        d.path().join("src"),
    );
    for dir in [&bin, &etc, &src] {
        std::fs::create_dir(dir).expect("mkdir");
    }
    let mut sa = ServiceAccount::new(d.path().join("sa"), api.token(), api.ca());
    let kubeconfig = etc.join("kubeconfig");
    let conf = json!({
        "cniVersion": "1.0.0", "name": "install-net", "type": "macvlan", "master": "eth0",
        "ipam": {"type": "kube-ipam", "subnet": "10.237.0.0/24",
                 "fixedStart": "10.237.0.10", "fixedEnd": "10.237.0.99",
                 "rangeStart": "10.237.0.100", "rangeEnd": "10.237.0.200",
                 "kubeConfig": kubeconfig, "dataDir": d.path().join("data"),
                 "logFile": d.path().join("kube-ipam.log")},
    });
    std::fs::write(src.join("net.conf"), conf.to_string()).expect("conf");
    let uid0 = api.add_pod("db", "database-0", &[("kube-ipam.ip", "10.237.0.50")]);
    let uid1 = api.add_pod("db", "database-1", &[("kube-ipam.ip", "10.237.0.51")]);

    let mut watching = Watching(Some(
        install(
            Some(&api),
            &[
                &"--bin-dir",
                &bin,
                &"--kubeconfig",
                &kubeconfig,
                &"--service-account-dir",
                &sa.dir,
                &"--conf-dir",
                &etc,
                &src.join("net.conf"),
                &"--watch",
            ],
        )
        .spawn()
        .expect("spawn install"),
    ));
    let installed_conf = etc.join("net.conf");
    await_until(Duration::from_secs(30), "first install", || {
        kubeconfig.exists() && installed_conf.exists()
    });
    let plugin = bin.join("kube-ipam");
    assert_eq!(
        std::fs::read(&plugin).expect("installed binary"),
        std::fs::read(BIN).expect("binary"),
        "the installed plugin is not this build"
    );
    assert_eq!(mode(&plugin), 0o755);
    assert_eq!(mode(&kubeconfig), 0o600);
    assert_eq!(
        std::fs::read_to_string(&installed_conf).expect("installed conf"),
        conf.to_string()
    );

    let first = add(&plugin, &installed_conf, "c0", "db", "database-0", &uid0);
    assert_eq!(first.ip(), "10.237.0.50");

    // The token rotates: the API accepts only the new one, and the kubeconfig still holds the
    // old one until the installer sees the swap.
    let new_token = "rotated.token-2";
    api.set_token(new_token);
    let refused = add(&plugin, &installed_conf, "c1", "db", "database-1", &uid1);
    let details = refused.err(11);
    assert!(
        details.contains("401") || details.contains("Unauthorized"),
        "{details}"
    );
    let rotated = Instant::now();
    sa.publish(new_token);
    await_until(
        Duration::from_secs(30),
        "kubeconfig rewritten with the new token",
        || {
            std::fs::read_to_string(&kubeconfig)
                .is_ok_and(|k| k.contains(&format!("token: \"{new_token}\"")))
        },
    );
    assert_eq!(mode(&kubeconfig), 0o600);
    let second = add(&plugin, &installed_conf, "c1", "db", "database-1", &uid1);
    assert_eq!(second.ip(), "10.237.0.51");
    assert!(
        rotated.elapsed() < Duration::from_secs(30),
        "the ADD after the rotation came {:?} later",
        rotated.elapsed()
    );

    // A ConfigMap update reaches the node the same way.
    let mut changed = conf.clone();
    changed["ipam"]["rangeEnd"] = json!("10.237.0.150");
    std::fs::write(src.join(".net.conf.new"), changed.to_string()).expect("conf");
    std::fs::rename(src.join(".net.conf.new"), src.join("net.conf")).expect("swap conf");
    let changed = changed.to_string();
    await_until(Duration::from_secs(30), "config copied again", || {
        std::fs::read_to_string(&installed_conf).is_ok_and(|c| c == changed)
    });

    assert_eq!(watching.terminate(), Some(0), "SIGTERM must end it with 0");
    let leftovers: Vec<String> = [&bin, &etc]
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).expect("ls"))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn an_identical_binary_is_left_alone_and_a_different_one_replaced() {
    let d = tempfile::tempdir().expect("tempdir");
    let dest = d.path().join("kube-ipam");
    let once = || {
        let out: Out = install(None, &[&"--bin-dir", &d.path()])
            .output()
            .expect("install")
            .into();
        assert_eq!(out.code, 0, "{out:?}");
        out
    };
    assert!(once().stdout.contains("installed"));
    let first = std::fs::metadata(&dest).expect("installed");
    assert_eq!(mode(&dest), 0o755);
    let again = once();
    assert!(again.stdout.contains("already"), "{again:?}");
    let second = std::fs::metadata(&dest).expect("still there");
    assert_eq!(
        (second.ino(), second.mtime(), second.mtime_nsec()),
        (first.ino(), first.mtime(), first.mtime_nsec()),
        "an identical binary was rewritten"
    );

    std::fs::write(&dest, b"an older build").expect("write");
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(once().stdout.contains("installed"));
    assert_eq!(
        std::fs::read(&dest).expect("read"),
        std::fs::read(BIN).expect("read")
    );
    assert_eq!(mode(&dest), 0o755);
    assert_eq!(std::fs::read_dir(d.path()).expect("ls").count(), 1);
}

#[test]
fn errors_name_the_file_and_what_is_wrong() {
    let api = KubeApi::start().expect("stand-in API");
    let d = tempfile::tempdir().expect("tempdir");
    let kubeconfig = d.path().join("kubeconfig");
    let sa_dir = d.path().join("sa");
    std::fs::create_dir(&sa_dir).expect("mkdir");
    let fails = |api: Option<&KubeApi>, args: &[&dyn AsRef<OsStr>]| -> String {
        let out: Out = install(api, args).output().expect("install").into();
        assert_eq!(out.code, 1, "{out:?}");
        out.stderr
    };
    let kc: [&dyn AsRef<OsStr>; 4] = [
        &"--kubeconfig",
        &kubeconfig,
        &"--service-account-dir",
        &sa_dir,
    ];

    // No token mounted.
    let e = fails(Some(&api), &kc);
    assert!(
        e.contains(&sa_dir.join("token").display().to_string()),
        "{e}"
    );
    std::fs::write(sa_dir.join("token"), "tok").expect("token");
    let e = fails(Some(&api), &kc);
    assert!(
        e.contains(&sa_dir.join("ca.crt").display().to_string()),
        "{e}"
    );
    std::fs::copy(api.ca(), sa_dir.join("ca.crt")).expect("ca");
    // Not in a pod.
    let e = fails(None, &kc);
    assert!(e.contains("KUBERNETES_SERVICE_HOST"), "{e}");
    assert!(
        !kubeconfig.exists(),
        "a failed install wrote the kubeconfig"
    );

    // A config that is not JSON, and one whose kube-ipam block is invalid.
    let out_dir = d.path().join("out");
    std::fs::create_dir(&out_dir).expect("mkdir");
    let broken = d.path().join("broken.conf");
    std::fs::write(&broken, "{\"cniVersion\": ").expect("write");
    let e = fails(None, &[&"--conf-dir", &out_dir, &broken]);
    assert!(e.contains(&broken.display().to_string()), "{e}");
    let invalid = d.path().join("invalid.conf");
    std::fs::write(
        &invalid,
        json!({"cniVersion": "1.0.0", "name": "n", "type": "macvlan",
               "ipam": {"type": "kube-ipam", "subnet": "10.0.0.0/33"}})
        .to_string(),
    )
    .expect("write");
    let e = fails(None, &[&"--conf-dir", &out_dir, &invalid]);
    assert!(
        e.contains(&invalid.display().to_string()) && e.contains("10.0.0.0/33"),
        "{e}"
    );
    assert_eq!(std::fs::read_dir(&out_dir).expect("ls").count(), 0);

    // Usage errors, from the argument parser.
    let usage = |args: &[&dyn AsRef<OsStr>]| -> String {
        let out: Out = install(None, args).output().expect("install").into();
        assert_eq!(out.code, 2, "{out:?}");
        out.stderr
    };
    assert!(usage(&[&invalid]).contains("--conf-dir"));
    assert!(usage(&[&"--conf-dir", &out_dir]).contains("CONF"));
    assert!(usage(&[]).contains("--bin-dir"));

    // With everything in place it works.
    let out: Out = install(Some(&api), &kc).output().expect("install").into();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(mode(&kubeconfig), 0o600);
}
