//! The network config: the original plugin's keys as users already write them.

mod locate;
mod model;
mod parse;
mod raw;
mod validate;

#[cfg(test)]
mod tests;

pub use locate::locate;
pub use model::*;
pub use validate::log_conf_of;
pub use validate::{
    DEFAULT_CALL_TIMEOUT, DEFAULT_DATA_DIR, DEFAULT_DIAL_TIMEOUT, DEFAULT_KEY_PREFIX,
    DEFAULT_LOG_FILE, DEFAULT_LOG_LEVEL, DEFAULT_LOG_MAX_MIB, DEFAULT_NODE_LOST_AFTER,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_REUSE_DELAY, LOG_LEVELS,
};

use crate::error::Error;

/// Parses and validates the whole stdin of a CNI call. On several problems the first is
/// returned: a CNI error carries one message.
pub fn parse(stdin: &[u8]) -> Result<NetConf, Error> {
    run(stdin).map_err(|errs| {
        errs.into_iter()
            .next()
            .unwrap_or_else(|| Error::Internal("config rejected without a reason".to_owned()))
    })
}

/// Validates everything and returns every problem found, for `kube-ipam config check`; an
/// empty list means `parse` would succeed. Problems in the JSON syntax or in the types of
/// values stop the checking, since the rest cannot be read reliably.
pub fn check(stdin: &[u8]) -> Vec<Error> {
    run(stdin).err().unwrap_or_default()
}

fn run(stdin: &[u8]) -> Result<NetConf, Vec<Error>> {
    let doc = parse::decode(stdin).map_err(|e| vec![e])?;
    let raw = parse::extract(&doc)?;
    validate::validate(raw, &doc)
}
