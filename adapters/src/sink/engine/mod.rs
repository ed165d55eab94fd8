//! The sink controller: one kube-runtime `Controller` per served inventory (or one for all
//! namespaces, when the operator says so), sharing one engine state; a periodic task publishes
//! gauges and sweeps orphans.
//!
//! The lifecycle of a registration, one file each:
//! - [`register`]: trust and duplicate checks, finalizer, render, apply;
//! - [`rotate`]: the credential — kept, adopted from what a previous process published, re-verified
//!   on schedule, or minted (first time, renewal, changed settings);
//! - [`revoke`]: deletion and retirement of an identity, from the recorded registration only,
//!   reference-counted across profiles that reach the same member identity;
//! - [`sweep`]: orphans, gauges, and the uninstall path (`--release-finalizers`).
//!
//! Failures never surface as reconcile errors: each is reported once per change (Event on the
//! profile, log line, metric category) and the profile is retried with its own exponential
//! backoff, so one broken profile or unreachable member never delays another.

mod register;
mod revoke;
mod rotate;
mod sweep;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::{debug, info, warn};

use super::published::{HubObjects, Lookup};
use super::record::Record;
use super::schedule::backoff;
use super::{
    ANNOTATION_PROFILE, LABEL_INSTANCE, LABEL_PROFILE_UID, MintedCredential, Sink, SinkConfig,
    SinkMetrics, SinkOptions,
};
use crate::access::Resolver;
use crate::cache::watch_config;
use crate::error::{Error, Result};
use crate::index::Index;
use crate::kubeconfig::{self, Endpoint};
use crate::member::ensured::EnsuredIdentities;
use crate::profile::{ClusterProfile, GROUP};
use crate::runtime::{EventRecorder, LeaderContext, Metrics, sleep_or_stop};

/// A profile's key: namespace and name.
type Key = (String, String);

/// Where a profile stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Phase {
    #[default]
    Pending,
    Registered,
    Failing,
    Suppressed,
}

/// The current registration of a profile: the credential it publishes and its record.
#[derive(Clone, Debug)]
struct Registration {
    credential: MintedCredential,
    record: Record,
    renew_at: Timestamp,
    /// When the published token is next checked with a SelfSubjectReview.
    next_verify: Timestamp,
}

#[derive(Debug, Default)]
struct ProfileState {
    uid: String,
    registration: Option<Registration>,
    /// Identities this profile no longer uses whose revocation failed: retried until done.
    retired: Vec<Record>,
    failures: u32,
    phase: Phase,
    /// The last problem reported (category and message), so a retry does not repeat its Event.
    reported: Option<(String, String)>,
    /// Non-fatal render problems already reported.
    reported_warnings: BTreeSet<String>,
}

/// When to try again after a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    /// Exponential backoff with jitter, per profile, capped at `--max-backoff`.
    Backoff,
    /// Only when the profile changes (nothing else can fix it).
    OnChange,
}

/// A per-profile failure: reported, then retried.
#[derive(Debug)]
struct Failure {
    category: &'static str,
    message: String,
    retry: Retry,
}

impl Failure {
    fn new(category: &'static str, message: impl Into<String>) -> Self {
        Self {
            category,
            message: message.into(),
            retry: Retry::Backoff,
        }
    }

    fn on_change(mut self) -> Self {
        self.retry = Retry::OnChange;
        self
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.category, self.message)
    }
}

impl std::error::Error for Failure {}

/// Every problem category a sink reports, with its Event reason.
const CATEGORIES: [(&str, &str); 22] = [
    ("no-access-provider", "NoAccessProvider"),
    ("untrusted-manager", "UntrustedClusterManager"),
    ("provider-config", "AccessProviderMisconfigured"),
    ("secret-not-allowed", "BootstrapSecretNotAllowed"),
    ("bootstrap-secret", "BootstrapSecretUnusable"),
    ("endpoint-mismatch", "EndpointMismatch"),
    ("exec-plugin", "ExecPluginFailed"),
    ("member-unreachable", "MemberUnreachable"),
    ("member-refused", "MemberRefusedCredential"),
    ("mint-failed", "MintFailed"),
    ("verify-failed", "VerificationFailed"),
    ("render", "RenderFailed"),
    ("invalid-label", "InvalidLabelValue"),
    ("hub-write", "HubWriteFailed"),
    ("name-conflict", "NameConflict"),
    ("invalid-profile", "InvalidProfile"),
    ("duplicate", "DuplicateMemberId"),
    ("ambiguous", "AmbiguousMemberId"),
    ("revoke-failed", "RevocationFailed"),
    ("cleanup", "CleanupAbandoned"),
    ("name-collision", "NameCollision"),
    ("other", "SinkProblem"),
];

/// The Event reason for a failure category.
fn reason(category: &str) -> &'static str {
    CATEGORIES
        .iter()
        .find(|(c, _)| *c == category)
        .map_or("SinkProblem", |(_, r)| *r)
}

/// Turn a known category string into the `'static` one (metric labels must be bounded).
fn static_category(category: &str) -> &'static str {
    CATEGORIES
        .iter()
        .find(|(c, _)| *c == category)
        .map_or("other", |(c, _)| *c)
}

struct Engine<S: Sink> {
    sink: Arc<S>,
    options: SinkOptions,
    hub: Client,
    applier: crate::apply::Applier,
    events: EventRecorder,
    metrics: Arc<Metrics>,
    sink_metrics: SinkMetrics,
    profiles: ApiResource,
    finalizer: String,
    states: Mutex<HashMap<Key, ProfileState>>,
    /// Bumped on every access to `states`, so gauges are recomputed only after a change.
    states_generation: AtomicU64,
    scopes: Mutex<Vec<Scope>>,
    /// Orphaned hub objects whose member identity could not be revoked yet: when first seen.
    orphans_seen: Mutex<HashMap<String, Instant>>,
    /// Member identities checked recently (one check per member, not per profile).
    ensured: EnsuredIdentities,
    /// What we published on the hub, watched: read without a request once listed.
    published: HubObjects,
}

struct Ctx<S: Sink> {
    engine: Arc<Engine<S>>,
    scope: Scope,
}

/// One watch scope (an inventory, or every namespace): its profiles and their indexes, so the
/// duplicate and claim checks look up the few profiles concerned instead of scanning the fleet.
#[derive(Clone)]
struct Scope {
    store: Store<DynamicObject>,
    /// Live, trusted profiles by `<namespace>/<member id>`: the candidates of duplicate contests.
    members: Index<DynamicObject>,
    /// Live profiles by the consumer names they claim ([`Sink::claims`]).
    claims: Index<DynamicObject>,
}

/// The ClusterProfile version to read: v1alpha1 where served (every release serves it and it is
/// the storage version), else v1alpha2.
pub(crate) fn choose_version(served: &[String]) -> Option<&'static str> {
    ["v1alpha1", "v1alpha2"]
        .into_iter()
        .find(|v| served.iter().any(|s| s == v))
}

async fn discover_profiles(client: &Client) -> Result<ApiResource> {
    let group = kube::discovery::group(client, GROUP).await.map_err(|err| {
        Error::Config(format!(
            "the ClusterProfile API ({GROUP}) is not served by the hub: {err}"
        ))
    })?;
    let served: Vec<String> = group.versions().map(str::to_string).collect();
    let version = choose_version(&served).ok_or_else(|| {
        Error::Config(format!(
            "{GROUP} serves {served:?}, neither v1alpha1 nor v1alpha2"
        ))
    })?;
    let gvk = GroupVersionKind::gvk(GROUP, version, "ClusterProfile");
    Ok(ApiResource::from_gvk_with_plural(&gvk, "clusterprofiles"))
}

/// Run the sink engine until `context.stop` fires (or, in release mode, until every profile of
/// the served inventories is released).
pub async fn run<S: Sink>(
    sink: Arc<S>,
    options: SinkOptions,
    sink_metrics: SinkMetrics,
    context: LeaderContext,
) -> Result<()> {
    // A missing CRD is an operator error we wait out with backoff, saying which API is missing.
    let mut attempt = 0;
    let profiles = loop {
        match discover_profiles(&context.client).await {
            Ok(resource) => break resource,
            Err(err) => {
                attempt += 1;
                let wait = backoff(attempt, Duration::from_secs(60), "discovery");
                warn!(error = %err, retry_in = ?wait, "cannot start the sink yet");
                if !sleep_or_stop(wait, &context.stop).await {
                    return Ok(());
                }
            }
        }
    };
    // The trust boundary starts here: no inventory named means none served, unless the operator
    // explicitly chose every namespace (options built in code skip the flag checks).
    if !options.all_namespaces && options.inventory_namespaces.is_empty() {
        return Err(Error::Config(
            "no inventory to serve: name one with --inventory-namespace, or choose --all-namespaces".into(),
        ));
    }
    info!(
        sink = S::NAME,
        instance = %options.instance,
        version = %profiles.version,
        namespaces = ?options.inventory_namespaces,
        all_namespaces = options.all_namespaces,
        selector = ?options.profile_selector,
        "starting the sink engine"
    );
    // The uninstall path only deletes, from fresh lists: it needs no watched view.
    let published = if options.release_finalizers {
        HubObjects::default()
    } else {
        let namespaces = published_namespaces(sink.as_ref(), &options);
        HubObjects::watch(
            &context.client,
            &S::hub_kinds(),
            namespaces.as_deref(),
            &format!("{LABEL_INSTANCE}={}", options.instance),
            context.applier.field_manager(),
        )
    };
    let engine = Arc::new(Engine {
        sink,
        finalizer: format!("inventory-bridge.io/{}-cleanup", options.instance),
        hub: context.client.clone(),
        applier: context.applier.clone(),
        events: context.events.clone(),
        metrics: context.metrics.clone(),
        sink_metrics,
        profiles,
        options,
        states: Mutex::default(),
        states_generation: AtomicU64::new(0),
        scopes: Mutex::default(),
        orphans_seen: Mutex::default(),
        ensured: EnsuredIdentities::default(),
        published,
    });
    if engine.options.release_finalizers {
        context.readiness.mark_synced();
        return engine.release_all(&context.stop).await;
    }
    if let Err(err) = engine.sweep().await {
        warn!(error = %err, "orphan sweep at start failed; it runs again every resync");
    }

    let mut controllers = Vec::new();
    let mut scopes = Vec::new();
    for scope in engine.scopes() {
        let (scope, future) = engine.controller(scope, context.stop.clone());
        scopes.push(scope);
        controllers.push(future);
    }
    let ready_stores: Vec<Store<DynamicObject>> = scopes.iter().map(|s| s.store.clone()).collect();
    if let Ok(mut all) = engine.scopes.lock() {
        *all = scopes;
    }
    let readiness = context.readiness.clone();
    tokio::spawn(async move {
        // The controller waits on the same stores, and a store wakes only its latest waiter: poll
        // with a timeout instead of waiting once (a ready store answers at once, forever).
        for store in ready_stores {
            loop {
                match tokio::time::timeout(Duration::from_millis(500), store.wait_until_ready())
                    .await
                {
                    Ok(Ok(())) => break,
                    Ok(Err(_)) => return,
                    Err(_) => continue,
                }
            }
        }
        readiness.mark_synced();
    });
    let periodic = tokio::spawn(engine.clone().periodic(context.stop.clone()));
    futures::future::join_all(controllers).await;
    periodic.abort();
    Ok(())
}

/// The namespaces our hub objects can be in (`None`: any): where the sink writes, else the
/// target namespace, else the served inventories.
fn published_namespaces<S: Sink>(sink: &S, options: &SinkOptions) -> Option<Vec<String>> {
    if let Some(namespaces) = sink.hub_namespaces() {
        return Some(namespaces);
    }
    if let Some(target) = &options.target_namespace {
        return Some(vec![target.clone()]);
    }
    (!options.all_namespaces).then(|| options.inventory_namespaces.clone())
}

impl<S: Sink> Engine<S> {
    /// The watch scopes: each served inventory, or everything.
    fn scopes(&self) -> Vec<Option<String>> {
        if self.options.all_namespaces {
            vec![None]
        } else {
            self.options
                .inventory_namespaces
                .iter()
                .cloned()
                .map(Some)
                .collect()
        }
    }

    /// Selector of every hub object this instance writes.
    fn instance_selector(&self) -> String {
        format!("{LABEL_INSTANCE}={}", self.options.instance)
    }

    fn controller(
        self: &Arc<Self>,
        scope: Option<String>,
        stop: tokio_util::sync::CancellationToken,
    ) -> (Scope, futures::future::BoxFuture<'static, ()>) {
        let resource = self.profiles.clone();
        let api: Api<DynamicObject> = match &scope {
            Some(ns) => Api::namespaced_with(self.hub.clone(), ns, &resource),
            None => Api::all_with(self.hub.clone(), &resource),
        };
        let mut config = watch_config();
        if let Some(selector) = &self.options.profile_selector {
            config = config.labels(selector);
        }
        // Our own credential Secrets, by label (never all Secrets): a deleted or edited Secret is
        // put back at once instead of at the next renewal.
        let secrets: Api<Secret> = match (&self.options.target_namespace, &scope) {
            (Some(target), _) => Api::namespaced(self.hub.clone(), target),
            (None, Some(ns)) => Api::namespaced(self.hub.clone(), ns),
            (None, None) => Api::all(self.hub.clone()),
        };
        let secret_config = watch_config().labels(&self.instance_selector());
        let mapper_resource = resource.clone();
        let mapper_scope = scope.clone();
        let writer = reflector::store::Writer::new(resource.clone());
        let store = writer.as_reader();
        let providers = self.options.providers.clone();
        let members = Index::new(resource.clone(), move |o: &DynamicObject| {
            member_keys(o, &providers)
        });
        let sink = self.sink.clone();
        let target = self.options.target_namespace.clone();
        let claims = Index::new(resource.clone(), move |o: &DynamicObject| {
            if o.metadata.deletion_timestamp.is_some() {
                return Vec::new();
            }
            let namespace = target
                .clone()
                .unwrap_or_else(|| o.namespace().unwrap_or_default());
            sink.claims(&o.metadata, &SinkConfig { namespace })
        });
        let (member_index, claim_index) = (members.clone(), claims.clone());
        let progress = self.metrics.clone();
        let profiles = watcher(api, config)
            // What `Controller::new` would add: retry a failing list/watch with backoff, not in
            // a tight loop while the hub is down.
            .default_backoff()
            // Nothing here reads managedFields (the finalizer apply sends its own patch).
            .modify(|o: &mut DynamicObject| o.metadata.managed_fields = None)
            .reflect(writer)
            .inspect(move |event| {
                member_index.observe(event);
                claim_index.observe(event);
                // Any event (a relist included) shows the watch works: it ends an error streak,
                // also when the inventory is empty and nothing gets reconciled.
                if event.is_ok() {
                    progress.watch_progress();
                }
            })
            .applied_objects();
        let controller = Controller::for_stream_with(profiles, store.clone(), resource)
            .watches(secrets, secret_config, move |secret: Secret| {
                let profile = secret
                    .annotations()
                    .get(ANNOTATION_PROFILE)
                    .and_then(|p| p.split_once('/'))
                    .map(|(ns, name)| (ns.to_string(), name.to_string()));
                profile
                    .filter(|(ns, _)| mapper_scope.as_ref().is_none_or(|s| s == ns))
                    .map(|(ns, name)| {
                        ObjectRef::new_with(&name, mapper_resource.clone()).within(&ns)
                    })
            })
            .with_config(
                controller::Config::default()
                    .concurrency(self.options.concurrency)
                    .debounce(Duration::from_millis(300)),
            )
            .graceful_shutdown_on(async move { stop.cancelled().await });
        let scope = Scope {
            store,
            members,
            claims,
        };
        let ctx = Arc::new(Ctx {
            engine: self.clone(),
            scope: scope.clone(),
        });
        let metrics = self.metrics.clone();
        let future = controller
            .run(reconcile::<S>, error_policy::<S>, ctx)
            .for_each(move |result| {
                // Watch errors heal themselves (the watcher relists), but are warned about,
                // counted and fed to /healthz.
                metrics.observe_controller_event(&result);
                futures::future::ready(())
            })
            .boxed();
        (scope, future)
    }

    /// The namespace a profile's hub objects go to by default (the sink's target, else the
    /// profile's own).
    fn hub_namespace(&self, profile_namespace: &str) -> String {
        self.options
            .target_namespace
            .clone()
            .unwrap_or_else(|| profile_namespace.to_string())
    }

    /// Every namespace a profile's hub objects may be in (a sink may write to several).
    fn hub_namespaces(&self, profile_namespace: &str) -> Vec<String> {
        self.sink
            .hub_namespaces()
            .unwrap_or_else(|| vec![self.hub_namespace(profile_namespace)])
    }

    fn resolver(&self) -> Resolver<'_> {
        Resolver {
            hub: &self.hub,
            providers: &self.options.providers,
            credentials_namespace: self.options.credentials_namespace.as_deref(),
            extra_secret_namespaces: &self.options.extra_secret_namespaces,
            exec_timeout: self.options.exec_timeout,
        }
    }

    fn with_state<T>(&self, key: &Key, f: impl FnOnce(&mut ProfileState) -> T) -> Option<T> {
        self.states_generation.fetch_add(1, Ordering::Relaxed);
        self.states
            .lock()
            .ok()
            .map(|mut states| f(states.entry(key.clone()).or_default()))
    }

    fn forget(&self, key: &Key) {
        self.states_generation.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut states) = self.states.lock() {
            states.remove(key);
        }
    }

    /// Count a failure of `key` and return the backoff before its next try.
    fn next_backoff(&self, key: &Key, seed: &str) -> Duration {
        let failures = self
            .with_state(key, |s| {
                s.failures = s.failures.saturating_add(1).min(30);
                s.failures
            })
            .unwrap_or(1);
        backoff(failures, self.options.max_backoff, seed)
    }

    /// Report a failure unless the same one was reported last for this profile.
    fn report(&self, object: &ObjectReference, key: &Key, failure: &Failure, action: &str) {
        let category = static_category(failure.category);
        self.metrics.count_problem(category);
        let fresh = self
            .with_state(key, |state| {
                let entry = (failure.category.to_string(), failure.message.clone());
                let fresh = state.reported.as_ref() != Some(&entry);
                state.reported = Some(entry);
                fresh
            })
            .unwrap_or(true);
        if fresh {
            warn!(profile = %format!("{}/{}", key.0, key.1), category, message = %failure.message, "{action} failed");
            self.events
                .warn(object, reason(category), action, &failure.message);
        } else {
            debug!(profile = %format!("{}/{}", key.0, key.1), category, "problem persists");
        }
    }

    /// Our objects of one profile, of every hub kind (a kind whose API is missing has none).
    async fn list_hub_objects(
        &self,
        profile_namespace: &str,
        uid: &str,
    ) -> Result<Vec<(ApiResource, DynamicObject)>, Failure> {
        let selector = format!("{},{LABEL_PROFILE_UID}={uid}", self.instance_selector());
        let mut found = Vec::new();
        for resource in S::hub_kinds() {
            for namespace in self.hub_namespaces(profile_namespace) {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(self.hub.clone(), &namespace, &resource);
                match api.list(&ListParams::default().labels(&selector)).await {
                    Ok(list) => found.extend(list.items.into_iter().map(|o| (resource.clone(), o))),
                    // The kind is not served (its CRD is gone): nothing of it to find or delete.
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(err) => {
                        return Err(Failure::new(
                            "hub-write",
                            format!("cannot list {}: {err}", resource.kind),
                        ));
                    }
                }
            }
        }
        Ok(found)
    }

    /// The records of one profile's published Secrets (none when it has none).
    async fn records_of(
        &self,
        profile_namespace: &str,
        uid: &str,
    ) -> Result<Vec<(Secret, Record)>, Failure> {
        let selector = format!("{},{LABEL_PROFILE_UID}={uid}", self.instance_selector());
        let mut records = Vec::new();
        for namespace in self.hub_namespaces(profile_namespace) {
            let api: Api<Secret> = Api::namespaced(self.hub.clone(), &namespace);
            let list = api
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|err| {
                    Failure::new("hub-write", format!("cannot list our Secrets: {err}"))
                })?;
            records.extend(list.items.into_iter().filter_map(|secret| {
                let record = record_of(&secret, uid)?;
                Some((secret, record))
            }));
        }
        Ok(records)
    }

    /// Like [`Self::records_of`], from the watched view once it is listed (no request): for
    /// adopting what is published, where a view a moment behind costs at most one extra mint.
    /// Revocation always lists.
    async fn published_records(
        &self,
        profile_namespace: &str,
        uid: &str,
    ) -> Result<Vec<(Secret, Record)>, Failure> {
        let secrets = ApiResource::erase::<Secret>(&());
        let namespaces = self.hub_namespaces(profile_namespace);
        match self.published.of_profile(&secrets, &namespaces, uid) {
            Lookup::Known(objects) => Ok(objects
                .iter()
                .filter_map(|object| {
                    let secret: Secret = serde_json::to_value(object.as_ref())
                        .and_then(serde_json::from_value)
                        .ok()?;
                    let record = record_of(&secret, uid)?;
                    Some((secret, record))
                })
                .collect()),
            Lookup::Unknown => self.records_of(profile_namespace, uid).await,
        }
    }

    async fn delete_hub_objects(&self, profile_namespace: &str, uid: &str) -> Result<(), Failure> {
        for (resource, object) in self.list_hub_objects(profile_namespace, uid).await? {
            delete_dynamic(&self.hub, &resource, &object)
                .await
                .map_err(|err| Failure::new("hub-write", err))?;
        }
        Ok(())
    }
}

/// The registration record our Secret carries for profile `uid`.
fn record_of(secret: &Secret, uid: &str) -> Option<Record> {
    secret
        .annotations()
        .get(super::ANNOTATION_REGISTRATION)
        .and_then(|text| Record::from_annotation(text))
        .filter(|r| r.profile_uid == uid)
}

async fn reconcile<S: Sink>(
    object: Arc<DynamicObject>,
    ctx: Arc<Ctx<S>>,
) -> std::result::Result<Action, Failure> {
    let engine = &ctx.engine;
    let started = Instant::now();
    let key = key_of(object.as_ref());
    let deleting = object.metadata.deletion_timestamp.is_some();
    let result = if deleting {
        engine.cleanup(&object).await
    } else {
        engine.register(&object, &ctx.scope).await
    };
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(action) => {
            engine.metrics.observe_reconcile(Ok(()), seconds);
            Ok(action)
        }
        Err(failure) => {
            engine
                .metrics
                .observe_reconcile(Err(core_category(failure.category)), seconds);
            let action = if deleting { "Cleanup" } else { "Register" };
            engine.report(
                &object_ref(&object, &engine.profiles),
                &key,
                &failure,
                action,
            );
            if !deleting {
                engine.with_state(&key, |s| s.phase = Phase::Failing);
            }
            Ok(match failure.retry {
                Retry::Backoff => {
                    Action::requeue(engine.next_backoff(&key, &object.uid().unwrap_or_default()))
                }
                Retry::OnChange => Action::await_change(),
            })
        }
    }
}

/// The shared core category of a sink failure, for `inventory_bridge_reconciles_total`.
fn core_category(category: &str) -> crate::error::Category {
    use crate::error::Category;
    match category {
        "member-unreachable" | "mint-failed" | "hub-write" | "revoke-failed" => Category::KubeApi,
        "member-refused" => Category::Forbidden,
        "name-conflict" | "name-collision" => Category::Conflict,
        "provider-config" => Category::Config,
        _ => Category::InvalidInput,
    }
}

fn error_policy<S: Sink>(_: Arc<DynamicObject>, _: &Failure, _: Arc<Ctx<S>>) -> Action {
    // reconcile reports and schedules its own retries; this is only a safety net.
    Action::requeue(Duration::from_secs(30))
}

/// The member-index key of a live profile the providers trust and that names a member id:
/// only such profiles take part in duplicate decisions (an untrusted one cannot suppress a
/// trusted one).
fn member_keys(object: &DynamicObject, providers: &crate::access::ProviderFile) -> Vec<String> {
    use crate::profile::LABEL_INVENTORY_MEMBER_ID;
    let Some(id) = object
        .labels()
        .get(LABEL_INVENTORY_MEMBER_ID)
        .filter(|id| !id.is_empty())
    else {
        return Vec::new();
    };
    let trusted = parse_profile(object)
        .ok()
        .is_some_and(|p| crate::access::choose(providers, &p).is_ok());
    if object.metadata.deletion_timestamp.is_some() || !trusted {
        return Vec::new();
    }
    vec![member_key(&object.namespace().unwrap_or_default(), id)]
}

fn member_key(namespace: &str, id: &str) -> String {
    format!("{namespace}/{id}")
}

fn key_of(object: &impl ResourceExt) -> Key {
    (object.namespace().unwrap_or_default(), object.name_any())
}

fn object_ref(object: &DynamicObject, resource: &ApiResource) -> ObjectReference {
    object.object_ref(resource)
}

fn parse_profile(object: &DynamicObject) -> Result<ClusterProfile, Failure> {
    let value = serde_json::to_value(object).map_err(|err| {
        Failure::new("invalid-profile", format!("cannot read the profile: {err}"))
    })?;
    serde_json::from_value(value).map_err(|err| {
        Failure::new(
            "invalid-profile",
            format!("the profile does not match the ClusterProfile schema: {err}"),
        )
        .on_change()
    })
}

async fn member_client(
    endpoint: &Endpoint,
    credential: &kubeconfig::Credential,
    timeout: Duration,
) -> Result<Client, Failure> {
    let config = kubeconfig::client_config(endpoint, credential, timeout)
        .await
        .map_err(|err| Failure::new("provider-config", err.to_string()))?;
    Client::try_from(config)
        .map_err(|err| Failure::new("provider-config", format!("member client: {err}")))
}

/// A client from the very kubeconfig we publish, so verification checks what consumers get.
async fn client_from_kubeconfig(
    kubeconfig: &crate::sensitive::Sensitive,
    timeout: Duration,
) -> std::result::Result<Client, String> {
    let parsed = kube::config::Kubeconfig::from_yaml(kubeconfig.expose())
        .map_err(|_| "the minted kubeconfig does not parse".to_string())?;
    let mut config =
        kube::Config::from_custom_kubeconfig(parsed, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|err| format!("the minted kubeconfig is unusable: {err}"))?;
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    Client::try_from(config).map_err(|err| format!("the minted kubeconfig is unusable: {err}"))
}

async fn delete_dynamic(
    hub: &Client,
    resource: &ApiResource,
    object: &impl ResourceExt,
) -> std::result::Result<(), String> {
    let namespace = object.namespace().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(hub.clone(), &namespace, resource);
    match api
        .delete(&object.name_any(), &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(format!(
            "cannot delete {} {namespace}/{}: {err}",
            resource.kind,
            object.name_any()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1alpha1_is_read_where_served_else_v1alpha2() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            choose_version(&s(&["v1alpha2", "v1alpha1"])),
            Some("v1alpha1")
        );
        assert_eq!(choose_version(&s(&["v1alpha2"])), Some("v1alpha2"));
        assert_eq!(choose_version(&s(&["v1beta1"])), None);
    }

    #[test]
    fn every_category_has_a_reason_and_stays_bounded() {
        for (category, _) in CATEGORIES {
            assert_eq!(static_category(category), category);
            if category != "other" {
                assert_ne!(reason(category), "SinkProblem", "{category}");
            }
        }
        // Every category the access and member layers produce is known here.
        for category in [
            "untrusted-manager",
            "secret-not-allowed",
            "endpoint-mismatch",
            "name-conflict",
        ] {
            assert_eq!(static_category(category), category);
        }
        assert_eq!(static_category("made-up: with a name"), "other");
    }
}
