//! The source engine: generic over a cluster manager's native kind (OCM `ManagedCluster`, CAPI
//! `Cluster`, ...). An adapter supplies a pure `project` function (native object + observations →
//! desired profiles) and, where it needs them, an `observe` step and extra watches; the engine does
//! the rest:
//!
//! - refuses at start a cluster manager name that ClusterProfile `v1alpha2` would reject, whatever
//!   version the hub serves;
//! - picks by discovery at start the ClusterProfile version to speak: `v1alpha2` where served,
//!   else `v1alpha1` (see [`crate::profile_api`]);
//! - watches the native kind (label selector, namespace) and our own profiles;
//! - server-side-applies metadata/spec and then status of each desired profile, skipping writes
//!   when nothing changed;
//! - never adopts, overwrites or deletes a profile it did not create (marked by the label
//!   [`LABEL_SOURCE`]): a same-named profile of someone else is reported and skipped;
//! - deletes our profiles whose source object is gone, deselected or no longer projects them (on
//!   the delete event, and by a sweep at start and on every resync), with no finalizers on the
//!   native objects;
//! - keeps "companion" hub objects (e.g. OCM ManagedServiceAccount/ManifestWork) alive and
//!   garbage-collected the same way;
//! - reports per-object problems as Events (only when the set of problems changes, so a steady
//!   fleet stays quiet), log lines and metrics with a bounded category.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, DynamicObject, ObjectMeta, Preconditions};
use kube::core::ApiResource;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

use crate::apply::ApplyOutcome;
use crate::error::{Category, Error, kube_category};
use crate::index::Index;
use crate::profile::{
    ClusterManager, ClusterProfile, ClusterProfileSpec, ClusterProfileStatus, GROUP,
    LABEL_CLUSTER_MANAGER, v1alpha2,
};
use crate::profile_api::{ProfileApi, ProfileVersion};
use crate::retry::Retries;
use crate::runtime::{LeaderContext, Metrics};

/// Label on every object a source adapter creates: the adapter's name. Only objects carrying it
/// are ever updated or deleted by that adapter.
pub const LABEL_SOURCE: &str = "inventory-bridge.io/source";
/// Annotation naming the native object a profile or companion was projected from
/// (`<namespace>/<name>`, or `<name>` for cluster-scoped kinds).
pub const ANNOTATION_SOURCE_OBJECT: &str = "inventory-bridge.io/source-object";

/// Longest wait before retrying an object whose writes failed or whose reconcile erred: retries
/// back off per object (2 s, 4 s, ... with jitter, see [`crate::retry`]) up to this, so a
/// fleet-wide 403 or a missing CRD costs less and less instead of a constant load.
const MAX_RETRY: Duration = Duration::from_secs(300);

/// Flags every source adapter shares.
#[derive(Clone, Debug, clap::Args)]
pub struct SourceArgs {
    /// Label selector choosing which native cluster objects to project (default: all).
    #[arg(long, env = "IB_CLUSTER_SELECTOR")]
    pub cluster_selector: Option<String>,
    /// Seconds between full resyncs (re-projection of every object and a sweep of orphans).
    #[arg(long, env = "IB_RESYNC_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(10..))]
    pub resync_seconds: u64,
    /// Objects reconciled in parallel.
    #[arg(long, env = "IB_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
}

/// One profile a projection wants to exist.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DesiredProfile {
    /// Inventory namespace.
    pub namespace: String,
    /// Profile name (unique within the inventory).
    pub name: String,
    /// `spec.displayName`.
    pub display_name: Option<String>,
    /// Labels from the projection; the engine adds [`LABEL_CLUSTER_MANAGER`] and [`LABEL_SOURCE`].
    pub labels: BTreeMap<String, String>,
    /// The whole status we publish.
    pub status: ClusterProfileStatus,
}

/// A hub object kept alongside a source object (created, updated and garbage-collected with it).
#[derive(Clone, Debug)]
pub struct Companion {
    /// Its kind; must be one of the source's [`Source::companion_kinds`].
    pub resource: ApiResource,
    /// The object (name and namespace set; `apiVersion`/`kind` are filled in by the engine).
    pub object: DynamicObject,
}

/// A problem with one native object, reported as an Event on it, a log line and a metric.
/// The message must never contain a secret.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// Bounded category (metric label, Event reason).
    pub category: Category,
    /// What is wrong and what was done about it.
    pub message: String,
}

impl Problem {
    /// A problem with the source object's content.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            category: Category::InvalidInput,
            message: message.into(),
        }
    }

    /// A problem of the given category.
    pub fn new(category: Category, message: impl Into<String>) -> Self {
        Self {
            category,
            message: message.into(),
        }
    }
}

/// What `project` returns for one native object.
#[derive(Clone, Debug, Default)]
pub struct Projection {
    /// Profiles that must exist for it (empty: it is not selected, all its profiles go).
    pub profiles: Vec<DesiredProfile>,
    /// Companion hub objects that must exist for it.
    pub companions: Vec<Companion>,
    /// Non-fatal problems (skipped labels or properties, fallbacks taken).
    pub problems: Vec<Problem>,
    /// Re-project after this long even without a change (e.g. to retry a member read).
    pub requeue_after: Option<Duration>,
}

/// What the engine observed for `project`, besides the native object itself.
pub struct Observed<'a, X> {
    /// Profiles this adapter currently has for the object (to keep timestamps stable).
    pub existing: Vec<&'a ClusterProfile>,
    /// The adapter's own observations (from [`Source::observe`]).
    pub extra: X,
    /// The time to stamp new observations with.
    pub now: Time,
}

impl<X> Observed<'_, X> {
    /// The existing profile `namespace/name`, if this adapter has it.
    pub fn existing_profile(&self, namespace: &str, name: &str) -> Option<&ClusterProfile> {
        self.existing
            .iter()
            .copied()
            .find(|p| p.namespace().as_deref() == Some(namespace) && p.name_any() == name)
    }

    /// The existing status of `namespace/name` (default when there is none).
    pub fn existing_status(&self, namespace: &str, name: &str) -> ClusterProfileStatus {
        self.existing_profile(namespace, name)
            .and_then(|p| p.status.clone())
            .unwrap_or_default()
    }
}

/// A cluster manager's native kind, projected into ClusterProfiles.
pub trait Source: Send + Sync + 'static {
    /// The native kind (`ManagedCluster`, `Cluster`, ...).
    type Native: Resource<DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize
        + Send
        + Sync
        + 'static;
    /// What [`Source::observe`] gathers (other hub objects, member reads).
    type Extra: Send + Sync;

    /// Adapter name: field manager, value of [`LABEL_SOURCE`], Event reporter.
    fn name(&self) -> &'static str;

    /// `spec.clusterManager.name` and the `x-k8s.io/cluster-manager` label.
    fn cluster_manager(&self) -> &str;

    /// Kinds of companion objects this source keeps (watched by [`LABEL_SOURCE`]).
    fn companion_kinds(&self) -> Vec<ApiResource> {
        Vec::new()
    }

    /// Gather what `project` needs besides the native object (I/O allowed, ideally from caches).
    /// An error leaves the object's profiles as they are and retries with backoff.
    fn observe(
        &self,
        client: &Client,
        native: &Self::Native,
    ) -> impl Future<Output = Result<Self::Extra, Problem>> + Send;

    /// The pure mapping. An error leaves the object's existing profiles untouched.
    fn project(
        &self,
        native: &Self::Native,
        observed: &Observed<'_, Self::Extra>,
    ) -> Result<Projection, Problem>;

    /// The API of the native kind, in one namespace when asked (namespaced kinds only) or all.
    fn native_api(&self, client: Client, namespace: Option<&str>) -> Api<Self::Native> {
        let _ = namespace;
        Api::all(client)
    }

    /// Add secondary watches (e.g. Secrets by label) that re-reconcile native objects.
    fn watches(&self, controller: Controller<Self::Native>) -> Controller<Self::Native> {
        controller
    }
}

/// Where the engine watches natives.
#[derive(Clone, Debug)]
pub struct SourceSettings {
    /// Watch one namespace of a namespaced kind (default: all).
    pub watch_namespace: Option<String>,
    /// From [`SourceArgs`].
    pub args: SourceArgs,
}

/// Metrics of the source engine; register them before the runtime starts.
#[derive(Clone, Debug, Default)]
pub struct SourceMetrics {
    profiles: Gauge,
}

impl SourceMetrics {
    /// Register the source metrics in `metrics`.
    pub fn register(metrics: &mut Metrics) -> Self {
        let source = Self::default();
        metrics.registry_mut().register(
            "source_profiles",
            "ClusterProfiles this source adapter currently manages",
            source.profiles.clone(),
        );
        source
    }
}

/// Refuse a cluster manager name (given by `flag`) that ClusterProfile `v1alpha2` would reject:
/// whatever version the hub serves, since the `x-k8s.io/cluster-manager` label must carry it too
/// and a profile created with it could never be written through `v1alpha2`.
pub fn check_cluster_manager(flag: &str, name: &str) -> Result<(), String> {
    v1alpha2::validate_cluster_manager_name(name).map_err(|err| {
        format!(
            "{flag} {name:?} is refused: it {err}. spec.clusterManager.name (and the {LABEL_CLUSTER_MANAGER} label) must be a label value of 1 to 63 characters, as ClusterProfile v1alpha2 validates it"
        )
    })
}

/// The key of a native object, as stored in [`ANNOTATION_SOURCE_OBJECT`].
pub fn source_key<K: Resource>(native: &K) -> String {
    let name = native.meta().name.clone().unwrap_or_default();
    match native.meta().namespace.as_deref() {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name,
    }
}

fn object_ref_from_key<K: Resource<DynamicType = ()>>(key: &str) -> ObjectRef<K> {
    match key.split_once('/') {
        Some((namespace, name)) => ObjectRef::new(name).within(namespace),
        None => ObjectRef::new(key),
    }
}

fn source_object_of(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_SOURCE_OBJECT))
        .map(String::as_str)
}

fn is_ours(meta: &ObjectMeta, source: &str) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(LABEL_SOURCE))
        .map(String::as_str)
        == Some(source)
}

/// The index keys of one of our objects: its source object (none for others' objects).
fn source_keys(meta: &ObjectMeta, source: &str) -> Vec<String> {
    if !is_ours(meta, source) {
        return Vec::new();
    }
    source_object_of(meta)
        .map(str::to_string)
        .into_iter()
        .collect()
}

/// Only our own server-side-apply records are read (the apply helper compares against them to
/// skip no-op writes); other managers' records can be as large as the object itself.
fn keep_own_managed_fields(meta: &mut ObjectMeta, field_manager: &str) {
    if let Some(entries) = meta.managed_fields.as_mut() {
        entries.retain(|entry| {
            entry.manager.as_deref() == Some(field_manager)
                && entry.operation.as_deref() == Some("Apply")
        });
    }
}

/// Keep of a cached profile only what the engine reads. Ours: everything but other managers'
/// records. Others': name, labels and uid, which prove it exists and say whose it is.
fn trim_profile(profile: &mut ClusterProfile, source: &str, field_manager: &str) {
    if is_ours(&profile.metadata, source) {
        keep_own_managed_fields(&mut profile.metadata, field_manager);
        return;
    }
    let meta = std::mem::take(&mut profile.metadata);
    profile.metadata = ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        labels: meta.labels,
        ..ObjectMeta::default()
    };
    profile.status = None;
}

/// A companion's status (e.g. a ManifestWork's per-resource feedback) is never read.
fn trim_companion(object: &mut DynamicObject, field_manager: &str) {
    keep_own_managed_fields(&mut object.metadata, field_manager);
    if let Some(data) = object.data.as_object_mut() {
        data.remove("status");
    }
}

fn object_reference<K: Resource<DynamicType = ()>>(native: &K) -> ObjectReference {
    native.object_ref(&())
}

/// A companion kind: its cache and our objects of it by source object.
struct CompanionStore {
    resource: ApiResource,
    store: Store<DynamicObject>,
    by_source: Index<DynamicObject>,
}

struct Engine<S: Source> {
    source: Arc<S>,
    leader: LeaderContext,
    metrics: SourceMetrics,
    natives: Store<S::Native>,
    /// Every ClusterProfile of the hub: ours whole, others reduced to what proves they exist.
    profiles: Store<ClusterProfile>,
    /// Our profiles by source object; once ready, absence from it (and the store) is proof.
    profiles_by_source: Index<ClusterProfile>,
    /// ClusterProfiles through the version chosen at start.
    profile_api: ProfileApi,
    companions: Vec<CompanionStore>,
    resync: Duration,
    /// Consecutive failures per source object (failed writes or reconcile errors).
    retries: Retries,
    /// Problems last reported per object: Events go out only when this set changes.
    reported: Mutex<HashMap<String, BTreeSet<Problem>>>,
}

/// Run the source engine until `leader.stop` fires.
pub async fn run_source<S: Source>(
    source: S,
    settings: SourceSettings,
    metrics: SourceMetrics,
    leader: LeaderContext,
) -> crate::Result<()> {
    let source = Arc::new(source);
    let client = leader.client.clone();
    let name = source.name();
    check_cluster_manager("the cluster manager name", source.cluster_manager())
        .map_err(Error::Config)?;
    let Some(version) = ProfileVersion::discover_for_writing(&client, &leader.stop).await else {
        return Ok(());
    };
    info!(adapter = name, version = %version, "writing ClusterProfiles as {GROUP}/{version}");
    let profile_api = ProfileApi::new(client.clone(), version);

    let mut native_config = watcher::Config::default().page_size(500);
    if let Some(selector) = &settings.args.cluster_selector {
        native_config = native_config.labels(selector);
    }
    let natives_api = source.native_api(client.clone(), settings.watch_namespace.as_deref());
    let (natives, native_writer) = reflector::store();
    let (deleted_tx, mut deleted_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let profile_deleted_tx = deleted_tx.clone();
    let progress = leader.metrics.clone();
    let native_stream = watcher(natives_api, native_config)
        .default_backoff()
        // managedFields of foreign objects are never needed and bloat the cache.
        .modify(|native: &mut S::Native| native.meta_mut().managed_fields = None)
        .reflect(native_writer)
        .inspect(move |event| {
            // A deleted or deselected object is never reconciled again (it is gone from the
            // store), so its profiles are swept here, at once.
            if let Ok(watcher::Event::Delete(native)) = event {
                let _ = deleted_tx.send(source_key(native));
            }
            // Any event (a relist included) shows the watch works: it ends an error streak.
            if event.is_ok() {
                progress.watch_progress();
            }
        })
        .touched_objects();

    let ours = watcher::Config::default().labels(&format!("{LABEL_SOURCE}={name}"));
    // Every profile, not only ours: a profile absent from a synced cache is then known to be
    // absent on the hub, so a new cluster's profile is applied without a GET first.
    let (profiles, profile_writer) = reflector::store();
    let profiles_by_source =
        Index::new((), move |p: &ClusterProfile| source_keys(&p.metadata, name));
    let index = profiles_by_source.clone();
    let manager = leader.applier.field_manager().to_string();
    let profile_manager = manager.clone();
    let profile_stream = profile_api
        .watch(watcher::Config::default())
        .default_backoff()
        .modify(move |profile: &mut ClusterProfile| trim_profile(profile, name, &profile_manager))
        .reflect(profile_writer)
        .inspect(move |event| {
            index.observe(event);
            // A profile really gone (finalizers done) may release its source's companions.
            if let Ok(watcher::Event::Delete(profile)) = event
                && let Some(key) = source_object_of(&profile.metadata)
            {
                let _ = profile_deleted_tx.send(key.to_string());
            }
        })
        .touched_objects();

    let mut controller = Controller::for_stream(native_stream, natives.clone())
        .with_config(
            ControllerConfig::default()
                .concurrency(settings.args.concurrency)
                .debounce(Duration::from_millis(100)),
        )
        .watches_stream(profile_stream, |profile: ClusterProfile| {
            source_object_of(&profile.metadata).map(object_ref_from_key::<S::Native>)
        });

    let mut companions = Vec::new();
    for resource in source.companion_kinds() {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let writer = reflector::store::Writer::new(resource.clone());
        let store = writer.as_reader();
        let by_source = Index::new(resource.clone(), move |o: &DynamicObject| {
            source_keys(&o.metadata, name)
        });
        let index = by_source.clone();
        let companion_manager = manager.clone();
        let stream = watcher(api, ours.clone())
            .default_backoff()
            .modify(move |object: &mut DynamicObject| trim_companion(object, &companion_manager))
            .reflect(writer)
            .inspect(move |event| index.observe(event))
            .touched_objects();
        controller = controller.watches_stream_with(
            stream,
            |companion: DynamicObject| {
                source_object_of(&companion.metadata).map(object_ref_from_key::<S::Native>)
            },
            resource.clone(),
        );
        companions.push(CompanionStore {
            resource,
            store,
            by_source,
        });
    }
    let controller = source.watches(controller);

    let engine = Arc::new(Engine {
        source,
        leader: leader.clone(),
        metrics,
        natives,
        profiles,
        profiles_by_source,
        profile_api,
        companions,
        resync: Duration::from_secs(settings.args.resync_seconds),
        retries: Retries::new(MAX_RETRY),
        reported: Mutex::default(),
    });

    let stop = leader.stop.clone();
    let observer = leader.metrics.clone();
    let ended = leader.metrics.clone();
    let stopping = leader.stop.clone();
    let controller_run = controller
        .graceful_shutdown_on(async move { stop.cancelled().await })
        .run(reconcile::<S>, error_policy::<S>, engine.clone())
        .for_each(move |result| {
            // Watch errors: warned, counted, and fed to /healthz.
            observer.observe_controller_event(&result);
            futures::future::ready(())
        })
        .map(move |()| {
            // The controller only ends when told to; otherwise nothing reconciles any more.
            if !stopping.is_cancelled() {
                ended.controller_ended("source");
            }
        });

    let sweeper_engine = engine.clone();
    let stop = leader.stop.clone();
    let sweeper = async move {
        let engine = sweeper_engine;
        // Sweeping before both caches hold a full list would delete everything.
        if engine.natives.wait_until_ready().await.is_err()
            || engine.profiles.wait_until_ready().await.is_err()
        {
            return;
        }
        for companion in &engine.companions {
            if companion.store.wait_until_ready().await.is_err() {
                return;
            }
        }
        engine.sweep_orphans().await;
        engine.leader.readiness.mark_synced();
        info!(
            adapter = engine.source.name(),
            "caches synced; sweeping orphans every resync"
        );
        let mut resync = tokio::time::interval(engine.resync);
        resync.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(key) = deleted_rx.recv() => engine.sweep_key(&key).await,
                _ = resync.tick() => engine.sweep_orphans().await,
            }
        }
    };
    tokio::join!(controller_run, sweeper);
    Ok(())
}

async fn reconcile<S: Source>(
    native: Arc<S::Native>,
    engine: Arc<Engine<S>>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let key = source_key(native.as_ref());
    let outcome = engine.reconcile_one(native.as_ref(), &key).await;
    let seconds = started.elapsed().as_secs_f64();
    match outcome {
        Ok(requeue) => {
            engine.leader.metrics.observe_reconcile(Ok(()), seconds);
            Ok(Action::requeue(requeue.unwrap_or(engine.resync)))
        }
        Err(err) => {
            engine
                .leader
                .metrics
                .observe_reconcile(Err(err.category()), seconds);
            Err(err)
        }
    }
}

fn error_policy<S: Source>(native: Arc<S::Native>, err: &Error, engine: Arc<Engine<S>>) -> Action {
    let key = source_key(native.as_ref());
    // 2s, 4s, ... capped at 5 minutes, with jitter: never a hot loop, never a long stall after a blip.
    let delay = engine.retries.failed(&key);
    warn!(object = %key, category = %err.category(), error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

impl<S: Source> Engine<S> {
    fn our_profiles_of(&self, key: &str) -> Vec<Arc<ClusterProfile>> {
        self.profiles_by_source.get(key, &self.profiles)
    }

    fn is_ours(&self, meta: &ObjectMeta) -> bool {
        is_ours(meta, self.source.name())
    }

    fn publish_profile_count(&self) {
        self.metrics
            .profiles
            .set(i64::try_from(self.profiles_by_source.len()).unwrap_or(i64::MAX));
    }

    /// Converge one native object; returns when to look again.
    async fn reconcile_one(
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
                    self.report(native, key, vec![problem.clone()]).await;
                    return Err(Error::Classified {
                        category: problem.category,
                        message: problem.message,
                    });
                }
            };
            let observed = Observed {
                existing: existing.iter().map(Arc::as_ref).collect(),
                extra,
                now: Time(now()),
            };
            match self.source.project(native, &observed) {
                Ok(projection) => projection,
                Err(problem) => {
                    self.report(native, key, vec![problem]).await;
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
        self.report(native, key, problems).await;
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

    async fn ensure_profile(&self, desired: &DesiredProfile, key: &str) -> Result<(), Problem> {
        let api = &self.profile_api;
        let reference = ObjectRef::<ClusterProfile>::new(&desired.name).within(&desired.namespace);
        let foreign = |other: &ClusterProfile| {
            let manager = other
                .labels()
                .get(LABEL_CLUSTER_MANAGER)
                .cloned()
                .unwrap_or_else(|| "an unknown manager".to_string());
            Problem::new(
                Category::Conflict,
                format!(
                    "ClusterProfile {}/{} already exists and belongs to {manager}; it is left untouched and this cluster is skipped",
                    desired.namespace, desired.name
                ),
            )
        };
        let current = match self.profiles.get(&reference) {
            Some(other) if !self.is_ours(&other.metadata) => return Err(foreign(&other)),
            Some(ours) => Some(ours),
            // The cache holds every profile of the hub once synced: absent there is absent
            // (a same-named profile created since is refused by the apply's field conflicts or
            // found on the next pass).
            None if self.profiles_by_source.is_ready() => None,
            // Not synced yet: it may exist and belong to someone else.
            None => match api.get_opt(&desired.namespace, &desired.name).await {
                Ok(Some(other)) if !self.is_ours(&other.metadata) => return Err(foreign(&other)),
                Ok(_) => None,
                Err(err) => return Err(kube_problem("reading ClusterProfile", &err)),
            },
        };
        let current = current.as_deref();
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
        }
        Ok(())
    }

    async fn ensure_companion(&self, companion: &Companion, key: &str) -> Result<(), Problem> {
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
        let current = store.get(&reference);
        if current.is_none()
            && let Ok(Some(other)) = api.get_opt(&object.name_any()).await
            && !self.is_ours(&other.metadata)
        {
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
        let outcome = self
            .leader
            .applier
            .apply(&api, &object, current.as_deref(), true)
            .await
            .map_err(|err| error_problem(&format!("applying {}", resource.kind), &err))?;
        self.leader.metrics.count_apply(outcome);
        Ok(())
    }

    async fn delete_profile(&self, profile: &ClusterProfile) -> Result<(), Error> {
        let namespace = profile.namespace().unwrap_or_default();
        let name = profile.name_any();
        let params = DeleteParams {
            // Only the object we saw: never a same-named profile someone created since.
            preconditions: Some(Preconditions {
                uid: profile.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.profile_api.delete(&namespace, &name, &params).await {
            Ok(_) => {
                info!(profile = %format!("{namespace}/{name}"), "deleted ClusterProfile whose source is gone or deselected");
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    async fn delete_companion(
        &self,
        resource: &ApiResource,
        object: &DynamicObject,
    ) -> Result<(), Error> {
        let api: Api<DynamicObject> = match object.namespace() {
            Some(ns) => Api::namespaced_with(self.leader.client.clone(), &ns, resource),
            None => Api::all_with(self.leader.client.clone(), resource),
        };
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: object.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&object.name_any(), &params).await {
            Ok(_) => {
                info!(kind = %resource.kind, object = %object.name_any(), "deleted companion whose source is gone or deselected");
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// Delete everything of ours projected from `key` if that object is no longer watched.
    async fn sweep_key(&self, key: &str) {
        if self
            .natives
            .get(&object_ref_from_key::<S::Native>(key))
            .is_some()
        {
            return;
        }
        let remaining = self.our_profiles_of(key);
        for profile in &remaining {
            if let Err(err) = self.delete_profile(profile).await {
                warn!(profile = %profile.name_any(), category = %err.category(), error = %err, "cannot delete orphaned profile; will retry on the next sweep");
            }
        }
        if !remaining.is_empty() {
            // Companions go when the last profile is gone (its delete event sweeps again).
            return;
        }
        for companion in &self.companions {
            for object in companion.by_source.get(key, &companion.store) {
                if let Err(err) = self.delete_companion(&companion.resource, &object).await {
                    warn!(kind = %companion.resource.kind, category = %err.category(), error = %err, "cannot delete orphaned companion; will retry on the next sweep");
                }
            }
        }
        if let Ok(mut reported) = self.reported.lock() {
            reported.remove(key);
        }
        self.retries.succeeded(key);
    }

    /// Sweep every object of ours whose source object is gone.
    async fn sweep_orphans(&self) {
        let mut keys: BTreeSet<String> = self
            .profiles
            .state()
            .iter()
            .filter(|p| self.is_ours(&p.metadata))
            .filter_map(|p| source_object_of(&p.metadata).map(str::to_string))
            .collect();
        for companion in &self.companions {
            keys.extend(
                companion
                    .store
                    .state()
                    .iter()
                    .filter(|o| self.is_ours(&o.metadata))
                    .filter_map(|o| source_object_of(&o.metadata).map(str::to_string)),
            );
        }
        // Profiles of ours without the annotation cannot be traced to a source: leave them and say so.
        for profile in self.profiles.state() {
            if self.is_ours(&profile.metadata) && source_object_of(&profile.metadata).is_none() {
                warn!(profile = %profile.name_any(), "profile labelled as ours has no source annotation; left untouched");
            }
        }
        for key in keys {
            self.sweep_key(&key).await;
        }
        self.publish_profile_count();
    }

    /// Publish problems that are new for this object as Events, log lines and counts: a problem
    /// that persists is reported once, not on every resync (no Event writes in steady state, and
    /// `problems_total` counts occurrences rather than reconciles).
    async fn report(&self, native: &S::Native, key: &str, problems: Vec<Problem>) {
        let current: BTreeSet<Problem> = problems.into_iter().collect();
        let previous = self
            .reported
            .lock()
            .map(|mut reported| reported.insert(key.to_string(), current.clone()))
            .unwrap_or_default()
            .unwrap_or_default();
        let reference = object_reference(native);
        for problem in current.difference(&previous) {
            self.leader.metrics.count_problem(problem.category.as_str());
            self.leader
                .events
                .warn(
                    &reference,
                    problem.category.event_reason(),
                    "Project",
                    &problem.message,
                )
                .await;
        }
    }
}

fn kube_problem(action: &str, err: &kube::Error) -> Problem {
    Problem::new(kube_category(err), format!("{action}: {err}"))
}

fn error_problem(action: &str, err: &Error) -> Problem {
    Problem::new(err.category(), format!("{action}: {err}"))
}

fn now() -> k8s_openapi::jiff::Timestamp {
    // Second precision: that is what the API server stores, so recomputed values compare equal.
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_to_object_refs() {
        let namespaced = object_ref_from_key::<k8s_openapi::api::core::v1::ConfigMap>("ns/name");
        assert_eq!(namespaced.name, "name");
        assert_eq!(namespaced.namespace.as_deref(), Some("ns"));
        let cluster = object_ref_from_key::<k8s_openapi::api::core::v1::Namespace>("name");
        assert_eq!(cluster.namespace, None);
    }
}
