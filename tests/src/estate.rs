//! A whole local estate for the demo and the end-to-end tests: a hub and three members (the real
//! harness), the cluster managers played visibly (two Cluster API Clusters, two OCM
//! ManagedClusters, one physical member known to both), and every adapter running as its real
//! binary with the flags a user would pass, each with its log under the estate's directory.
//!
//! What plays a manager says so (`[capi] ...`, `[ocm] ...`): nothing here stands in for the
//! bridge itself, only for the controllers and agents of Cluster API and OCM that would run on a
//! real hub and its members.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adapters::profile::{
    CONDITION_CONTROL_PLANE_HEALTHY, CONDITION_JOINED, ClusterProfile, LABEL_CLUSTER_MANAGER,
    LABEL_INVENTORY_MEMBER_ID,
};
use adapters::sink::record::Record;
use adapters::sink::{ANNOTATION_PROFILE, ANNOTATION_REGISTRATION, LABEL_SINK};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::controlplane::{ControlPlane, ControlPlaneOptions, free_port};
use crate::crds::{ForeignCrd, install_crd, install_crds};
use crate::fleet::Fleet;
use crate::process::ManagedProcess;
use crate::{Result, ensure_namespace, http_get, sinks};

/// The inventory every source writes to and every sink serves.
pub const INVENTORY: &str = "fleet";
/// Namespace of the Cluster API Clusters (and their kubeconfig Secrets).
pub const CAPI_NAMESPACE: &str = "capi-demo";
/// Argo CD's namespace on the hub.
pub const ARGOCD_NAMESPACE: &str = "argocd";
/// Flux's namespace on the hub.
pub const FLUX_NAMESPACE: &str = "flux-system";
/// The ServiceAccount ocm-source asks OCM to keep on every managed cluster.
pub const OCM_BOOTSTRAP_SERVICE_ACCOUNT: &str = "inventory-bridge";
/// Where OCM's managed-serviceaccount agent creates it on the member.
pub const OCM_SPOKE_NAMESPACE: &str = "open-cluster-management-agent-addon";

/// The sources, in start order.
pub const SOURCES: [&str; 2] = ["capi-source", "ocm-source"];
/// The sinks (each also the name of its consumer column).
pub const SINKS: [&str; 3] = ["sveltos-sink", "argocd-sink", "flux-sink"];

/// Who manages a cluster of the estate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manager {
    /// Cluster API (a `Cluster` in [`CAPI_NAMESPACE`]).
    Capi,
    /// Open Cluster Management (a cluster-scoped `ManagedCluster`).
    Ocm,
}

impl Manager {
    /// The `x-k8s.io/cluster-manager` value its source writes.
    pub fn cluster_manager(self) -> &'static str {
        match self {
            Manager::Capi => "cluster-api",
            Manager::Ocm => "open-cluster-management",
        }
    }
}

/// One cluster as its manager knows it.
#[derive(Clone, Debug)]
pub struct EstateCluster {
    /// Its manager.
    pub manager: Manager,
    /// The manager's name for it.
    pub name: String,
    /// Index of the member control plane it is (in `Fleet::members`).
    pub member: usize,
    /// Labels the manager carries.
    pub labels: BTreeMap<String, String>,
    /// Provisioned (CAPI: kubeconfig Secret written; OCM: always).
    pub provisioned: bool,
}

impl EstateCluster {
    /// The profile its source writes (`{namespace}-{name}` for CAPI, the name for OCM).
    pub fn profile(&self) -> String {
        match self.manager {
            Manager::Capi => format!("{CAPI_NAMESPACE}-{}", self.name),
            Manager::Ocm => self.name.clone(),
        }
    }

    /// `capi-demo/prod-eu` or `ocm/eu-central`, for messages.
    pub fn display(&self) -> String {
        match self.manager {
            Manager::Capi => format!("{CAPI_NAMESPACE}/{}", self.name),
            Manager::Ocm => format!("ManagedCluster {}", self.name),
        }
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The estate's clusters: member-1 is known to both Cluster API (`prod-eu`, created first, so its
/// profile is the one registered) and OCM (`eu-central`); member-2 is the CAPI Cluster still
/// provisioning; member-3 is OCM's `ap-south`.
pub fn default_clusters() -> Vec<EstateCluster> {
    vec![
        EstateCluster {
            manager: Manager::Capi,
            name: "prod-eu".into(),
            member: 0,
            labels: labels(&[("env", "prod"), ("region", "eu")]),
            provisioned: true,
        },
        EstateCluster {
            manager: Manager::Capi,
            name: "staging-us".into(),
            member: 1,
            labels: labels(&[("env", "staging"), ("region", "us")]),
            provisioned: false,
        },
        EstateCluster {
            manager: Manager::Ocm,
            name: "eu-central".into(),
            member: 0,
            labels: labels(&[("env", "prod"), ("region", "eu")]),
            provisioned: true,
        },
        EstateCluster {
            manager: Manager::Ocm,
            name: "ap-south".into(),
            member: 2,
            labels: labels(&[("env", "dev"), ("region", "ap")]),
            provisioned: true,
        },
    ]
}

/// How to start an estate.
#[derive(Clone, Debug)]
pub struct EstateOptions {
    /// Directory for kubeconfigs and logs (`<dir>/logs/<adapter>.log`).
    pub dir: PathBuf,
    /// Directory holding the adapter binaries (default: next to the running executable).
    pub bin_dir: Option<PathBuf>,
    /// Replicas of each adapter (2+: leader election decides which one writes; each replica then
    /// authenticates as its own hub ServiceAccount so the apiserver can tell them apart).
    pub replicas: usize,
    /// The hub's audit log (who wrote what), for the tests.
    pub audit: bool,
    /// Lease duration of leader election (short in tests, so a killed leader is replaced soon).
    pub lease_seconds: u64,
    /// Extra flags for every sink.
    pub extra_sink_args: Vec<String>,
    /// Start an adapter process again when it exits, as its Deployment would (a replica that
    /// loses its lease exits on purpose); otherwise an exit fails the wait for convergence.
    pub restart_exited: bool,
}

impl EstateOptions {
    /// The defaults a user gets: one replica each, leases of 15 s.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            bin_dir: None,
            replicas: 1,
            audit: false,
            lease_seconds: 15,
            extra_sink_args: Vec::new(),
            restart_exited: false,
        }
    }
}

/// Something said while the estate runs (what the played managers did, progress).
pub type Say = Arc<dyn Fn(&str) + Send + Sync>;

/// One replica of an adapter, a real process.
#[derive(Debug)]
pub struct AdapterReplica {
    /// Adapter name (binary name).
    pub adapter: String,
    /// Replica index (0-based).
    pub replica: usize,
    /// Where it serves /metrics, /healthz, /readyz.
    pub address: SocketAddr,
    /// Its log file.
    pub log: PathBuf,
    /// The hub user it authenticates as.
    pub user: String,
    binary: PathBuf,
    argv: Vec<String>,
    process: Option<ManagedProcess>,
}

impl AdapterReplica {
    fn spawn(&mut self) -> Result<()> {
        let name = format!("{}-{}", self.adapter, self.replica);
        self.process = Some(ManagedProcess::spawn(
            &name,
            &self.binary,
            &self.argv,
            &self.log,
        )?);
        Ok(())
    }

    /// Kill it with SIGKILL (no cleanup of any kind, as a node loss would).
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.signal(libc::SIGKILL);
            process.kill();
        }
    }

    /// Start it again with the same command line.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    /// Stop it as Kubernetes would: SIGTERM, then SIGKILL after `grace`.
    pub async fn terminate(&mut self, grace: Duration) {
        if let Some(mut process) = self.process.take() {
            let _ = process.signal(libc::SIGTERM);
            let deadline = Instant::now() + grace;
            while !process.has_exited() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            process.kill();
        }
    }

    /// Whether the process has exited (or was never started / was killed).
    pub fn exited(&mut self) -> bool {
        self.process.as_mut().is_none_or(ManagedProcess::has_exited)
    }

    /// Whether `/readyz` answers 200 (the leader is ready; a standby answers too).
    pub async fn ready(&self) -> bool {
        matches!(http_get(self.address, "/readyz").await, Ok((200, _)))
    }

    /// Its `/metrics` text.
    pub async fn metrics(&self) -> Result<String> {
        Ok(http_get(self.address, "/metrics").await?.1)
    }

    /// The last lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// A whole running estate. Dropping it kills the adapters, then the control planes.
pub struct Estate {
    /// Its directory.
    pub dir: PathBuf,
    /// The clusters as the managers know them (updated by the scenario helpers).
    pub clusters: Vec<EstateCluster>,
    /// kube-system uid of each member (the member id).
    pub member_ids: Vec<String>,
    /// Every adapter replica, by adapter name.
    pub adapters: BTreeMap<String, Vec<AdapterReplica>>,
    /// The played OCM agents (running in the background until the estate is dropped).
    agents: Option<tokio::task::JoinHandle<()>>,
    agent_state: Arc<Mutex<AgentState>>,
    say: Say,
    restart_exited: bool,
    /// Adapter processes restarted after they exited (with [`EstateOptions::restart_exited`]).
    pub restarts: usize,
    /// The control planes (dropped last).
    pub fleet: Fleet,
}

impl Drop for Estate {
    fn drop(&mut self) {
        if let Some(agents) = self.agents.take() {
            agents.abort();
        }
        // Adapters first, so none of them sees its hub vanish.
        for replicas in self.adapters.values_mut() {
            for replica in replicas {
                replica.kill();
            }
        }
    }
}

/// Where the adapter binaries are: next to the running executable (`target/debug/demo`) or one
/// level up (`target/debug/deps/<test>`).
pub fn adapter_bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut candidates = Vec::new();
    if let Some(dir) = exe.parent() {
        candidates.push(dir.to_path_buf());
        if let Some(up) = dir.parent() {
            candidates.push(up.to_path_buf());
        }
    }
    for dir in &candidates {
        if SOURCES
            .iter()
            .chain(SINKS.iter())
            .all(|name| dir.join(name).is_file())
        {
            return Ok(dir.clone());
        }
    }
    let missing: Vec<String> = SOURCES
        .iter()
        .chain(SINKS.iter())
        .filter(|name| !candidates.iter().any(|dir| dir.join(name).is_file()))
        .map(|name| name.to_string())
        .collect();
    Err(format!(
        "adapter binaries {missing:?} not found next to {} : build them first with `cargo build --workspace --bins` (`make demo` and `make test` do)",
        exe.display()
    )
    .into())
}

fn cluster_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta2", "Cluster"),
        "clusters",
    )
}

fn managed_cluster_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cluster.open-cluster-management.io", "v1", "ManagedCluster"),
        "managedclusters",
    )
}

fn manifest_work_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("work.open-cluster-management.io", "v1", "ManifestWork"),
        "manifestworks",
    )
}

fn managed_service_account_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            "authentication.open-cluster-management.io",
            "v1beta1",
            "ManagedServiceAccount",
        ),
        "managedserviceaccounts",
    )
}

/// The SveltosCluster resource.
pub fn sveltos_cluster_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("lib.projectsveltos.io", "v1beta1", "SveltosCluster"),
        "sveltosclusters",
    )
}

fn condition(type_: &str, status: &str, reason: &str) -> Value {
    json!({
        "type": type_, "status": status, "reason": reason,
        "message": format!("{type_} {status}"),
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    })
}

/// What the played OCM agents have done, per ManagedCluster.
#[derive(Default)]
struct AgentState {
    /// cluster -> (member index, manifests applied by the work agent, as (resource, ns, name)).
    clusters: BTreeMap<String, OcmAgentCluster>,
}

#[derive(Clone)]
struct OcmAgentCluster {
    member: usize,
    token_written: bool,
    applied: Vec<(ApiResource, Option<String>, String)>,
    orphaning: Value,
    work_seen: bool,
    /// resourceVersion of the ManifestWork last applied in full.
    applied_version: Option<String>,
    deleting: bool,
}

struct MemberHandle {
    name: String,
    server: String,
    ca_pem: String,
    admin_kubeconfig: String,
}

impl MemberHandle {
    async fn client(&self) -> Result<Client> {
        crate::controlplane::client_from_kubeconfig_yaml(&self.admin_kubeconfig).await
    }
}

impl Estate {
    /// Start the fleet, install the CRDs, play the managers and start every adapter; returns once
    /// everything runs (not yet converged: see [`Estate::wait_converged`]).
    pub async fn start(options: EstateOptions, say: Say) -> Result<Self> {
        let bin_dir = match &options.bin_dir {
            Some(dir) => dir.clone(),
            None => adapter_bin_dir()?,
        };
        std::fs::create_dir_all(options.dir.join("logs"))?;
        let dir = std::fs::canonicalize(&options.dir)?;
        let started = Instant::now();
        say("[fleet] starting a hub and 3 member control planes (etcd + kube-apiserver each)...");
        let hub_options = if options.audit {
            ControlPlaneOptions::named("hub").with_audit()
        } else {
            ControlPlaneOptions::named("hub")
        };
        let fleet = Fleet::start_with(hub_options, 3).await?;
        let hub = fleet.hub.client().await?;
        let mut member_ids = Vec::new();
        for member in &fleet.members {
            member_ids.push(member.kube_system_uid().await?);
        }
        say(&format!(
            "[fleet] up in {:.1} s: hub {}, members {}",
            started.elapsed().as_secs_f64(),
            fleet.hub.server(),
            fleet
                .members
                .iter()
                .map(|m| format!("{} {}", m.name(), m.server()))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        install_crd(&hub, adapters::crd::cluster_profile_crd()).await?;
        let foreign: Vec<ForeignCrd> = ForeignCrd::ALL
            .into_iter()
            .filter(|crd| *crd != ForeignCrd::ClusterProfile)
            .collect();
        install_crds(&hub, &foreign).await?;
        say("[hub] installed CRDs: ClusterProfile (ours), Cluster API, OCM, Sveltos, About API");
        for namespace in [INVENTORY, CAPI_NAMESPACE, ARGOCD_NAMESPACE, FLUX_NAMESPACE] {
            ensure_namespace(&hub, namespace).await?;
        }
        say(&format!(
            "[hub] namespaces: {INVENTORY} (the inventory), {CAPI_NAMESPACE} (CAPI Clusters), {ARGOCD_NAMESPACE} (Argo CD), {FLUX_NAMESPACE} (Flux)"
        ));
        for control_plane in std::iter::once(&fleet.hub).chain(&fleet.members) {
            let path = dir.join(format!("{}.kubeconfig", control_plane.name()));
            write_private(&path, &control_plane.admin_kubeconfig_yaml())?;
        }

        let mut estate = Self {
            dir,
            clusters: default_clusters(),
            member_ids,
            adapters: BTreeMap::new(),
            agents: None,
            agent_state: Arc::new(Mutex::new(AgentState::default())),
            say: say.clone(),
            restart_exited: options.restart_exited,
            restarts: 0,
            fleet,
        };

        // The adapters first: from here on everything happens as on a live hub.
        estate.start_adapters(&bin_dir, &options).await?;
        estate.start_ocm_agents();

        // Cluster API: the shared member's Cluster first, so its profile is the older one.
        let clusters = estate.clusters.clone();
        for cluster in clusters.iter().filter(|c| c.manager == Manager::Capi) {
            estate.play_capi_cluster(cluster).await?;
        }
        // The profile creation time decides which of two profiles of one member is registered,
        // at a resolution of one second: let the OCM profiles be created in a later second.
        let profiles: Api<ClusterProfile> = Api::namespaced(hub.clone(), INVENTORY);
        crate::wait_object(
            &profiles,
            &clusters[0].profile(),
            "the first CAPI profile",
            Duration::from_secs(60),
            |_| true,
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        for cluster in clusters.iter().filter(|c| c.manager == Manager::Ocm) {
            estate.play_ocm_cluster(cluster).await?;
        }
        Ok(estate)
    }

    /// The hub's admin client.
    pub async fn hub(&self) -> Result<Client> {
        self.fleet.hub.client().await
    }

    fn member(&self, index: usize) -> MemberHandle {
        let member = &self.fleet.members[index];
        MemberHandle {
            name: member.name().to_string(),
            server: member.server(),
            ca_pem: member.ca_pem().to_string(),
            admin_kubeconfig: member.admin_kubeconfig_yaml(),
        }
    }

    /// The member control plane whose server is `server`.
    pub fn member_by_server(&self, server: &str) -> Option<&ControlPlane> {
        self.fleet
            .members
            .iter()
            .find(|m| m.server() == server.trim_end_matches('/'))
    }

    fn adapter_args(adapter: &str, extra_sink_args: &[String]) -> Vec<String> {
        let mut args: Vec<String> = match adapter {
            "capi-source" => vec!["--inventory-namespace".into(), INVENTORY.into()],
            "ocm-source" => vec![
                "--inventory-namespace".into(),
                INVENTORY.into(),
                "--bootstrap-serviceaccount".into(),
                OCM_BOOTSTRAP_SERVICE_ACCOUNT.into(),
            ],
            sink => {
                let mut args = vec![
                    "--inventory-namespace".to_string(),
                    INVENTORY.to_string(),
                    // CAPI writes kubeconfig Secrets next to its Clusters, not in the inventory.
                    "--bootstrap-secret-namespace".to_string(),
                    CAPI_NAMESPACE.to_string(),
                ];
                match sink {
                    "argocd-sink" => {
                        args.extend(["--argocd-namespace".into(), ARGOCD_NAMESPACE.into()])
                    }
                    "flux-sink" => args.extend(["--flux-namespace".into(), FLUX_NAMESPACE.into()]),
                    _ => {}
                }
                args.extend(extra_sink_args.iter().cloned());
                args
            }
        };
        args.extend(["--log-filter".into(), "info".into()]);
        args
    }

    async fn start_adapters(&mut self, bin_dir: &Path, options: &EstateOptions) -> Result<()> {
        let hub = self.hub().await?;
        for adapter in SOURCES.iter().chain(SINKS.iter()) {
            let mut replicas = Vec::new();
            for replica in 0..options.replicas.max(1) {
                let (kubeconfig, user) = if options.replicas > 1 {
                    let account = format!("{adapter}-{replica}");
                    let token = hub_admin_service_account(&hub, &account).await?;
                    (
                        self.fleet.hub.token_kubeconfig_yaml(&token),
                        format!("system:serviceaccount:default:{account}"),
                    )
                } else {
                    (self.fleet.hub.admin_kubeconfig_yaml(), "admin".to_string())
                };
                let suffix = if options.replicas > 1 {
                    format!("-{replica}")
                } else {
                    String::new()
                };
                let kubeconfig_path = self
                    .dir
                    .join("logs")
                    .join(format!("{adapter}{suffix}.kubeconfig"));
                write_private(&kubeconfig_path, &kubeconfig)?;
                let address = SocketAddr::from(([127, 0, 0, 1], free_port()?));
                let mut argv = vec![
                    format!("--kubeconfig={}", kubeconfig_path.display()),
                    format!("--http-address={address}"),
                    format!("--lease-duration-seconds={}", options.lease_seconds),
                    format!("--identity={adapter}{suffix}"),
                ];
                argv.extend(Self::adapter_args(adapter, &options.extra_sink_args));
                let mut process = AdapterReplica {
                    adapter: adapter.to_string(),
                    replica,
                    address,
                    log: self.dir.join("logs").join(format!("{adapter}{suffix}.log")),
                    user,
                    binary: bin_dir.join(adapter),
                    argv,
                    process: None,
                };
                // A fresh log per run of the estate.
                let _ = std::fs::remove_file(&process.log);
                process.spawn()?;
                (self.say)(&format!(
                    "[bridge] started {adapter}{suffix} (pid {}): {} {}",
                    process
                        .process
                        .as_ref()
                        .map(ManagedProcess::pid)
                        .unwrap_or(0),
                    adapter,
                    Self::adapter_args(adapter, &options.extra_sink_args).join(" ")
                ));
                replicas.push(process);
            }
            self.adapters.insert(adapter.to_string(), replicas);
        }
        Ok(())
    }

    /// Every adapter process still runs (or, with [`EstateOptions::restart_exited`], is started
    /// again as its Deployment would).
    pub fn check_adapters_running(&mut self) -> Result<()> {
        for replicas in self.adapters.values_mut() {
            for replica in replicas {
                if replica.exited() && self.restart_exited {
                    (self.say)(&format!(
                        "[kubelet] {} replica {} exited; starting it again (last log lines:\n{})",
                        replica.adapter,
                        replica.replica,
                        replica.log_tail(3)
                    ));
                    replica.restart()?;
                    self.restarts += 1;
                } else if replica.exited() {
                    return Err(format!(
                        "{} (replica {}) exited; its log {}:\n{}",
                        replica.adapter,
                        replica.replica,
                        replica.log.display(),
                        replica.log_tail(30)
                    )
                    .into());
                }
            }
        }
        Ok(())
    }

    /// Kill (-9) every replica of every adapter, all at once, then start them again.
    pub fn kill_and_restart_all(&mut self) -> Result<()> {
        for replicas in self.adapters.values_mut() {
            for replica in replicas.iter_mut() {
                replica.kill();
            }
        }
        for replicas in self.adapters.values_mut() {
            for replica in replicas.iter_mut() {
                replica.spawn()?;
            }
        }
        Ok(())
    }

    /// Stop every adapter as Kubernetes would (SIGTERM, then SIGKILL after 10 s).
    pub async fn stop_adapters(&mut self) {
        for replicas in self.adapters.values_mut() {
            for replica in replicas.iter_mut() {
                replica.terminate(Duration::from_secs(10)).await;
            }
        }
    }

    // ---- playing Cluster API -------------------------------------------------------------------

    /// Play Cluster API's controllers for `cluster`: the Cluster, its status, and (once
    /// provisioned) its `<name>-kubeconfig` Secret holding the member's admin kubeconfig.
    pub async fn play_capi_cluster(&self, cluster: &EstateCluster) -> Result<()> {
        let hub = self.hub().await?;
        let clusters: Api<DynamicObject> =
            Api::namespaced_with(hub.clone(), CAPI_NAMESPACE, &cluster_resource());
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2",
            "kind": "Cluster",
            "metadata": {"name": cluster.name, "namespace": CAPI_NAMESPACE, "labels": cluster.labels},
            "spec": {
                "controlPlaneEndpoint": {"host": "127.0.0.1", "port": 6443},
                "topology": {"classRef": {"name": "quick-start"}, "version": "v1.36.3"},
                "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DockerCluster", "name": cluster.name},
            },
        }))?;
        clusters
            .patch(
                &cluster.name,
                &PatchParams::apply("play-capi-controllers").force(),
                &Patch::Apply(&object),
            )
            .await?;
        let status = if cluster.provisioned {
            json!({
                "phase": "Provisioned",
                "initialization": {"infrastructureProvisioned": true, "controlPlaneInitialized": true},
                "controlPlane": {"versions": [{"version": "v1.36.3", "replicas": 1}]},
                "conditions": [
                    condition("ControlPlaneAvailable", "True", "Available"),
                    condition("Available", "True", "Available"),
                ],
            })
        } else {
            json!({
                "phase": "Provisioning",
                "initialization": {"infrastructureProvisioned": false, "controlPlaneInitialized": false},
                "conditions": [
                    condition("ControlPlaneAvailable", "False", "NotAvailable"),
                    condition("Available", "False", "NotAvailable"),
                ],
            })
        };
        clusters
            .patch_status(
                &cluster.name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await?;
        if cluster.provisioned {
            let member = self.member(cluster.member);
            self.write_capi_kubeconfig(&cluster.name, &member.admin_kubeconfig)
                .await?;
            (self.say)(&format!(
                "[capi] created Cluster {CAPI_NAMESPACE}/{} {:?} (Provisioned) and its Secret {CAPI_NAMESPACE}/{}-kubeconfig (type cluster.x-k8s.io/secret) -> {}",
                cluster.name, cluster.labels, cluster.name, member.name
            ));
        } else {
            (self.say)(&format!(
                "[capi] created Cluster {CAPI_NAMESPACE}/{} {:?} (Provisioning: no kubeconfig Secret yet)",
                cluster.name, cluster.labels
            ));
        }
        Ok(())
    }

    async fn write_capi_kubeconfig(&self, cluster: &str, kubeconfig: &str) -> Result<()> {
        let hub = self.hub().await?;
        let name = format!("{cluster}-kubeconfig");
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(CAPI_NAMESPACE.to_string()),
                labels: Some(BTreeMap::from([(
                    "cluster.x-k8s.io/cluster-name".to_string(),
                    cluster.to_string(),
                )])),
                ..ObjectMeta::default()
            },
            type_: Some("cluster.x-k8s.io/secret".to_string()),
            data: Some(BTreeMap::from([(
                "value".to_string(),
                ByteString(kubeconfig.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        };
        Api::<Secret>::namespaced(hub, CAPI_NAMESPACE)
            .patch(
                &name,
                &PatchParams::apply("play-capi-controllers").force(),
                &Patch::Apply(&secret),
            )
            .await?;
        Ok(())
    }

    /// Change the labels of a cluster at its manager (merge: `None` removes a label).
    pub async fn set_cluster_labels(
        &mut self,
        name: &str,
        manager: Manager,
        changes: &[(&str, Option<&str>)],
    ) -> Result<()> {
        let hub = self.hub().await?;
        let patch: serde_json::Map<String, Value> = changes
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let patch = json!({"metadata": {"labels": patch}});
        match manager {
            Manager::Capi => {
                Api::<DynamicObject>::namespaced_with(hub, CAPI_NAMESPACE, &cluster_resource())
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
            Manager::Ocm => {
                Api::<DynamicObject>::all_with(hub, &managed_cluster_resource())
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
        }
        if let Some(cluster) = self
            .clusters
            .iter_mut()
            .find(|c| c.name == name && c.manager == manager)
        {
            for (k, v) in changes {
                match v {
                    Some(v) => cluster.labels.insert(k.to_string(), v.to_string()),
                    None => cluster.labels.remove(*k),
                };
            }
        }
        (self.say)(&format!(
            "[{manager:?}] labels of {name} changed: {changes:?}"
        ));
        Ok(())
    }

    /// Delete a cluster at its manager.
    pub async fn delete_cluster(&mut self, name: &str, manager: Manager) -> Result<()> {
        let hub = self.hub().await?;
        match manager {
            Manager::Capi => {
                // Cluster API deletes the kubeconfig Secret with the Cluster (owner reference).
                Api::<DynamicObject>::namespaced_with(
                    hub.clone(),
                    CAPI_NAMESPACE,
                    &cluster_resource(),
                )
                .delete(name, &DeleteParams::default())
                .await?;
                let _ = Api::<Secret>::namespaced(hub, CAPI_NAMESPACE)
                    .delete(&format!("{name}-kubeconfig"), &DeleteParams::default())
                    .await;
            }
            Manager::Ocm => {
                if let Ok(mut state) = self.agent_state.lock()
                    && let Some(agent) = state.clusters.get_mut(name)
                {
                    agent.deleting = true;
                }
                Api::<DynamicObject>::all_with(hub, &managed_cluster_resource())
                    .delete(name, &DeleteParams::default())
                    .await?;
            }
        }
        self.clusters
            .retain(|c| !(c.name == name && c.manager == manager));
        (self.say)(&format!("[{manager:?}] deleted cluster {name}"));
        Ok(())
    }

    // ---- playing OCM -----------------------------------------------------------------------------

    /// Play OCM's hub and registration agent for `cluster`: its hub namespace, the accepted
    /// ManagedCluster with the member's URL and CA, and the agent's status (Available, version,
    /// the `id.k8s.io` claim = the member's kube-system uid).
    pub async fn play_ocm_cluster(&self, cluster: &EstateCluster) -> Result<()> {
        let hub = self.hub().await?;
        let member = self.member(cluster.member);
        ensure_namespace(&hub, &cluster.name).await?;
        let clusters: Api<DynamicObject> = Api::all_with(hub.clone(), &managed_cluster_resource());
        clusters
            .patch(
                &cluster.name,
                &PatchParams::apply("play-ocm-admin").force(),
                &Patch::Apply(json!({
                    "apiVersion": "cluster.open-cluster-management.io/v1",
                    "kind": "ManagedCluster",
                    "metadata": {"name": cluster.name, "labels": cluster.labels},
                    "spec": {
                        "hubAcceptsClient": true,
                        "managedClusterClientConfigs": [{"url": member.server, "caBundle": BASE64.encode(&member.ca_pem)}],
                    },
                })),
            )
            .await?;
        if let Ok(mut state) = self.agent_state.lock() {
            state.clusters.insert(
                cluster.name.clone(),
                OcmAgentCluster {
                    member: cluster.member,
                    token_written: false,
                    applied: Vec::new(),
                    orphaning: Value::Null,
                    work_seen: false,
                    applied_version: None,
                    deleting: false,
                },
            );
        }
        self.set_ocm_available(&cluster.name, true).await?;
        (self.say)(&format!(
            "[ocm] accepted ManagedCluster {} {:?} -> {} (registration agent: Available, claim id.k8s.io={})",
            cluster.name,
            cluster.labels,
            member.name,
            short_id(&self.member_ids[cluster.member])
        ));
        Ok(())
    }

    /// Play OCM's registration agent reporting the cluster available or not (its lease stopped).
    pub async fn set_ocm_available(&self, name: &str, available: bool) -> Result<()> {
        let hub = self.hub().await?;
        let member = self
            .clusters
            .iter()
            .find(|c| c.manager == Manager::Ocm && c.name == name)
            .map(|c| c.member)
            .ok_or_else(|| format!("no OCM cluster {name}"))?;
        let (status, reason) = if available {
            ("True", "ManagedClusterAvailable")
        } else {
            ("False", "ManagedClusterLeaseUpdateStopped")
        };
        let patch = json!({"status": {
            "conditions": [
                condition("HubAcceptedManagedCluster", "True", "HubClusterAdminAccepted"),
                condition("ManagedClusterJoined", "True", "ManagedClusterJoined"),
                condition("ManagedClusterConditionAvailable", status, reason),
            ],
            "version": {"kubernetes": "v1.36.3"},
            "clusterClaims": [{"name": "id.k8s.io", "value": self.member_ids[member]}],
        }});
        Api::<DynamicObject>::all_with(hub, &managed_cluster_resource())
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    /// OCM's managed-serviceaccount and work agents, played in the background as the real ones
    /// run: for each ManagedCluster, once its ManagedServiceAccount exists, the ServiceAccount on
    /// the member and the token Secret in the cluster's hub namespace; its ManifestWorks applied
    /// to the member (again every 2 s, as the work agent keeps them applied), and removed when
    /// the ManifestWork goes (except what it orphans).
    fn start_ocm_agents(&mut self) {
        let state = self.agent_state.clone();
        let hub_kubeconfig = self.fleet.hub.admin_kubeconfig_yaml();
        let members: Vec<MemberHandle> = (0..self.fleet.members.len())
            .map(|i| self.member(i))
            .collect();
        let say = self.say.clone();
        self.agents = Some(tokio::spawn(async move {
            let Ok(hub) = crate::controlplane::client_from_kubeconfig_yaml(&hub_kubeconfig).await
            else {
                return;
            };
            loop {
                let clusters: Vec<(String, OcmAgentCluster)> = state
                    .lock()
                    .map(|s| s.clusters.clone().into_iter().collect())
                    .unwrap_or_default();
                for (name, agent) in clusters {
                    let member = &members[agent.member];
                    match play_ocm_agents_once(&hub, member, &name, agent, &say).await {
                        Ok(Some(updated)) => {
                            if let Ok(mut s) = state.lock() {
                                s.clusters.insert(name, updated);
                            }
                        }
                        Ok(None) => {
                            if let Ok(mut s) = state.lock() {
                                s.clusters.remove(&name);
                            }
                        }
                        Err(err) => say(&format!("[ocm agents] {name}: {err} (retrying)")),
                    }
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }));
    }

    // ---- observing -------------------------------------------------------------------------------

    /// The inventory as it stands: one row per profile.
    pub async fn inventory(&self) -> Result<Inventory> {
        let hub = self.hub().await?;
        let profiles = Api::<ClusterProfile>::namespaced(hub.clone(), INVENTORY)
            .list(&ListParams::default())
            .await?
            .items;
        let mut registrations = Vec::new();
        for sink in SINKS {
            let secrets = Api::<Secret>::all(hub.clone())
                .list(&ListParams::default().labels(&format!("{LABEL_SINK}={sink}")))
                .await?
                .items;
            for secret in secrets {
                let annotations = secret.annotations();
                let Some(profile) = annotations.get(ANNOTATION_PROFILE) else {
                    continue;
                };
                let profile = profile
                    .split_once('/')
                    .map(|(_, name)| name.to_string())
                    .unwrap_or_else(|| profile.clone());
                let record: Option<Record> = annotations
                    .get(ANNOTATION_REGISTRATION)
                    .and_then(|r| serde_json::from_str(r).ok());
                let Some(record) = record else { continue };
                let kubeconfig = kubeconfig_of(sink, &secret)?;
                registrations.push(Registration {
                    sink: sink.to_string(),
                    profile,
                    secret: format!(
                        "{}/{}",
                        secret.namespace().unwrap_or_default(),
                        secret.name_any()
                    ),
                    server: record.endpoint.server.clone(),
                    service_account: format!(
                        "{}/{}",
                        record.identity.namespace, record.identity.service_account
                    ),
                    service_account_uid: record.identity.service_account_uid.clone(),
                    kubeconfig,
                    sveltos_cluster: None,
                });
            }
        }
        let sveltos_clusters: Vec<DynamicObject> = Api::<DynamicObject>::namespaced_with(
            hub.clone(),
            INVENTORY,
            &sveltos_cluster_resource(),
        )
        .list(&ListParams::default())
        .await?
        .items;
        for cluster in sveltos_clusters {
            if let Some(registration) = registrations
                .iter_mut()
                .find(|r| r.sink == "sveltos-sink" && r.profile == cluster.name_any())
            {
                registration.sveltos_cluster = Some(format!(
                    "{}/{}",
                    cluster.namespace().unwrap_or_default(),
                    cluster.name_any()
                ));
            }
        }
        let events = Api::<Event>::namespaced(hub.clone(), INVENTORY)
            .list(&ListParams::default())
            .await?
            .items;
        let mut rows = Vec::new();
        for profile in &profiles {
            let name = profile.name_any();
            let condition = |type_: &str| {
                profile
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
                    .map(|c| (c.status.clone(), c.reason.clone()))
            };
            let duplicate_of: BTreeSet<String> = events
                .iter()
                .filter(|e| {
                    e.reason.as_deref() == Some("DuplicateMemberId")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref())
                            == Some(name.as_str())
                        && e.regarding.as_ref().and_then(|r| r.uid.as_deref())
                            == profile.metadata.uid.as_deref()
                })
                .filter_map(|e| e.reporting_controller.clone())
                .collect();
            rows.push(Row {
                profile: name.clone(),
                manager: profile
                    .labels()
                    .get(LABEL_CLUSTER_MANAGER)
                    .cloned()
                    .unwrap_or_default(),
                member_id: profile
                    .labels()
                    .get(LABEL_INVENTORY_MEMBER_ID)
                    .cloned()
                    .unwrap_or_default(),
                version: profile
                    .status
                    .as_ref()
                    .and_then(|s| s.version.as_ref())
                    .and_then(|v| v.kubernetes.clone())
                    .unwrap_or_default(),
                healthy: condition(CONDITION_CONTROL_PLANE_HEALTHY),
                joined: condition(CONDITION_JOINED),
                labels: profile.labels().clone(),
                registered_with: registrations
                    .iter()
                    .filter(|r| r.profile == name)
                    .map(|r| r.sink.clone())
                    .collect(),
                duplicate_reported_by: duplicate_of,
            });
        }
        rows.sort_by(|a, b| a.profile.cmp(&b.profile));
        Ok(Inventory {
            rows,
            registrations,
        })
    }

    /// What converged means for the estate as the managers currently describe it: a profile for
    /// every cluster; every provisioned, available cluster registered with every sink exactly once
    /// per member (the oldest profile of a member), the others reported as duplicates; nothing
    /// registered for a cluster still provisioning; nothing else registered. Returns what is still
    /// awaited (empty = converged).
    pub async fn pending(&self) -> Result<Vec<String>> {
        let inventory = self.inventory().await?;
        let mut waiting = Vec::new();
        let expected_profiles: BTreeSet<String> =
            self.clusters.iter().map(EstateCluster::profile).collect();
        for cluster in &self.clusters {
            let profile = cluster.profile();
            let Some(row) = inventory.rows.iter().find(|r| r.profile == profile) else {
                waiting.push(format!(
                    "{}: {} has no profile {INVENTORY}/{profile} yet",
                    source_of(cluster.manager),
                    cluster.display()
                ));
                continue;
            };
            if !cluster.provisioned {
                continue;
            }
            let wanted_id = &self.member_ids[cluster.member];
            if &row.member_id != wanted_id {
                waiting.push(format!(
                    "{}: profile {profile} does not carry its member id yet",
                    source_of(cluster.manager)
                ));
            }
            for (key, value) in &cluster.labels {
                if row.labels.get(key) != Some(value) {
                    waiting.push(format!(
                        "{}: profile {profile} label {key}={value} not there yet",
                        source_of(cluster.manager)
                    ));
                }
            }
        }
        for row in &inventory.rows {
            if !expected_profiles.contains(&row.profile) {
                waiting.push(format!(
                    "profile {} should be gone (its cluster was deleted)",
                    row.profile
                ));
            }
        }
        // Which profile each sink must register per member: the oldest.
        let winners = self.expected_registered();
        for sink in SINKS {
            let registered: Vec<&Registration> = inventory
                .registrations
                .iter()
                .filter(|r| r.sink == sink)
                .collect();
            let names: BTreeSet<String> = registered.iter().map(|r| r.profile.clone()).collect();
            let missing: Vec<&String> = winners.iter().filter(|w| !names.contains(*w)).collect();
            let extra: Vec<&String> = names.iter().filter(|n| !winners.contains(*n)).collect();
            if !missing.is_empty() || !extra.is_empty() {
                waiting.push(format!(
                    "{sink}: {}/{} registered{}{}",
                    names.intersection(&winners).count(),
                    winners.len(),
                    if missing.is_empty() {
                        String::new()
                    } else {
                        format!(", waiting for {missing:?}")
                    },
                    if extra.is_empty() {
                        String::new()
                    } else {
                        format!(", still registered: {extra:?}")
                    }
                ));
            }
            if sink == "sveltos-sink" {
                for registration in &registered {
                    if registration.sveltos_cluster.is_none() {
                        waiting.push(format!(
                            "sveltos-sink: no SveltosCluster for {} yet",
                            registration.profile
                        ));
                    }
                }
            }
        }
        // The losers of a member are reported as duplicates by every sink.
        for row in &inventory.rows {
            let member_has_winner = !row.member_id.is_empty()
                && inventory
                    .rows
                    .iter()
                    .any(|o| o.member_id == row.member_id && winners.contains(&o.profile));
            if member_has_winner && !winners.contains(&row.profile) {
                for sink in SINKS {
                    if !row.duplicate_reported_by.contains(sink) {
                        waiting.push(format!(
                            "{sink}: {} not reported as a duplicate yet",
                            row.profile
                        ));
                    }
                }
            }
        }
        Ok(waiting)
    }

    /// The profiles every sink should have registered: per member id, the oldest profile of a
    /// provisioned cluster.
    fn expected_registered(&self) -> BTreeSet<String> {
        let mut by_member: BTreeMap<usize, Vec<&EstateCluster>> = BTreeMap::new();
        for cluster in self.clusters.iter().filter(|c| c.provisioned) {
            by_member.entry(cluster.member).or_default().push(cluster);
        }
        by_member
            .values()
            .filter_map(|clusters| {
                // Cluster API's came first in the estate; the order in `clusters` is creation
                // order (the scenarios only delete).
                clusters.first().map(|c| c.profile())
            })
            .collect()
    }

    /// Wait until [`Estate::pending`] is empty, calling `progress` with what is awaited whenever
    /// that changes (and every 5 s); fails after `timeout` naming what was still awaited.
    pub async fn wait_converged(
        &mut self,
        timeout: Duration,
        mut progress: impl FnMut(&[String]),
    ) -> Result<Duration> {
        let started = Instant::now();
        let mut last: Vec<String> = Vec::new();
        let mut last_print = Instant::now();
        loop {
            self.check_adapters_running()?;
            let waiting = match self.pending().await {
                Ok(waiting) => waiting,
                Err(err) => vec![format!("cannot read the hub: {err}")],
            };
            if waiting.is_empty() {
                return Ok(started.elapsed());
            }
            if waiting != last || last_print.elapsed() > Duration::from_secs(5) {
                progress(&waiting);
                last = waiting.clone();
                last_print = Instant::now();
            }
            if started.elapsed() > timeout {
                return Err(format!(
                    "not converged after {timeout:?}; still waiting for:\n  {}",
                    waiting.join("\n  ")
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Call each registration's member with its generated kubeconfig: who it is there
    /// (SelfSubjectReview) and what it may do (SelfSubjectAccessReviews).
    pub async fn prove(&self, inventory: &Inventory) -> Vec<Proof> {
        let mut proofs = Vec::new();
        for registration in &inventory.registrations {
            let member = self
                .member_by_server(&registration.server)
                .map(|m| m.name().to_string())
                .unwrap_or_else(|| registration.server.clone());
            let expected = format!(
                "system:serviceaccount:{}",
                registration.service_account.replace('/', ":")
            );
            let outcome = async {
                let client =
                    crate::controlplane::client_from_kubeconfig_yaml(&registration.kubeconfig)
                        .await?;
                let username = sinks::whoami(&client).await?;
                let mut may = Vec::new();
                for (verb, group, resource, namespace) in [
                    ("list", "", "namespaces", None),
                    ("create", "apps", "deployments", Some("default")),
                    ("get", "", "secrets", Some("kube-system")),
                ] {
                    let allowed = sinks::may(&client, verb, group, resource, namespace).await;
                    let what = match namespace {
                        Some(ns) => format!("{verb} {resource} in {ns}"),
                        None => format!("{verb} {resource}"),
                    };
                    may.push((what, allowed));
                }
                Ok::<_, crate::BoxError>((username, may))
            }
            .await;
            proofs.push(match outcome {
                Ok((username, may)) => Proof {
                    sink: registration.sink.clone(),
                    profile: registration.profile.clone(),
                    member,
                    ok: username == expected,
                    username,
                    may,
                    error: None,
                },
                Err(err) => Proof {
                    sink: registration.sink.clone(),
                    profile: registration.profile.clone(),
                    member,
                    ok: false,
                    username: String::new(),
                    may: Vec::new(),
                    error: Some(err.to_string()),
                },
            });
        }
        proofs
    }

    /// Write every generated kubeconfig to `<dir>/kubeconfigs/<sink>-<profile>.kubeconfig`
    /// (0600); returns the paths.
    pub fn write_generated_kubeconfigs(&self, inventory: &Inventory) -> Result<Vec<PathBuf>> {
        let dir = self.dir.join("kubeconfigs");
        std::fs::create_dir_all(&dir)?;
        let mut paths = Vec::new();
        for registration in &inventory.registrations {
            let path = dir.join(format!(
                "{}-{}.kubeconfig",
                registration.sink, registration.profile
            ));
            write_private(&path, &registration.kubeconfig)?;
            paths.push(path);
        }
        Ok(paths)
    }
}

async fn play_ocm_agents_once(
    hub: &Client,
    member: &MemberHandle,
    cluster: &str,
    mut agent: OcmAgentCluster,
    say: &Say,
) -> Result<Option<OcmAgentCluster>> {
    let works: Api<DynamicObject> =
        Api::namespaced_with(hub.clone(), cluster, &manifest_work_resource());
    let msas: Api<DynamicObject> =
        Api::namespaced_with(hub.clone(), cluster, &managed_service_account_resource());
    let spoke = member.client().await?;
    let current_works = works.list(&ListParams::default()).await?.items;
    if current_works.is_empty() && agent.work_seen {
        // The ManifestWork is gone: the work agent removes what it applied, except what the
        // work orphans (the namespaces).
        let orphaned = |resource: &ApiResource, name: &str| {
            agent.orphaning.as_array().is_some_and(|rules| {
                rules.iter().any(|rule| {
                    rule["resource"].as_str() == Some(resource.plural.as_str())
                        && rule["name"].as_str() == Some(name)
                })
            })
        };
        for (resource, namespace, name) in &agent.applied {
            if orphaned(resource, name) {
                continue;
            }
            let api: Api<DynamicObject> = match namespace {
                Some(ns) => Api::namespaced_with(spoke.clone(), ns, resource),
                None => Api::all_with(spoke.clone(), resource),
            };
            let _ = api.delete(name, &DeleteParams::default()).await;
        }
        say(&format!(
            "[ocm work agent] ManifestWork of {cluster} deleted: removed what it applied on {}",
            member.name
        ));
        agent.applied.clear();
        agent.work_seen = false;
        agent.applied_version = None;
    }
    for work in &current_works {
        agent.orphaning =
            work.data["spec"]["deleteOption"]["selectivelyOrphans"]["orphaningRules"].clone();
        // Like the work agent: apply a new version of the work in full; otherwise only put back
        // what went missing (e.g. a ServiceAccount a sink revoked), so steady state writes nothing.
        let unchanged =
            agent.applied_version.is_some() && agent.applied_version == work.resource_version();
        let mut applied = Vec::new();
        for manifest in work.data["spec"]["workload"]["manifests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let api_version = manifest["apiVersion"].as_str().unwrap_or_default();
            let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
            let kind = manifest["kind"].as_str().unwrap_or_default();
            let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
            let namespace = manifest["metadata"]["namespace"]
                .as_str()
                .map(str::to_string);
            let name = manifest["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let api: Api<DynamicObject> = match &namespace {
                Some(ns) => Api::namespaced_with(spoke.clone(), ns, &resource),
                None => Api::all_with(spoke.clone(), &resource),
            };
            if !unchanged || api.get_opt(&name).await?.is_none() {
                api.patch(
                    &name,
                    &PatchParams::apply("work-agent").force(),
                    &Patch::Apply(&manifest),
                )
                .await?;
            }
            applied.push((resource, namespace, name));
        }
        agent.applied_version = work.resource_version();
        if !agent.work_seen {
            say(&format!(
                "[ocm work agent] applied ManifestWork {cluster}/{} on {}: {} objects (the sinks' member identities, provisioned)",
                work.name_any(),
                member.name,
                applied.len()
            ));
        }
        agent.work_seen = true;
        for item in applied {
            if !agent.applied.contains(&item) {
                agent.applied.push(item);
            }
        }
    }
    if !agent.token_written
        && let Some(msa) = msas.get_opt(OCM_BOOTSTRAP_SERVICE_ACCOUNT).await?
    {
        ensure_namespace(&spoke, OCM_SPOKE_NAMESPACE).await?;
        let accounts: Api<ServiceAccount> = Api::namespaced(spoke.clone(), OCM_SPOKE_NAMESPACE);
        let mark = BTreeMap::from([(
            "authentication.open-cluster-management.io/is-managed-serviceaccount".to_string(),
            "true".to_string(),
        )]);
        if accounts
            .get_opt(OCM_BOOTSTRAP_SERVICE_ACCOUNT)
            .await?
            .is_none()
        {
            accounts
                .create(
                    &PostParams::default(),
                    &ServiceAccount {
                        metadata: ObjectMeta {
                            name: Some(OCM_BOOTSTRAP_SERVICE_ACCOUNT.into()),
                            labels: Some(mark.clone()),
                            ..ObjectMeta::default()
                        },
                        ..ServiceAccount::default()
                    },
                )
                .await?;
        }
        let token = accounts
            .create_token_request(
                OCM_BOOTSTRAP_SERVICE_ACCOUNT,
                &PostParams::default(),
                &TokenRequest {
                    spec: Some(TokenRequestSpec {
                        audiences: Some(vec![]),
                        expiration_seconds: Some(24 * 3600),
                        ..TokenRequestSpec::default()
                    }),
                    ..TokenRequest::default()
                },
            )
            .await?
            .status
            .and_then(|s| s.token)
            .ok_or("the member minted no token")?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(OCM_BOOTSTRAP_SERVICE_ACCOUNT.into()),
                namespace: Some(cluster.to_string()),
                labels: Some(mark),
                owner_references: Some(vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                        api_version: "authentication.open-cluster-management.io/v1beta1".into(),
                        kind: "ManagedServiceAccount".into(),
                        name: OCM_BOOTSTRAP_SERVICE_ACCOUNT.into(),
                        uid: msa.uid().unwrap_or_default(),
                        ..Default::default()
                    },
                ]),
                ..ObjectMeta::default()
            },
            string_data: Some(BTreeMap::from([
                ("token".to_string(), token),
                ("ca.crt".to_string(), member.ca_pem.clone()),
            ])),
            ..Secret::default()
        };
        Api::<Secret>::namespaced(hub.clone(), cluster)
            .patch(
                OCM_BOOTSTRAP_SERVICE_ACCOUNT,
                &PatchParams::apply("managed-serviceaccount-agent").force(),
                &Patch::Apply(&secret),
            )
            .await?;
        msas.patch_status(
            OCM_BOOTSTRAP_SERVICE_ACCOUNT,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"tokenSecretRef": {"name": OCM_BOOTSTRAP_SERVICE_ACCOUNT, "lastRefreshTimestamp": "2026-01-01T00:00:00Z"}}})),
        )
        .await?;
        say(&format!(
            "[ocm managed-serviceaccount agent] ServiceAccount {OCM_SPOKE_NAMESPACE}/{OCM_BOOTSTRAP_SERVICE_ACCOUNT} on {}, its token in Secret {cluster}/{OCM_BOOTSTRAP_SERVICE_ACCOUNT} on the hub",
            member.name
        ));
        agent.token_written = true;
    }
    if agent.deleting
        && current_works.is_empty()
        && msas.list(&ListParams::default()).await?.items.is_empty()
    {
        // The cluster is gone and ocm-source removed its companions: the agents clean up.
        let _ = Api::<ServiceAccount>::namespaced(spoke, OCM_SPOKE_NAMESPACE)
            .delete(OCM_BOOTSTRAP_SERVICE_ACCOUNT, &DeleteParams::default())
            .await;
        let _ = Api::<Secret>::namespaced(hub.clone(), cluster)
            .delete(OCM_BOOTSTRAP_SERVICE_ACCOUNT, &DeleteParams::default())
            .await;
        return Ok(None);
    }
    Ok(Some(agent))
}

fn source_of(manager: Manager) -> &'static str {
    match manager {
        Manager::Capi => "capi-source",
        Manager::Ocm => "ocm-source",
    }
}

/// The kubeconfig a consumer builds from what `sink` published in `secret`.
fn kubeconfig_of(sink: &str, secret: &Secret) -> Result<String> {
    let data = secret.data.clone().unwrap_or_default();
    let text = |key: &str| -> Result<String> {
        let value = data
            .get(key)
            .ok_or_else(|| format!("{sink} Secret without {key}"))?;
        Ok(String::from_utf8(value.0.clone())?)
    };
    match sink {
        "sveltos-sink" => text("kubeconfig"),
        "flux-sink" => text("value"),
        _ => {
            // Argo CD's cluster Secret: server + config (bearer token, CA), as Argo CD reads it.
            let server = text("server")?;
            let config: Value = serde_json::from_str(&text("config")?)?;
            let mut cluster = json!({"server": server});
            if let Some(ca) = config["tlsClientConfig"]["caData"].as_str() {
                cluster["certificate-authority-data"] = json!(ca);
            }
            if let Some(name) = config["tlsClientConfig"]["serverName"].as_str() {
                cluster["tls-server-name"] = json!(name);
            }
            let name = text("name").unwrap_or_else(|_| "argocd".into());
            Ok(serde_json::to_string_pretty(&json!({
                "apiVersion": "v1", "kind": "Config",
                "clusters": [{"name": name, "cluster": cluster}],
                "users": [{"name": "argocd-sink", "user": {"token": config["bearerToken"]}}],
                "contexts": [{"name": name, "context": {"cluster": name, "user": "argocd-sink"}}],
                "current-context": name,
            }))?)
        }
    }
}

/// A hub ServiceAccount `default/<name>` bound to cluster-admin; returns a token for it (one per
/// adapter replica, so the hub's audit log tells replicas apart).
async fn hub_admin_service_account(hub: &Client, name: &str) -> Result<String> {
    use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
    let accounts: Api<ServiceAccount> = Api::namespaced(hub.clone(), "default");
    let meta = |namespace: Option<&str>| ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(str::to_string),
        ..ObjectMeta::default()
    };
    accounts
        .patch(
            name,
            &PatchParams::apply("estate").force(),
            &Patch::Apply(&ServiceAccount {
                metadata: meta(Some("default")),
                ..ServiceAccount::default()
            }),
        )
        .await?;
    Api::<ClusterRoleBinding>::all(hub.clone())
        .patch(
            name,
            &PatchParams::apply("estate").force(),
            &Patch::Apply(&ClusterRoleBinding {
                metadata: meta(None),
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "ClusterRole".into(),
                    name: "cluster-admin".into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: name.into(),
                    namespace: Some("default".into()),
                    ..Subject::default()
                }]),
            }),
        )
        .await?;
    let minted = accounts
        .create_token_request(
            name,
            &PostParams::default(),
            &TokenRequest {
                spec: Some(TokenRequestSpec {
                    expiration_seconds: Some(24 * 3600),
                    ..TokenRequestSpec::default()
                }),
                ..TokenRequest::default()
            },
        )
        .await?;
    minted
        .status
        .and_then(|s| s.token)
        .ok_or_else(|| "no token".into())
}

/// Write `text` to `path` readable by its owner only (kubeconfigs carry credentials).
pub fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// The first 8 characters of a member id.
pub fn short_id(id: &str) -> String {
    id.chars().take(8).collect()
}

/// The inventory and what the sinks made of it.
#[derive(Clone, Debug)]
pub struct Inventory {
    /// One per profile, sorted by name.
    pub rows: Vec<Row>,
    /// Every registration of every sink.
    pub registrations: Vec<Registration>,
}

/// One profile.
#[derive(Clone, Debug)]
pub struct Row {
    /// Profile name.
    pub profile: String,
    /// `x-k8s.io/cluster-manager`.
    pub manager: String,
    /// `multicluster.x-k8s.io/inventory-member-id` (kube-system uid).
    pub member_id: String,
    /// Kubernetes version.
    pub version: String,
    /// ControlPlaneHealthy (status, reason).
    pub healthy: Option<(String, String)>,
    /// Joined (status, reason).
    pub joined: Option<(String, String)>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Sinks that registered it.
    pub registered_with: Vec<String>,
    /// Sinks whose Events report it as a duplicate of another profile of its member.
    pub duplicate_reported_by: BTreeSet<String>,
}

/// One sink's registration of one profile.
#[derive(Clone, Debug)]
pub struct Registration {
    /// The sink.
    pub sink: String,
    /// The profile.
    pub profile: String,
    /// Its credential Secret on the hub (`namespace/name`).
    pub secret: String,
    /// sveltos-sink: its SveltosCluster (`namespace/name`).
    pub sveltos_cluster: Option<String>,
    /// The member's server.
    pub server: String,
    /// The member ServiceAccount (`namespace/name`).
    pub service_account: String,
    /// Its uid (tokens die with it).
    pub service_account_uid: String,
    /// The generated kubeconfig (holds a token: never print it).
    pub kubeconfig: String,
}

/// The outcome of calling a member with a generated kubeconfig.
#[derive(Clone, Debug)]
pub struct Proof {
    /// The sink.
    pub sink: String,
    /// The profile.
    pub profile: String,
    /// The member control plane called.
    pub member: String,
    /// The username the member answered.
    pub username: String,
    /// What it may do (description, allowed).
    pub may: Vec<(String, bool)>,
    /// The call failed.
    pub error: Option<String>,
    /// The member knows it as the recorded ServiceAccount.
    pub ok: bool,
}

/// The inventory as a table (no credentials).
pub fn render_table(inventory: &Inventory) -> String {
    let mut lines = vec![[
        "PROFILE".to_string(),
        "MANAGER".into(),
        "MEMBER ID".into(),
        "VERSION".into(),
        "HEALTHY".into(),
        "JOINED".into(),
        "REGISTERED WITH".into(),
    ]];
    for row in &inventory.rows {
        let registered = if !row.registered_with.is_empty() {
            row.registered_with
                .iter()
                .map(|s| s.trim_end_matches("-sink").to_string())
                .collect::<Vec<_>>()
                .join(",")
        } else if !row.duplicate_reported_by.is_empty() {
            let winner = inventory
                .rows
                .iter()
                .find(|o| {
                    o.member_id == row.member_id
                        && o.profile != row.profile
                        && !o.registered_with.is_empty()
                })
                .map(|o| o.profile.clone())
                .unwrap_or_else(|| "another profile".into());
            format!("- (duplicate of {winner})")
        } else {
            "-".to_string()
        };
        let condition = |c: &Option<(String, String)>| match c {
            Some((status, reason)) => format!("{status} ({reason})"),
            None => "-".into(),
        };
        lines.push([
            row.profile.clone(),
            row.manager.clone(),
            if row.member_id.is_empty() {
                "-".into()
            } else {
                short_id(&row.member_id)
            },
            if row.version.is_empty() {
                "-".into()
            } else {
                row.version.clone()
            },
            condition(&row.healthy),
            condition(&row.joined),
            registered,
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0))
        .collect();
    lines
        .iter()
        .map(|l| {
            l.iter()
                .enumerate()
                .map(|(i, cell)| format!("{cell:<width$}", width = widths[i]))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}
