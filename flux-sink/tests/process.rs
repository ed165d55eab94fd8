//! The built `flux-sink` binary, started as a process against a real hub the way a user starts it
//! (an inventory and its consumer namespace named), becomes healthy (`/healthz` 200) and ready
//! (`/readyz` 200) once its watches are synced.

// Integration test file: helpers panic on a broken fixture, which fails the test as it should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use harness::adapter_process::AdapterProcess;
use harness::{ControlPlane, ControlPlaneOptions, install_crd, test_namespace};

#[tokio::test]
async fn the_binary_becomes_healthy_and_ready() {
    let hub = ControlPlane::start(ControlPlaneOptions::named("hub"))
        .await
        .unwrap();
    let client = hub.client().await.unwrap();
    install_crd(&client, adapters::crd::cluster_profile_crd())
        .await
        .unwrap();
    let inventory = test_namespace(&client, "inventory").await.unwrap();
    let consumer = test_namespace(&client, "consumer").await.unwrap();
    let mut adapter = AdapterProcess::start(
        Path::new(env!("CARGO_BIN_EXE_flux-sink")),
        &hub,
        &[
            "--inventory-namespace",
            &inventory,
            "--flux-namespace",
            &consumer,
            "--leader-election=false",
        ],
    )
    .unwrap();
    adapter
        .wait_healthy_and_ready(Duration::from_secs(60))
        .await
        .unwrap();
}
