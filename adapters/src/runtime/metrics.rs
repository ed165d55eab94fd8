//! Prometheus metrics shared by every adapter: prefix `inventory_bridge_`, one constant `adapter`
//! label, and only bounded labels (result, category) — never an object name or an error text.

use std::borrow::Cow;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::{debug, warn};

use crate::apply::ApplyOutcome;
use crate::error::{Category, kube_category};

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

/// Labels of `inventory_bridge_watch_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchErrorLabels {
    /// Error category (`forbidden`, `not-found`, `kube-api`, ...).
    pub category: &'static str,
}

/// How long watch errors may follow one another without any progress before `/healthz` fails,
/// unless the runtime sets another bound (`--liveness-stall-seconds`).
const DEFAULT_STALL: Duration = Duration::from_secs(300);
/// Errors older than this no longer count as "still failing": the watcher retries at most every
/// 30 s (kube's default backoff), so a streak with no error for this long has healed even if no
/// object changed since (a quiet watch sends nothing we can see).
const ERROR_STREAK_GAP: Duration = Duration::from_secs(65);

/// What `/healthz` reflects: controllers that ended on their own, and watches that keep failing.
#[derive(Debug, Default)]
struct Health {
    /// First watch error since the last sign of progress.
    streak_since: Option<Instant>,
    /// Latest watch error.
    last_error: Option<Instant>,
    /// A controller whose stream ended while the process was not stopping.
    ended: Option<&'static str>,
    /// Readiness as leadership and cache sync see it; `/readyz` also needs working watches.
    leader_ready: bool,
}

impl Health {
    /// Watches are failing now: an error streak whose latest error is recent.
    fn watches_failing(&self) -> bool {
        self.streak_since.is_some()
            && self
                .last_error
                .is_some_and(|last| last.elapsed() < ERROR_STREAK_GAP)
    }
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
    watch_errors: Family<WatchErrorLabels, Counter>,
    health: Mutex<Health>,
    stall: Mutex<Duration>,
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
        let watch_errors = Family::<WatchErrorLabels, Counter>::default();
        registry.register(
            "watch_errors",
            "Failed lists and watches of the controllers (the watcher retries by itself) by category",
            watch_errors.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_seconds,
            problems,
            applies,
            leader,
            ready,
            watch_errors,
            health: Mutex::default(),
            stall: Mutex::new(DEFAULT_STALL),
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
        if let Ok(mut health) = self.health.lock() {
            health.leader_ready = ready;
            self.publish_ready(&health);
        }
    }

    fn publish_ready(&self, health: &Health) {
        self.ready
            .set(i64::from(health.leader_ready && !health.watches_failing()));
    }

    /// Whether the watches are failing right now (the hub is out of reach or refuses us): such a
    /// replica is not ready, whatever it holds in its caches, until a watch makes progress again.
    pub fn watches_failing(&self) -> bool {
        self.health
            .lock()
            .map_or(true, |health| health.watches_failing())
    }

    /// Log, count and track one item of a controller's output stream: watch errors are warned
    /// about, counted by category and feed the liveness check; anything else is progress.
    /// Reconcile failures are reported by the engines' error policies, so only a debug line here.
    pub fn observe_controller_event<T, E: std::fmt::Display + 'static>(
        &self,
        result: &Result<T, kube::runtime::controller::Error<E, kube::runtime::watcher::Error>>,
    ) {
        use kube::runtime::controller::Error as ControllerError;
        match result {
            Ok(_) => self.watch_progress(),
            Err(ControllerError::QueueError(err)) => self.watch_error(err),
            Err(ControllerError::RunnerError(err)) => {
                warn!(error = %err, "controller runner error");
            }
            Err(err) => {
                // A failed or vanished object: the watch itself works.
                debug!(error = %err, "controller event");
                self.watch_progress();
            }
        }
    }

    /// One failed list or watch (the watcher backs off and retries by itself).
    pub fn watch_error(&self, err: &kube::runtime::watcher::Error) {
        use kube::runtime::watcher::Error as WatchError;
        let category = match err {
            WatchError::InitialListFailed(err)
            | WatchError::WatchStartFailed(err)
            | WatchError::WatchFailed(err) => kube_category(err),
            _ => Category::KubeApi,
        };
        warn!(category = %category, error = %err, "watch failed; retrying with backoff");
        self.watch_errors
            .get_or_create(&WatchErrorLabels {
                category: category.as_str(),
            })
            .inc();
        if let Ok(mut health) = self.health.lock() {
            let now = Instant::now();
            health.streak_since.get_or_insert(now);
            health.last_error = Some(now);
            self.publish_ready(&health);
        }
    }

    /// A sign that watches work (an event, a relist, a reconcile): ends any error streak.
    pub fn watch_progress(&self) {
        if let Ok(mut health) = self.health.lock()
            && health.streak_since.is_some()
        {
            health.streak_since = None;
            self.publish_ready(&health);
        }
    }

    /// A controller's stream ended although nothing asked it to stop: nothing will reconcile any
    /// more, so `/healthz` fails until the process restarts.
    pub fn controller_ended(&self, controller: &'static str) {
        warn!(controller, "controller stream ended unexpectedly");
        if let Ok(mut health) = self.health.lock() {
            health.ended = Some(controller);
        }
    }

    pub(crate) fn set_liveness_stall(&self, stall: Duration) {
        if let Ok(mut current) = self.stall.lock() {
            *current = stall;
        }
    }

    /// `Ok` while alive; otherwise why `/healthz` fails. A quiet watch (no events, no errors) is
    /// alive: only a controller that ended, or watch errors with no progress for longer than the
    /// stall bound (and still recent), make it fail.
    pub fn liveness(&self) -> Result<(), String> {
        let stall = self.stall.lock().map(|s| *s).unwrap_or(DEFAULT_STALL);
        let health = self
            .health
            .lock()
            .map_err(|_| "health state poisoned".to_string())?;
        if let Some(controller) = health.ended {
            return Err(format!("controller {controller} ended"));
        }
        if let (Some(since), Some(last)) = (health.streak_since, health.last_error)
            && since.elapsed() > stall
            && last.elapsed() < ERROR_STREAK_GAP.max(stall)
        {
            return Err(format!(
                "watches failing for {}s without progress",
                since.elapsed().as_secs()
            ));
        }
        Ok(())
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

    #[test]
    fn liveness_fails_on_a_long_error_streak_and_on_an_ended_controller_only() {
        let metrics = Metrics::new("t");
        metrics.set_liveness_stall(Duration::from_millis(50));
        assert!(metrics.liveness().is_ok(), "a quiet start is alive");
        let err = kube::runtime::watcher::Error::NoResourceVersion;
        metrics.set_ready(true);
        assert!(!metrics.watches_failing());
        metrics.watch_error(&err);
        assert!(metrics.liveness().is_ok(), "a fresh error is not a stall");
        assert!(metrics.watches_failing(), "but it is not ready");
        assert!(
            metrics
                .encode()
                .unwrap()
                .contains("inventory_bridge_ready{adapter=\"t\"} 0")
        );
        std::thread::sleep(Duration::from_millis(80));
        metrics.watch_error(&err);
        assert!(
            metrics.liveness().is_err(),
            "errors without progress past the bound"
        );
        metrics.watch_progress();
        assert!(metrics.liveness().is_ok(), "progress heals");
        assert!(!metrics.watches_failing(), "and makes it ready again");
        assert!(
            metrics
                .encode()
                .unwrap()
                .contains("inventory_bridge_ready{adapter=\"t\"} 1")
        );
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(
                "inventory_bridge_watch_errors_total{adapter=\"t\",category=\"kube-api\"} 2"
            ),
            "{text}"
        );
        metrics.controller_ended("profiles");
        assert!(metrics.liveness().is_err());
    }
}
