//! flux-sink: ClusterProfiles become Flux kubeconfig Secrets with minted kubeconfigs.
//!
//! For now the binary runs only the shared runtime (flags, logs, metrics, health, leader election,
//! shutdown); its controller is built under its own issue (a later issue).

use clap::Parser;

const NAME: &str = "flux-sink";

#[derive(Debug, Parser)]
#[command(name = NAME, version, about = "ClusterProfiles become Flux kubeconfig Secrets with minted kubeconfigs")]
struct Args {
    #[command(flatten)]
    runtime: adapters::runtime::RuntimeArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let metrics = adapters::runtime::Metrics::new(NAME);
    adapters::runtime::run_main(NAME, args.runtime, metrics, |context| async move {
        tracing::warn!("no controller is implemented in this build yet; idling until stopped");
        context.readiness.mark_synced();
        context.stop.cancelled().await;
        Ok(())
    })
    .await
}
