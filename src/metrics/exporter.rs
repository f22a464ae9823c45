//! The OpenMetrics registry of the collector: figures of the last pass, served as they were
//! read, and the collector's own counters.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kube_ipam_store::StoreError;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::figures::{Figures, RangeFigures};
use crate::Error;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorKind {
    kind: &'static str,
}

/// Why the collector is or is not healthy, as of its last pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassState {
    NotYet,
    Ok,
    Failed(String),
}

#[derive(Debug, Default)]
struct Shared {
    figures: Option<Figures>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; the figures are still whole.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The figures of the last good pass, encoded at each scrape without touching the store.
#[derive(Debug)]
struct Pools(Arc<Mutex<Shared>>);

type Gauge = fn(&RangeFigures) -> f64;

impl Collector for Pools {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let shared = lock(&self.0);
        let Some(fig) = &shared.figures else {
            return Ok(());
        };
        let gauges: [(&str, &str, Gauge); 3] = [
            (
                "range_addresses",
                "Addresses a range can hand out dynamically",
                |f| f.size as f64,
            ),
            (
                "range_free_addresses",
                "Addresses of a range's dynamic span nobody holds",
                |f| f.free() as f64,
            ),
            (
                "range_attachments",
                "Attachments holding an address of a range",
                |f| f.attachments as f64,
            ),
        ];
        for (name, help, value) in gauges {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for f in &fig.ranges {
                m.encode_family(&[("range", f.id.as_str())])?
                    .encode_gauge(&value(f))?;
            }
        }
        let mut m = enc.encode_descriptor(
            "range_held_addresses",
            "Held addresses of a range by kind: dynamic, sticky (live), parked (sticky or pool, kept for its pod between lives), fixed, pool (from a pod's address pool, live), other-network (held by another network of the store)",
            None,
            MetricType::Gauge,
        )?;
        for f in &fig.ranges {
            for (kind, n) in [
                ("dynamic", f.dynamic),
                ("sticky", f.sticky),
                ("parked", f.parked),
                ("fixed", f.fixed),
                ("pool", f.pool),
                ("other-network", f.other),
            ] {
                m.encode_family(&[("range", f.id.as_str()), ("kind", kind)])?
                    .encode_gauge(&n)?;
            }
        }
        let mut m = enc.encode_descriptor(
            "leaks_released",
            "Addresses of left-behind attachments released, by the collector (gc) or the CNI GC verb (cni-gc)",
            None,
            MetricType::Counter,
        )?;
        for f in &fig.ranges {
            for (by, n) in [("gc", f.leaks_gc), ("cni-gc", f.leaks_cni_gc)] {
                m.encode_family(&[("range", f.id.as_str()), ("by", by)])?
                    .encode_counter::<Vec<(String, String)>, u64, u64>(&n, None)?;
            }
        }
        let mut m = enc.encode_descriptor(
            "fixed_takeovers",
            "Named addresses taken over from pods that no longer exist or are terminating on a lost node",
            None,
            MetricType::Counter,
        )?;
        for f in &fig.ranges {
            m.encode_family(&[("range", f.id.as_str())])?
                .encode_counter::<Vec<(String, String)>, u64, u64>(&f.takeovers, None)?;
        }
        Ok(())
    }
}

/// Everything `/metrics` serves for one network.
pub struct Metrics {
    registry: Registry,
    shared: Arc<Mutex<Shared>>,
    state: Mutex<PassState>,
    passes: Counter,
    failures: Counter,
    duration: Histogram,
    store_errors: Family<ErrorKind, Counter>,
}

impl Metrics {
    pub fn new(network: &str) -> Metrics {
        let mut registry = Registry::with_prefix_and_labels(
            "kube_ipam",
            [("network".into(), network.to_owned().into())].into_iter(),
        );
        let shared = Arc::new(Mutex::new(Shared::default()));
        registry.register_collector(Box::new(Pools(shared.clone())));
        let passes = Counter::default();
        let failures = Counter::default();
        // 10 ms to about 80 s: a small pool to a /12 on a slow etcd.
        let duration = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        let store_errors = Family::<ErrorKind, Counter>::default();
        registry.register("gc_passes", "Collector passes run", passes.clone());
        registry.register(
            "gc_pass_failures",
            "Collector passes that failed",
            failures.clone(),
        );
        registry.register(
            "gc_pass_duration_seconds",
            "Time a collector pass took",
            duration.clone(),
        );
        registry.register(
            "store_errors",
            "Store requests of the collector that failed, by kind",
            store_errors.clone(),
        );
        Metrics {
            registry,
            shared,
            state: Mutex::new(PassState::NotYet),
            passes,
            failures,
            duration,
            store_errors,
        }
    }

    /// Records a pass: its figures when it read them, or its failure.
    pub fn pass(&self, took: Duration, outcome: Result<Figures, &Error>) {
        self.passes.inc();
        self.duration.observe(took.as_secs_f64());
        match outcome {
            Ok(fig) => {
                lock(&self.shared).figures = Some(fig);
                *lock(&self.state) = PassState::Ok;
            }
            Err(e) => {
                self.failures.inc();
                if let Error::Store(s) = e {
                    self.store_error(s);
                }
                *lock(&self.state) = PassState::Failed(e.to_string());
            }
        }
    }

    pub fn store_error(&self, e: &StoreError) {
        let kind = match e {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Busy(_) => "busy",
            StoreError::Corrupt { .. } => "corrupt",
            StoreError::Io(_) => "io",
            StoreError::Config(_) => "config",
            StoreError::Compacted(_) => "compacted",
            StoreError::Full(_) => "full",
        };
        self.store_errors.get_or_create(&ErrorKind { kind }).inc();
    }

    pub fn state(&self) -> PassState {
        lock(&self.state).clone()
    }

    /// The OpenMetrics text of everything.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_figures_of_the_last_good_pass() {
        let m = Metrics::new("net1");
        let before = m.encode().unwrap();
        assert!(!before.contains("kube_ipam_range_addresses"), "{before}");
        assert_eq!(m.state(), PassState::NotYet);
        let fig = Figures {
            ranges: vec![RangeFigures {
                id: "10.0.0.0/24 10.0.0.10-10.0.0.19".into(),
                size: 10,
                dynamic: 3,
                parked: 1,
                fixed: 2,
                // The dynamic and parked ones; the fixed ones lie in the fixed zone.
                in_span: 4,
                attachments: 4,
                leaks_cni_gc: 5,
                takeovers: 6,
                ..Default::default()
            }],
        };
        m.pass(Duration::from_millis(20), Ok(fig));
        let e = Error::Store(StoreError::Unavailable("down".into()));
        m.pass(Duration::from_millis(30), Err(&e));
        assert!(matches!(m.state(), PassState::Failed(s) if s.contains("down")));
        let text = m.encode().unwrap();
        let r = r#"range="10.0.0.0/24 10.0.0.10-10.0.0.19""#;
        for line in [
            format!(r#"kube_ipam_range_addresses{{network="net1",{r}}} 10"#),
            format!(r#"kube_ipam_range_free_addresses{{network="net1",{r}}} 6"#),
            format!(r#"kube_ipam_range_held_addresses{{network="net1",{r},kind="parked"}} 1"#),
            format!(r#"kube_ipam_range_held_addresses{{network="net1",{r},kind="fixed"}} 2"#),
            format!(r#"kube_ipam_leaks_released_total{{network="net1",{r},by="cni-gc"}} 5"#),
            format!(r#"kube_ipam_fixed_takeovers_total{{network="net1",{r}}} 6"#),
            r#"kube_ipam_gc_passes_total{network="net1"} 2"#.to_owned(),
            r#"kube_ipam_gc_pass_failures_total{network="net1"} 1"#.to_owned(),
            r#"kube_ipam_store_errors_total{network="net1",kind="unavailable"} 1"#.to_owned(),
        ] {
            assert!(text.contains(&line), "no {line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
