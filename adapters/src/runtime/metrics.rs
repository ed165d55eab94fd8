//! Prometheus metrics shared by every adapter: prefix `inventory_bridge_`, one constant `adapter`
//! label, and only bounded labels (result, category) — never an object name or an error text.

use std::borrow::Cow;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::apply::ApplyOutcome;
use crate::error::Category;

/// How a reconcile ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ReconcileResult {
    /// Converged.
    Success,
    /// Failed; see the category.
    Error,
}

/// Labels of `inventory_bridge_reconciles_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// How it ended.
    pub result: ReconcileResult,
    /// Error category (`none` on success).
    pub category: &'static str,
}

/// Labels of `inventory_bridge_problems_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProblemLabels {
    /// Problem category.
    pub category: &'static str,
}

/// Labels of `inventory_bridge_applies_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApplyLabels {
    /// `applied` or `unchanged`.
    pub result: &'static str,
}

/// The core metrics. Adapters add their own to [`Metrics::registry_mut`] before serving.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_seconds: Histogram,
    problems: Family<ProblemLabels, Counter>,
    applies: Family<ApplyLabels, Counter>,
    leader: Gauge,
    ready: Gauge,
}

impl Metrics {
    /// Metrics for the adapter `adapter` (its binary name).
    pub fn new(adapter: &'static str) -> Self {
        let mut registry = Registry::with_prefix_and_labels(
            "inventory_bridge",
            [(Cow::Borrowed("adapter"), Cow::Borrowed(adapter))].into_iter(),
        );
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by result and error category",
            reconciles.clone(),
        );
        let reconcile_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            reconcile_seconds.clone(),
        );
        let problems = Family::<ProblemLabels, Counter>::default();
        registry.register(
            "problems",
            "Per-object problems (bad input, refused writes) by category",
            problems.clone(),
        );
        let applies = Family::<ApplyLabels, Counter>::default();
        registry.register(
            "applies",
            "Server-side applies sent (applied) or skipped because nothing changed (unchanged)",
            applies.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease and may write",
            leader.clone(),
        );
        let ready = Gauge::default();
        registry.register("ready", "1 while /readyz answers OK", ready.clone());
        Self {
            registry,
            reconciles,
            reconcile_seconds,
            problems,
            applies,
            leader,
            ready,
        }
    }

    /// The registry, to register adapter-specific metrics before the server starts.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Count one reconcile and its duration.
    pub fn observe_reconcile(&self, outcome: Result<(), Category>, seconds: f64) {
        let labels = match outcome {
            Ok(()) => ReconcileLabels {
                result: ReconcileResult::Success,
                category: "none",
            },
            Err(category) => ReconcileLabels {
                result: ReconcileResult::Error,
                category: category.as_str(),
            },
        };
        self.reconciles.get_or_create(&labels).inc();
        self.reconcile_seconds.observe(seconds);
    }

    /// Count one per-object problem.
    pub fn count_problem(&self, category: &'static str) {
        self.problems
            .get_or_create(&ProblemLabels { category })
            .inc();
    }

    /// Count one apply decision.
    pub fn count_apply(&self, outcome: ApplyOutcome) {
        let result = match outcome {
            ApplyOutcome::Applied => "applied",
            ApplyOutcome::Unchanged => "unchanged",
        };
        self.applies.get_or_create(&ApplyLabels { result }).inc();
    }

    pub(crate) fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &self.registry)?;
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_prefix_adapter_label_and_bounded_labels() {
        let metrics = Metrics::new("ocm-source");
        metrics.observe_reconcile(Ok(()), 0.01);
        metrics.observe_reconcile(Err(Category::InvalidInput), 0.02);
        metrics.count_problem(Category::InvalidInput.as_str());
        metrics.count_apply(ApplyOutcome::Unchanged);
        let text = metrics.encode().unwrap();
        assert!(text.contains(
            "inventory_bridge_reconciles_total{adapter=\"ocm-source\",result=\"Error\",category=\"invalid-input\"} 1"
        ), "{text}");
        assert!(text.contains(
            "inventory_bridge_applies_total{adapter=\"ocm-source\",result=\"unchanged\"} 1"
        ));
        assert!(text.contains("inventory_bridge_leader{adapter=\"ocm-source\"} 0"));
    }
}
