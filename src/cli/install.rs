//! `kube-ipam install`: the command of the DaemonSet container that puts kube-ipam on a node.
//!
//! It copies its own executable into the CNI binary directory, writes a kubeconfig for the
//! pod's service account where the plugin reads it, and copies network config files; with
//! `--watch` it keeps the kubeconfig current as kubelet rotates the projected token. Every file
//! is written beside its destination and renamed over it, so a runtime that execs the plugin
//! or reads a config at any moment sees the old file or the new one, never half of either.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use rand::Rng;
use serde_json::Value;

use crate::config;
use crate::{Error, Result};

/// Where kubelet mounts a pod's service-account token, CA and namespace.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How often `--watch` looks at its sources. Kubelet replaces a projected token at 80 % of its
/// lifetime (48 minutes into an hour), so a second is far within what the old token still
/// allows; reading three small files a second costs nothing.
const POLL: Duration = Duration::from_secs(1);

pub struct Options {
    pub bin_dir: Option<PathBuf>,
    pub kubeconfig: Option<PathBuf>,
    pub service_account_dir: PathBuf,
    pub conf_dir: Option<PathBuf>,
    pub confs: Vec<PathBuf>,
    pub watch: bool,
}

/// Installs what `o` names; the CLI has made sure it names something, and configs only with
/// a directory to copy them to.
pub fn run(o: &Options) -> Result<i32> {
    // Blocked before any work, so a SIGTERM that arrives during the first copy waits for the
    // loop instead of killing the process half-way; as PID 1 of its container, a signal
    // without a handler would be ignored altogether and the pod killed after its grace period.
    let stop = o.watch.then(StopSignals::block).transpose()?;

    if let Some(dir) = &o.bin_dir {
        install_binary(dir)?;
    }
    for written in sync(o)? {
        println!("kube-ipam install: wrote {}", written.display());
    }
    let Some(stop) = stop else { return Ok(0) };
    println!("kube-ipam install: watching for a new token or config");
    let mut last_problem = String::new();
    loop {
        if let Some(sig) = stop.wait(POLL)? {
            println!("kube-ipam install: stopping on signal {sig}");
            return Ok(0);
        }
        match sync(o) {
            Ok(written) => {
                for w in written {
                    println!("kube-ipam install: wrote {}", w.display());
                }
                last_problem.clear();
            }
            // The last good files stay in place; say so once, not every second.
            Err(e) => {
                let problem = e.to_string();
                if problem != last_problem {
                    eprintln!("kube-ipam install: {problem}; keeping the files written before");
                    last_problem = problem;
                }
            }
        }
    }
}

fn io_error(path: &Path, reason: impl ToString) -> Error {
    Error::Io {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| io_error(path, format!("cannot read: {e}")))
}

/// Copies the running executable to `<dir>/kube-ipam`, mode 0755, unless it is there already.
fn install_binary(dir: &Path) -> Result<()> {
    // The file this process runs, even when its path was replaced or is not known.
    let own = read(Path::new("/proc/self/exe"))?;
    let dest = dir.join("kube-ipam");
    if replace(&dest, &own, 0o755)? {
        println!("kube-ipam install: installed {}", dest.display());
    } else {
        println!(
            "kube-ipam install: {} is already this build",
            dest.display()
        );
    }
    Ok(())
}

/// Writes `bytes` to `dest` with `mode` through a temporary file in the same directory and a
/// rename; returns false, touching nothing, when `dest` already holds exactly that.
fn replace(dest: &Path, bytes: &[u8], mode: u32) -> Result<bool> {
    if let Ok(meta) = fs::metadata(dest) {
        let same_mode = meta.permissions().mode() & 0o7777 == mode;
        if same_mode
            && meta.len() == bytes.len() as u64
            && fs::read(dest).ok().as_deref() == Some(bytes)
        {
            return Ok(false);
        }
    }
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = dest
        .file_name()
        .ok_or_else(|| io_error(dest, "names no file"))?
        .to_string_lossy();
    // Random, not the pid: two installer containers are both PID 1.
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::rng().random::<u64>()));
    let written = write_new(&tmp, bytes, mode).and_then(|()| {
        fs::rename(&tmp, dest).map_err(|e| {
            io_error(
                dest,
                format!("cannot rename {} over it: {e}", tmp.display()),
            )
        })
    });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename is durable only once the directory is.
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, format!("cannot sync the directory: {e}")))?;
    Ok(true)
}

fn write_new(tmp: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let fail = |e: std::io::Error| io_error(tmp, format!("cannot write: {e}"));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)
        .map_err(fail)?;
    f.write_all(bytes).map_err(fail)?;
    // The process umask (0077) narrowed the mode at creation.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(fail)?;
    f.sync_all().map_err(fail)
}

/// Brings the kubeconfig and the network configs up to date with their sources; returns the
/// files it rewrote. The binary is not among them: the running executable does not change.
fn sync(o: &Options) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    if let Some(dest) = &o.kubeconfig {
        let text = kubeconfig(&server()?, &o.service_account_dir)?;
        if replace(dest, text.as_bytes(), 0o600)? {
            written.push(dest.clone());
        }
    }
    if let Some(dir) = &o.conf_dir {
        for src in &o.confs {
            let bytes = network_config(src)?;
            let name = src
                .file_name()
                .ok_or_else(|| io_error(src, "names no file"))?;
            let dest = dir.join(name);
            // Configuration, not a secret: readable by operators who inspect the node.
            if replace(&dest, &bytes, 0o644)? {
                written.push(dest);
            }
        }
    }
    Ok(written)
}

/// A network config file, refused when it is not one: a broken file on the node would fail
/// every pod's ADD there.
fn network_config(path: &Path) -> Result<Vec<u8>> {
    let bytes = read(path)?;
    let doc: Value = serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
        what: path.display().to_string(),
        reason: e.to_string(),
    })?;
    // Configs of other plugins (a Multus config, a conflist of the pod network) pass as JSON;
    // a kube-ipam block must be valid as the plugin reads it.
    if let Some(found) = config::locate(&doc) {
        config::parse(found.to_string().as_bytes()).map_err(|e| Error::Decode {
            what: path.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok(bytes)
}

fn env(name: &str) -> Result<String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        _ => Err(Error::InvalidEnv {
            name: name.into(),
            value: String::new(),
            reason: "is not set; kubelet sets it in every pod, or set it to the API server's \
                     address in the container's env"
                .into(),
        }),
    }
}

/// The API server as the pod sees it: `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT`.
fn server() -> Result<String> {
    let host = env("KUBERNETES_SERVICE_HOST")?;
    let port = env("KUBERNETES_SERVICE_PORT")?;
    server_url(&host, &port)
}

fn server_url(host: &str, port: &str) -> Result<String> {
    let bad = |name: &str, value: &str, reason: &str| Error::InvalidEnv {
        name: name.into(),
        value: value.into(),
        reason: reason.into(),
    };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    if !port_ok {
        return Err(bad("KUBERNETES_SERVICE_PORT", port, "is not a TCP port"));
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let host = match bare.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(a)) => format!("[{a}]"),
        Ok(std::net::IpAddr::V4(a)) => a.to_string(),
        Err(_) if is_dns_name(host) => host.to_owned(),
        Err(_) => {
            return Err(bad(
                "KUBERNETES_SERVICE_HOST",
                host,
                "is neither an IP address nor a DNS name",
            ))
        }
    };
    Ok(format!("https://{host}:{port}"))
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The kubeconfig of the service account whose token and CA are in `sa_dir`. The CA goes in
/// as data: the plugin runs on the host, where the pod's mounts are not.
fn kubeconfig(server: &str, sa_dir: &Path) -> Result<String> {
    let token_path = sa_dir.join("token");
    let ca_path = sa_dir.join("ca.crt");
    let raw = read(&token_path)?;
    let token = std::str::from_utf8(&raw)
        .map(str::trim)
        .map_err(|_| io_error(&token_path, "is not text"))?;
    if token.is_empty() {
        return Err(io_error(&token_path, "is empty"));
    }
    // A bearer token is base64url and dots (a JWT); anything else would break the header.
    if !token
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        return Err(io_error(
            &token_path,
            "holds characters no bearer token has",
        ));
    }
    let ca = read(&ca_path)?;
    if !ca
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(io_error(&ca_path, "holds no PEM certificate"));
    }
    let ca = base64::engine::general_purpose::STANDARD.encode(&ca);
    // JSON strings are YAML double-quoted scalars: every value is quoted and escaped.
    let q = |s: &str| Value::String(s.to_owned()).to_string();
    Ok(format!(
        "# Written by `kube-ipam install` for its service account; rewritten when kubelet\n\
         # rotates the token. Do not edit: the next rotation overwrites it.\n\
         apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         \x20 - name: kubernetes\n\
         \x20   cluster:\n\
         \x20     server: {server}\n\
         \x20     certificate-authority-data: {ca}\n\
         users:\n\
         \x20 - name: kube-ipam\n\
         \x20   user:\n\
         \x20     token: {token}\n\
         contexts:\n\
         \x20 - name: kube-ipam\n\
         \x20   context:\n\
         \x20     cluster: kubernetes\n\
         \x20     user: kube-ipam\n\
         current-context: kube-ipam\n",
        server = q(server),
        ca = q(&ca),
        token = q(token),
    ))
}

/// SIGTERM and SIGINT, blocked in this thread and taken with `sigtimedwait`, so the watch loop
/// both sleeps and listens in one call and needs no handler.
struct StopSignals {
    set: libc::sigset_t,
}

impl StopSignals {
    fn block() -> Result<StopSignals> {
        // SAFETY: sigemptyset/sigaddset only write the set they are given, which lives on this
        // stack frame; pthread_sigmask changes this thread's mask (the CLI runs install on the
        // main thread before starting any other).
        let rc = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            (rc, set)
        };
        match rc {
            (0, set) => Ok(StopSignals { set }),
            (e, _) => Err(Error::Internal(format!(
                "cannot block SIGTERM: {}",
                std::io::Error::from_raw_os_error(e)
            ))),
        }
    }

    /// The signal that arrived within `timeout`, if one did.
    fn wait(&self, timeout: Duration) -> Result<Option<i32>> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: the set and the timespec are valid for the call; no siginfo is asked for.
        let sig = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
        if sig > 0 {
            return Ok(Some(sig));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
            _ => Err(Error::Internal(format!("cannot wait for signals: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_bracket_ipv6_hosts() {
        assert_eq!(
            server_url("10.96.0.1", "443").unwrap(),
            "https://10.96.0.1:443"
        );
        assert_eq!(
            server_url("fd00:10:96::1", "443").unwrap(),
            "https://[fd00:10:96::1]:443"
        );
        assert_eq!(
            server_url("[fd00::1]", "6443").unwrap(),
            "https://[fd00::1]:6443"
        );
        assert_eq!(
            server_url("api.cluster.local", "6443").unwrap(),
            "https://api.cluster.local:6443"
        );
        for (host, port, var) in [
            ("10.96.0.1", "0", "KUBERNETES_SERVICE_PORT"),
            ("10.96.0.1", "https", "KUBERNETES_SERVICE_PORT"),
            ("10.96.0.1", "70000", "KUBERNETES_SERVICE_PORT"),
            ("bad host", "443", "KUBERNETES_SERVICE_HOST"),
            ("-x.example", "443", "KUBERNETES_SERVICE_HOST"),
        ] {
            let e = server_url(host, port).unwrap_err().to_string();
            assert!(e.contains(var), "{host}:{port}: {e}");
        }
    }

    #[test]
    fn kubeconfig_is_read_back_by_the_kube_client() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("token"), "eyJhbGciOi.J9eyJpc3Mi.Ok-_x\n").unwrap();
        fs::write(
            dir.path().join("ca.crt"),
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let text = kubeconfig("https://[fd00::1]:443", dir.path()).unwrap();
        let kc: kube::config::Kubeconfig = kube::config::Kubeconfig::from_yaml(&text).unwrap();
        let cluster = kc.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://[fd00::1]:443"));
        let ca = base64::engine::general_purpose::STANDARD
            .decode(cluster.certificate_authority_data.as_deref().unwrap())
            .unwrap();
        assert!(ca.starts_with(b"-----BEGIN CERTIFICATE-----"));
        let user = kc.auth_infos[0].auth_info.as_ref().unwrap();
        assert!(user.token.is_some());
        assert!(
            text.contains("token: \"eyJhbGciOi.J9eyJpc3Mi.Ok-_x\"\n"),
            "{text}"
        );
        assert_eq!(kc.current_context.as_deref(), Some("kube-ipam"));
    }

    #[test]
    fn bad_service_account_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = kubeconfig("https://10.96.0.1:443", dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&dir.path().join("token").display().to_string()),
            "{e}"
        );
        fs::write(dir.path().join("token"), "  \n").unwrap();
        let e = kubeconfig("https://10.96.0.1:443", dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("token") && e.contains("is empty"), "{e}");
        fs::write(dir.path().join("token"), "two words").unwrap();
        let e = kubeconfig("https://10.96.0.1:443", dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no bearer token"), "{e}");
        fs::write(dir.path().join("token"), "abc").unwrap();
        fs::write(dir.path().join("ca.crt"), "not a certificate").unwrap();
        let e = kubeconfig("https://10.96.0.1:443", dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ca.crt") && e.contains("no PEM certificate"),
            "{e}"
        );
    }

    #[test]
    fn replace_skips_identical_files_and_fixes_modes() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        assert!(replace(&dest, b"one", 0o755).unwrap());
        let first = fs::metadata(&dest).unwrap();
        assert_eq!(first.permissions().mode() & 0o7777, 0o755);
        assert!(!replace(&dest, b"one", 0o755).unwrap());
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&fs::metadata(&dest).unwrap()),
            std::os::unix::fs::MetadataExt::ino(&first)
        );
        assert!(replace(&dest, b"one", 0o600).unwrap());
        assert_eq!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        assert!(replace(&dest, b"two", 0o600).unwrap());
        assert_eq!(fs::read(&dest).unwrap(), b"two");
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "temporary files left behind");
    }
}
