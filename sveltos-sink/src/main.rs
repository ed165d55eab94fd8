//! sveltos-sink: ClusterProfiles become Sveltos clusters with minted kubeconfigs.
//! The binary is flags and a hand-over to the engine; see the library for what it writes.

use clap::Parser;
use sveltos_sink::{NAME, SveltosSink, parse_property_label};

#[derive(Debug, Parser)]
#[command(name = NAME, version, about = "ClusterProfiles become Sveltos clusters with minted kubeconfigs")]
struct Args {
    #[command(flatten)]
    runtime: adapters::runtime::RuntimeArgs,

    #[command(flatten)]
    sink: adapters::sink::SinkArgs,

    /// Namespace of the SveltosClusters and their Secrets (default: each profile's namespace).
    #[arg(long, env = "IB_SVELTOS_NAMESPACE")]
    sveltos_namespace: Option<String>,

    /// Profile property copied as a label onto the SveltosCluster: `name` or `name=label-key`
    /// (repeatable or comma-separated). Values that are not valid label values are skipped and
    /// reported.
    #[arg(long = "property-labels", env = "IB_PROPERTY_LABELS", value_delimiter = ',', value_parser = parse_property_label)]
    property_labels: Vec<(String, String)>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let sink = SveltosSink {
        property_labels: args.property_labels,
    };
    adapters::sink::run_main(args.runtime, args.sink, sink, args.sveltos_namespace).await
}
