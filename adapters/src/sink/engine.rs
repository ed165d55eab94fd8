//! The sink controller: one kube-runtime `Controller` per watched scope (an inventory namespace, or
//! all), sharing one engine state; a periodic task publishes gauges and sweeps orphans.
//!
//! Failures never surface as reconcile errors: each is reported once per change (Event on the
//! profile, log line, metric category) and the profile is retried with its own backoff, so one
//! broken profile or unreachable member never delays another.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use super::duplicates::{self, Candidate, Verdict};
use super::schedule::backoff;
use super::{
    ANNOTATION_PROFILE, ANNOTATION_TOKEN_EXPIRES_AT, ANNOTATION_TOKEN_RENEW_AFTER,
    LABEL_PROFILE_NAMESPACE, LABEL_PROFILE_UID, LABEL_SINK, MintedCredential, Sink, SinkConfig,
    SinkMetrics, SinkOptions,
};
use crate::access::{self, Resolver};
use crate::apply::Applier;
use crate::error::{Error, Result};
use crate::kubeconfig::{self, Endpoint};
use crate::member::{self, MemberError};
use crate::profile::{ClusterProfile, GROUP, LABEL_INVENTORY_MEMBER_ID};
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

/// The last good registration of a profile.
#[derive(Clone, Debug)]
struct Registration {
    credential: MintedCredential,
    renew_at: Timestamp,
    fingerprint: u64,
    /// Member server + identity: registrations sharing it share the member identity.
    member_key: String,
}

#[derive(Debug, Default)]
struct ProfileState {
    uid: String,
    registration: Option<Registration>,
    failures: u32,
    phase: Phase,
    /// The last problem reported (category and message), so a retry does not repeat its Event.
    reported: Option<(String, String)>,
    /// Non-fatal render problems already reported.
    reported_warnings: BTreeSet<String>,
}

/// A per-profile failure: reported, then retried after `retry` (or on change if `None`).
#[derive(Debug)]
struct Failure {
    category: &'static str,
    message: String,
    retry: Option<Duration>,
}

impl Failure {
    fn new(category: &'static str, message: impl Into<String>) -> Self {
        Self {
            category,
            message: message.into(),
            retry: Some(Duration::from_secs(5)),
        }
    }
}

/// The Event reason for a failure category.
fn reason(category: &str) -> &'static str {
    match category {
        "no-access-provider" => "NoAccessProvider",
        "provider-config" => "AccessProviderMisconfigured",
        "bootstrap-secret" => "BootstrapSecretUnusable",
        "exec-plugin" => "ExecPluginFailed",
        "member-unreachable" => "MemberUnreachable",
        "member-refused" => "MemberRefusedCredential",
        "mint-failed" => "MintFailed",
        "verify-failed" => "VerificationFailed",
        "render" => "RenderFailed",
        "invalid-label" => "InvalidLabelValue",
        "hub-write" => "HubWriteFailed",
        "name-conflict" => "NameConflict",
        "invalid-profile" => "InvalidProfile",
        "duplicate" => "DuplicateMemberId",
        "ambiguous" => "AmbiguousMemberId",
        _ => "SinkProblem",
    }
}

/// Turn a known category string into the `'static` one (metric labels must be static).
fn static_category(category: &str) -> &'static str {
    const KNOWN: [&str; 17] = [
        "no-access-provider",
        "provider-config",
        "bootstrap-secret",
        "exec-plugin",
        "member-unreachable",
        "member-refused",
        "mint-failed",
        "verify-failed",
        "render",
        "invalid-label",
        "hub-write",
        "name-conflict",
        "invalid-profile",
        "duplicate",
        "ambiguous",
        "cleanup",
        "other",
    ];
    KNOWN
        .iter()
        .find(|k| **k == category)
        .copied()
        .unwrap_or("other")
}

struct Engine<S: Sink> {
    sink: Arc<S>,
    options: SinkOptions,
    hub: Client,
    applier: Applier,
    events: EventRecorder,
    metrics: Arc<Metrics>,
    sink_metrics: SinkMetrics,
    profiles: ApiResource,
    finalizer: String,
    states: Mutex<HashMap<Key, ProfileState>>,
    stores: Mutex<Vec<Store<DynamicObject>>>,
}

struct Ctx<S: Sink> {
    engine: Arc<Engine<S>>,
    store: Store<DynamicObject>,
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

/// Run the sink engine until `context.stop` fires.
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
    info!(
        sink = S::NAME,
        version = %profiles.version,
        namespaces = ?options.inventory_namespaces,
        selector = ?options.profile_selector,
        "starting the sink engine"
    );
    let engine = Arc::new(Engine {
        sink,
        finalizer: format!("inventory-bridge.io/{}-cleanup", S::NAME),
        hub: context.client.clone(),
        applier: context.applier.clone(),
        events: context.events.clone(),
        metrics: context.metrics.clone(),
        sink_metrics,
        profiles,
        options,
        states: Mutex::default(),
        stores: Mutex::default(),
    });
    if let Err(err) = engine.sweep().await {
        warn!(error = %err, "orphan sweep at start failed; it runs again every resync");
    }

    let scopes: Vec<Option<String>> = if engine.options.inventory_namespaces.is_empty() {
        vec![None]
    } else {
        engine
            .options
            .inventory_namespaces
            .iter()
            .cloned()
            .map(Some)
            .collect()
    };
    let mut controllers = Vec::new();
    let mut stores = Vec::new();
    for scope in scopes {
        let (store, future) = engine.controller(scope, context.stop.clone())?;
        stores.push(store);
        controllers.push(future);
    }
    if let Ok(mut all) = engine.stores.lock() {
        *all = stores.clone();
    }
    let readiness = context.readiness.clone();
    let ready_stores = stores.clone();
    tokio::spawn(async move {
        for store in ready_stores {
            if store.wait_until_ready().await.is_err() {
                return;
            }
        }
        readiness.mark_synced();
    });
    let periodic = tokio::spawn(engine.clone().periodic(context.stop.clone()));
    futures::future::join_all(controllers).await;
    periodic.abort();
    Ok(())
}

impl<S: Sink> Engine<S> {
    fn controller(
        self: &Arc<Self>,
        scope: Option<String>,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<(
        Store<DynamicObject>,
        futures::future::BoxFuture<'static, ()>,
    )> {
        let resource = self.profiles.clone();
        let api: Api<DynamicObject> = match &scope {
            Some(ns) => Api::namespaced_with(self.hub.clone(), ns, &resource),
            None => Api::all_with(self.hub.clone(), &resource),
        };
        let mut config = watcher::Config::default().any_semantic();
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
        let secret_config = watcher::Config::default().labels(&format!("{LABEL_SINK}={}", S::NAME));
        let mapper_resource = resource.clone();
        let mapper_scope = scope.clone();
        let controller = Controller::new_with(api, config, resource)
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
        let store = controller.store();
        let ctx = Arc::new(Ctx {
            engine: self.clone(),
            store: store.clone(),
        });
        let future = controller
            .run(reconcile::<S>, error_policy::<S>, ctx)
            .for_each(|result| async move {
                if let Err(err) = result {
                    // Watch errors heal themselves (the watcher relists); just say so.
                    debug!(error = %err, "controller event");
                }
            })
            .boxed();
        Ok((store, future))
    }

    fn target_namespace(&self, profile_namespace: &str) -> String {
        self.options
            .target_namespace
            .clone()
            .unwrap_or_else(|| profile_namespace.to_string())
    }

    fn with_state<T>(&self, key: &Key, f: impl FnOnce(&mut ProfileState) -> T) -> Option<T> {
        self.states
            .lock()
            .ok()
            .map(|mut states| f(states.entry(key.clone()).or_default()))
    }

    fn forget(&self, key: &Key) {
        if let Ok(mut states) = self.states.lock() {
            states.remove(key);
        }
    }

    /// Report a failure unless the same one was reported last for this profile.
    async fn report(&self, object: &ObjectReference, key: &Key, failure: &Failure, action: &str) {
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
            self.events
                .warn(object, reason(category), action, &failure.message)
                .await;
        } else {
            debug!(profile = %format!("{}/{}", key.0, key.1), category, "problem persists");
        }
    }

    // ---- registration -------------------------------------------------------------------

    async fn register(
        &self,
        object: &DynamicObject,
        store: &Store<DynamicObject>,
    ) -> Result<Action, Failure> {
        let key = key_of(object);
        let uid = object.uid().unwrap_or_default();
        let profile = parse_profile(object)?;

        let all: Vec<Candidate> = store
            .state()
            .iter()
            .filter(|o| o.metadata.deletion_timestamp.is_none())
            .map(|o| candidate(o))
            .collect();
        match duplicates::verdict(&candidate(object), &all) {
            Verdict::Register => {}
            verdict => return self.suppress(object, &key, &uid, verdict).await,
        }
        let config = SinkConfig {
            namespace: self.target_namespace(&key.0),
        };
        if let Some(failure) = self.claim_conflict(object, &config) {
            // Never two consumer entries under one name: withdraw ours until the name is free.
            self.delete_hub_objects(&key.0, &uid).await?;
            return Err(failure);
        }

        self.ensure_finalizer(object).await?;
        let (credential, fresh) = self.credential(&profile, &key, &uid).await?;
        let rendered = self
            .sink
            .render(&profile, &credential, &config)
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
                self.events
                    .warn(
                        &object_ref(object, &self.profiles),
                        reason(warning.category),
                        "Render",
                        &warning.message,
                    )
                    .await;
            }
        }
        let renew_at = self
            .with_state(&key, |s| s.registration.as_ref().map(|r| r.renew_at))
            .flatten()
            .unwrap_or(credential.expires_at);
        self.apply_objects(&key, &uid, &credential, renew_at, rendered.objects)
            .await?;
        let was_failing = self
            .with_state(&key, |s| {
                let was = s.reported.take().is_some();
                s.phase = Phase::Registered;
                s.failures = 0;
                was
            })
            .unwrap_or(false);
        if fresh.is_some() || was_failing {
            let (reason, note) = match fresh {
                Some(true) => ("Rotated", "published a renewed member token"),
                _ => ("Registered", "registered with a minted member identity"),
            };
            self.events
                .normal(
                    &object_ref(object, &self.profiles),
                    reason,
                    "Register",
                    note,
                )
                .await;
        }
        let until_renewal = renew_at
            .duration_since(Timestamp::now())
            .as_secs_f64()
            .max(1.0);
        Ok(Action::requeue(
            Duration::from_secs_f64(until_renewal).min(self.options.resync),
        ))
    }

    /// A consumer name this profile claims (see [`Sink::claims`]) that an older registrable
    /// profile of any watched inventory claims too.
    fn claim_conflict(&self, object: &DynamicObject, config: &SinkConfig) -> Option<Failure> {
        let mine = self.sink.claims(&object.metadata, config);
        if mine.is_empty() {
            return None;
        }
        let stores = self.stores.lock().map(|s| s.clone()).unwrap_or_default();
        let all: Vec<Arc<DynamicObject>> = stores
            .iter()
            .flat_map(|s| s.state())
            .filter(|o| o.metadata.deletion_timestamp.is_none())
            .collect();
        let candidates: Vec<Candidate> = all.iter().map(|o| candidate(o)).collect();
        let others = all.iter().filter_map(|o| {
            let other_config = SinkConfig {
                namespace: self.target_namespace(&o.namespace().unwrap_or_default()),
            };
            let theirs = self.sink.claims(&o.metadata, &other_config);
            // Only the few that claim the same name pay for the duplicate check.
            let registrable = theirs.iter().any(|c| mine.contains(c))
                && duplicates::verdict(&candidate(o), &candidates) == Verdict::Register;
            registrable.then(|| (candidate(o), theirs))
        });
        let (winner, claim) = super::claims::conflict(&candidate(object), &mine, others)?;
        Some(Failure {
            retry: Some(Duration::from_secs(30)),
            ..Failure::new(
                "name-conflict",
                format!(
                    "{claim} is already claimed by the older profile {}/{}; this one is not registered until it is free",
                    winner.namespace, winner.name
                ),
            )
        })
    }

    /// The current credential, minting a new one when there is none, when it is due for renewal
    /// or when the access or identity settings changed. The option says whether it is new
    /// (`None`: cached) and, if so, whether it renews an earlier one.
    async fn credential(
        &self,
        profile: &ClusterProfile,
        key: &Key,
        uid: &str,
    ) -> Result<(MintedCredential, Option<bool>), Failure> {
        let chosen = access::choose(&self.options.providers, profile)
            .map(|(entry, _, endpoint)| (entry.name.clone(), endpoint));
        let fingerprint = chosen
            .as_ref()
            .map(|(provider, endpoint)| self.fingerprint(provider, endpoint))
            .unwrap_or_default();
        let now = Timestamp::now();
        let (cached, rotation) = self
            .with_state(key, |s| {
                if s.uid != uid {
                    *s = ProfileState {
                        uid: uid.to_string(),
                        ..ProfileState::default()
                    };
                }
                let cached = s
                    .registration
                    .as_ref()
                    .filter(|r| r.fingerprint == fingerprint && now < r.renew_at)
                    .map(|r| r.credential.clone());
                (cached, s.registration.is_some())
            })
            .unwrap_or((None, false));
        if let Some(credential) = cached {
            return Ok((credential, None));
        }
        let result = match chosen {
            Ok((_, endpoint)) => self.mint(profile, endpoint).await,
            Err(err) => Err(Failure::new(err.category(), err.to_string())),
        };
        match result {
            Ok(credential) => {
                self.sink_metrics.count_mint(rotation, Ok(()));
                let renew_at = self.options.renewal.renew_at(
                    now,
                    credential.expires_at,
                    &format!("{uid}/{}", S::NAME),
                );
                let member_key = format!(
                    "{}|{}/{}",
                    credential.server, credential.namespace, credential.service_account
                );
                info!(
                    profile = %format!("{}/{}", key.0, key.1),
                    rotation,
                    expires_at = %credential.expires_at,
                    renew_at = %renew_at,
                    "minted a member token"
                );
                self.with_state(key, |s| {
                    s.registration = Some(Registration {
                        credential: credential.clone(),
                        renew_at,
                        fingerprint,
                        member_key,
                    });
                    s.failures = 0;
                });
                Ok((credential, Some(rotation)))
            }
            Err(mut failure) => {
                let category = static_category(failure.category);
                self.sink_metrics.count_mint(rotation, Err(category));
                let failures = self
                    .with_state(key, |s| {
                        s.failures = s.failures.saturating_add(1).min(30);
                        s.phase = Phase::Failing;
                        s.failures
                    })
                    .unwrap_or(1);
                failure.retry = Some(backoff(failures, self.options.max_backoff, uid));
                Err(failure)
            }
        }
    }

    fn fingerprint(&self, provider: &str, endpoint: &Endpoint) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        provider.hash(&mut hasher);
        format!("{endpoint:?}").hash(&mut hasher);
        format!("{:?}", self.options.identity).hash(&mut hasher);
        self.options.token_ttl.hash(&mut hasher);
        hasher.finish()
    }

    /// Resolve bootstrap access, create the member identity, request and verify a token.
    async fn mint(
        &self,
        profile: &ClusterProfile,
        endpoint: Endpoint,
    ) -> Result<MintedCredential, Failure> {
        let resolver = Resolver {
            hub: &self.hub,
            providers: &self.options.providers,
            credentials_namespace: self.options.credentials_namespace.as_deref(),
            exec_timeout: self.options.exec_timeout,
        };
        let access = resolver
            .resolve(profile)
            .await
            .map_err(|err| Failure::new(err.category(), err.to_string()))?;
        let client = member_client(
            &access.endpoint,
            &access.credential,
            self.options.member_timeout,
        )
        .await?;
        let identity = &self.options.identity;
        let member_failure = |err: MemberError| Failure::new(err.category(), err.to_string());
        member::ensure_identity(&client, identity, S::NAME)
            .await
            .map_err(member_failure)?;
        let token = member::request_token(&client, identity, self.options.token_ttl)
            .await
            .map_err(member_failure)?;
        let kubeconfig = kubeconfig::minted_kubeconfig(
            &endpoint,
            &token.token,
            &S::kubeconfig_names(),
            &identity.namespace,
        );
        // Verify the very kubeconfig we are about to publish, not a client built another way.
        let verifier = client_from_kubeconfig(&kubeconfig, self.options.member_timeout)
            .await
            .map_err(|message| Failure::new("verify-failed", message))?;
        member::verify(&verifier, identity)
            .await
            .map_err(member_failure)?;
        Ok(MintedCredential {
            kubeconfig,
            token: token.token,
            server: endpoint.server.clone(),
            ca_pem: endpoint.ca_pem.clone(),
            tls_server_name: endpoint.tls_server_name.clone(),
            insecure_skip_tls_verify: endpoint.insecure_skip_tls_verify,
            proxy_url: endpoint.proxy_url.clone(),
            expires_at: token.expires_at,
            namespace: identity.namespace.clone(),
            service_account: identity.service_account.clone(),
        })
    }

    /// Add our finalizer (server-side apply of just that list entry) if it is missing.
    async fn ensure_finalizer(&self, object: &DynamicObject) -> Result<(), Failure> {
        if object.finalizers().contains(&self.finalizer) {
            return Ok(());
        }
        self.apply_finalizer(object, true).await
    }

    async fn apply_finalizer(&self, object: &DynamicObject, present: bool) -> Result<(), Failure> {
        let (ns, name) = key_of(object);
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
            .patch(&name, &PatchParams::apply(S::NAME), &Patch::Apply(&patch))
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
        credential: &MintedCredential,
        renew_at: Timestamp,
        objects: Vec<super::DesiredObject>,
    ) -> Result<(), Failure> {
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
                .unwrap_or_else(|| self.target_namespace(&key.0));
            if name.is_empty() {
                return Err(Failure::new("render", "a rendered object has no name"));
            }
            let metadata = &mut value["metadata"];
            metadata["namespace"] = json!(namespace);
            metadata["labels"][LABEL_SINK] = json!(S::NAME);
            metadata["labels"][LABEL_PROFILE_UID] = json!(uid);
            metadata["labels"][LABEL_PROFILE_NAMESPACE] = json!(key.0);
            metadata["annotations"][ANNOTATION_PROFILE] = json!(format!("{}/{}", key.0, key.1));
            if desired.resource.kind == "Secret" && desired.resource.group.is_empty() {
                metadata["annotations"][ANNOTATION_TOKEN_EXPIRES_AT] =
                    json!(credential.expires_at.to_string());
                metadata["annotations"][ANNOTATION_TOKEN_RENEW_AFTER] = json!(renew_at.to_string());
            }
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.hub.clone(), &namespace, &desired.resource);
            let current = api.get_opt(&name).await.map_err(|err| {
                Failure::new(
                    "hub-write",
                    format!(
                        "cannot read {} {namespace}/{name}: {err}",
                        desired.resource.kind
                    ),
                )
            })?;
            if let Some(current) = &current {
                let labels = current.labels();
                let ours = labels.get(LABEL_SINK).map(String::as_str) == Some(S::NAME);
                let same = labels.get(LABEL_PROFILE_UID).map(String::as_str) == Some(uid);
                if !(ours && same) {
                    let owner = current
                        .annotations()
                        .get(ANNOTATION_PROFILE)
                        .filter(|_| ours)
                        .map(|p| format!("profile {p}"))
                        .unwrap_or_else(|| "something else".to_string());
                    return Err(Failure {
                        retry: Some(Duration::from_secs(60)),
                        ..Failure::new(
                            "name-conflict",
                            format!(
                                "{} {namespace}/{name} already exists and belongs to {owner}; not overwriting it",
                                desired.resource.kind
                            ),
                        )
                    });
                }
            }
            let object: DynamicObject = serde_json::from_value(value)
                .map_err(|err| Failure::new("render", format!("rendered object: {err}")))?;
            planned.push((api, object, current));
        }
        // Everything checked first, so a conflict never leaves half of the objects written.
        for (api, object, current) in planned {
            let outcome = self
                .applier
                .apply(&api, &object, current.as_ref(), true)
                .await
                .map_err(|err| {
                    Failure::new(
                        "hub-write",
                        format!("cannot apply {}: {err}", object.name_any()),
                    )
                })?;
            self.metrics.count_apply(outcome);
        }
        Ok(())
    }

    /// A duplicate or ambiguous profile: say so once, and withdraw anything we registered for it.
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
        let had_registration = self
            .with_state(key, |s| {
                s.phase = Phase::Suppressed;
                s.registration.take().is_some()
            })
            .unwrap_or(false);
        self.report(
            &object_ref(object, &self.profiles),
            key,
            &failure,
            "Register",
        )
        .await;
        let holds_finalizer = object.finalizers().contains(&self.finalizer);
        if had_registration || holds_finalizer {
            self.delete_hub_objects(&key.0, uid).await?;
            if holds_finalizer {
                self.apply_finalizer(object, false).await?;
            }
        }
        // Re-evaluated regularly: when the winner goes away, this one may take its place.
        Ok(Action::requeue(Duration::from_secs(30)))
    }

    // ---- deletion ----------------------------------------------------------------------

    async fn cleanup(&self, object: &DynamicObject) -> Result<Action, Failure> {
        let key = key_of(object);
        if !object.finalizers().contains(&self.finalizer) {
            self.forget(&key);
            return Ok(Action::await_change());
        }
        let uid = object.uid().unwrap_or_default();
        let hub_objects = self.list_hub_objects(&key.0, &uid).await?;
        let (registered, member_key) = self
            .with_state(&key, |s| {
                (
                    s.registration.is_some(),
                    s.registration.as_ref().map(|r| r.member_key.clone()),
                )
            })
            .unwrap_or((false, None));
        let reference = object_ref(object, &self.profiles);
        let mut result = "complete";
        if self.options.keep_member_identity {
            result = "member-kept";
        } else if !hub_objects.is_empty() || registered {
            let shared = member_key
                .as_ref()
                .is_some_and(|mk| self.shared_with_others(&key, mk));
            if shared {
                result = "member-kept";
                self.events
                    .normal(
                        &reference,
                        "MemberIdentityKept",
                        "Cleanup",
                        "the member identity is still used by another registration; kept it",
                    )
                    .await;
            } else if let Err(failure) = self.remove_member_identity(object).await {
                let deleted_at = object
                    .metadata
                    .deletion_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .unwrap_or_else(Timestamp::now);
                let elapsed = Timestamp::now().duration_since(deleted_at);
                let timeout = self.options.cleanup_timeout;
                if elapsed.as_secs_f64() < timeout.as_secs_f64() {
                    let failures = self
                        .with_state(&key, |s| {
                            s.failures = s.failures.saturating_add(1).min(30);
                            s.failures
                        })
                        .unwrap_or(1);
                    self.report(&reference, &key, &failure, "Cleanup").await;
                    let remaining = timeout.as_secs_f64() - elapsed.as_secs_f64();
                    let wait = backoff(failures, self.options.max_backoff, &uid)
                        .min(Duration::from_secs_f64(remaining.max(0.5)));
                    return Ok(Action::requeue(wait));
                }
                result = "member-abandoned";
                self.metrics.count_problem("cleanup");
                self.events
                    .warn(
                        &reference,
                        "MemberCleanupAbandoned",
                        "Cleanup",
                        &format!(
                            "gave up removing the member identity after {timeout:?}: {}; its tokens stay valid until they expire",
                            failure.message
                        ),
                    )
                    .await;
            }
        }
        self.delete_hub_objects(&key.0, &uid).await?;
        self.apply_finalizer(object, false).await?;
        self.sink_metrics.count_cleanup(result);
        self.forget(&key);
        info!(profile = %format!("{}/{}", key.0, key.1), result, "profile deregistered");
        Ok(Action::await_change())
    }

    fn shared_with_others(&self, key: &Key, member_key: &str) -> bool {
        self.states.lock().is_ok_and(|states| {
            states.iter().any(|(k, s)| {
                k != key
                    && s.phase != Phase::Suppressed
                    && s.registration
                        .as_ref()
                        .is_some_and(|r| r.member_key == member_key)
            })
        })
    }

    async fn remove_member_identity(&self, object: &DynamicObject) -> Result<(), Failure> {
        let profile = parse_profile(object)?;
        let resolver = Resolver {
            hub: &self.hub,
            providers: &self.options.providers,
            credentials_namespace: self.options.credentials_namespace.as_deref(),
            exec_timeout: self.options.exec_timeout,
        };
        let access = resolver
            .resolve(&profile)
            .await
            .map_err(|err| Failure::new(err.category(), err.to_string()))?;
        let client = member_client(
            &access.endpoint,
            &access.credential,
            self.options.member_timeout,
        )
        .await?;
        member::remove_identity(&client, &self.options.identity)
            .await
            .map_err(|err| Failure::new(err.category(), err.to_string()))
    }

    fn sweep_namespaces(&self) -> Vec<Option<String>> {
        if let Some(namespaces) = self.sink.hub_namespaces() {
            return namespaces.into_iter().map(Some).collect();
        }
        match &self.options.target_namespace {
            Some(target) => vec![Some(target.clone())],
            None if self.options.inventory_namespaces.is_empty() => vec![None],
            None => self
                .options
                .inventory_namespaces
                .iter()
                .cloned()
                .map(Some)
                .collect(),
        }
    }

    async fn list_hub_objects(
        &self,
        profile_namespace: &str,
        uid: &str,
    ) -> Result<Vec<(ApiResource, DynamicObject)>, Failure> {
        let selector = format!("{LABEL_SINK}={},{LABEL_PROFILE_UID}={uid}", S::NAME);
        let namespaces = self
            .sink
            .hub_namespaces()
            .unwrap_or_else(|| vec![self.target_namespace(profile_namespace)]);
        let mut found = Vec::new();
        for resource in S::hub_kinds() {
            for namespace in &namespaces {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(self.hub.clone(), namespace, &resource);
                let list = api
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .map_err(|err| {
                        Failure::new("hub-write", format!("cannot list {}: {err}", resource.kind))
                    })?;
                found.extend(list.items.into_iter().map(|o| (resource.clone(), o)));
            }
        }
        Ok(found)
    }

    async fn delete_hub_objects(&self, profile_namespace: &str, uid: &str) -> Result<(), Failure> {
        for (resource, object) in self.list_hub_objects(profile_namespace, uid).await? {
            delete_dynamic(&self.hub, &resource, &object)
                .await
                .map_err(|err| Failure::new("hub-write", err))?;
        }
        Ok(())
    }

    // ---- periodic work -----------------------------------------------------------------

    /// Remove our hub objects whose profile is gone or no longer selected, and our finalizer from
    /// profiles no longer selected (they would otherwise wedge on deletion).
    async fn sweep(&self) -> Result<()> {
        // Hub objects are listed before profiles: an object created after this list cannot be
        // mistaken for an orphan, because its profile then shows up in the later profile list.
        let mut hub_objects = Vec::new();
        for resource in S::hub_kinds() {
            for namespace in self.sweep_namespaces() {
                let api: Api<DynamicObject> = match &namespace {
                    Some(ns) => Api::namespaced_with(self.hub.clone(), ns, &resource),
                    None => Api::all_with(self.hub.clone(), &resource),
                };
                let list = api
                    .list(&ListParams::default().labels(&format!("{LABEL_SINK}={}", S::NAME)))
                    .await?;
                hub_objects.extend(list.items.into_iter().map(|o| (resource.clone(), o)));
            }
        }
        let mut selected: HashSet<String> = HashSet::new();
        let mut selected_keys: HashSet<Key> = HashSet::new();
        let mut unselected_with_finalizer = Vec::new();
        let scopes: Vec<Option<String>> = if self.options.inventory_namespaces.is_empty() {
            vec![None]
        } else {
            self.options
                .inventory_namespaces
                .iter()
                .cloned()
                .map(Some)
                .collect()
        };
        for scope in scopes {
            let api: Api<DynamicObject> = match &scope {
                Some(ns) => Api::namespaced_with(self.hub.clone(), ns, &self.profiles),
                None => Api::all_with(self.hub.clone(), &self.profiles),
            };
            let mut params = ListParams::default();
            if let Some(selector) = &self.options.profile_selector {
                params = params.labels(selector);
            }
            let matching = api.list_metadata(&params).await?;
            selected.extend(matching.items.iter().filter_map(|p| p.metadata.uid.clone()));
            selected_keys.extend(matching.items.iter().map(|p| {
                (
                    p.metadata.namespace.clone().unwrap_or_default(),
                    p.metadata.name.clone().unwrap_or_default(),
                )
            }));
            if self.options.profile_selector.is_some() {
                let everything = api.list(&ListParams::default()).await?;
                unselected_with_finalizer.extend(everything.items.into_iter().filter(|p| {
                    p.finalizers().contains(&self.finalizer)
                        && !p.uid().is_some_and(|uid| selected.contains(&uid))
                }));
            }
        }
        for (resource, object) in hub_objects {
            let uid = object
                .labels()
                .get(LABEL_PROFILE_UID)
                .cloned()
                .unwrap_or_default();
            if selected.contains(&uid) {
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
        for profile in unselected_with_finalizer {
            if let Err(failure) = self.apply_finalizer(&profile, false).await {
                warn!(error = %failure.message, "cannot remove our finalizer from an unselected profile");
            }
            self.forget(&key_of(&profile));
        }
        if let Ok(mut states) = self.states.lock() {
            // Forget profiles that are gone or no longer selected (memory stays bounded).
            states.retain(|key, _| selected_keys.contains(key));
        }
        Ok(())
    }

    fn publish_gauges(&self) {
        let now = Timestamp::now();
        let mut counts: HashMap<&'static str, i64> = HashMap::new();
        let mut earliest: Option<f64> = None;
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
                if state.phase != Phase::Suppressed
                    && let Some(registration) = valid
                {
                    let seconds = registration
                        .credential
                        .expires_at
                        .duration_since(now)
                        .as_secs_f64();
                    earliest = Some(earliest.map_or(seconds, |e: f64| e.min(seconds)));
                }
            }
        }
        let counts: Vec<(&'static str, i64)> = counts.into_iter().collect();
        self.sink_metrics.set_states(&counts);
        self.sink_metrics.set_earliest_expiry(earliest);
        let stores = self.stores.lock().map(|s| s.clone()).unwrap_or_default();
        let candidates: Vec<Candidate> = stores
            .iter()
            .flat_map(|s| s.state())
            .filter(|o| o.metadata.deletion_timestamp.is_none())
            .map(|o| candidate(&o))
            .collect();
        let groups = duplicates::count_groups(&candidates);
        self.sink_metrics
            .set_groups(groups.unique, groups.duplicate, groups.ambiguous);
    }

    async fn periodic(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut last_sweep = Instant::now();
        loop {
            self.publish_gauges();
            if last_sweep.elapsed() >= self.options.resync {
                last_sweep = Instant::now();
                if let Err(err) = self.sweep().await {
                    warn!(error = %err, "orphan sweep failed; retrying at the next resync");
                }
            }
            if !sleep_or_stop(Duration::from_secs(2), &stop).await {
                return;
            }
        }
    }
}

async fn reconcile<S: Sink>(
    object: Arc<DynamicObject>,
    ctx: Arc<Ctx<S>>,
) -> std::result::Result<Action, Failure> {
    let engine = &ctx.engine;
    let started = Instant::now();
    let key = key_of(&object);
    let deleting = object.metadata.deletion_timestamp.is_some();
    let result = if deleting {
        engine.cleanup(&object).await
    } else {
        engine.register(&object, &ctx.store).await
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
            engine
                .report(
                    &object_ref(&object, &engine.profiles),
                    &key,
                    &failure,
                    action,
                )
                .await;
            Ok(match failure.retry {
                Some(wait) => Action::requeue(wait),
                None => Action::await_change(),
            })
        }
    }
}

/// The shared core category of a sink failure, for `inventory_bridge_reconciles_total`.
fn core_category(category: &str) -> crate::error::Category {
    use crate::error::Category;
    match category {
        "member-unreachable" | "mint-failed" | "hub-write" => Category::KubeApi,
        "member-refused" => Category::Forbidden,
        "name-conflict" => Category::Conflict,
        "provider-config" => Category::Config,
        _ => Category::InvalidInput,
    }
}

fn error_policy<S: Sink>(_: Arc<DynamicObject>, _: &Failure, _: Arc<Ctx<S>>) -> Action {
    // reconcile reports and schedules its own retries; this is only a safety net.
    Action::requeue(Duration::from_secs(30))
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.category, self.message)
    }
}

impl std::error::Error for Failure {}

fn key_of(object: &DynamicObject) -> Key {
    (object.namespace().unwrap_or_default(), object.name_any())
}

fn object_ref(object: &DynamicObject, resource: &ApiResource) -> ObjectReference {
    object.object_ref(resource)
}

fn candidate(object: &DynamicObject) -> Candidate {
    Candidate {
        namespace: object.namespace().unwrap_or_default(),
        name: object.name_any(),
        member_id: object.labels().get(LABEL_INVENTORY_MEMBER_ID).cloned(),
        created: object.metadata.creation_timestamp.as_ref().map(|t| t.0),
    }
}

fn parse_profile(object: &DynamicObject) -> Result<ClusterProfile, Failure> {
    let value = serde_json::to_value(object).map_err(|err| {
        Failure::new("invalid-profile", format!("cannot read the profile: {err}"))
    })?;
    serde_json::from_value(value).map_err(|err| Failure {
        retry: None,
        ..Failure::new(
            "invalid-profile",
            format!("the profile does not match the ClusterProfile schema: {err}"),
        )
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
    object: &DynamicObject,
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
        for category in [
            "no-access-provider",
            "provider-config",
            "bootstrap-secret",
            "exec-plugin",
            "member-unreachable",
            "member-refused",
            "mint-failed",
            "verify-failed",
            "render",
            "invalid-label",
            "hub-write",
            "name-conflict",
            "invalid-profile",
            "duplicate",
            "ambiguous",
        ] {
            assert_eq!(static_category(category), category);
            assert_ne!(reason(category), "SinkProblem", "{category}");
        }
        assert_eq!(static_category("made-up: with a name"), "other");
    }
}
