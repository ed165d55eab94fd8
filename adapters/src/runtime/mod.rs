//! What every adapter binary runs around its controllers: flags with environment fallbacks, logs,
//! the HTTP endpoints (`/metrics`, `/healthz`, `/readyz`), leader election on a Lease, graceful
//! shutdown, an Event recorder and the apply helper. One place owns all of it, so the adapters stay
//! thin (a `main` that parses its flags and hands its controllers to [`Runtime::run`]).

mod events;
mod http;
mod leadership;
mod metrics;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use events::EventRecorder;
pub use leadership::{NotLeader, Term, TermEnd};
pub use metrics::{Metrics, ReconcileResult};

use crate::apply::Applier;
use crate::error::{Error, Result};

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Flags every adapter shares. Each flag falls back to the environment variable named beside it.
#[derive(Clone, Debug, clap::Args)]
pub struct RuntimeArgs {
    /// Kubeconfig of the hub; without it, the in-cluster config or the default kubeconfig.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Address serving /metrics, /healthz and /readyz.
    #[arg(long, env = "IB_HTTP_ADDRESS", default_value = "0.0.0.0:8080")]
    pub http_address: SocketAddr,

    /// Log format.
    #[arg(long, env = "IB_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log filter (tracing-subscriber EnvFilter syntax, e.g. `info,adapters=debug`).
    #[arg(long, env = "IB_LOG_FILTER", default_value = "info")]
    pub log_filter: String,

    /// Elect a leader through a Lease so several replicas can run; only the leader writes.
    #[arg(long, env = "IB_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the leader-election Lease (default: the adapter name).
    #[arg(long, env = "IB_LEASE_NAME")]
    pub lease_name: Option<String>,

    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,

    /// Seconds a leader's lease is valid without renewal.
    #[arg(long, env = "IB_LEASE_DURATION_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub lease_duration_seconds: u64,

    /// /healthz fails once watches have failed this many seconds in a row without progress (or
    /// at once when a controller stopped on its own); a quiet watch is always healthy.
    #[arg(long, env = "IB_LIVENESS_STALL_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub liveness_stall_seconds: u64,

    /// This replica's identity in the Lease (default: the pod name, else host name and process id).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
}

/// Install the global tracing subscriber. Safe to call more than once (later calls are no-ops),
/// which in-process tests rely on.
pub fn init_tracing(format: LogFormat, filter: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|err| Error::Config(format!("--log-filter: {err}")))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // An already installed subscriber is fine (tests, or a second runtime in one process).
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    Ok(())
}

/// A kube client from `--kubeconfig`, else the in-cluster or default configuration.
pub async fn client_from(kubeconfig: Option<&std::path::Path>) -> Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|err| Error::ClientConfig(format!("reading {}: {err}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|err| Error::ClientConfig(err.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|err| Error::ClientConfig(err.to_string()))?,
    };
    Client::try_from(config).map_err(|err| Error::ClientConfig(err.to_string()))
}

/// Readiness: a leader is ready once its controllers report their watches synced; a standby
/// replica (not leader, no watches) is ready as it stands.
#[derive(Clone, Debug)]
pub struct Readiness {
    leading: Arc<AtomicBool>,
    synced: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl Readiness {
    fn new(metrics: Arc<Metrics>) -> Self {
        let readiness = Self {
            leading: Arc::new(AtomicBool::new(false)),
            synced: Arc::new(AtomicBool::new(false)),
            metrics,
        };
        readiness.publish();
        readiness
    }

    /// Controllers call this once their caches hold a full list.
    pub fn mark_synced(&self) {
        self.synced.store(true, Ordering::SeqCst);
        self.publish();
    }

    /// Whether `/readyz` answers OK: a standby, or a leader whose caches hold a full list; and
    /// in both cases watches that work (during a hub outage nobody is ready, so it shows).
    pub fn is_ready(&self) -> bool {
        self.leader_ready() && !self.metrics.watches_failing()
    }

    fn leader_ready(&self) -> bool {
        !self.leading.load(Ordering::SeqCst) || self.synced.load(Ordering::SeqCst)
    }

    fn set_leading(&self, leading: bool) {
        self.synced.store(false, Ordering::SeqCst);
        self.leading.store(leading, Ordering::SeqCst);
        self.publish();
    }

    fn publish(&self) {
        self.metrics.set_ready(self.leader_ready());
    }
}

/// What the adapter's controllers get while this replica leads.
#[derive(Clone)]
pub struct LeaderContext {
    /// Client of the hub.
    pub client: Client,
    /// Shared metrics.
    pub metrics: Arc<Metrics>,
    /// Event recorder (Events on the objects concerned).
    pub events: EventRecorder,
    /// Server-side apply helper writing as the adapter.
    pub applier: Applier,
    /// Readiness to report once watches are synced.
    pub readiness: Readiness,
    /// Fires when leadership is lost or the process shuts down: stop writing and return.
    pub stop: CancellationToken,
    /// This leadership term: `client` refuses writes once it is over, whatever the tasks do.
    pub term: Term,
}

/// The adapter runtime: one per process.
pub struct Runtime {
    name: &'static str,
    args: RuntimeArgs,
    client: Client,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

impl Runtime {
    /// A runtime for adapter `name` (also its field manager, Event reporter and default Lease).
    pub fn new(name: &'static str, args: RuntimeArgs, client: Client, metrics: Metrics) -> Self {
        Self {
            name,
            args,
            client,
            metrics: Arc::new(metrics),
            shutdown: CancellationToken::new(),
        }
    }

    /// The token that stops everything; cancelled on SIGTERM/SIGINT by [`Runtime::run`].
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serve HTTP, elect a leader, run `controllers` while leading, and stop cleanly on SIGTERM or
    /// when [`Runtime::shutdown_token`] is cancelled. Returns when everything has stopped and the
    /// lease has been released.
    pub async fn run<F, Fut>(self, controllers: F) -> Result<()>
    where
        F: Fn(LeaderContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let listener = TcpListener::bind(self.args.http_address).await?;
        self.run_with_listener(listener, controllers).await
    }

    /// As [`Runtime::run`], on an already bound listener (tests bind port 0).
    pub async fn run_with_listener<F, Fut>(
        self,
        listener: TcpListener,
        controllers: F,
    ) -> Result<()>
    where
        F: Fn(LeaderContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let readiness = Readiness::new(self.metrics.clone());
        self.metrics
            .set_liveness_stall(Duration::from_secs(self.args.liveness_stall_seconds));
        let signals = spawn_signal_handler(self.shutdown.clone());
        let http_stop = CancellationToken::new();
        let http = tokio::spawn(http::serve(
            listener,
            self.metrics.clone(),
            readiness.clone(),
            http_stop.clone(),
        ));
        let result = if self.args.leader_election {
            self.lead_when_elected(&readiness, &controllers).await
        } else {
            readiness.set_leading(true);
            self.metrics.set_leader(true);
            let term = Term::unbounded(self.shutdown.child_token());
            controllers(self.leader_context(&readiness, term)).await
        };
        self.metrics.set_leader(false);
        http_stop.cancel();
        if let Ok(Err(err)) = http.await {
            warn!(error = %err, "metrics server ended with an error");
        }
        signals.abort();
        result
    }

    /// What the controllers of one term get: every hub write goes through the term's gate.
    fn leader_context(&self, readiness: &Readiness, term: Term) -> LeaderContext {
        let client = leadership::gated_client(self.client.clone(), term.clone());
        LeaderContext {
            events: EventRecorder::new(client.clone(), self.name, self.identity()),
            client,
            metrics: self.metrics.clone(),
            applier: Applier::new(self.name),
            readiness: readiness.clone(),
            stop: term.stop_token(),
            term,
        }
    }

    fn identity(&self) -> String {
        self.args.identity.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_string());
            format!("{host}-{}", std::process::id())
        })
    }

    /// Wait for the lease, run the controllers while it is held, and stop on shutdown or on loss.
    ///
    /// On loss the process does not return to standby: it stops writing at once (the term's gate
    /// refuses hub writes from the instant the lease may have passed to another replica, and the
    /// controllers' stop token is cancelled), gives the controllers a moment to return, and then
    /// ends with an error so the Pod restarts. A fresh process is the only way to be sure that no
    /// task of the old term (a spawned reconcile, an exec plugin, a member write) outlives it, and
    /// the lease manager, which may still believe it holds the lease after a pause or a partition,
    /// is discarded with it. client-go's leader election and kube-controller-manager do the same.
    async fn lead_when_elected<F, Fut>(&self, readiness: &Readiness, controllers: &F) -> Result<()>
    where
        F: Fn(LeaderContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let duration = self.args.lease_duration_seconds;
        let lease_name = self
            .args
            .lease_name
            .clone()
            .unwrap_or_else(|| self.name.to_string());
        let manager = LeaseManagerBuilder::new(self.client.clone(), lease_name.clone())
            .with_namespace(self.args.lease_namespace.clone())
            .with_identity(self.identity())
            .with_duration(duration)
            // Renew halfway to expiry: the term's deadline (renewal + duration - margin) then
            // always has half a lease of slack for the renewal and its watch event to arrive.
            .with_grace((duration / 2).max(1))
            .with_field_manager(self.name)
            .build()
            .await?;
        let (mut leading, lease_task) = manager.watch().await;
        info!(lease = %lease_name, namespace = %self.args.lease_namespace, "waiting for leadership");
        loop {
            if *leading.borrow_and_update() {
                break;
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => {
                    drop(leading);
                    release(lease_task).await;
                    return Ok(());
                }
                changed = leading.changed() => {
                    if changed.is_err() {
                        return Err(Error::Config("the lease manager stopped".into()));
                    }
                }
            }
        }
        info!(lease = %lease_name, "became leader");
        let lease_duration = Duration::from_secs(duration);
        // The lease was just acquired (its renewTime is a moment ago); the guard moves the
        // deadline with every renewal it sees.
        let deadline = k8s_openapi::jiff::Timestamp::now()
            .as_millisecond()
            .saturating_add(i64::try_from(lease_duration.as_millis()).unwrap_or(i64::MAX))
            .saturating_sub(
                2 * i64::try_from(leadership::margin(lease_duration).as_millis()).unwrap_or(0),
            );
        let term = Term::until(self.shutdown.child_token(), deadline);
        let mut guard = tokio::spawn(leadership::guard_term(
            Api::<Lease>::namespaced(self.client.clone(), &self.args.lease_namespace),
            lease_name.clone(),
            self.identity(),
            lease_duration,
            term.clone(),
        ));
        self.metrics.set_leader(true);
        readiness.set_leading(true);
        let mut work = tokio::spawn(controllers(self.leader_context(readiness, term.clone())));
        let joined = |joined: std::result::Result<Result<()>, tokio::task::JoinError>| {
            joined
                .map_err(|err| Error::Config(format!("controllers panicked: {err}")))
                .and_then(|r| r)
        };
        let mut finished: Option<Result<()>> = None;
        let lost = loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break None,
                changed = leading.changed() => {
                    if changed.is_err() || !*leading.borrow_and_update() {
                        break Some(TermEnd::OtherHolder);
                    }
                }
                ended = &mut guard => {
                    match ended {
                        Ok(TermEnd::Stopped) => break None,
                        Ok(reason) => break Some(reason),
                        Err(_) => break Some(TermEnd::NotRenewed),
                    }
                }
                result = &mut work => {
                    finished = Some(joined(result));
                    if term.stop_token().is_cancelled() && !self.shutdown.is_cancelled() {
                        // The guard ended the term and the controllers obeyed first.
                        break Some((&mut guard).await.unwrap_or(TermEnd::NotRenewed));
                    }
                    // Controllers returned on their own: the process ends with their result.
                    break None;
                }
            }
        };
        // Stop writing now (the gate closes with the term), then let the controllers return.
        term.end();
        guard.abort();
        self.metrics.set_leader(false);
        if let Some(reason) = lost {
            warn!(lease = %lease_name, reason = reason.describe(), "lost leadership; stopped writing");
        }
        let finished = match finished {
            Some(result) => result,
            None => match tokio::time::timeout(STOP_GRACE, &mut work).await {
                Ok(result) => joined(result),
                Err(_) => {
                    warn!(grace = ?STOP_GRACE, "controllers did not stop in time; aborted");
                    work.abort();
                    Ok(())
                }
            },
        };
        readiness.set_leading(false);
        match lost {
            Some(reason) => {
                // The lease is no longer ours to release: never write to it again.
                lease_task.abort();
                drop(leading);
                Err(Error::LeadershipLost(reason.describe().to_string()))
            }
            None => {
                // Closing the channel makes the lease manager release the lease, so a standby
                // takes over at once instead of after the lease expires.
                drop(leading);
                release(lease_task).await;
                finished
            }
        }
    }
}

/// How long controllers get to return after being told to stop (shutdown or lost lease).
const STOP_GRACE: Duration = Duration::from_secs(10);

async fn release(
    lease_task: tokio::task::JoinHandle<
        kube_lease_manager::Result<kube_lease_manager::LeaseManager>,
    >,
) {
    match lease_task.await {
        Ok(Ok(_)) => info!("released the leader lease"),
        Ok(Err(err)) => warn!(error = %err, "could not release the leader lease; it will expire"),
        Err(err) => error!(error = %err, "lease manager task failed"),
    }
}

fn spawn_signal_handler(shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut stream) => {
                    stream.recv().await;
                }
                Err(err) => {
                    warn!(error = %err, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = terminate => info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
            _ = shutdown.cancelled() => return,
        }
        shutdown.cancel();
    })
}

/// Sleep that ends early when `stop` fires; returns false if it was stopped.
pub async fn sleep_or_stop(duration: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(duration) => true,
        _ = stop.cancelled() => false,
    }
}

/// The whole `main` of an adapter binary: logs, client, runtime, controllers; the exit code says
/// whether it stopped cleanly.
pub async fn run_main<F, Fut>(
    name: &'static str,
    args: RuntimeArgs,
    metrics: Metrics,
    controllers: F,
) -> std::process::ExitCode
where
    F: Fn(LeaderContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    if let Err(err) = init_tracing(args.log_format, &args.log_filter) {
        eprintln!("{name}: {err}");
        return std::process::ExitCode::from(2);
    }
    let client = match client_from(args.kubeconfig.as_deref()).await {
        Ok(client) => client,
        Err(err) => {
            error!(category = %err.category(), error = %err, "cannot start");
            return std::process::ExitCode::from(2);
        }
    };
    info!(
        adapter = name,
        version = env!("CARGO_PKG_VERSION"),
        "starting"
    );
    match Runtime::new(name, args, client, metrics)
        .run(controllers)
        .await
    {
        Ok(()) => {
            info!("stopped");
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            error!(category = %err.category(), error = %err, "stopped with an error");
            std::process::ExitCode::FAILURE
        }
    }
}
