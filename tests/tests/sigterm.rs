//! SIGTERM stops an adapter runtime gracefully: controllers stop, the leader lease is released
//! (so a standby takes over at once), and `run` returns Ok. Its own test binary, because the
//! signal goes to the whole process.

// Integration test file: helpers panic on a broken fixture, which fails the test as it should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use adapters::runtime::{LogFormat, Metrics, Runtime, RuntimeArgs};
use harness::{shared_fleet, test_namespace, wait_for};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use tokio::net::TcpListener;

#[tokio::test]
async fn sigterm_stops_controllers_and_releases_the_lease() {
    let fleet = shared_fleet().await.unwrap();
    let client = fleet.hub.client().await.unwrap();
    let namespace = test_namespace(&client, "sigterm").await.unwrap();
    let args = RuntimeArgs {
        kubeconfig: None,
        http_address: "127.0.0.1:0".parse().unwrap(),
        log_format: LogFormat::Json,
        log_filter: "info".into(),
        leader_election: true,
        lease_name: Some("sigterm-test".into()),
        lease_namespace: namespace.clone(),
        lease_duration_seconds: 60,
        liveness_stall_seconds: 300,
        identity: Some("only-replica".into()),
    };
    adapters::runtime::init_tracing(args.log_format, &args.log_filter).unwrap();
    let runtime = Runtime::new(
        "sigterm-test",
        args,
        client.clone(),
        Metrics::new("sigterm-test"),
    );
    let leading = Arc::new(AtomicBool::new(false));
    let stopped_cleanly = Arc::new(AtomicBool::new(false));
    let (leading_flag, stopped_flag) = (leading.clone(), stopped_cleanly.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let task = tokio::spawn(runtime.run_with_listener(listener, move |context| {
        let (leading, stopped) = (leading_flag.clone(), stopped_flag.clone());
        async move {
            leading.store(true, Ordering::SeqCst);
            context.stop.cancelled().await;
            stopped.store(true, Ordering::SeqCst);
            Ok(())
        }
    }));
    wait_for(Duration::from_secs(30), "leadership", || {
        let leading = leading.clone();
        async move { Ok(leading.load(Ordering::SeqCst).then_some(())) }
    })
    .await
    .unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), &namespace);
    let holder = |lease: Lease| lease.spec.and_then(|s| s.holder_identity);
    assert_eq!(
        holder(leases.get("sigterm-test").await.unwrap()).as_deref(),
        Some("only-replica")
    );

    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the runtime must stop after SIGTERM")
        .unwrap()
        .unwrap();
    assert!(
        stopped_cleanly.load(Ordering::SeqCst),
        "controllers were not told to stop"
    );
    // Released, not merely left to expire: the 60 s lease has no holder any more.
    assert_eq!(holder(leases.get("sigterm-test").await.unwrap()), None);
}
