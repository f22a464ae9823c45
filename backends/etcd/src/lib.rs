//! etcd backend for kube-ipam.
//!
//! Every node's plugin processes share one etcd, so the cluster-wide uniqueness of an address
//! rests on etcd's transactions: a claim is one `Txn` whose comparisons make it succeed for
//! exactly one writer. The store adds nothing on top of that but bounded deadlines and clear
//! errors, because a CNI call that hangs blocks pod start-up on the whole node.
//!
//! TLS is rustls with the configured CA as the only trust root: a misconfigured certificate
//! must fail loudly, never fall back to an unverified connection.
//!
//! The `testing` feature adds [`testing`], a harness that runs real etcd processes for tests:
//! `cargo test -p kube-ipam-etcd --features testing`.

mod errors;
mod options;
mod store;
mod txn;

#[cfg(feature = "testing")]
pub mod testing;

pub use options::{EtcdOptions, TlsFiles};
pub use store::EtcdStore;
