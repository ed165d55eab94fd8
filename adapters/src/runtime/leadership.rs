//! A leadership term, and what makes a deposed leader stop writing at once.
//!
//! The lease manager renews the Lease in the background and says when it *notices* a change, but
//! a leader that was paused (SIGSTOP, a stalled node, a long GC-like stall) or cut off from the
//! hub notices only after it has run again — and the overdue timers of its controllers fire in the
//! same instant. So the term carries its own deadline: the Lease's last renewal by this replica
//! plus the lease duration (the instant another replica may take over). Two guards use it:
//!
//! - the hub client of the term ([`gated_client`]) refuses every request that could write (any
//!   method but GET/HEAD/OPTIONS) once the deadline has passed or the term has ended. It checks
//!   the wall clock at the moment of the request, so no task ordering after a pause can let a
//!   write through;
//! - [`guard_term`] watches the Lease and ends the term (cancels the controllers' stop token)
//!   when the deadline passes without a renewal, another replica holds the Lease, or it is gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::client::Body;
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Why a term ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TermEnd {
    /// The process is shutting down (or the term's stop token was cancelled by its owner).
    Stopped,
    /// No renewal by this replica was seen within the lease duration.
    NotRenewed,
    /// The Lease names another holder, or none.
    OtherHolder,
    /// The Lease was deleted.
    LeaseGone,
}

impl TermEnd {
    /// Human explanation for logs.
    pub fn describe(self) -> &'static str {
        match self {
            TermEnd::Stopped => "stopped",
            TermEnd::NotRenewed => "the lease was not renewed within its duration",
            TermEnd::OtherHolder => "another replica holds the lease",
            TermEnd::LeaseGone => "the lease was deleted",
        }
    }
}

/// One leadership term: writes are allowed until its deadline or until it is ended, whichever
/// comes first.
#[derive(Clone, Debug)]
pub struct Term {
    stop: CancellationToken,
    /// Unix milliseconds until which this term may write.
    valid_until: Arc<AtomicI64>,
}

impl Term {
    /// A term without a deadline (no leader election): it ends only with `stop`.
    pub(crate) fn unbounded(stop: CancellationToken) -> Self {
        Self {
            stop,
            valid_until: Arc::new(AtomicI64::new(i64::MAX)),
        }
    }

    /// A term valid until `valid_until_ms` (Unix milliseconds) unless extended.
    pub(crate) fn until(stop: CancellationToken, valid_until_ms: i64) -> Self {
        Self {
            stop,
            valid_until: Arc::new(AtomicI64::new(valid_until_ms)),
        }
    }

    /// Whether this replica may still write: the term has not ended and its deadline is ahead.
    pub fn may_write(&self) -> bool {
        !self.stop.is_cancelled() && now_ms() < self.valid_until.load(Ordering::SeqCst)
    }

    /// The token cancelled when the term ends.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    fn extend_to(&self, valid_until_ms: i64) {
        self.valid_until.fetch_max(valid_until_ms, Ordering::SeqCst);
    }

    /// End the term now: no more writes, and the controllers are told to stop.
    pub(crate) fn end(&self) {
        self.valid_until.store(i64::MIN, Ordering::SeqCst);
        self.stop.cancel();
    }

    fn remaining(&self) -> Duration {
        let left = self
            .valid_until
            .load(Ordering::SeqCst)
            .saturating_sub(now_ms());
        Duration::from_millis(u64::try_from(left).unwrap_or(0))
    }
}

fn now_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

/// Safety margin taken off the lease's expiry: replicas compare the Lease's `renewTime` with
/// their own clocks, so stop writing a little before the earliest instant another may start.
pub(crate) fn margin(duration: Duration) -> Duration {
    (duration / 10).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// The error a gated client returns instead of sending a write after the term ended.
#[derive(Debug, thiserror::Error)]
#[error("not sent: this replica is no longer the leader")]
pub struct NotLeader;

/// `client`, refusing writes once `term` is over (see the module documentation). Reads go through:
/// a deposed leader may finish reading, it just cannot change anything.
pub(crate) fn gated_client(client: kube::Client, term: Term) -> kube::Client {
    let namespace = client.default_namespace().to_string();
    kube::Client::new(
        WriteGate {
            inner: client,
            term,
        },
        namespace,
    )
}

#[derive(Clone)]
struct WriteGate {
    inner: kube::Client,
    term: Term,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<http::Request<Body>> for WriteGate {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let reads = matches!(
            *request.method(),
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
        );
        if !reads && !self.term.may_write() {
            return Box::pin(async { Err(Box::new(NotLeader) as BoxError) });
        }
        let inner = self.inner.clone();
        Box::pin(async move {
            inner
                .send(request)
                .await
                .map_err(|err| Box::new(err) as BoxError)
        })
    }
}

/// Keep `term` valid while the Lease `name` shows `identity` renewing it; end it (and return why)
/// as soon as the deadline passes without a renewal, another replica holds the Lease, or the
/// Lease is deleted. Returns [`TermEnd::Stopped`] when the term is ended by its owner.
pub(crate) async fn guard_term(
    leases: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    term: Term,
) -> TermEnd {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(leases, config).default_backoff().boxed();
    let margin_ms = i64::try_from(margin(duration).as_millis()).unwrap_or(1000);
    let default_ms = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
    let mut watching = true;
    let ended = loop {
        if term.stop.is_cancelled() {
            break TermEnd::Stopped;
        }
        let remaining = term.remaining();
        if remaining.is_zero() {
            break TermEnd::NotRenewed;
        }
        tokio::select! {
            _ = term.stop.cancelled() => break TermEnd::Stopped,
            // Wakes at the deadline; the loop head decides (an event may have extended it).
            _ = tokio::time::sleep(remaining) => {}
            event = events.next(), if watching => match event {
                Some(Ok(watcher::Event::Apply(lease) | watcher::Event::InitApply(lease))) => {
                    let spec = lease.spec.unwrap_or_default();
                    if spec.holder_identity.as_deref() != Some(identity.as_str()) {
                        break TermEnd::OtherHolder;
                    }
                    if let Some(renewed) = spec.renew_time {
                        let lease_ms = spec
                            .lease_duration_seconds
                            .map_or(default_ms, |s| i64::from(s).saturating_mul(1000));
                        let renewed_ms = renewed.0.as_millisecond();
                        term.extend_to(renewed_ms.saturating_add(lease_ms).saturating_sub(margin_ms));
                    }
                }
                Some(Ok(watcher::Event::Delete(_))) => break TermEnd::LeaseGone,
                Some(Ok(_)) => {}
                // The watcher retries by itself; meanwhile the deadline decides.
                Some(Err(err)) => debug!(error = %err, "lease watch error"),
                None => watching = false,
            }
        }
    };
    if ended != TermEnd::Stopped {
        term.end();
    }
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_term_writes_until_its_deadline_or_its_end() {
        let term = Term::until(CancellationToken::new(), now_ms() + 60_000);
        assert!(term.may_write());
        term.extend_to(now_ms() - 1);
        assert!(term.may_write(), "a deadline never moves back");
        term.end();
        assert!(!term.may_write());
        assert!(term.stop_token().is_cancelled());

        let expired = Term::until(CancellationToken::new(), now_ms() - 1);
        assert!(!expired.may_write());
        assert!(!expired.stop_token().is_cancelled(), "the guard ends it");

        let unbounded = Term::unbounded(CancellationToken::new());
        assert!(unbounded.may_write());
        unbounded.stop_token().cancel();
        assert!(!unbounded.may_write());
    }

    #[test]
    fn margin_is_a_tenth_within_bounds() {
        assert_eq!(margin(Duration::from_secs(15)), Duration::from_millis(1000));
        assert_eq!(margin(Duration::from_secs(4)), Duration::from_millis(400));
        assert_eq!(
            margin(Duration::from_millis(500)),
            Duration::from_millis(100)
        );
    }
}
