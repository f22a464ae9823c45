//! The one error type of the plugin, and the one place it becomes a CNI error code.

use kube_ipam_store::StoreError;
use thiserror::Error;

/// CNI error codes (spec section "Error") and kube-ipam's own (100 and up).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const STATUS_UNAVAILABLE: u32 = 50;
    pub const INTERNAL: u32 = 100;
    pub const EXHAUSTED: u32 = 101;
    pub const CHECK_MISMATCH: u32 = 102;
    pub const CORRUPT_STORE: u32 = 103;
}

#[derive(Debug, Error)]
pub enum Error {
    #[error("cniVersion {version:?}: {reason}")]
    IncompatibleVersion { version: String, reason: String },

    #[error("unsupported field {field}: {reason}")]
    UnsupportedField { field: String, reason: String },

    #[error("unknown container {0}")]
    UnknownContainer(String),

    #[error("invalid environment variable {name}={value:?}: {reason}")]
    InvalidEnv {
        name: String,
        value: String,
        reason: String,
    },

    #[error("I/O error on {path}: {reason}")]
    Io { path: String, reason: String },

    #[error("cannot decode {what}: {reason}")]
    Decode { what: String, reason: String },

    #[error("invalid network config: {field} = {value}: {reason}")]
    InvalidConfig {
        field: String,
        value: String,
        reason: String,
    },

    #[error("try again later: {0}")]
    TryAgain(String),

    #[error("{0}")]
    Store(#[from] StoreError),

    #[error("Kubernetes API: {0}")]
    Kubernetes(String),

    #[error("no free address in range {range} ({size} addresses)")]
    Exhausted { range: String, size: u128 },

    #[error("check failed: {0}")]
    CheckMismatch(String),

    #[error("not ready: {0}")]
    StatusUnavailable(String),

    #[error("internal error: {0}")]
    Internal(String),

    /// Work that goes on past failures (GC) and then reports them; the code is the first
    /// failure's.
    #[error("{done}, but {} could not be handled: {}", failed.len(), failed.join("; "))]
    Incomplete {
        code: u32,
        done: String,
        failed: Vec<String>,
    },
}

impl Error {
    /// The CNI error code of this error: the only mapping in the plugin.
    pub fn code(&self) -> u32 {
        match self {
            Error::IncompatibleVersion { .. } => code::INCOMPATIBLE_VERSION,
            Error::UnsupportedField { .. } => code::UNSUPPORTED_FIELD,
            Error::UnknownContainer(_) => code::UNKNOWN_CONTAINER,
            Error::InvalidEnv { .. } => code::INVALID_ENV,
            Error::Io { .. } => code::IO,
            Error::Decode { .. } => code::DECODE,
            Error::InvalidConfig { .. } => code::INVALID_CONFIG,
            // Fail closed: without the API's answer no address is given, and kubelet retries.
            Error::TryAgain(_) | Error::Kubernetes(_) => code::TRY_AGAIN_LATER,
            Error::Store(e) => match e {
                StoreError::Unavailable(_) | StoreError::Busy(_) | StoreError::Compacted(_) => {
                    code::TRY_AGAIN_LATER
                }
                // Like a full disk under the embedded store: an operator must free space;
                // the message says how.
                StoreError::Io(_) | StoreError::Full(_) => code::IO,
                StoreError::Config(_) => code::INVALID_CONFIG,
                StoreError::Corrupt { .. } => code::CORRUPT_STORE,
            },
            Error::Exhausted { .. } => code::EXHAUSTED,
            Error::CheckMismatch(_) => code::CHECK_MISMATCH,
            Error::StatusUnavailable(_) => code::STATUS_UNAVAILABLE,
            Error::Internal(_) => code::INTERNAL,
            Error::Incomplete { code, .. } => *code,
        }
    }

    /// Short text for the CNI error's `msg`; the full text goes to `details`.
    pub fn summary(&self) -> &'static str {
        match self.code() {
            code::INCOMPATIBLE_VERSION => "incompatible CNI version",
            code::UNSUPPORTED_FIELD => "unsupported field in network configuration",
            code::UNKNOWN_CONTAINER => "unknown container",
            code::INVALID_ENV => "invalid necessary environment variables",
            code::IO => "I/O failure",
            code::DECODE => "failed to decode content",
            code::INVALID_CONFIG => "invalid network config",
            code::TRY_AGAIN_LATER => "try again later",
            code::STATUS_UNAVAILABLE => "plugin not available",
            code::EXHAUSTED => "address range exhausted",
            code::CHECK_MISMATCH => "allocation does not match",
            code::CORRUPT_STORE => "corrupt record in store",
            _ => "internal error",
        }
    }

    pub fn config(
        field: impl Into<String>,
        value: impl ToString,
        reason: impl Into<String>,
    ) -> Self {
        Error::InvalidConfig {
            field: field.into(),
            value: clip(value.to_string()),
            reason: reason.into(),
        }
    }
}

/// Values quoted in errors are cut short: a hostile 10 MB field must not come back as a
/// 10 MB error.
fn clip(mut s: String) -> String {
    const MAX: usize = 200;
    if s.len() > MAX {
        let mut end = MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
