//! The generic source engine against a real apiserver, driven by a minimal test adapter whose
//! "native clusters" are labelled ConfigMaps (the engine is generic; OCM and CAPI adapters have
//! their own tests). Proves: create/update/label removal converge, another manager's profile is
//! never touched, steady state sends no writes (apiserver's own counters), delete and deselect
//! remove profiles, and a restart converges with no duplicates or orphans.

// Integration test file: helpers panic on a broken fixture, which fails the test as it should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use adapters::profile::{ClusterProfile, ClusterVersion, LABEL_CLUSTER_MANAGER};
use adapters::runtime::{Metrics, Runtime};
use adapters::source::{
    DesiredProfile, LABEL_SOURCE, Observed, Problem, Projection, Source, SourceArgs, SourceMetrics,
    SourceSettings, run_source,
};
use harness::{
    ControlPlane, ControlPlaneOptions, ForeignCrd, install_crd, install_crds, shared_fleet,
    test_namespace, wait_for,
};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

struct ConfigMapSource {
    inventory: String,
    manager: &'static str,
    /// Something the engine does not watch, stamped on every profile as the label `epoch`: only
    /// a resync can carry its changes to the profiles.
    epoch: Option<Arc<AtomicU32>>,
}

impl Source for ConfigMapSource {
    type Native = ConfigMap;
    type Extra = ();

    fn name(&self) -> &'static str {
        "test-source"
    }

    fn cluster_manager(&self) -> &str {
        self.manager
    }

    fn inventory_namespace(&self) -> Option<&str> {
        Some(&self.inventory)
    }

    fn native_api(&self, client: Client, namespace: Option<&str>) -> Api<ConfigMap> {
        match namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        }
    }

    async fn observe(&self, _: &Client, _: &ConfigMap) -> Result<(), Problem> {
        Ok(())
    }

    fn project(&self, native: &ConfigMap, _: &Observed<'_, ()>) -> Result<Projection, Problem> {
        let data = native.data.clone().unwrap_or_default();
        let mut problems = Vec::new();
        if data.contains_key("bad") {
            problems.push(Problem::invalid("the bad key is set"));
        }
        let mut labels: BTreeMap<String, String> = native
            .labels()
            .iter()
            .filter(|(k, _)| k.starts_with("team"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(epoch) = &self.epoch {
            labels.insert("epoch".into(), epoch.load(Ordering::SeqCst).to_string());
        }
        Ok(Projection {
            profiles: vec![DesiredProfile {
                // A projection bug stands in for `namespace`: the engine must refuse to follow it.
                namespace: data
                    .get("namespace")
                    .cloned()
                    .unwrap_or_else(|| self.inventory.clone()),
                name: native.name_any(),
                display_name: Some(native.name_any()),
                labels,
                status: adapters::profile::ClusterProfileStatus {
                    version: data.get("version").map(|v| ClusterVersion {
                        kubernetes: Some(v.clone()),
                    }),
                    ..Default::default()
                },
            }],
            problems,
            ..Projection::default()
        })
    }
}

struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<adapters::Result<()>>,
}

async fn start(client: Client, sources: &str, inventory: &str) -> Running {
    start_as(client, sources, inventory, "test-manager").await
}

async fn start_as(
    client: Client,
    sources: &str,
    inventory: &str,
    manager: &'static str,
) -> Running {
    let options = StartOptions {
        manager,
        ..StartOptions::default()
    };
    start_engine(client, sources, inventory, options).await.0
}

struct StartOptions {
    manager: &'static str,
    liveness_stall_seconds: Option<u64>,
    resync_seconds: u64,
    epoch: Option<Arc<AtomicU32>>,
}

impl Default for StartOptions {
    fn default() -> Self {
        Self {
            manager: "test-manager",
            liveness_stall_seconds: None,
            resync_seconds: 3600,
            epoch: None,
        }
    }
}

/// Start the engine in-process; returns it and its HTTP address.
async fn start_engine(
    client: Client,
    sources: &str,
    inventory: &str,
    options: StartOptions,
) -> (Running, std::net::SocketAddr) {
    let mut args = harness::in_process_runtime_args("test", "info");
    if let Some(stall) = options.liveness_stall_seconds {
        args.liveness_stall_seconds = stall;
    }
    let mut metrics = Metrics::new("test-source");
    let source_metrics = SourceMetrics::register(&mut metrics);
    let runtime = Runtime::new("test-source", args, client, metrics);
    let stop = runtime.shutdown_token();
    let settings = SourceSettings {
        watch_namespace: Some(sources.to_string()),
        args: SourceArgs {
            cluster_selector: Some("test-cluster=yes".into()),
            resync_seconds: options.resync_seconds,
            concurrency: 4,
        },
    };
    let inventory = inventory.to_string();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(runtime.run_with_listener(listener, move |context| {
        let source = ConfigMapSource {
            inventory: inventory.clone(),
            manager: options.manager,
            epoch: options.epoch.clone(),
        };
        run_source(source, settings.clone(), source_metrics.clone(), context)
    }));
    (Running { stop, task }, address)
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

fn cluster(
    name: &str,
    namespace: &str,
    labels: &[(&str, &str)],
    data: &[(&str, &str)],
) -> ConfigMap {
    let mut all_labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all_labels.insert("test-cluster".into(), "yes".into());
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(all_labels),
            ..ObjectMeta::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..ConfigMap::default()
    }
}

async fn wait_profile(
    profiles: &Api<ClusterProfile>,
    name: &str,
    what: &str,
    check: impl Fn(&ClusterProfile) -> bool,
) -> ClusterProfile {
    harness::wait_object(profiles, name, what, Duration::from_secs(20), check)
        .await
        .unwrap()
}

async fn wait_gone(profiles: &Api<ClusterProfile>, name: &str) {
    harness::wait_object_gone(profiles, name, Duration::from_secs(20))
        .await
        .unwrap();
}

/// Wait for an Event with `reason` about `object` whose note contains `note`.
async fn wait_event(events: &Api<Event>, object: &str, reason: &str, note: &str) {
    harness::wait_event_about(events, object, reason, note, Duration::from_secs(20))
        .await
        .unwrap();
}

async fn profile_writes(client: &Client) -> u64 {
    harness::apiserver_metrics::request_count(
        client,
        harness::apiserver_metrics::WRITE_VERBS,
        "clusterprofiles",
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn source_engine_converges_and_stays_quiet() {
    let fleet = shared_fleet().await.unwrap();
    // A member of its own: the zero-write count must not see other tests' profile writes.
    let client = fleet.members[0].client().await.unwrap();
    install_crd(&client, adapters::crd::cluster_profile_crd())
        .await
        .unwrap();
    let sources = test_namespace(&client, "sources").await.unwrap();
    let inventory = test_namespace(&client, "inventory").await.unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &sources);
    let profiles: Api<ClusterProfile> = Api::namespaced(client.clone(), &inventory);
    let pp = PostParams::default();

    // Another manager's profile with the name of one of our clusters: never touched.
    let mut foreign = ClusterProfile::new(
        "taken",
        adapters::profile::ClusterProfileSpec {
            display_name: Some("someone else's".into()),
            cluster_manager: adapters::profile::ClusterManager {
                name: "other-manager".into(),
            },
        },
    );
    foreign.metadata.namespace = Some(inventory.clone());
    foreign.metadata.labels = Some(BTreeMap::from([(
        LABEL_CLUSTER_MANAGER.to_string(),
        "other-manager".to_string(),
    )]));
    let foreign = profiles.create(&pp, &foreign).await.unwrap();

    let running = start(client.clone(), &sources, &inventory).await;
    configmaps
        .create(
            &pp,
            &cluster(
                "alpha",
                &sources,
                &[("team", "a"), ("team-tier", "gold")],
                &[("version", "v1.36.3")],
            ),
        )
        .await
        .unwrap();
    configmaps
        .create(&pp, &cluster("taken", &sources, &[], &[]))
        .await
        .unwrap();
    configmaps
        .create(&pp, &cluster("beta", &sources, &[], &[("bad", "yes")]))
        .await
        .unwrap();

    let alpha = wait_profile(&profiles, "alpha", "alpha projected", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.version.clone())
            .and_then(|v| v.kubernetes)
            .as_deref()
            == Some("v1.36.3")
    })
    .await;
    let labels = alpha.labels();
    assert_eq!(
        labels.get(LABEL_CLUSTER_MANAGER).map(String::as_str),
        Some("test-manager")
    );
    assert_eq!(
        labels.get(LABEL_SOURCE).map(String::as_str),
        Some("test-source")
    );
    assert_eq!(labels.get("team-tier").map(String::as_str), Some("gold"));
    assert_eq!(alpha.spec.cluster_manager.name, "test-manager");
    wait_profile(
        &profiles,
        "beta",
        "beta projected despite its problem",
        |_| true,
    )
    .await;

    // The foreign profile is left as it was, and the conflict is an Event on the source object.
    let events: Api<Event> = Api::namespaced(client.clone(), &sources);
    for (object, reason) in [("taken", "Conflict"), ("beta", "InvalidInput")] {
        wait_event(&events, object, reason, "").await;
    }
    let still_foreign = profiles.get("taken").await.unwrap();
    assert_eq!(
        still_foreign.metadata.resource_version,
        foreign.metadata.resource_version
    );

    // Update: a label changes, another disappears.
    configmaps
        .patch(
            "alpha",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"metadata": {"labels": {"team": "b", "team-tier": null}}}),
            ),
        )
        .await
        .unwrap();
    wait_profile(&profiles, "alpha", "alpha labels follow", |p| {
        p.labels().get("team").map(String::as_str) == Some("b")
            && !p.labels().contains_key("team-tier")
    })
    .await;

    // Steady state: no profile writes at all, counted by the apiserver itself.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = profile_writes(&client).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        profile_writes(&client).await,
        before,
        "steady state must be quiet"
    );

    // Delete and deselect: the profiles go.
    configmaps
        .delete("alpha", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&profiles, "alpha").await;
    configmaps
        .patch(
            "beta",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"test-cluster": "no"}}})),
        )
        .await
        .unwrap();
    wait_gone(&profiles, "beta").await;

    // Restart mid-way: while stopped, one cluster appears and one disappears.
    configmaps
        .create(&pp, &cluster("gamma", &sources, &[], &[]))
        .await
        .unwrap();
    wait_profile(&profiles, "gamma", "gamma projected", |_| true).await;
    running.stop().await;
    configmaps
        .delete("gamma", &DeleteParams::default())
        .await
        .unwrap();
    configmaps
        .create(&pp, &cluster("delta", &sources, &[], &[]))
        .await
        .unwrap();
    let running = start(client.clone(), &sources, &inventory).await;
    wait_profile(&profiles, "delta", "delta projected after restart", |_| {
        true
    })
    .await;
    wait_gone(&profiles, "gamma").await;
    let names: Vec<String> = profiles
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| p.name_any())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec!["delta".to_string(), "taken".to_string()],
        "no duplicates or orphans"
    );
    assert_eq!(
        profiles
            .get("taken")
            .await
            .unwrap()
            .metadata
            .resource_version,
        foreign.metadata.resource_version
    );
    running.stop().await;

    // Another inventory namespace: the source watches every profile there and only its own
    // elsewhere, so it still finds (and sweeps) what it wrote into the old one, leaves the
    // foreign profile alone, and refuses a profile projected outside its inventory.
    let moved = test_namespace(&client, "moved").await.unwrap();
    let moved_profiles: Api<ClusterProfile> = Api::namespaced(client.clone(), &moved);
    configmaps
        .create(
            &pp,
            &cluster("stray", &sources, &[], &[("namespace", &inventory)]),
        )
        .await
        .unwrap();
    let running = start(client.clone(), &sources, &moved).await;
    wait_profile(
        &moved_profiles,
        "delta",
        "delta in the new inventory",
        |_| true,
    )
    .await;
    wait_gone(&profiles, "delta").await;
    wait_event(
        &events,
        "stray",
        "ConfigError",
        "outside the inventory namespace",
    )
    .await;
    let left: Vec<String> = profiles
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert_eq!(left, ["taken"], "nothing written outside the inventory");
    assert_eq!(
        profiles
            .get("taken")
            .await
            .unwrap()
            .metadata
            .resource_version,
        foreign.metadata.resource_version
    );
    running.stop().await;
}

/// The API version each Apply entry of `manager` in the object's managedFields was written with
/// (main resource and status subresource).
fn applied_versions(profile: &ClusterProfile, manager: &str) -> Vec<(String, String)> {
    let mut versions: Vec<(String, String)> = profile
        .managed_fields()
        .iter()
        .filter(|entry| entry.manager.as_deref() == Some(manager))
        .filter(|entry| entry.operation.as_deref() == Some("Apply"))
        .map(|entry| {
            (
                entry.subresource.clone().unwrap_or_default(),
                entry.api_version.clone().unwrap_or_default(),
            )
        })
        .collect();
    versions.sort();
    versions
}

#[tokio::test]
async fn source_writes_v1alpha1_on_an_upstream_v0_1_hub_and_v1alpha2_after_the_upgrade() {
    // A hub of its own: this test replaces the ClusterProfile CRD.
    let hub = ControlPlane::start(ControlPlaneOptions::named("upgrade-hub"))
        .await
        .unwrap();
    let client = hub.client().await.unwrap();
    install_crds(&client, &[ForeignCrd::ClusterProfile])
        .await
        .unwrap();
    let sources = test_namespace(&client, "sources").await.unwrap();
    let inventory = test_namespace(&client, "inventory").await.unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &sources);
    let profiles: Api<ClusterProfile> = Api::namespaced(client.clone(), &inventory);
    let pp = PostParams::default();
    configmaps
        .create(
            &pp,
            &cluster(
                "alpha",
                &sources,
                &[("team", "a")],
                &[("version", "v1.35.0")],
            ),
        )
        .await
        .unwrap();

    // Upstream v0.1.x serves v1alpha1 only: the source writes that.
    let running = start(client.clone(), &sources, &inventory).await;
    let before = wait_profile(&profiles, "alpha", "alpha projected as v1alpha1", |p| {
        p.status.as_ref().and_then(|s| s.version.clone()).is_some()
    })
    .await;
    let v1alpha1 = "multicluster.x-k8s.io/v1alpha1".to_string();
    let v1alpha2 = "multicluster.x-k8s.io/v1alpha2".to_string();
    assert_eq!(
        applied_versions(&before, "test-source"),
        [
            (String::new(), v1alpha1.clone()),
            ("status".into(), v1alpha1)
        ]
    );
    running.stop().await;

    // Upgrade the hub to our CRD (v1alpha1 + v1alpha2) and restart the source.
    install_crd(&client, adapters::crd::cluster_profile_crd())
        .await
        .unwrap();
    let running = start(client.clone(), &sources, &inventory).await;
    // It adopts what it wrote before and has nothing to rewrite: no profile write at all.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let writes = profile_writes(&client).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(profile_writes(&client).await, writes, "nothing to rewrite");
    let adopted = profiles.get("alpha").await.unwrap();
    assert_eq!(adopted.metadata.uid, before.metadata.uid);
    assert_eq!(
        adopted.metadata.resource_version,
        before.metadata.resource_version
    );

    // A change now goes through v1alpha2, main resource and status alike.
    configmaps
        .patch(
            "alpha",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "metadata": {"labels": {"team": "b"}},
                "data": {"version": "v1.36.3"},
            })),
        )
        .await
        .unwrap();
    let after = wait_profile(&profiles, "alpha", "alpha updated through v1alpha2", |p| {
        p.labels().get("team").map(String::as_str) == Some("b")
            && p.status
                .as_ref()
                .and_then(|s| s.version.clone())
                .and_then(|v| v.kubernetes)
                .as_deref()
                == Some("v1.36.3")
    })
    .await;
    assert_eq!(after.metadata.uid, before.metadata.uid);
    assert_eq!(
        applied_versions(&after, "test-source"),
        [
            (String::new(), v1alpha2.clone()),
            ("status".into(), v1alpha2)
        ]
    );
    // Deletion works through v1alpha2 as well.
    configmaps
        .delete("alpha", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&profiles, "alpha").await;
    running.stop().await;
}

#[tokio::test]
async fn source_refuses_a_cluster_manager_name_v1alpha2_rejects() {
    let fleet = shared_fleet().await.unwrap();
    let client = fleet.members[1].client().await.unwrap();
    let sources = test_namespace(&client, "sources").await.unwrap();
    // Whatever the hub serves (here: no ClusterProfile CRD at all), the name is refused first.
    for (manager, reason) in [
        ("", "it is empty"),
        ("Not A Label", "it is not a valid label value"),
        (
            "a-manager-name-that-is-far-too-long-to-be-a-label-value-of-63-chars",
            "characters long",
        ),
    ] {
        let running = start_as(client.clone(), &sources, "fleet", manager).await;
        let result = tokio::time::timeout(Duration::from_secs(10), running.task)
            .await
            .expect("refused at start, not later")
            .unwrap();
        let err = result.expect_err("a name v1alpha2 rejects is refused");
        assert_eq!(err.category(), adapters::Category::Config);
        let message = err.to_string();
        assert!(
            message.contains(&format!("{manager:?} is refused")),
            "{message}"
        );
        assert!(message.contains(reason), "{message}");
        assert!(message.contains("v1alpha2"), "{message}");
    }
}

/// Start the engine with `client` and `--liveness-stall-seconds stall`; returns the HTTP address.
async fn start_with(
    client: Client,
    sources: &str,
    inventory: &str,
    stall: u64,
) -> (Running, std::net::SocketAddr) {
    let options = StartOptions {
        liveness_stall_seconds: Some(stall),
        ..StartOptions::default()
    };
    start_engine(client, sources, inventory, options).await
}

/// A ServiceAccount on `control_plane` that may read ConfigMaps and ClusterProfiles and publish
/// Events, but not write profiles: a fleet-wide 403 on every profile apply.
async fn token_without_profile_writes(admin: &Client, namespace: &str) -> String {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{
        ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject,
    };
    let rule = |group: &str, resource: &str, verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![group.into()]),
        resources: Some(vec![resource.into()]),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    };
    let name = format!("no-profile-writes-{namespace}");
    Api::<ClusterRole>::all(admin.clone())
        .create(
            &PostParams::default(),
            &ClusterRole {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..ObjectMeta::default()
                },
                rules: Some(vec![
                    rule(
                        "multicluster.x-k8s.io",
                        "clusterprofiles",
                        &["get", "list", "watch"],
                    ),
                    rule("", "configmaps", &["get", "list", "watch"]),
                    rule("events.k8s.io", "events", &["create", "patch"]),
                ]),
                ..ClusterRole::default()
            },
        )
        .await
        .unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    accounts
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some("source".into()),
                    namespace: Some(namespace.into()),
                    ..ObjectMeta::default()
                },
                ..ServiceAccount::default()
            },
        )
        .await
        .unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(
            &PostParams::default(),
            &ClusterRoleBinding {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..ObjectMeta::default()
                },
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "ClusterRole".into(),
                    name,
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: "source".into(),
                    namespace: Some(namespace.into()),
                    ..Subject::default()
                }]),
            },
        )
        .await
        .unwrap();
    let minted: TokenRequest = accounts
        .create_subresource(
            "token",
            "source",
            &PostParams::default(),
            &TokenRequest {
                spec: Some(TokenRequestSpec {
                    expiration_seconds: Some(3600),
                    ..TokenRequestSpec::default()
                }),
                ..TokenRequest::default()
            },
        )
        .await
        .unwrap();
    minted.status.and_then(|s| s.token).unwrap()
}

/// Hub RBAC missing a verb for every profile (a fleet-wide 403): each object's failed writes
/// back off exponentially, so the attempts in the second 20 s are far fewer than in the first
/// (flat 10 s retries would make them equal). Counted by the apiserver itself: requests refused
/// by RBAC never reach `apiserver_request_total` (it counts requests that reached a handler), so
/// the count comes from the apiserver's audit log (403 answers to profile patches).
#[tokio::test]
async fn a_fleet_wide_403_is_retried_with_backoff_per_object() {
    let control_plane =
        harness::ControlPlane::start(harness::ControlPlaneOptions::named("rbac").with_audit())
            .await
            .unwrap();
    let admin = control_plane.client().await.unwrap();
    install_crd(&admin, adapters::crd::cluster_profile_crd())
        .await
        .unwrap();
    let sources = test_namespace(&admin, "sources").await.unwrap();
    let inventory = test_namespace(&admin, "inventory").await.unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(admin.clone(), &sources);
    const OBJECTS: u64 = 5;
    for i in 0..OBJECTS {
        configmaps
            .create(
                &PostParams::default(),
                &cluster(&format!("c{i}"), &sources, &[], &[]),
            )
            .await
            .unwrap();
    }
    let token = token_without_profile_writes(&admin, &sources).await;
    let client = control_plane.token_client(&token).await.unwrap();
    let control_plane = &control_plane;
    let refused = || async move {
        control_plane
            .audit_events()
            .unwrap_or_default()
            .iter()
            .filter(|e| {
                e.verb == "patch"
                    && e.response_status.as_ref().is_some_and(|s| s.code == 403)
                    && e.object_ref
                        .as_ref()
                        .is_some_and(|o| o.resource == "clusterprofiles")
            })
            .count() as u64
    };
    let refused = &refused;
    let base = refused().await;
    let (running, _) = start_with(client, &sources, &inventory, 300).await;
    wait_for(
        Duration::from_secs(30),
        "first refused applies",
        || async move { Ok((refused().await > base).then_some(())) },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let first = refused().await - base;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let second = refused().await - base - first;
    println!(
        "MEASURED refused profile applies of {OBJECTS} objects: {first} in the first 20 s, {second} in the next 20 s"
    );
    // Backoff (2 s, 4 s, 8 s, 16 s...): ~4 attempts per object, then ~1. Flat retries: equal.
    assert!(first >= 3 * OBJECTS, "every object is retried: {first}");
    assert!(
        second * 2 <= first,
        "attempts must thin out over time: {first} then {second}"
    );
    assert!(second >= 1, "still retried: {second}");
    running.stop().await;
}

/// `/healthz` reflects a stuck watch and only that: quiet but healthy watches stay alive for many
/// times the stall bound; with the hub's apiserver stopped, watch errors pile up without progress
/// and `/healthz` fails; once the apiserver is back and a watch event arrives, it heals.
#[tokio::test]
async fn healthz_fails_while_watches_are_stuck_and_never_for_a_quiet_watch() {
    let mut control_plane =
        harness::ControlPlane::start(harness::ControlPlaneOptions::named("stuck"))
            .await
            .unwrap();
    let client = control_plane.client().await.unwrap();
    install_crd(&client, adapters::crd::cluster_profile_crd())
        .await
        .unwrap();
    let sources = test_namespace(&client, "sources").await.unwrap();
    let inventory = test_namespace(&client, "inventory").await.unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &sources);
    configmaps
        .create(&PostParams::default(), &cluster("c", &sources, &[], &[]))
        .await
        .unwrap();
    let stall = 3;
    let (running, address) = start_with(client.clone(), &sources, &inventory, stall).await;
    let status = |path: &'static str| async move {
        harness::http_get(address, path)
            .await
            .unwrap_or((0, String::new()))
    };
    wait_for(Duration::from_secs(30), "ready", || async move {
        Ok((status("/readyz").await.0 == 200).then_some(()))
    })
    .await
    .unwrap();

    // Quiet: nothing changes for more than three stall bounds; alive throughout.
    let quiet = std::time::Instant::now();
    while quiet.elapsed() < Duration::from_secs(3 * stall + 2) {
        let (code, body) = status("/healthz").await;
        assert_eq!(code, 200, "a quiet watch was reported dead: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Stuck: the apiserver is gone; watches fail again and again without progress.
    control_plane.stop_apiserver();
    let body = wait_for(Duration::from_secs(60), "/healthz failing", || async move {
        let (code, body) = status("/healthz").await;
        Ok((code == 503).then_some(body))
    })
    .await
    .unwrap();
    assert!(body.contains("watches failing"), "{body}");
    let (_, metrics) = status("/metrics").await;
    assert!(
        metrics.contains(
            "inventory_bridge_watch_errors_total{adapter=\"test-source\",category=\"kube-api\"}"
        ),
        "{metrics}"
    );

    // Back: the apiserver returns and a change arrives by watch; alive again.
    control_plane.start_apiserver().await.unwrap();
    wait_for(Duration::from_secs(90), "/healthz healed", || {
        let configmaps = configmaps.clone();
        async move {
            let _ = configmaps
                .patch(
                    "c",
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"data": {"touched": format!("{:?}", std::time::Instant::now())}})),
                )
                .await;
            Ok((status("/healthz").await.0 == 200).then_some(()))
        }
    })
    .await
    .unwrap();
    running.stop().await;
}

/// The periodic resync re-projects every object once per period, paced over the period: a change
/// only a resync can see (the source's `epoch`, which no watch reports) reaches every profile
/// within about a period, and not all in the same moment (a requeue per object, as before, fired
/// the whole fleet's resyncs together, since they had converged together).
#[tokio::test]
async fn the_resync_reprojects_every_object_once_per_period_spread_over_it() {
    const CLUSTERS: usize = 20;
    const PERIOD_SECONDS: u64 = 10;
    let fleet = shared_fleet().await.unwrap();
    let client = fleet.members[1].client().await.unwrap();
    install_crd(&client, adapters::crd::cluster_profile_crd())
        .await
        .unwrap();
    let sources = test_namespace(&client, "resync-sources").await.unwrap();
    let inventory = test_namespace(&client, "resync-inventory").await.unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &sources);
    let profiles: Api<ClusterProfile> = Api::namespaced(client.clone(), &inventory);
    for index in 0..CLUSTERS {
        let native = cluster(&format!("c{index}"), &sources, &[], &[]);
        configmaps
            .create(&PostParams::default(), &native)
            .await
            .unwrap();
    }
    let epoch = Arc::new(AtomicU32::new(1));
    let options = StartOptions {
        resync_seconds: PERIOD_SECONDS,
        epoch: Some(epoch.clone()),
        ..StartOptions::default()
    };
    let started = tokio::time::Instant::now();
    let (running, _) = start_engine(client.clone(), &sources, &inventory, options).await;

    let epochs = || async {
        let listed = profiles.list(&ListParams::default()).await?;
        Ok::<_, kube::Error>(
            listed
                .items
                .iter()
                .map(|p| (p.name_any(), p.labels().get("epoch").cloned()))
                .collect::<BTreeMap<_, _>>(),
        )
    };
    wait_for(
        Duration::from_secs(30),
        "every profile at epoch 1",
        || async {
            let now = epochs().await?;
            let done = now.len() == CLUSTERS && now.values().all(|e| e.as_deref() == Some("1"));
            Ok(done.then_some(()))
        },
    )
    .await
    .unwrap();

    // Half-way between resyncs: with a requeue per object, the objects (converged together at
    // the start) would all see the change in the same moment, one period after the start.
    tokio::time::sleep_until(started + Duration::from_secs(PERIOD_SECONDS * 3 / 2)).await;
    epoch.store(2, Ordering::SeqCst);
    let changed = tokio::time::Instant::now();
    let mut seen_at = BTreeMap::new();
    let deadline = changed + Duration::from_secs(3 * PERIOD_SECONDS);
    while seen_at.len() < CLUSTERS && tokio::time::Instant::now() < deadline {
        for (name, epoch) in epochs().await.unwrap() {
            if epoch.as_deref() == Some("2") {
                seen_at.entry(name).or_insert_with(|| changed.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.stop().await;
    assert_eq!(
        seen_at.len(),
        CLUSTERS,
        "re-projected by the resync: {seen_at:?}"
    );
    let first = seen_at.values().min().copied().unwrap_or_default();
    let last = seen_at.values().max().copied().unwrap_or_default();
    println!(
        "MEASURED resync: {CLUSTERS} objects re-projected from {first:?} to {last:?} after the change (period {PERIOD_SECONDS} s)"
    );
    // 20 objects in shares of 2 per second: the last is handed over 9 ticks after the first.
    assert!(
        last - first >= Duration::from_secs(PERIOD_SECONDS / 2),
        "the resync came as a burst: {seen_at:?}"
    );
}
