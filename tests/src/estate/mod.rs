//! A whole local estate for the demo and the end-to-end tests: a hub and three members (the real
//! harness), the cluster managers played visibly (two Cluster API Clusters, two OCM
//! ManagedClusters, one physical member known to both), and every adapter running as its real
//! binary with the flags a user would pass, each with its log under the estate's directory.
//!
//! What plays a manager says so (`[capi] ...`, `[ocm] ...`): nothing here stands in for the
//! bridge itself, only for the controllers and agents of Cluster API and OCM that would run on a
//! real hub and its members.
//!
//! Its parts follow its lifecycle: `replicas` runs the adapters as processes, `managers`
//! plays Cluster API and OCM on the hub, `ocm_agents` plays OCM's agents in the background,
//! `inventory` reads back what the bridge made of it and waits for convergence, `proofs` calls
//! the members with the kubeconfigs the sinks generated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adapters::profile::ClusterProfile;
use kube::Client;
use kube::api::Api;

use crate::controlplane::{ControlPlane, ControlPlaneOptions};
use crate::crds::{ForeignCrd, install_crd, install_crds};
use crate::fleet::Fleet;
use crate::{Result, ensure_namespace};

mod inventory;
mod managers;
mod ocm_agents;
mod proofs;
mod replicas;

pub use inventory::{Inventory, Registration, Row, render_table, sveltos_cluster_resource};
pub use managers::{EstateCluster, Manager, default_clusters};
use ocm_agents::AgentState;
pub use proofs::Proof;
pub use replicas::{AdapterReplica, adapter_bin_dir};

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
