use thiserror::Error;

/// Failures a backend can report. The plugin maps them to CNI codes in one place.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The store cannot be reached or did not answer in time; the caller may retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Another process holds the store and did not let go before the deadline.
    #[error("store busy: {0}")]
    Busy(String),
    /// The store answered with something that is not a kube-ipam record.
    #[error("corrupt record at {key}: {reason}")]
    Corrupt { key: String, reason: String },
    /// Local I/O failed (embedded store): disk full, read-only, permissions.
    #[error("store I/O error: {0}")]
    Io(String),
    /// The store's configuration cannot work (bad certificate, bad endpoint ...).
    #[error("store configuration: {0}")]
    Config(String),
    /// The store no longer keeps the state a [`Snapshot`](crate::Snapshot) reads (etcd
    /// compacted its revision away); a new snapshot reads a newer one.
    #[error("store snapshot gone: {0}")]
    Compacted(String),
    /// The store refuses writes until an operator frees space (etcd's space quota); the
    /// message says what to run. Reads and deletes still work.
    #[error("store full: {0}")]
    Full(String),
}

impl StoreError {
    /// True when trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_) | StoreError::Busy(_) | StoreError::Compacted(_)
        )
    }
}
