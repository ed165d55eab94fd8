//! Revocation: deleting a profile, and retiring an identity a profile no longer uses.
//!
//! Everything here acts on the *recorded* registration (what was minted where, through which
//! bootstrap access), never on what the profile says now, so editing a profile before deleting
//! it cannot point cleanup at anyone else's objects. Identities are per (instance, member):
//! several profiles reaching one member share it, so an identity is revoked only when no other
//! live registration of this instance still records it.
//!
//! Every wait is bounded: past `--cleanup-timeout` the sink reports what it gave up on and
//! releases the profile, so neither an unreachable member nor a hub error wedges deletion.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::controller::Action;
use tracing::{info, warn};

use super::register::dedup;
use super::{Engine, Failure, Key, member_client, object_ref};
use crate::member;
use crate::sink::record::Record;
use crate::sink::{ANNOTATION_REGISTRATION, Sink};

/// What retiring an identity did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Retired {
    /// Revoked on the member.
    Revoked,
    /// Still used by another registration: kept.
    Shared,
    /// `--keep-member-identity`: kept.
    Kept,
}

impl<S: Sink> Engine<S> {
    pub(super) async fn cleanup(&self, object: &DynamicObject) -> Result<Action, Failure> {
        let key = super::key_of(object);
        if !object.finalizers().contains(&self.finalizer) {
            self.forget(&key);
            return Ok(Action::await_change());
        }
        let uid = object.uid().unwrap_or_default();
        let reference = object_ref(object, &self.profiles);
        let deleted_at = object
            .metadata
            .deletion_timestamp
            .as_ref()
            .map(|t| t.0)
            .unwrap_or_else(Timestamp::now);
        let elapsed = Timestamp::now().duration_since(deleted_at).as_secs_f64();
        let timeout = self.options.cleanup_timeout;
        let timed_out = elapsed >= timeout.as_secs_f64();
        let wait = |this: &Self| {
            this.next_backoff(&key, &uid)
                .min(std::time::Duration::from_secs_f64(
                    (timeout.as_secs_f64() - elapsed).max(0.5),
                ))
        };

        let mut records: Vec<Record> = self
            .with_state(&key, |s| {
                let mut all: Vec<Record> =
                    s.registration.iter().map(|r| r.record.clone()).collect();
                all.extend(s.retired.iter().cloned());
                all
            })
            .unwrap_or_default();
        match self.records_of(&key.0, &uid).await {
            Ok(found) => records.extend(found.into_iter().map(|(_, r)| r)),
            Err(failure) if !timed_out => {
                self.report(&reference, &key, &failure, "Cleanup");
                return Ok(Action::requeue(wait(self)));
            }
            Err(failure) => {
                warn!(error = %failure, "cannot read the registration records; giving up on the member side")
            }
        }

        let mut result = "complete";
        for record in dedup(records) {
            match self.retire(&record, &uid).await {
                Ok(Retired::Revoked) => {}
                Ok(Retired::Kept) => result = "member-kept",
                Ok(Retired::Shared) => {
                    result = "member-kept";
                    self.events.normal(
                        &reference,
                        "MemberIdentityKept",
                        "Cleanup",
                        "the member identity is still used by another registration; kept it",
                    );
                }
                Err(failure) if !timed_out => {
                    self.report(&reference, &key, &failure, "Cleanup");
                    return Ok(Action::requeue(wait(self)));
                }
                Err(failure) => {
                    result = "member-abandoned";
                    self.metrics.count_problem("cleanup");
                    self.events
                        .warn(
                            &reference,
                            "MemberCleanupAbandoned",
                            "Cleanup",
                            &format!(
                                "gave up revoking the member identity after {timeout:?}: {}; its tokens stay valid until they expire",
                                failure.message
                            ),
                        );
                }
            }
        }
        if let Err(failure) = self.delete_hub_objects(&key.0, &uid).await {
            if !timed_out {
                self.report(&reference, &key, &failure, "Cleanup");
                return Ok(Action::requeue(wait(self)));
            }
            result = "hub-abandoned";
            self.metrics.count_problem("cleanup");
            self.events
                .warn(
                    &reference,
                    "HubCleanupAbandoned",
                    "Cleanup",
                    &format!(
                        "gave up deleting the hub objects after {timeout:?}: {}; the orphan sweep retries",
                        failure.message
                    ),
                );
        }
        self.apply_finalizer(object, false).await?;
        self.sink_metrics.count_cleanup(result);
        self.forget(&key);
        info!(profile = %format!("{}/{}", key.0, key.1), result, "profile deregistered");
        Ok(Action::await_change())
    }

    /// Revoke `record`'s identity unless another live registration of this instance (other than
    /// profile `uid`'s) still records it.
    pub(super) async fn retire(&self, record: &Record, uid: &str) -> Result<Retired, Failure> {
        if self.options.keep_member_identity {
            return Ok(Retired::Kept);
        }
        let others = self.live_records().await?;
        if others
            .iter()
            .any(|other| other.profile_uid != uid && other.same_member_identity(record))
        {
            return Ok(Retired::Shared);
        }
        let in_memory = self.states.lock().is_ok_and(|states| {
            states.values().any(|s| {
                s.uid != uid
                    && s.registration
                        .as_ref()
                        .is_some_and(|r| r.record.same_member_identity(record))
            })
        });
        if in_memory {
            return Ok(Retired::Shared);
        }
        let revoke_failure = |category: &'static str, message: String| {
            Failure::new(
                category,
                format!(
                    "revoking {}/{} on {}: {message}",
                    record.identity.namespace,
                    record.identity.service_account,
                    record.endpoint.server
                ),
            )
        };
        // The recorded request is resolved under today's trust rules; the credential must still
        // belong to the recorded server (checked inside), so nothing is sent anywhere else.
        let access = self
            .resolver()
            .resolve_to_revoke(&record.access, &record.endpoint.endpoint())
            .await
            .map_err(|err| revoke_failure(err.category(), err.to_string()))?;
        let client = member_client(
            &access.endpoint,
            &access.credential,
            self.options.member_timeout,
        )
        .await?;
        member::remove_identity(&client, &record.identity)
            .await
            .map_err(|err| revoke_failure(err.category(), err.to_string()))?;
        info!(
            member = %record.endpoint.server,
            account = %format!("{}/{}", record.identity.namespace, record.identity.service_account),
            "revoked a member identity"
        );
        Ok(Retired::Revoked)
    }

    /// Retry retiring identities a live profile no longer uses.
    pub(super) async fn retry_retired(&self, object: &DynamicObject, key: &Key, uid: &str) {
        let pending = self
            .with_state(key, |s| std::mem::take(&mut s.retired))
            .unwrap_or_default();
        for record in pending {
            if let Err(failure) = self.retire(&record, uid).await {
                warn!(error = %failure, "cannot revoke a retired member identity yet");
                self.metrics.count_problem("revoke-failed");
                self.events.warn(
                    &object_ref(object, &self.profiles),
                    "RevocationFailed",
                    "Revoke",
                    &failure.message,
                );
                self.with_state(key, |s| s.retired.push(record));
            }
        }
    }

    /// Every registration record this instance has published, in every namespace it writes to.
    pub(super) async fn live_records(&self) -> Result<Vec<Record>, Failure> {
        let mut records = Vec::new();
        for namespace in self.sweep_namespaces() {
            let api: Api<k8s_openapi::api::core::v1::Secret> = match &namespace {
                Some(ns) => Api::namespaced(self.hub.clone(), ns),
                None => Api::all(self.hub.clone()),
            };
            let list = api
                .list(&ListParams::default().labels(&self.instance_selector()))
                .await
                .map_err(|err| {
                    Failure::new("hub-write", format!("cannot list our Secrets: {err}"))
                })?;
            records.extend(list.items.iter().filter_map(|secret| {
                secret
                    .annotations()
                    .get(ANNOTATION_REGISTRATION)
                    .and_then(|text| Record::from_annotation(text))
            }));
        }
        Ok(records)
    }
}
