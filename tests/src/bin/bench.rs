//! The scale benchmark (`make bench`): prints a table and writes it as JSON.
//!
//!     cargo build --release --workspace --bins
//!     target/release/bench [--sources N] [--sinks N] [--members M] [--quiet-seconds S]
//!         [--churn-rate R] [--churn-seconds S] [--adapters a,b] [--json PATH]
//!
//! The adapter binaries are taken from the directory of this executable.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use harness::bench::{self, Options};

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "inventory-bridge scale benchmark on real control planes"
)]
struct Cli {
    /// Source objects per source adapter.
    #[arg(long, default_value_t = 1000)]
    sources: usize,
    /// Profiles per sink.
    #[arg(long, default_value_t = 1000)]
    sinks: usize,
    /// Member control planes.
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// Quiet window after convergence, seconds.
    #[arg(long, default_value_t = 60)]
    quiet_seconds: u64,
    /// Churn: changes per second across the fleet.
    #[arg(long, default_value_t = 20.0)]
    churn_rate: f64,
    /// Churn window, seconds.
    #[arg(long, default_value_t = 60)]
    churn_seconds: u64,
    /// After a restart, no write for this long means quiet (seconds).
    #[arg(long, default_value_t = 5)]
    settle_seconds: u64,
    /// Runs of each floor; the ratio uses their median.
    #[arg(long, default_value_t = 3)]
    floor_runs: usize,
    /// Adapters to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = bench::ADAPTERS.iter().map(|a| a.to_string()).collect::<Vec<_>>())]
    adapters: Vec<String>,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/bench/bench.json")]
    json: PathBuf,
    /// Directory of the adapter binaries (default: this executable's).
    #[arg(long)]
    adapter_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let adapter_dir = cli.adapter_dir.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("target/release"))
    });
    let options = Options {
        sources: cli.sources,
        sinks: cli.sinks,
        members: cli.members,
        quiet: Duration::from_secs(cli.quiet_seconds),
        churn_rate: cli.churn_rate,
        churn_window: Duration::from_secs(cli.churn_seconds),
        settle: Duration::from_secs(cli.settle_seconds),
        floor_runs: cli.floor_runs,
        adapters: cli.adapters.clone(),
        adapter_dir,
    };
    let report = match bench::run(&options).await {
        Ok(report) => report,
        Err(err) => {
            eprintln!("bench: {err}");
            return ExitCode::FAILURE;
        }
    };
    println!("\nMachine: {}\n", report.machine);
    println!("{}", report.table());
    println!(
        "Requests per object at convergence:\n{}",
        report.requests_table()
    );
    let json = match serde_json::to_string_pretty(&report) {
        Ok(json) => json,
        Err(err) => {
            eprintln!("bench: {err}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(dir) = cli.json.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(err) = std::fs::write(&cli.json, json) {
        eprintln!("bench: cannot write {}: {err}", cli.json.display());
        return ExitCode::FAILURE;
    }
    println!("JSON: {}", cli.json.display());
    ExitCode::SUCCESS
}
