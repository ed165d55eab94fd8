//! The phases every adapter goes through, whatever its role: cold convergence, requests per
//! object, quiet window, churn, process figures, kill -9 and restart, then the floor.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use kube::core::ApiResource;

use super::observe::{Check, Counters, Expect, Tracker, proc_stats, quantile_ms};
use super::report::{AdapterReport, Churn, Quiet, RequestFigures, Restart};
use crate::Result;
use crate::adapter_process::AdapterProcess;
use crate::controlplane::ControlPlane;

/// How long each phase runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Quiet window after convergence.
    pub quiet: Duration,
    /// Changes per second during churn.
    pub churn_rate: f64,
    /// Churn window.
    pub churn_window: Duration,
    /// After a restart: no write for this long means quiet.
    pub settle: Duration,
    /// Runs of the floor (the median counts).
    pub floor_runs: usize,
    /// Directory holding the adapter binaries.
    pub adapter_dir: PathBuf,
}

/// One adapter's workload: its inputs, what "exactly right" means, how to change an input, and
/// the floor.
#[allow(async_fn_in_trait)]
pub trait Scenario {
    /// Binary name.
    fn adapter(&self) -> &'static str;
    /// `source` or `sink`.
    fn role(&self) -> &'static str;
    /// Objects present before the adapter starts.
    fn size(&self) -> usize;
    /// Flags of the adapter (besides kubeconfig and HTTP address).
    fn args(&self) -> Vec<String>;
    /// What the adapter produces, watched to time convergence: resource and namespace.
    fn watched(&self) -> (ApiResource, String);
    /// Whether a watched object is exactly right at cold convergence.
    fn check(&self) -> Check;
    /// Create the inputs.
    async fn prepare(&self) -> Result<()>;
    /// List what the adapter produced and count the objects exactly right.
    async fn verify(&self) -> Result<usize>;
    /// The watched object that the `visit`-th change of input `index` changes, and how.
    fn plan_change(&self, index: usize, visit: usize) -> (String, Expect);
    /// Make that change.
    async fn apply_change(&self, index: usize, visit: usize) -> Result<()>;
    /// The floor: the same minimal API work in a tight loop (the adapter is stopped). Each
    /// `run` writes fresh objects (its own namespace), so no run finds its writes done already.
    async fn floor(&self, run: usize) -> Result<Duration>;
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// Long enough for `objects` on a slow shared machine.
fn convergence_timeout(objects: usize) -> Duration {
    Duration::from_secs(180) + Duration::from_millis(150) * u32::try_from(objects).unwrap_or(0)
}

/// Run every phase for `scenario` against `hub`.
pub async fn measure<S: Scenario>(
    scenario: &S,
    hub: &ControlPlane,
    counters: &Counters,
    settings: &Settings,
) -> Result<AdapterReport> {
    let name = scenario.adapter();
    let n = scenario.size();
    let binary = settings.adapter_dir.join(name);
    if !binary.exists() {
        return Err(format!(
            "{} is missing: build the adapters first (`make bench` does)",
            binary.display()
        )
        .into());
    }
    let started = Instant::now();
    scenario.prepare().await?;
    eprintln!(
        "bench {name}: {n} inputs created in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let (resource, namespace) = scenario.watched();
    let tracker = Tracker::start(hub.client().await?, &resource, &namespace, scenario.check());
    tracker.synced(Duration::from_secs(120)).await?;
    let mut report = AdapterReport {
        adapter: name.to_string(),
        role: scenario.role().to_string(),
        objects: n,
        ..AdapterReport::default()
    };

    // Cold convergence.
    let args = scenario.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let before = counters.snapshot().await?;
    let start = Instant::now();
    let mut process = AdapterProcess::start(&binary, hub, &args)?;
    let converged = tracker
        .converged(n, convergence_timeout(n))
        .await
        .map_err(|err| format!("{name}: {err}\n{}", process.log_tail(30)))?;
    let pid = process.process().pid();
    report.process.at_convergence = proc_stats(pid)?;
    let requests = counters.since(&before).await?;
    report.cold.seconds = secs(converged - start);
    report.cold.ms_per_object = report.cold.seconds * 1000.0 / n.max(1) as f64;
    report.cold.first_seconds = tracker
        .first_converged_at()
        .map(|first| secs(first.saturating_duration_since(start)));
    report.requests = RequestFigures {
        total: requests.total(),
        per_object: requests.total() as f64 / n.max(1) as f64,
        per_object_by_kind: requests
            .by_kind()
            .into_iter()
            .map(|(kind, count)| (kind, count as f64 / n.max(1) as f64))
            .collect(),
    };
    report.cold.verified = scenario.verify().await?;
    eprintln!(
        "bench {name}: first output after {:.1}s, converged in {:.1}s, {} verified, {:.2} requests/object",
        report.cold.first_seconds.unwrap_or_default(),
        report.cold.seconds,
        report.cold.verified,
        report.requests.per_object
    );

    // Quiet window.
    let before = counters.snapshot().await?;
    tokio::time::sleep(settings.quiet).await;
    let quiet = counters.since(&before).await?;
    report.quiet = Quiet {
        seconds: settings.quiet.as_secs_f64(),
        writes: quiet.writes(),
        writes_by_kind: quiet.writes_by_kind(),
    };
    eprintln!("bench {name}: {} writes while quiet", report.quiet.writes);

    // Churn.
    report.churn = churn(scenario, &tracker, settings).await?;
    eprintln!(
        "bench {name}: churn p50 {:.0} ms, p99 {:.0} ms, {} missed",
        report.churn.p50_ms, report.churn.p99_ms, report.churn.missed
    );
    // Let any churn backlog finish, so the restart below measures the restart alone.
    let settling = Instant::now();
    report.churn.settled = settle(scenario, convergence_timeout(n)).await?;
    report.churn.settled_seconds = secs(settling.elapsed());
    report.process.at_end = proc_stats(pid)?;
    report.process.cpu_ms_per_object =
        report.process.at_convergence.cpu_seconds * 1000.0 / n.max(1) as f64;
    report.process.rss_kib_per_object =
        report.process.at_convergence.peak_rss_mib * 1024.0 / n.max(1) as f64;

    // kill -9 and restart.
    let outputs = output_versions(scenario, hub).await?;
    let before = counters.snapshot().await?;
    drop(process);
    report.restart = restart(scenario, hub, counters, settings, &binary, &args, &before).await?;
    report_rewritten(&outputs, &output_versions(scenario, hub).await?);
    eprintln!(
        "bench {name}: restart ready in {:.1}s, quiet at {:.1}s, {} writes, {} tokens minted",
        report.restart.ready_seconds,
        report.restart.quiet_seconds,
        report.restart.writes,
        report.restart.token_creates
    );
    drop(tracker);

    // The floor, with the adapter stopped; its median over the runs.
    let mut floors = Vec::new();
    for run in 0..settings.floor_runs.max(1) {
        floors.push(secs(scenario.floor(run).await?));
    }
    report.cold.floor_runs_seconds = floors.clone();
    floors.sort_by(f64::total_cmp);
    report.cold.floor_seconds = floors[floors.len() / 2];
    report.cold.ratio = report.cold.seconds / report.cold.floor_seconds.max(0.001);
    eprintln!(
        "bench {name}: floor {:.1}s (median of {:?}), ratio {:.2}",
        report.cold.floor_seconds, report.cold.floor_runs_seconds, report.cold.ratio
    );
    Ok(report)
}

/// `settings.churn_rate` changes per second, round-robin over the inputs, for the window; then
/// wait (bounded) for every effect to show.
async fn churn<S: Scenario>(scenario: &S, tracker: &Tracker, settings: &Settings) -> Result<Churn> {
    let n = scenario.size().max(1);
    let period = Duration::from_secs_f64(1.0 / settings.churn_rate.max(0.1));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = Instant::now() + settings.churn_window;
    let mut inflight = FuturesUnordered::new();
    let mut changes = 0usize;
    let mut failed = 0u64;
    loop {
        let sending = Instant::now() < end;
        tokio::select! {
            _ = ticker.tick(), if sending => {
                let (index, visit) = (changes % n, changes / n);
                let (object, expect) = scenario.plan_change(index, visit);
                tracker.expect(&object, expect)?;
                inflight.push(scenario.apply_change(index, visit));
                changes += 1;
            }
            Some(outcome) = inflight.next(), if !inflight.is_empty() => {
                if let Err(err) = outcome {
                    eprintln!("churn change failed: {err}");
                    failed += 1;
                }
            }
            else => break,
        }
        if !sending && inflight.is_empty() {
            break;
        }
    }
    let (delays, missed) = tracker.drain(Duration::from_secs(30)).await?;
    Ok(Churn {
        rate_per_second: settings.churn_rate,
        seconds: settings.churn_window.as_secs_f64(),
        changes: changes as u64,
        observed: delays.len() as u64,
        missed: missed + failed,
        p50_ms: quantile_ms(&delays, 0.50).round(),
        p99_ms: quantile_ms(&delays, 0.99).round(),
        max_ms: quantile_ms(&delays, 1.0).round(),
        settled: false,
        settled_seconds: 0.0,
    })
}

/// Wait (bounded) until every output is exactly right again; whether it was.
async fn settle<S: Scenario>(scenario: &S, timeout: Duration) -> Result<bool> {
    let start = Instant::now();
    loop {
        if scenario.verify().await? >= scenario.size() {
            return Ok(true);
        }
        if start.elapsed() > timeout {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Start the adapter again after its kill: time to `/readyz`, time until writes stop, what it
/// wrote, and whether everything is still exactly right.
async fn restart<S: Scenario>(
    scenario: &S,
    hub: &ControlPlane,
    counters: &Counters,
    settings: &Settings,
    binary: &std::path::Path,
    args: &[&str],
    before: &super::observe::Snapshot,
) -> Result<Restart> {
    let start = Instant::now();
    let mut process = AdapterProcess::start(binary, hub, args)?;
    process
        .wait_http("/readyz", 200, convergence_timeout(scenario.size()))
        .await?;
    let ready = start.elapsed();
    let mut last_change = ready;
    let mut writes = counters.since(before).await?.writes();
    let deadline = convergence_timeout(scenario.size());
    while start.elapsed() - last_change < settings.settle && start.elapsed() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = counters.since(before).await?.writes();
        if now != writes {
            writes = now;
            last_change = start.elapsed();
        }
    }
    let requests = counters.since(before).await?;
    let verified = scenario.verify().await?;
    Ok(Restart {
        ready_seconds: secs(ready),
        quiet_seconds: secs(last_change),
        writes: requests.writes(),
        writes_by_kind: requests.writes_by_kind(),
        token_creates: requests.member_count("POST", "serviceaccounts/token"),
        verified,
        process: proc_stats(process.process().pid())?,
    })
}

/// Every output object (name and resourceVersion) with its content, to show which ones a
/// restart rewrote.
async fn output_versions<S: Scenario>(
    scenario: &S,
    hub: &ControlPlane,
) -> Result<std::collections::BTreeMap<String, serde_json::Value>> {
    let (resource, namespace) = scenario.watched();
    let api: kube::Api<kube::api::DynamicObject> =
        kube::Api::namespaced_with(hub.client().await?, &namespace, &resource);
    let list = api.list(&kube::api::ListParams::default()).await?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|mut o| {
            o.metadata.managed_fields = None;
            let name = o.metadata.name.clone()?;
            Some((name, serde_json::to_value(o).ok()?))
        })
        .collect())
}

/// Say which outputs a restart rewrote (none, when it is quiet), with the first one's content
/// before and after: what the adapter thought needed writing.
fn report_rewritten(
    before: &std::collections::BTreeMap<String, serde_json::Value>,
    after: &std::collections::BTreeMap<String, serde_json::Value>,
) {
    let version = |o: &serde_json::Value| o["metadata"]["resourceVersion"].clone();
    let changed: Vec<&String> = after
        .iter()
        .filter(|(name, o)| before.get(*name).map(version) != Some(version(o)))
        .map(|(name, _)| name)
        .collect();
    if let Some(first) = changed.first() {
        eprintln!(
            "bench: the restart rewrote {} output(s): {:?}\n  before: {}\n  after:  {}",
            changed.len(),
            changed.iter().take(10).collect::<Vec<_>>(),
            before
                .get(*first)
                .map(|o| o.to_string())
                .unwrap_or_default(),
            after.get(*first).map(|o| o.to_string()).unwrap_or_default(),
        );
    }
}
