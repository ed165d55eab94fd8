//! Periodic work and the way out: the orphan sweep (hub objects whose profile is gone, with
//! their member identities), gauges, and `--release-finalizers` (uninstalling the sink).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams};
use tracing::{info, warn};

use super::{Engine, Key, Phase, delete_dynamic};
use crate::cache::list_metadata_paged;
use crate::error::Result;
use crate::runtime::sleep_or_stop;
use crate::sink::record::Record;
use crate::sink::{ANNOTATION_REGISTRATION, LABEL_PROFILE_UID, Sink};

impl<S: Sink> Engine<S> {
    /// Where this instance's hub objects may be.
    pub(super) fn sweep_namespaces(&self) -> Vec<Option<String>> {
        if let Some(namespaces) = self.sink.hub_namespaces() {
            return namespaces.into_iter().map(Some).collect();
        }
        match &self.options.target_namespace {
            Some(target) => vec![Some(target.clone())],
            None => self.scopes(),
        }
    }

    /// Remove our hub objects whose profile is gone or no longer selected — first revoking the
    /// member identity their record names (unless another registration still uses it) — and
    /// our finalizer from profiles no longer selected (they would otherwise wedge on deletion).
    pub(super) async fn sweep(&self) -> Result<()> {
        // Hub objects are listed before profiles: an object created after this list cannot be
        // mistaken for an orphan, because its profile then shows up in the later profile list.
        // Metadata only (labels and the record annotation are all a sweep reads): a full list of
        // every published Secret at each start was the largest transient of a restarted sink.
        let mut hub_objects = Vec::new();
        for resource in S::hub_kinds() {
            for namespace in self.sweep_namespaces() {
                let api: Api<DynamicObject> = match &namespace {
                    Some(ns) => Api::namespaced_with(self.hub.clone(), ns, &resource),
                    None => Api::all_with(self.hub.clone(), &resource),
                };
                match list_metadata_paged(
                    &api,
                    &ListParams::default().labels(&self.instance_selector()),
                )
                .await
                {
                    Ok(items) => {
                        hub_objects.extend(items.into_iter().map(|o| (resource.clone(), o)))
                    }
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(err) => return Err(err.into()),
                }
            }
        }
        let mut selected: HashSet<String> = HashSet::new();
        let mut selected_keys: HashSet<Key> = HashSet::new();
        let mut unselected_with_finalizer = Vec::new();
        for scope in self.scopes() {
            let api: Api<DynamicObject> = match &scope {
                Some(ns) => Api::namespaced_with(self.hub.clone(), ns, &self.profiles),
                None => Api::all_with(self.hub.clone(), &self.profiles),
            };
            let mut params = ListParams::default();
            if let Some(selector) = &self.options.profile_selector {
                params = params.labels(selector);
            }
            let matching = list_metadata_paged(&api, &params).await?;
            selected.extend(matching.iter().filter_map(|p| p.metadata.uid.clone()));
            selected_keys.extend(matching.iter().map(|p| {
                (
                    p.metadata.namespace.clone().unwrap_or_default(),
                    p.metadata.name.clone().unwrap_or_default(),
                )
            }));
            if self.options.profile_selector.is_some() {
                let everything = list_metadata_paged(&api, &ListParams::default()).await?;
                unselected_with_finalizer.extend(everything.into_iter().filter(|p| {
                    p.finalizers().contains(&self.finalizer)
                        && !p.uid().is_some_and(|uid| selected.contains(&uid))
                }));
            }
        }
        let mut orphan_uids: HashSet<String> = HashSet::new();
        let mut blocked: HashSet<String> = HashSet::new();
        for (_, object) in &hub_objects {
            let uid = object
                .labels()
                .get(LABEL_PROFILE_UID)
                .cloned()
                .unwrap_or_default();
            if selected.contains(&uid) {
                continue;
            }
            orphan_uids.insert(uid.clone());
            let Some(record) = object
                .annotations()
                .get(ANNOTATION_REGISTRATION)
                .and_then(|text| Record::from_annotation(text))
            else {
                continue;
            };
            if let Err(failure) = self.retire(&record, &uid).await {
                let first_seen = self
                    .orphans_seen
                    .lock()
                    .map(|mut seen| *seen.entry(uid.clone()).or_insert_with(Instant::now))
                    .unwrap_or_else(|_| Instant::now());
                if first_seen.elapsed() < self.options.cleanup_timeout {
                    warn!(error = %failure, "cannot revoke an orphan's member identity yet; keeping its record until the next sweep");
                    blocked.insert(uid);
                    continue;
                }
                self.metrics.count_problem("cleanup");
                warn!(error = %failure, "gave up revoking an orphan's member identity; its tokens stay valid until they expire");
            }
        }
        for (resource, object) in hub_objects {
            let uid = object
                .labels()
                .get(LABEL_PROFILE_UID)
                .cloned()
                .unwrap_or_default();
            if !orphan_uids.contains(&uid) || blocked.contains(&uid) {
                continue;
            }
            info!(
                kind = %resource.kind,
                object = %format!("{}/{}", object.namespace().unwrap_or_default(), object.name_any()),
                "deleting an orphan: its profile is gone or no longer selected"
            );
            if let Err(err) = delete_dynamic(&self.hub, &resource, &object).await {
                warn!(error = %err, "cannot delete an orphan; the next sweep retries");
                continue;
            }
            self.sink_metrics.count_cleanup("orphan");
        }
        if let Ok(mut seen) = self.orphans_seen.lock() {
            seen.retain(|uid, _| blocked.contains(uid));
        }
        for profile in unselected_with_finalizer {
            if let Err(failure) = self.apply_finalizer(&profile, false).await {
                warn!(error = %failure.message, "cannot remove our finalizer from an unselected profile");
            }
            self.forget(&super::key_of(&profile));
        }
        if let Ok(mut states) = self.states.lock() {
            // Forget profiles that are gone or no longer selected (memory stays bounded).
            states.retain(|key, _| selected_keys.contains(key));
        }
        Ok(())
    }

    /// Uninstall: every profile of the served inventories carrying our finalizer is released
    /// (identity revoked, hub objects deleted, finalizer removed), then the orphans; each step is
    /// bounded by the member timeout and reported, and the process then stops.
    pub(super) async fn release_all(
        &self,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<()> {
        let mut released = 0usize;
        let mut problems = 0usize;
        for scope in self.scopes() {
            let api: Api<DynamicObject> = match &scope {
                Some(ns) => Api::namespaced_with(self.hub.clone(), ns, &self.profiles),
                None => Api::all_with(self.hub.clone(), &self.profiles),
            };
            for profile in api.list(&ListParams::default()).await?.items {
                if stop.is_cancelled() {
                    return Ok(());
                }
                if !profile.finalizers().contains(&self.finalizer) {
                    continue;
                }
                let key = super::key_of(&profile);
                let uid = profile.uid().unwrap_or_default();
                let records = self.records_of(&key.0, &uid).await.unwrap_or_default();
                for (_, record) in records {
                    if let Err(failure) = self.retire(&record, &uid).await {
                        problems += 1;
                        self.metrics.count_problem("cleanup");
                        self.events
                            .warn(
                                &self.object_reference(&profile),
                                "MemberCleanupAbandoned",
                                "Release",
                                &format!(
                                    "released without revoking the member identity: {}; its tokens stay valid until they expire",
                                    failure.message
                                ),
                            );
                    }
                }
                let hub = self.delete_hub_objects(&key.0, &uid).await;
                let finalizer = self.apply_finalizer(&profile, false).await;
                if let Some(failure) = hub.err().or(finalizer.err()) {
                    problems += 1;
                    warn!(profile = %format!("{}/{}", key.0, key.1), error = %failure, "cannot release the profile completely");
                    continue;
                }
                released += 1;
            }
        }
        if let Err(err) = self.sweep().await {
            problems += 1;
            warn!(error = %err, "final orphan sweep failed");
        }
        info!(
            released,
            problems, "released every profile of the served inventories"
        );
        Ok(())
    }

    /// Recompute the state and group gauges; returns the earliest published expiry (for the
    /// expiry gauge) and the next instant a state flips by time alone (a token expiring).
    fn publish_gauges(&self) -> (Option<Timestamp>, Option<Timestamp>) {
        let now = Timestamp::now();
        let mut counts: HashMap<&'static str, i64> = HashMap::new();
        let mut earliest: Option<Timestamp> = None;
        let mut next_flip: Option<Timestamp> = None;
        if let Ok(states) = self.states.lock() {
            for state in states.values() {
                let valid = state
                    .registration
                    .as_ref()
                    .filter(|r| r.credential.expires_at > now);
                let label = match (state.phase, &state.registration, valid) {
                    (Phase::Suppressed, _, _) => Some("suppressed"),
                    (Phase::Registered, _, Some(_)) => Some("registered"),
                    (Phase::Registered | Phase::Failing | Phase::Pending, Some(_), None) => {
                        Some("expired")
                    }
                    (Phase::Failing, Some(_), Some(_)) => Some("stale"),
                    (Phase::Failing, None, _) => Some("failed"),
                    _ => None,
                };
                if let Some(label) = label {
                    *counts.entry(label).or_default() += 1;
                }
                if let Some(registration) = valid {
                    let expires = registration.credential.expires_at;
                    next_flip = Some(next_flip.map_or(expires, |t| t.min(expires)));
                    if state.phase != Phase::Suppressed {
                        earliest = Some(earliest.map_or(expires, |t| t.min(expires)));
                    }
                }
            }
        }
        let counts: Vec<(&'static str, i64)> = counts.into_iter().collect();
        self.sink_metrics.set_states(&counts);
        let groups = self.duplicate_groups();
        self.sink_metrics
            .set_groups(groups.unique, groups.duplicate, groups.ambiguous);
        (earliest, next_flip)
    }

    pub(super) async fn periodic(
        self: std::sync::Arc<Self>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut last_sweep = Instant::now();
        // Gauges are recomputed only when something they count changed or a token expired:
        // a quiet fleet costs nothing here, whatever its size.
        let mut computed: Option<u64> = None;
        let (mut earliest, mut next_flip) = (None, None);
        loop {
            let now = Timestamp::now();
            let generation = self.gauge_generation();
            if computed != Some(generation) || next_flip.is_some_and(|t: Timestamp| t <= now) {
                computed = Some(generation);
                (earliest, next_flip) = self.publish_gauges();
            }
            self.sink_metrics.set_earliest_expiry(
                earliest.map(|t: Timestamp| t.duration_since(now).as_secs_f64()),
            );
            if last_sweep.elapsed() >= self.options.resync {
                last_sweep = Instant::now();
                if let Err(err) = self.sweep().await {
                    warn!(error = %err, "orphan sweep failed; retrying at the next resync");
                }
            }
            if !sleep_or_stop(std::time::Duration::from_secs(2), &stop).await {
                return;
            }
        }
    }
}
