//! capi-source against real apiservers: a hub where the test plays the Cluster API controllers
//! (writing Clusters, their status and `<cluster>-kubeconfig` Secrets that really reach member
//! control planes), and real members whose `kube-system` UID and About API `ClusterProperty`
//! objects the adapter reads with those kubeconfigs.
//!
//! Each test runs the adapter in-process under its own adapter name (its source label and field
//! manager), so tests sharing one hub never sweep each other's profiles.

// Integration test file: helpers panic on a broken fixture, which fails the test as it should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use adapters::profile::{
    CONDITION_CONTROL_PLANE_HEALTHY, CONDITION_JOINED, ClusterManager, ClusterProfile,
    ClusterProfileSpec, EXTENSION_EXEC, LABEL_CLUSTER_MANAGER, LABEL_INVENTORY_MEMBER_ID,
};
use adapters::runtime::{Metrics, Runtime};
use adapters::source::{LABEL_SOURCE, SourceArgs};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use capi_source::project::{LABEL_SOURCE_NAMESPACE, PROPERTY_CLUSTER_CLASS};
use capi_source::{CapiArgs, CapiMetrics};
use harness::{
    ControlPlane, ControlPlaneOptions, ForeignCrd, install_crd, install_crds, shared_fleet,
    test_namespace,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------
// Log capture: every log line of this test binary, to prove no secret is ever logged.

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured_logs() -> Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        // Debug everywhere (ours, kube's): the widest net for leaked material.
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug,hyper=info,hyper_util=info,h2=info,rustls=info,tower=info")
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .try_init();
        logs
    })
    .clone()
}

fn logs_text() -> String {
    String::from_utf8_lossy(&captured_logs().0.lock().unwrap()).to_string()
}

// ---------------------------------------------------------------------------------------------
// Playing the Cluster API controllers.

fn cluster_resource(version: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cluster.x-k8s.io", version, "Cluster"),
        "clusters",
    )
}

/// Stands in for the Cluster API controllers of one namespace: what they would write.
struct PlayCapiControllers {
    clusters: Api<DynamicObject>,
    secrets: Api<Secret>,
    namespace: String,
    version: &'static str,
}

fn play_capi_controllers(
    client: &Client,
    namespace: &str,
    version: &'static str,
) -> PlayCapiControllers {
    PlayCapiControllers {
        clusters: Api::namespaced_with(client.clone(), namespace, &cluster_resource(version)),
        secrets: Api::namespaced(client.clone(), namespace),
        namespace: namespace.to_string(),
        version,
    }
}

impl PlayCapiControllers {
    /// Create a Cluster with `labels` and `spec`, then set its `status` as the Cluster controller
    /// would.
    async fn create_cluster(&self, name: &str, labels: Value, spec: Value, status: Value) {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": format!("cluster.x-k8s.io/{}", self.version),
            "kind": "Cluster",
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels},
            "spec": spec,
        }))
        .unwrap();
        self.clusters
            .create(&PostParams::default(), &object)
            .await
            .unwrap();
        self.set_status(name, status).await;
    }

    async fn set_status(&self, name: &str, status: Value) {
        self.clusters
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .unwrap();
    }

    async fn patch_cluster(&self, name: &str, patch: Value) {
        self.clusters
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
    }

    async fn delete_cluster(&self, name: &str) {
        self.clusters
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }

    /// Write `<cluster>-kubeconfig` as CAPI does: key `value`, type `cluster.x-k8s.io/secret`,
    /// label `cluster.x-k8s.io/cluster-name` (create, or replace on rotation).
    async fn write_kubeconfig(&self, cluster: &str, kubeconfig: &[u8]) {
        let name = format!("{cluster}-kubeconfig");
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([(
                    "cluster.x-k8s.io/cluster-name".to_string(),
                    cluster.to_string(),
                )])),
                ..ObjectMeta::default()
            },
            type_: Some("cluster.x-k8s.io/secret".to_string()),
            data: Some(BTreeMap::from([(
                "value".to_string(),
                ByteString(kubeconfig.to_vec()),
            )])),
            ..Secret::default()
        };
        self.secrets
            .patch(
                &name,
                &PatchParams::apply("play-capi-controllers").force(),
                &Patch::Apply(&secret),
            )
            .await
            .unwrap();
    }
}

/// The status the Cluster controller writes for a provisioned, healthy v1beta2 Cluster.
fn v1beta2_ready_status(version: &str) -> Value {
    json!({
        "initialization": {"infrastructureProvisioned": true, "controlPlaneInitialized": true},
        "controlPlane": {"versions": [{"version": version, "replicas": 1}]},
        "conditions": [
            {"type": "ControlPlaneAvailable", "status": "True", "reason": "Available", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "Available", "status": "True", "reason": "Available", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}
        ]
    })
}

fn v1beta2_spec(class: &str, version: &str) -> Value {
    json!({
        "controlPlaneEndpoint": {"host": "10.11.12.13", "port": 6443},
        "topology": {"classRef": {"name": class}, "version": version},
        "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DockerCluster", "name": "x"}
    })
}

// ---------------------------------------------------------------------------------------------
// Running the adapter in-process.

struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<adapters::Result<()>>,
    metrics: std::net::SocketAddr,
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }

    async fn metrics(&self) -> String {
        harness::http_get(self.metrics, "/metrics").await.unwrap().1
    }

    /// A counter's value from the exposition (0 when absent).
    async fn counter(&self, prefix: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

fn capi_args(inventory: &str, watch_namespace: Option<&str>, refresh_seconds: u64) -> CapiArgs {
    CapiArgs {
        inventory_namespace: inventory.to_string(),
        watch_namespace: watch_namespace.map(String::from),
        cluster_manager: "cluster-api".to_string(),
        profile_name_template: "{namespace}-{name}".to_string(),
        exclude_label_prefixes: vec![
            "cluster.x-k8s.io/".to_string(),
            "topology.cluster.x-k8s.io/".to_string(),
        ],
        access_provider_name: "cluster-api".to_string(),
        member_refresh_seconds: refresh_seconds,
        member_timeout_seconds: 5,
        source: SourceArgs {
            cluster_selector: None,
            resync_seconds: 3600,
            concurrency: 4,
        },
    }
}

async fn start(client: Client, name: &'static str, args: CapiArgs) -> Running {
    captured_logs();
    let runtime_args = harness::in_process_runtime_args(name, "debug");
    let mut metrics = Metrics::new(name);
    let capi_metrics = CapiMetrics::register(&mut metrics);
    let runtime = Runtime::new(name, runtime_args, client, metrics);
    let stop = runtime.shutdown_token();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(runtime.run_with_listener(listener, move |context| {
        capi_source::run(name, args.clone(), capi_metrics.clone(), context)
    }));
    Running {
        stop,
        task,
        metrics: address,
    }
}

// ---------------------------------------------------------------------------------------------
// Looking at the results.

async fn wait_profile(
    profiles: &Api<ClusterProfile>,
    name: &str,
    what: &str,
    check: impl Fn(&ClusterProfile) -> bool,
) -> ClusterProfile {
    harness::wait_object(profiles, name, what, Duration::from_secs(60), check)
        .await
        .unwrap()
}

async fn wait_gone(profiles: &Api<ClusterProfile>, name: &str) {
    harness::wait_object_gone(profiles, name, Duration::from_secs(60))
        .await
        .unwrap();
}

fn condition(profile: &ClusterProfile, type_: &str) -> Option<(String, String)> {
    profile
        .status
        .as_ref()?
        .condition(type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

fn joined_is(profile: &ClusterProfile, status: &str, reason: &str) -> bool {
    condition(profile, CONDITION_JOINED) == Some((status.to_string(), reason.to_string()))
}

fn member_id(profile: &ClusterProfile) -> Option<&str> {
    profile
        .labels()
        .get(LABEL_INVENTORY_MEMBER_ID)
        .map(String::as_str)
}

fn property(profile: &ClusterProfile, name: &str) -> Option<String> {
    profile
        .status
        .as_ref()?
        .properties
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.value.clone())
}

fn server(profile: &ClusterProfile) -> Option<String> {
    Some(
        profile
            .status
            .as_ref()?
            .access_providers
            .first()?
            .cluster
            .as_ref()?
            .server
            .clone(),
    )
}

fn version(profile: &ClusterProfile) -> Option<String> {
    profile
        .status
        .as_ref()?
        .version
        .as_ref()?
        .kubernetes
        .clone()
}

/// Wait for a Warning Event on Cluster `object` with `reason` whose note contains `text`.
async fn wait_event(
    client: &Client,
    namespace: &str,
    object: &str,
    reason: &str,
    text: &str,
) -> Event {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    harness::wait_event_about(&events, object, reason, text, Duration::from_secs(60))
        .await
        .unwrap()
}

/// Profile writes counted by the apiserver itself.
async fn profile_writes(client: &Client) -> u64 {
    harness::apiserver_metrics::request_count(
        client,
        harness::apiserver_metrics::WRITE_VERBS,
        "clusterprofiles",
    )
    .await
    .unwrap()
}

async fn create_cluster_property(client: &Client, name: &str, value: &str) {
    let api: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &adapters::member_reads::cluster_property_resource(),
    );
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "about.k8s.io/v1alpha1",
        "kind": "ClusterProperty",
        "metadata": {"name": name},
        "spec": {"value": value},
    }))
    .unwrap();
    api.patch(
        name,
        &PatchParams::apply("test-member-admin").force(),
        &Patch::Apply(&object),
    )
    .await
    .unwrap();
}

fn leak(name: String) -> &'static str {
    Box::leak(name.into_boxed_str())
}

// ---------------------------------------------------------------------------------------------

/// The main life cycle on a hub of its own (so the apiserver's write counters are this test's):
/// profiles for Clusters of two namespaces with the same name, the kubeconfig arriving late and
/// rotating, member id and ClusterProperty objects read from the real members, updates,
/// another manager's profile left alone, zero writes in steady state, delete and deselect, and a
/// restart mid-way.
#[tokio::test]
async fn clusters_become_profiles_and_follow_their_kubeconfig() {
    captured_logs();
    let fleet = shared_fleet().await.unwrap();
    let (member1, member2) = (&fleet.members[0], &fleet.members[1]);
    let hub = ControlPlane::start(ControlPlaneOptions::named("capi-hub"))
        .await
        .unwrap();
    let client = hub.client().await.unwrap();
    install_crds(&client, &[ForeignCrd::CapiCluster])
        .await
        .unwrap();
    install_crd(&client, adapters::crd::cluster_profile_crd())
        .await
        .unwrap();
    // Member 2 speaks the About API; member 1 does not (its id is its kube-system UID).
    let member2_client = member2.client().await.unwrap();
    install_crds(&member2_client, &[ForeignCrd::ClusterProperty])
        .await
        .unwrap();
    create_cluster_property(&member2_client, "id.k8s.io", "member-2-id").await;
    create_cluster_property(&member2_client, "clusterset.k8s.io", "set-a").await;
    let member1_uid = member1.kube_system_uid().await.unwrap();

    let ns_a = test_namespace(&client, "team-a").await.unwrap();
    let ns_b = test_namespace(&client, "team-b").await.unwrap();
    let inventory = test_namespace(&client, "inventory").await.unwrap();
    let profiles: Api<ClusterProfile> = Api::namespaced(client.clone(), &inventory);
    let capi_a = play_capi_controllers(&client, &ns_a, "v1beta2");
    let capi_b = play_capi_controllers(&client, &ns_b, "v1beta2");

    // Another manager's profile, with the name one of our Clusters would get.
    let mut foreign = ClusterProfile::new(
        &format!("{ns_a}-taken"),
        ClusterProfileSpec {
            display_name: Some("someone else's".into()),
            cluster_manager: ClusterManager {
                name: "other-manager".into(),
            },
        },
    );
    foreign.metadata.namespace = Some(inventory.clone());
    foreign.metadata.labels = Some(BTreeMap::from([(
        LABEL_CLUSTER_MANAGER.to_string(),
        "other-manager".to_string(),
    )]));
    let foreign = profiles
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();

    let mut args = capi_args(&inventory, None, 2);
    args.source.cluster_selector = Some("inventory=yes".into());
    let running = start(client.clone(), "capi-source", args.clone()).await;

    let labels = json!({
        "inventory": "yes",
        "env": "prod",
        "cluster.x-k8s.io/cluster-name": "web",
        "topology.kubernetes.io/region": "eu-west"
    });
    for capi in [&capi_a, &capi_b] {
        capi.create_cluster(
            "web",
            labels.clone(),
            v1beta2_spec("quick-start", "v1.36.3"),
            v1beta2_ready_status("v1.36.3"),
        )
        .await;
    }
    capi_a
        .create_cluster(
            "taken",
            json!({"inventory": "yes"}),
            v1beta2_spec("quick-start", "v1.36.3"),
            v1beta2_ready_status("v1.36.3"),
        )
        .await;

    // Before the kubeconfig: a profile that says so, reachable through controlPlaneEndpoint.
    let web_a = format!("{ns_a}-web");
    let web_b = format!("{ns_b}-web");
    let early = wait_profile(&profiles, &web_a, "profile before the kubeconfig", |p| {
        joined_is(p, "False", "KubeconfigSecretMissing")
    })
    .await;
    assert_eq!(server(&early).as_deref(), Some("https://10.11.12.13:6443"));
    assert_eq!(
        early.spec.display_name.as_deref(),
        Some(format!("{ns_a}/web").as_str())
    );
    assert_eq!(early.spec.cluster_manager.name, "cluster-api");
    let labels = early.labels();
    assert_eq!(labels.get("env").map(String::as_str), Some("prod"));
    assert_eq!(
        labels.get(LABEL_SOURCE).map(String::as_str),
        Some("capi-source")
    );
    assert_eq!(labels.get(LABEL_SOURCE_NAMESPACE), Some(&ns_a));
    assert_eq!(
        labels
            .get("cluster.x-k8s.io/cluster-name")
            .map(String::as_str),
        Some("web"),
        "the cluster-name label is ours, set from the name"
    );
    assert_eq!(member_id(&early), None);
    assert_eq!(version(&early).as_deref(), Some("v1.36.3"));
    assert_eq!(
        condition(&early, CONDITION_CONTROL_PLANE_HEALTHY),
        Some(("True".into(), "Available".into()))
    );
    assert_eq!(
        property(&early, PROPERTY_CLUSTER_CLASS).as_deref(),
        Some("quick-start")
    );
    assert_eq!(
        property(&early, "topology.kubernetes.io/region").as_deref(),
        Some("eu-west")
    );

    // The kubeconfig arrives: Joined, the real server and CA, the member's kube-system UID.
    let arrived = Instant::now();
    capi_a
        .write_kubeconfig("web", member1.admin_kubeconfig_yaml().as_bytes())
        .await;
    let joined = wait_profile(&profiles, &web_a, "profile follows the kubeconfig", |p| {
        joined_is(p, "True", "KubeconfigAvailable") && member_id(p).is_some()
    })
    .await;
    eprintln!(
        "MEASURED kubeconfig arrival -> profile joined with member id: {:?}",
        arrived.elapsed()
    );
    assert_eq!(member_id(&joined), Some(member1_uid.as_str()));
    let provider = &joined.status.as_ref().unwrap().access_providers[0];
    assert_eq!(provider.name, "cluster-api");
    let cluster = provider.cluster.as_ref().unwrap();
    assert_eq!(cluster.server, member1.server());
    assert_eq!(
        cluster.certificate_authority_data.as_deref(),
        Some(BASE64.encode(member1.ca_pem()).as_str())
    );
    assert_eq!(cluster.extensions[0].name, EXTENSION_EXEC);
    assert_eq!(
        cluster.extensions[0].extension,
        json!({"name": "web-kubeconfig", "key": "value", "namespace": ns_a})
    );

    // The same-named Cluster of the other namespace: its own profile, member 2's properties.
    capi_b
        .write_kubeconfig("web", member2.admin_kubeconfig_yaml().as_bytes())
        .await;
    let b = wait_profile(
        &profiles,
        &web_b,
        "second namespace's profile joined",
        |p| member_id(p) == Some("member-2-id"),
    )
    .await;
    assert_eq!(property(&b, "clusterset.k8s.io").as_deref(), Some("set-a"));
    assert_eq!(property(&b, "id.k8s.io").as_deref(), Some("member-2-id"));
    assert_eq!(server(&b), Some(member2.server()));
    // A property added on the member shows up on the next refresh.
    create_cluster_property(&member2_client, "tier.example.com", "gold").await;
    wait_profile(&profiles, &web_b, "new member property", |p| {
        property(p, "tier.example.com").as_deref() == Some("gold")
    })
    .await;

    // Rotation (here to another CA and server): the profile follows at once, and the member is
    // read again with the new kubeconfig.
    let rotated = Instant::now();
    capi_a
        .write_kubeconfig("web", member2.admin_kubeconfig_yaml().as_bytes())
        .await;
    wait_profile(&profiles, &web_a, "profile follows the rotation", |p| {
        server(p) == Some(member2.server()) && member_id(p) == Some("member-2-id")
    })
    .await;
    eprintln!(
        "MEASURED kubeconfig rotation -> profile updated: {:?}",
        rotated.elapsed()
    );

    // Cluster updates: labels, version, control-plane health.
    capi_a
        .patch_cluster("web", json!({"metadata": {"labels": {"env": "staging"}}}))
        .await;
    capi_a
        .set_status(
            "web",
            json!({
                "controlPlane": {"versions": [{"version": "v1.36.4", "replicas": 1}]},
                "conditions": [
                    {"type": "ControlPlaneAvailable", "status": "False", "reason": "NotAvailable", "message": "etcd has no quorum", "lastTransitionTime": "2026-01-02T00:00:00Z"}
                ]
            }),
        )
        .await;
    let updated = wait_profile(&profiles, &web_a, "profile follows the Cluster", |p| {
        p.labels().get("env").map(String::as_str) == Some("staging")
            && version(p).as_deref() == Some("v1.36.4")
            && condition(p, CONDITION_CONTROL_PLANE_HEALTHY)
                == Some(("False".into(), "NotAvailable".into()))
    })
    .await;
    let healthy = updated
        .status
        .as_ref()
        .unwrap()
        .condition(CONDITION_CONTROL_PLANE_HEALTHY)
        .unwrap();
    assert_eq!(healthy.message, "etcd has no quorum");

    // Another manager's profile: untouched, and the conflict is an Event on the Cluster.
    wait_event(
        &client,
        &ns_a,
        "taken",
        "Conflict",
        "belongs to other-manager",
    )
    .await;
    assert_eq!(
        profiles
            .get(&foreign.name_any())
            .await
            .unwrap()
            .metadata
            .resource_version,
        foreign.metadata.resource_version
    );

    // Steady state (while members are still re-read every 2 s): no profile writes at all.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = profile_writes(&client).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        profile_writes(&client).await,
        before,
        "steady state must be quiet"
    );

    // Delete and deselect.
    capi_b.delete_cluster("web").await;
    wait_gone(&profiles, &web_b).await;
    capi_a
        .create_cluster(
            "db",
            json!({"inventory": "yes"}),
            v1beta2_spec("quick-start", "v1.36.3"),
            v1beta2_ready_status("v1.36.3"),
        )
        .await;
    let db_a = format!("{ns_a}-db");
    wait_profile(&profiles, &db_a, "db projected", |_| true).await;
    capi_a
        .patch_cluster("db", json!({"metadata": {"labels": {"inventory": "no"}}}))
        .await;
    wait_gone(&profiles, &db_a).await;

    // Restart mid-way: while stopped, one Cluster goes and another comes.
    running.stop().await;
    capi_a.delete_cluster("web").await;
    capi_b
        .create_cluster(
            "api",
            json!({"inventory": "yes"}),
            v1beta2_spec("quick-start", "v1.36.3"),
            v1beta2_ready_status("v1.36.3"),
        )
        .await;
    capi_b
        .write_kubeconfig("api", member1.admin_kubeconfig_yaml().as_bytes())
        .await;
    let running = start(client.clone(), "capi-source", args).await;
    let api_b = format!("{ns_b}-api");
    wait_profile(&profiles, &api_b, "api projected after restart", |p| {
        member_id(p) == Some(member1_uid.as_str())
    })
    .await;
    wait_gone(&profiles, &web_a).await;
    let mut names: Vec<String> = profiles
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| p.name_any())
        .collect();
    names.sort();
    let mut expected = vec![api_b.clone(), foreign.name_any()];
    expected.sort();
    assert_eq!(names, expected, "no duplicates, no orphans");
    assert_eq!(
        profiles
            .get(&foreign.name_any())
            .await
            .unwrap()
            .metadata
            .resource_version,
        foreign.metadata.resource_version
    );
    running.stop().await;
}

/// A hub that serves only `cluster.x-k8s.io/v1beta1` (older Cluster API): Clusters are read in
/// that shape — `controlPlaneReady`, the `ControlPlaneReady` condition, `spec.topology.class` —
/// and the version comes from the control-plane object behind `controlPlaneRef` when the
/// Cluster's status has none.
#[tokio::test]
async fn a_hub_serving_only_v1beta1_works() {
    captured_logs();
    let fleet = shared_fleet().await.unwrap();
    let member1 = &fleet.members[0];
    let hub = ControlPlane::start(ControlPlaneOptions::named("capi-v1beta1-hub"))
        .await
        .expect("start the v1beta1 hub");
    let client = hub.client().await.unwrap();
    // The pinned CAPI CRD with v1beta2 removed and v1beta1 as the storage version.
    let mut crd = ForeignCrd::CapiCluster.load().unwrap();
    crd.spec.versions.retain(|v| v.name == "v1beta1");
    crd.spec.versions[0].storage = true;
    crd.spec.versions[0].deprecated = None;
    crd.spec.versions[0].deprecation_warning = None;
    install_crd(&client, crd)
        .await
        .expect("install the v1beta1-only Cluster CRD");
    install_crd(&client, adapters::crd::cluster_profile_crd())
        .await
        .expect("install the ClusterProfile CRD");
    // The KubeadmControlPlane CRD from the same pinned module, for the control-plane object.
    let kcp_path = harness::crds::module_dir("sigs.k8s.io/cluster-api")
        .unwrap()
        .join("controlplane/kubeadm/config/crd/bases/controlplane.cluster.x-k8s.io_kubeadmcontrolplanes.yaml");
    let kcp_crd = harness::crds::parse_crd(&std::fs::read_to_string(kcp_path).unwrap()).unwrap();
    install_crd(&client, kcp_crd)
        .await
        .expect("install the KubeadmControlPlane CRD");
    let v1beta2_served = client
        .list_api_group_resources("cluster.x-k8s.io/v1beta2")
        .await;
    assert!(v1beta2_served.is_err(), "the hub must not serve v1beta2");

    let ns = test_namespace(&client, "capi-v1beta1").await.unwrap();
    let inventory = test_namespace(&client, "inventory").await.unwrap();
    let profiles: Api<ClusterProfile> = Api::namespaced(client.clone(), &inventory);

    // The control-plane provider's object and its status, as KCP would write them.
    let kcp_resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            "controlplane.cluster.x-k8s.io",
            "v1beta2",
            "KubeadmControlPlane",
        ),
        "kubeadmcontrolplanes",
    );
    let kcps: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &kcp_resource);
    let kcp: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "controlplane.cluster.x-k8s.io/v1beta2",
        "kind": "KubeadmControlPlane",
        "metadata": {"name": "web-cp", "namespace": ns},
        "spec": {
            "version": "v1.35.2",
            "machineTemplate": {"spec": {"infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DockerMachineTemplate", "name": "web-cp"}}}
        }
    }))
    .unwrap();
    kcps.create(&PostParams::default(), &kcp)
        .await
        .expect("create the KubeadmControlPlane");
    kcps.patch_status(
        "web-cp",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"version": "v1.35.2"}})),
    )
    .await
    .expect("write the KubeadmControlPlane status");

    let running = start(
        client.clone(),
        "capi-source",
        capi_args(&inventory, Some(&ns), 300),
    )
    .await;
    let capi = play_capi_controllers(&client, &ns, "v1beta1");
    capi.create_cluster(
        "web",
        json!({"env": "legacy"}),
        json!({
            "controlPlaneEndpoint": {"host": "10.1.1.1", "port": 443},
            "topology": {"class": "legacy-class", "version": "v1.36.0"},
            "controlPlaneRef": {"apiVersion": "controlplane.cluster.x-k8s.io/v1beta2", "kind": "KubeadmControlPlane", "name": "web-cp"},
            "infrastructureRef": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "AWSCluster", "name": "web"}
        }),
        json!({
            "controlPlaneReady": true,
            "infrastructureReady": true,
            "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "ControlPlaneReady", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
            ]
        }),
    )
    .await;
    capi.write_kubeconfig("web", member1.admin_kubeconfig_yaml().as_bytes())
        .await;
    let profile = wait_profile(
        &profiles,
        &format!("{ns}-web"),
        "v1beta1 Cluster projected",
        |p| joined_is(p, "True", "KubeconfigAvailable") && member_id(p).is_some(),
    )
    .await;
    assert_eq!(
        member_id(&profile),
        Some(member1.kube_system_uid().await.unwrap().as_str())
    );
    assert_eq!(
        version(&profile).as_deref(),
        Some("v1.35.2"),
        "the control-plane object's version comes before spec.topology.version"
    );
    assert_eq!(
        condition(&profile, CONDITION_CONTROL_PLANE_HEALTHY).map(|c| c.0),
        Some("True".to_string())
    );
    assert_eq!(
        property(&profile, PROPERTY_CLUSTER_CLASS).as_deref(),
        Some("legacy-class")
    );
    assert_eq!(
        property(&profile, capi_source::project::PROPERTY_INFRASTRUCTURE_KIND).as_deref(),
        Some("AWSCluster")
    );
    assert_eq!(
        profile.labels().get("env").map(String::as_str),
        Some("legacy")
    );

    // The v1beta1 ControlPlaneReady condition going false is ControlPlaneHealthy false.
    capi.set_status(
        "web",
        json!({"conditions": [
            {"type": "Ready", "status": "False", "severity": "Warning", "reason": "ControlPlaneDown", "lastTransitionTime": "2026-01-02T00:00:00Z"},
            {"type": "ControlPlaneReady", "status": "False", "severity": "Error", "reason": "EtcdUnhealthy", "message": "etcd lost quorum", "lastTransitionTime": "2026-01-02T00:00:00Z"}
        ]}),
    )
    .await;
    wait_profile(
        &profiles,
        &format!("{ns}-web"),
        "ControlPlaneHealthy from ControlPlaneReady",
        |p| {
            condition(p, CONDITION_CONTROL_PLANE_HEALTHY)
                == Some(("False".into(), "EtcdUnhealthy".into()))
        },
    )
    .await;
    running.stop().await;
}

/// Bad input, each reported as an Event on its Cluster and counted by category, while a good
/// Cluster beside them converges; and no credential of any kubeconfig used ever shows up in logs,
/// Events or profiles.
#[tokio::test]
async fn bad_input_is_reported_and_the_rest_converges() {
    captured_logs();
    let fleet = shared_fleet().await.unwrap();
    let (member1, member2) = (&fleet.members[0], &fleet.members[1]);
    let client = fleet.hub.client().await.unwrap();
    install_crds(&client, &[ForeignCrd::CapiCluster])
        .await
        .unwrap();
    install_crd(&client, adapters::crd::cluster_profile_crd())
        .await
        .unwrap();
    let ns = test_namespace(&client, "capi-bad").await.unwrap();
    let inventory = test_namespace(&client, "inventory").await.unwrap();
    let profiles: Api<ClusterProfile> = Api::namespaced(client.clone(), &inventory);
    let name = leak(format!("capi-source-{ns}"));
    let running = start(client.clone(), name, capi_args(&inventory, Some(&ns), 300)).await;
    let capi = play_capi_controllers(&client, &ns, "v1beta2");
    let ready = || v1beta2_ready_status("v1.36.3");
    let spec = || v1beta2_spec("quick-start", "v1.36.3");

    let good_kubeconfig = member1.admin_kubeconfig_yaml();
    let token = format!("tok-{}", adapters::names::short_hash(&ns));
    let token_kubeconfig = member1.token_kubeconfig_yaml(&token);
    let wrong_ca = good_kubeconfig.replace(
        &BASE64.encode(member1.ca_pem()),
        &BASE64.encode(member2.ca_pem()),
    );
    let no_context = good_kubeconfig.replace("current-context:", "# current-context:");
    let exec = format!(
        "{}\n",
        good_kubeconfig.replace(
            "    client-certificate-data:",
            "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/steal-credentials\n    client-certificate-data:"
        )
    );
    let file_path = good_kubeconfig.replace(
        "    client-certificate-data:",
        "    client-certificate: /etc/kubernetes/admin.crt\n    client-certificate-data:",
    );
    let cases: Vec<(&str, Option<String>)> = vec![
        ("good", Some(good_kubeconfig.clone())),
        ("paused", Some(good_kubeconfig.clone())),
        ("not-yaml", Some(format!("{{{{ not yaml: [{token}"))),
        ("no-context", Some(no_context)),
        ("exec", Some(exec)),
        ("file-path", Some(file_path)),
        ("wrong-ca", Some(wrong_ca)),
        ("bad-token", Some(token_kubeconfig)),
        ("missing", None),
    ];
    for (cluster, kubeconfig) in &cases {
        capi.create_cluster(cluster, json!({"env": "a"}), spec(), ready())
            .await;
        if let Some(kubeconfig) = kubeconfig {
            capi.write_kubeconfig(cluster, kubeconfig.as_bytes()).await;
        }
    }
    // A controlPlaneRef nobody serves, and no versions in status.
    let mut bogus_spec = spec();
    bogus_spec["controlPlaneRef"] = json!({"apiGroup": "controlplane.nope.example.com", "kind": "NopeControlPlane", "name": "x"});
    let mut no_versions = ready();
    no_versions.as_object_mut().unwrap().remove("controlPlane");
    capi.create_cluster("bogus-ref", json!({}), bogus_spec, no_versions)
        .await;
    // A name too long for a label value (and for a profile name of 63 characters).
    let long = format!("long-{}", "n".repeat(70));
    capi.create_cluster(&long, json!({}), spec(), ready()).await;

    let profile = |cluster: &str| format!("{ns}-{cluster}");
    wait_profile(
        &profiles,
        &profile("good"),
        "the good Cluster converges",
        |p| joined_is(p, "True", "KubeconfigAvailable") && member_id(p).is_some(),
    )
    .await;
    // Paused after it was projected: the profile stays as it was.
    wait_profile(
        &profiles,
        &profile("paused"),
        "paused Cluster first projected",
        |p| joined_is(p, "True", "KubeconfigAvailable"),
    )
    .await;
    capi.patch_cluster(
        "paused",
        json!({"metadata": {"labels": {"env": "changed"}}, "spec": {"paused": true}}),
    )
    .await;
    wait_event(&client, &ns, "paused", "InvalidInput", "is paused").await;
    let paused = profiles.get(&profile("paused")).await.unwrap();
    assert_eq!(paused.labels().get("env").map(String::as_str), Some("a"));

    for (cluster, text) in [
        ("not-yaml", "is not a YAML kubeconfig"),
        ("no-context", "has no current-context"),
        ("exec", "uses exec plugin credentials"),
        ("file-path", "refers to a file path (client-certificate)"),
    ] {
        wait_event(&client, &ns, cluster, "InvalidInput", text).await;
        wait_profile(
            &profiles,
            &profile(cluster),
            "invalid kubeconfig says so",
            |p| joined_is(p, "False", "KubeconfigSecretInvalid"),
        )
        .await;
    }
    wait_event(&client, &ns, "wrong-ca", "InvalidInput", "TLS verification").await;
    wait_event(
        &client,
        &ns,
        "bad-token",
        "InvalidInput",
        "rejected the kubeconfig's credentials",
    )
    .await;
    for cluster in ["wrong-ca", "bad-token"] {
        wait_profile(
            &profiles,
            &profile(cluster),
            "unusable credentials say so",
            |p| joined_is(p, "True", "MemberUnreachable") && member_id(p).is_none(),
        )
        .await;
    }
    wait_event(&client, &ns, "missing", "NotFound", "missing-kubeconfig").await;
    wait_profile(
        &profiles,
        &profile("missing"),
        "missing kubeconfig says so",
        |p| joined_is(p, "False", "KubeconfigSecretMissing"),
    )
    .await;
    wait_event(
        &client,
        &ns,
        "bogus-ref",
        "InvalidInput",
        "spec.controlPlaneRef (NopeControlPlane x)",
    )
    .await;
    let bogus = wait_profile(
        &profiles,
        &profile("bogus-ref"),
        "bogus ref falls back",
        |p| version(p).is_some(),
    )
    .await;
    assert_eq!(
        version(&bogus).as_deref(),
        Some("v1.36.3"),
        "from spec.topology.version"
    );
    wait_event(
        &client,
        &ns,
        &long,
        "InvalidInput",
        "cluster.x-k8s.io/cluster-name is left off",
    )
    .await;
    let long_profiles: Vec<ClusterProfile> = profiles
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.labels().get(LABEL_SOURCE_NAMESPACE) == Some(&ns))
        .filter(|p| p.spec.display_name.as_deref() == Some(format!("{ns}/{long}").as_str()))
        .collect();
    assert_eq!(long_profiles.len(), 1);
    assert_eq!(long_profiles[0].name_any().len(), 63);
    assert!(
        !long_profiles[0]
            .labels()
            .contains_key("cluster.x-k8s.io/cluster-name")
    );

    // Counted by category.
    assert!(
        running
            .counter("inventory_bridge_problems_total{adapter=")
            .await
            > 0.0
    );
    let metrics = running.metrics().await;
    for category in ["invalid-input", "not-found"] {
        assert!(
            metrics.contains(&format!("category=\"{category}\"")),
            "{category} missing from\n{metrics}"
        );
    }

    // The kubeconfigs' credentials are nowhere: not in logs, Events or profiles.
    let pki = member1.pki();
    let mut secrets: Vec<String> = vec![
        token.clone(),
        BASE64.encode(&pki.admin_key),
        BASE64.encode(&pki.admin_cert),
    ];
    // Any line of the PEM key body.
    secrets.extend(
        pki.admin_key
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 20)
            .map(String::from),
    );
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let events_text =
        serde_json::to_string(&events.list(&ListParams::default()).await.unwrap().items).unwrap();
    let profiles_text =
        serde_json::to_string(&profiles.list(&ListParams::default()).await.unwrap().items).unwrap();
    let logs = logs_text();
    assert!(
        logs.contains("problem reported as an Event"),
        "logs are captured"
    );
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "credential material in the logs"
        );
        assert!(
            !events_text.contains(secret.as_str()),
            "credential material in Events"
        );
        assert!(
            !profiles_text.contains(secret.as_str()),
            "credential material in profiles"
        );
    }
    running.stop().await;
}

/// A member that goes away: its profile keeps the last known member id and properties, says why
/// in the Joined condition's reason, and the member is retried with backoff — a handful of
/// attempts, not a hot loop — until it is back.
#[tokio::test]
async fn an_unreachable_member_keeps_its_last_known_values() {
    captured_logs();
    let fleet = shared_fleet().await.unwrap();
    let mut member = ControlPlane::start(ControlPlaneOptions::named("capi-flaky-member"))
        .await
        .unwrap();
    let member_client = member.client().await.unwrap();
    install_crds(&member_client, &[ForeignCrd::ClusterProperty])
        .await
        .unwrap();
    create_cluster_property(&member_client, "clusterset.k8s.io", "set-flaky").await;
    let uid = member.kube_system_uid().await.unwrap();

    let client = fleet.hub.client().await.unwrap();
    install_crds(&client, &[ForeignCrd::CapiCluster])
        .await
        .unwrap();
    install_crd(&client, adapters::crd::cluster_profile_crd())
        .await
        .unwrap();
    let ns = test_namespace(&client, "capi-flaky").await.unwrap();
    let inventory = test_namespace(&client, "inventory").await.unwrap();
    let profiles: Api<ClusterProfile> = Api::namespaced(client.clone(), &inventory);
    let name = leak(format!("capi-source-{ns}"));
    // Re-read every 4 s while healthy; the failure backoff (2 s, 4 s, ...) is capped there too.
    let running = start(client.clone(), name, capi_args(&inventory, Some(&ns), 4)).await;
    let capi = play_capi_controllers(&client, &ns, "v1beta2");
    capi.create_cluster(
        "edge",
        json!({}),
        v1beta2_spec("quick-start", "v1.36.3"),
        v1beta2_ready_status("v1.36.3"),
    )
    .await;
    capi.write_kubeconfig("edge", member.admin_kubeconfig_yaml().as_bytes())
        .await;
    let profile_name = format!("{ns}-edge");
    let first = wait_profile(&profiles, &profile_name, "member read", |p| {
        member_id(p).is_some() && property(p, "clusterset.k8s.io").is_some()
    })
    .await;
    assert_eq!(member_id(&first), Some(uid.as_str()));

    member.stop_apiserver();
    let down = wait_profile(
        &profiles,
        &profile_name,
        "unreachable member reported",
        |p| joined_is(p, "True", "MemberUnreachable"),
    )
    .await;
    assert_eq!(
        member_id(&down),
        Some(uid.as_str()),
        "last known member id kept"
    );
    assert_eq!(
        property(&down, "clusterset.k8s.io").as_deref(),
        Some("set-flaky"),
        "last known properties kept"
    );
    wait_event(
        &client,
        &ns,
        "edge",
        "KubeApiError",
        "cannot connect to the member's API server",
    )
    .await;

    // Backoff, not a hot loop: count the failed reads over a window.
    let failed = "inventory_bridge_member_reads_total{adapter=";
    let errors = |text: String| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(failed) && l.contains("result=\"error\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let before = errors(running.metrics().await);
    tokio::time::sleep(Duration::from_secs(12)).await;
    let attempts = errors(running.metrics().await) - before;
    eprintln!("MEASURED failed member reads in 12 s while unreachable: {attempts}");
    assert!(attempts >= 1.0, "it keeps trying");
    assert!(
        attempts <= 10.0,
        "{attempts} attempts in 12 s is a hot loop"
    );

    member.start_apiserver().await.unwrap();
    wait_profile(&profiles, &profile_name, "member back", |p| {
        joined_is(p, "True", "KubeconfigAvailable") && member_id(p) == Some(uid.as_str())
    })
    .await;
    running.stop().await;
}

/// capi-source and sveltos-sink with their defaults: the profile's `cluster-api` provider points
/// at the `<cluster>-kubeconfig` Secret, which sveltos-sink's default provider file serves with
/// the built-in `kubeconfig-secret`; with CAPI's admin kubeconfig it mints its own identity on the
/// member and publishes a kubeconfig for that identity only — the admin kubeconfig never leaves
/// its Secret.
#[tokio::test]
async fn capi_kubeconfig_bootstraps_sveltos_sink_with_both_defaults() {
    captured_logs();
    let fleet = shared_fleet().await.unwrap();
    let member = &fleet.members[0];
    let hub = ControlPlane::start(ControlPlaneOptions::named("capi-e2e-hub"))
        .await
        .unwrap();
    let client = hub.client().await.unwrap();
    install_crds(
        &client,
        &[ForeignCrd::CapiCluster, ForeignCrd::SveltosCluster],
    )
    .await
    .unwrap();
    install_crd(&client, adapters::crd::cluster_profile_crd())
        .await
        .unwrap();
    let team = test_namespace(&client, "team").await.unwrap();
    let inventory = test_namespace(&client, "inventory").await.unwrap();
    let source = start(
        client.clone(),
        "capi-source",
        capi_args(&inventory, None, 300),
    )
    .await;
    let capi = play_capi_controllers(&client, &team, "v1beta2");
    capi.create_cluster(
        "web",
        json!({"env": "prod"}),
        v1beta2_spec("quick-start", "v1.36.3"),
        v1beta2_ready_status("v1.36.3"),
    )
    .await;
    let admin_kubeconfig = member.admin_kubeconfig_yaml();
    capi.write_kubeconfig("web", admin_kubeconfig.as_bytes())
        .await;
    let profile_name = format!("{team}-web");
    let profiles: Api<ClusterProfile> = Api::namespaced(client.clone(), &inventory);
    wait_profile(&profiles, &profile_name, "joined profile", |p| {
        joined_is(p, "True", "KubeconfigAvailable") || server(p) == Some(member.server())
    })
    .await;

    // The documented CAPI setup: the profiles live in the inventory, the kubeconfig Secrets in
    // the Clusters' namespace, which the operator allows the built-in to read from.
    let sink = harness::run_sveltos_sink(
        client.clone(),
        &[
            "--inventory-namespace",
            &inventory,
            "--bootstrap-secret-namespace",
            &team,
        ],
    )
    .await
    .unwrap();
    let (kubeconfig, username) = harness::sveltos_registration(&client, &inventory, &profile_name)
        .await
        .unwrap();
    // sveltos-sink's default identity: inventory-bridge/inventory-bridge-sveltos-sink.
    assert_eq!(username, harness::sveltos_member_username());
    // The admin credential stayed in CAPI's Secret: not in what the sink published.
    let admin_key = member.pki().admin_key.lines().nth(1).unwrap().to_string();
    assert!(!kubeconfig.contains(&admin_key));
    assert!(!kubeconfig.contains("client-key-data"));

    capi.delete_cluster("web").await;
    wait_gone(&profiles, &profile_name).await;
    harness::wait_sveltos_registration_revoked(&client, &inventory, &profile_name, member)
        .await
        .unwrap();
    sink.shutdown().await.unwrap();
    source.stop().await;
}

/// capi-source feeding argocd-sink and flux-sink, all three with their defaults plus the inventory
/// namespace: the CAPI admin kubeconfig bootstraps each sink's own identity on the member, the
/// Argo CD cluster Secret lands in `argocd` and the Flux kubeconfig Secret in `flux-system`, each
/// authenticating as its sink's account only; deleting the Cluster revokes both.
#[tokio::test]
async fn capi_kubeconfig_bootstraps_argocd_and_flux_sinks_with_defaults() {
    captured_logs();
    let fleet = shared_fleet().await.unwrap();
    let member = &fleet.members[0];
    let hub = ControlPlane::start(ControlPlaneOptions::named("capi-e2e-gitops-hub"))
        .await
        .unwrap();
    let client = hub.client().await.unwrap();
    install_crds(&client, &[ForeignCrd::CapiCluster])
        .await
        .unwrap();
    install_crd(&client, adapters::crd::cluster_profile_crd())
        .await
        .unwrap();
    for namespace in ["argocd", "flux-system"] {
        harness::ensure_namespace(&client, namespace).await.unwrap();
    }
    let team = test_namespace(&client, "team").await.unwrap();
    let inventory = test_namespace(&client, "inventory").await.unwrap();
    let source = start(
        client.clone(),
        "capi-source",
        capi_args(&inventory, None, 300),
    )
    .await;
    let capi = play_capi_controllers(&client, &team, "v1beta2");
    capi.create_cluster(
        "web",
        json!({"env": "prod"}),
        v1beta2_spec("quick-start", "v1.36.3"),
        v1beta2_ready_status("v1.36.3"),
    )
    .await;
    capi.write_kubeconfig("web", member.admin_kubeconfig_yaml().as_bytes())
        .await;
    let profile_name = format!("{team}-web");
    let profiles: Api<ClusterProfile> = Api::namespaced(client.clone(), &inventory);
    wait_profile(&profiles, &profile_name, "joined profile", |p| {
        joined_is(p, "True", "KubeconfigAvailable") || server(p) == Some(member.server())
    })
    .await;

    let started = Instant::now();
    // The CAPI setup: the Clusters' namespace is where bootstrap Secrets may be read.
    let sink_args = [
        "--inventory-namespace",
        inventory.as_str(),
        "--bootstrap-secret-namespace",
        team.as_str(),
    ];
    let argocd = harness::run_argocd_sink(client.clone(), &sink_args)
        .await
        .unwrap();
    let flux = harness::run_flux_sink(client.clone(), &sink_args)
        .await
        .unwrap();
    let (users, tokens) = harness::argocd_and_flux_registrations(
        &client,
        &inventory,
        &profile_name,
        "argocd",
        "flux-system",
    )
    .await
    .unwrap();
    eprintln!(
        "MEASURED capi profile -> Argo CD and Flux registered (both sinks started cold): {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        users,
        [
            "system:serviceaccount:inventory-bridge:inventory-bridge-argocd-sink",
            "system:serviceaccount:inventory-bridge:inventory-bridge-flux-sink",
        ]
    );
    let admin_key = member.pki().admin_key.lines().nth(1).unwrap().to_string();
    for token in &tokens {
        assert!(!token.contains(&admin_key));
    }
    let logs = logs_text();
    for token in &tokens {
        assert!(!logs.contains(token.as_str()), "a minted token in the logs");
    }

    capi.delete_cluster("web").await;
    wait_gone(&profiles, &profile_name).await;
    harness::wait_argocd_and_flux_revoked(
        &client,
        &inventory,
        &profile_name,
        "argocd",
        "flux-system",
        member,
    )
    .await
    .unwrap();
    argocd.shutdown().await.unwrap();
    flux.shutdown().await.unwrap();
    source.stop().await;
}
