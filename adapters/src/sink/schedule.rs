//! When to renew a token and how long to wait after a failure. Pure, so the spread is tested.

use std::hash::{Hash, Hasher};

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Renew at `fraction` of the granted lifetime, moved by up to ±`jitter` of it. The jitter is
/// derived from `seed` (the profile's uid and the issue time), so a fleet minted in the same
/// second spreads its renewals evenly instead of renewing at once, and it needs no RNG.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RenewalPolicy {
    /// Centre of the renewal point as a fraction of the lifetime (2/3 by default).
    pub fraction: f64,
    /// Half-width of the jitter window as a fraction of the lifetime (1/12 by default, so renewals
    /// land between 7/12 and 9/12 of the lifetime).
    pub jitter: f64,
}

impl Default for RenewalPolicy {
    fn default() -> Self {
        Self {
            fraction: 2.0 / 3.0,
            jitter: 1.0 / 12.0,
        }
    }
}

impl RenewalPolicy {
    /// When a token issued at `issued_at` and expiring at `expires_at` should be renewed.
    pub fn renew_at(&self, issued_at: Timestamp, expires_at: Timestamp, seed: &str) -> Timestamp {
        let lifetime = expires_at.duration_since(issued_at).as_secs_f64().max(0.0);
        let offset = (self.fraction + self.jitter * (2.0 * unit_hash(seed, issued_at) - 1.0))
            .clamp(0.0, 0.95);
        let delay = SignedDuration::from_secs_f64(lifetime * offset);
        issued_at.checked_add(delay).unwrap_or(expires_at)
    }
}

/// A deterministic value in [0, 1) from the seed and the issue time.
fn unit_hash(seed: &str, issued_at: Timestamp) -> f64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    seed.hash(&mut hasher);
    issued_at.as_nanosecond().hash(&mut hasher);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Retry delays are shared with the source engine; re-exported here for the sink engine.
pub use crate::retry::backoff;

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn renewal_lands_between_seven_and_nine_twelfths_of_the_lifetime() {
        let policy = RenewalPolicy::default();
        let issued = at(1_000_000);
        let expires = at(1_000_000 + 24 * 3600);
        for i in 0..200 {
            let renew = policy.renew_at(issued, expires, &format!("uid-{i}"));
            let offset = renew.duration_since(issued).as_secs_f64() / (24.0 * 3600.0);
            assert!(
                (7.0 / 12.0 - 1e-9..=9.0 / 12.0 + 1e-9).contains(&offset),
                "{offset}"
            );
        }
    }

    #[test]
    fn a_fleet_issued_in_the_same_second_spreads_its_renewals() {
        let policy = RenewalPolicy::default();
        let issued = at(1_000_000);
        let expires = at(1_000_000 + 24 * 3600);
        let mut renewals: Vec<i64> = (0..50)
            .map(|i| {
                policy
                    .renew_at(issued, expires, &format!("profile-uid-{i}"))
                    .as_second()
            })
            .collect();
        renewals.sort_unstable();
        // Without jitter all 50 would renew in the same second.
        let busiest_minute = renewals
            .iter()
            .map(|start| {
                renewals
                    .iter()
                    .filter(|t| (*t - start) < 60 && *t >= start)
                    .count()
            })
            .max()
            .unwrap();
        assert!(
            busiest_minute <= 5,
            "{busiest_minute} renewals within one minute"
        );
        let spread = renewals.last().unwrap() - renewals.first().unwrap();
        assert!(spread >= 3 * 3600, "spread {spread}s of a 4h window");
    }
}
