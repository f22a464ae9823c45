//! Embedded SQLite backend for kube-ipam: one node, offline use, tests.
//!
//! Every plugin process on the node opens the same database file. SQLite's write-ahead log
//! lets readers run beside the one writer, and its own file locks queue writers across
//! processes: a commit begins with `BEGIN IMMEDIATE`, which waits (SQLite's busy timeout) for
//! the writer ahead of it; a process that waits past its deadline gets
//! [`StoreError::Busy`](kube_ipam_store::StoreError::Busy), which the plugin reports as "try
//! again later".
//!
//! Each row carries the revision of the commit that wrote it. The revision comes from a
//! counter that every commit bumps inside its own transaction, so revisions grow in commit
//! order, as etcd's do, and survive restarts with the data.
//!
//! `store.rs` is the store and its commits; `connection.rs` opens the file (the settings of
//! every connection, the schema, the log mode); `checkpoint.rs` keeps the log short; `rows.rs`
//! holds the queries the store and its snapshots (`snapshot.rs`) share; `errors.rs` maps
//! SQLite's answers to the store's errors, naming who holds a lock through `holders.rs`;
//! `adopt.rs` takes in the one-database-per-network stores of earlier releases.

mod adopt;
mod checkpoint;
mod connection;
mod errors;
mod holders;
mod rows;
pub mod sled;
mod snapshot;
mod store;

pub use adopt::ADOPTED_SUFFIX;
pub use sled::refuse_unconverted;
pub use store::SqliteStore;

/// File name of the database inside the store directory.
pub const DB_FILE: &str = "store.db";
