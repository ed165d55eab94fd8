//! Helm, built from the `helm.sh/helm/v4` Go module pinned in `tests/helm/go.mod` by its
//! `build.sh` on first use and cached by content hash like the control plane (nothing comes from
//! a release page), and small helpers to run it against a test control plane.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::{Result, repo_root};

/// Path of the built Helm binary; builds it the first time (a few minutes cold).
pub fn helm_binary() -> Result<PathBuf, String> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Ok(path) = std::env::var("IB_HELM_BIN") {
                return Ok(PathBuf::from(path));
            }
            let script = repo_root().join("tests/helm/build.sh");
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

/// The Helm release pinned in `tests/helm/go.mod`.
pub fn pinned_helm_version() -> Result<String> {
    let go_mod = repo_root().join("tests/helm/go.mod");
    let text = std::fs::read_to_string(&go_mod)?;
    text.lines()
        .map(str::split_whitespace)
        .find_map(|mut words| match (words.next(), words.next()) {
            (Some("helm.sh/helm/v4"), Some(version)) => Some(version.to_string()),
            _ => None,
        })
        .ok_or_else(|| format!("no helm.sh/helm/v4 requirement in {}", go_mod.display()).into())
}

/// What one Helm run printed.
#[derive(Debug)]
pub struct HelmOutput {
    /// Whether it exited 0.
    pub success: bool,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl HelmOutput {
    /// stdout, or an error with everything Helm said.
    pub fn ok(self) -> Result<String> {
        if self.success {
            Ok(self.stdout)
        } else {
            Err(format!("helm failed:\n{}\n{}", self.stdout, self.stderr).into())
        }
    }
}

/// Helm with its own home (config, cache, data) and, optionally, a kubeconfig.
pub struct Helm {
    binary: PathBuf,
    home: PathBuf,
    kubeconfig: Option<PathBuf>,
}

impl Helm {
    /// Helm with a fresh home under `dir` and no cluster (lint, template).
    pub fn offline(dir: &Path) -> Result<Self> {
        let binary = helm_binary()?;
        let home = dir.join("helm-home");
        std::fs::create_dir_all(&home)?;
        Ok(Self {
            binary,
            home,
            kubeconfig: None,
        })
    }

    /// Helm talking to the cluster of `kubeconfig_yaml` (written under `dir`).
    pub fn with_kubeconfig(dir: &Path, kubeconfig_yaml: &str) -> Result<Self> {
        let mut helm = Self::offline(dir)?;
        let path = dir.join("helm.kubeconfig");
        std::fs::write(&path, kubeconfig_yaml)?;
        helm.kubeconfig = Some(path);
        Ok(helm)
    }

    /// Run `helm args...` from the repository root.
    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<HelmOutput> {
        let mut command = Command::new(&self.binary);
        command
            .args(args)
            .current_dir(repo_root())
            .env_clear()
            .env("HOME", &self.home)
            .env("HELM_CONFIG_HOME", self.home.join("config"))
            .env("HELM_CACHE_HOME", self.home.join("cache"))
            .env("HELM_DATA_HOME", self.home.join("data"))
            .stdin(Stdio::null());
        if let Ok(path) = std::env::var("PATH") {
            command.env("PATH", path);
        }
        match &self.kubeconfig {
            Some(path) => command.env("KUBECONFIG", path),
            None => command.env("KUBECONFIG", self.home.join("no-cluster")),
        };
        let output = command.output()?;
        Ok(HelmOutput {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// The documents of a multi-document YAML stream (as `helm template` prints), as JSON values;
/// empty documents are skipped.
pub fn yaml_documents(text: &str) -> Result<Vec<serde_json::Value>> {
    let mut documents = Vec::new();
    let mut current = String::new();
    for line in text.lines().chain(std::iter::once("---")) {
        if line == "---" || line.starts_with("--- ") {
            let body: String = current
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n");
            if !body.trim().is_empty() {
                let value: serde_json::Value = serde_saphyr::from_str(&current)
                    .map_err(|err| format!("cannot parse a YAML document: {err}\n{current}"))?;
                if !value.is_null() {
                    documents.push(value);
                }
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    Ok(documents)
}
