//! Embedded sled backend (in progress).
