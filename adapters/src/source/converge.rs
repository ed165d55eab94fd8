//! Converging one source object: project it, apply its profiles and companions, delete what it
//! no longer projects, report its problems.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, DynamicObject, ObjectMeta};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::debug;

use super::profiles::Found;
use super::*;
use crate::apply::ApplyOutcome;
use crate::error::{Category, Error};
use crate::profile::{
    CONDITION_CONTROL_PLANE_HEALTHY, ClusterManager, ClusterProfile, ClusterProfileSpec,
    ClusterProfileStatus, LABEL_CLUSTER_MANAGER,
};

impl<S: Source> Engine<S> {
    /// Converge one native object; returns when to look again.
    pub(super) async fn reconcile_one(
        &self,
        native: &S::Native,
        key: &str,
    ) -> Result<Option<Duration>, Error> {
        let existing = self.our_profiles_of(key);
        let mut problems = Vec::new();
        let projection = if native.meta().deletion_timestamp.is_some() {
            Projection::default()
        } else {
            let extra = match self.source.observe(&self.leader.client, native).await {
                Ok(extra) => extra,
                Err(problem) => {
                    // Keep what we published; try again later, with its category intact.
                    self.report(native, key, vec![problem.clone()]);
                    return Err(Error::Classified {
                        category: problem.category,
                        message: problem.message,
                    });
                }
            };
            let observed = Observed {
                existing: existing.iter().collect(),
                extra,
                now: Time(now()),
            };
            match self.source.project(native, &observed) {
                Ok(projection) => projection,
                Err(problem) => {
                    self.report(native, key, vec![problem]);
                    return Ok(None);
                }
            }
        };
        problems.extend(projection.problems.iter().cloned());

        // A write that failed for a reason that may pass (a namespace not created yet, an
        // apiserver blip) is retried soon rather than at the next resync; a conflict with another
        // manager's object is not (it is reported once and re-checked on resync).
        let mut retry_writes = false;
        let mut wanted = BTreeSet::new();
        for desired in &projection.profiles {
            wanted.insert((desired.namespace.clone(), desired.name.clone()));
            if let Err(problem) = self.ensure_profile(desired, key).await {
                retry_writes |= problem.category != Category::Conflict;
                problems.push(problem);
            }
        }
        for profile in existing {
            let id = (profile.namespace().unwrap_or_default(), profile.name_any());
            if !wanted.contains(&id) {
                self.delete_profile(&profile).await?;
            }
        }

        let mut wanted_companions = BTreeSet::new();
        for companion in &projection.companions {
            wanted_companions.insert((
                companion.resource.kind.clone(),
                companion.object.namespace().unwrap_or_default(),
                companion.object.name_any(),
            ));
            if let Err(problem) = self.ensure_companion(companion, key).await {
                retry_writes |= problem.category != Category::Conflict;
                problems.push(problem);
            }
        }
        // Companions (bootstrap grants) outlive the profiles of a leaving source object until
        // those are really gone: the sinks' finalizers still need them to revoke.
        let hold_companions =
            projection.profiles.is_empty() && !self.our_profiles_of(key).is_empty();
        for companion in self.companions.iter().filter(|_| !hold_companions) {
            for object in companion.by_source.get(key, &companion.store) {
                let id = (
                    companion.resource.kind.clone(),
                    object.namespace().unwrap_or_default(),
                    object.name_any(),
                );
                if !wanted_companions.contains(&id) {
                    self.delete_companion(&companion.resource, &object).await?;
                }
            }
        }
        self.report(native, key, problems);
        self.publish_profile_count();
        if retry_writes {
            // Per object, exponential with jitter: a failure that persists costs less and less.
            let retry = self.retries.failed(key);
            return Ok(Some(
                projection
                    .requeue_after
                    .map_or(retry, |after| after.min(retry)),
            ));
        }
        self.retries.succeeded(key);
        Ok(projection.requeue_after)
    }

    pub(super) async fn ensure_profile(
        &self,
        desired: &DesiredProfile,
        key: &str,
    ) -> Result<(), Problem> {
        let api = &self.profile_api;
        let foreign = |manager: Option<String>| {
            let manager = manager.unwrap_or_else(|| "an unknown manager".to_string());
            Problem::new(
                Category::Conflict,
                format!(
                    "ClusterProfile {}/{} already exists and belongs to {manager}; it is left untouched and this cluster is skipped",
                    desired.namespace, desired.name
                ),
            )
        };
        // The book holds every profile of the namespaces the source may write to; elsewhere a
        // missing name proves nothing, and a forced apply could take another manager's profile.
        if !self.profiles.holds_all_of(&desired.namespace) {
            return Err(Problem::new(
                Category::Config,
                format!(
                    "ClusterProfile {}/{} is outside the inventory namespace {:?} this source writes to; it is not written",
                    desired.namespace,
                    desired.name,
                    self.source.inventory_namespace().unwrap_or_default()
                ),
            ));
        }
        // Reconciles start only once the book holds a full list (`run::reconcile`): absent there
        // is absent (a same-named profile created since is refused by the apply's field
        // conflicts or found on the next pass).
        let current = match self.profiles.get(&desired.namespace, &desired.name) {
            Some(Found::Theirs(manager)) => return Err(foreign(manager)),
            Some(Found::Ours(ours)) => Some(*ours),
            None => None,
        };
        let current = current.as_ref();
        if let Some(current) = current
            && current.spec.cluster_manager.name != self.source.cluster_manager()
        {
            return Err(Problem::new(
                Category::Conflict,
                format!(
                    "ClusterProfile {}/{} has cluster manager {:?} but this adapter now runs as {:?}; spec.clusterManager is immutable, so delete the profile to let it be recreated",
                    desired.namespace,
                    desired.name,
                    current.spec.cluster_manager.name,
                    self.source.cluster_manager()
                ),
            ));
        }

        let mut labels = desired.labels.clone();
        labels.insert(
            LABEL_CLUSTER_MANAGER.to_string(),
            self.source.cluster_manager().to_string(),
        );
        labels.insert(LABEL_SOURCE.to_string(), self.source.name().to_string());
        let spec = ClusterProfileSpec {
            display_name: desired.display_name.clone(),
            cluster_manager: ClusterManager {
                name: self.source.cluster_manager().to_string(),
            },
        };
        let metadata = ObjectMeta {
            name: Some(desired.name.clone()),
            namespace: Some(desired.namespace.clone()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                ANNOTATION_SOURCE_OBJECT.to_string(),
                key.to_string(),
            )])),
            ..ObjectMeta::default()
        };
        let main = ClusterProfile {
            metadata: metadata.clone(),
            spec: spec.clone(),
            status: None,
        };
        let outcome = api
            .apply(&self.leader.applier, &main, current, true)
            .await
            .map_err(|err| error_problem("applying ClusterProfile", &err))?;
        self.leader.metrics.count_apply(outcome);
        let with_status = ClusterProfile {
            metadata: ObjectMeta {
                name: metadata.name,
                namespace: metadata.namespace,
                ..ObjectMeta::default()
            },
            spec,
            status: Some(desired.status.clone()),
        };
        let outcome = api
            .apply_status(&self.leader.applier, &with_status, current, true)
            .await
            .map_err(|err| error_problem("applying ClusterProfile status", &err))?;
        self.leader.metrics.count_apply(outcome);
        if outcome == ApplyOutcome::Applied {
            debug!(profile = %format!("{}/{}", desired.namespace, desired.name), "profile applied");
            if let Some(current) = current {
                self.announce_health_change(current, &desired.status);
            }
        }
        Ok(())
    }

    /// A flip of `ControlPlaneHealthy` is what a consumer's operator asks about first ("why did my
    /// deliveries to this cluster stop?"), so it gets an Event on the profile saying from what to
    /// what and why. Only a written change announces: resyncs stay silent.
    fn announce_health_change(&self, current: &ClusterProfile, desired: &ClusterProfileStatus) {
        let status_of = |condition: Option<&Condition>| {
            condition
                .map_or("Unknown", |c| c.status.as_str())
                .to_string()
        };
        let before = status_of(
            current
                .status
                .as_ref()
                .and_then(|s| s.condition(CONDITION_CONTROL_PLANE_HEALTHY)),
        );
        let Some(after) = desired.condition(CONDITION_CONTROL_PLANE_HEALTHY) else {
            return;
        };
        if before == after.status {
            return;
        }
        let note = format!(
            "ControlPlaneHealthy {before} -> {} ({}: {})",
            after.status, after.reason, after.message
        );
        let reference = object_reference(current);
        if after.status == "True" {
            self.leader
                .events
                .normal(&reference, "ControlPlaneHealthy", "Project", &note);
        } else {
            self.leader
                .events
                .warn(&reference, "ControlPlaneUnhealthy", "Project", &note);
        }
    }

    pub(super) async fn ensure_companion(
        &self,
        companion: &Companion,
        key: &str,
    ) -> Result<(), Problem> {
        let resource = &companion.resource;
        let Some(CompanionStore { store, .. }) =
            self.companions.iter().find(|c| &c.resource == resource)
        else {
            return Err(Problem::new(
                Category::Config,
                format!(
                    "companion kind {} is not declared by the adapter",
                    resource.kind
                ),
            ));
        };
        let mut object = companion.object.clone();
        object.types = Some(kube::core::TypeMeta {
            api_version: resource.api_version.clone(),
            kind: resource.kind.clone(),
        });
        object
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(LABEL_SOURCE.to_string(), self.source.name().to_string());
        object
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(ANNOTATION_SOURCE_OBJECT.to_string(), key.to_string());
        let namespace = object.namespace();
        let api: Api<DynamicObject> = match &namespace {
            Some(ns) => Api::namespaced_with(self.leader.client.clone(), ns, resource),
            None => Api::all_with(self.leader.client.clone(), resource),
        };
        let mut reference =
            ObjectRef::<DynamicObject>::new_with(&object.name_any(), resource.clone());
        if let Some(ns) = &namespace {
            reference = reference.within(ns);
        }
        let mut current = store.get(&reference);
        if current.is_none()
            && let Ok(Some(other)) = api.get_opt(&object.name_any()).await
        {
            if !self.is_ours(&other.metadata) {
                return Err(Problem::new(
                    Category::Conflict,
                    format!(
                        "{} {} already exists and was not created by {}; it is left untouched",
                        resource.kind,
                        object.name_any(),
                        self.source.name()
                    ),
                ));
            }
            // Ours, not in the cache yet (just started): compare with it, write only a change.
            current = Some(std::sync::Arc::new(other));
        }
        let outcome = self
            .leader
            .applier
            .apply(&api, &object, current.as_deref(), true)
            .await
            .map_err(|err| error_problem(&format!("applying {}", resource.kind), &err))?;
        self.leader.metrics.count_apply(outcome);
        Ok(())
    }

    /// Publish problems that are new for this object as Events, log lines and counts: a problem
    /// that persists is reported once, not on every resync (no Event writes in steady state, and
    /// `problems_total` counts occurrences rather than reconciles).
    pub(super) fn report(&self, native: &S::Native, key: &str, problems: Vec<Problem>) {
        let current: BTreeSet<Problem> = problems.into_iter().collect();
        // A healthy object keeps no entry: at fleet size empty sets would cost memory per object.
        let previous = self
            .reported
            .lock()
            .map(|mut reported| {
                if current.is_empty() {
                    reported.remove(key)
                } else {
                    reported.insert(key.to_string(), current.clone())
                }
            })
            .unwrap_or_default()
            .unwrap_or_default();
        let reference = object_reference(native);
        for problem in current.difference(&previous) {
            self.leader.metrics.count_problem(problem.category.as_str());
            self.leader.events.warn(
                &reference,
                problem.category.event_reason(),
                "Project",
                &problem.message,
            );
        }
    }
}

fn error_problem(action: &str, err: &Error) -> Problem {
    Problem::new(err.category(), format!("{action}: {err}"))
}

fn now() -> k8s_openapi::jiff::Timestamp {
    // Second precision: that is what the API server stores, so recomputed values compare equal.
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now)
}
