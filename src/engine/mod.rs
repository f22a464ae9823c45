//! Address math and the allocation engine, generic over the store.

mod allocator;
pub mod bitmap;
mod claims;
pub mod cooling;
pub mod events;
pub mod hints;
mod imports;
mod inspection;
mod ip_pool;
mod layout;
mod original;
pub mod pool;
mod releases;
pub mod scan;
pub mod search;

pub use allocator::{unix_now, AddRequest, Allocator, PoolRequest, Release, Wanted};
pub use bitmap::Bitmap;
pub use imports::Imported;
pub use inspection::Verified;
pub use layout::Converted;
pub use pool::Pool;

#[cfg(test)]
mod cooling_tests;
#[cfg(test)]
mod layout_tests;
#[cfg(test)]
pub(crate) mod lost_snapshots;
#[cfg(test)]
mod original_tests;
#[cfg(test)]
pub(crate) mod pod_tests;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod workload_tests;
