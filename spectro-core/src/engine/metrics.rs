//! Prometheus metrics (feature `metrics`, on the `prometheus-client` crate: the reference
//! client of the Prometheus/OpenMetrics project, no global registry, no unsafe; the
//! application registers spectro's metrics in its own registry with
//! `Engine::register_metrics` and serves them; see
//! `examples/metrics.rs`).
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `spectro_reconciles_total` | counter | `outcome` (converged, waiting, progress, failed, finished, error) |
//! | `spectro_reconcile_duration_seconds` | histogram | |
//! | `spectro_queue_depth` | gauge | `state` (ready, scheduled, active) |
//! | `spectro_cloud_calls_total` | counter | `provider`, `operation`, `outcome` (ok or the error's reason) |
//! | `spectro_cloud_call_duration_seconds` | histogram | `provider`, `operation` |
//! | `spectro_cloud_throttles_total` | counter | `provider`, `operation` |
//! | `spectro_clusters` | gauge | `phase` (clusters this engine reconciled, by last phase) |
//!
//! Without the feature every recording method is an empty inline function.

use std::time::Duration;

use super::status::Phase;
use crate::provider::ClusterId;

#[cfg(feature = "metrics")]
mod enabled {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
    use prometheus_client::registry::Registry;

    use super::super::status::Phase;
    use crate::provider::ClusterId;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    pub(super) struct Outcome {
        pub(super) outcome: String,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    pub(super) struct State {
        pub(super) state: String,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    pub(super) struct PhaseLabel {
        pub(super) phase: String,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    pub(super) struct Call {
        pub(super) provider: String,
        pub(super) operation: String,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    pub(super) struct CallOutcome {
        pub(super) provider: String,
        pub(super) operation: String,
        pub(super) outcome: String,
    }

    fn call_histogram() -> Histogram {
        Histogram::new(exponential_buckets(0.005, 2.0, 14))
    }

    pub(super) struct Families {
        pub(super) reconciles: Family<Outcome, Counter>,
        pub(super) reconcile_duration: Histogram,
        pub(super) queue: Family<State, Gauge>,
        pub(super) calls: Family<CallOutcome, Counter>,
        pub(super) call_duration: Family<Call, Histogram, fn() -> Histogram>,
        pub(super) throttles: Family<Call, Counter>,
        pub(super) clusters: Family<PhaseLabel, Gauge>,
        pub(super) phases: Mutex<HashMap<ClusterId, Phase>>,
    }

    impl Default for Families {
        fn default() -> Self {
            Families {
                reconciles: Family::default(),
                reconcile_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
                queue: Family::default(),
                calls: Family::default(),
                call_duration: Family::new_with_constructor(call_histogram),
                throttles: Family::default(),
                clusters: Family::default(),
                phases: Mutex::default(),
            }
        }
    }

    impl Families {
        pub(super) fn register(&self, r: &mut Registry) {
            r.register(
                "spectro_reconciles",
                "Reconciles by outcome",
                self.reconciles.clone(),
            );
            r.register(
                "spectro_reconcile_duration_seconds",
                "Duration of one reconcile",
                self.reconcile_duration.clone(),
            );
            r.register(
                "spectro_queue_depth",
                "Clusters in the work queue by state",
                self.queue.clone(),
            );
            r.register(
                "spectro_cloud_calls",
                "Cloud provider calls by provider, operation and outcome",
                self.calls.clone(),
            );
            r.register(
                "spectro_cloud_call_duration_seconds",
                "Duration of cloud provider calls",
                self.call_duration.clone(),
            );
            r.register(
                "spectro_cloud_throttles",
                "Cloud provider calls the cloud throttled",
                self.throttles.clone(),
            );
            r.register(
                "spectro_clusters",
                "Clusters by phase (as last reconciled by this engine)",
                self.clusters.clone(),
            );
        }
    }
}

/// The engine's metrics; recording is free without the `metrics` feature.
#[derive(Default)]
pub(crate) struct Metrics {
    #[cfg(feature = "metrics")]
    families: enabled::Families,
}

impl Metrics {
    /// One reconcile ended.
    #[inline]
    pub(crate) fn reconciled(&self, outcome: &str, took: Duration) {
        #[cfg(feature = "metrics")]
        {
            self.families
                .reconciles
                .get_or_create(&enabled::Outcome {
                    outcome: outcome.to_string(),
                })
                .inc();
            self.families.reconcile_duration.observe(took.as_secs_f64());
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (outcome, took);
    }

    /// The queue's depth now.
    #[inline]
    pub(crate) fn queue_depth(&self, ready: usize, scheduled: usize, active: usize) {
        #[cfg(feature = "metrics")]
        for (state, n) in [
            ("ready", ready),
            ("scheduled", scheduled),
            ("active", active),
        ] {
            self.families
                .queue
                .get_or_create(&enabled::State {
                    state: state.to_string(),
                })
                .set(n as i64);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (ready, scheduled, active);
    }

    /// One cloud call ended: `outcome` is `ok` or the error's reason code.
    #[inline]
    pub(crate) fn cloud_call(
        &self,
        provider: &str,
        operation: &str,
        outcome: &str,
        took: Duration,
    ) {
        #[cfg(feature = "metrics")]
        {
            let call = enabled::Call {
                provider: provider.to_string(),
                operation: operation.to_string(),
            };
            self.families
                .calls
                .get_or_create(&enabled::CallOutcome {
                    provider: provider.to_string(),
                    operation: operation.to_string(),
                    outcome: outcome.to_string(),
                })
                .inc();
            self.families
                .call_duration
                .get_or_create(&call)
                .observe(took.as_secs_f64());
            if outcome == "Throttled" {
                self.families.throttles.get_or_create(&call).inc();
            }
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (provider, operation, outcome, took);
    }

    /// A cluster's phase after a reconcile (`None`: the cluster is gone).
    #[inline]
    pub(crate) fn phase(&self, id: ClusterId, phase: Option<Phase>) {
        #[cfg(feature = "metrics")]
        {
            let mut phases = self
                .families
                .phases
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let old = match phase {
                Some(p) => phases.insert(id, p),
                None => phases.remove(&id),
            };
            if old == phase {
                return;
            }
            let gauge = |p: Phase| {
                self.families.clusters.get_or_create(&enabled::PhaseLabel {
                    phase: p.as_str().to_string(),
                })
            };
            if let Some(o) = old {
                gauge(o).dec();
            }
            if let Some(n) = phase {
                gauge(n).inc();
            }
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (id, phase);
    }
}

#[cfg(feature = "metrics")]
impl super::Engine {
    /// Registers the engine's metrics (table in [`crate::engine::metrics`]) in the
    /// application's registry. Feature `metrics`.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.inner.metrics.families.register(registry);
    }

    /// The engine's metrics alone, in the OpenMetrics text format (for an application that
    /// has no registry of its own). Feature `metrics`.
    pub fn metrics_text(&self) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        self.register_metrics(&mut registry);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}
