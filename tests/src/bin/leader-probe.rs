//! A minimal adapter for the leader-election tests: the shared runtime with, as its controller, a
//! heartbeat that server-side-applies ConfigMap `heartbeat` (`writer`, `beat`) every 200 ms while
//! this replica leads. Tests run two replicas as real processes, each with its own hub identity,
//! and pause one of them (SIGSTOP) to see whether a deposed leader still writes.
//!
//!     leader-probe --kubeconfig K --probe-namespace NS --lease-namespace NS --identity replica-a

use std::collections::BTreeMap;
use std::time::Duration;

use adapters::runtime::{Metrics, RuntimeArgs, run_main, sleep_or_stop};
use clap::Parser;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta};

#[derive(Debug, Parser)]
#[command(name = "leader-probe")]
struct Args {
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Namespace of the heartbeat ConfigMap.
    #[arg(long)]
    probe_namespace: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let identity = args.runtime.identity.clone().unwrap_or_default();
    let namespace = args.probe_namespace;
    let metrics = Metrics::new("leader-probe");
    run_main("leader-probe", args.runtime, metrics, move |context| {
        let identity = identity.clone();
        let namespace = namespace.clone();
        async move {
            context.readiness.mark_synced();
            let api: Api<ConfigMap> = Api::namespaced(context.client.clone(), &namespace);
            let mut beat: u64 = 0;
            loop {
                beat += 1;
                let heartbeat = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some("heartbeat".into()),
                        namespace: Some(namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    data: Some(BTreeMap::from([
                        ("writer".to_string(), identity.clone()),
                        ("beat".to_string(), beat.to_string()),
                    ])),
                    ..ConfigMap::default()
                };
                // Like a reconcile: it does not look at the stop token before writing.
                if let Err(err) = context.applier.apply(&api, &heartbeat, None, true).await {
                    tracing::warn!(error = %err, "heartbeat not written");
                }
                if !sleep_or_stop(Duration::from_millis(200), &context.stop).await {
                    return Ok(());
                }
            }
        }
    })
    .await
}
