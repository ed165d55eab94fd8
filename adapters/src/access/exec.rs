//! Exec credential plugins, client-go's protocol: the plugin gets `KUBERNETES_EXEC_INFO` (an
//! `ExecCredential` whose `spec.cluster` carries the member's cluster and, as `config`, the
//! `client.authentication.k8s.io/exec` extension when `provideClusterInfo` is set) and prints an
//! `ExecCredential` with a token or client certificate on stdout.
//!
//! Differences from client-go, on purpose: a timeout kills the plugin; stderr is captured into the
//! error (with credential-looking words redacted) instead of passed through; stdout is never
//! quoted in an error, because it may hold a credential.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use super::{ArgsPolicy, EnvPolicy, ExecConfig, ProviderEntry, decode_pem};
use crate::kubeconfig::Credential;
use crate::profile::{
    Cluster, EXTENSION_EXEC, EXTENSION_EXEC_ADDITIONAL_ARGS, EXTENSION_EXEC_ADDITIONAL_ENVS,
};
use crate::sensitive::{Sensitive, redact_credential_like};

/// Captured stderr kept in an error, at most.
const MAX_STDERR: usize = 512;
/// Plugin stdout read, at most (an ExecCredential is small).
const MAX_STDOUT: u64 = 1024 * 1024;

/// How an exec plugin failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The binary is not there or not executable.
    #[error("cannot start exec plugin {command:?}: {reason}")]
    Start {
        /// The command.
        command: String,
        /// Why (from the OS).
        reason: String,
    },
    /// It ran longer than the timeout and was killed.
    #[error("exec plugin {command:?} did not finish within {timeout:?}; killed")]
    Timeout {
        /// The command.
        command: String,
        /// The timeout.
        timeout: Duration,
    },
    /// It exited unsuccessfully.
    #[error("exec plugin {command:?} exited with {status}: {stderr}")]
    Failed {
        /// The command.
        command: String,
        /// Exit status.
        status: String,
        /// Its stderr, truncated, credential-like words redacted.
        stderr: String,
    },
    /// Its output is not a usable ExecCredential.
    #[error("exec plugin {command:?} printed no usable ExecCredential: {reason}")]
    BadOutput {
        /// The command.
        command: String,
        /// What is wrong (never the output itself).
        reason: String,
    },
    /// The profile's exec extensions are malformed.
    #[error("profile exec extension: {0}")]
    Extension(String),
}

/// Arguments and environment variables of one plugin run.
pub type CommandSpec = (Vec<String>, Vec<(String, String)>);

/// The command line and environment to run: the provider file's, plus the profile's only as the
/// provider's policies allow. Pure, so the policy rules are unit-tested.
pub fn command_spec(
    exec: &ExecConfig,
    entry: &ProviderEntry,
    cluster: &Cluster,
) -> Result<CommandSpec, ExecError> {
    let mut args = exec.args.clone();
    if entry.profile_sourced_cli_args_policy == ArgsPolicy::Append
        && let Some(extra) = cluster.extension(EXTENSION_EXEC_ADDITIONAL_ARGS)
    {
        let extra: Vec<String> = serde_json::from_value(extra.clone()).map_err(|_| {
            ExecError::Extension(format!(
                "{EXTENSION_EXEC_ADDITIONAL_ARGS} must be a list of strings"
            ))
        })?;
        args.extend(extra);
    }
    let mut env: Vec<(String, String)> = exec
        .env
        .iter()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect();
    if entry.profile_sourced_env_vars_policy != EnvPolicy::Ignore
        && let Some(extra) = cluster.extension(EXTENSION_EXEC_ADDITIONAL_ENVS)
    {
        let extra: BTreeMap<String, String> =
            serde_json::from_value(extra.clone()).map_err(|_| {
                ExecError::Extension(format!(
                    "{EXTENSION_EXEC_ADDITIONAL_ENVS} must be a map of strings"
                ))
            })?;
        for (name, value) in extra {
            if let Some(why) = refused_profile_env(&name) {
                return Err(ExecError::Extension(format!(
                    "{EXTENSION_EXEC_ADDITIONAL_ENVS} may not set {name:?}: {why}"
                )));
            }
            match env.iter_mut().find(|(n, _)| *n == name) {
                Some(existing) => {
                    if entry.profile_sourced_env_vars_policy == EnvPolicy::Replace {
                        existing.1 = value;
                    }
                }
                None => env.push((name, value)),
            }
        }
    }
    Ok((args, env))
}

/// Why a profile may not set environment variable `name`, if it may not. Profiles are written by
/// less trusted parties than the operator: they must never steer what the plugin loads (`PATH`,
/// `LD_*`, `DYLD_*`, interpreter paths), where it connects (`*_PROXY`, CA bundles), or which
/// credentials and config files it reads (`HOME`, `KUBECONFIG`, cloud SDK settings).
pub fn refused_profile_env(name: &str) -> Option<&'static str> {
    let upper = name.to_ascii_uppercase();
    if name.is_empty() || name.contains('=') || name.contains('\0') {
        return Some("not a variable name");
    }
    const LOADER_PREFIXES: [&str; 3] = ["LD_", "DYLD_", "GCONV_"];
    const EXACT: [&str; 16] = [
        "PATH",
        "HOME",
        "KUBECONFIG",
        "KUBERNETES_EXEC_INFO",
        "SHELL",
        "ENV",
        "BASH_ENV",
        "IFS",
        "TMPDIR",
        "PYTHONPATH",
        "PYTHONHOME",
        "NODE_OPTIONS",
        "PERL5LIB",
        "RUBYOPT",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ];
    if LOADER_PREFIXES.iter().any(|p| upper.starts_with(p)) {
        return Some("it changes what the plugin loads");
    }
    if upper.ends_with("_PROXY") {
        return Some("it changes where the plugin connects");
    }
    if EXACT.contains(&upper.as_str()) || upper.starts_with("XDG_") {
        return Some("it changes what the plugin runs or reads");
    }
    if ["AWS_", "AZURE_", "GOOGLE_", "CLOUDSDK_", "VAULT_"]
        .iter()
        .any(|p| upper.starts_with(p))
        && (upper.ends_with("_FILE")
            || upper.ends_with("_ADDR")
            || upper.ends_with("_ENDPOINT")
            || upper.contains("CONFIG")
            || upper.contains("CREDENTIAL"))
    {
        return Some("it points the plugin at other credentials or endpoints");
    }
    None
}

/// `KUBERNETES_EXEC_INFO` for this plugin and cluster.
pub fn exec_info(exec: &ExecConfig, cluster: &Cluster) -> Value {
    let mut spec = json!({ "interactive": false });
    if exec.provide_cluster_info {
        let mut info = json!({ "server": cluster.server });
        if let Some(name) = &cluster.tls_server_name {
            info["tls-server-name"] = json!(name);
        }
        if let Some(insecure) = cluster.insecure_skip_tls_verify {
            info["insecure-skip-tls-verify"] = json!(insecure);
        }
        if let Some(ca) = &cluster.certificate_authority_data {
            info["certificate-authority-data"] = json!(ca);
        }
        if let Some(proxy) = &cluster.proxy_url {
            info["proxy-url"] = json!(proxy);
        }
        if let Some(disable) = cluster.disable_compression {
            info["disable-compression"] = json!(disable);
        }
        if let Some(config) = cluster.extension(EXTENSION_EXEC) {
            info["config"] = config.clone();
        }
        spec["cluster"] = info;
    }
    json!({ "apiVersion": exec.api_version, "kind": "ExecCredential", "spec": spec })
}

/// The credential in a plugin's stdout.
pub fn parse_output(exec: &ExecConfig, stdout: &[u8]) -> Result<Credential, String> {
    let value: Value =
        serde_json::from_slice(stdout).map_err(|_| "stdout is not JSON".to_string())?;
    if value.get("kind").and_then(Value::as_str) != Some("ExecCredential") {
        return Err("kind is not ExecCredential".into());
    }
    let api_version = value.get("apiVersion").and_then(Value::as_str);
    if api_version != Some(exec.api_version.as_str()) {
        return Err(format!(
            "apiVersion {api_version:?} does not match the configured {:?}",
            exec.api_version
        ));
    }
    let status = value.get("status").ok_or("no status")?;
    let text = |field: &str| {
        status
            .get(field)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(token) = text("token") {
        return Ok(Credential::Token(Sensitive::new(token)));
    }
    match (text("clientCertificateData"), text("clientKeyData")) {
        (Some(cert), Some(key)) => Ok(Credential::ClientCertificate {
            // client-go carries PEM text here; accept base64 PEM too.
            certificate_pem: if cert.contains("-----BEGIN") {
                cert.to_string()
            } else {
                decode_pem(cert).ok_or("clientCertificateData is not PEM")?
            },
            key_pem: Sensitive::new(if key.contains("-----BEGIN") {
                key.to_string()
            } else {
                decode_pem(key).ok_or("clientKeyData is not PEM")?
            }),
        }),
        _ => Err("status has neither token nor clientCertificateData and clientKeyData".into()),
    }
}

fn kill_group(group: Option<u32>) {
    if let Some(pid) = group.and_then(|pid| i32::try_from(pid).ok()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Run the plugin and return its credential.
pub async fn run(
    exec: &ExecConfig,
    entry: &ProviderEntry,
    cluster: &Cluster,
    timeout: Duration,
) -> Result<Credential, ExecError> {
    let (args, env) = command_spec(exec, entry, cluster)?;
    let info = exec_info(exec, cluster).to_string();
    let mut command = tokio::process::Command::new(&exec.command);
    command
        .args(&args)
        // A minimal environment: the controller's own (its service account, its proxies, its
        // cloud credentials) is none of the plugin's business. PATH is the operator's.
        .env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        )
        .envs(env)
        .env("KUBERNETES_EXEC_INFO", info)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout also ends whatever the plugin started.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|err| ExecError::Start {
        command: exec.command.clone(),
        reason: err.to_string(),
    })?;
    let group = child.id();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let collect = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let read_out = async {
            if let Some(pipe) = stdout.as_mut() {
                let _ = pipe.take(MAX_STDOUT).read_to_end(&mut out).await;
            }
        };
        let read_err = async {
            if let Some(pipe) = stderr.as_mut() {
                let _ = pipe.take(MAX_STDOUT).read_to_end(&mut err).await;
            }
        };
        tokio::join!(read_out, read_err);
        let status = child.wait().await;
        (status, out, err)
    };
    let outcome = tokio::time::timeout(timeout, collect).await;
    // Whatever the plugin left running (a hung child, a background helper holding its stdout)
    // goes with it; the group is gone already in the common case.
    kill_group(group);
    let (status, out, err) = match outcome {
        Ok(result) => result,
        Err(_) => {
            return Err(ExecError::Timeout {
                command: exec.command.clone(),
                timeout,
            });
        }
    };
    let status = status.map_err(|err| ExecError::Start {
        command: exec.command.clone(),
        reason: err.to_string(),
    })?;
    if !status.success() {
        let text = String::from_utf8_lossy(&err);
        let mut stderr = redact_credential_like(text.trim());
        if stderr.len() > MAX_STDERR {
            let mut end = MAX_STDERR;
            while !stderr.is_char_boundary(end) {
                end -= 1;
            }
            stderr.truncate(end);
            stderr.push('…');
        }
        return Err(ExecError::Failed {
            command: exec.command.clone(),
            status: status.to_string(),
            stderr,
        });
    }
    parse_output(exec, &out).map_err(|reason| ExecError::BadOutput {
        command: exec.command.clone(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::EnvVar;
    use crate::profile::NamedExtension;

    fn exec() -> ExecConfig {
        ExecConfig {
            api_version: "client.authentication.k8s.io/v1".into(),
            command: "plugin".into(),
            args: vec!["--base".into()],
            env: vec![EnvVar {
                name: "A".into(),
                value: "file".into(),
            }],
            provide_cluster_info: true,
        }
    }

    fn cluster() -> Cluster {
        Cluster {
            server: "https://m:6443".into(),
            certificate_authority_data: Some("Q0E=".into()),
            extensions: vec![
                NamedExtension {
                    name: EXTENSION_EXEC.into(),
                    extension: json!({"clusterName": "m1"}),
                },
                NamedExtension {
                    name: EXTENSION_EXEC_ADDITIONAL_ARGS.into(),
                    extension: json!(["--extra"]),
                },
                NamedExtension {
                    name: EXTENSION_EXEC_ADDITIONAL_ENVS.into(),
                    extension: json!({"A": "profile", "B": "profile"}),
                },
            ],
            ..Cluster::default()
        }
    }

    fn entry(args: ArgsPolicy, env: EnvPolicy) -> ProviderEntry {
        ProviderEntry {
            profile_sourced_cli_args_policy: args,
            profile_sourced_env_vars_policy: env,
            exec_config: Some(exec()),
            ..ProviderEntry::builtin("vault")
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn profile_args_and_envs_only_as_the_policy_allows() {
        let (args, env) = command_spec(
            &exec(),
            &entry(ArgsPolicy::Ignore, EnvPolicy::Ignore),
            &cluster(),
        )
        .unwrap();
        assert_eq!(args, vec!["--base"]);
        assert_eq!(env, pairs(&[("A", "file")]));

        let (args, env) = command_spec(
            &exec(),
            &entry(ArgsPolicy::Append, EnvPolicy::AppendIfNotExists),
            &cluster(),
        )
        .unwrap();
        assert_eq!(args, vec!["--base", "--extra"]);
        assert_eq!(env, pairs(&[("A", "file"), ("B", "profile")]));

        let (_, env) = command_spec(
            &exec(),
            &entry(ArgsPolicy::Ignore, EnvPolicy::Replace),
            &cluster(),
        )
        .unwrap();
        assert_eq!(env, pairs(&[("A", "profile"), ("B", "profile")]));
    }

    #[test]
    fn profiles_can_never_set_loader_network_or_credential_variables() {
        for refused in [
            "PATH",
            "path",
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "DYLD_INSERT_LIBRARIES",
            "HTTPS_PROXY",
            "https_proxy",
            "NO_PROXY",
            "ALL_PROXY",
            "HOME",
            "KUBECONFIG",
            "KUBERNETES_EXEC_INFO",
            "SSL_CERT_FILE",
            "AWS_CONFIG_FILE",
            "VAULT_ADDR",
            "XDG_CONFIG_HOME",
            "BASH_ENV",
            "A=B",
            "",
        ] {
            assert!(refused_profile_env(refused).is_some(), "{refused}");
        }
        for allowed in ["REGION", "ROLE", "CLUSTER_NAME", "AWS_REGION"] {
            assert_eq!(refused_profile_env(allowed), None, "{allowed}");
        }
        let mut cluster = cluster();
        cluster
            .extensions
            .retain(|e| e.name != EXTENSION_EXEC_ADDITIONAL_ENVS);
        cluster.extensions.push(crate::profile::NamedExtension {
            name: EXTENSION_EXEC_ADDITIONAL_ENVS.into(),
            extension: json!({"LD_PRELOAD": "/tmp/evil.so"}),
        });
        let err = command_spec(
            &exec(),
            &entry(ArgsPolicy::Ignore, EnvPolicy::Replace),
            &cluster,
        )
        .unwrap_err();
        assert!(err.to_string().contains("LD_PRELOAD"), "{err}");
    }

    #[test]
    fn exec_info_passes_the_cluster_and_the_exec_extension_as_config() {
        let info = exec_info(&exec(), &cluster());
        assert_eq!(info["kind"], "ExecCredential");
        assert_eq!(info["spec"]["cluster"]["server"], "https://m:6443");
        assert_eq!(
            info["spec"]["cluster"]["certificate-authority-data"],
            "Q0E="
        );
        assert_eq!(
            info["spec"]["cluster"]["config"],
            json!({"clusterName": "m1"})
        );
        let mut without = exec();
        without.provide_cluster_info = false;
        assert!(
            exec_info(&without, &cluster())["spec"]
                .get("cluster")
                .is_none()
        );
    }

    #[test]
    fn output_parsing_accepts_tokens_and_certificates_and_never_quotes_output() {
        let ok = br#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"t0k"}}"#;
        assert_eq!(
            parse_output(&exec(), ok).unwrap(),
            Credential::Token(Sensitive::new("t0k"))
        );
        let cert = br#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"clientCertificateData":"-----BEGIN CERTIFICATE-----\nX","clientKeyData":"-----BEGIN KEY-----\nY"}}"#;
        assert!(matches!(
            parse_output(&exec(), cert).unwrap(),
            Credential::ClientCertificate { .. }
        ));
        for bad in [
            &b"token: secret-abc"[..],
            br#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1beta1","status":{"token":"secret-abc"}}"#,
            br#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","status":{}}"#,
        ] {
            let err = parse_output(&exec(), bad).unwrap_err();
            assert!(!err.contains("secret-abc"), "{err}");
        }
    }
}
