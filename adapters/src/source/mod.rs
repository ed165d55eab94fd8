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
//!
//! The lifecycle, one file each: [`run`] (watches, caches and indexes, the controller and the
//! sweeper), [`profiles`] (the compact book of the hub's profiles the engine reads), [`resync`] (every object re-checked once per period, paced), [`converge`]
//! (projection and apply of one source object's profiles and companions, problems as Events) and
//! [`cleanup`] (deletion of what a gone or deselected object left).

mod cleanup;
mod converge;
mod profiles;
mod resync;
mod run;

pub use run::run_source;

use profiles::ProfileBook;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DynamicObject, ObjectMeta};
use kube::core::ApiResource;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::apply::keep_own_apply_records;
use crate::error::Category;
use crate::index::Index;
use crate::profile::{ClusterProfile, ClusterProfileStatus, LABEL_CLUSTER_MANAGER, v1alpha2};
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
    /// Seconds between full resyncs: every object re-projected once per period (in equal shares
    /// every second, not all at once) and a sweep of orphans.
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
    /// Profiles this adapter currently has for the object, as cached: metadata, the cluster
    /// manager, and of the status the conditions (type, status, `lastTransitionTime`) and the
    /// properties, to keep values and timestamps stable.
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

    /// The one namespace every profile of this source goes to, when its flags fix one. Profiles
    /// are then watched there (every manager's: a same-named one is a conflict) and elsewhere only
    /// if ours (left by an earlier namespace, to be swept); a profile projected into any other
    /// namespace is refused. `None` (inventories that vary): every profile of the hub is watched.
    fn inventory_namespace(&self) -> Option<&str> {
        None
    }

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

    /// Drop from a native object, as it enters the cache, what neither `observe` nor `project`
    /// reads: the cache holds it for as long as the object exists, for every object of the fleet.
    /// The engine already drops `managedFields`, kubectl's last-applied copy, the resource
    /// version, the creation time and the generation.
    fn trim(&self, native: &mut Self::Native) {
        let _ = native;
    }

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

    /// Add secondary watches (e.g. Secrets by label) that re-reconcile native objects (see
    /// [`related_triggers`]; `metrics` counts their watch errors).
    fn watches(
        &self,
        controller: Controller<Self::Native>,
        metrics: &Arc<Metrics>,
    ) -> Controller<Self::Native> {
        let _ = metrics;
        controller
    }
}

/// The natives a watch of related objects (profiles, companions, a source's Secrets) asks to
/// reconcile, for `Controller::reconcile_on`. kube-runtime's `watches_stream` would queue each
/// request with the related object's whole reference (its API resource's five strings besides
/// name and namespace), and its scheduler keeps a pending request twice: at a cold start whose
/// 10,000 related objects all arrive at once that was megabytes of the peak. A failed watch is
/// counted here as the controller would count it (`/healthz`, the watch error metric).
pub fn related_triggers<O, K>(
    watch: impl Stream<Item = Result<O, watcher::Error>> + Send + 'static,
    metrics: Arc<Metrics>,
    native_of: impl Fn(O) -> Option<ObjectRef<K>> + Send + 'static,
) -> impl Stream<Item = ObjectRef<K>> + Send + 'static
where
    O: Send + 'static,
    K: Resource + 'static,
    K::DynamicType: Send,
{
    watch.filter_map(move |event| {
        let native = match event {
            Ok(object) => native_of(object),
            Err(err) => {
                metrics.watch_error(&err);
                None
            }
        };
        futures::future::ready(native)
    })
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

/// A companion's status (e.g. a ManifestWork's per-resource feedback) is never read.
fn trim_companion(object: &mut DynamicObject, field_manager: &str) {
    keep_own_apply_records(&mut object.metadata, field_manager);
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
    /// The ClusterProfiles the source may meet, ours by source object; once ready, absence in
    /// a namespace it holds whole is proof.
    profiles: Arc<ProfileBook>,
    /// ClusterProfiles through the version chosen at start.
    profile_api: ProfileApi,
    companions: Vec<CompanionStore>,
    resync: Duration,
    /// Consecutive failures per source object (failed writes or reconcile errors).
    retries: Retries,
    /// Problems last reported per object: Events go out only when this set changes.
    reported: Mutex<HashMap<String, BTreeSet<Problem>>>,
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

    #[tokio::test]
    async fn related_triggers_name_the_source_objects_and_count_watch_errors() {
        use k8s_openapi::api::core::v1::ConfigMap;
        let related = |name: &str, source: Option<&str>| ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: source
                    .map(|s| [(ANNOTATION_SOURCE_OBJECT.to_string(), s.to_string())].into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        let metrics = Arc::new(Metrics::new("test"));
        assert!(!metrics.watches_failing());
        let watch = futures::stream::iter(vec![
            Ok(related("a", Some("ns/one"))),
            Err(watcher::Error::NoResourceVersion),
            Ok(related("b", None)),
            Ok(related("c", Some("two"))),
        ]);
        let natives: Vec<ObjectRef<k8s_openapi::api::core::v1::Namespace>> =
            related_triggers(watch, metrics.clone(), |object: ConfigMap| {
                source_object_of(&object.metadata).map(object_ref_from_key)
            })
            .collect()
            .await;
        assert_eq!(
            natives,
            [ObjectRef::new("one").within("ns"), ObjectRef::new("two")],
            "an object that names no source triggers nothing"
        );
        assert!(metrics.watches_failing(), "the watch error was counted");
    }
}
