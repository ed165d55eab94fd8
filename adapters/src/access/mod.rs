//! Bootstrap access to a member: which access provider of a profile to use (the KEP-4322 provider
//! file, in the file's order), and the credential it yields — from the built-in providers
//! (`kubeconfig-secret`, `token-secret`) or from an exec plugin (client-go exec protocol).

pub mod exec;

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::kubeconfig::{Credential, Endpoint, KubeconfigError, bootstrap_credential};
use crate::profile::{AccessProvider, ClusterProfile, EXTENSION_EXEC};
use crate::sensitive::Sensitive;

/// Built-in provider: a kubeconfig in a hub Secret (upstream kubeconfig-secretreader contract).
pub const PROVIDER_KUBECONFIG_SECRET: &str = "kubeconfig-secret";
/// Built-in provider: a bearer token in a hub Secret (upstream secretreader contract).
pub const PROVIDER_TOKEN_SECRET: &str = "token-secret";

/// Why bootstrap access could not be obtained. Each variant is one bounded category.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The profile offers no provider the provider file knows.
    #[error("no usable access provider: {0}")]
    NoProvider(String),
    /// The provider's configuration (file entry or profile extension) is unusable.
    #[error("access provider {provider:?} is misconfigured: {message}")]
    ProviderConfig {
        /// Provider name.
        provider: String,
        /// What is wrong.
        message: String,
    },
    /// A built-in provider's Secret is missing or holds unusable data.
    #[error("access provider {provider:?}: {message}")]
    BootstrapSecret {
        /// Provider name.
        provider: String,
        /// What is wrong (never the data).
        message: String,
    },
    /// The exec plugin failed.
    #[error("access provider {provider:?}: {source}")]
    Exec {
        /// Provider name.
        provider: String,
        /// The failure.
        source: exec::ExecError,
    },
}

impl AccessError {
    /// The bounded category (metric label).
    pub fn category(&self) -> &'static str {
        match self {
            AccessError::NoProvider(_) => "no-access-provider",
            AccessError::ProviderConfig { .. } => "provider-config",
            AccessError::BootstrapSecret { .. } => "bootstrap-secret",
            AccessError::Exec { .. } => "exec-plugin",
        }
    }
}

/// `profileSourcedCLIArgsPolicy`: what to do with args the profile supplies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArgsPolicy {
    /// Append them to the provider file's args.
    Append,
    /// Ignore them (also the meaning of an empty policy).
    #[default]
    #[serde(alias = "")]
    Ignore,
}

/// `profileSourcedEnvVarsPolicy`: what to do with environment the profile supplies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnvPolicy {
    /// Add variables the provider file does not set.
    AppendIfNotExists,
    /// Profile values win over the provider file's.
    Replace,
    /// Ignore them (also the meaning of an empty policy).
    #[default]
    #[serde(alias = "")]
    Ignore,
}

/// One environment variable of an exec config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    /// Name.
    pub name: String,
    /// Value.
    #[serde(default)]
    pub value: String,
}

/// client-go's `ExecConfig`, the fields that matter here (others are accepted and ignored).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecConfig {
    /// `client.authentication.k8s.io/v1` or `/v1beta1`.
    #[serde(default = "default_exec_api_version")]
    pub api_version: String,
    /// The plugin binary.
    pub command: String,
    /// Arguments from the provider file.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment from the provider file.
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Whether to pass the cluster (and the exec extension as `config`) in `KUBERNETES_EXEC_INFO`.
    #[serde(default)]
    pub provide_cluster_info: bool,
}

fn default_exec_api_version() -> String {
    "client.authentication.k8s.io/v1".into()
}

/// One provider entry of the provider file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderEntry {
    /// Matched against the names in a profile's `status.accessProviders`.
    pub name: String,
    /// How to run its plugin; absent for the built-in providers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_config: Option<ExecConfig>,
    /// Profile-sourced args policy.
    #[serde(default, rename = "profileSourcedCLIArgsPolicy")]
    pub profile_sourced_cli_args_policy: ArgsPolicy,
    /// Profile-sourced environment policy.
    #[serde(default)]
    pub profile_sourced_env_vars_policy: EnvPolicy,
    /// inventory-bridge extension: honour `insecure-skip-tls-verify` from profiles using this
    /// provider. Off by default, so a profile alone can never disable certificate checks.
    #[serde(
        default,
        rename = "allowInsecureSkipTLSVerify",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub allow_insecure_skip_tls_verify: bool,
    /// inventory-bridge extension: serve this provider name with a built-in provider
    /// (`kubeconfig-secret` or `token-secret`) instead of a plugin. Sources publish their own
    /// provider names (`cluster-api`, `open-cluster-management`), so this maps them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<String>,
}

impl ProviderEntry {
    /// A built-in provider entry (no plugin), matched by the built-in's own name.
    pub fn builtin(name: &str) -> Self {
        Self::builtin_as(name, name)
    }

    /// Provider `name` served by the built-in provider `builtin`.
    pub fn builtin_as(name: &str, builtin: &str) -> Self {
        Self {
            name: name.to_string(),
            exec_config: None,
            profile_sourced_cli_args_policy: ArgsPolicy::Ignore,
            profile_sourced_env_vars_policy: EnvPolicy::Ignore,
            allow_insecure_skip_tls_verify: false,
            builtin: (name != builtin).then(|| builtin.to_string()),
        }
    }

    /// The built-in provider serving this entry, if it has no plugin.
    pub fn builtin_kind(&self) -> Option<&str> {
        if self.exec_config.is_some() {
            return None;
        }
        let kind = self.builtin.as_deref().unwrap_or(&self.name);
        [PROVIDER_KUBECONFIG_SECRET, PROVIDER_TOKEN_SECRET]
            .into_iter()
            .find(|builtin| *builtin == kind)
    }
}

/// Provider name capi-source publishes by default (a kubeconfig Secret reference).
pub const CAPI_SOURCE_PROVIDER: &str = "cluster-api";
/// Provider name ocm-source publishes by default (a token Secret reference).
pub const OCM_SOURCE_PROVIDER: &str = "open-cluster-management";

/// The provider file (`--clusterprofile-provider-file`), upstream's JSON format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderFile {
    /// Providers in order of preference.
    pub providers: Vec<ProviderEntry>,
}

impl Default for ProviderFile {
    /// Without a file: our sources' default providers served by the built-ins they are made
    /// for, then the built-ins under their own names.
    fn default() -> Self {
        Self {
            providers: vec![
                ProviderEntry::builtin_as(CAPI_SOURCE_PROVIDER, PROVIDER_KUBECONFIG_SECRET),
                ProviderEntry::builtin_as(OCM_SOURCE_PROVIDER, PROVIDER_TOKEN_SECRET),
                ProviderEntry::builtin(PROVIDER_KUBECONFIG_SECRET),
                ProviderEntry::builtin(PROVIDER_TOKEN_SECRET),
            ],
        }
    }
}

impl ProviderFile {
    /// Parse and check a provider file: every entry either has an `execConfig` or names a
    /// built-in provider, and names are unique.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: ProviderFile =
            serde_json::from_str(text).map_err(|err| format!("not a provider file: {err}"))?;
        let mut seen = std::collections::BTreeSet::new();
        for entry in &file.providers {
            if entry.name.is_empty() {
                return Err("a provider has an empty name".into());
            }
            if !seen.insert(entry.name.as_str()) {
                return Err(format!("provider {:?} is listed twice", entry.name));
            }
            if entry.exec_config.is_some() && entry.builtin.is_some() {
                return Err(format!(
                    "provider {:?} has both an execConfig and a builtin",
                    entry.name
                ));
            }
            if entry.exec_config.is_none() && entry.builtin_kind().is_none() {
                return Err(format!(
                    "provider {:?} has no execConfig and names no built-in provider ({PROVIDER_KUBECONFIG_SECRET}, {PROVIDER_TOKEN_SECRET}) by name or \"builtin\"",
                    entry.name
                ));
            }
            if let Some(exec) = &entry.exec_config
                && exec.command.is_empty()
            {
                return Err(format!("provider {:?} has an empty command", entry.name));
            }
        }
        Ok(file)
    }

    /// Read and parse the provider file at `path`.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        Self::parse(&text).map_err(|err| format!("{}: {err}", path.display()))
    }

    /// The first provider in the file's order that the profile offers, with the profile's entry.
    pub fn select<'a>(
        &'a self,
        offered: &[&'a AccessProvider],
    ) -> Option<(&'a ProviderEntry, &'a AccessProvider)> {
        self.providers.iter().find_map(|entry| {
            offered
                .iter()
                .find(|p| p.name == entry.name && p.cluster.is_some())
                .map(|p| (entry, *p))
        })
    }
}

/// Bootstrap access to one member: where it is and how to authenticate.
#[derive(Clone, Debug)]
pub struct MemberAccess {
    /// Name of the provider used.
    pub provider: String,
    /// The member's endpoint.
    pub endpoint: Endpoint,
    /// The bootstrap credential.
    pub credential: Credential,
}

/// Where access is resolved: the hub (for built-in providers' Secrets) and the settings.
pub struct Resolver<'a> {
    /// Hub client.
    pub hub: &'a Client,
    /// Provider file.
    pub providers: &'a ProviderFile,
    /// Namespace for `token-secret`'s `{clusterName}` form; default: the profile's namespace.
    pub credentials_namespace: Option<&'a str>,
    /// Exec plugin timeout.
    pub exec_timeout: std::time::Duration,
}

/// Which provider and endpoint a profile would use, without fetching credentials.
pub fn choose<'a>(
    providers: &'a ProviderFile,
    profile: &'a ClusterProfile,
) -> Result<(&'a ProviderEntry, &'a AccessProvider, Endpoint), AccessError> {
    let offered = profile
        .status
        .as_ref()
        .map(|s| s.effective_access_providers())
        .unwrap_or_default();
    let Some((entry, provider)) = providers.select(&offered) else {
        let names: Vec<&str> = offered.iter().map(|p| p.name.as_str()).collect();
        let known: Vec<&str> = providers
            .providers
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        return Err(AccessError::NoProvider(format!(
            "the profile offers {names:?}, the provider file knows {known:?}"
        )));
    };
    let cluster = provider
        .cluster
        .as_ref()
        .ok_or_else(|| AccessError::NoProvider("provider has no cluster".into()))?;
    let endpoint = Endpoint::from_cluster(cluster, entry.allow_insecure_skip_tls_verify).map_err(
        |err: KubeconfigError| AccessError::ProviderConfig {
            provider: entry.name.clone(),
            message: err.to_string(),
        },
    )?;
    Ok((entry, provider, endpoint))
}

impl Resolver<'_> {
    /// Resolve bootstrap access for `profile`.
    pub async fn resolve(&self, profile: &ClusterProfile) -> Result<MemberAccess, AccessError> {
        let (entry, provider, endpoint) = choose(self.providers, profile)?;
        let cluster = provider
            .cluster
            .as_ref()
            .ok_or_else(|| AccessError::NoProvider("provider has no cluster".into()))?;
        let profile_namespace = profile.metadata.namespace.as_deref().unwrap_or_default();
        let credential = if let Some(exec_config) = &entry.exec_config {
            exec::run(exec_config, entry, cluster, self.exec_timeout)
                .await
                .map_err(|source| AccessError::Exec {
                    provider: entry.name.clone(),
                    source,
                })?
        } else if entry.builtin_kind() == Some(PROVIDER_KUBECONFIG_SECRET) {
            self.kubeconfig_secret(entry, cluster.extension(EXTENSION_EXEC), profile_namespace)
                .await?
        } else {
            self.token_secret(entry, cluster.extension(EXTENSION_EXEC), profile_namespace)
                .await?
        };
        Ok(MemberAccess {
            provider: entry.name.clone(),
            endpoint,
            credential,
        })
    }

    async fn secret_value(
        &self,
        provider: &str,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Result<String, AccessError> {
        let fail = |message: String| AccessError::BootstrapSecret {
            provider: provider.to_string(),
            message,
        };
        let secrets: Api<Secret> = Api::namespaced(self.hub.clone(), namespace);
        let secret = secrets
            .get_opt(name)
            .await
            .map_err(|err| fail(format!("cannot read Secret {namespace}/{name}: {err}")))?
            .ok_or_else(|| fail(format!("Secret {namespace}/{name} not found")))?;
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone())
            .ok_or_else(|| fail(format!("Secret {namespace}/{name} has no key {key:?}")))?;
        String::from_utf8(bytes)
            .map_err(|_| fail(format!("Secret {namespace}/{name} key {key:?} is not text")))
    }

    async fn kubeconfig_secret(
        &self,
        entry: &ProviderEntry,
        extension: Option<&Value>,
        profile_namespace: &str,
    ) -> Result<Credential, AccessError> {
        let config = BuiltinConfig::parse(&entry.name, extension)?;
        let (Some(name), Some(key)) = (config.name.as_deref(), config.key.as_deref()) else {
            return Err(AccessError::ProviderConfig {
                provider: entry.name.clone(),
                message: format!("the {EXTENSION_EXEC} extension needs name and key"),
            });
        };
        let namespace = config.namespace.as_deref().unwrap_or(profile_namespace);
        let text = self.secret_value(&entry.name, namespace, name, key).await?;
        bootstrap_credential(&text, config.context.as_deref()).map_err(|err| {
            AccessError::BootstrapSecret {
                provider: entry.name.clone(),
                message: format!("Secret {namespace}/{name} key {key:?}: {err}"),
            }
        })
    }

    async fn token_secret(
        &self,
        entry: &ProviderEntry,
        extension: Option<&Value>,
        profile_namespace: &str,
    ) -> Result<Credential, AccessError> {
        let config = BuiltinConfig::parse(&entry.name, extension)?;
        let default_namespace = self.credentials_namespace.unwrap_or(profile_namespace);
        let (namespace, name) = match (&config.name, &config.cluster_name) {
            (Some(name), _) => (
                config.namespace.as_deref().unwrap_or(default_namespace),
                name.as_str(),
            ),
            (None, Some(cluster)) => (default_namespace, cluster.as_str()),
            (None, None) => {
                return Err(AccessError::ProviderConfig {
                    provider: entry.name.clone(),
                    message: format!(
                        "the {EXTENSION_EXEC} extension needs {{name, namespace, key?}} or {{clusterName}}"
                    ),
                });
            }
        };
        let key = config.key.as_deref().unwrap_or("token");
        let token = self.secret_value(&entry.name, namespace, name, key).await?;
        let token = token.trim();
        if token.is_empty() || token.contains(char::is_whitespace) {
            return Err(AccessError::BootstrapSecret {
                provider: entry.name.clone(),
                message: format!("Secret {namespace}/{name} key {key:?} is not a bearer token"),
            });
        }
        Ok(Credential::Token(Sensitive::new(token)))
    }
}

/// The built-in providers' configuration, from the profile's exec extension.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BuiltinConfig {
    name: Option<String>,
    namespace: Option<String>,
    key: Option<String>,
    context: Option<String>,
    cluster_name: Option<String>,
}

impl BuiltinConfig {
    fn parse(provider: &str, extension: Option<&Value>) -> Result<Self, AccessError> {
        let Some(value) = extension else {
            return Err(AccessError::ProviderConfig {
                provider: provider.to_string(),
                message: format!("the access provider has no {EXTENSION_EXEC} extension"),
            });
        };
        serde_json::from_value(value.clone()).map_err(|err| AccessError::ProviderConfig {
            provider: provider.to_string(),
            message: format!("the {EXTENSION_EXEC} extension: {err}"),
        })
    }
}

/// Decode base64 data from an ExecCredential or Secret (helper shared with the exec module).
pub(crate) fn decode_pem(data: &str) -> Option<String> {
    BASE64
        .decode(data.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{Cluster, ClusterProfileStatus};

    #[test]
    fn default_providers_serve_our_sources_defaults_with_the_matching_built_in() {
        let file = ProviderFile::default();
        for (offered_name, builtin) in [
            (CAPI_SOURCE_PROVIDER, PROVIDER_KUBECONFIG_SECRET),
            (OCM_SOURCE_PROVIDER, PROVIDER_TOKEN_SECRET),
            (PROVIDER_KUBECONFIG_SECRET, PROVIDER_KUBECONFIG_SECRET),
            (PROVIDER_TOKEN_SECRET, PROVIDER_TOKEN_SECRET),
        ] {
            let providers = offered(&[offered_name]);
            let refs: Vec<&AccessProvider> = providers.iter().collect();
            let (entry, provider) = file.select(&refs).unwrap();
            assert_eq!(provider.name, offered_name);
            assert_eq!(entry.builtin_kind(), Some(builtin), "{offered_name}");
        }
    }

    #[test]
    fn builtin_maps_any_provider_name_and_is_checked() {
        let file = ProviderFile::parse(
            r#"{"providers": [{"name": "fleet-a", "builtin": "token-secret"}]}"#,
        )
        .unwrap();
        assert_eq!(
            file.providers[0].builtin_kind(),
            Some(PROVIDER_TOKEN_SECRET)
        );
        assert!(
            ProviderFile::parse(r#"{"providers": [{"name": "fleet-a", "builtin": "vault"}]}"#)
                .is_err()
        );
        assert!(
            ProviderFile::parse(
                r#"{"providers": [{"name": "a", "builtin": "token-secret", "execConfig": {"command": "x"}}]}"#
            )
            .is_err()
        );
    }

    fn offered(names: &[&str]) -> Vec<AccessProvider> {
        names
            .iter()
            .map(|n| AccessProvider {
                name: n.to_string(),
                cluster: Some(Cluster {
                    server: format!("https://{n}"),
                    ..Cluster::default()
                }),
            })
            .collect()
    }

    #[test]
    fn upstream_provider_file_parses_with_policies_and_our_opt_in() {
        let file = ProviderFile::parse(
            r#"{"providers": [
                {"name": "vault", "execConfig": {"apiVersion": "client.authentication.k8s.io/v1",
                  "command": "/bin/vault-plugin", "args": ["--a"], "env": [{"name": "X", "value": "1"}],
                  "provideClusterInfo": true, "interactiveMode": "Never"},
                 "profileSourcedCLIArgsPolicy": "Append", "profileSourcedEnvVarsPolicy": "Replace",
                 "allowInsecureSkipTLSVerify": true},
                {"name": "token-secret"},
                {"name": "other", "execConfig": {"command": "x"}, "profileSourcedCLIArgsPolicy": ""}
            ]}"#,
        )
        .unwrap();
        assert_eq!(file.providers.len(), 3);
        let vault = &file.providers[0];
        assert_eq!(vault.profile_sourced_cli_args_policy, ArgsPolicy::Append);
        assert_eq!(vault.profile_sourced_env_vars_policy, EnvPolicy::Replace);
        assert!(vault.allow_insecure_skip_tls_verify);
        assert!(vault.exec_config.as_ref().unwrap().provide_cluster_info);
        assert_eq!(
            file.providers[2].profile_sourced_cli_args_policy,
            ArgsPolicy::Ignore
        );
        assert_eq!(
            file.providers[2].profile_sourced_env_vars_policy,
            EnvPolicy::Ignore
        );
        assert!(!file.providers[1].allow_insecure_skip_tls_verify);
    }

    #[test]
    fn bad_provider_files_are_refused() {
        assert!(ProviderFile::parse(r#"{"providers": [{"name": "unknown"}]}"#).is_err());
        assert!(
            ProviderFile::parse(r#"{"providers": [{"name": "a", "execConfig": {"command": ""}}]}"#)
                .is_err()
        );
        assert!(
            ProviderFile::parse(
                r#"{"providers": [{"name": "token-secret"}, {"name": "token-secret"}]}"#
            )
            .is_err()
        );
        assert!(ProviderFile::parse("providers: []").is_err());
    }

    #[test]
    fn selection_follows_the_file_order_not_the_profile_order() {
        let file = ProviderFile::parse(
            r#"{"providers": [{"name": "token-secret"}, {"name": "kubeconfig-secret"}]}"#,
        )
        .unwrap();
        let providers = offered(&["kubeconfig-secret", "token-secret"]);
        let refs: Vec<&AccessProvider> = providers.iter().collect();
        assert_eq!(file.select(&refs).unwrap().0.name, "token-secret");
        let only_other = offered(&["ocm"]);
        let refs: Vec<&AccessProvider> = only_other.iter().collect();
        assert!(file.select(&refs).is_none());
    }

    #[test]
    fn choose_reports_what_was_offered_and_known() {
        let profile = ClusterProfile {
            metadata: Default::default(),
            spec: Default::default(),
            status: Some(ClusterProfileStatus {
                access_providers: offered(&["ocm"]),
                ..ClusterProfileStatus::default()
            }),
        };
        let err = choose(&ProviderFile::default(), &profile).unwrap_err();
        assert_eq!(err.category(), "no-access-provider");
        assert!(err.to_string().contains("ocm"), "{err}");
        assert!(err.to_string().contains("token-secret"), "{err}");
    }
}
