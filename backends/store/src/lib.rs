//! Storage contract for kube-ipam.
//!
//! Every backend implements one small transactional key-value trait, [`LeaseStore`]. All the
//! allocation rules (claim, compare-and-delete release, owner index) live above it, once, so a
//! backend cannot get them subtly wrong: it only has to make `commit` atomic and conditional.

mod error;
pub mod keys;
mod memory;
pub mod original;
pub mod records;
mod store;

#[cfg(feature = "testing")]
pub mod spy;

pub mod conformance;

pub use error::StoreError;
pub use keys::Keys;
pub use memory::MemoryStore;
pub use original::OriginalKeys;
pub use records::{AttachedIp, Attachment, Binding, Holder, IpRecord, Kind, PodRef};
pub use store::{
    Answer, Committed, Compare, Entry, LeaseStore, Mutation, Read, Revision, Snapshot,
};
