//! Sink metrics. Labels are bounded: a registration state, a mint kind, a result and an error
//! category from a fixed list; never a profile or member name.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Registration states (values of the `state` label).
pub const STATES: [&str; 5] = ["registered", "stale", "expired", "failed", "suppressed"];

/// Labels of `inventory_bridge_sink_registrations`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// registered | stale (failing, last good token still valid) | expired (failing, token
    /// expired) | failed (never registered) | suppressed (duplicate member id).
    pub state: &'static str,
}

/// Labels of `inventory_bridge_sink_mints_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MintLabels {
    /// `mint` (first token) or `rotation` (renewal of a registered profile).
    pub kind: &'static str,
    /// `success` or `error`.
    pub result: &'static str,
    /// Error category, `none` on success.
    pub category: &'static str,
}

/// Labels of `inventory_bridge_sink_member_id_groups`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    /// unique | duplicate | ambiguous.
    pub kind: &'static str,
}

/// Labels of `inventory_bridge_sink_cleanups_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CleanupLabels {
    /// `complete`, `member-abandoned` (gave up on the member after the timeout), `member-kept`
    /// (`--keep-member-identity` or still used by another registration) or `orphan`.
    pub result: &'static str,
}

/// The sink engine's metrics, registered into the adapter's registry.
#[derive(Clone, Debug, Default)]
pub struct SinkMetrics {
    registrations: Family<StateLabels, Gauge>,
    mints: Family<MintLabels, Counter>,
    earliest_expiry: Gauge<f64, AtomicU64>,
    groups: Family<GroupLabels, Gauge>,
    cleanups: Family<CleanupLabels, Counter>,
}

impl SinkMetrics {
    /// Create and register the metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "sink_registrations",
            "Profiles by registration state",
            metrics.registrations.clone(),
        );
        registry.register(
            "sink_mints",
            "Token mints and rotations by result and error category",
            metrics.mints.clone(),
        );
        registry.register(
            "sink_earliest_token_expiry_seconds",
            "Seconds until the earliest expiry among published tokens (NaN when none)",
            metrics.earliest_expiry.clone(),
        );
        registry.register(
            "sink_member_id_groups",
            "Groups of profiles sharing an inventory-member-id: unique, duplicate, ambiguous",
            metrics.groups.clone(),
        );
        registry.register(
            "sink_cleanups",
            "Profile deletions handled, by result",
            metrics.cleanups.clone(),
        );
        metrics.earliest_expiry.set(f64::NAN);
        for state in STATES {
            metrics
                .registrations
                .get_or_create(&StateLabels { state })
                .set(0);
        }
        metrics
    }

    /// Count a mint or rotation.
    pub fn count_mint(&self, rotation: bool, outcome: Result<(), &'static str>) {
        let kind = if rotation { "rotation" } else { "mint" };
        let (result, category) = match outcome {
            Ok(()) => ("success", "none"),
            Err(category) => ("error", category),
        };
        self.mints
            .get_or_create(&MintLabels {
                kind,
                result,
                category,
            })
            .inc();
    }

    /// Publish the registration counts by state.
    pub fn set_states(&self, counts: &[(&'static str, i64)]) {
        for state in STATES {
            let value = counts
                .iter()
                .filter(|(s, _)| *s == state)
                .map(|(_, n)| *n)
                .sum();
            self.registrations
                .get_or_create(&StateLabels { state })
                .set(value);
        }
    }

    /// Publish seconds until the earliest expiry (None: no token published).
    pub fn set_earliest_expiry(&self, seconds: Option<f64>) {
        self.earliest_expiry.set(seconds.unwrap_or(f64::NAN));
    }

    /// Publish the member-id group counts.
    pub fn set_groups(&self, unique: i64, duplicate: i64, ambiguous: i64) {
        for (kind, value) in [
            ("unique", unique),
            ("duplicate", duplicate),
            ("ambiguous", ambiguous),
        ] {
            self.groups.get_or_create(&GroupLabels { kind }).set(value);
        }
    }

    /// Count a cleanup outcome.
    pub fn count_cleanup(&self, result: &'static str) {
        self.cleanups.get_or_create(&CleanupLabels { result }).inc();
    }
}
