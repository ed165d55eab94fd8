//! flux-sink: ClusterProfiles become Flux kubeconfig Secrets with minted credentials.
//! The binary is flags and a hand-over to the engine; see the library for what it writes.

use clap::Parser;
use flux_sink::Cli;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let sink = cli.flux.sink();
    // The engine's own namespace for this sink: the first Flux namespace (the sink writes to all).
    let namespace = sink.namespaces.first().cloned();
    adapters::sink::run_main(cli.runtime, cli.sink, sink, namespace).await
}
