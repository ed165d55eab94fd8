//! Registering a profile: trust, duplicates, finalizer, credential, render, apply.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::info;

use super::rotate::Fresh;
use super::{
    Engine, Failure, Key, Lookup, Phase, Registration, Scope, member_key, object_ref,
    parse_profile, static_category,
};
use crate::access;
use crate::profile::LABEL_INVENTORY_MEMBER_ID;
use crate::sink::duplicates::{self, Candidate, Verdict};
use crate::sink::{
    ANNOTATION_PROFILE, ANNOTATION_REGISTRATION, ANNOTATION_TOKEN_EXPIRES_AT,
    ANNOTATION_TOKEN_RENEW_AFTER, DesiredObject, LABEL_INSTANCE, LABEL_PROFILE_NAMESPACE,
    LABEL_PROFILE_UID, LABEL_SINK, Sink, SinkConfig,
};

impl<S: Sink> Engine<S> {
    pub(super) async fn register(
        &self,
        object: &DynamicObject,
        scope: &Scope,
    ) -> Result<Action, Failure> {
        let key = super::key_of(object);
        let uid = object.uid().unwrap_or_default();
        let profile = parse_profile(object)?;

        // Trust first: a profile no provider entry trusts is never served, and never competes
        // for a member id either.
        let (request, advertised) = match access::choose(&self.options.providers, &profile) {
            Ok(chosen) => chosen,
            Err(err) => {
                let failure = Failure::new(err.category(), err.to_string()).on_change();
                self.withdraw(object, &key, &uid).await?;
                return Err(failure);
            }
        };

        match duplicates::verdict(&candidate(object), &trusted_peers(object, scope)) {
            Verdict::Register => {}
            verdict => return self.suppress(object, &key, &uid, verdict).await,
        }

        let config = SinkConfig {
            namespace: self.hub_namespace(&key.0),
        };
        if let Some(failure) = self.claim_conflict(object, &config) {
            // Never two consumer entries under one name: withdraw ours until the name is free.
            self.delete_hub_objects(&key.0, &uid).await?;
            return Err(failure);
        }

        self.ensure_finalizer(object).await?;
        let (registration, fresh, previous) =
            self.credential(&key, &uid, &request, &advertised).await?;
        let rendered = self
            .sink
            .render(&profile, &registration.credential, &config)
            .map_err(|p| Failure::new(static_category(p.category), p.message))?;
        for warning in &rendered.warnings {
            let new = self
                .with_state(&key, |s| {
                    s.reported_warnings.insert(warning.message.clone())
                })
                .unwrap_or(true);
            if new {
                self.metrics
                    .count_problem(static_category(warning.category));
                self.events.warn(
                    &object_ref(object, &self.profiles),
                    super::reason(warning.category),
                    "Render",
                    &warning.message,
                );
            }
        }
        self.apply_objects(&key, &uid, &registration, rendered.objects)
            .await?;
        let was_failing = self
            .with_state(&key, |s| {
                let was = s.reported.take().is_some();
                s.phase = Phase::Registered;
                s.failures = 0;
                s.registration = Some(registration.clone());
                was
            })
            .unwrap_or(false);
        if matches!(fresh, Fresh::Minted { .. }) || was_failing {
            let (reason, note) = match fresh {
                Fresh::Minted { rotation: true } => ("Rotated", "published a renewed member token"),
                _ => ("Registered", "registered with a minted member identity"),
            };
            self.events.normal(
                &object_ref(object, &self.profiles),
                reason,
                "Register",
                note,
            );
        }
        // The identity this profile used before (another member, another account) is retired
        // once the new one is published; until that succeeds it is retried on every pass.
        if let Some(previous) = previous
            && !previous.same_member_identity(&registration.record)
        {
            self.with_state(&key, |s| s.retired.push(previous));
        }
        self.retry_retired(object, &key, &uid).await;

        let until = registration
            .renew_at
            .min(registration.next_verify)
            .duration_since(Timestamp::now())
            .as_secs_f64()
            .max(1.0);
        Ok(Action::requeue(
            Duration::from_secs_f64(until).min(self.options.resync),
        ))
    }

    /// A consumer name this profile claims (see [`Sink::claims`]) that an older registrable
    /// profile of any served inventory claims too. Only the profiles claiming the same names are
    /// looked at (the claims index), and only they pay for the trust and duplicate checks.
    fn claim_conflict(&self, object: &DynamicObject, config: &SinkConfig) -> Option<Failure> {
        let mine = self.sink.claims(&object.metadata, config);
        if mine.is_empty() {
            return None;
        }
        let scopes = self.scopes.lock().map(|s| s.clone()).unwrap_or_default();
        let mut rivals: Vec<std::sync::Arc<DynamicObject>> = Vec::new();
        for claim in &mine {
            for scope in &scopes {
                rivals.extend(scope.claims.get(claim, &scope.store));
            }
        }
        let me = super::key_of(object);
        rivals.retain(|o| super::key_of(o.as_ref()) != me);
        rivals.sort_by_key(|o| super::key_of(o.as_ref()));
        rivals.dedup_by_key(|o| super::key_of(o.as_ref()));
        let others = rivals.iter().filter_map(|o| {
            let other_config = SinkConfig {
                namespace: self.hub_namespace(&o.namespace().unwrap_or_default()),
            };
            let theirs = self.sink.claims(&o.metadata, &other_config);
            let registrable = parse_profile(o)
                .ok()
                .is_some_and(|p| access::choose(&self.options.providers, &p).is_ok())
                && scopes.iter().all(|scope| {
                    duplicates::verdict(&candidate(o), &trusted_peers(o, scope))
                        == Verdict::Register
                });
            registrable.then(|| (candidate(o), theirs))
        });
        let (winner, claim) = crate::sink::claims::conflict(&candidate(object), &mine, others)?;
        Some(Failure::new(
            "name-conflict",
            format!(
                "{claim} is already claimed by the older profile {}/{}; this one is not registered until it is free",
                winner.namespace, winner.name
            ),
        ))
    }

    /// Add our finalizer (server-side apply of just that list entry) if it is missing.
    async fn ensure_finalizer(&self, object: &DynamicObject) -> Result<(), Failure> {
        if object.finalizers().contains(&self.finalizer) {
            return Ok(());
        }
        self.apply_finalizer(object, true).await
    }

    pub(super) async fn apply_finalizer(
        &self,
        object: &impl ResourceExt,
        present: bool,
    ) -> Result<(), Failure> {
        let (ns, name) = super::key_of(object);
        let api: Api<DynamicObject> = Api::namespaced_with(self.hub.clone(), &ns, &self.profiles);
        let mut patch = json!({
            "apiVersion": self.profiles.api_version,
            "kind": self.profiles.kind,
            "metadata": { "name": name, "namespace": ns },
        });
        if present {
            patch["metadata"]["finalizers"] = json!([self.finalizer]);
        }
        // Applying without the entry drops our ownership of it, which removes it; other
        // finalizers belong to other managers and stay.
        match api
            .patch(
                &name,
                &PatchParams::apply(&self.options.instance),
                &Patch::Apply(&patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 && !present => Ok(()),
            Err(err) => Err(Failure::new(
                "hub-write",
                format!("cannot update the profile's finalizer: {err}"),
            )),
        }
    }

    async fn apply_objects(
        &self,
        key: &Key,
        uid: &str,
        registration: &Registration,
        objects: Vec<DesiredObject>,
    ) -> Result<(), Failure> {
        let record = &registration.record;
        let mut planned = Vec::new();
        for desired in objects {
            let mut value = desired.object;
            let name = value
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let namespace = value
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| self.hub_namespace(&key.0));
            if name.is_empty() {
                return Err(Failure::new("render", "a rendered object has no name"));
            }
            let metadata = &mut value["metadata"];
            metadata["namespace"] = json!(namespace);
            metadata["labels"][LABEL_SINK] = json!(S::NAME);
            metadata["labels"][LABEL_INSTANCE] = json!(self.options.instance);
            metadata["labels"][LABEL_PROFILE_UID] = json!(uid);
            metadata["labels"][LABEL_PROFILE_NAMESPACE] = json!(key.0);
            metadata["annotations"][ANNOTATION_PROFILE] = json!(format!("{}/{}", key.0, key.1));
            if desired.resource.kind == "Secret" && desired.resource.group.is_empty() {
                metadata["annotations"][ANNOTATION_TOKEN_EXPIRES_AT] = json!(record.expires_at);
                metadata["annotations"][ANNOTATION_TOKEN_RENEW_AFTER] = json!(record.renew_after);
                metadata["annotations"][ANNOTATION_REGISTRATION] = json!(record.to_annotation());
            }
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.hub.clone(), &namespace, &desired.resource);
            // Ours, or no object of that name at all, as the watched view has it: no request.
            // Otherwise (another's object of that name, or not listed yet) the server is asked.
            let current = match self.published.get(&desired.resource, &namespace, &name) {
                Lookup::Known(found) => found.map(|object| (*object).clone()),
                Lookup::Unknown => read_current(&api, &desired.resource, &namespace, &name).await?,
            };
            self.check_owner(current.as_ref(), uid, &desired.resource, &namespace, &name)?;
            let object: DynamicObject = serde_json::from_value(value)
                .map_err(|err| Failure::new("render", format!("rendered object: {err}")))?;
            planned.push((api, desired.resource, object, current));
        }
        // Everything checked first, so a conflict never leaves half of the objects written.
        for (api, resource, mut object, current) in planned {
            // The ownership check saw this version: the write goes through only if it is still
            // the version on the server (a stale view turns into a conflict, never an overwrite).
            // A create is not forced: should an object of that name have appeared meanwhile,
            // fields another manager owns make it a conflict, checked below.
            object.metadata.resource_version = current
                .as_ref()
                .and_then(|c| c.metadata.resource_version.clone());
            let mut outcome = self
                .applier
                .apply(&api, &object, current.as_ref(), current.is_some())
                .await;
            if let Err(crate::error::Error::Kube(kube::Error::Api(status))) = &outcome
                && status.code == 409
            {
                // Changed since we looked: look again at the server's version, check again.
                let namespace = object.namespace().unwrap_or_default();
                let name = object.name_any();
                let fresh = read_current(&api, &resource, &namespace, &name).await?;
                self.check_owner(fresh.as_ref(), uid, &resource, &namespace, &name)?;
                object.metadata.resource_version = fresh
                    .as_ref()
                    .and_then(|c| c.metadata.resource_version.clone());
                outcome = self
                    .applier
                    .apply(&api, &object, fresh.as_ref(), true)
                    .await;
            }
            let outcome = outcome.map_err(|err| {
                Failure::new(
                    "hub-write",
                    format!("cannot apply {}: {err}", object.name_any()),
                )
            })?;
            self.metrics.count_apply(outcome);
        }
        Ok(())
    }

    /// A hub object of a name we render must be ours, for this very profile, or absent.
    fn check_owner(
        &self,
        current: Option<&DynamicObject>,
        uid: &str,
        resource: &ApiResource,
        namespace: &str,
        name: &str,
    ) -> Result<(), Failure> {
        let Some(current) = current else {
            return Ok(());
        };
        let labels = current.labels();
        let ours = labels.get(LABEL_INSTANCE) == Some(&self.options.instance);
        let same = labels.get(LABEL_PROFILE_UID).map(String::as_str) == Some(uid);
        if ours && same {
            return Ok(());
        }
        let owner = current
            .annotations()
            .get(ANNOTATION_PROFILE)
            .filter(|_| ours)
            .map(|p| format!("profile {p}"))
            .unwrap_or_else(|| "something else".to_string());
        Err(Failure::new(
            "name-conflict",
            format!(
                "{} {namespace}/{name} already exists and belongs to {owner}; not overwriting it",
                resource.kind
            ),
        ))
    }

    /// A duplicate or ambiguous profile: say so once, and withdraw anything registered for it.
    async fn suppress(
        &self,
        object: &DynamicObject,
        key: &Key,
        uid: &str,
        verdict: Verdict,
    ) -> Result<Action, Failure> {
        let failure = match verdict {
            Verdict::Duplicate { winner } => Failure::new(
                "duplicate",
                format!(
                    "another profile, {winner}, represents the same member (same {LABEL_INVENTORY_MEMBER_ID}) and is older; this one is not registered"
                ),
            ),
            Verdict::Ambiguous { tied } => Failure::new(
                "ambiguous",
                format!(
                    "profiles {tied:?} share {LABEL_INVENTORY_MEMBER_ID} and the same creation time; none is registered"
                ),
            ),
            Verdict::Register => return Ok(Action::await_change()),
        };
        self.report(
            &object_ref(object, &self.profiles),
            key,
            &failure,
            "Register",
        );
        self.withdraw(object, key, uid).await?;
        self.with_state(key, |s| s.phase = Phase::Suppressed);
        // Re-evaluated regularly: when the winner goes away, this one may take its place.
        Ok(Action::requeue(Duration::from_secs(30)))
    }

    /// Take back whatever this profile had registered: retire its identity (reference-counted),
    /// delete its hub objects, drop our finalizer. Used when a profile stops being served while
    /// it lives (duplicate, untrusted).
    pub(super) async fn withdraw(
        &self,
        object: &DynamicObject,
        key: &Key,
        uid: &str,
    ) -> Result<(), Failure> {
        let registration = self
            .with_state(key, |s| {
                s.phase = Phase::Pending;
                s.registration.take()
            })
            .flatten();
        let holds_finalizer = object.finalizers().contains(&self.finalizer);
        if registration.is_none() && !holds_finalizer {
            return Ok(());
        }
        let mut records: Vec<_> = registration.map(|r| r.record).into_iter().collect();
        records.extend(
            self.records_of(&key.0, uid)
                .await?
                .into_iter()
                .map(|(_, r)| r),
        );
        for record in dedup(records) {
            if let Err(failure) = self.retire(&record, uid).await {
                self.with_state(key, |s| s.retired.push(record));
                self.report(&object_ref(object, &self.profiles), key, &failure, "Revoke");
            }
        }
        self.delete_hub_objects(&key.0, uid).await?;
        if holds_finalizer {
            self.apply_finalizer(object, false).await?;
        }
        info!(profile = %format!("{}/{}", key.0, key.1), "registration withdrawn");
        Ok(())
    }
}

/// The server's version of a hub object we are about to write (none: absent).
async fn read_current(
    api: &Api<DynamicObject>,
    resource: &ApiResource,
    namespace: &str,
    name: &str,
) -> Result<Option<DynamicObject>, Failure> {
    api.get_opt(name).await.map_err(|err| {
        Failure::new(
            "hub-write",
            format!("cannot read {} {namespace}/{name}: {err}", resource.kind),
        )
    })
}

/// Records naming distinct member identities (one per identity).
pub(super) fn dedup(records: Vec<crate::sink::record::Record>) -> Vec<crate::sink::record::Record> {
    let mut unique: Vec<crate::sink::record::Record> = Vec::new();
    for record in records {
        if !unique.iter().any(|r| r.same_member_identity(&record)) {
            unique.push(record);
        }
    }
    unique
}

/// Live trusted profiles of the same inventory sharing `object`'s member id (the member index
/// holds only those): the only ones that may win a duplicate contest against it.
fn trusted_peers(object: &DynamicObject, scope: &Scope) -> Vec<Candidate> {
    let Some(id) = object
        .labels()
        .get(LABEL_INVENTORY_MEMBER_ID)
        .filter(|id| !id.is_empty())
    else {
        return Vec::new();
    };
    let key = member_key(&object.namespace().unwrap_or_default(), id);
    scope
        .members
        .get(&key, &scope.store)
        .iter()
        .map(|o| candidate(o))
        .collect()
}

fn candidate(object: &DynamicObject) -> Candidate {
    Candidate {
        namespace: object.namespace().unwrap_or_default(),
        name: object.name_any(),
        member_id: object.labels().get(LABEL_INVENTORY_MEMBER_ID).cloned(),
        created: object.metadata.creation_timestamp.as_ref().map(|t| t.0),
    }
}

impl<S: Sink> Engine<S> {
    /// Member-id groups among live trusted profiles, from the member index: only groups of
    /// several profiles are read from the store (to tell a clear oldest from a tie).
    pub(super) fn duplicate_groups(&self) -> duplicates::GroupCounts {
        let scopes = self.scopes.lock().map(|s| s.clone()).unwrap_or_default();
        let mut counts = duplicates::GroupCounts::default();
        for scope in &scopes {
            for (key, size) in scope.members.key_sizes() {
                if size <= 1 {
                    counts.unique += i64::from(size == 1);
                    continue;
                }
                let group: Vec<Candidate> = scope
                    .members
                    .get(&key, &scope.store)
                    .iter()
                    .map(|o| candidate(o))
                    .collect();
                let found = duplicates::count_groups(&group);
                counts.unique += found.unique;
                counts.duplicate += found.duplicate;
                counts.ambiguous += found.ambiguous;
            }
        }
        counts
    }

    /// A number that changes whenever anything the gauges are computed from does.
    pub(super) fn gauge_generation(&self) -> u64 {
        let scopes = self.scopes.lock().map(|s| s.clone()).unwrap_or_default();
        scopes.iter().fold(
            self.states_generation
                .load(std::sync::atomic::Ordering::Relaxed),
            |sum, scope| sum.wrapping_add(scope.members.generation()),
        )
    }

    pub(super) fn object_reference(
        &self,
        object: &DynamicObject,
    ) -> k8s_openapi::api::core::v1::ObjectReference {
        object.object_ref(&self.profiles)
    }
}
