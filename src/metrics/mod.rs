//! What operators watch: per-range figures, durable counters of what CNI calls released or
//! took over, and the collector's `/metrics` and `/healthz`.

pub mod exporter;
pub mod figures;
pub mod server;

pub use exporter::Metrics;
pub use figures::Figures;
