//! The source workloads: realistic OCM ManagedClusters and Cluster API Clusters (with status,
//! claims, conditions, labels and kubeconfig Secrets) created before the adapter starts, what
//! their profiles must say, churn on them, and the sources' floor.
//!
//! OCM's and Cluster API's controllers do not run here: the bench writes what they would (the
//! registration agent's ManagedCluster status, the Cluster controller's status and
//! `<cluster>-kubeconfig` Secret).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adapters::profile::{
    CONDITION_CONTROL_PLANE_HEALTHY, CONDITION_JOINED, ClusterProfile, LABEL_CLUSTER_MANAGER,
    LABEL_CLUSTER_SET, LABEL_INVENTORY_MEMBER_ID, PROPERTY_CLUSTER_ID,
};
use adapters::source::LABEL_SOURCE;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use super::observe::{Check, Expect};
use super::phases::Scenario;
use super::{MEMBER_CLUSTERSET, Member, retry_transport};
use crate::{Result, ensure_namespace};

/// Requests in flight while the bench writes inputs.
const PREPARE_CONCURRENCY: usize = 16;
/// The sources' default `--concurrency`: the floor uses the same.
const SOURCE_CONCURRENCY: usize = 4;
/// The label churn sets.
const CHURN_LABEL: &str = "bench-churn";

/// What each input's profile must say beyond its fixed content: changed by churn.
struct Expected {
    available: Vec<AtomicBool>,
    churn: Vec<Mutex<Option<String>>>,
}

impl Expected {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            available: (0..n).map(|_| AtomicBool::new(true)).collect(),
            churn: (0..n).map(|_| Mutex::new(None)).collect(),
        })
    }

    fn available(&self, i: usize) -> bool {
        self.available[i].load(Ordering::SeqCst)
    }

    fn churn_label(&self, i: usize) -> Option<String> {
        self.churn[i].lock().ok().and_then(|v| v.clone())
    }

    /// Plan visit `visit` of input `i`: even visits set a new label value, odd ones flip
    /// availability.
    fn plan(&self, i: usize, visit: usize, n: usize) -> Expect {
        if visit.is_multiple_of(2) {
            let value = format!("c{}", visit * n + i);
            if let Ok(mut label) = self.churn[i].lock() {
                *label = Some(value.clone());
            }
            Expect::Label(CHURN_LABEL.to_string(), value)
        } else {
            let now = !self.available[i].fetch_xor(true, Ordering::SeqCst);
            Expect::Condition(
                CONDITION_CONTROL_PLANE_HEALTHY.to_string(),
                if now { "True" } else { "False" }.to_string(),
            )
        }
    }
}

fn profile_resource() -> ApiResource {
    ApiResource::erase::<ClusterProfile>(&())
}

/// `<prefix>-<index>` back to the index.
fn index_of(name: &str, prefix: &str, n: usize) -> Option<usize> {
    name.strip_prefix(prefix)?
        .strip_prefix('-')?
        .parse()
        .ok()
        .filter(|i| *i < n)
}

fn condition_status<'a>(profile: &'a Value, type_: &str) -> Option<&'a str> {
    profile["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?["status"]
        .as_str()
}

fn property<'a>(profile: &'a Value, name: &str) -> Option<&'a str> {
    profile["status"]["properties"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)?["value"]
        .as_str()
}

fn label<'a>(profile: &'a Value, key: &str) -> Option<&'a str> {
    profile["metadata"]["labels"][key].as_str()
}

/// What every profile carries whatever its source says: the parts that churn changes.
fn churned_parts_right(profile: &Value, expected: &Expected, i: usize) -> bool {
    let healthy = if expected.available(i) {
        "True"
    } else {
        "False"
    };
    condition_status(profile, CONDITION_CONTROL_PLANE_HEALTHY) == Some(healthy)
        && condition_status(profile, CONDITION_JOINED) == Some("True")
        && label(profile, CHURN_LABEL) == expected.churn_label(i).as_deref()
}

fn version_of(i: usize) -> String {
    format!("v1.36.{}", i % 4)
}

fn env_of(i: usize) -> &'static str {
    if i.is_multiple_of(2) {
        "prod"
    } else {
        "staging"
    }
}

async fn for_each_index<F, Fut>(n: usize, concurrency: usize, f: F) -> Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    futures::stream::iter((0..n).map(f))
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Count the profiles in `namespace` that pass `check`.
async fn verify_profiles(hub: &kube::Client, namespace: &str, check: &Check) -> Result<usize> {
    let api: Api<DynamicObject> = Api::namespaced_with(hub.clone(), namespace, &profile_resource());
    let list = retry_transport("list profiles", || async {
        Ok(api.list(&ListParams::default()).await?)
    })
    .await?;
    Ok(list
        .items
        .iter()
        .filter_map(|p| serde_json::to_value(p).ok())
        .filter(|p| check(p))
        .count())
}

/// The sources' floor: the profiles the adapter converged to, applied again into `floor`
/// namespace as a tight loop would: one server-side apply of metadata and spec and one of the
/// status per profile, with the sources' default concurrency and an admin client like theirs.
/// (The source label is changed so no adapter ever claims these.) Where the source must read
/// the member to know its id and properties (capi-source: the About API's ClusterProperty objects
/// and, when none is `id.k8s.io`, the `kube-system` uid, through a client built from the
/// Cluster's own kubeconfig),
/// `member_of` names that kubeconfig and the floor reads them too.
async fn source_floor(
    hub: &kube::Client,
    inventory: &str,
    floor: &str,
    member_of: impl Fn(&str) -> Option<String>,
) -> Result<Duration> {
    ensure_namespace(hub, floor).await?;
    let resource = profile_resource();
    let source: Api<DynamicObject> = Api::namespaced_with(hub.clone(), inventory, &resource);
    let target: Api<DynamicObject> = Api::namespaced_with(hub.clone(), floor, &resource);
    let profiles = retry_transport("list profiles for the floor", || async {
        Ok(source.list(&ListParams::default()).await?)
    })
    .await?
    .items;
    let bodies: Vec<(String, Value, Value, Option<String>)> = profiles
        .iter()
        .filter_map(|p| {
            let p = serde_json::to_value(p).ok()?;
            let name = p["metadata"]["name"].as_str()?.to_string();
            let mut labels = p["metadata"]["labels"].clone();
            labels[LABEL_SOURCE] = json!("bench-floor");
            let head = json!({"apiVersion": p["apiVersion"], "kind": p["kind"]});
            let mut main = head.clone();
            main["metadata"] = json!({"name": name, "namespace": floor, "labels": labels,
                "annotations": p["metadata"]["annotations"]});
            main["spec"] = p["spec"].clone();
            let mut status = head;
            status["metadata"] = json!({"name": name, "namespace": floor});
            status["spec"] = p["spec"].clone();
            status["status"] = p["status"].clone();
            let member = member_of(&name);
            Some((name, main, status, member))
        })
        .collect();
    let params = PatchParams::apply("bench-floor").force();
    let start = Instant::now();
    futures::stream::iter(bodies.iter().map(|(name, main, status, member)| {
        let target = &target;
        let params = &params;
        retry_transport("a floor object", move || async move {
            if let Some(kubeconfig) = member {
                let client = crate::controlplane::client_from_kubeconfig_yaml(kubeconfig).await?;
                let properties = Api::<DynamicObject>::all_with(
                    client.clone(),
                    &adapters::member_reads::cluster_property_resource(),
                )
                .list(&ListParams::default())
                .await?;
                // As the adapter: the kube-system uid only when no property names the cluster.
                if !properties
                    .items
                    .iter()
                    .any(|p| p.metadata.name.as_deref() == Some(PROPERTY_CLUSTER_ID))
                {
                    Api::<Namespace>::all(client).get("kube-system").await?;
                }
            }
            target.patch(name, params, &Patch::Apply(main)).await?;
            target
                .patch_status(name, params, &Patch::Apply(status))
                .await?;
            Ok(())
        })
    }))
    .buffer_unordered(SOURCE_CONCURRENCY)
    .try_collect::<Vec<()>>()
    .await?;
    let elapsed = start.elapsed();
    // Untimed: the floor's profiles go, so later adapters (which watch every profile) and runs
    // do not hold them.
    retry_transport("delete the floor's profiles", || async {
        target
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await?;
        Ok(())
    })
    .await?;
    Ok(elapsed)
}

// ---- ocm-source ---------------------------------------------------------------------------

/// N OCM ManagedClusters, accepted, joined and available, with claims (`id.k8s.io` among them)
/// and labels, all selected by one label; one inventory namespace.
pub struct OcmScenario {
    hub: kube::Client,
    ca: String,
    n: usize,
    prefix: String,
    inventory: String,
    expected: Arc<Expected>,
}

fn managed_clusters() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cluster.open-cluster-management.io", "v1", "ManagedCluster"),
        "managedclusters",
    )
}

impl OcmScenario {
    /// `n` clusters whose client config carries `ca_pem` as its CA bundle.
    pub fn new(hub: kube::Client, ca_pem: &str, n: usize) -> Self {
        Self {
            hub,
            ca: BASE64.encode(ca_pem),
            n,
            prefix: "ocm".to_string(),
            inventory: "bench-ocm".to_string(),
            expected: Expected::new(n),
        }
    }

    fn name(&self, i: usize) -> String {
        format!("{}-{i:05}", self.prefix)
    }

    fn uid(&self, i: usize) -> String {
        format!("{}-uid-{i:05}", self.prefix)
    }

    fn url(i: usize) -> String {
        format!("https://c{i}.bench.example:6443")
    }

    fn status(&self, i: usize, available: bool) -> Value {
        let condition = |type_: &str, status: &str, reason: &str| {
            json!({"type": type_, "status": status, "reason": reason,
                   "message": format!("{type_} {status}"),
                   "lastTransitionTime": "2026-01-01T00:00:00Z"})
        };
        json!({"status": {
            "conditions": [
                condition("HubAcceptedManagedCluster", "True", "HubClusterAdminAccepted"),
                condition("ManagedClusterJoined", "True", "ManagedClusterJoined"),
                if available {
                    condition("ManagedClusterConditionAvailable", "True", "ManagedClusterAvailable")
                } else {
                    condition("ManagedClusterConditionAvailable", "False", "ManagedClusterLeaseUpdateStopped")
                },
            ],
            "version": {"kubernetes": version_of(i)},
            "clusterClaims": [
                {"name": "id.k8s.io", "value": self.uid(i)},
                {"name": "region.open-cluster-management.io", "value": format!("eu-{}", i % 3)},
                {"name": "platform.open-cluster-management.io", "value": "AWS"},
                {"name": "product.open-cluster-management.io", "value": "EKS"},
            ],
        }})
    }

    fn clusters(&self) -> Api<DynamicObject> {
        Api::all_with(self.hub.clone(), &managed_clusters())
    }
}

impl Scenario for OcmScenario {
    fn adapter(&self) -> &'static str {
        "ocm-source"
    }

    fn role(&self) -> &'static str {
        "source"
    }

    fn size(&self) -> usize {
        self.n
    }

    fn args(&self) -> Vec<String> {
        vec![
            format!("--inventory-namespace={}", self.inventory),
            format!("--cluster-selector=bench={}", self.prefix),
            "--identity=bench".to_string(),
        ]
    }

    fn watched(&self) -> (ApiResource, String) {
        (profile_resource(), self.inventory.clone())
    }

    fn check(&self) -> Check {
        let (prefix, n, expected) = (self.prefix.clone(), self.n, self.expected.clone());
        Arc::new(move |p: &Value| {
            let Some(i) = p["metadata"]["name"]
                .as_str()
                .and_then(|name| index_of(name, &prefix, n))
            else {
                return false;
            };
            let uid = format!("{prefix}-uid-{i:05}");
            label(p, "bench") == Some(prefix.as_str())
                && label(p, "env") == Some(env_of(i))
                && label(p, LABEL_INVENTORY_MEMBER_ID) == Some(uid.as_str())
                && label(p, LABEL_CLUSTER_MANAGER) == Some("open-cluster-management")
                && label(p, LABEL_SOURCE) == Some("ocm-source")
                && label(p, LABEL_CLUSTER_SET) == Some(format!("set-{}", i % 4).as_str())
                && label(p, "feature.open-cluster-management.io/addon-x").is_none()
                && p["spec"]["clusterManager"]["name"] == "open-cluster-management"
                && p["status"]["version"]["kubernetes"] == version_of(i).as_str()
                && property(p, "id.k8s.io") == Some(uid.as_str())
                && p["status"]["accessProviders"][0]["cluster"]["server"]
                    == OcmScenario::url(i).as_str()
                && churned_parts_right(p, &expected, i)
        })
    }

    async fn prepare(&self) -> Result<()> {
        ensure_namespace(&self.hub, &self.inventory).await?;
        let clusters = self.clusters();
        let params = PatchParams::apply("bench-ocm-admin");
        for_each_index(self.n, PREPARE_CONCURRENCY, |i| {
            let (clusters, params) = (&clusters, &params);
            async move {
                let name = self.name(i);
                let labels = BTreeMap::from([
                    ("bench".to_string(), self.prefix.clone()),
                    ("env".to_string(), env_of(i).to_string()),
                    (
                        "cluster.open-cluster-management.io/clusterset".to_string(),
                        format!("set-{}", i % 4),
                    ),
                    (
                        "feature.open-cluster-management.io/addon-x".to_string(),
                        "available".to_string(),
                    ),
                    ("vendor".to_string(), "EKS".to_string()),
                ]);
                let object = json!({
                    "apiVersion": "cluster.open-cluster-management.io/v1",
                    "kind": "ManagedCluster",
                    "metadata": {"name": name, "labels": labels},
                    "spec": {
                        "hubAcceptsClient": true,
                        "leaseDurationSeconds": 60,
                        "managedClusterClientConfigs": [{"url": Self::url(i), "caBundle": self.ca}],
                    },
                });
                clusters
                    .patch(&name, params, &Patch::Apply(&object))
                    .await?;
                clusters
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(self.status(i, true)),
                    )
                    .await?;
                Ok(())
            }
        })
        .await
    }

    async fn verify(&self) -> Result<usize> {
        verify_profiles(&self.hub, &self.inventory, &self.check()).await
    }

    fn plan_change(&self, index: usize, visit: usize) -> (String, Expect) {
        (self.name(index), self.expected.plan(index, visit, self.n))
    }

    async fn apply_change(&self, index: usize, visit: usize) -> Result<()> {
        let clusters = self.clusters();
        let name = self.name(index);
        if visit.is_multiple_of(2) {
            let value = self.expected.churn_label(index);
            clusters
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": {CHURN_LABEL: value}}})),
                )
                .await?;
        } else {
            let status = self.status(index, self.expected.available(index));
            clusters
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                .await?;
        }
        Ok(())
    }

    async fn floor(&self, run: usize) -> Result<Duration> {
        let floor = format!("bench-ocm-floor-{run}");
        source_floor(&self.hub, &self.inventory, &floor, |_| None).await
    }
}

// ---- capi-source --------------------------------------------------------------------------

/// N Cluster API v1beta2 Clusters, provisioned and available, each with its
/// `<cluster>-kubeconfig` Secret reaching one of the members (round-robin).
pub struct CapiScenario {
    hub: kube::Client,
    members: Vec<Member>,
    n: usize,
    prefix: String,
    namespace: String,
    inventory: String,
    expected: Arc<Expected>,
}

fn capi_clusters() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta2", "Cluster"),
        "clusters",
    )
}

impl CapiScenario {
    /// `n` Clusters over `members`.
    pub fn new(hub: kube::Client, members: Vec<Member>, n: usize) -> Self {
        Self {
            hub,
            members,
            n,
            prefix: "capi".to_string(),
            namespace: "bench-capi-clusters".to_string(),
            inventory: "bench-capi".to_string(),
            expected: Expected::new(n),
        }
    }

    fn name(&self, i: usize) -> String {
        format!("{}-{i:05}", self.prefix)
    }

    fn profile_name(&self, i: usize) -> String {
        format!("{}-{}", self.namespace, self.name(i))
    }

    fn member(&self, i: usize) -> &Member {
        &self.members[i % self.members.len()]
    }

    fn status(i: usize, available: bool) -> Value {
        let (status, reason) = if available {
            ("True", "Available")
        } else {
            ("False", "NotAvailable")
        };
        json!({"status": {
            "initialization": {"infrastructureProvisioned": true, "controlPlaneInitialized": true},
            "controlPlane": {"versions": [{"version": version_of(i), "replicas": 3}]},
            "phase": "Provisioned",
            "conditions": [
                {"type": "ControlPlaneAvailable", "status": status, "reason": reason, "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "Available", "status": status, "reason": reason, "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "InfrastructureReady", "status": "True", "reason": "Ready", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            ],
        }})
    }

    fn clusters(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.hub.clone(), &self.namespace, &capi_clusters())
    }
}

impl Scenario for CapiScenario {
    fn adapter(&self) -> &'static str {
        "capi-source"
    }

    fn role(&self) -> &'static str {
        "source"
    }

    fn size(&self) -> usize {
        self.n
    }

    fn args(&self) -> Vec<String> {
        vec![
            format!("--inventory-namespace={}", self.inventory),
            format!("--watch-namespace={}", self.namespace),
            "--identity=bench".to_string(),
        ]
    }

    fn watched(&self) -> (ApiResource, String) {
        (profile_resource(), self.inventory.clone())
    }

    fn check(&self) -> Check {
        let prefix = format!("{}-{}", self.namespace, self.prefix);
        let (n, expected) = (self.n, self.expected.clone());
        let members: Vec<(String, String)> = self
            .members
            .iter()
            .map(|m| (m.uid.clone(), m.server.clone()))
            .collect();
        Arc::new(move |p: &Value| {
            let Some(i) = p["metadata"]["name"]
                .as_str()
                .and_then(|name| index_of(name, &prefix, n))
            else {
                return false;
            };
            let (uid, server) = &members[i % members.len()];
            label(p, "env") == Some(env_of(i))
                && label(p, LABEL_INVENTORY_MEMBER_ID) == Some(uid.as_str())
                && label(p, LABEL_CLUSTER_MANAGER) == Some("cluster-api")
                && label(p, LABEL_SOURCE) == Some("capi-source")
                && p["spec"]["clusterManager"]["name"] == "cluster-api"
                && p["status"]["version"]["kubernetes"] == version_of(i).as_str()
                && p["status"]["accessProviders"][0]["cluster"]["server"] == server.as_str()
                && property(p, MEMBER_CLUSTERSET.0) == Some(MEMBER_CLUSTERSET.1)
                && churned_parts_right(p, &expected, i)
        })
    }

    async fn prepare(&self) -> Result<()> {
        ensure_namespace(&self.hub, &self.inventory).await?;
        ensure_namespace(&self.hub, &self.namespace).await?;
        let clusters = self.clusters();
        let secrets: Api<Secret> = Api::namespaced(self.hub.clone(), &self.namespace);
        let params = PatchParams::apply("bench-capi-controllers");
        for_each_index(self.n, PREPARE_CONCURRENCY, |i| {
            let (clusters, secrets, params) = (&clusters, &secrets, &params);
            async move {
                let name = self.name(i);
                let secret = json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": format!("{name}-kubeconfig"), "namespace": self.namespace,
                                 "labels": {"cluster.x-k8s.io/cluster-name": name}},
                    "type": "cluster.x-k8s.io/secret",
                    "data": {"value": BASE64.encode(&self.member(i).kubeconfig)},
                });
                secrets
                    .patch(&format!("{name}-kubeconfig"), params, &Patch::Apply(&secret))
                    .await?;
                let cluster = json!({
                    "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
                    "metadata": {"name": name, "namespace": self.namespace, "labels": {
                        "env": env_of(i),
                        "cluster.x-k8s.io/cluster-name": name,
                        "topology.cluster.x-k8s.io/owned": "",
                        "topology.kubernetes.io/region": format!("eu-{}", i % 3),
                    }},
                    "spec": {
                        "controlPlaneEndpoint": {"host": "10.11.12.13", "port": 6443},
                        "topology": {"classRef": {"name": "bench-class"}, "version": version_of(i)},
                        "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DockerCluster", "name": name},
                    },
                });
                clusters.patch(&name, params, &Patch::Apply(&cluster)).await?;
                clusters
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(Self::status(i, true)),
                    )
                    .await?;
                Ok(())
            }
        })
        .await
    }

    async fn verify(&self) -> Result<usize> {
        verify_profiles(&self.hub, &self.inventory, &self.check()).await
    }

    fn plan_change(&self, index: usize, visit: usize) -> (String, Expect) {
        (
            self.profile_name(index),
            self.expected.plan(index, visit, self.n),
        )
    }

    async fn apply_change(&self, index: usize, visit: usize) -> Result<()> {
        let clusters = self.clusters();
        let name = self.name(index);
        if visit.is_multiple_of(2) {
            let value = self.expected.churn_label(index);
            clusters
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": {CHURN_LABEL: value}}})),
                )
                .await?;
        } else {
            let status = Self::status(index, self.expected.available(index));
            clusters
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                .await?;
        }
        Ok(())
    }

    async fn floor(&self, run: usize) -> Result<Duration> {
        let prefix = format!("{}-{}", self.namespace, self.prefix);
        let floor = format!("bench-capi-floor-{run}");
        source_floor(&self.hub, &self.inventory, &floor, |name| {
            index_of(name, &prefix, self.n).map(|i| self.member(i).kubeconfig.clone())
        })
        .await
    }
}
