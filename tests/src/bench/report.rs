//! What one bench run found, per adapter: serialized as JSON and printed as a table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::observe::ProcStats;

/// One bench run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// CPU model and count, memory: where it ran.
    pub machine: String,
    /// The options it ran with.
    pub settings: BTreeMap<String, String>,
    /// One entry per adapter measured.
    pub adapters: Vec<AdapterReport>,
}

/// The figures of one adapter.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AdapterReport {
    /// Binary name, e.g. `ocm-source`.
    pub adapter: String,
    /// `source` or `sink`.
    pub role: String,
    /// Source objects (sources) or profiles (sinks) present before the adapter starts.
    pub objects: usize,
    /// Cold convergence against its floor.
    pub cold: Cold,
    /// Requests the apiservers served from the adapter's start to convergence.
    pub requests: RequestFigures,
    /// Writes while nothing changes.
    pub quiet: Quiet,
    /// Delays under a steady stream of changes.
    pub churn: Churn,
    /// The adapter process's figures.
    pub process: ProcessFigures,
    /// kill -9 and start again.
    pub restart: Restart,
}

/// Cold convergence.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Cold {
    /// From process start until the last object was exactly right.
    pub seconds: f64,
    /// The floor: the same minimal API work in a tight loop, same client and concurrency (the
    /// median of `floor_runs_seconds`).
    pub floor_seconds: f64,
    /// Every run of the floor, in order.
    pub floor_runs_seconds: Vec<f64>,
    /// `seconds / floor_seconds`.
    pub ratio: f64,
    /// Objects found exactly right by a list after convergence.
    pub verified: usize,
    /// `seconds` per object, milliseconds.
    pub ms_per_object: f64,
    /// From process start until the first object was exactly right: start-up (leader election,
    /// discovery, initial lists) as opposed to throughput.
    pub first_seconds: Option<f64>,
}

/// Requests at convergence (housekeeping Lease renewals left out).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RequestFigures {
    /// All requests.
    pub total: u64,
    /// `total` per object.
    pub per_object: f64,
    /// Per `"<hub|members> <VERB> <resource>"`, per object.
    pub per_object_by_kind: BTreeMap<String, f64>,
}

/// The quiet window after convergence.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Quiet {
    /// Length of the window.
    pub seconds: f64,
    /// Writes served during it (target 0).
    pub writes: u64,
    /// Those writes by kind.
    pub writes_by_kind: BTreeMap<String, u64>,
}

/// Churn: changes at a steady rate across the fleet.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Churn {
    /// Changes per second asked for.
    pub rate_per_second: f64,
    /// Length of the window.
    pub seconds: f64,
    /// Changes made.
    pub changes: u64,
    /// Changes whose effect was seen.
    pub observed: u64,
    /// Changes whose effect was not seen in time.
    pub missed: u64,
    /// Delay from the change request to the watched object showing it, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile of that delay.
    pub p99_ms: f64,
    /// Longest delay.
    pub max_ms: f64,
    /// Whether every output was exactly right again after the window (checked before the
    /// restart, so the restart measures only itself).
    pub settled: bool,
    /// From the end of the delay measurement (window + at most 30 s) until then (seconds).
    pub settled_seconds: f64,
}

/// The adapter process.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProcessFigures {
    /// At cold convergence.
    pub at_convergence: ProcStats,
    /// After the quiet window and churn, before the kill.
    pub at_end: ProcStats,
    /// CPU milliseconds per object to converge.
    pub cpu_ms_per_object: f64,
    /// Peak RSS at convergence per object, KiB (includes the fixed base).
    pub rss_kib_per_object: f64,
}

/// kill -9 and restart.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Restart {
    /// From the new process's start until `/readyz` answered 200.
    pub ready_seconds: f64,
    /// From the new process's start until the last write (at least until ready).
    pub quiet_seconds: f64,
    /// Writes served after the kill (target 0 for sources).
    pub writes: u64,
    /// Those writes by kind.
    pub writes_by_kind: BTreeMap<String, u64>,
    /// TokenRequests served by the members after the kill (target 0: nothing valid re-minted).
    pub token_creates: u64,
    /// Objects found exactly right after the restart.
    pub verified: usize,
    /// The new process once quiet.
    pub process: ProcStats,
}

impl Report {
    /// The main table: one line per adapter.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| adapter | N | cold s | floor s | ×floor | ms/obj | req/obj | quiet writes | churn p50/p99 ms (missed) | peak RSS MiB cold / restarted | CPU s | CPU ms/obj | restart ready/quiet s | restart writes | re-minted |"
        );
        let _ = writeln!(
            out,
            "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---:|---:|"
        );
        for a in &self.adapters {
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {} | {:.0} / {:.0} ({}) | {:.1} / {:.1} | {:.1} | {:.2} | {:.1} / {:.1} | {} | {} |",
                a.adapter,
                a.objects,
                a.cold.seconds,
                a.cold.floor_seconds,
                a.cold.ratio,
                a.cold.ms_per_object,
                a.requests.per_object,
                a.quiet.writes,
                a.churn.p50_ms,
                a.churn.p99_ms,
                a.churn.missed,
                a.process
                    .at_end
                    .peak_rss_mib
                    .max(a.process.at_convergence.peak_rss_mib),
                a.restart.process.peak_rss_mib,
                a.process.at_convergence.cpu_seconds,
                a.process.cpu_ms_per_object,
                a.restart.ready_seconds,
                a.restart.quiet_seconds,
                a.restart.writes,
                a.restart.token_creates,
            );
        }
        out
    }

    /// Requests per object by kind, one block per adapter.
    pub fn requests_table(&self) -> String {
        let mut out = String::new();
        for a in &self.adapters {
            let kinds: Vec<String> = a
                .requests
                .per_object_by_kind
                .iter()
                .filter(|(_, per)| **per >= 0.005)
                .map(|(kind, per)| format!("{kind} {per:.2}"))
                .collect();
            let _ = writeln!(out, "{}: {}", a.adapter, kinds.join(", "));
        }
        out
    }
}
