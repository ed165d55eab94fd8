//! The real control-plane harness for inventory-bridge's tests.
//!
//! Starts real etcd + kube-apiserver processes (built from the pinned Kubernetes release by
//! `tests/controlplane/build.sh`) on loopback: a hub and any number of members, each with its own
//! CA, admin identity, RBAC and ServiceAccount token signing. Installs foreign CRDs from pinned
//! upstream Go modules, hands out clients and kubeconfigs, gives each test its own namespace, and
//! kills every process it started, even when a test panics or the test binary dies.
//!
//! No fake or mock API server exists here: what a test talks to is Kubernetes itself.

// Test support: a broken fixture should fail the test loudly, so panicking helpers are fine here.
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod adapter_process;
pub mod apiserver_metrics;
pub mod bench;
pub mod binary;
pub mod controlplane;
pub mod crds;
pub mod estate;
pub mod fleet;
pub mod helm;
pub mod pki;
pub mod process;
pub mod sinks;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};

pub use controlplane::{ControlPlane, ControlPlaneOptions, controllers};
pub use crds::{ForeignCrd, install_crd, install_crd_as, install_crds};
pub use fleet::{Fleet, shared_fleet};

/// Errors of test support.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Result of test support.
pub type Result<T, E = BoxError> = std::result::Result<T, E>;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Wait up to `timeout` for an Event among `events` about the object named `object`, with
/// `reason` and a note containing `note`.
pub async fn wait_event_about(
    events: &Api<k8s_openapi::api::events::v1::Event>,
    object: &str,
    reason: &str,
    note: &str,
    timeout: Duration,
) -> Result<k8s_openapi::api::events::v1::Event> {
    wait_for(
        timeout,
        &format!("{reason} Event on {object} saying {note:?}"),
        || async {
            Ok(events
                .list(&kube::api::ListParams::default())
                .await?
                .items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(object)
                        && e.note.as_deref().unwrap_or_default().contains(note)
                }))
        },
    )
    .await
}

/// Poll `probe` until it yields `Some`, or fail after `timeout` naming `what`. Probe errors are
/// retried (the last one is reported).
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match probe().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(err) => last_error = Some(err.to_string()),
        }
        if Instant::now() > deadline {
            return Err(match last_error {
                Some(err) => format!("timed out after {timeout:?} waiting for {what}: {err}"),
                None => format!("timed out after {timeout:?} waiting for {what}"),
            }
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until `api` has `name` and `check` accepts it; returns it.
pub async fn wait_object<K>(
    api: &kube::Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&K) -> bool,
) -> Result<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let check = &check;
    wait_for(timeout, what, || {
        let api = api.clone();
        async move { Ok(api.get_opt(name).await?.filter(check)) }
    })
    .await
}

/// Wait until `api` no longer has `name`.
pub async fn wait_object_gone<K>(api: &kube::Api<K>, name: &str, timeout: Duration) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    wait_for(timeout, &format!("{name} deleted"), || {
        let api = api.clone();
        async move { Ok(api.get_opt(name).await?.is_none().then_some(())) }
    })
    .await
}

/// What sveltos-sink published for `profile` in `namespace` (waiting for it): the kubeconfig of
/// its Secret and the user that kubeconfig authenticates as.
pub async fn sveltos_registration(
    hub: &kube::Client,
    namespace: &str,
    profile: &str,
) -> Result<(String, String)> {
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(hub.clone(), namespace);
    let secret = wait_object(
        &secrets,
        &format!("{profile}-sveltos-kubeconfig"),
        "sveltos kubeconfig Secret",
        Duration::from_secs(60),
        |_| true,
    )
    .await?;
    let kubeconfig = secret
        .data
        .and_then(|data| data.get("kubeconfig").map(|value| value.0.clone()))
        .ok_or("the Secret has no kubeconfig key")?;
    let kubeconfig = String::from_utf8(kubeconfig)?;
    let client = controlplane::client_from_kubeconfig_yaml(&kubeconfig).await?;
    let review = kube::Api::<k8s_openapi::api::authentication::v1::SelfSubjectReview>::all(client)
        .create(&PostParams::default(), &Default::default())
        .await?;
    let username = review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .unwrap_or_default();
    Ok((kubeconfig, username))
}

/// Namespace of sveltos-sink's default member ServiceAccount (stated here, not taken from the
/// engine, so a changed default fails the tests).
pub const SVELTOS_MEMBER_NAMESPACE: &str = "inventory-bridge";
/// sveltos-sink's default member ServiceAccount (`inventory-bridge-<instance>`, default instance
/// `sveltos-sink`).
pub const SVELTOS_MEMBER_SERVICE_ACCOUNT: &str = "inventory-bridge-sveltos-sink";

/// The username the member gives tokens of sveltos-sink's default identity.
pub fn sveltos_member_username() -> String {
    format!("system:serviceaccount:{SVELTOS_MEMBER_NAMESPACE}:{SVELTOS_MEMBER_SERVICE_ACCOUNT}")
}

/// Wait until sveltos-sink's registration of `profile` is gone from the hub and its default
/// member ServiceAccount (`inventory-bridge/inventory-bridge-sveltos-sink`) is gone from `member`.
pub async fn wait_sveltos_registration_revoked(
    hub: &kube::Client,
    namespace: &str,
    profile: &str,
    member: &ControlPlane,
) -> Result<()> {
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(hub.clone(), namespace);
    let accounts: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
        kube::Api::namespaced(member.client().await?, SVELTOS_MEMBER_NAMESPACE);
    wait_object_gone(
        &accounts,
        SVELTOS_MEMBER_SERVICE_ACCOUNT,
        Duration::from_secs(60),
    )
    .await?;
    wait_object_gone(
        &secrets,
        &format!("{profile}-sveltos-kubeconfig"),
        Duration::from_secs(60),
    )
    .await
}

/// Runtime flags for running an adapter in-process in a test: no leader election (one replica),
/// HTTP on the listener the test binds, text logs filtered by `log_filter`.
pub fn in_process_runtime_args(identity: &str, log_filter: &str) -> adapters::runtime::RuntimeArgs {
    adapters::runtime::RuntimeArgs {
        kubeconfig: None,
        http_address: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        log_format: adapters::runtime::LogFormat::Text,
        log_filter: log_filter.to_string(),
        leader_election: false,
        lease_name: None,
        lease_namespace: "default".to_string(),
        lease_duration_seconds: 15,
        liveness_stall_seconds: 300,
        identity: Some(identity.to_string()),
    }
}

/// A plain HTTP/1.0 GET against an adapter's HTTP port: status code and body.
pub async fn http_get(address: std::net::SocketAddr, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// An adapter running in-process.
pub struct InProcess {
    /// Cancelling it stops the adapter as SIGTERM would.
    pub stop: tokio_util::sync::CancellationToken,
    /// The adapter's run.
    pub task: tokio::task::JoinHandle<adapters::Result<()>>,
}

impl InProcess {
    /// Stop it and require a clean stop.
    pub async fn shutdown(self) -> Result<()> {
        self.stop.cancel();
        self.task.await??;
        Ok(())
    }
}

/// Run `sink` with `options` in-process against `hub`, with the real runtime.
pub async fn run_sink_in_process<S: adapters::sink::Sink>(
    hub: kube::Client,
    sink: S,
    options: adapters::sink::SinkOptions,
) -> Result<InProcess> {
    let mut metrics = adapters::runtime::Metrics::new(S::NAME);
    let sink_metrics = adapters::sink::SinkMetrics::register(metrics.registry_mut());
    let runtime = adapters::runtime::Runtime::new(
        S::NAME,
        in_process_runtime_args("in-process", "info"),
        hub,
        metrics,
    );
    let stop = runtime.shutdown_token();
    let sink = std::sync::Arc::new(sink);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let task = tokio::spawn(runtime.run_with_listener(listener, move |context| {
        adapters::sink::run(sink.clone(), options.clone(), sink_metrics.clone(), context)
    }));
    Ok(InProcess { stop, task })
}

/// Run sveltos-sink in-process against `hub`, configured by its command line `argv` (without the
/// program name) exactly as its binary would be.
pub async fn run_sveltos_sink(hub: kube::Client, argv: &[&str]) -> Result<InProcess> {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        sink: adapters::sink::SinkArgs,
    }
    let cli = Cli::try_parse_from(std::iter::once("sveltos-sink").chain(argv.iter().copied()))?;
    let sink = sveltos_sink::SveltosSink {
        property_labels: Vec::new(),
    };
    let options = cli.sink.resolve_for(&sink, None)?;
    run_sink_in_process(hub, sink, options).await
}

/// Run argocd-sink in-process against `hub`, configured by its command line `argv`.
pub async fn run_argocd_sink(hub: kube::Client, argv: &[&str]) -> Result<InProcess> {
    let (sink, options) = sinks::argocd_from_args(argv);
    run_sink_in_process(hub, sink, options).await
}

/// Run flux-sink in-process against `hub`, configured by its command line `argv`.
pub async fn run_flux_sink(hub: kube::Client, argv: &[&str]) -> Result<InProcess> {
    let (sink, options) = sinks::flux_from_args(argv);
    run_sink_in_process(hub, sink, options).await
}

/// What argocd-sink and flux-sink published for `profile` of `inventory` with their default
/// names (Argo CD Secret in `argocd_namespace`, Flux Secret in `flux_namespace`), waiting for
/// both: the users their credentials authenticate as on the member, and the tokens.
pub async fn argocd_and_flux_registrations(
    hub: &kube::Client,
    inventory: &str,
    profile: &str,
    argocd_namespace: &str,
    flux_namespace: &str,
) -> Result<([String; 2], [String; 2])> {
    let argo = sinks::argo_cluster(
        hub,
        argocd_namespace,
        &format!("cluster-{inventory}-{profile}"),
        |_| true,
    )
    .await;
    let flux = sinks::flux_kubeconfig(
        hub,
        flux_namespace,
        &format!("{profile}-kubeconfig"),
        |_| true,
    )
    .await;
    let users = [
        sinks::whoami(&argo.client().await?).await?,
        sinks::whoami(&flux.client().await?).await?,
    ];
    Ok((users, [argo.config.bearer_token, flux.token]))
}

/// Wait until both registrations of `profile` are gone from the hub and both default member
/// identities are gone from `member`.
pub async fn wait_argocd_and_flux_revoked(
    hub: &kube::Client,
    inventory: &str,
    profile: &str,
    argocd_namespace: &str,
    flux_namespace: &str,
    member: &ControlPlane,
) -> Result<()> {
    let accounts: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
        kube::Api::namespaced(member.client().await?, "inventory-bridge");
    for account in ["inventory-bridge-argocd-sink", "inventory-bridge-flux-sink"] {
        wait_object_gone(&accounts, account, Duration::from_secs(60)).await?;
    }
    sinks::wait_secret_gone(
        hub,
        argocd_namespace,
        &format!("cluster-{inventory}-{profile}"),
    )
    .await;
    sinks::wait_secret_gone(hub, flux_namespace, &format!("{profile}-kubeconfig")).await;
    Ok(())
}

/// Create namespace `name` (already there is fine): e.g. the `argocd` or `flux-system` namespace a
/// consumer's installation would have created.
pub async fn ensure_namespace(client: &kube::Client, name: &str) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match namespaces.create(&PostParams::default(), &namespace).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Create a namespace of its own for one test: `<prefix>-<unique suffix>`.
pub async fn test_namespace(client: &kube::Client, prefix: &str) -> Result<String> {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let name = format!("{prefix}-{n}-{:x}", nanos % 0xfffff);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await?;
    Ok(name)
}
