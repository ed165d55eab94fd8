//! Which member identities are known to be in place, so that a sink serving many profiles of
//! one member checks its namespace, ServiceAccount and RBAC once per member and re-check period,
//! not once per profile: at fleet size a mint then costs one TokenRequest and one
//! SelfSubjectReview instead of four reads more.
//!
//! Checks of one member are serialised (a burst of profiles of a new member checks it once, the
//! others wait for that result). A failure is never remembered: the next mint checks again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::Client;

use super::{MemberError, MemberIdentity, ensure_identity};

/// How long a successful check is trusted. Bounded, so RBAC someone deleted on a member is put
/// back within this time even when no token is due.
pub const RECHECK_AFTER: Duration = Duration::from_secs(300);

type Slot = Arc<tokio::sync::Mutex<Option<(String, Instant)>>>;

/// Member identities checked recently, by member endpoint. Cheap to share.
#[derive(Clone, Default)]
pub struct EnsuredIdentities {
    slots: Arc<Mutex<HashMap<String, Slot>>>,
}

impl EnsuredIdentities {
    /// The ServiceAccount uid of `identity` on the member `member` (a stable key of its
    /// endpoint), checking (and creating what is missing) only when no check succeeded within
    /// [`RECHECK_AFTER`]. Returns whether the answer came from an earlier check.
    pub async fn ensure(
        &self,
        member: &str,
        client: &Client,
        identity: &MemberIdentity,
        sink: &str,
    ) -> Result<(String, bool), MemberError> {
        let slot = self.slot(member);
        let mut known = slot.lock().await;
        if let Some((uid, checked)) = known.as_ref()
            && checked.elapsed() < RECHECK_AFTER
        {
            return Ok((uid.clone(), true));
        }
        let uid = ensure_identity(client, identity, sink).await?;
        *known = Some((uid.clone(), Instant::now()));
        Ok((uid, false))
    }

    /// Forget what is known of `member` (a token request failed: check everything again).
    pub fn forget(&self, member: &str) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.remove(member);
        }
    }

    /// Record `uid` as the account's current uid (a verified token named it).
    pub async fn confirm(&self, member: &str, uid: &str) {
        let slot = self.slot(member);
        let mut known = slot.lock().await;
        if let Some((known_uid, _)) = known.as_mut() {
            *known_uid = uid.to_string();
        }
    }

    fn slot(&self, member: &str) -> Slot {
        match self.slots.lock() {
            Ok(mut slots) => slots.entry(member.to_string()).or_default().clone(),
            // A poisoned map only loses the sharing: check this member on its own.
            Err(_) => Slot::default(),
        }
    }
}
