//! Where and how much a call logs: checked once, here, for the validated config and for a
//! call refused before its config could be validated, which still logs where it can.

use std::path::PathBuf;

use serde_json::Value;

use super::{
    nonempty, Errors, DEFAULT_LOG_FILE, DEFAULT_LOG_LEVEL, DEFAULT_LOG_MAX_MIB, LOG_LEVELS,
};
use crate::config::model::LogConf;

/// Size bounds of `logMaxSize`, in MiB.
const MAX_MIB: std::ops::RangeInclusive<u64> = 1..=10_240;

/// The log settings of `logFile`, `logLevel` and `logMaxSize` (MiB); a bad value is reported
/// and replaced by its default, so that even a refused config logs somewhere sensible.
pub(super) fn log_conf(
    file: &Option<String>,
    level: &Option<String>,
    max_mib: Option<u64>,
    errs: &mut Errors,
) -> LogConf {
    let file = match nonempty(file).map(PathBuf::from) {
        None => PathBuf::from(DEFAULT_LOG_FILE),
        Some(p) if p.is_absolute() => p,
        // The plugin runs with the runtime's working directory, which nobody controls.
        Some(p) => {
            errs.push("ipam.logFile", p.display(), "must be an absolute path");
            PathBuf::from(DEFAULT_LOG_FILE)
        }
    };
    let level = match nonempty(level).map(str::to_ascii_lowercase) {
        None => DEFAULT_LOG_LEVEL.to_owned(),
        Some(l) if LOG_LEVELS.contains(&l.as_str()) => l,
        Some(_) => {
            errs.push(
                "ipam.logLevel",
                format!("{:?}", level.as_deref().unwrap_or_default()),
                format!("must be one of {}", LOG_LEVELS.join(", ")),
            );
            DEFAULT_LOG_LEVEL.to_owned()
        }
    };
    let max_mib = match max_mib {
        None => DEFAULT_LOG_MAX_MIB,
        Some(m) if MAX_MIB.contains(&m) => m,
        Some(m) => {
            errs.push("ipam.logMaxSize", m.to_string(), "must be 1 to 10240 (MiB)");
            DEFAULT_LOG_MAX_MIB
        }
    };
    LogConf {
        file,
        level,
        max_bytes: max_mib << 20,
    }
}

/// The log settings of a call whose config was refused (or never read): what the JSON holds
/// of them where it is usable, the defaults elsewhere.
pub fn log_conf_of(stdin: &[u8]) -> LogConf {
    let doc: Option<Value> = serde_json::from_slice(stdin).ok();
    let ipam = doc.as_ref().and_then(|d| d.get("ipam"));
    let text = |k: &str| {
        ipam.and_then(|i| i.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let max = ipam
        .and_then(|i| i.get("logMaxSize"))
        .and_then(Value::as_u64);
    log_conf(
        &text("logFile"),
        &text("logLevel"),
        max,
        &mut Errors::default(),
    )
}
