//! Stores written by earlier releases, which kept each network in a sled database
//! (`<dir>/db`, beside a `<dir>/lock` file): refused until converted, and, with the `sled`
//! feature, the conversion. Only the converter links sled; the plugin just refuses.

use std::fs;
use std::path::Path;

use kube_ipam_store::StoreError;

use crate::errors::io_error;

#[cfg(feature = "sled")]
mod convert;

#[cfg(feature = "sled")]
pub use convert::convert;

/// The binary that converts a sled store (built with the `sled` feature).
pub const CONVERTER: &str = "kube-ipam-convert-store";

/// Where the earlier releases kept the sled database inside a store directory.
const SLED_DIR: &str = "db";

/// Fails when `dir` still holds a sled store that has not been converted.
pub fn refuse_unconverted(dir: &Path) -> Result<(), StoreError> {
    let sled = dir.join(SLED_DIR);
    match fs::symlink_metadata(&sled) {
        Ok(_) => Err(StoreError::Io(format!(
            "{} holds a store written by an earlier kube-ipam (sled engine, in {}); \
             it is not opened as an empty store beside it, which could hand out addresses it \
             holds. Convert it once with: {CONVERTER} {}",
            dir.display(),
            sled.display(),
            dir.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("reading", &sled, e)),
    }
}
