//! Tracing to the log file. Never to stdout: stdout belongs to the CNI protocol.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

use crate::config::{DEFAULT_LOG_FILE, DEFAULT_LOG_MAX_MIB};

/// Logging for a call refused before its config was validated: the config's own `logFile`,
/// `logLevel` and `logMaxSize` when the JSON holds usable ones, else the defaults.
pub fn init_from_raw(stdin: &[u8]) {
    let doc: Option<serde_json::Value> = serde_json::from_slice(stdin).ok();
    let ipam = doc.as_ref().and_then(|d| d.get("ipam"));
    let text = |k: &str| {
        ipam.and_then(|i| i.get(k))
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let file = text("logFile")
        .map(Path::new)
        .filter(|p| p.is_absolute())
        .unwrap_or(Path::new(DEFAULT_LOG_FILE));
    let level = text("logLevel")
        .map(str::to_ascii_lowercase)
        .filter(|l| crate::config::LOG_LEVELS.contains(&l.as_str()))
        .unwrap_or_else(|| "info".to_owned());
    let max_mib = ipam
        .and_then(|i| i.get("logMaxSize"))
        .and_then(serde_json::Value::as_u64)
        .filter(|m| (1..=10_240).contains(m))
        .unwrap_or(DEFAULT_LOG_MAX_MIB);
    init(file, &level, max_mib << 20);
}

/// Installs the subscriber once per process; later calls keep the first one.
/// A log file that cannot be opened sends the lines to stderr instead: logging must never
/// be the reason a pod gets no address.
pub fn init(path: &Path, level: &str, max_bytes: u64) {
    rotate(path, max_bytes);
    let filter = EnvFilter::try_new(directives(level)).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_target(false);
    let result = match open(path) {
        Ok(file) => builder.with_writer(Mutex::new(file)).try_init(),
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "kube-ipam: cannot open log file {}: {e}",
                path.display()
            );
            builder.with_writer(std::io::stderr).try_init()
        }
    };
    // Already initialised (tests run many calls in one process): keep the first subscriber.
    let _ = result;
}

/// The wire libraries under the etcd and Kubernetes clients log every HTTP/2 frame at debug:
/// an operator's `debug` is about kube-ipam's decisions, so theirs stays at warn.
const QUIET: [&str; 8] = [
    "h2",
    "hyper",
    "hyper_util",
    "tower",
    "tonic",
    "rustls",
    "kube_client",
    "tokio_util",
];

fn directives(level: &str) -> String {
    let mut d = level.to_owned();
    for target in QUIET {
        d.push_str(&format!(",{target}=warn"));
    }
    d
}

/// Appends, creating the file (and its directory) readable by root only: the log names pods
/// and addresses.
fn open(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// Keeps the log bounded: one previous generation, `<file>.1`. The rename is atomic, so
/// concurrent calls at worst rotate twice and lose one old generation, never a line being
/// written (appenders keep writing to the file they opened).
fn rotate(path: &Path, max_bytes: u64) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.len() >= max_bytes {
        let mut old = path.as_os_str().to_owned();
        old.push(".1");
        let _ = std::fs::rename(path, old);
    }
}
