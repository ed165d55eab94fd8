//! The benchmark at a small size, so it cannot rot: every phase runs for every adapter, and the
//! report must be complete and show the invariants that are not timings (timings are never
//! asserted: this machine is shared).

// Integration test file: a broken fixture should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use harness::bench::{self, Options};
use serde_json::Value;

/// The adapter binaries, built by cargo exactly as `make test` builds them (so a no-op after it;
/// `-p` alone would unify features differently and rebuild half the dependency tree), so the
/// processes run the code under test; returns their directory.
fn adapter_dir() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut command = std::process::Command::new(cargo);
    command
        .args([
            "build",
            "--workspace",
            "--bins",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(std::process::Stdio::inherit());
    let output = command.output().expect("cannot run cargo build");
    assert!(
        output.status.success(),
        "cargo build of the adapters failed"
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .find(|p| p.file_name().is_some_and(|n| n == bench::ADAPTERS[0]))
        .and_then(|p| p.parent().map(PathBuf::from))
        .expect("cargo build named no adapter executable")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_bench_reports_every_figure_and_its_invariants_hold() {
    let options = Options {
        sources: 40,
        sinks: 20,
        members: 2,
        quiet: Duration::from_secs(3),
        churn_rate: 10.0,
        churn_window: Duration::from_secs(3),
        settle: Duration::from_secs(2),
        floor_runs: 1,
        adapters: bench::ADAPTERS.iter().map(|a| a.to_string()).collect(),
        adapter_dir: adapter_dir(),
    };
    let report = bench::run(&options).await.unwrap();
    let table = report.table();
    eprintln!("{table}\n{}", report.requests_table());
    let json = serde_json::to_value(&report).unwrap();
    assert!(!report.machine.is_empty());

    let names: Vec<&str> = report.adapters.iter().map(|a| a.adapter.as_str()).collect();
    assert_eq!(names, bench::ADAPTERS);
    for (a, entry) in report
        .adapters
        .iter()
        .zip(json["adapters"].as_array().unwrap())
    {
        let name = &a.adapter;
        assert!(
            table.contains(name.as_str()),
            "{name} missing from the table"
        );
        for field in ["cold", "requests", "quiet", "churn", "process", "restart"] {
            assert!(entry.get(field).is_some(), "{name}: no {field} in the JSON");
        }
        // Cold convergence: every object exactly right, and a floor to compare with.
        assert_eq!(
            a.cold.verified, a.objects,
            "{name}: not every object converged right"
        );
        assert!(a.cold.seconds > 0.0 && a.cold.floor_seconds > 0.0 && a.cold.ratio > 0.0);
        let first = a.cold.first_seconds.unwrap_or_default();
        assert!(
            first > 0.0 && first <= a.cold.seconds,
            "{name}: first output at {first} s, all at {} s",
            a.cold.seconds
        );
        // Requests per object, by verb and resource, from the apiservers.
        assert!(a.requests.per_object > 0.0, "{name}: no requests counted");
        assert!(
            a.requests
                .per_object_by_kind
                .keys()
                .any(|k| k.starts_with("hub ")),
            "{name}: no hub requests by kind: {:?}",
            a.requests.per_object_by_kind
        );
        // At rest nothing is written.
        assert_eq!(
            a.quiet.writes, 0,
            "{name} wrote while quiet: {:?}",
            a.quiet.writes_by_kind
        );
        // Churn: every change reached the watched object.
        assert!(a.churn.changes > 0, "{name}: no churn");
        assert_eq!(a.churn.missed, 0, "{name}: churn changes never seen");
        assert_eq!(a.churn.observed, a.churn.changes);
        assert!(a.churn.settled, "{name}: not exactly right after churn");
        // The process was measured.
        assert!(a.process.at_convergence.peak_rss_mib > 0.0);
        assert!(a.process.at_end.cpu_seconds > 0.0);
        // Restart: still exactly right, nothing valid re-minted, and nothing written (what was
        // right before the kill is still right).
        assert_eq!(a.restart.verified, a.objects, "{name}: wrong after restart");
        assert!(a.restart.ready_seconds > 0.0);
        assert_eq!(
            a.restart.token_creates, 0,
            "{name} re-minted tokens still valid"
        );
        assert_eq!(
            a.restart.writes, 0,
            "{name} wrote after restart: {:?}",
            a.restart.writes_by_kind
        );
    }
    for sink in report.adapters.iter().filter(|a| a.role == "sink") {
        assert!(
            sink.requests
                .per_object_by_kind
                .contains_key("members POST serviceaccounts/token"),
            "{}: its TokenRequests are not counted: {:?}",
            sink.adapter,
            sink.requests.per_object_by_kind
        );
    }
}
