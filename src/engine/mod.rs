//! Address math and the allocation engine, generic over the store.

mod allocator;
pub mod bitmap;
pub mod pool;
pub mod search;

pub use allocator::{unix_now, AddRequest, Allocator, Wanted};
pub use bitmap::Bitmap;
pub use pool::Pool;

#[cfg(test)]
mod tests;
