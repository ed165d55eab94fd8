//! capi-source: Cluster API Clusters become ClusterProfiles.

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = capi_source::NAME, version, about = "Cluster API Clusters become ClusterProfiles")]
struct Args {
    #[command(flatten)]
    runtime: adapters::runtime::RuntimeArgs,
    #[command(flatten)]
    capi: capi_source::CapiArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // Wrong flags are a start-up error, not a reconcile error.
    if let Err(err) = args.capi.projection_config() {
        eprintln!("{}: {err}", capi_source::NAME);
        return std::process::ExitCode::from(2);
    }
    let mut metrics = adapters::runtime::Metrics::new(capi_source::NAME);
    let capi_metrics = capi_source::CapiMetrics::register(&mut metrics);
    let capi = args.capi;
    adapters::runtime::run_main(capi_source::NAME, args.runtime, metrics, move |context| {
        capi_source::run(
            capi_source::NAME,
            capi.clone(),
            capi_metrics.clone(),
            context,
        )
    })
    .await
}
