//! Harnesses for tests and walkthroughs (feature `testing`): nothing here is part of the plugin.

pub mod apiserver;

pub use apiserver::{ApiMode, KubeApi};
