//! The control-plane binary, built from `tests/controlplane` by its `build.sh` on first use and
//! cached by content hash. Build progress is printed straight to the terminal (stderr is
//! inherited, so `cargo test` does not swallow it).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::repo_root;

/// Path of the built binary; builds it the first time (5-20 minutes cold).
pub fn control_plane_binary() -> Result<PathBuf, String> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Ok(path) = std::env::var("IB_CONTROLPLANE_BIN") {
                return Ok(PathBuf::from(path));
            }
            let script = repo_root().join("tests/controlplane/build.sh");
            let output = Command::new("bash")
                .arg(&script)
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .map_err(|err| format!("cannot run {}: {err}", script.display()))?;
            if !output.status.success() {
                return Err(format!(
                    "{} failed ({}); its output is above",
                    script.display(),
                    output.status
                ));
            }
            let stdout = String::from_utf8_lossy(&output.stdout);
            stdout
                .lines()
                .last()
                .map(|line| PathBuf::from(line.trim()))
                .ok_or_else(|| format!("{} printed no path", script.display()))
        })
        .clone()
}

/// The Kubernetes release the control plane is built from (the pin in `tests/controlplane/go.mod`).
pub fn pinned_kubernetes_version() -> Result<String, String> {
    let go_mod = repo_root().join("tests/controlplane/go.mod");
    let text = std::fs::read_to_string(&go_mod)
        .map_err(|err| format!("cannot read {}: {err}", go_mod.display()))?;
    text.lines()
        .map(str::split_whitespace)
        .find_map(|mut words| match (words.next(), words.next()) {
            (Some("k8s.io/kubernetes"), Some(version)) => Some(version.to_string()),
            _ => None,
        })
        .ok_or_else(|| format!("no k8s.io/kubernetes requirement in {}", go_mod.display()))
}
