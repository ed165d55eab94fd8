//! ocm-source against real control planes. OCM's agents do not run here: the tests play them
//! visibly (`play_registration_agent` sets ManagedCluster status, `play_registration_hub` creates
//! the cluster's hub namespace, `play_clusterset_binding_controller` sets a binding's Bound
//! condition, `play_managed_serviceaccount_agent` creates the spoke ServiceAccount and the hub
//! token Secret, `play_work_agent` applies a ManifestWork's manifests to the spoke).
//!
//! Each test runs its adapter against a control plane of its own: an adapter owns every profile
//! labelled with its name on its hub (its orphan sweep removes those whose cluster it does not
//! see), so two adapters with different selectors must not share a hub.

// Integration test file: helpers panic on a broken fixture, which fails the test as it should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use adapters::member::MemberIdentity;
use adapters::profile::{
    CONDITION_CONTROL_PLANE_HEALTHY, CONDITION_JOINED, ClusterManager, ClusterProfile,
    ClusterProfileSpec, LABEL_CLUSTER_MANAGER, LABEL_CLUSTER_SET, LABEL_INVENTORY_MEMBER_ID,
};
use adapters::runtime::{Metrics, Runtime};
use adapters::source::{
    ANNOTATION_SOURCE_OBJECT, LABEL_SOURCE, SourceArgs, SourceMetrics, SourceSettings, run_source,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use harness::{ControlPlane, ForeignCrd, install_crd, install_crds, shared_fleet, wait_for};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams,
};
use kube::core::ApiResource;
use kube::{Client, ResourceExt};
use ocm_source::bootstrap::{Bootstrap, managed_service_account_resource, manifest_work_resource};
use ocm_source::types::ManagedCluster;
use ocm_source::{Config, OcmSource, Placement};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Running the adapter in-process, exactly as its main does.

struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<adapters::Result<()>>,
    metrics: SocketAddr,
}

async fn start(client: Client, config: Config, selector: &str) -> Running {
    let args = harness::in_process_runtime_args("test", "info");
    let mut metrics = Metrics::new(ocm_source::NAME);
    let source_metrics = SourceMetrics::register(&mut metrics);
    let runtime = Runtime::new(ocm_source::NAME, args, client, metrics);
    let stop = runtime.shutdown_token();
    let settings = SourceSettings {
        watch_namespace: None,
        args: SourceArgs {
            cluster_selector: Some(selector.to_string()),
            resync_seconds: 3600,
            concurrency: 4,
        },
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = listener.local_addr().unwrap();
    let task = tokio::spawn(runtime.run_with_listener(listener, move |context| {
        let source = OcmSource::new(context.client.clone(), config.clone());
        run_source(source, settings.clone(), source_metrics.clone(), context)
    }));
    Running {
        stop,
        task,
        metrics: metrics_addr,
    }
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }

    /// The adapter's own /metrics text.
    async fn metrics(&self) -> String {
        harness::http_get(self.metrics, "/metrics").await.unwrap().1
    }

    async fn problems(&self, category: &str) -> u64 {
        let needle = format!(
            "inventory_bridge_problems_total{{adapter=\"ocm-source\",category=\"{category}\"}} "
        );
        self.metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(&needle)?.trim().parse().ok())
            .unwrap_or(0)
    }
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}{:x}", nanos % 0xfffff)
}

async fn namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Playing OCM.

/// Create a ManagedCluster as a cluster admin accepting a cluster would (spec only).
async fn create_cluster(
    clusters: &Api<ManagedCluster>,
    name: &str,
    labels: &[(&str, &str)],
    url: &str,
    ca_bundle: Option<String>,
) {
    let mut client_config = json!({"url": url});
    if let Some(ca) = ca_bundle {
        client_config["caBundle"] = json!(ca);
    }
    let object = json!({
        "apiVersion": "cluster.open-cluster-management.io/v1",
        "kind": "ManagedCluster",
        "metadata": {"name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
        "spec": {
            "hubAcceptsClient": true,
            "managedClusterClientConfigs": [client_config],
        },
    });
    clusters
        .patch(
            name,
            &PatchParams::apply("test-admin"),
            &Patch::Apply(&object),
        )
        .await
        .unwrap();
}

fn condition(type_: &str, status: &str, reason: &str) -> Value {
    json!({
        "type": type_, "status": status, "reason": reason,
        "message": format!("{type_} {status}"),
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    })
}

/// What OCM's registration agent reports on the hub for its cluster.
async fn play_registration_agent(
    clusters: &Api<ManagedCluster>,
    name: &str,
    available: &str,
    version: &str,
    claims: &[(&str, &str)],
) {
    let status = json!({"status": {
        "conditions": [
            condition("HubAcceptedManagedCluster", "True", "HubClusterAdminAccepted"),
            condition("ManagedClusterJoined", "True", "ManagedClusterJoined"),
            condition("ManagedClusterConditionAvailable", available,
                      if available == "True" { "ManagedClusterAvailable" } else { "ManagedClusterLeaseUpdateStopped" }),
        ],
        "version": {"kubernetes": version},
        "clusterClaims": claims.iter().map(|(n, v)| json!({"name": n, "value": v})).collect::<Vec<_>>(),
    }});
    clusters
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

/// OCM's hub registration controller creates a namespace named after each accepted cluster.
async fn play_registration_hub(client: &Client, cluster: &str) {
    namespace(client, cluster).await;
}

/// OCM's clusterset controller sets a binding's Bound condition.
async fn play_clusterset_binding_controller(
    bindings: &Api<DynamicObject>,
    name: &str,
    bound: &str,
) {
    let status = json!({"status": {"conditions": [condition("Bound", bound, if bound == "True" { "ClusterSetBound" } else { "ClusterSetNotFound" })]}});
    bindings
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

/// OCM's managed-serviceaccount agent: creates the ServiceAccount on the spoke, requests a token
/// for it there, and stores token and CA in the hub Secret named after the ManagedServiceAccount.
async fn play_managed_serviceaccount_agent(
    hub: &Client,
    spoke: &ControlPlane,
    cluster: &str,
    name: &str,
    spoke_namespace: &str,
) {
    let msas: Api<DynamicObject> =
        Api::namespaced_with(hub.clone(), cluster, &managed_service_account_resource());
    let msa = msas.get(name).await.unwrap();
    let validity = msa.data["spec"]["rotation"]["validity"]
        .as_str()
        .unwrap()
        .to_string();
    let seconds: i64 = ocm_source::args::parse_duration(&validity)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap();
    let spoke_client = spoke.client().await.unwrap();
    let namespaces: Api<Namespace> = Api::all(spoke_client.clone());
    if namespaces.get_opt(spoke_namespace).await.unwrap().is_none() {
        namespace(&spoke_client, spoke_namespace).await;
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(spoke_client.clone(), spoke_namespace);
    accounts
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    labels: Some(BTreeMap::from([(
                        "authentication.open-cluster-management.io/is-managed-serviceaccount"
                            .to_string(),
                        "true".to_string(),
                    )])),
                    ..ObjectMeta::default()
                },
                ..ServiceAccount::default()
            },
        )
        .await
        .unwrap();
    let token = accounts
        .create_token_request(
            name,
            &PostParams::default(),
            &TokenRequest {
                spec: Some(TokenRequestSpec {
                    audiences: Some(vec![]),
                    expiration_seconds: Some(seconds),
                    ..TokenRequestSpec::default()
                }),
                ..TokenRequest::default()
            },
        )
        .await
        .unwrap()
        .status
        .unwrap()
        .token
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(hub.clone(), cluster);
    secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    // As the addon writes it: marked, and owned by its ManagedServiceAccount.
                    labels: Some(BTreeMap::from([(
                        "authentication.open-cluster-management.io/is-managed-serviceaccount"
                            .to_string(),
                        "true".to_string(),
                    )])),
                    owner_references: Some(vec![
                        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                            api_version: "authentication.open-cluster-management.io/v1beta1".into(),
                            kind: "ManagedServiceAccount".into(),
                            name: name.into(),
                            uid: msa.uid().unwrap_or_default(),
                            ..Default::default()
                        },
                    ]),
                    ..ObjectMeta::default()
                },
                string_data: Some(BTreeMap::from([
                    ("token".to_string(), token),
                    ("ca.crt".to_string(), spoke.ca_pem().to_string()),
                ])),
                ..Secret::default()
            },
        )
        .await
        .unwrap();
    msas.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"tokenSecretRef": {"name": name, "lastRefreshTimestamp": "2026-01-01T00:00:00Z"}}})),
    )
    .await
    .unwrap();
}

/// One object a played agent put on the spoke.
#[derive(Clone, Debug, PartialEq)]
struct Applied {
    resource: ApiResource,
    namespace: Option<String>,
    name: String,
}

fn spoke_api(client: &Client, applied: &Applied) -> Api<DynamicObject> {
    match &applied.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &applied.resource),
        None => Api::all_with(client.clone(), &applied.resource),
    }
}

/// OCM's work agent: applies each manifest of a ManifestWork to the spoke (with its own, admin,
/// identity there). Returns what it applied, to clean up as the agent does on deletion.
async fn play_work_agent(
    hub: &Client,
    spoke: &ControlPlane,
    cluster: &str,
    work: &str,
) -> Vec<Applied> {
    let works: Api<DynamicObject> =
        Api::namespaced_with(hub.clone(), cluster, &manifest_work_resource());
    let work = works.get(work).await.unwrap();
    let spoke_client = spoke.client().await.unwrap();
    let mut applied = Vec::new();
    for manifest in work.data["spec"]["workload"]["manifests"]
        .as_array()
        .unwrap()
    {
        let (group, version) = match manifest["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (
                String::new(),
                manifest["apiVersion"].as_str().unwrap().to_string(),
            ),
        };
        let kind = manifest["kind"].as_str().unwrap();
        let item = Applied {
            resource: ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
                &group, &version, kind,
            )),
            namespace: manifest["metadata"]["namespace"]
                .as_str()
                .map(str::to_string),
            name: manifest["metadata"]["name"].as_str().unwrap().to_string(),
        };
        spoke_api(&spoke_client, &item)
            .patch(
                &item.name,
                &PatchParams::apply("work-agent").force(),
                &Patch::Apply(manifest),
            )
            .await
            .unwrap();
        applied.push(item);
    }
    applied
}

/// OCM's work agent when its ManifestWork is deleted: it removes what it applied, except what
/// the work's `deleteOption` orphans (`SelectivelyOrphan` rules by resource and name).
async fn play_work_agent_deletion(
    spoke: &ControlPlane,
    applied: &[Applied],
    orphaning_rules: &Value,
) {
    let spoke_client = spoke.client().await.unwrap();
    let orphaned = |item: &Applied| {
        orphaning_rules.as_array().is_some_and(|rules| {
            rules.iter().any(|rule| {
                rule["resource"].as_str() == Some(item.resource.plural.as_str())
                    && rule["name"].as_str() == Some(item.name.as_str())
            })
        })
    };
    for item in applied.iter().filter(|item| !orphaned(item)) {
        match spoke_api(&spoke_client, item)
            .delete(&item.name, &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => panic!("work agent cleanup of {}: {err}", item.name),
        }
    }
}

/// OCM's managed-serviceaccount agent when its ManagedServiceAccount is deleted: it deletes the
/// spoke ServiceAccount; the hub token Secret (owned by the ManagedServiceAccount) goes with it, as
/// the hub's garbage collector would remove it (the test hub runs no garbage collector).
async fn play_managed_serviceaccount_agent_deletion(
    hub: &Client,
    spoke: &ControlPlane,
    cluster: &str,
    name: &str,
    spoke_namespace: &str,
) {
    let spoke_client = spoke.client().await.unwrap();
    for result in [
        Api::<ServiceAccount>::namespaced(spoke_client, spoke_namespace)
            .delete(name, &DeleteParams::default())
            .await
            .map(|_| ()),
        Api::<Secret>::namespaced(hub.clone(), cluster)
            .delete(name, &DeleteParams::default())
            .await
            .map(|_| ()),
    ] {
        match result {
            Ok(()) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => panic!("managed-serviceaccount agent cleanup: {err}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Observing.

async fn wait_profile(
    profiles: &Api<ClusterProfile>,
    name: &str,
    what: &str,
    check: impl Fn(&ClusterProfile) -> bool,
) -> ClusterProfile {
    harness::wait_object(profiles, name, what, WAIT, check)
        .await
        .unwrap()
}

async fn wait_gone(profiles: &Api<ClusterProfile>, name: &str) {
    harness::wait_object_gone(profiles, name, WAIT)
        .await
        .unwrap();
}

async fn wait_event(client: &Client, object: &str, reason: &str, contains: &str) -> Event {
    let events: Api<Event> = Api::all(client.clone());
    let found = harness::wait_event_about(&events, object, reason, contains, WAIT).await;
    match found {
        Ok(event) => event,
        Err(err) => {
            // Say what was there instead.
            let seen: Vec<String> = events
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(object))
                .map(|e| format!("{:?}: {:?}", e.reason, e.note))
                .collect();
            panic!("{err}; Events on {object}: {seen:#?}");
        }
    }
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

fn labels_of(profile: &ClusterProfile) -> BTreeMap<String, String> {
    profile.labels().clone()
}

fn string_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn names(profiles: &[ClusterProfile]) -> BTreeSet<String> {
    profiles.iter().map(|p| p.name_any()).collect()
}

// ---------------------------------------------------------------------------------------------

/// One inventory: create, update (labels, claims, conditions, version), deselect and delete
/// ManagedClusters and see the profiles converge exactly; another manager's profile untouched;
/// bad input reported while the rest converges; quiet steady state; reaction latency measured;
/// a restart mid-way converging with no duplicates or orphans.
#[tokio::test]
async fn managed_clusters_become_profiles_and_converge() {
    let fleet = shared_fleet().await.unwrap();
    // A control plane of its own as the hub, so its write counters see only this test.
    let hub = &fleet.members[0];
    let client = hub.client().await.unwrap();
    install_crd(&client, adapters::crd::cluster_profile_crd())
        .await
        .unwrap();
    install_crds(&client, &[ForeignCrd::ManagedCluster])
        .await
        .unwrap();
    let p = unique("m");
    let inventory = format!("{p}-inventory");
    namespace(&client, &inventory).await;
    let clusters: Api<ManagedCluster> = Api::all(client.clone());
    let profiles: Api<ClusterProfile> = Api::namespaced(client.clone(), &inventory);
    let selector = format!("ib-test={p}");
    let select = ("ib-test", p.as_str());
    let ca = Some(BASE64.encode(hub.ca_pem()));

    // Another manager's profile named like one of our clusters.
    let taken = format!("{p}-taken");
    let mut foreign = ClusterProfile::new(
        &taken,
        ClusterProfileSpec {
            display_name: Some("someone else's".into()),
            cluster_manager: ClusterManager {
                name: "other-manager".into(),
            },
        },
    );
    foreign.metadata.namespace = Some(inventory.clone());
    foreign.metadata.labels = Some(string_map(&[(LABEL_CLUSTER_MANAGER, "other-manager")]));
    let foreign = profiles
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();

    let config = Config {
        placement: Placement::Inventory(inventory.clone()),
        ..Config::default()
    };
    let running = start(client.clone(), config.clone(), &selector).await;

    let a = format!("{p}-a");
    create_cluster(
        &clusters,
        &a,
        &[
            select,
            ("env", "prod"),
            ("cluster.open-cluster-management.io/clusterset", "east"),
            ("feature.open-cluster-management.io/addon-x", "available"),
            ("gone-soon", "yes"),
        ],
        "https://a.example:6443",
        ca.clone(),
    )
    .await;
    play_registration_agent(
        &clusters,
        &a,
        "True",
        "v1.36.3",
        &[("id.k8s.io", "uid-a"), ("region", "eu-1")],
    )
    .await;
    create_cluster(&clusters, &taken, &[select], "https://t.example", None).await;
    let nostatus = format!("{p}-nostatus");
    create_cluster(&clusters, &nostatus, &[select], "https://n.example", None).await;
    let bad = format!("{p}-bad");
    create_cluster(&clusters, &bad, &[select], "ftp://bad example", ca.clone()).await;
    // A claim over 1024 characters cannot reach us here: OCM's CRD rejects it (maxLength 1024);
    // the unit tests cover it. Duplicates do reach us.
    play_registration_agent(
        &clusters,
        &bad,
        "True",
        "v1.35.0",
        &[
            ("id.k8s.io", "not a label value!"),
            ("region", "first"),
            ("region", "duplicate"),
        ],
    )
    .await;
    let badca = format!("{p}-badca");
    create_cluster(
        &clusters,
        &badca,
        &[select],
        "https://c.example:6443",
        Some(BASE64.encode("not a certificate")),
    )
    .await;
    play_registration_agent(&clusters, &badca, "True", "v1.35.0", &[]).await;
    let unselected = format!("{p}-unselected");
    create_cluster(&clusters, &unselected, &[], "https://u.example", None).await;

    // The healthy cluster, exactly.
    let profile = wait_profile(&profiles, &a, "cluster a projected", |p| {
        p.status
            .as_ref()
            .is_some_and(|s| !s.properties.is_empty() && s.version.is_some())
    })
    .await;
    let mut expected_labels = string_map(&[
        select,
        ("env", "prod"),
        ("cluster.open-cluster-management.io/clusterset", "east"),
        ("gone-soon", "yes"),
        (LABEL_CLUSTER_SET, "east"),
        (LABEL_INVENTORY_MEMBER_ID, "uid-a"),
        ("open-cluster-management.io/cluster-name", &a),
        (LABEL_CLUSTER_MANAGER, "open-cluster-management"),
        (LABEL_SOURCE, "ocm-source"),
    ]);
    assert_eq!(labels_of(&profile), expected_labels);
    assert_eq!(
        profile.annotations().get(ANNOTATION_SOURCE_OBJECT),
        Some(&a)
    );
    assert_eq!(profile.spec.display_name.as_deref(), Some(a.as_str()));
    assert_eq!(profile.spec.cluster_manager.name, "open-cluster-management");
    let status = profile.status.clone().unwrap();
    assert_eq!(
        status.version.as_ref().unwrap().kubernetes.as_deref(),
        Some("v1.36.3")
    );
    let condition_of = |s: &adapters::profile::ClusterProfileStatus, t: &str| {
        let c = s.condition(t).unwrap().clone();
        (c.status, c.reason, c.last_transition_time)
    };
    let (healthy, healthy_reason, healthy_since) =
        condition_of(&status, CONDITION_CONTROL_PLANE_HEALTHY);
    assert_eq!(
        (healthy.as_str(), healthy_reason.as_str()),
        ("True", "ManagedClusterAvailable")
    );
    let (joined, _, joined_since) = condition_of(&status, CONDITION_JOINED);
    assert_eq!(joined, "True");
    assert_eq!(status.conditions.len(), 2);
    let props: BTreeMap<String, String> = status
        .properties
        .iter()
        .map(|p| (p.name.clone(), p.value.clone()))
        .collect();
    assert_eq!(
        props,
        string_map(&[("id.k8s.io", "uid-a"), ("region", "eu-1")])
    );
    let id_seen = status
        .properties
        .iter()
        .find(|p| p.name == "id.k8s.io")
        .unwrap()
        .last_observed_time
        .clone();
    assert_eq!(status.access_providers.len(), 1);
    let access = status.access_providers[0].cluster.clone().unwrap();
    assert_eq!(status.access_providers[0].name, "open-cluster-management");
    assert_eq!(access.server, "https://a.example:6443");
    assert_eq!(access.certificate_authority_data, ca.clone());

    // Bad input: each reported with a clear Event and a metric category; their profiles still
    // carry what is valid, and the foreign profile is untouched.
    wait_event(&client, &taken, "Conflict", "belongs to other-manager").await;
    wait_event(&client, &nostatus, "InvalidInput", "no status").await;
    wait_event(&client, &bad, "InvalidInput", "not a valid label value").await;
    wait_event(&client, &bad, "InvalidInput", "duplicate name").await;
    wait_event(&client, &bad, "InvalidInput", "url of ManagedCluster").await;
    wait_event(&client, &badca, "InvalidInput", "caBundle").await;
    let nostatus_profile = wait_profile(&profiles, &nostatus, "no-status cluster projected", |p| {
        p.status.as_ref().is_some_and(|s| s.conditions.len() == 2)
    })
    .await;
    assert!(
        nostatus_profile
            .status
            .unwrap()
            .conditions
            .iter()
            .all(|c| c.status == "Unknown")
    );
    let bad_profile = wait_profile(&profiles, &bad, "bad cluster projected", |p| {
        p.status.as_ref().is_some_and(|s| !s.properties.is_empty())
    })
    .await;
    let bad_status = bad_profile.status.clone().unwrap();
    assert!(bad_status.access_providers.is_empty());
    let bad_props: Vec<(String, String)> = bad_status
        .properties
        .iter()
        .map(|p| (p.name.clone(), p.value.clone()))
        .collect();
    assert_eq!(
        bad_props,
        vec![
            ("id.k8s.io".into(), "not a label value!".into()),
            ("region".into(), "first".into())
        ]
    );
    assert!(!bad_profile.labels().contains_key(LABEL_INVENTORY_MEMBER_ID));
    let badca_profile = wait_profile(&profiles, &badca, "bad-CA cluster projected", |p| {
        p.status.as_ref().is_some_and(|s| s.version.is_some())
    })
    .await;
    assert!(badca_profile.status.unwrap().access_providers.is_empty());
    assert!(running.problems("invalid-input").await >= 5);
    assert!(running.problems("conflict").await >= 1);
    assert_eq!(
        profiles
            .get(&taken)
            .await
            .unwrap()
            .metadata
            .resource_version,
        foreign.metadata.resource_version
    );
    assert!(profiles.get_opt(&unselected).await.unwrap().is_none());
    // No token, key or CA bytes leaked into Events.
    let events: Api<Event> = Api::all(client.clone());
    for event in events.list(&ListParams::default()).await.unwrap().items {
        let note = event.note.unwrap_or_default();
        assert!(!note.contains("BEGIN CERTIFICATE"), "{note}");
    }

    // Updates: a label changes, one disappears, an excluded one appears; a claim changes; the
    // cluster becomes unavailable; the version moves.
    clusters
        .patch(
            &a,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"env": "staging", "gone-soon": null, "feature.open-cluster-management.io/addon-y": "available"}}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // timestamps have second precision
    play_registration_agent(
        &clusters,
        &a,
        "False",
        "v1.36.4",
        &[("id.k8s.io", "uid-a"), ("region", "eu-2"), ("zone", "b")],
    )
    .await;
    expected_labels.insert("env".into(), "staging".into());
    expected_labels.remove("gone-soon");
    let profile = wait_profile(&profiles, &a, "cluster a follows its updates", |p| {
        p.status.as_ref().is_some_and(|s| s.properties.len() == 3)
            && labels_of(p).get("env").map(String::as_str) == Some("staging")
            && p.status
                .as_ref()
                .and_then(|s| s.version.clone())
                .and_then(|v| v.kubernetes)
                .as_deref()
                == Some("v1.36.4")
    })
    .await;
    assert_eq!(labels_of(&profile), expected_labels);
    let status = profile.status.unwrap();
    let (healthy, reason, since) = condition_of(&status, CONDITION_CONTROL_PLANE_HEALTHY);
    assert_eq!(
        (healthy.as_str(), reason.as_str()),
        ("False", "ManagedClusterLeaseUpdateStopped")
    );
    assert!(
        since.0 > healthy_since.0,
        "transition time moves with the status"
    );
    assert_eq!(
        condition_of(&status, CONDITION_JOINED).2,
        joined_since,
        "unchanged condition keeps its time"
    );
    let props: BTreeMap<String, String> = status
        .properties
        .iter()
        .map(|p| (p.name.clone(), p.value.clone()))
        .collect();
    assert_eq!(
        props,
        string_map(&[("id.k8s.io", "uid-a"), ("region", "eu-2"), ("zone", "b")])
    );
    let seen = |name: &str| {
        status
            .properties
            .iter()
            .find(|p| p.name == name)
            .unwrap()
            .last_observed_time
            .clone()
    };
    assert_eq!(
        seen("id.k8s.io"),
        id_seen,
        "an unchanged claim keeps its first-seen time"
    );
    assert!(seen("region").unwrap().0 > id_seen.clone().unwrap().0);

    // Steady state: no profile writes at all, counted by the apiserver itself.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = profile_writes(&client).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        profile_writes(&client).await,
        before,
        "steady state must be quiet"
    );

    // Reaction latency (reported, not asserted): label update → profile label, 10 times.
    let mut samples = Vec::new();
    for i in 0..10 {
        let value = format!("v{i}");
        let started = Instant::now();
        clusters
            .patch(
                &a,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"bench": value}}})),
            )
            .await
            .unwrap();
        loop {
            let current = profiles.get(&a).await.unwrap();
            if current.labels().get("bench") == Some(&value) {
                break;
            }
            assert!(started.elapsed() < WAIT, "profile never followed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        samples.push(started.elapsed());
    }
    samples.sort();
    let create_started = Instant::now();
    let late = format!("{p}-quick");
    create_cluster(&clusters, &late, &[select], "https://q.example", None).await;
    wait_profile(&profiles, &late, "created cluster projected", |_| true).await;
    let create_latency = create_started.elapsed();
    let delete_started = Instant::now();
    clusters
        .delete(&late, &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&profiles, &late).await;
    let delete_latency = delete_started.elapsed();
    println!(
        "ocm-source reaction (includes the adapter's 100 ms debounce and 5 ms polling): update median {:?}, min {:?}, max {:?} over {} updates; create {:?}; delete {:?}",
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1],
        samples.len(),
        create_latency,
        delete_latency
    );

    // Deselect (the hub stops accepting it) and delete: the profiles go.
    clusters
        .patch(
            &badca,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hubAcceptsClient": false}})),
        )
        .await
        .unwrap();
    wait_gone(&profiles, &badca).await;
    clusters
        .delete(&nostatus, &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&profiles, &nostatus).await;

    // Restart mid-way: while stopped, one cluster appears, one is deleted, one is updated.
    running.stop().await;
    let fresh = format!("{p}-fresh");
    create_cluster(&clusters, &fresh, &[select], "https://f.example", None).await;
    clusters
        .delete(&bad, &DeleteParams::default())
        .await
        .unwrap();
    clusters
        .patch(
            &a,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"env": "prod"}}})),
        )
        .await
        .unwrap();
    let running = start(client.clone(), config.clone(), &selector).await;
    wait_profile(
        &profiles,
        &fresh,
        "cluster created while stopped projected",
        |_| true,
    )
    .await;
    wait_gone(&profiles, &bad).await;
    wait_profile(&profiles, &a, "update made while stopped applied", |p| {
        labels_of(p).get("env").map(String::as_str) == Some("prod")
    })
    .await;
    let all = profiles.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(
        names(&all),
        BTreeSet::from([a.clone(), fresh.clone(), taken.clone()]),
        "no duplicates, no orphans"
    );
    assert_eq!(all.len(), 3);
    assert_eq!(
        profiles
            .get(&taken)
            .await
            .unwrap()
            .metadata
            .resource_version,
        foreign.metadata.resource_version
    );
    running.stop().await;

    // --cluster-proxy: without its CA Secret, no provider and a NotFound Event; once the Secret
    // appears (its watch re-triggers every cluster), the proxy URL and CA replace the direct ones.
    let proxy_namespace = format!("{p}-proxy");
    namespace(&client, &proxy_namespace).await;
    let proxied = Config {
        cluster_proxy: Some(ocm_source::ClusterProxy {
            namespace: proxy_namespace.clone(),
            ca_secret: "cluster-proxy-user-serving-cert".into(),
        }),
        ..config
    };
    let running = start(client.clone(), proxied, &selector).await;
    wait_event(&client, &a, "NotFound", "cluster-proxy CA Secret").await;
    wait_profile(&profiles, &a, "no provider without the proxy CA", |p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.access_providers.is_empty())
    })
    .await;
    Api::<Secret>::namespaced(client.clone(), &proxy_namespace)
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("cluster-proxy-user-serving-cert".into()),
                    ..ObjectMeta::default()
                },
                string_data: Some(BTreeMap::from([
                    ("tls.crt".to_string(), hub.ca_pem().to_string()),
                    ("tls.key".to_string(), "not-a-real-key".to_string()),
                ])),
                ..Secret::default()
            },
        )
        .await
        .unwrap();
    let profile = wait_profile(&profiles, &a, "provider through cluster-proxy", |p| {
        p.status
            .as_ref()
            .is_some_and(|s| !s.access_providers.is_empty())
    })
    .await;
    let access = profile.status.unwrap().access_providers[0]
        .cluster
        .clone()
        .unwrap();
    assert_eq!(
        access.server,
        format!("https://cluster-proxy-addon-user.{proxy_namespace}:9092/{a}")
    );
    assert_eq!(access.certificate_authority_data, ca);
    running.stop().await;
}

/// `--clusterset-bindings`: a profile in each namespace holding a Bound binding whose set
/// selects the cluster (exclusive-label and label-selector sets), following set, binding and
/// cluster changes.
#[tokio::test]
async fn clusterset_bindings_decide_the_inventories() {
    let fleet = shared_fleet().await.unwrap();
    let hub = &fleet.members[1];
    let client = hub.client().await.unwrap();
    install_crd(&client, adapters::crd::cluster_profile_crd())
        .await
        .unwrap();
    install_crds(
        &client,
        &[
            ForeignCrd::ManagedCluster,
            ForeignCrd::ManagedClusterSet,
            ForeignCrd::ManagedClusterSetBinding,
        ],
    )
    .await
    .unwrap();
    let p = unique("b");
    let select = ("ib-test", p.as_str());
    let clusters: Api<ManagedCluster> = Api::all(client.clone());
    let set_resource = ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk(
            "cluster.open-cluster-management.io",
            "v1beta2",
            "ManagedClusterSet",
        ),
        "managedclustersets",
    );
    let binding_resource = ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk(
            "cluster.open-cluster-management.io",
            "v1beta2",
            "ManagedClusterSetBinding",
        ),
        "managedclustersetbindings",
    );
    let sets: Api<DynamicObject> = Api::all_with(client.clone(), &set_resource);
    let east = format!("{p}-east");
    let prod = format!("{p}-prod");
    for (name, selector) in [
        (&east, json!({"selectorType": "ExclusiveClusterSetLabel"})),
        (
            &prod,
            json!({"selectorType": "LabelSelector", "labelSelector": {"matchLabels": {"env": "prod", "ib-test": p}}}),
        ),
    ] {
        sets.patch(
            name,
            &PatchParams::apply("test-admin"),
            &Patch::Apply(json!({
                "apiVersion": "cluster.open-cluster-management.io/v1beta2",
                "kind": "ManagedClusterSet",
                "metadata": {"name": name},
                "spec": {"clusterSelector": selector},
            })),
        )
        .await
        .unwrap();
    }
    let team_east = format!("{p}-team-east");
    let team_prod = format!("{p}-team-prod");
    let team_late = format!("{p}-team-late");
    let bind = |namespace: &str, set: &str| {
        let bindings: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &binding_resource);
        let set = set.to_string();
        async move {
            bindings
                .patch(
                    &set,
                    &PatchParams::apply("test-admin"),
                    &Patch::Apply(json!({
                        "apiVersion": "cluster.open-cluster-management.io/v1beta2",
                        "kind": "ManagedClusterSetBinding",
                        "metadata": {"name": set},
                        "spec": {"clusterSet": set},
                    })),
                )
                .await
                .unwrap();
            bindings
        }
    };
    for namespace_name in [&team_east, &team_prod, &team_late] {
        namespace(&client, namespace_name).await;
    }
    let east_binding = bind(&team_east, &east).await;
    play_clusterset_binding_controller(&east_binding, &east, "True").await;
    let prod_binding = bind(&team_prod, &prod).await;
    play_clusterset_binding_controller(&prod_binding, &prod, "True").await;
    let late_binding = bind(&team_late, &east).await;
    play_clusterset_binding_controller(&late_binding, &east, "False").await;

    let running = start(
        client.clone(),
        Config {
            placement: Placement::ClusterSetBindings,
            ..Config::default()
        },
        &format!("ib-test={p}"),
    )
    .await;
    let c1 = format!("{p}-c1");
    let c2 = format!("{p}-c2");
    let c3 = format!("{p}-c3");
    create_cluster(
        &clusters,
        &c1,
        &[
            select,
            ("cluster.open-cluster-management.io/clusterset", &east),
            ("env", "prod"),
        ],
        "https://c1.example",
        None,
    )
    .await;
    create_cluster(
        &clusters,
        &c2,
        &[select, ("env", "prod")],
        "https://c2.example",
        None,
    )
    .await;
    create_cluster(
        &clusters,
        &c3,
        &[select, ("env", "dev")],
        "https://c3.example",
        None,
    )
    .await;

    let in_namespace =
        |namespace: &str| Api::<ClusterProfile>::namespaced(client.clone(), namespace);
    let expect = |namespace: String, wanted: Vec<String>| {
        let api = in_namespace(&namespace);
        async move {
            let wanted: BTreeSet<String> = wanted.into_iter().collect();
            wait_for(
                WAIT,
                &format!("profiles in {namespace} = {wanted:?}"),
                || {
                    let api = api.clone();
                    let wanted = wanted.clone();
                    async move {
                        let have = names(&api.list(&ListParams::default()).await?.items);
                        Ok((have == wanted).then_some(()))
                    }
                },
            )
            .await
            .unwrap();
        }
    };
    expect(team_east.clone(), vec![c1.clone()]).await;
    expect(team_prod.clone(), vec![c1.clone(), c2.clone()]).await;
    expect(team_late.clone(), vec![]).await;
    let c1_east = in_namespace(&team_east).get(&c1).await.unwrap();
    assert_eq!(c1_east.labels().get(LABEL_CLUSTER_SET), Some(&east));

    // The late binding becomes Bound: c1 appears there too.
    play_clusterset_binding_controller(&late_binding, &east, "True").await;
    expect(team_late.clone(), vec![c1.clone()]).await;
    // The prod binding goes: its inventory empties.
    prod_binding
        .delete(&prod, &DeleteParams::default())
        .await
        .unwrap();
    expect(team_prod.clone(), vec![]).await;
    // c3 joins east by label; c1 leaves it.
    clusters
        .patch(&c3, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"cluster.open-cluster-management.io/clusterset": east}}})))
        .await
        .unwrap();
    clusters
        .patch(&c1, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"cluster.open-cluster-management.io/clusterset": null}}})))
        .await
        .unwrap();
    expect(team_east.clone(), vec![c3.clone()]).await;
    expect(team_late.clone(), vec![c3.clone()]).await;
    // The set's selector changes: c2 (env=prod) is selected by a re-bound prod set.
    let prod_binding = bind(&team_prod, &prod).await;
    play_clusterset_binding_controller(&prod_binding, &prod, "True").await;
    expect(team_prod.clone(), vec![c1.clone(), c2.clone()]).await;
    sets.patch(
        &prod,
        &PatchParams::apply("test-admin"),
        &Patch::Apply(json!({
            "apiVersion": "cluster.open-cluster-management.io/v1beta2",
            "kind": "ManagedClusterSet",
            "metadata": {"name": prod},
            "spec": {"clusterSelector": {"selectorType": "LabelSelector", "labelSelector": {"matchLabels": {"env": "dev", "ib-test": p}}}},
        })),
    )
    .await
    .unwrap();
    expect(team_prod.clone(), vec![c3.clone()]).await;
    running.stop().await;
}

/// `--bootstrap-serviceaccount`: the ManagedServiceAccount and ManifestWork per cluster; after
/// playing the agents, the token from the ManagedServiceAccount Secret named by the profile can
/// create a ServiceAccount and mint a TokenRequest on the member, and nothing more (no Secrets,
/// no other ServiceAccounts, no other roles); deleting the cluster removes both companions.
/// The bootstrap grant, tried as its holder would: the ManifestWork provisions the sink identity
/// exactly as configured; the bootstrap token can read it, mint tokens for it and revoke it — and
/// nothing else: no role change, no binding to anyone, no new role, no Secret. Removing the cluster
/// keeps the grant until its profile is gone, then the played agents (honouring deletion as OCM's
/// do) leave the spoke clean, shared namespace orphaned.
#[tokio::test]
async fn bootstrap_credentials_end_to_end() {
    let fleet = shared_fleet().await.unwrap();
    let hub = &fleet.hub;
    let member = &fleet.members[0];
    let client = hub.client().await.unwrap();
    install_crd(&client, adapters::crd::cluster_profile_crd())
        .await
        .unwrap();
    install_crds(
        &client,
        &[
            ForeignCrd::ManagedCluster,
            ForeignCrd::ManifestWork,
            ForeignCrd::ManagedServiceAccount,
        ],
    )
    .await
    .unwrap();
    let p = unique("s");
    let inventory = format!("{p}-inventory");
    namespace(&client, &inventory).await;
    let clusters: Api<ManagedCluster> = Api::all(client.clone());
    let profiles: Api<ClusterProfile> = Api::namespaced(client.clone(), &inventory);
    let identity = MemberIdentity::new(
        &format!("{p}-sink"),
        &format!("{p}-sink-ns"),
        &format!("{p}-sink-sa"),
        adapters::member::defaults::sveltos_rules(),
    );
    let bootstrap = Bootstrap {
        service_account: format!("{p}-bootstrap"),
        spoke_namespace: "open-cluster-management-agent-addon".into(),
        validity: Duration::from_secs(3600),
        identities: vec![identity.clone()],
    };
    bootstrap.validate().unwrap();
    let config = Config {
        placement: Placement::Inventory(inventory.clone()),
        bootstrap: Some(bootstrap.clone()),
        ..Config::default()
    };
    let running = start(client.clone(), config, &format!("ib-test={p}")).await;

    let cluster = format!("{p}-spoke");
    play_registration_hub(&client, &cluster).await;
    create_cluster(
        &clusters,
        &cluster,
        &[("ib-test", p.as_str())],
        &member.server(),
        Some(BASE64.encode(member.ca_pem())),
    )
    .await;
    play_registration_agent(&clusters, &cluster, "True", "v1.36.3", &[]).await;

    let profile = wait_profile(
        &profiles,
        &cluster,
        "spoke projected with its provider",
        |p| {
            p.status
                .as_ref()
                .is_some_and(|s| !s.access_providers.is_empty())
        },
    )
    .await;
    let access = profile.status.unwrap().access_providers[0]
        .cluster
        .clone()
        .unwrap();
    assert_eq!(access.server, member.server());
    assert_eq!(access.extensions.len(), 1);
    assert_eq!(
        access.extensions[0].name,
        "client.authentication.k8s.io/exec"
    );
    let reference = access.extensions[0].extension.clone();
    assert_eq!(
        reference,
        json!({"name": bootstrap.service_account, "namespace": cluster, "key": "token"})
    );

    // The companions exist, labelled as ours, in the cluster's namespace.
    let msas: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &cluster,
        &managed_service_account_resource(),
    );
    let works: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &cluster, &manifest_work_resource());
    let msa = wait_for(WAIT, "ManagedServiceAccount created", || {
        let msas = msas.clone();
        let name = bootstrap.service_account.clone();
        async move { Ok(msas.get_opt(&name).await?) }
    })
    .await
    .unwrap();
    assert_eq!(msa.data["spec"]["rotation"]["validity"], "1h0m0s");
    assert_eq!(
        msa.labels().get(LABEL_SOURCE).map(String::as_str),
        Some("ocm-source")
    );
    let work_name = bootstrap.grant_name();
    let work = wait_for(WAIT, "ManifestWork created", || {
        let works = works.clone();
        let name = work_name.clone();
        async move { Ok(works.get_opt(&name).await?) }
    })
    .await
    .unwrap();
    let orphaning =
        work.data["spec"]["deleteOption"]["selectivelyOrphans"]["orphaningRules"].clone();

    // Play the agents.
    let applied = play_work_agent(&client, member, &cluster, &work_name).await;
    play_managed_serviceaccount_agent(
        &client,
        member,
        &cluster,
        &bootstrap.service_account,
        &bootstrap.spoke_namespace,
    )
    .await;

    // The work provisioned the sink identity exactly as configured, with the instance's mark.
    let admin = member.client().await.unwrap();
    let account = Api::<ServiceAccount>::namespaced(admin.clone(), &identity.namespace)
        .get(&identity.service_account)
        .await
        .unwrap();
    assert!(identity.is_marked(account.metadata.labels.as_ref()));
    let role = Api::<ClusterRole>::all(admin.clone())
        .get(&identity.cluster_role)
        .await
        .unwrap();
    assert_eq!(role.rules.unwrap(), identity.rules);
    let binding = Api::<ClusterRoleBinding>::all(admin.clone())
        .get(&identity.cluster_role_binding)
        .await
        .unwrap();
    assert_eq!(binding.role_ref.name, identity.cluster_role);

    // A sink follows the extension to the token, as the token-secret provider does.
    let secrets: Api<Secret> =
        Api::namespaced(client.clone(), reference["namespace"].as_str().unwrap());
    let secret = secrets
        .get(reference["name"].as_str().unwrap())
        .await
        .unwrap();
    let token = String::from_utf8(
        secret.data.unwrap()[reference["key"].as_str().unwrap()]
            .0
            .clone(),
    )
    .unwrap();
    let bystander = format!("{p}-bystander");
    Api::<ServiceAccount>::namespaced(admin.clone(), &identity.namespace)
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(bystander.clone()),
                    ..ObjectMeta::default()
                },
                ..ServiceAccount::default()
            },
        )
        .await
        .unwrap();
    let bootstrap_client = member.token_client(&token).await.unwrap();

    // What a sink does with it: read the identity, mint a token, (on removal) revoke it.
    let accounts: Api<ServiceAccount> =
        Api::namespaced(bootstrap_client.clone(), &identity.namespace);
    accounts
        .get(&identity.service_account)
        .await
        .expect("the bootstrap token reads the sink's ServiceAccount");
    let roles: Api<ClusterRole> = Api::all(bootstrap_client.clone());
    roles
        .get(&identity.cluster_role)
        .await
        .expect("the bootstrap token reads the sink's ClusterRole");
    let bindings: Api<ClusterRoleBinding> = Api::all(bootstrap_client.clone());
    bindings
        .get(&identity.cluster_role_binding)
        .await
        .expect("the bootstrap token reads the sink's binding");
    Api::<Namespace>::all(bootstrap_client.clone())
        .get(&identity.namespace)
        .await
        .expect("the bootstrap token reads the sink's namespace");
    let token_request = |ttl: i64| TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![]),
            expiration_seconds: Some(ttl),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let minted = accounts
        .create_token_request(
            &identity.service_account,
            &PostParams::default(),
            &token_request(600),
        )
        .await
        .expect("the bootstrap token mints a token for the sink's ServiceAccount");
    let minted = minted.status.unwrap().token.unwrap();
    let minted_client = member.token_client(&minted).await.unwrap();
    Api::<Namespace>::all(minted_client)
        .get("kube-system")
        .await
        .expect("the minted identity has the configured (all-verbs) rules");
    let dry_run = DeleteParams {
        dry_run: true,
        ..DeleteParams::default()
    };
    accounts
        .delete(&identity.service_account, &dry_run)
        .await
        .expect("the bootstrap token may delete (revoke) the sink's ServiceAccount");

    // ... and nothing more: each escalation path a holder would try is refused.
    let forbidden = |result: Result<(), kube::Error>, what: &str| match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("{what} must be forbidden, got {other:?}"),
    };
    let ssa = PatchParams::apply("attacker").force();
    forbidden(
        bindings
            .patch(
                &identity.cluster_role_binding,
                &ssa,
                &Patch::Apply(json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                    "metadata": {"name": identity.cluster_role_binding},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": identity.cluster_role},
                    "subjects": [{"kind": "Group", "name": "system:authenticated", "apiGroup": "rbac.authorization.k8s.io"}],
                })),
            )
            .await
            .map(|_| ()),
        "binding the sink role to another subject",
    );
    forbidden(
        bindings
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": format!("{p}-to-admin")},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                    "subjects": [{"kind": "ServiceAccount", "name": bootstrap.service_account, "namespace": bootstrap.spoke_namespace}],
                }))
                .unwrap(),
            )
            .await
            .map(|_| ()),
        "binding cluster-admin",
    );
    forbidden(
        roles
            .patch(
                &identity.cluster_role,
                &ssa,
                &Patch::Apply(json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                    "metadata": {"name": identity.cluster_role},
                    "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
                })),
            )
            .await
            .map(|_| ()),
        "adding a rule to the sink role",
    );
    forbidden(
        roles
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": format!("{p}-other-role")},
                    "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
                }))
                .unwrap(),
            )
            .await
            .map(|_| ()),
        "creating a new ClusterRole",
    );
    forbidden(
        Api::<Secret>::namespaced(bootstrap_client.clone(), "kube-system")
            .get("anything")
            .await
            .map(|_| ()),
        "reading a Secret",
    );
    forbidden(
        Api::<Secret>::namespaced(bootstrap_client.clone(), &identity.namespace)
            .list(&ListParams::default())
            .await
            .map(|_| ()),
        "listing Secrets",
    );
    forbidden(
        accounts
            .create(
                &PostParams::default(),
                &ServiceAccount {
                    metadata: ObjectMeta {
                        name: Some(format!("{p}-new-sa")),
                        ..ObjectMeta::default()
                    },
                    ..ServiceAccount::default()
                },
            )
            .await
            .map(|_| ()),
        "creating a ServiceAccount",
    );
    forbidden(
        accounts
            .create_token_request(&bystander, &PostParams::default(), &token_request(600))
            .await
            .map(|_| ()),
        "minting a token for someone else's ServiceAccount",
    );
    forbidden(
        accounts.delete(&bystander, &dry_run).await.map(|_| ()),
        "deleting someone else's ServiceAccount",
    );
    forbidden(
        Api::<Namespace>::all(bootstrap_client.clone())
            .list(&ListParams::default())
            .await
            .map(|_| ()),
        "listing namespaces",
    );
    forbidden(
        Api::<Namespace>::all(bootstrap_client.clone())
            .patch(
                &identity.namespace,
                &ssa,
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": identity.namespace, "labels": {"x": "y"}}})),
            )
            .await
            .map(|_| ()),
        "changing the sink namespace",
    );

    // No secret in our Events, or in the profile.
    let events: Api<Event> = Api::all(client.clone());
    for event in events.list(&ListParams::default()).await.unwrap().items {
        assert!(!event.note.unwrap_or_default().contains(&token));
    }
    let profile_json = serde_json::to_string(&profiles.get(&cluster).await.unwrap()).unwrap();
    assert!(!profile_json.contains(&token));

    // Removing the cluster: while a sink's finalizer holds the profile, the grant stays (the sink
    // still needs it to revoke); once the profile is gone, the companions go.
    let sink_finalizer = "inventory-bridge.io/test-sink-cleanup";
    profiles
        .patch(
            &cluster,
            &PatchParams::apply("test-sink"),
            &Patch::Apply(json!({
                "apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ClusterProfile",
                "metadata": {"name": cluster, "namespace": inventory, "finalizers": [sink_finalizer]},
            })),
        )
        .await
        .unwrap();
    clusters
        .delete(&cluster, &DeleteParams::default())
        .await
        .unwrap();
    wait_for(WAIT, "profile marked for deletion", || {
        let profiles = profiles.clone();
        let name = cluster.clone();
        async move {
            Ok(profiles
                .get_opt(&name)
                .await?
                .filter(|p| p.metadata.deletion_timestamp.is_some()))
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        msas.get_opt(&bootstrap.service_account)
            .await
            .unwrap()
            .is_some()
            && works.get_opt(&work_name).await.unwrap().is_some(),
        "the grant must outlive a profile a sink still holds"
    );
    // The sink finishes (it would have revoked with the grant) and lets go.
    profiles
        .patch(
            &cluster,
            &PatchParams::apply("test-sink"),
            &Patch::Apply(json!({
                "apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ClusterProfile",
                "metadata": {"name": cluster, "namespace": inventory},
            })),
        )
        .await
        .unwrap();
    wait_gone(&profiles, &cluster).await;
    wait_for(WAIT, "companions deleted", || {
        let msas = msas.clone();
        let works = works.clone();
        let msa = bootstrap.service_account.clone();
        let work = work_name.clone();
        async move {
            Ok(
                (msas.get_opt(&msa).await?.is_none() && works.get_opt(&work).await?.is_none())
                    .then_some(()),
            )
        }
    })
    .await
    .unwrap();
    play_work_agent_deletion(member, &applied, &orphaning).await;
    play_managed_serviceaccount_agent_deletion(
        &client,
        member,
        &cluster,
        &bootstrap.service_account,
        &bootstrap.spoke_namespace,
    )
    .await;
    assert_spoke_clean(member, &bootstrap).await;
    running.stop().await;
}

/// Nothing of the bootstrap grant or of its sink identities is left on the spoke, except the
/// shared member namespaces (orphaned on purpose).
async fn assert_spoke_clean(member: &ControlPlane, bootstrap: &Bootstrap) {
    let admin = member.client().await.unwrap();
    for identity in &bootstrap.identities {
        assert!(
            Api::<ServiceAccount>::namespaced(admin.clone(), &identity.namespace)
                .get_opt(&identity.service_account)
                .await
                .unwrap()
                .is_none(),
            "sink ServiceAccount left"
        );
        assert!(
            Api::<ClusterRole>::all(admin.clone())
                .get_opt(&identity.cluster_role)
                .await
                .unwrap()
                .is_none(),
            "sink ClusterRole left"
        );
        assert!(
            Api::<ClusterRoleBinding>::all(admin.clone())
                .get_opt(&identity.cluster_role_binding)
                .await
                .unwrap()
                .is_none(),
            "sink ClusterRoleBinding left"
        );
        assert!(
            Api::<Namespace>::all(admin.clone())
                .get_opt(&identity.namespace)
                .await
                .unwrap()
                .is_some(),
            "the shared namespace is orphaned, not deleted"
        );
    }
    let grant = bootstrap.grant_name();
    assert!(
        Api::<ClusterRole>::all(admin.clone())
            .get_opt(&grant)
            .await
            .unwrap()
            .is_none(),
        "bootstrap ClusterRole left"
    );
    assert!(
        Api::<ClusterRoleBinding>::all(admin.clone())
            .get_opt(&grant)
            .await
            .unwrap()
            .is_none(),
        "bootstrap binding left"
    );
    assert!(
        Api::<ServiceAccount>::namespaced(admin.clone(), &bootstrap.spoke_namespace)
            .get_opt(&bootstrap.service_account)
            .await
            .unwrap()
            .is_none(),
        "bootstrap ServiceAccount left"
    );
}

// ---------------------------------------------------------------------------------------------
// End to end with a sink: what the bootstrap credentials are for.

#[derive(clap::Parser)]
struct OcmCli {
    #[command(flatten)]
    ocm: ocm_source::args::OcmArgs,
}

/// ocm-source and sveltos-sink, each configured only by its command line with every default left
/// alone: the profile's bootstrap provider leads sveltos-sink to the ManagedServiceAccount token,
/// which (granted by the ManifestWork) lets it mint its default identity on the member; the
/// published kubeconfig then works as that identity. Deleting the cluster revokes it.
#[tokio::test]
async fn ocm_bootstrap_feeds_sveltos_sink_with_both_defaults() {
    use clap::Parser;

    let fleet = shared_fleet().await.unwrap();
    let member = &fleet.members[1];
    // A hub of its own: an ocm-source owns every ocm-source profile on its hub.
    let hub = ControlPlane::start(harness::ControlPlaneOptions::named("e2e-hub"))
        .await
        .unwrap();
    let client = hub.client().await.unwrap();
    install_crd(&client, adapters::crd::cluster_profile_crd())
        .await
        .unwrap();
    install_crds(
        &client,
        &[
            ForeignCrd::ManagedCluster,
            ForeignCrd::ManifestWork,
            ForeignCrd::ManagedServiceAccount,
            ForeignCrd::SveltosCluster,
        ],
    )
    .await
    .unwrap();
    let inventory = "fleet";
    namespace(&client, inventory).await;

    let ocm = OcmCli::parse_from([
        "ocm-source",
        "--inventory-namespace",
        inventory,
        "--bootstrap-serviceaccount",
        "inventory-bridge",
    ])
    .ocm
    .config()
    .unwrap();
    let bootstrap = ocm.bootstrap.clone().unwrap();
    let source = start(client.clone(), ocm, "").await;

    let cluster = "spoke-1";
    play_registration_hub(&client, cluster).await;
    let clusters: Api<ManagedCluster> = Api::all(client.clone());
    create_cluster(
        &clusters,
        cluster,
        &[("env", "prod")],
        &member.server(),
        Some(BASE64.encode(member.ca_pem())),
    )
    .await;
    play_registration_agent(&clusters, cluster, "True", "v1.36.3", &[]).await;
    let profiles: Api<ClusterProfile> = Api::namespaced(client.clone(), inventory);
    wait_profile(
        &profiles,
        cluster,
        "profile with its bootstrap provider",
        |p| {
            p.status
                .as_ref()
                .is_some_and(|s| !s.access_providers.is_empty())
        },
    )
    .await;
    let works: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), cluster, &manifest_work_resource());
    wait_for(WAIT, "ManifestWork", || {
        let works = works.clone();
        let name = bootstrap.grant_name();
        async move { Ok(works.get_opt(&name).await?) }
    })
    .await
    .unwrap();
    let work = works.get(&bootstrap.grant_name()).await.unwrap();
    let orphaning =
        work.data["spec"]["deleteOption"]["selectivelyOrphans"]["orphaningRules"].clone();
    let applied = play_work_agent(&client, member, cluster, &bootstrap.grant_name()).await;
    play_managed_serviceaccount_agent(
        &client,
        member,
        cluster,
        &bootstrap.service_account,
        &bootstrap.spoke_namespace,
    )
    .await;

    // sveltos-sink with nothing but the inventory set: default provider file, default identity.
    let sink = harness::run_sveltos_sink(client.clone(), &["--inventory-namespace", inventory])
        .await
        .unwrap();

    let (kubeconfig, username) = harness::sveltos_registration(&client, inventory, cluster)
        .await
        .unwrap();
    assert_eq!(
        username, "system:serviceaccount:inventory-bridge:inventory-bridge-sveltos-sink",
        "the published kubeconfig is sveltos-sink's own identity, not the bootstrap token"
    );
    let sveltos_clusters: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        inventory,
        &ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
            "lib.projectsveltos.io",
            "v1beta1",
            "SveltosCluster",
        )),
    );
    let sveltos_cluster = sveltos_clusters.get(cluster).await.unwrap();
    assert_eq!(
        sveltos_cluster.data["spec"]["kubeconfigName"],
        format!("{cluster}-sveltos-kubeconfig")
    );
    assert_eq!(
        sveltos_cluster.labels().get("env").map(String::as_str),
        Some("prod")
    );
    let minted = harness::controlplane::client_from_kubeconfig_yaml(&kubeconfig)
        .await
        .unwrap();
    let member_uid = member.kube_system_uid().await.unwrap();
    let seen_uid = Api::<Namespace>::all(minted)
        .get("kube-system")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    assert_eq!(
        seen_uid, member_uid,
        "it reaches the cluster the profile describes"
    );

    // Deleting the cluster: profile gone, registration gone, member identity revoked.
    clusters
        .delete(cluster, &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&profiles, cluster).await;
    harness::wait_sveltos_registration_revoked(&client, inventory, cluster, member)
        .await
        .unwrap();
    // Only then the grant goes; the agents clean the spoke as OCM's do.
    wait_for(WAIT, "companions deleted after the profile", || {
        let works = works.clone();
        let name = bootstrap.grant_name();
        async move { Ok(works.get_opt(&name).await?.is_none().then_some(())) }
    })
    .await
    .unwrap();
    play_work_agent_deletion(member, &applied, &orphaning).await;
    play_managed_serviceaccount_agent_deletion(
        &client,
        member,
        cluster,
        &bootstrap.service_account,
        &bootstrap.spoke_namespace,
    )
    .await;
    assert_spoke_clean(member, &bootstrap).await;
    sink.shutdown().await.unwrap();
    source.stop().await;
}

/// ocm-source feeding argocd-sink and flux-sink, everything at its defaults plus the inventory
/// namespace: ocm-source's default bootstrap provisions all three sinks' identities, so the same
/// `--bootstrap-serviceaccount` feeds Argo CD and Flux with no extra flag. It runs on the other
/// member than the sveltos end-to-end test (both provision the same default identities).
#[tokio::test]
async fn ocm_bootstrap_feeds_argocd_and_flux_sinks_with_defaults() {
    use clap::Parser;

    let fleet = shared_fleet().await.unwrap();
    let member = &fleet.members[0];
    let hub = ControlPlane::start(harness::ControlPlaneOptions::named("e2e-gitops-hub"))
        .await
        .unwrap();
    let client = hub.client().await.unwrap();
    install_crd(&client, adapters::crd::cluster_profile_crd())
        .await
        .unwrap();
    install_crds(
        &client,
        &[
            ForeignCrd::ManagedCluster,
            ForeignCrd::ManifestWork,
            ForeignCrd::ManagedServiceAccount,
        ],
    )
    .await
    .unwrap();
    let inventory = "fleet";
    namespace(&client, inventory).await;
    for consumer in ["argocd", "flux-system"] {
        namespace(&client, consumer).await;
    }

    let ocm = OcmCli::parse_from([
        "ocm-source",
        "--inventory-namespace",
        inventory,
        "--bootstrap-serviceaccount",
        "inventory-bridge",
    ])
    .ocm
    .config()
    .unwrap();
    let bootstrap = ocm.bootstrap.clone().unwrap();
    let source = start(client.clone(), ocm, "").await;

    let cluster = "spoke-gitops";
    play_registration_hub(&client, cluster).await;
    let clusters: Api<ManagedCluster> = Api::all(client.clone());
    create_cluster(
        &clusters,
        cluster,
        &[("env", "prod")],
        &member.server(),
        Some(BASE64.encode(member.ca_pem())),
    )
    .await;
    play_registration_agent(&clusters, cluster, "True", "v1.36.3", &[]).await;
    let profiles: Api<ClusterProfile> = Api::namespaced(client.clone(), inventory);
    wait_profile(
        &profiles,
        cluster,
        "profile with its bootstrap provider",
        |p| {
            p.status
                .as_ref()
                .is_some_and(|s| !s.access_providers.is_empty())
        },
    )
    .await;
    let works: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), cluster, &manifest_work_resource());
    wait_for(WAIT, "ManifestWork", || {
        let works = works.clone();
        let name = bootstrap.grant_name();
        async move { Ok(works.get_opt(&name).await?) }
    })
    .await
    .unwrap();
    let work = works.get(&bootstrap.grant_name()).await.unwrap();
    let orphaning =
        work.data["spec"]["deleteOption"]["selectivelyOrphans"]["orphaningRules"].clone();
    let applied = play_work_agent(&client, member, cluster, &bootstrap.grant_name()).await;
    play_managed_serviceaccount_agent(
        &client,
        member,
        cluster,
        &bootstrap.service_account,
        &bootstrap.spoke_namespace,
    )
    .await;

    let started = Instant::now();
    let argocd = harness::run_argocd_sink(client.clone(), &["--inventory-namespace", inventory])
        .await
        .unwrap();
    let flux = harness::run_flux_sink(client.clone(), &["--inventory-namespace", inventory])
        .await
        .unwrap();
    let (users, _tokens) = harness::argocd_and_flux_registrations(
        &client,
        inventory,
        cluster,
        "argocd",
        "flux-system",
    )
    .await
    .unwrap();
    eprintln!(
        "MEASURED ocm profile -> Argo CD and Flux registered (both sinks started cold): {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        users,
        [
            "system:serviceaccount:inventory-bridge:inventory-bridge-argocd-sink",
            "system:serviceaccount:inventory-bridge:inventory-bridge-flux-sink",
        ],
        "each sink publishes its own identity, never the bootstrap token"
    );
    let argo = harness::sinks::argo_cluster(
        &client,
        "argocd",
        &format!("cluster-{inventory}-{cluster}"),
        |_| true,
    )
    .await;
    assert_eq!(argo.labels().get("env").map(String::as_str), Some("prod"));
    assert_eq!(argo.data["name"], cluster);

    clusters
        .delete(cluster, &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&profiles, cluster).await;
    harness::wait_argocd_and_flux_revoked(
        &client,
        inventory,
        cluster,
        "argocd",
        "flux-system",
        member,
    )
    .await
    .unwrap();
    wait_for(WAIT, "companions deleted after the profile", || {
        let works = works.clone();
        let name = bootstrap.grant_name();
        async move { Ok(works.get_opt(&name).await?.is_none().then_some(())) }
    })
    .await
    .unwrap();
    play_work_agent_deletion(member, &applied, &orphaning).await;
    play_managed_serviceaccount_agent_deletion(
        &client,
        member,
        cluster,
        &bootstrap.service_account,
        &bootstrap.spoke_namespace,
    )
    .await;
    assert_spoke_clean(member, &bootstrap).await;
    argocd.shutdown().await.unwrap();
    flux.shutdown().await.unwrap();
    source.stop().await;
}
