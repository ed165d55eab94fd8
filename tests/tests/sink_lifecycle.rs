//! The lifecycle promises of the sink engine (issue 9), on real control planes: a hub and two
//! members (`shared_fleet`), sveltos-sink as a real process (the built binary, killed with
//! SIGKILL) or in-process with the real runtime.
//!
//! - a restart or a leader handover adopts what was published: no TokenRequest, no write
//!   (counted by the apiservers themselves, `apiserver_request_total`);
//! - an unmarked member object of our name is a name conflict: never taken over, never deleted;
//! - a profile re-pointed at another member gets a new identity and the old one is revoked;
//! - profiles reaching one member share one identity, revoked with the last of them;
//! - two instances sharing a target namespace never sweep each other's registrations;
//! - deletion is bounded (`--cleanup-timeout`) and `--release-finalizers` releases everything.
//!
//! Tests that count apiserver requests take the "quiet" lock exclusively; every other test holds
//! it shared, so no other test writes to the shared control planes while they measure.

// Integration test file: helpers panic on a broken fixture, which fails the test as it should.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Child sink processes get PR_SET_PDEATHSIG so they never outlive the test that started them.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use adapters::profile::{
    AccessProvider, Cluster, ClusterManager, ClusterProfile, ClusterProfileSpec, EXTENSION_EXEC,
    LABEL_CLUSTER_MANAGER, NamedExtension,
};
use adapters::runtime::{Metrics, Runtime};
use adapters::sink::{Sink, SinkMetrics, SinkOptions};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use harness::sinks::{events_about, hub_secret, whoami};
use harness::{ControlPlane, ForeignCrd, install_crd, install_crds, shared_fleet, wait_for};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use sveltos_sink::{SveltosCluster, SveltosSink};
use tokio_util::sync::CancellationToken;

// ---- isolation -----------------------------------------------------------------------------

/// Shared by every test; taken exclusively by the tests that count apiserver requests.
fn quiet() -> &'static tokio::sync::RwLock<()> {
    static QUIET: OnceLock<tokio::sync::RwLock<()>> = OnceLock::new();
    QUIET.get_or_init(|| tokio::sync::RwLock::new(()))
}

fn logs() {
    static LOGS: OnceLock<()> = OnceLock::new();
    LOGS.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info,kube_runtime=warn,kube_client=warn,hyper=warn")
            .with_test_writer()
            .with_ansi(false)
            .try_init();
    });
}

async fn hub_ready(hub: &ControlPlane) -> Client {
    logs();
    let client = hub.client().await.unwrap();
    static CRDS: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    CRDS.get_or_init(|| async {
        install_crd(&client, adapters::crd::cluster_profile_crd())
            .await
            .unwrap();
        install_crds(&client, &[ForeignCrd::SveltosCluster])
            .await
            .unwrap();
    })
    .await;
    client
}

/// A namespace of the test's own; its name doubles as the test's sink instance name.
async fn namespace(hub: &Client, prefix: &str) -> String {
    let ns = harness::test_namespace(hub, prefix).await.unwrap();
    assert!(ns.len() <= 40, "{ns} is too long for an instance name");
    ns
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(str::to_string),
        ..ObjectMeta::default()
    }
}

// ---- fixtures --------------------------------------------------------------------------------

/// The Secret Cluster API writes for a workload cluster: its admin kubeconfig, CAPI's type and
/// cluster-name label (what the built-in `kubeconfig-secret` insists on).
async fn capi_secret(hub: &Client, namespace: &str, name: &str, member: &ControlPlane) {
    hub_secret(
        hub,
        namespace,
        name,
        "value",
        &member.admin_kubeconfig_yaml(),
    )
    .await;
}

/// The `cluster-api` access provider capi-source publishes: the member's endpoint and the CAPI
/// Secret to read (in the profile's namespace).
fn capi_provider(member: &ControlPlane, secret: &str) -> Vec<AccessProvider> {
    vec![AccessProvider {
        name: "cluster-api".into(),
        cluster: Some(Cluster {
            server: member.server(),
            certificate_authority_data: Some(BASE64.encode(member.ca_pem())),
            extensions: vec![NamedExtension {
                name: EXTENSION_EXEC.into(),
                extension: json!({"name": secret, "key": "value"}),
            }],
            ..Cluster::default()
        }),
    }]
}

/// Create a profile as capi-source would (manager `cluster-api`, spec, labels, then status).
async fn create_profile(hub: &Client, namespace: &str, name: &str, providers: Vec<AccessProvider>) {
    let api: Api<ClusterProfile> = Api::namespaced(hub.clone(), namespace);
    let profile = ClusterProfile {
        metadata: ObjectMeta {
            labels: Some(BTreeMap::from([(
                LABEL_CLUSTER_MANAGER.to_string(),
                "cluster-api".to_string(),
            )])),
            ..meta(name, Some(namespace))
        },
        spec: ClusterProfileSpec {
            display_name: None,
            cluster_manager: ClusterManager {
                name: "cluster-api".into(),
            },
        },
        status: None,
    };
    api.create(&PostParams::default(), &profile).await.unwrap();
    set_providers(hub, namespace, name, providers).await;
}

async fn set_providers(hub: &Client, namespace: &str, name: &str, providers: Vec<AccessProvider>) {
    Api::<ClusterProfile>::namespaced(hub.clone(), namespace)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [], "accessProviders": providers, "properties": []}})),
        )
        .await
        .unwrap();
}

fn secret_name(profile: &str) -> String {
    format!("{profile}-sveltos-kubeconfig")
}

fn kubeconfig_of(secret: &Secret) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get("kubeconfig")
        .map(|b| String::from_utf8(b.0.clone()).unwrap())
}

/// Wait for the profile's Secret and return its kubeconfig.
async fn published_kubeconfig(hub: &Client, namespace: &str, profile: &str) -> String {
    let secrets: Api<Secret> = Api::namespaced(hub.clone(), namespace);
    let name = secret_name(profile);
    wait_for(Duration::from_secs(90), &format!("Secret {name}"), || {
        let secrets = secrets.clone();
        let name = name.clone();
        async move {
            Ok(secrets
                .get_opt(&name)
                .await?
                .and_then(|s| kubeconfig_of(&s)))
        }
    })
    .await
    .unwrap()
}

fn token_of(kubeconfig: &str) -> String {
    let doc: Value = serde_saphyr::from_str(kubeconfig).unwrap();
    doc["users"][0]["user"]["token"]
        .as_str()
        .unwrap()
        .to_string()
}

fn server_of(kubeconfig: &str) -> String {
    let doc: Value = serde_saphyr::from_str(kubeconfig).unwrap();
    doc["clusters"][0]["cluster"]["server"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Wait until `member` rejects `token` with 401; returns how long that took.
async fn wait_rejected(member: &ControlPlane, token: &str, timeout: Duration) -> Duration {
    let client = member.token_client(token).await.unwrap();
    let started = Instant::now();
    wait_for(timeout, "the member rejects the token (401)", || async {
        Ok(
            matches!(whoami(&client).await, Err(kube::Error::Api(ref s)) if s.code == 401)
                .then_some(()),
        )
    })
    .await
    .unwrap();
    started.elapsed()
}

fn username(instance: &str) -> String {
    format!("system:serviceaccount:inventory-bridge:inventory-bridge-{instance}")
}

fn account_name(instance: &str) -> String {
    format!("inventory-bridge-{instance}")
}

fn rbac_name(instance: &str) -> String {
    format!(
        "inventory-bridge:{instance}:inventory-bridge:{}",
        account_name(instance)
    )
}

async fn member_account(member: &ControlPlane, instance: &str) -> Option<ServiceAccount> {
    Api::<ServiceAccount>::namespaced(member.client().await.unwrap(), "inventory-bridge")
        .get_opt(&account_name(instance))
        .await
        .unwrap()
}

async fn wait_account_gone(member: &ControlPlane, instance: &str) {
    let accounts: Api<ServiceAccount> =
        Api::namespaced(member.client().await.unwrap(), "inventory-bridge");
    harness::wait_object_gone(&accounts, &account_name(instance), Duration::from_secs(60))
        .await
        .unwrap();
}

async fn wait_event(hub: &Client, namespace: &str, name: &str, reason: &str) -> String {
    wait_for(
        Duration::from_secs(90),
        &format!("Event {reason} on {name}"),
        || async {
            Ok(events_about(hub, namespace, name)
                .await
                .into_iter()
                .find(|(r, _)| r == reason)
                .map(|(_, note)| note))
        },
    )
    .await
    .unwrap()
}

async fn wait_profile_gone(hub: &Client, namespace: &str, name: &str, timeout: Duration) {
    let profiles: Api<ClusterProfile> = Api::namespaced(hub.clone(), namespace);
    harness::wait_object_gone(&profiles, name, timeout)
        .await
        .unwrap();
}

fn finalizer(instance: &str) -> String {
    format!("inventory-bridge.io/{instance}-cleanup")
}

// ---- metrics ---------------------------------------------------------------------------------

/// The sum of the samples of `name` whose labels include all of `labels`.
fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Requests the apiserver of `client` served on `resource` (and `subresource`, "" for the
/// object itself) with one of `verbs`, by its own `apiserver_request_total`.
async fn served(client: &Client, resource: &str, subresource: &str, verbs: &[&str]) -> u64 {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(request).await.unwrap();
    let total: f64 = text
        .lines()
        .filter(|line| line.starts_with("apiserver_request_total{"))
        .filter(|line| line.contains(&format!("resource=\"{resource}\"")))
        .filter(|line| line.contains(&format!("subresource=\"{subresource}\"")))
        .filter(|line| {
            verbs
                .iter()
                .any(|v| line.contains(&format!("verb=\"{v}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    total as u64
}

/// Verbs that write, as the apiserver labels them.
const WRITES: &[&str] = &[
    "POST",
    "PUT",
    "PATCH",
    "APPLY",
    "DELETE",
    "DELETECOLLECTION",
];

/// What the restart promise is about, counted on the hub and on each member.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Counts {
    token_requests: Vec<u64>,
    member_identity_writes: Vec<u64>,
    hub_secret_writes: u64,
    hub_cluster_writes: u64,
    hub_profile_writes: u64,
}

async fn counts(hub: &Client, members: &[Client]) -> Counts {
    let mut token_requests = Vec::new();
    let mut member_identity_writes = Vec::new();
    for member in members {
        token_requests.push(served(member, "serviceaccounts", "token", &["POST"]).await);
        let mut writes = 0;
        for resource in [
            "serviceaccounts",
            "clusterroles",
            "clusterrolebindings",
            "namespaces",
        ] {
            writes += served(member, resource, "", WRITES).await;
        }
        member_identity_writes.push(writes);
    }
    Counts {
        token_requests,
        member_identity_writes,
        hub_secret_writes: served(hub, "secrets", "", WRITES).await,
        hub_cluster_writes: served(hub, "sveltosclusters", "", WRITES).await,
        hub_profile_writes: served(hub, "clusterprofiles", "", WRITES).await,
    }
}

fn delta(before: &Counts, after: &Counts) -> Counts {
    let sub = |a: &[u64], b: &[u64]| a.iter().zip(b).map(|(x, y)| y - x).collect();
    Counts {
        token_requests: sub(&before.token_requests, &after.token_requests),
        member_identity_writes: sub(
            &before.member_identity_writes,
            &after.member_identity_writes,
        ),
        hub_secret_writes: after.hub_secret_writes - before.hub_secret_writes,
        hub_cluster_writes: after.hub_cluster_writes - before.hub_cluster_writes,
        hub_profile_writes: after.hub_profile_writes - before.hub_profile_writes,
    }
}

fn is_zero(counts: &Counts) -> bool {
    counts.token_requests.iter().all(|c| *c == 0)
        && counts.member_identity_writes.iter().all(|c| *c == 0)
        && counts.hub_secret_writes == 0
        && counts.hub_cluster_writes == 0
        && counts.hub_profile_writes == 0
}

/// Wait until the apiservers saw no request of interest for `quiet` (the sink is idle).
async fn settled(hub: &Client, members: &[Client], quiet: Duration) -> Counts {
    let mut last = counts(hub, members).await;
    let mut since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = counts(hub, members).await;
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return last;
        }
        assert!(Instant::now() < deadline, "the sink never went quiet");
    }
}

// ---- sveltos-sink in-process -----------------------------------------------------------------

struct InProcessSink {
    address: SocketAddr,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<adapters::Result<()>>>,
}

impl Drop for InProcessSink {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl InProcessSink {
    async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = harness::http_get(self.address, "/metrics").await.unwrap().1;
        metric_value(&text, name, labels)
    }

    async fn wait_metric(&self, name: &str, labels: &[(&str, &str)], at_least: f64) {
        wait_for(
            Duration::from_secs(90),
            &format!("{name} {labels:?} >= {at_least}"),
            || async { Ok((self.metric(name, labels).await >= at_least).then_some(())) },
        )
        .await
        .unwrap();
    }

    /// Stop it as SIGTERM would and require a clean stop.
    async fn stop(mut self) {
        self.shutdown.cancel();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the sink stops")
            .unwrap()
            .unwrap();
    }

    /// Wait for it to return on its own (release mode) and require success.
    async fn finished(mut self, timeout: Duration) -> Duration {
        let started = Instant::now();
        let task = self.task.take().unwrap();
        tokio::time::timeout(timeout, task)
            .await
            .expect("the sink returns on its own")
            .unwrap()
            .unwrap();
        started.elapsed()
    }
}

/// sveltos-sink in-process, configured by its command line `argv` (as its binary resolves it),
/// then `adjust`ed for knobs without a flag.
async fn start_sink(
    hub: &Client,
    argv: &[&str],
    target_namespace: Option<&str>,
    adjust: impl FnOnce(&mut SinkOptions),
) -> InProcessSink {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        sink: adapters::sink::SinkArgs,
    }
    let cli =
        Cli::try_parse_from(std::iter::once("sveltos-sink").chain(argv.iter().copied())).unwrap();
    let mut options = cli
        .sink
        .resolve::<SveltosSink>(target_namespace.map(str::to_string))
        .unwrap();
    options.member_timeout = Duration::from_secs(5);
    options.max_backoff = Duration::from_secs(5);
    adjust(&mut options);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let mut metrics = Metrics::new(SveltosSink::NAME);
    let sink_metrics = SinkMetrics::register(metrics.registry_mut());
    let args = harness::in_process_runtime_args(&options.instance, "info");
    let runtime = Runtime::new(SveltosSink::NAME, args, hub.clone(), metrics);
    let shutdown = runtime.shutdown_token();
    let sink = Arc::new(SveltosSink::default());
    let task = tokio::spawn(runtime.run_with_listener(listener, move |context| {
        adapters::sink::run(sink.clone(), options.clone(), sink_metrics.clone(), context)
    }));
    InProcessSink {
        address,
        shutdown,
        task: Some(task),
    }
}

// ---- sveltos-sink as a process ---------------------------------------------------------------

/// The `sveltos-sink` binary, built by cargo (a no-op when up to date) so the process runs the
/// code under test.
fn sveltos_sink_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
            let output = std::process::Command::new(cargo)
                .args([
                    "build",
                    "-p",
                    "sveltos-sink",
                    "--bin",
                    "sveltos-sink",
                    "--message-format=json-render-diagnostics",
                ])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .stderr(std::process::Stdio::inherit())
                .output()
                .expect("cannot run cargo build");
            assert!(
                output.status.success(),
                "cargo build -p sveltos-sink failed"
            );
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .filter(|m| m["reason"] == "compiler-artifact")
                .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
                .find(|p| p.file_name().is_some_and(|n| n == "sveltos-sink"))
                .expect("cargo build named no sveltos-sink executable")
        })
        .clone()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A sveltos-sink process; killed (SIGKILL) when dropped, and when its test's thread ends.
struct SinkProcess {
    name: String,
    child: std::process::Child,
    address: SocketAddr,
    log: PathBuf,
}

impl SinkProcess {
    fn spawn(name: &str, hub_kubeconfig: &Path, args: &[String]) -> Self {
        use std::os::unix::process::CommandExt;
        let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::env::temp_dir().join(format!(
            "ib-sink-lifecycle-{}-{name}-{}.log",
            std::process::id(),
            address.port()
        ));
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let mut command = std::process::Command::new(sveltos_sink_binary());
        command
            .arg("--kubeconfig")
            .arg(hub_kubeconfig)
            .args(["--http-address", &address.to_string()])
            .args(["--log-filter", "info"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap();
        Self {
            name: name.to_string(),
            child,
            address,
            log,
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(30);
        format!(
            "--- last lines of {} ({}) ---\n{}",
            self.name,
            self.log.display(),
            lines[start..].join("\n")
        )
    }

    /// SIGKILL: no graceful anything.
    fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn metrics(&self) -> String {
        harness::http_get(self.address, "/metrics")
            .await
            .map(|r| r.1)
            .unwrap_or_default()
    }

    async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics().await, name, labels)
    }

    async fn wait(&mut self, what: &str, timeout: Duration, check: impl AsyncCheck) {
        let started = Instant::now();
        loop {
            if check.check(self).await {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) while waiting for {what}\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if started.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_ready(&mut self) -> Duration {
        let started = Instant::now();
        self.wait("/readyz 200", Duration::from_secs(60), Ready)
            .await;
        started.elapsed()
    }

    /// How long until `/readyz` answered 200, or None if it did not within `timeout`.
    async fn ready_within(&self, timeout: Duration) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if Ready.check(self).await {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    async fn wait_metric(
        &mut self,
        name: &'static str,
        labels: &'static [(&'static str, &'static str)],
        value: f64,
        timeout: Duration,
    ) -> Duration {
        let started = Instant::now();
        self.wait(
            &format!("{name} {labels:?} == {value}"),
            timeout,
            MetricIs(name, labels, value),
        )
        .await;
        started.elapsed()
    }
}

impl Drop for SinkProcess {
    fn drop(&mut self) {
        self.kill_9();
    }
}

trait AsyncCheck {
    async fn check(&self, process: &SinkProcess) -> bool;
}

struct Ready;

impl AsyncCheck for Ready {
    async fn check(&self, process: &SinkProcess) -> bool {
        matches!(
            harness::http_get(process.address, "/readyz").await,
            Ok((200, _))
        )
    }
}

struct MetricIs(&'static str, &'static [(&'static str, &'static str)], f64);

impl AsyncCheck for MetricIs {
    async fn check(&self, process: &SinkProcess) -> bool {
        let text = process.metrics().await;
        !text.is_empty() && metric_value(&text, self.0, self.1) == self.2
    }
}

const REGISTERED: &[(&str, &str)] = &[("state", "registered")];
const LEADER: &[(&str, &str)] = &[];

/// Every published token of the namespace's registrations: profile → (token, resourceVersion).
async fn published(
    hub: &Client,
    namespace: &str,
    instance: &str,
) -> BTreeMap<String, (String, String)> {
    Api::<Secret>::namespaced(hub.clone(), namespace)
        .list(&ListParams::default().labels(&format!("inventory-bridge.io/instance={instance}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| {
            (
                s.name_any(),
                (
                    token_of(&kubeconfig_of(&s).unwrap()),
                    s.resource_version().unwrap_or_default(),
                ),
            )
        })
        .collect()
}

/// 50 profiles of `namespace`, spread over both members, through CAPI Secrets.
async fn fifty_profiles(hub: &Client, namespace: &str, members: &[ControlPlane]) {
    for (i, member) in members.iter().enumerate() {
        capi_secret(hub, namespace, &format!("m{i}-kubeconfig"), member).await;
    }
    let creates = (0..50).map(|i| {
        let member = i % members.len();
        async move {
            create_profile(
                hub,
                namespace,
                &format!("p{i:02}"),
                capi_provider(&members[member], &format!("m{member}-kubeconfig")),
            )
            .await;
        }
    });
    futures::future::join_all(creates).await;
}

fn print_counts(label: &str, counts: &Counts) {
    println!(
        "MEASURED {label}: member TokenRequests {:?}, member identity writes (serviceaccounts/clusterroles/clusterrolebindings/namespaces) {:?}, hub writes: secrets {}, sveltosclusters {}, clusterprofiles {}",
        counts.token_requests,
        counts.member_identity_writes,
        counts.hub_secret_writes,
        counts.hub_cluster_writes,
        counts.hub_profile_writes
    );
}

// ---- 1. restarts and leader changes mint nothing and write nothing ----------------------------

/// 50 registrations by a sveltos-sink process; SIGKILL; a new process adopts all of them: no
/// TokenRequest and no identity write on either member, no Secret (nor SveltosCluster, nor
/// profile) write on the hub, the same tokens still published.
#[tokio::test]
async fn a_restarted_process_adopts_every_registration_and_writes_nothing() {
    let _exclusive = quiet().write().await;
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let members: Vec<Client> = vec![
        fleet.members[0].client().await.unwrap(),
        fleet.members[1].client().await.unwrap(),
    ];
    let ns = namespace(&hub, "restart").await;
    let instance = ns.clone();
    let kubeconfig = std::env::temp_dir().join(format!("ib-sink-lifecycle-hub-{ns}.kubeconfig"));
    fleet.hub.write_admin_kubeconfig(&kubeconfig).unwrap();
    let args: Vec<String> = [
        "--inventory-namespace",
        &ns,
        "--instance",
        &instance,
        "--leader-election=false",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Print the apiserver's own label names once, so the counting below is checkable.
    let before_all = counts(&hub, &members).await;

    let mut first = SinkProcess::spawn("first", &kubeconfig, &args);
    let started = Instant::now();
    fifty_profiles(&hub, &ns, &fleet.members).await;
    let registered_in = first
        .wait_metric(
            "inventory_bridge_sink_registrations",
            REGISTERED,
            50.0,
            Duration::from_secs(240),
        )
        .await;
    println!(
        "MEASURED restart: 50 profiles created and registered by the first process in {:?}",
        started.elapsed().max(registered_in)
    );
    let steady = settled(&hub, &members, Duration::from_secs(5)).await;
    print_counts(
        "restart: registering 50 profiles (first process)",
        &delta(&before_all, &steady),
    );
    let tokens = published(&hub, &ns, &instance).await;
    assert_eq!(tokens.len(), 50, "50 credential Secrets");
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = members[0].request_text(request).await.unwrap();
    if let Some(line) = text
        .lines()
        .find(|l| l.starts_with("apiserver_request_total{") && l.contains("subresource=\"token\""))
    {
        println!("MEASURED restart: the member counts TokenRequests as: {line}");
    }

    let before = counts(&hub, &members).await;
    first.kill_9();
    let mut second = SinkProcess::spawn("second", &kubeconfig, &args);
    let respawned = Instant::now();
    let adopted = second
        .wait_metric(
            "inventory_bridge_sink_registrations",
            REGISTERED,
            50.0,
            Duration::from_secs(120),
        )
        .await;
    let ready = second
        .ready_within(Duration::from_secs(15))
        .await
        .map(|_| respawned.elapsed());
    tokio::time::sleep(Duration::from_secs(15).saturating_sub(respawned.elapsed() - adopted)).await;
    let after = counts(&hub, &members).await;
    let restart = delta(&before, &after);
    println!(
        "MEASURED restart: after kill -9 the new process had all 50 adopted (registered) after {adopted:?}; /readyz 200 {ready:?} after start (None: not within 15 s of adoption)"
    );
    print_counts("restart: kill -9 + new process + 15 s settle", &restart);
    assert!(
        is_zero(&restart),
        "a restart must mint and write nothing: {restart:?}\n{}",
        second.log_tail()
    );
    assert_eq!(
        published(&hub, &ns, &instance).await,
        tokens,
        "the same tokens, untouched Secrets"
    );
    assert_eq!(
        second
            .metric("inventory_bridge_sink_mints_total", &[])
            .await,
        0.0,
        "the new process minted nothing"
    );
    // Still registered for real: a published token works on its member.
    let kubeconfig_text = published_kubeconfig(&hub, &ns, "p01").await;
    let client = harness::controlplane::client_from_kubeconfig_yaml(&kubeconfig_text)
        .await
        .unwrap();
    assert_eq!(whoami(&client).await.unwrap(), username(&instance));
    let ready = second.ready_within(Duration::from_secs(5)).await;
    drop(second);
    // Leave nothing behind on the shared members, whatever the verdict on readiness.
    release(&hub, &ns, &instance).await;
    assert!(
        ready.is_some(),
        "the restarted process never answered /readyz 200 (its Pod would never become Ready)"
    );
}

/// Two replicas with leader election; 50 registrations by the leader; SIGKILL the leader: the
/// standby takes over and adopts everything without a TokenRequest or a write.
#[tokio::test]
async fn a_new_leader_adopts_every_registration_and_writes_nothing() {
    let _exclusive = quiet().write().await;
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let members: Vec<Client> = vec![
        fleet.members[0].client().await.unwrap(),
        fleet.members[1].client().await.unwrap(),
    ];
    let ns = namespace(&hub, "handover").await;
    let instance = ns.clone();
    let kubeconfig = std::env::temp_dir().join(format!("ib-sink-lifecycle-hub-{ns}.kubeconfig"));
    fleet.hub.write_admin_kubeconfig(&kubeconfig).unwrap();
    let args = |identity: &str| -> Vec<String> {
        [
            "--inventory-namespace",
            &ns,
            "--instance",
            &instance,
            "--leader-election=true",
            "--lease-name",
            &format!("lease-{ns}"),
            "--lease-namespace",
            &ns,
            "--lease-duration-seconds",
            "6",
            "--identity",
            identity,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let mut leader = SinkProcess::spawn("replica-a", &kubeconfig, &args("replica-a"));
    leader
        .wait_metric(
            "inventory_bridge_leader",
            LEADER,
            1.0,
            Duration::from_secs(60),
        )
        .await;
    let mut standby = SinkProcess::spawn("replica-b", &kubeconfig, &args("replica-b"));
    standby.wait_ready().await;
    assert_eq!(standby.metric("inventory_bridge_leader", &[]).await, 0.0);

    fifty_profiles(&hub, &ns, &fleet.members).await;
    leader
        .wait_metric(
            "inventory_bridge_sink_registrations",
            REGISTERED,
            50.0,
            Duration::from_secs(240),
        )
        .await;
    settled(&hub, &members, Duration::from_secs(5)).await;
    let tokens = published(&hub, &ns, &instance).await;
    assert_eq!(tokens.len(), 50);

    let before = counts(&hub, &members).await;
    leader.kill_9();
    let took_over = standby
        .wait_metric(
            "inventory_bridge_leader",
            LEADER,
            1.0,
            Duration::from_secs(60),
        )
        .await;
    let adopted = standby
        .wait_metric(
            "inventory_bridge_sink_registrations",
            REGISTERED,
            50.0,
            Duration::from_secs(120),
        )
        .await;
    let took_over_at = Instant::now();
    let ready = standby.ready_within(Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(15).saturating_sub(took_over_at.elapsed())).await;
    let after = counts(&hub, &members).await;
    let handover = delta(&before, &after);
    println!(
        "MEASURED handover: the standby led {took_over:?} after the leader's kill -9 (lease 6 s), had all 50 adopted {adopted:?} later; /readyz 200 as leader after {ready:?} (None: not within 15 s)"
    );
    print_counts(
        "handover: kill -9 leader + takeover + 15 s settle",
        &handover,
    );
    // The new leader renews the Lease (a write, but not one of these resources).
    assert!(
        is_zero(&handover),
        "a leader change must mint and write nothing: {handover:?}\n{}",
        standby.log_tail()
    );
    assert_eq!(published(&hub, &ns, &instance).await, tokens);
    assert_eq!(
        standby
            .metric("inventory_bridge_sink_mints_total", &[])
            .await,
        0.0
    );
    drop(standby);
    release(&hub, &ns, &instance).await;
    assert!(
        ready.is_some(),
        "the new leader never answered /readyz 200 (its Pod would never become Ready)"
    );
}

/// Release everything an instance registered in `namespace` (uninstall), so tests leave the
/// shared members clean.
async fn release(hub: &Client, namespace: &str, instance: &str) {
    let sink = start_sink(
        hub,
        &[
            "--inventory-namespace",
            namespace,
            "--instance",
            instance,
            "--release-finalizers",
        ],
        None,
        |_| {},
    )
    .await;
    sink.finished(Duration::from_secs(120)).await;
}

// ---- 2. nothing taken over or deleted that is not ours ---------------------------------------

/// A ServiceAccount of the sink's default name that Helm created: the profile gets a name
/// conflict, the account keeps Helm's labels and no field of it is ours, and deleting the
/// profile leaves it in place.
#[tokio::test]
async fn an_unmarked_member_object_is_a_name_conflict_never_taken_over_or_deleted() {
    let _shared = quiet().read().await;
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let m1 = &fleet.members[0];
    let admin = m1.client().await.unwrap();
    let ns = namespace(&hub, "helm").await;
    let instance = ns.clone();
    match Api::<Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: meta("inventory-bridge", None),
                ..Namespace::default()
            },
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(err) => panic!("{err}"),
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "inventory-bridge");
    let helm = accounts
        .create(
            &PostParams {
                field_manager: Some("helm".into()),
                ..PostParams::default()
            },
            &ServiceAccount {
                metadata: ObjectMeta {
                    labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/managed-by".to_string(),
                        "Helm".to_string(),
                    )])),
                    ..meta(&account_name(&instance), Some("inventory-bridge"))
                },
                ..ServiceAccount::default()
            },
        )
        .await
        .unwrap();

    capi_secret(&hub, &ns, "m1-kubeconfig", m1).await;
    let sink = start_sink(
        &hub,
        &["--inventory-namespace", &ns, "--instance", &instance],
        None,
        |_| {},
    )
    .await;
    create_profile(&hub, &ns, "taken", capi_provider(m1, "m1-kubeconfig")).await;
    let note = wait_event(&hub, &ns, "taken", "NameConflict").await;
    assert!(note.contains(&account_name(&instance)), "{note}");
    sink.wait_metric(
        "inventory_bridge_problems_total",
        &[("category", "name-conflict")],
        1.0,
    )
    .await;
    assert!(
        Api::<Secret>::namespaced(hub.clone(), &ns)
            .get_opt(&secret_name("taken"))
            .await
            .unwrap()
            .is_none(),
        "nothing published"
    );
    let check_untouched = |account: ServiceAccount| {
        assert_eq!(account.metadata.uid, helm.metadata.uid, "the same object");
        assert_eq!(
            account.metadata.labels, helm.metadata.labels,
            "labels untouched (no ownership mark added, managed-by still Helm)"
        );
        let managers: Vec<String> = account
            .metadata
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| m.manager)
            .collect();
        assert_eq!(managers, vec!["helm".to_string()], "no field of it is ours");
    };
    check_untouched(accounts.get(&account_name(&instance)).await.unwrap());
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    assert!(
        roles
            .get_opt(&rbac_name(&instance))
            .await
            .unwrap()
            .is_none(),
        "no role granted to a foreign account"
    );
    assert!(
        Api::<ClusterRoleBinding>::all(admin.clone())
            .get_opt(&rbac_name(&instance))
            .await
            .unwrap()
            .is_none()
    );

    Api::<ClusterProfile>::namespaced(hub.clone(), &ns)
        .delete("taken", &DeleteParams::default())
        .await
        .unwrap();
    wait_profile_gone(&hub, &ns, "taken", Duration::from_secs(60)).await;
    // The sink had time to (wrongly) revoke: give it a few more passes, then look.
    tokio::time::sleep(Duration::from_secs(3)).await;
    check_untouched(accounts.get(&account_name(&instance)).await.unwrap());
    sink.stop().await;
    accounts
        .delete(&account_name(&instance), &DeleteParams::default())
        .await
        .unwrap();
}

// ---- 3. a server change revokes the old identity -----------------------------------------------

/// A registered profile re-pointed from member 1 to member 2: a new identity is published for
/// member 2, and the identity on member 1 is revoked (its account deleted, its token refused).
#[tokio::test]
async fn a_server_change_revokes_the_old_identity() {
    let _shared = quiet().read().await;
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let (m1, m2) = (&fleet.members[0], &fleet.members[1]);
    let ns = namespace(&hub, "moves").await;
    let instance = ns.clone();
    capi_secret(&hub, &ns, "m1-kubeconfig", m1).await;
    capi_secret(&hub, &ns, "m2-kubeconfig", m2).await;
    let sink = start_sink(
        &hub,
        &["--inventory-namespace", &ns, "--instance", &instance],
        None,
        |_| {},
    )
    .await;
    create_profile(&hub, &ns, "moving", capi_provider(m1, "m1-kubeconfig")).await;
    let first = published_kubeconfig(&hub, &ns, "moving").await;
    assert_eq!(server_of(&first), m1.server());
    let old_token = token_of(&first);
    let old = m1.token_client(&old_token).await.unwrap();
    assert_eq!(whoami(&old).await.unwrap(), username(&instance));
    assert!(member_account(m1, &instance).await.is_some());

    let moved_at = Instant::now();
    set_providers(&hub, &ns, "moving", capi_provider(m2, "m2-kubeconfig")).await;
    let secrets: Api<Secret> = Api::namespaced(hub.clone(), &ns);
    let second = wait_for(
        Duration::from_secs(60),
        "a kubeconfig for member 2",
        || async {
            Ok(secrets
                .get_opt(&secret_name("moving"))
                .await?
                .and_then(|s| kubeconfig_of(&s))
                .filter(|k| server_of(k) == m2.server()))
        },
    )
    .await
    .unwrap();
    let published_in = moved_at.elapsed();
    let new = harness::controlplane::client_from_kubeconfig_yaml(&second)
        .await
        .unwrap();
    assert_eq!(whoami(&new).await.unwrap(), username(&instance));
    let record = secrets
        .get(&secret_name("moving"))
        .await
        .unwrap()
        .annotations()
        .get("inventory-bridge.io/registration")
        .cloned()
        .unwrap();
    let record: Value = serde_json::from_str(&record).unwrap();
    assert_eq!(record["endpoint"]["server"], m2.server(), "{record}");
    assert_eq!(
        record["identity"]["serviceAccountUid"].as_str(),
        member_account(m2, &instance)
            .await
            .unwrap()
            .metadata
            .uid
            .as_deref()
    );

    wait_account_gone(m1, &instance).await;
    let rejected = wait_rejected(m1, &old_token, Duration::from_secs(45)).await;
    println!(
        "MEASURED server change: new identity published {published_in:?} after the re-point; old token refused (401) {:?} after the re-point",
        moved_at.elapsed().max(rejected)
    );
    assert!(
        Api::<ClusterRoleBinding>::all(m1.client().await.unwrap())
            .get_opt(&rbac_name(&instance))
            .await
            .unwrap()
            .is_none(),
        "the old binding is gone too"
    );
    sink.stop().await;
    release(&hub, &ns, &instance).await;
}

// ---- 4. one identity per (instance, member), reference-counted ---------------------------------

/// Two inventories served by one sink, a profile in each reaching the same member: one shared
/// account. Deleting one keeps it (Event MemberIdentityKept, the other token keeps working);
/// deleting the other revokes it.
#[tokio::test]
async fn profiles_reaching_one_member_share_its_identity_until_the_last_is_deleted() {
    let _shared = quiet().read().await;
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let m1 = &fleet.members[0];
    let inv_a = namespace(&hub, "share-a").await;
    let inv_b = harness::test_namespace(&hub, "share-b").await.unwrap();
    let instance = inv_a.clone();
    capi_secret(&hub, &inv_a, "m1-kubeconfig", m1).await;
    capi_secret(&hub, &inv_b, "m1-kubeconfig", m1).await;
    let sink = start_sink(
        &hub,
        &[
            "--inventory-namespace",
            &format!("{inv_a},{inv_b}"),
            "--instance",
            &instance,
        ],
        None,
        |_| {},
    )
    .await;
    create_profile(&hub, &inv_a, "same", capi_provider(m1, "m1-kubeconfig")).await;
    create_profile(&hub, &inv_b, "same", capi_provider(m1, "m1-kubeconfig")).await;
    let token_a = token_of(&published_kubeconfig(&hub, &inv_a, "same").await);
    let token_b = token_of(&published_kubeconfig(&hub, &inv_b, "same").await);
    assert_ne!(token_a, token_b, "a token per registration");
    let client_a = m1.token_client(&token_a).await.unwrap();
    let client_b = m1.token_client(&token_b).await.unwrap();
    assert_eq!(whoami(&client_a).await.unwrap(), username(&instance));
    assert_eq!(whoami(&client_b).await.unwrap(), username(&instance));
    let account = member_account(m1, &instance).await.unwrap();
    let uid_of = |secret: Secret| -> String {
        let record: Value = serde_json::from_str(
            secret
                .annotations()
                .get("inventory-bridge.io/registration")
                .unwrap(),
        )
        .unwrap();
        record["identity"]["serviceAccountUid"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for inventory in [&inv_a, &inv_b] {
        let secret = Api::<Secret>::namespaced(hub.clone(), inventory)
            .get(&secret_name("same"))
            .await
            .unwrap();
        assert_eq!(
            Some(uid_of(secret)),
            account.metadata.uid,
            "both records name the one account"
        );
    }

    Api::<ClusterProfile>::namespaced(hub.clone(), &inv_a)
        .delete("same", &DeleteParams::default())
        .await
        .unwrap();
    wait_profile_gone(&hub, &inv_a, "same", Duration::from_secs(60)).await;
    let note = wait_event(&hub, &inv_a, "same", "MemberIdentityKept").await;
    assert!(note.contains("still used"), "{note}");
    sink.wait_metric(
        "inventory_bridge_sink_cleanups_total",
        &[("result", "member-kept")],
        1.0,
    )
    .await;
    // Past the apiserver's token cache (about 10 s): the other token still authenticates because
    // the account really is still there.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        member_account(m1, &instance).await.unwrap().metadata.uid,
        account.metadata.uid,
        "the shared account is kept"
    );
    assert_eq!(whoami(&client_b).await.unwrap(), username(&instance));

    Api::<ClusterProfile>::namespaced(hub.clone(), &inv_b)
        .delete("same", &DeleteParams::default())
        .await
        .unwrap();
    wait_profile_gone(&hub, &inv_b, "same", Duration::from_secs(60)).await;
    wait_account_gone(m1, &instance).await;
    let rejected = wait_rejected(m1, &token_b, Duration::from_secs(45)).await;
    wait_rejected(m1, &token_a, Duration::from_secs(45)).await;
    println!(
        "MEASURED shared identity: the last profile's token refused {rejected:?} after its account was deleted"
    );
    sink.wait_metric(
        "inventory_bridge_sink_cleanups_total",
        &[("result", "complete")],
        1.0,
    )
    .await;
    sink.stop().await;
}

// ---- 5. instances are isolated ------------------------------------------------------------------

/// Two instances, each with its own inventory, writing into one target namespace, sweeping every
/// 10 s: after two sweeps of each (proven by an orphan of each instance swept, twice), both
/// registrations are untouched.
#[tokio::test]
async fn two_instances_sharing_a_target_namespace_never_sweep_each_other() {
    let _shared = quiet().read().await;
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let (m1, m2) = (&fleet.members[0], &fleet.members[1]);
    let inv_a = namespace(&hub, "inst-a").await;
    let inv_b = namespace(&hub, "inst-b").await;
    let target = harness::test_namespace(&hub, "shared-target")
        .await
        .unwrap();
    let (instance_a, instance_b) = (inv_a.clone(), inv_b.clone());
    capi_secret(&hub, &inv_a, "m1-kubeconfig", m1).await;
    capi_secret(&hub, &inv_b, "m2-kubeconfig", m2).await;
    let sink_a = start_sink(
        &hub,
        &[
            "--inventory-namespace",
            &inv_a,
            "--instance",
            &instance_a,
            "--resync",
            "10s",
        ],
        Some(&target),
        |_| {},
    )
    .await;
    let sink_b = start_sink(
        &hub,
        &[
            "--inventory-namespace",
            &inv_b,
            "--instance",
            &instance_b,
            "--resync",
            "10s",
        ],
        Some(&target),
        |_| {},
    )
    .await;
    create_profile(&hub, &inv_a, "of-a", capi_provider(m1, "m1-kubeconfig")).await;
    create_profile(&hub, &inv_b, "of-b", capi_provider(m2, "m2-kubeconfig")).await;
    let token_a = token_of(&published_kubeconfig(&hub, &target, "of-a").await);
    let token_b = token_of(&published_kubeconfig(&hub, &target, "of-b").await);
    let secrets: Api<Secret> = Api::namespaced(hub.clone(), &target);
    let clusters: Api<SveltosCluster> = Api::namespaced(hub.clone(), &target);
    let snapshot = || async {
        let mut seen = Vec::new();
        for name in ["of-a", "of-b"] {
            let secret = secrets.get(&secret_name(name)).await.unwrap();
            let cluster = clusters.get(name).await.unwrap();
            seen.push((
                secret.uid(),
                secret.resource_version(),
                cluster.uid(),
                cluster.resource_version(),
            ));
        }
        seen
    };
    let before = snapshot().await;

    let orphan = |instance: &str, n: u32| Secret {
        metadata: ObjectMeta {
            labels: Some(BTreeMap::from([
                (
                    "inventory-bridge.io/sink".to_string(),
                    "sveltos-sink".to_string(),
                ),
                (
                    "inventory-bridge.io/instance".to_string(),
                    instance.to_string(),
                ),
                (
                    "inventory-bridge.io/profile-uid".to_string(),
                    format!("00000000-0000-0000-0000-00000000000{n}"),
                ),
            ])),
            ..meta(&format!("orphan-{instance}-{n}"), Some(&target))
        },
        ..Secret::default()
    };
    let started = Instant::now();
    for round in 1..=2 {
        for instance in [&instance_a, &instance_b] {
            secrets
                .create(&PostParams::default(), &orphan(instance, round))
                .await
                .unwrap();
        }
        for instance in [&instance_a, &instance_b] {
            harness::wait_object_gone(
                &secrets,
                &format!("orphan-{instance}-{round}"),
                Duration::from_secs(40),
            )
            .await
            .unwrap();
        }
    }
    println!(
        "MEASURED instances: two sweeps of each instance (resync 10 s) observed within {:?}",
        started.elapsed()
    );
    assert_eq!(snapshot().await, before, "neither registration was touched");
    for (member, token, instance) in [(m1, &token_a, &instance_a), (m2, &token_b, &instance_b)] {
        let client = member.token_client(token).await.unwrap();
        assert_eq!(whoami(&client).await.unwrap(), username(instance));
    }
    for sink in [&sink_a, &sink_b] {
        sink.wait_metric(
            "inventory_bridge_sink_cleanups_total",
            &[("result", "orphan")],
            2.0,
        )
        .await;
        assert_eq!(
            sink.metric("inventory_bridge_sink_registrations", REGISTERED)
                .await,
            1.0
        );
    }
    sink_a.stop().await;
    sink_b.stop().await;
    for (inventory, instance) in [(&inv_a, &instance_a), (&inv_b, &instance_b)] {
        let sink = start_sink(
            &hub,
            &[
                "--inventory-namespace",
                inventory,
                "--instance",
                instance,
                "--release-finalizers",
            ],
            Some(&target),
            |_| {},
        )
        .await;
        sink.finished(Duration::from_secs(120)).await;
    }
}

// ---- 6. deletion never wedges; uninstall releases -----------------------------------------------

/// The bootstrap credential is gone when the profile is deleted: the member identity cannot be
/// revoked, and the profile is released after `--cleanup-timeout` with MemberCleanupAbandoned.
#[tokio::test]
async fn deletion_without_member_access_is_released_after_the_cleanup_timeout() {
    let _shared = quiet().read().await;
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let m1 = &fleet.members[0];
    let ns = namespace(&hub, "wedge").await;
    let instance = ns.clone();
    capi_secret(&hub, &ns, "m1-kubeconfig", m1).await;
    let sink = start_sink(
        &hub,
        &[
            "--inventory-namespace",
            &ns,
            "--instance",
            &instance,
            "--cleanup-timeout",
            "5s",
        ],
        None,
        |_| {},
    )
    .await;
    create_profile(&hub, &ns, "stranded", capi_provider(m1, "m1-kubeconfig")).await;
    published_kubeconfig(&hub, &ns, "stranded").await;
    Api::<Secret>::namespaced(hub.clone(), &ns)
        .delete("m1-kubeconfig", &DeleteParams::default())
        .await
        .unwrap();
    let deleted_at = Instant::now();
    Api::<ClusterProfile>::namespaced(hub.clone(), &ns)
        .delete("stranded", &DeleteParams::default())
        .await
        .unwrap();
    wait_profile_gone(&hub, &ns, "stranded", Duration::from_secs(60)).await;
    let released_in = deleted_at.elapsed();
    println!(
        "MEASURED wedge: profile without member access released {released_in:?} after deletion (cleanup timeout 5 s)"
    );
    assert!(
        released_in >= Duration::from_secs(4),
        "released before the timeout: was revocation even tried? {released_in:?}"
    );
    assert!(
        released_in < Duration::from_secs(30),
        "released long after the 5 s timeout: {released_in:?}"
    );
    let note = wait_event(&hub, &ns, "stranded", "MemberCleanupAbandoned").await;
    assert!(note.contains("gave up"), "{note}");
    sink.wait_metric(
        "inventory_bridge_sink_cleanups_total",
        &[("result", "member-abandoned")],
        1.0,
    )
    .await;
    assert!(
        Api::<Secret>::namespaced(hub.clone(), &ns)
            .get_opt(&secret_name("stranded"))
            .await
            .unwrap()
            .is_none(),
        "hub objects deleted"
    );
    assert!(
        Api::<SveltosCluster>::namespaced(hub.clone(), &ns)
            .get_opt("stranded")
            .await
            .unwrap()
            .is_none()
    );
    // What was abandoned really is still on the member (reported, not hidden): clean it up.
    assert!(member_account(m1, &instance).await.is_some());
    sink.stop().await;
    let admin = m1.client().await.unwrap();
    let _ = Api::<ServiceAccount>::namespaced(admin.clone(), "inventory-bridge")
        .delete(&account_name(&instance), &DeleteParams::default())
        .await;
    let _ = Api::<ClusterRoleBinding>::all(admin.clone())
        .delete(&rbac_name(&instance), &DeleteParams::default())
        .await;
    let _ = Api::<ClusterRole>::all(admin)
        .delete(&rbac_name(&instance), &DeleteParams::default())
        .await;
}

/// `--release-finalizers`: a sink that registered two profiles (on both members) is stopped;
/// run again in release mode it returns on its own, having revoked both identities, deleted its
/// hub objects and removed its finalizer from both profiles (which stay).
#[tokio::test]
async fn release_finalizers_revokes_and_releases_everything_then_exits() {
    let _shared = quiet().read().await;
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let (m1, m2) = (&fleet.members[0], &fleet.members[1]);
    let ns = namespace(&hub, "uninstall").await;
    let instance = ns.clone();
    capi_secret(&hub, &ns, "m1-kubeconfig", m1).await;
    capi_secret(&hub, &ns, "m2-kubeconfig", m2).await;
    let argv = [
        "--inventory-namespace",
        ns.as_str(),
        "--instance",
        instance.as_str(),
    ];
    let sink = start_sink(&hub, &argv, None, |_| {}).await;
    create_profile(&hub, &ns, "one", capi_provider(m1, "m1-kubeconfig")).await;
    create_profile(&hub, &ns, "two", capi_provider(m2, "m2-kubeconfig")).await;
    let token_one = token_of(&published_kubeconfig(&hub, &ns, "one").await);
    let token_two = token_of(&published_kubeconfig(&hub, &ns, "two").await);
    let profiles: Api<ClusterProfile> = Api::namespaced(hub.clone(), &ns);
    for name in ["one", "two"] {
        let profile = profiles.get(name).await.unwrap();
        assert!(profile.finalizers().contains(&finalizer(&instance)));
    }
    sink.stop().await;

    let mut release_argv = argv.to_vec();
    release_argv.push("--release-finalizers");
    let releasing = start_sink(&hub, &release_argv, None, |_| {}).await;
    let took = releasing.finished(Duration::from_secs(120)).await;
    println!(
        "MEASURED uninstall: --release-finalizers released 2 profiles and returned in {took:?}"
    );
    for name in ["one", "two"] {
        let profile = profiles.get(name).await.unwrap();
        assert!(
            !profile.finalizers().contains(&finalizer(&instance)),
            "{name}: our finalizer is gone"
        );
        assert!(
            profile.metadata.deletion_timestamp.is_none(),
            "the profile itself stays"
        );
    }
    let ours = ListParams::default().labels(&format!("inventory-bridge.io/instance={instance}"));
    assert!(
        Api::<Secret>::namespaced(hub.clone(), &ns)
            .list(&ours)
            .await
            .unwrap()
            .items
            .is_empty(),
        "no credential Secret left"
    );
    assert!(
        Api::<SveltosCluster>::namespaced(hub.clone(), &ns)
            .list(&ours)
            .await
            .unwrap()
            .items
            .is_empty(),
        "no SveltosCluster left"
    );
    for member in [m1, m2] {
        assert!(
            member_account(member, &instance).await.is_none(),
            "account revoked on {}",
            member.name()
        );
        let admin = member.client().await.unwrap();
        assert!(
            Api::<ClusterRoleBinding>::all(admin.clone())
                .get_opt(&rbac_name(&instance))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            Api::<ClusterRole>::all(admin)
                .get_opt(&rbac_name(&instance))
                .await
                .unwrap()
                .is_none()
        );
    }
    wait_rejected(m1, &token_one, Duration::from_secs(45)).await;
    wait_rejected(m2, &token_two, Duration::from_secs(45)).await;
}

/// A hub-side failure: the sink may not delete SveltosClusters (403, as with a narrowed Role).
/// Deleting a profile revokes the member identity, cannot delete the SveltosCluster, and is
/// released after `--cleanup-timeout` with HubCleanupAbandoned instead of wedging.
#[tokio::test]
async fn a_hub_side_failure_is_released_after_the_cleanup_timeout() {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
    let _shared = quiet().read().await;
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let m1 = &fleet.members[0];
    let ns = namespace(&hub, "hub403").await;
    let instance = ns.clone();
    capi_secret(&hub, &ns, "m1-kubeconfig", m1).await;
    // The sink's hub identity: everything it needs in its inventory, except deleting
    // SveltosClusters.
    let rule = |group: &str, resource: &str, verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(vec![resource.to_string()]),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    };
    let all = [
        "get", "list", "watch", "create", "patch", "update", "delete",
    ];
    let no_delete = ["get", "list", "watch", "create", "patch", "update"];
    Api::<Role>::namespaced(hub.clone(), &ns)
        .create(
            &PostParams::default(),
            &Role {
                metadata: meta("sink", Some(&ns)),
                rules: Some(vec![
                    rule("multicluster.x-k8s.io", "clusterprofiles", &all),
                    rule("", "secrets", &all),
                    rule("lib.projectsveltos.io", "sveltosclusters", &no_delete),
                    rule("events.k8s.io", "events", &all),
                    rule("", "events", &all),
                ]),
            },
        )
        .await
        .unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(hub.clone(), &ns);
    accounts
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: meta("sink", Some(&ns)),
                ..ServiceAccount::default()
            },
        )
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(hub.clone(), &ns)
        .create(
            &PostParams::default(),
            &RoleBinding {
                metadata: meta("sink", Some(&ns)),
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "Role".into(),
                    name: "sink".into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: "sink".into(),
                    namespace: Some(ns.clone()),
                    ..Subject::default()
                }]),
            },
        )
        .await
        .unwrap();
    let minted: TokenRequest = accounts
        .create_subresource(
            "token",
            "sink",
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
    let sink_hub = fleet
        .hub
        .token_client(&minted.status.unwrap().token.unwrap())
        .await
        .unwrap();
    let sink = start_sink(
        &sink_hub,
        &[
            "--inventory-namespace",
            &ns,
            "--instance",
            &instance,
            "--cleanup-timeout",
            "5s",
        ],
        None,
        |_| {},
    )
    .await;
    create_profile(&hub, &ns, "blocked", capi_provider(m1, "m1-kubeconfig")).await;
    let token = token_of(&published_kubeconfig(&hub, &ns, "blocked").await);
    let deleted_at = Instant::now();
    Api::<ClusterProfile>::namespaced(hub.clone(), &ns)
        .delete("blocked", &DeleteParams::default())
        .await
        .unwrap();
    wait_profile_gone(&hub, &ns, "blocked", Duration::from_secs(60)).await;
    let released_in = deleted_at.elapsed();
    println!(
        "MEASURED hub-side failure (403 deleting the SveltosCluster): profile released {released_in:?} after deletion (cleanup timeout 5 s)"
    );
    assert!(
        released_in >= Duration::from_secs(4),
        "released before the timeout: {released_in:?}"
    );
    assert!(
        released_in < Duration::from_secs(30),
        "released long after the 5 s timeout: {released_in:?}"
    );
    let note = wait_event(&hub, &ns, "blocked", "HubCleanupAbandoned").await;
    assert!(note.contains("gave up"), "{note}");
    sink.wait_metric(
        "inventory_bridge_sink_cleanups_total",
        &[("result", "hub-abandoned")],
        1.0,
    )
    .await;
    // The member side was not blocked by the hub: revoked.
    wait_account_gone(m1, &instance).await;
    wait_rejected(m1, &token, Duration::from_secs(45)).await;
    // What could not be deleted is still there (reported, left to the sweep): clean it up.
    let clusters: Api<SveltosCluster> = Api::namespaced(hub.clone(), &ns);
    assert!(clusters.get_opt("blocked").await.unwrap().is_some());
    sink.stop().await;
    clusters
        .delete("blocked", &DeleteParams::default())
        .await
        .unwrap();
}

// ---- 5. the member identity is checked once per member, and put back when it went missing ----

/// A fresh inventory (its name is also the sink's instance) served by an in-process sveltos-sink
/// that has registered one profile, `first`, of `member`.
async fn sink_with_one_registration(
    hub: &Client,
    prefix: &str,
    member: &ControlPlane,
) -> (String, InProcessSink) {
    let ns = namespace(hub, prefix).await;
    capi_secret(hub, &ns, "m1-kubeconfig", member).await;
    let sink = start_sink(
        hub,
        &["--inventory-namespace", &ns, "--instance", &ns],
        None,
        |_| {},
    )
    .await;
    create_profile(hub, &ns, "first", capi_provider(member, "m1-kubeconfig")).await;
    published_kubeconfig(hub, &ns, "first").await;
    (ns, sink)
}

/// The sink checks its member identity (namespace, ServiceAccount, RBAC) once per member rather
/// than once per profile. When someone deletes the ServiceAccount behind its back, the next mint
/// for that member must not fail on the remembered identity: its TokenRequest fails, the sink
/// checks again, recreates the account and records the uid the new token is really bound to.
#[tokio::test]
async fn a_member_account_deleted_behind_the_sinks_back_is_recreated_at_the_next_mint() {
    let _shared = quiet().read().await;
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let m1 = &fleet.members[0];
    let (ns, sink) = sink_with_one_registration(&hub, "gone-sa", m1).await;
    let instance = ns.clone();
    let before = member_account(m1, &instance).await.expect("the account");

    // Someone deletes the account on the member (every token of it stops working).
    Api::<ServiceAccount>::namespaced(m1.client().await.unwrap(), "inventory-bridge")
        .delete(&account_name(&instance), &DeleteParams::default())
        .await
        .unwrap();
    wait_account_gone(m1, &instance).await;

    // A second profile of the same member, within the sink's re-check period.
    create_profile(&hub, &ns, "second", capi_provider(m1, "m1-kubeconfig")).await;
    let kubeconfig = published_kubeconfig(&hub, &ns, "second").await;
    let after = member_account(m1, &instance)
        .await
        .expect("the account is back");
    assert_ne!(
        after.metadata.uid, before.metadata.uid,
        "a new account, not the deleted one"
    );
    assert!(
        after
            .labels()
            .get("app.kubernetes.io/managed-by")
            .is_some_and(|v| v == "inventory-bridge"),
        "recreated with the ownership mark"
    );
    let token_client = m1.token_client(&token_of(&kubeconfig)).await.unwrap();
    assert_eq!(whoami(&token_client).await.unwrap(), username(&instance));
    // Registered at the first attempt: the stale identity cost no failure, Event or retry.
    let reasons: Vec<String> = events_about(&hub, &ns, "second")
        .await
        .into_iter()
        .map(|(reason, _)| reason)
        .collect();
    assert_eq!(reasons, ["Registered"], "{reasons:?}");
    // The record names the account the token is bound to (revocation deletes exactly it).
    let secret = Api::<Secret>::namespaced(hub.clone(), &ns)
        .get(&secret_name("second"))
        .await
        .unwrap();
    let record: Value = serde_json::from_str(
        secret
            .annotations()
            .get("inventory-bridge.io/registration")
            .expect("the registration record"),
    )
    .unwrap();
    assert_eq!(
        record["identity"]["serviceAccountUid"].as_str(),
        after.metadata.uid.as_deref(),
        "{record}"
    );
    sink.stop().await;
    release(&hub, &ns, &instance).await;
}

/// A hub Secret of the name the sink would publish, created by someone else (no ownership
/// label): the sink reads its published objects from a watch of its own labelled objects plus the
/// names of all objects there, so it must see this one is taken. The profile gets a NameConflict
/// Event; the Secret keeps its content, labels and version.
#[tokio::test]
async fn someone_elses_hub_secret_of_our_name_is_a_name_conflict_never_overwritten() {
    let _shared = quiet().read().await;
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let m1 = &fleet.members[0];
    // First a registration, so the watched views are listed before the foreign object appears.
    let (ns, sink) = sink_with_one_registration(&hub, "hub-taken", m1).await;
    let instance = ns.clone();
    let secrets: Api<Secret> = Api::namespaced(hub.clone(), &ns);
    let theirs = secrets
        .create(
            &PostParams {
                field_manager: Some("someone".into()),
                ..PostParams::default()
            },
            &Secret {
                metadata: meta(&secret_name("taken"), Some(&ns)),
                string_data: Some(BTreeMap::from([(
                    "kubeconfig".to_string(),
                    "not the sink's".to_string(),
                )])),
                ..Secret::default()
            },
        )
        .await
        .unwrap();
    create_profile(&hub, &ns, "taken", capi_provider(m1, "m1-kubeconfig")).await;
    let note = wait_event(&hub, &ns, "taken", "NameConflict").await;
    assert!(note.contains(&secret_name("taken")), "{note}");
    let now = secrets.get(&secret_name("taken")).await.unwrap();
    assert_eq!(
        now.metadata.resource_version, theirs.metadata.resource_version,
        "never written"
    );
    assert_eq!(now.metadata.labels, theirs.metadata.labels);
    assert_eq!(
        kubeconfig_of(&now).as_deref(),
        Some("not the sink's"),
        "content untouched"
    );
    sink.stop().await;
    release(&hub, &ns, &instance).await;
}
