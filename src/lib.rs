//! kube-ipam: a CNI IPAM plugin handing out cluster-unique, fixed and sticky pod addresses.

pub mod error;

pub use error::{Error, Result};
