//! ocm-source: OCM ManagedClusters become ClusterProfiles. Parses flags and hands the source to
//! the shared engine and runtime (see the library for the mapping).

use clap::Parser;
use ocm_source::{NAME, OcmSource};

#[derive(Debug, Parser)]
#[command(name = NAME, version, about = "OCM ManagedClusters become ClusterProfiles")]
struct Args {
    #[command(flatten)]
    runtime: adapters::runtime::RuntimeArgs,
    #[command(flatten)]
    source: adapters::source::SourceArgs,
    #[command(flatten)]
    ocm: ocm_source::args::OcmArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let config = match args.ocm.config() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{NAME}: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut metrics = adapters::runtime::Metrics::new(NAME);
    let source_metrics = adapters::source::SourceMetrics::register(&mut metrics);
    let settings = adapters::source::SourceSettings {
        watch_namespace: None,
        args: args.source,
    };
    adapters::runtime::run_main(NAME, args.runtime, metrics, move |context| {
        let source = OcmSource::new(context.client.clone(), config.clone());
        adapters::source::run_source(source, settings.clone(), source_metrics.clone(), context)
    })
    .await
}
