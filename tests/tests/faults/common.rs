//! What the scenarios share: the adapter binaries, playing OCM for many clusters at once, the
//! exact expected profile of a cluster, and observation (request counters, memory, `/readyz`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use adapters::profile::{
    CONDITION_CONTROL_PLANE_HEALTHY, CONDITION_JOINED, ClusterProfile, LABEL_CLUSTER_MANAGER,
    LABEL_CLUSTER_SET, LABEL_INVENTORY_MEMBER_ID,
};
use adapters::source::LABEL_SOURCE;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::StreamExt;
use harness::adapter_process::AdapterProcess;
use harness::{ControlPlane, ControlPlaneOptions, ForeignCrd, install_crd, install_crds};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use ocm_source::project::LABEL_CLUSTER_NAME;
use ocm_source::types::ManagedCluster;
use serde_json::{Value, json};

/// Requests the test itself sends at once when playing OCM for many clusters.
const PLAY_CONCURRENCY: usize = 24;

/// An adapter binary built by `cargo build --workspace --bins` (which `make test` runs first).
pub fn adapter_binary(name: &str) -> PathBuf {
    // target/<profile>/deps/<this test> -> target/<profile>/<adapter>
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in target/<profile>/deps");
    let binary = profile_dir.join(name);
    assert!(
        binary.exists(),
        "{} is missing: build the adapters first (`cargo build --workspace --bins`; `make test` does)",
        binary.display()
    );
    binary
}

/// A hub with the ClusterProfile and ManagedCluster CRDs and an inventory namespace.
pub struct Hub {
    pub plane: ControlPlane,
    pub client: Client,
    pub inventory: String,
}

impl Hub {
    pub async fn start(name: &str, options: ControlPlaneOptions) -> Hub {
        let plane = ControlPlane::start(ControlPlaneOptions {
            name: name.to_string(),
            ..options
        })
        .await
        .unwrap();
        let client = plane.client().await.unwrap();
        install_crd(&client, adapters::crd::cluster_profile_crd())
            .await
            .unwrap();
        install_crds(&client, &[ForeignCrd::ManagedCluster])
            .await
            .unwrap();
        let inventory = harness::test_namespace(&client, "inventory").await.unwrap();
        Hub {
            plane,
            client,
            inventory,
        }
    }

    /// A fresh admin client (a restarted apiserver is the same URL, but old connections are gone).
    pub async fn fresh_client(&self) -> Client {
        self.plane.client().await.unwrap()
    }

    pub fn profiles(&self) -> Api<ClusterProfile> {
        Api::namespaced(self.client.clone(), &self.inventory)
    }
}

/// The arguments of an ocm-source replica serving `hub`'s inventory, clusters selected by
/// `ib-fault=<selector>`, without leader election (one replica: it must recover by itself, not by
/// a Pod restart).
pub fn ocm_args(hub: &Hub, selector: &str) -> Vec<String> {
    vec![
        format!("--inventory-namespace={}", hub.inventory),
        format!("--cluster-selector=ib-fault={selector}"),
        "--leader-election=false".to_string(),
        "--concurrency=8".to_string(),
        "--log-filter=info".to_string(),
    ]
}

/// Start an adapter process with the hub's admin kubeconfig.
pub fn start_adapter(binary: &str, hub: &ControlPlane, args: &[String]) -> AdapterProcess {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    AdapterProcess::start(&adapter_binary(binary), hub, &args).unwrap()
}

/// One ManagedCluster as an admin accepting it and its registration agent would leave it.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub name: String,
    /// Its own labels (the selector included).
    pub labels: BTreeMap<String, String>,
    /// `managedClusterClientConfigs` (None: none at all).
    pub client_config: Option<Value>,
    /// The whole `status` the registration agent reports (None: not yet reported).
    pub status: Option<Value>,
}

fn condition(type_: &str, status: &str, reason: &str) -> Value {
    json!({
        "type": type_, "status": status, "reason": reason,
        "message": format!("{type_} {status}"),
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    })
}

/// A healthy, realistic cluster number `i` (labels, claims, conditions, version, URL and CA).
pub fn good_cluster(prefix: &str, selector: &str, i: usize, ca_pem: &str) -> Cluster {
    let available = if i.is_multiple_of(7) { "False" } else { "True" };
    Cluster {
        name: format!("{prefix}-{i:05}"),
        labels: BTreeMap::from([
            ("ib-fault".to_string(), selector.to_string()),
            (
                "env".to_string(),
                ["prod", "staging", "dev"][i % 3].to_string(),
            ),
            (
                "cluster.open-cluster-management.io/clusterset".to_string(),
                format!("set-{}", i % 4),
            ),
            (
                "feature.open-cluster-management.io/addon-x".to_string(),
                "available".to_string(),
            ),
        ]),
        client_config: Some(json!({
            "url": format!("https://{prefix}-{i}.example:6443"),
            "caBundle": BASE64.encode(ca_pem),
        })),
        status: Some(json!({
            "conditions": [
                condition("HubAcceptedManagedCluster", "True", "HubClusterAdminAccepted"),
                condition("ManagedClusterJoined", "True", "ManagedClusterJoined"),
                condition("ManagedClusterConditionAvailable", available,
                          if available == "True" { "ManagedClusterAvailable" } else { "ManagedClusterLeaseUpdateStopped" }),
            ],
            "version": {"kubernetes": format!("v1.36.{}", i % 5)},
            "clusterClaims": [
                {"name": "id.k8s.io", "value": format!("uid-{prefix}-{i}")},
                {"name": "region", "value": format!("region-{}", i % 5)},
            ],
        })),
    }
}

/// Play the admin (spec, server-side apply) and the registration agent (status) for `clusters`.
pub async fn create_clusters(client: &Client, clusters: &[Cluster]) {
    let api: Api<ManagedCluster> = Api::all(client.clone());
    futures::stream::iter(clusters.iter().cloned())
        .for_each_concurrent(PLAY_CONCURRENCY, |cluster| {
            let api = api.clone();
            async move {
                let mut spec = json!({"hubAcceptsClient": true});
                if let Some(config) = &cluster.client_config {
                    spec["managedClusterClientConfigs"] = json!([config]);
                }
                let object = json!({
                    "apiVersion": "cluster.open-cluster-management.io/v1",
                    "kind": "ManagedCluster",
                    "metadata": {"name": cluster.name, "labels": cluster.labels},
                    "spec": spec,
                });
                api.patch(
                    &cluster.name,
                    &PatchParams::apply("test-admin"),
                    &Patch::Apply(&object),
                )
                .await
                .unwrap_or_else(|err| panic!("create ManagedCluster {}: {err}", cluster.name));
                if let Some(status) = &cluster.status {
                    api.patch_status(
                        &cluster.name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({ "status": status })),
                    )
                    .await
                    .unwrap_or_else(|err| panic!("status of {}: {err}", cluster.name));
                }
            }
        })
        .await;
}

/// What must be true of the profile of a healthy [`good_cluster`] (every field ocm-source
/// publishes, compared exactly; times are not compared).
pub fn profile_mismatch(cluster: &Cluster, profile: &ClusterProfile) -> Option<String> {
    let mut labels: BTreeMap<String, String> = cluster
        .labels
        .iter()
        .filter(|(k, _)| !k.starts_with("feature.open-cluster-management.io/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let status = cluster.status.as_ref()?;
    if let Some(set) = cluster
        .labels
        .get("cluster.open-cluster-management.io/clusterset")
    {
        labels.insert(LABEL_CLUSTER_SET.into(), set.clone());
    }
    let claims: Vec<(String, String)> = status["clusterClaims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let id = claims.iter().find(|(n, _)| n == "id.k8s.io").unwrap();
    labels.insert(LABEL_INVENTORY_MEMBER_ID.into(), id.1.clone());
    labels.insert(LABEL_CLUSTER_NAME.into(), cluster.name.clone());
    labels.insert(
        LABEL_CLUSTER_MANAGER.into(),
        "open-cluster-management".into(),
    );
    labels.insert(LABEL_SOURCE.into(), "ocm-source".into());
    if profile.labels() != &labels {
        return Some(format!("labels {:?} != {labels:?}", profile.labels()));
    }
    if profile.spec.display_name.as_deref() != Some(cluster.name.as_str())
        || profile.spec.cluster_manager.name != "open-cluster-management"
    {
        return Some(format!("spec {:?}", profile.spec));
    }
    let Some(got) = &profile.status else {
        return Some("no status".into());
    };
    let available = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "ManagedClusterConditionAvailable")
        .unwrap();
    let conditions: BTreeSet<(String, String, String)> = got
        .conditions
        .iter()
        .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
        .collect();
    let expected_conditions = BTreeSet::from([
        (
            CONDITION_CONTROL_PLANE_HEALTHY.to_string(),
            available["status"].as_str().unwrap().to_string(),
            available["reason"].as_str().unwrap().to_string(),
        ),
        (
            CONDITION_JOINED.to_string(),
            "True".to_string(),
            "ManagedClusterJoined".to_string(),
        ),
    ]);
    if conditions != expected_conditions || got.conditions.len() != 2 {
        return Some(format!("conditions {conditions:?}"));
    }
    let version = got.version.as_ref().and_then(|v| v.kubernetes.clone());
    if version.as_deref() != status["version"]["kubernetes"].as_str() {
        return Some(format!("version {version:?}"));
    }
    let properties: Vec<(String, String)> = got
        .properties
        .iter()
        .map(|p| (p.name.clone(), p.value.clone()))
        .collect();
    if properties != claims {
        return Some(format!("properties {properties:?}"));
    }
    let config = cluster.client_config.as_ref()?;
    let [provider] = got.access_providers.as_slice() else {
        return Some(format!("access providers {:?}", got.access_providers));
    };
    let access = provider.cluster.as_ref()?;
    if provider.name != "open-cluster-management"
        || access.server != config["url"].as_str().unwrap()
        || access.certificate_authority_data.as_deref() != config["caBundle"].as_str()
    {
        return Some(format!("access provider {provider:?}"));
    }
    None
}

/// How far the inventory is from exactly `expected` (plus `others`, profiles that must be there
/// untouched): missing, wrong and extra profiles by name. Empty = exact.
#[derive(Debug, Default)]
pub struct Diff {
    pub missing: Vec<String>,
    pub wrong: Vec<String>,
    pub extra: Vec<String>,
    pub total: usize,
}

impl Diff {
    pub fn exact(&self) -> bool {
        self.missing.is_empty() && self.wrong.is_empty() && self.extra.is_empty()
    }

    pub fn summary(&self) -> String {
        let first = |v: &Vec<String>| v.iter().take(5).cloned().collect::<Vec<_>>();
        format!(
            "{} profiles; {} missing {:?}, {} wrong {:?}, {} extra {:?}",
            self.total,
            self.missing.len(),
            first(&self.missing),
            self.wrong.len(),
            first(&self.wrong),
            self.extra.len(),
            first(&self.extra)
        )
    }
}

/// Compare every ClusterProfile of the hub (all namespaces: a profile written anywhere else
/// would be a duplicate) with the expected ones.
pub async fn diff(
    client: &Client,
    inventory: &str,
    expected: &BTreeMap<String, Cluster>,
    others: &BTreeSet<String>,
) -> kube::Result<Diff> {
    let all: Api<ClusterProfile> = Api::all(client.clone());
    let profiles = all.list(&ListParams::default()).await?.items;
    let mut result = Diff {
        total: profiles
            .iter()
            .filter(|p| p.namespace().as_deref() == Some(inventory))
            .count(),
        ..Diff::default()
    };
    let mut seen = BTreeSet::new();
    for profile in &profiles {
        let name = profile.name_any();
        let here = profile.namespace().as_deref() == Some(inventory);
        // Elsewhere, only a profile of ours would be a duplicate (a sink's test profiles in
        // their own inventory are not ocm-source's).
        if !here && !profile.labels().contains_key(LABEL_SOURCE) {
            continue;
        }
        match expected.get(&name) {
            Some(cluster) if here => {
                seen.insert(name.clone());
                if let Some(why) = profile_mismatch(cluster, profile) {
                    result.wrong.push(format!("{name}: {why}"));
                }
            }
            _ if here && others.contains(&name) => {
                seen.insert(name.clone());
            }
            _ => result.extra.push(format!(
                "{}/{name}",
                profile.namespace().unwrap_or_default()
            )),
        }
    }
    result.missing = expected
        .keys()
        .chain(others.iter())
        .filter(|n| !seen.contains(*n))
        .cloned()
        .collect();
    Ok(result)
}

/// Wait (up to `timeout`) until the hub holds exactly the expected profiles; the last diff
/// otherwise.
pub async fn wait_exact(
    client: &Client,
    inventory: &str,
    expected: &BTreeMap<String, Cluster>,
    others: &BTreeSet<String>,
    timeout: Duration,
) -> Result<Duration, Diff> {
    let started = Instant::now();
    loop {
        let diff = diff(client, inventory, expected, others).await;
        match diff {
            Ok(diff) if diff.exact() => return Ok(started.elapsed()),
            Ok(diff) if started.elapsed() > timeout => return Err(diff),
            Err(err) if started.elapsed() > timeout => {
                return Err(Diff {
                    wrong: vec![format!("cannot list: {err}")],
                    ..Diff::default()
                });
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Requests the apiserver counted (`apiserver_request_total`) for `verbs` on `resource`,
/// optionally only one `subresource` and only answers with HTTP status `code`.
pub async fn requests(
    client: &Client,
    verbs: &[&str],
    resource: &str,
    subresource: Option<&str>,
    code: Option<u16>,
) -> u64 {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(request).await.unwrap();
    let resource_label = format!("resource=\"{resource}\"");
    let subresource_label = format!("subresource=\"{}\"", subresource.unwrap_or(""));
    text.lines()
        .filter(|line| line.starts_with("apiserver_request_total{"))
        .filter(|line| line.contains(&resource_label))
        .filter(|line| subresource.is_none() || line.contains(&subresource_label))
        .filter(|line| {
            verbs
                .iter()
                .any(|v| line.contains(&format!("verb=\"{v}\"")))
        })
        .filter(|line| code.is_none_or(|c| line.contains(&format!("code=\"{c}\""))))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Write requests on `resource` (POST, PUT, PATCH, APPLY, DELETE).
pub async fn writes(client: &Client, resource: &str) -> u64 {
    requests(
        client,
        harness::apiserver_metrics::WRITE_VERBS,
        resource,
        None,
        None,
    )
    .await
}

/// Peak resident memory (VmHWM) of a process, in KiB.
pub fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Polls an adapter's `/readyz` in the background: whether it ever failed, and when it last did.
pub struct ReadyzWatch {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(bool, Option<Instant>)>,
}

impl ReadyzWatch {
    pub fn start(address: std::net::SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut dropped = false;
            let mut last_failure = None;
            while !flag.load(Ordering::SeqCst) {
                let ok = matches!(harness::http_get(address, "/readyz").await, Ok((200, _)));
                if !ok {
                    dropped = true;
                    last_failure = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (dropped, last_failure)
        });
        Self { stop, task }
    }

    /// Whether `/readyz` ever failed, and when it last did.
    pub async fn finish(self) -> (bool, Option<Instant>) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap()
    }
}

/// Whether an adapter process is still running (it must recover by itself, never exit).
pub fn assert_alive(adapter: &mut AdapterProcess, what: &str) {
    let exited = adapter.process().exit_status();
    assert!(
        exited.is_none(),
        "{what}: the adapter exited ({exited:?}) instead of recovering by itself\n{}",
        adapter.log_tail(40)
    );
}
