//! argocd-sink: ClusterProfiles become Argo CD cluster Secrets with minted credentials.
//! The binary is flags and a hand-over to the engine; see the library for what it writes.

use argocd_sink::Cli;
use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let sink = cli.argocd.sink();
    let namespace = Some(sink.namespace.clone());
    adapters::sink::run_main(cli.runtime, cli.sink, sink, namespace).await
}
