//! `make bench`: how each adapter's cost grows with the fleet, measured against real control
//! planes with the adapters as real processes (release build).
//!
//! For each adapter: cold convergence of N inputs created before it starts, as a ratio to a floor
//! (the same minimal API work in a tight loop, measured in the same run); requests per object by
//! verb and resource from the apiservers' own `apiserver_request_total`; writes during a quiet
//! window; churn delays; peak RSS and CPU from `/proc`; kill -9 and restart. See
//! [`phases`] for the sequence, [`sources`] and [`sinks`] for the workloads.

pub mod observe;
pub mod phases;
pub mod report;
pub mod sinks;
pub mod sources;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::fleet::Fleet;
use crate::{ForeignCrd, Result, install_crd, install_crds};
use observe::Counters;
use phases::{Settings, measure};
pub use report::Report;
use sinks::{SinkKind, SinkScenario};

/// Tries of a bench request that fails in transport (see [`retry_transport`]).
const TRANSPORT_TRIES: u32 = 3;

/// Run `attempt` again (up to [`TRANSPORT_TRIES`] tries, a second apart) while it fails in
/// transport: under a 10,000-object load the loopback apiservers now and then drop a connection
/// ("error reading a body from connection"), which says nothing about the adapter measured and
/// must not end a run of half an hour. An answer from the API (a status) is never retried, nor
/// is any error that is not the client's.
pub(crate) async fn retry_transport<T, F, Fut>(what: &str, attempt: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(err) if tries < TRANSPORT_TRIES && is_transport(err.as_ref()) => {
                eprintln!("bench: {what}: {err}; trying again");
                tries += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            outcome => return outcome,
        }
    }
}

/// Whether `err` is a kube client error other than an API answer.
fn is_transport(err: &(dyn std::error::Error + 'static)) -> bool {
    matches!(
        err.downcast_ref::<kube::Error>(),
        Some(kube::Error::HyperError(_) | kube::Error::Service(_))
    )
}

/// The adapters the bench knows, in the order it runs them.
pub const ADAPTERS: &[&str] = &[
    "ocm-source",
    "capi-source",
    "sveltos-sink",
    "argocd-sink",
    "flux-sink",
];

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Source objects per source adapter.
    pub sources: usize,
    /// Profiles for each sink.
    pub sinks: usize,
    /// Member control planes.
    pub members: usize,
    /// Quiet window after convergence.
    pub quiet: Duration,
    /// Churn changes per second.
    pub churn_rate: f64,
    /// Churn window.
    pub churn_window: Duration,
    /// No write for this long after a restart means quiet.
    pub settle: Duration,
    /// Runs of each floor; the ratio uses their median (one run's floor varies by up to half).
    pub floor_runs: usize,
    /// Which adapters (default: all of [`ADAPTERS`]).
    pub adapters: Vec<String>,
    /// Directory of the adapter binaries.
    pub adapter_dir: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            sources: 1000,
            sinks: 1000,
            members: 3,
            quiet: Duration::from_secs(60),
            churn_rate: 20.0,
            churn_window: Duration::from_secs(60),
            settle: Duration::from_secs(5),
            floor_runs: 3,
            adapters: ADAPTERS.iter().map(|a| a.to_string()).collect(),
            adapter_dir: PathBuf::from("target/release"),
        }
    }
}

/// A member control plane as the workloads need it.
#[derive(Clone, Debug)]
pub struct Member {
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    /// CA (PEM).
    pub ca_pem: String,
    /// Admin kubeconfig (what Cluster API would write into `<cluster>-kubeconfig`).
    pub kubeconfig: String,
    /// UID of `kube-system`.
    pub uid: String,
}

/// CPU model, CPU count and memory of this machine.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, m)| m.trim())
        })
        .unwrap_or("unknown CPU")
        .to_string();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{cpus} CPUs ({model}), {memory_gib:.0} GiB")
}

/// The About API (KEP-2149) `ClusterProperty` set of every member.
pub const MEMBER_CLUSTERSET: (&str, &str) = ("clusterset.k8s.io", "bench-set");

/// Give a member the About API and the properties a member of a ClusterSet publishes there:
/// its id (the `kube-system` uid, as KEP-2149 suggests) and its ClusterSet.
async fn publish_about(member: &kube::Client, uid: &str) -> Result<()> {
    install_crds(member, &[ForeignCrd::ClusterProperty]).await?;
    let properties: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(
        member.clone(),
        &adapters::member_reads::cluster_property_resource(),
    );
    for (name, value) in [
        (adapters::profile::PROPERTY_CLUSTER_ID, uid),
        MEMBER_CLUSTERSET,
    ] {
        let property = serde_json::json!({
            "apiVersion": "about.k8s.io/v1alpha1", "kind": "ClusterProperty",
            "metadata": {"name": name}, "spec": {"value": value},
        });
        properties
            .patch(
                name,
                &kube::api::PatchParams::apply("bench-member"),
                &kube::api::Patch::Apply(&property),
            )
            .await?;
    }
    Ok(())
}

/// Start a hub and the members, run every chosen adapter's phases, return the report.
pub async fn run(options: &Options) -> Result<Report> {
    eprintln!("bench: starting a hub and {} member(s)...", options.members);
    let fleet = Fleet::start(options.members).await?;
    let hub = fleet.hub.client().await?;
    install_crd(&hub, adapters::crd::cluster_profile_crd()).await?;
    let foreign: Vec<ForeignCrd> = ForeignCrd::ALL
        .into_iter()
        .filter(|crd| *crd != ForeignCrd::ClusterProfile)
        .collect();
    install_crds(&hub, &foreign).await?;
    let mut members = Vec::new();
    let mut member_clients = Vec::new();
    for member in &fleet.members {
        let client = member.client().await?;
        let uid = member.kube_system_uid().await?;
        publish_about(&client, &uid).await?;
        members.push(Member {
            server: member.server(),
            ca_pem: member.ca_pem().to_string(),
            kubeconfig: member.admin_kubeconfig_yaml(),
            uid,
        });
        member_clients.push(client);
    }
    let counters = Counters::new(hub.clone(), member_clients);
    let settings = Settings {
        quiet: options.quiet,
        churn_rate: options.churn_rate,
        churn_window: options.churn_window,
        settle: options.settle,
        floor_runs: options.floor_runs,
        adapter_dir: options.adapter_dir.clone(),
    };
    let mut report = Report {
        machine: machine(),
        settings: BTreeMap::from([
            ("sources".to_string(), options.sources.to_string()),
            ("sinks".to_string(), options.sinks.to_string()),
            ("members".to_string(), options.members.to_string()),
            (
                "quiet_seconds".to_string(),
                options.quiet.as_secs_f64().to_string(),
            ),
            ("churn_rate".to_string(), options.churn_rate.to_string()),
            (
                "churn_seconds".to_string(),
                options.churn_window.as_secs_f64().to_string(),
            ),
        ]),
        adapters: Vec::new(),
    };
    let wanted = |name: &str| options.adapters.iter().any(|a| a == name);
    if wanted("ocm-source") {
        let scenario = sources::OcmScenario::new(hub.clone(), fleet.hub.ca_pem(), options.sources);
        report
            .adapters
            .push(measure(&scenario, &fleet.hub, &counters, &settings).await?);
    }
    if wanted("capi-source") {
        let scenario = sources::CapiScenario::new(hub.clone(), members.clone(), options.sources);
        report
            .adapters
            .push(measure(&scenario, &fleet.hub, &counters, &settings).await?);
    }
    for kind in [SinkKind::Sveltos, SinkKind::ArgoCd, SinkKind::Flux] {
        if wanted(kind.adapter()) {
            let scenario = SinkScenario::new(kind, hub.clone(), members.clone(), options.sinks);
            report
                .adapters
                .push(measure(&scenario, &fleet.hub, &counters, &settings).await?);
        }
    }
    Ok(report)
}
