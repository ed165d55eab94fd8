//! The adapters as their real binaries: one process per replica, with the flags a user would
//! pass and its log under the estate's directory; killed, restarted and stopped as a node loss,
//! a Deployment or Kubernetes would.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};

use super::{
    ARGOCD_NAMESPACE, CAPI_NAMESPACE, Estate, EstateOptions, FLUX_NAMESPACE, INVENTORY,
    OCM_BOOTSTRAP_SERVICE_ACCOUNT, SINKS, SOURCES, write_private,
};
use crate::controlplane::free_port;
use crate::process::ManagedProcess;
use crate::{Result, http_get};

/// One replica of an adapter, a real process.
#[derive(Debug)]
pub struct AdapterReplica {
    /// Adapter name (binary name).
    pub adapter: String,
    /// Replica index (0-based).
    pub replica: usize,
    /// Where it serves /metrics, /healthz, /readyz.
    pub address: SocketAddr,
    /// Its log file.
    pub log: PathBuf,
    /// The hub user it authenticates as.
    pub user: String,
    binary: PathBuf,
    argv: Vec<String>,
    process: Option<ManagedProcess>,
}

impl AdapterReplica {
    fn spawn(&mut self) -> Result<()> {
        let name = format!("{}-{}", self.adapter, self.replica);
        self.process = Some(ManagedProcess::spawn(
            &name,
            &self.binary,
            &self.argv,
            &self.log,
        )?);
        Ok(())
    }

    /// Kill it with SIGKILL (no cleanup of any kind, as a node loss would).
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.signal(libc::SIGKILL);
            process.kill();
        }
    }

    /// Start it again with the same command line.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    /// Stop it as Kubernetes would: SIGTERM, then SIGKILL after `grace`.
    pub async fn terminate(&mut self, grace: Duration) {
        if let Some(mut process) = self.process.take() {
            let _ = process.signal(libc::SIGTERM);
            let deadline = Instant::now() + grace;
            while !process.has_exited() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            process.kill();
        }
    }

    /// Whether the process has exited (or was never started / was killed).
    pub fn exited(&mut self) -> bool {
        self.process.as_mut().is_none_or(ManagedProcess::has_exited)
    }

    /// Whether `/readyz` answers 200 (the leader is ready; a standby answers too).
    pub async fn ready(&self) -> bool {
        matches!(http_get(self.address, "/readyz").await, Ok((200, _)))
    }

    /// Its `/metrics` text.
    pub async fn metrics(&self) -> Result<String> {
        Ok(http_get(self.address, "/metrics").await?.1)
    }

    /// The last lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// Where the adapter binaries are: next to the running executable (`target/debug/demo`) or one
/// level up (`target/debug/deps/<test>`).
pub fn adapter_bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut candidates = Vec::new();
    if let Some(dir) = exe.parent() {
        candidates.push(dir.to_path_buf());
        if let Some(up) = dir.parent() {
            candidates.push(up.to_path_buf());
        }
    }
    for dir in &candidates {
        if SOURCES
            .iter()
            .chain(SINKS.iter())
            .all(|name| dir.join(name).is_file())
        {
            return Ok(dir.clone());
        }
    }
    let missing: Vec<String> = SOURCES
        .iter()
        .chain(SINKS.iter())
        .filter(|name| !candidates.iter().any(|dir| dir.join(name).is_file()))
        .map(|name| name.to_string())
        .collect();
    Err(format!(
        "adapter binaries {missing:?} not found next to {} : build them first with `cargo build --workspace --bins` (`make demo` and `make test` do)",
        exe.display()
    )
    .into())
}

impl Estate {
    fn adapter_args(adapter: &str, extra_sink_args: &[String]) -> Vec<String> {
        let mut args: Vec<String> = match adapter {
            "capi-source" => vec!["--inventory-namespace".into(), INVENTORY.into()],
            "ocm-source" => vec![
                "--inventory-namespace".into(),
                INVENTORY.into(),
                "--bootstrap-serviceaccount".into(),
                OCM_BOOTSTRAP_SERVICE_ACCOUNT.into(),
            ],
            sink => {
                let mut args = vec![
                    "--inventory-namespace".to_string(),
                    INVENTORY.to_string(),
                    // CAPI writes kubeconfig Secrets next to its Clusters, not in the inventory.
                    "--bootstrap-secret-namespace".to_string(),
                    CAPI_NAMESPACE.to_string(),
                ];
                match sink {
                    "argocd-sink" => {
                        args.extend(["--argocd-namespace".into(), ARGOCD_NAMESPACE.into()])
                    }
                    "flux-sink" => args.extend(["--flux-namespace".into(), FLUX_NAMESPACE.into()]),
                    _ => {}
                }
                args.extend(extra_sink_args.iter().cloned());
                args
            }
        };
        args.extend(["--log-filter".into(), "info".into()]);
        args
    }

    pub(super) async fn start_adapters(
        &mut self,
        bin_dir: &Path,
        options: &EstateOptions,
    ) -> Result<()> {
        let hub = self.hub().await?;
        for adapter in SOURCES.iter().chain(SINKS.iter()) {
            let mut replicas = Vec::new();
            for replica in 0..options.replicas.max(1) {
                let (kubeconfig, user) = if options.replicas > 1 {
                    let account = format!("{adapter}-{replica}");
                    let token = hub_admin_service_account(&hub, &account).await?;
                    (
                        self.fleet.hub.token_kubeconfig_yaml(&token),
                        format!("system:serviceaccount:default:{account}"),
                    )
                } else {
                    (self.fleet.hub.admin_kubeconfig_yaml(), "admin".to_string())
                };
                let suffix = if options.replicas > 1 {
                    format!("-{replica}")
                } else {
                    String::new()
                };
                let kubeconfig_path = self
                    .dir
                    .join("logs")
                    .join(format!("{adapter}{suffix}.kubeconfig"));
                write_private(&kubeconfig_path, &kubeconfig)?;
                let address = SocketAddr::from(([127, 0, 0, 1], free_port()?));
                let mut argv = vec![
                    format!("--kubeconfig={}", kubeconfig_path.display()),
                    format!("--http-address={address}"),
                    format!("--lease-duration-seconds={}", options.lease_seconds),
                    format!("--identity={adapter}{suffix}"),
                ];
                argv.extend(Self::adapter_args(adapter, &options.extra_sink_args));
                let mut process = AdapterReplica {
                    adapter: adapter.to_string(),
                    replica,
                    address,
                    log: self.dir.join("logs").join(format!("{adapter}{suffix}.log")),
                    user,
                    binary: bin_dir.join(adapter),
                    argv,
                    process: None,
                };
                // A fresh log per run of the estate.
                let _ = std::fs::remove_file(&process.log);
                process.spawn()?;
                (self.say)(&format!(
                    "[bridge] started {adapter}{suffix} (pid {}): {} {}",
                    process
                        .process
                        .as_ref()
                        .map(ManagedProcess::pid)
                        .unwrap_or(0),
                    adapter,
                    Self::adapter_args(adapter, &options.extra_sink_args).join(" ")
                ));
                replicas.push(process);
            }
            self.adapters.insert(adapter.to_string(), replicas);
        }
        Ok(())
    }

    /// Every adapter process still runs (or, with [`EstateOptions::restart_exited`], is started
    /// again as its Deployment would).
    pub fn check_adapters_running(&mut self) -> Result<()> {
        for replicas in self.adapters.values_mut() {
            for replica in replicas {
                if replica.exited() && self.restart_exited {
                    (self.say)(&format!(
                        "[kubelet] {} replica {} exited; starting it again (last log lines:\n{})",
                        replica.adapter,
                        replica.replica,
                        replica.log_tail(3)
                    ));
                    replica.restart()?;
                    self.restarts += 1;
                } else if replica.exited() {
                    return Err(format!(
                        "{} (replica {}) exited; its log {}:\n{}",
                        replica.adapter,
                        replica.replica,
                        replica.log.display(),
                        replica.log_tail(30)
                    )
                    .into());
                }
            }
        }
        Ok(())
    }

    /// Kill (-9) every replica of every adapter, all at once, then start them again.
    pub fn kill_and_restart_all(&mut self) -> Result<()> {
        for replicas in self.adapters.values_mut() {
            for replica in replicas.iter_mut() {
                replica.kill();
            }
        }
        for replicas in self.adapters.values_mut() {
            for replica in replicas.iter_mut() {
                replica.spawn()?;
            }
        }
        Ok(())
    }

    /// Stop every adapter as Kubernetes would (SIGTERM, then SIGKILL after 10 s).
    pub async fn stop_adapters(&mut self) {
        for replicas in self.adapters.values_mut() {
            for replica in replicas.iter_mut() {
                replica.terminate(Duration::from_secs(10)).await;
            }
        }
    }
}

/// A hub ServiceAccount `default/<name>` bound to cluster-admin; returns a token for it (one per
/// adapter replica, so the hub's audit log tells replicas apart).
async fn hub_admin_service_account(hub: &Client, name: &str) -> Result<String> {
    use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
    let accounts: Api<ServiceAccount> = Api::namespaced(hub.clone(), "default");
    let meta = |namespace: Option<&str>| ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(str::to_string),
        ..ObjectMeta::default()
    };
    accounts
        .patch(
            name,
            &PatchParams::apply("estate").force(),
            &Patch::Apply(&ServiceAccount {
                metadata: meta(Some("default")),
                ..ServiceAccount::default()
            }),
        )
        .await?;
    Api::<ClusterRoleBinding>::all(hub.clone())
        .patch(
            name,
            &PatchParams::apply("estate").force(),
            &Patch::Apply(&ClusterRoleBinding {
                metadata: meta(None),
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "ClusterRole".into(),
                    name: "cluster-admin".into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: name.into(),
                    namespace: Some("default".into()),
                    ..Subject::default()
                }]),
            }),
        )
        .await?;
    let minted = accounts
        .create_token_request(
            name,
            &PostParams::default(),
            &TokenRequest {
                spec: Some(TokenRequestSpec {
                    expiration_seconds: Some(24 * 3600),
                    ..TokenRequestSpec::default()
                }),
                ..TokenRequest::default()
            },
        )
        .await?;
    minted
        .status
        .and_then(|s| s.token)
        .ok_or_else(|| "no token".into())
}
