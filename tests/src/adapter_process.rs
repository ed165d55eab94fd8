//! An adapter binary running as a real process against a control plane of the harness: its own
//! kubeconfig file, its own HTTP port, its log in a file (shown when a check fails), and killed
//! with its process group when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::controlplane::{ControlPlane, free_port};
use crate::process::ManagedProcess;
use crate::{Result, http_get, wait_for};

/// A running adapter process.
#[derive(Debug)]
pub struct AdapterProcess {
    process: ManagedProcess,
    /// Where it serves `/metrics`, `/healthz` and `/readyz`.
    pub address: SocketAddr,
    dir: PathBuf,
}

impl AdapterProcess {
    /// Start `binary` with `args`, against `hub` with the admin kubeconfig (written to a file, as a
    /// user would pass it) and HTTP on a free loopback port. `RUST_LOG`-style filtering is left to
    /// the adapter's own `--log-filter` default.
    pub fn start(binary: &Path, hub: &ControlPlane, args: &[&str]) -> Result<Self> {
        Self::start_with_kubeconfig(binary, &hub.admin_kubeconfig_yaml(), args)
    }

    /// As [`AdapterProcess::start`], authenticating with the given kubeconfig (e.g. one
    /// ServiceAccount token per replica, so the apiserver can tell replicas apart).
    pub fn start_with_kubeconfig(binary: &Path, kubeconfig: &str, args: &[&str]) -> Result<Self> {
        static SEQUENCE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let sequence = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "adapter".to_string());
        let dir = std::env::temp_dir()
            .join("inventory-bridge-harness")
            .join(format!("pid-{}", std::process::id()))
            .join(format!("{name}-{sequence}"));
        std::fs::create_dir_all(&dir)?;
        let kubeconfig_path = dir.join("kubeconfig");
        std::fs::write(&kubeconfig_path, kubeconfig)?;
        let port = free_port()?;
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let mut argv: Vec<String> = vec![
            format!("--kubeconfig={}", kubeconfig_path.display()),
            format!("--http-address={address}"),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        let process = ManagedProcess::spawn(&name, binary, &argv, &dir.join("log"))?;
        Ok(Self {
            process,
            address,
            dir,
        })
    }

    /// The underlying process (pid, signals, exit status).
    pub fn process(&mut self) -> &mut ManagedProcess {
        &mut self.process
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    /// Wait until `path` answers `code`; fails early (with its log) if the process exits.
    pub async fn wait_http(&mut self, path: &str, code: u16, timeout: Duration) -> Result<String> {
        let address = self.address;
        let process = &mut self.process;
        let outcome = wait_for(timeout, &format!("{path} answering {code}"), || {
            let exited = process.has_exited();
            async move {
                if exited {
                    return Err("the adapter process exited".into());
                }
                match http_get(address, path).await {
                    Ok((answer, body)) if answer == code => Ok(Some(body)),
                    Ok((answer, body)) => Err(format!("{answer} {body}").into()),
                    Err(err) => Err(err),
                }
            }
        })
        .await;
        outcome.map_err(|err| format!("{err}\n{}", self.process.log_tail(40)).into())
    }

    /// Wait until both `/healthz` and `/readyz` answer 200.
    pub async fn wait_healthy_and_ready(&mut self, timeout: Duration) -> Result<()> {
        self.wait_http("/healthz", 200, timeout).await?;
        self.wait_http("/readyz", 200, timeout).await?;
        Ok(())
    }
}

impl Drop for AdapterProcess {
    fn drop(&mut self) {
        self.process.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
