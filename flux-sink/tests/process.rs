//! The built `flux-sink` binary, started as a process against a real hub the way a user starts it,
//! becomes healthy (`/healthz` 200) and ready (`/readyz` 200). Today it runs only the shared
//! runtime (no controller yet), so this proves flags, client, HTTP endpoints and readiness.

// Integration test file: helpers panic on a broken fixture, which fails the test as it should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use harness::adapter_process::AdapterProcess;
use harness::{ControlPlane, ControlPlaneOptions};

#[tokio::test]
async fn the_binary_becomes_healthy_and_ready() {
    let hub = ControlPlane::start(ControlPlaneOptions::named("hub"))
        .await
        .unwrap();
    let mut adapter = AdapterProcess::start(
        Path::new(env!("CARGO_BIN_EXE_flux-sink")),
        &hub,
        &["--leader-election=false"],
    )
    .unwrap();
    adapter
        .wait_healthy_and_ready(Duration::from_secs(60))
        .await
        .unwrap();
}
