//! Tracing to the log file. Never to stdout: stdout belongs to the CNI protocol.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

use crate::config::LogConf;

/// Installs the subscriber once per process; later calls keep the first one.
/// A log file that cannot be opened sends the lines to stderr instead: logging must never
/// be the reason a pod gets no address.
pub fn init(conf: &LogConf) {
    let path = conf.file.as_path();
    rotate(path, conf.max_bytes);
    let filter =
        EnvFilter::try_new(directives(&conf.level)).unwrap_or_else(|_| EnvFilter::new("info"));
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
