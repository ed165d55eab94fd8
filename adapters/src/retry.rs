//! Retry delays shared by both engines: exponential, capped, with jitter, per object. A failure
//! that stays (a fleet-wide 403, a missing CRD) must cost less and less, never a constant load.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Exponential backoff after `failures` consecutive failures: 2 s, 4 s, ... capped at `max`,
/// plus up to 10 % jitter derived from `seed` and the attempt, so objects failing together do
/// not retry in lockstep (and no RNG is needed, which keeps it testable).
pub fn backoff(failures: u32, max: Duration, seed: &str) -> Duration {
    let base = Duration::from_secs(2).saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let capped = base.min(max);
    capped + capped.mul_f64(0.1 * unit(seed, failures))
}

/// A deterministic value in [0, 1) from `seed` and `failures`.
fn unit(seed: &str, failures: u32) -> f64 {
    let mut hasher = Sha256::new();
    hasher.update(seed.as_bytes());
    hasher.update(failures.to_be_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// Consecutive failures per object and the delay each earns ([`backoff`]); a success forgets the
/// object, so the next failure starts again at 2 s.
#[derive(Debug)]
pub struct Retries {
    max: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Retries {
    /// Delays capped at `max`.
    pub fn new(max: Duration) -> Self {
        Self {
            max,
            failures: Mutex::default(),
        }
    }

    /// One more failure of `key`: how long to wait before trying it again.
    pub fn failed(&self, key: &str) -> Duration {
        let failures = self
            .failures
            .lock()
            .map(|mut failures| {
                let n = failures.entry(key.to_string()).or_insert(0);
                *n = n.saturating_add(1);
                *n
            })
            .unwrap_or(1);
        backoff(failures, self.max, key)
    }

    /// `key` succeeded (or is gone): forget its failures.
    pub fn succeeded(&self, key: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
    }

    /// Consecutive failures of `key` so far.
    pub fn failures(&self, key: &str) -> u32 {
        self.failures
            .lock()
            .ok()
            .and_then(|failures| failures.get(key).copied())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let max = Duration::from_secs(300);
        let first = backoff(1, max, "a");
        let fifth = backoff(5, max, "a");
        assert!(first >= Duration::from_secs(2) && first < Duration::from_secs(3));
        assert!(fifth >= Duration::from_secs(32) && fifth < Duration::from_secs(36));
        assert!(backoff(40, max, "a") <= max.mul_f64(1.1));
        assert!(backoff(40, max, "a") >= max);
    }

    #[test]
    fn jitter_spreads_objects_and_attempts() {
        let max = Duration::from_secs(300);
        let delays: std::collections::BTreeSet<Duration> = (0..50)
            .map(|i| backoff(3, max, &format!("obj-{i}")))
            .collect();
        assert!(
            delays.len() > 40,
            "objects failing together must not retry together"
        );
        // The same object's successive delays are not one fixed ratio apart.
        let ratios: std::collections::BTreeSet<u64> = (1..8)
            .map(|n| {
                let d = backoff(n, max, "obj").as_secs_f64() / 2f64.powi(n as i32);
                (d * 1e6) as u64
            })
            .collect();
        assert!(ratios.len() > 1);
    }

    #[test]
    fn retries_count_per_object_and_reset_on_success() {
        let retries = Retries::new(Duration::from_secs(60));
        let a1 = retries.failed("a");
        let a2 = retries.failed("a");
        let b1 = retries.failed("b");
        assert!(a2 > a1, "{a1:?} then {a2:?}");
        assert!(
            b1 < Duration::from_secs(3),
            "another object starts low: {b1:?}"
        );
        assert_eq!(retries.failures("a"), 2);
        retries.succeeded("a");
        assert_eq!(retries.failures("a"), 0);
        assert!(retries.failed("a") < Duration::from_secs(3));
        for _ in 0..20 {
            retries.failed("c");
        }
        assert!(retries.failed("c") <= Duration::from_secs(66));
    }
}
