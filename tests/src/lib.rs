//! The real control-plane harness for inventory-bridge's tests.
//!
//! Starts real etcd + kube-apiserver processes (built from the pinned Kubernetes release by
//! `tests/controlplane/build.sh`) on loopback: a hub and any number of members, each with its own
//! CA, admin identity, RBAC and ServiceAccount token signing. Installs foreign CRDs from pinned
//! upstream Go modules, hands out clients and kubeconfigs, gives each test its own namespace, and
//! kills every process it started, even when a test panics or the test binary dies.
//!
//! No fake or mock API server exists here: what a test talks to is Kubernetes itself.

// Test support: a broken fixture should fail the test loudly, so panicking helpers are fine here.
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod apiserver_metrics;
pub mod binary;
pub mod controlplane;
pub mod crds;
pub mod fleet;
pub mod pki;
mod process;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};

pub use controlplane::{ControlPlane, ControlPlaneOptions, controllers};
pub use crds::{ForeignCrd, install_crd, install_crds};
pub use fleet::{Fleet, shared_fleet};

/// Errors of test support.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Result of test support.
pub type Result<T, E = BoxError> = std::result::Result<T, E>;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Poll `probe` until it yields `Some`, or fail after `timeout` naming `what`. Probe errors are
/// retried (the last one is reported).
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match probe().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(err) => last_error = Some(err.to_string()),
        }
        if Instant::now() > deadline {
            return Err(match last_error {
                Some(err) => format!("timed out after {timeout:?} waiting for {what}: {err}"),
                None => format!("timed out after {timeout:?} waiting for {what}"),
            }
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Create a namespace of its own for one test: `<prefix>-<unique suffix>`.
pub async fn test_namespace(client: &kube::Client, prefix: &str) -> Result<String> {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let name = format!("{prefix}-{n}-{:x}", nanos % 0xfffff);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await?;
    Ok(name)
}
