//! The generic source engine against a real apiserver, driven by a minimal test adapter whose
//! "native clusters" are labelled ConfigMaps (the engine is generic; OCM and CAPI adapters have
//! their own tests). Proves: create/update/label removal converge, another manager's profile is
//! never touched, steady state sends no writes (apiserver's own counters), delete and deselect
//! remove profiles, and a restart converges with no duplicates or orphans.

// Integration test file: helpers panic on a broken fixture, which fails the test as it should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
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
        let labels = native
            .labels()
            .iter()
            .filter(|(k, _)| k.starts_with("team"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Projection {
            profiles: vec![DesiredProfile {
                namespace: self.inventory.clone(),
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
    let args = harness::in_process_runtime_args("test", "info");
    let mut metrics = Metrics::new("test-source");
    let source_metrics = SourceMetrics::register(&mut metrics);
    let runtime = Runtime::new("test-source", args, client, metrics);
    let stop = runtime.shutdown_token();
    let settings = SourceSettings {
        watch_namespace: Some(sources.to_string()),
        args: SourceArgs {
            cluster_selector: Some("test-cluster=yes".into()),
            resync_seconds: 3600,
            concurrency: 4,
        },
    };
    let inventory = inventory.to_string();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let task = tokio::spawn(runtime.run_with_listener(listener, move |context| {
        let source = ConfigMapSource {
            inventory: inventory.clone(),
            manager,
        };
        run_source(source, settings.clone(), source_metrics.clone(), context)
    }));
    Running { stop, task }
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
        wait_for(
            Duration::from_secs(20),
            &format!("{reason} event on {object}"),
            || {
                let events = events.clone();
                async move {
                    Ok(events
                        .list(&ListParams::default())
                        .await?
                        .items
                        .into_iter()
                        .find(|e| {
                            e.reason.as_deref() == Some(reason)
                                && e.regarding.as_ref().and_then(|r| r.name.as_deref())
                                    == Some(object)
                        }))
                }
            },
        )
        .await
        .unwrap();
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
