//! Bootstrap access to a member: which access provider of a profile to use (the KEP-4322 provider
//! file, in the file's order), and the credential it yields — from the built-in providers
//! (`kubeconfig-secret`, `token-secret`, in [`builtin`]) or from an exec plugin (client-go exec
//! protocol, in [`exec`]).
//!
//! Trust boundary. Whoever writes a ClusterProfile is not trusted with credentials, so a profile
//! only *points*; the operator's provider file decides what may be followed:
//! - a provider entry serves only profiles of the cluster managers it trusts (`clusterManagers`);
//! - a built-in reads its Secret only from the namespaces the entry allows (`secretNamespaces`) and
//!   only when the Secret carries the marks its source's contract gives it;
//! - a built-in's credential goes only to the server its own record names (the kubeconfig's
//!   cluster; the ManagedCluster of a token Secret's namespace). A profile naming another endpoint
//!   gets `endpoint-mismatch` and nothing is sent.

pub mod builtin;
pub mod exec;

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::kubeconfig::{Credential, Endpoint, KubeconfigError};
use crate::names::is_dns1123_label;
use crate::profile::{AccessProvider, Cluster, ClusterProfile, LABEL_CLUSTER_MANAGER};

pub use builtin::{Resolver, SecretRef};

/// Built-in provider: a kubeconfig in a hub Secret (upstream kubeconfig-secretreader contract).
pub const PROVIDER_KUBECONFIG_SECRET: &str = "kubeconfig-secret";
/// Built-in provider: a bearer token in a hub Secret (upstream secretreader contract).
pub const PROVIDER_TOKEN_SECRET: &str = "token-secret";

/// Provider name capi-source publishes by default (a kubeconfig Secret reference).
pub const CAPI_SOURCE_PROVIDER: &str = "cluster-api";
/// Provider name ocm-source publishes by default (a token Secret reference).
pub const OCM_SOURCE_PROVIDER: &str = "open-cluster-management";

/// `spec.clusterManager.name` capi-source writes.
pub const MANAGER_CLUSTER_API: &str = "cluster-api";
/// `spec.clusterManager.name` ocm-source writes.
pub const MANAGER_OCM: &str = "open-cluster-management";
/// In `clusterManagers`: every cluster manager (an explicit operator choice, never a default).
pub const ANY_MANAGER: &str = "*";

/// In `secretNamespaces`: the namespace of the profile being served.
pub const NAMESPACE_OF_PROFILE: &str = "{profileNamespace}";
/// In `secretNamespaces`: a namespace that is the hub namespace of an OCM ManagedCluster (same
/// name). The token's endpoint is then that ManagedCluster's, so the namespace is checked too.
pub const NAMESPACE_OF_MANAGED_CLUSTER: &str = "{managedClusterNamespace}";

/// Why bootstrap access could not be obtained. Each variant is one bounded category.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The profile offers no provider the provider file knows.
    #[error("no usable access provider: {0}")]
    NoProvider(String),
    /// The profile's cluster manager is not trusted by any provider it offers.
    #[error("untrusted cluster manager: {0}")]
    UntrustedManager(String),
    /// The provider's configuration (file entry or profile extension) is unusable.
    #[error("access provider {provider:?} is misconfigured: {message}")]
    ProviderConfig {
        /// Provider name.
        provider: String,
        /// What is wrong.
        message: String,
    },
    /// The Secret a profile points at is outside what the operator allowed, or lacks the marks.
    #[error("access provider {provider:?}: {message}")]
    SecretNotAllowed {
        /// Provider name.
        provider: String,
        /// What is wrong (never the data).
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
    /// The profile's endpoint is not the one the credential belongs to: nothing is sent.
    #[error("access provider {provider:?}: {message}; nothing was sent")]
    EndpointMismatch {
        /// Provider name.
        provider: String,
        /// What disagrees.
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
            AccessError::UntrustedManager(_) => "untrusted-manager",
            AccessError::ProviderConfig { .. } => "provider-config",
            AccessError::SecretNotAllowed { .. } => "secret-not-allowed",
            AccessError::BootstrapSecret { .. } => "bootstrap-secret",
            AccessError::EndpointMismatch { .. } => "endpoint-mismatch",
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
    /// inventory-bridge extension: the cluster managers (`x-k8s.io/cluster-manager`) whose
    /// profiles may use this entry. Default for built-ins: `cluster-api` for `kubeconfig-secret`,
    /// `open-cluster-management` for `token-secret`; required for exec plugins; `"*"` = any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_managers: Option<Vec<String>>,
    /// inventory-bridge extension: namespaces a built-in may read its Secret from. Names, or
    /// `{profileNamespace}` / `{managedClusterNamespace}`. Default: `{profileNamespace}` for
    /// `kubeconfig-secret`, `{managedClusterNamespace}` for `token-secret`, plus
    /// `--bootstrap-secret-namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_namespaces: Option<Vec<String>>,
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
            cluster_managers: None,
            secret_namespaces: None,
        }
    }

    /// The built-in provider serving this entry, if it has no plugin.
    pub fn builtin_kind(&self) -> Option<&'static str> {
        if self.exec_config.is_some() {
            return None;
        }
        let kind = self.builtin.as_deref().unwrap_or(&self.name);
        [PROVIDER_KUBECONFIG_SECRET, PROVIDER_TOKEN_SECRET]
            .into_iter()
            .find(|builtin| *builtin == kind)
    }

    /// The cluster managers this entry trusts (explicit, else the built-in's source).
    pub fn trusted_managers(&self) -> Vec<String> {
        if let Some(managers) = &self.cluster_managers {
            return managers.clone();
        }
        match self.builtin_kind() {
            Some(PROVIDER_KUBECONFIG_SECRET) => vec![MANAGER_CLUSTER_API.to_string()],
            Some(PROVIDER_TOKEN_SECRET) => vec![MANAGER_OCM.to_string()],
            _ => Vec::new(),
        }
    }

    /// Whether profiles of `manager` may use this entry.
    pub fn trusts(&self, manager: &str) -> bool {
        !manager.is_empty()
            && self
                .trusted_managers()
                .iter()
                .any(|m| m == ANY_MANAGER || m == manager)
    }

    /// The namespaces this built-in may read Secrets from (before placeholders are resolved):
    /// explicit, else the built-in's default plus `extra` (operator flags).
    pub fn allowed_secret_namespaces(&self, extra: &[String]) -> Vec<String> {
        if let Some(namespaces) = &self.secret_namespaces {
            return namespaces.clone();
        }
        let mut allowed = match self.builtin_kind() {
            Some(PROVIDER_TOKEN_SECRET) => vec![NAMESPACE_OF_MANAGED_CLUSTER.to_string()],
            _ => vec![NAMESPACE_OF_PROFILE.to_string()],
        };
        allowed.extend(extra.iter().cloned());
        allowed
    }
}

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
    /// Parse and check a provider file: every entry either has an `execConfig` (and then names
    /// the cluster managers it trusts) or names a built-in provider, and names are unique.
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
            if let Some(exec) = &entry.exec_config {
                if exec.command.is_empty() {
                    return Err(format!("provider {:?} has an empty command", entry.name));
                }
                // A plugin's credential goes to the server the profile names, so the operator
                // must say whose profiles it serves.
                if entry.cluster_managers.is_none() {
                    return Err(format!(
                        "provider {:?} runs a plugin and must list the cluster managers it trusts (\"clusterManagers\": [...], or [\"*\"])",
                        entry.name
                    ));
                }
            }
            if entry
                .cluster_managers
                .as_ref()
                .is_some_and(|m| m.is_empty() || m.iter().any(String::is_empty))
            {
                return Err(format!(
                    "provider {:?}: clusterManagers must be a non-empty list of names",
                    entry.name
                ));
            }
            if let Some(namespaces) = &entry.secret_namespaces {
                check_secret_namespaces(&entry.name, namespaces)?;
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

    /// The entry named `name`.
    pub fn entry(&self, name: &str) -> Option<&ProviderEntry> {
        self.providers.iter().find(|e| e.name == name)
    }

    /// The first provider in the file's order that the profile offers, with the profile's entry
    /// (ignoring trust; see [`choose`]).
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

/// Check `secretNamespaces`: namespace names or the two placeholders, never empty.
pub fn check_secret_namespaces(provider: &str, namespaces: &[String]) -> Result<(), String> {
    if namespaces.is_empty() {
        return Err(format!(
            "provider {provider:?}: secretNamespaces is empty (no Secret could ever be read)"
        ));
    }
    for namespace in namespaces {
        let placeholder =
            namespace == NAMESPACE_OF_PROFILE || namespace == NAMESPACE_OF_MANAGED_CLUSTER;
        if !placeholder && !is_dns1123_label(namespace) {
            return Err(format!(
                "provider {provider:?}: secretNamespaces entry {namespace:?} is neither a namespace name nor {NAMESPACE_OF_PROFILE} / {NAMESPACE_OF_MANAGED_CLUSTER}"
            ));
        }
    }
    Ok(())
}

/// What a profile asks of the provider file: which provider, which cluster (endpoint and
/// extensions) and on whose behalf. Recorded at mint time, so revocation later follows exactly
/// what minting followed, whatever the profile says by then.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessRequest {
    /// The provider name (an entry of the provider file).
    pub provider: String,
    /// The access provider's cluster as the profile gave it.
    pub cluster: Cluster,
    /// The profile's namespace (the inventory).
    pub profile_namespace: String,
    /// The profile's cluster manager.
    pub manager: String,
}

/// The profile's cluster manager: its `x-k8s.io/cluster-manager` label, which the KEP says
/// equals `spec.clusterManager.name`. A profile where they differ is not trusted at all.
pub fn cluster_manager(profile: &ClusterProfile) -> Result<String, AccessError> {
    let label = profile
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_CLUSTER_MANAGER))
        .cloned()
        .unwrap_or_default();
    let spec = profile.spec.cluster_manager.name.clone();
    if label.is_empty() || label != spec {
        return Err(AccessError::UntrustedManager(format!(
            "label {LABEL_CLUSTER_MANAGER}={label:?} must equal spec.clusterManager.name {spec:?}"
        )));
    }
    Ok(label)
}

/// Which provider a profile would use and the endpoint it advertises, without fetching
/// credentials: the first entry in the file's order that the profile offers AND that trusts its
/// cluster manager.
pub fn choose(
    providers: &ProviderFile,
    profile: &ClusterProfile,
) -> Result<(AccessRequest, Endpoint), AccessError> {
    let offered = profile
        .status
        .as_ref()
        .map(|s| s.effective_access_providers())
        .unwrap_or_default();
    let offered_names: Vec<&str> = offered.iter().map(|p| p.name.as_str()).collect();
    let known: Vec<&str> = providers
        .providers
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    let matching: Vec<(&ProviderEntry, &AccessProvider)> = providers
        .providers
        .iter()
        .filter_map(|entry| {
            offered
                .iter()
                .find(|p| p.name == entry.name && p.cluster.is_some())
                .map(|p| (entry, *p))
        })
        .collect();
    if matching.is_empty() {
        return Err(AccessError::NoProvider(format!(
            "the profile offers {offered_names:?}, the provider file knows {known:?}"
        )));
    }
    let manager = cluster_manager(profile)?;
    let Some((entry, provider)) = matching
        .into_iter()
        .find(|(entry, _)| entry.trusts(&manager))
    else {
        return Err(AccessError::UntrustedManager(format!(
            "no provider the profile offers ({offered_names:?}) trusts cluster manager {manager:?}"
        )));
    };
    let cluster = provider
        .cluster
        .clone()
        .ok_or_else(|| AccessError::NoProvider("provider has no cluster".into()))?;
    let endpoint = Endpoint::from_cluster(&cluster, entry.allow_insecure_skip_tls_verify).map_err(
        |err: KubeconfigError| AccessError::ProviderConfig {
            provider: entry.name.clone(),
            message: err.to_string(),
        },
    )?;
    let request = AccessRequest {
        provider: entry.name.clone(),
        cluster,
        profile_namespace: profile.metadata.namespace.clone().unwrap_or_default(),
        manager,
    };
    Ok((request, endpoint))
}

/// Bootstrap access to one member: where it is and how to authenticate.
#[derive(Clone, Debug)]
pub struct MemberAccess {
    /// Name of the provider used.
    pub provider: String,
    /// The member's endpoint: the credential's own (built-ins) or the profile's (exec plugins).
    pub endpoint: Endpoint,
    /// The bootstrap credential.
    pub credential: Credential,
    /// The Secret it came from (built-ins).
    pub secret: Option<SecretRef>,
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
    use crate::profile::{ClusterManager, ClusterProfileSpec, ClusterProfileStatus};
    use std::collections::BTreeMap;

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

    fn profile(manager: &str, label: Option<&str>, providers: &[&str]) -> ClusterProfile {
        let mut metadata = kube::api::ObjectMeta {
            name: Some("p".into()),
            namespace: Some("fleet".into()),
            ..Default::default()
        };
        if let Some(label) = label {
            metadata.labels = Some(BTreeMap::from([(
                LABEL_CLUSTER_MANAGER.to_string(),
                label.to_string(),
            )]));
        }
        ClusterProfile {
            metadata,
            spec: ClusterProfileSpec {
                cluster_manager: ClusterManager {
                    name: manager.into(),
                },
                ..Default::default()
            },
            status: Some(ClusterProfileStatus {
                access_providers: offered(providers),
                ..ClusterProfileStatus::default()
            }),
        }
    }

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
    fn each_built_in_trusts_only_its_sources_manager_by_default() {
        let file = ProviderFile::default();
        let capi = file.entry(CAPI_SOURCE_PROVIDER).unwrap();
        assert!(capi.trusts(MANAGER_CLUSTER_API));
        assert!(!capi.trusts(MANAGER_OCM));
        assert!(!capi.trusts(""));
        let ocm = file.entry(OCM_SOURCE_PROVIDER).unwrap();
        assert!(ocm.trusts(MANAGER_OCM));
        assert!(!ocm.trusts(MANAGER_CLUSTER_API));
        assert_eq!(
            capi.allowed_secret_namespaces(&["capi-prod".into()]),
            vec![NAMESPACE_OF_PROFILE.to_string(), "capi-prod".to_string()]
        );
        assert_eq!(
            ocm.allowed_secret_namespaces(&[]),
            vec![NAMESPACE_OF_MANAGED_CLUSTER.to_string()]
        );
        let explicit = ProviderFile::parse(
            r#"{"providers": [{"name": "cluster-api", "builtin": "kubeconfig-secret",
                "clusterManagers": ["my-capi"], "secretNamespaces": ["capi-a"]}]}"#,
        )
        .unwrap();
        let entry = &explicit.providers[0];
        assert!(entry.trusts("my-capi") && !entry.trusts(MANAGER_CLUSTER_API));
        assert_eq!(
            entry.allowed_secret_namespaces(&["ignored".into()]),
            vec!["capi-a".to_string()],
            "an explicit list is exactly what is allowed"
        );
    }

    #[test]
    fn choose_skips_providers_that_do_not_trust_the_profiles_manager() {
        let file = ProviderFile::default();
        let capi = profile(
            MANAGER_CLUSTER_API,
            Some(MANAGER_CLUSTER_API),
            &["cluster-api"],
        );
        let (request, endpoint) = choose(&file, &capi).unwrap();
        assert_eq!(request.provider, "cluster-api");
        assert_eq!(request.manager, MANAGER_CLUSTER_API);
        assert_eq!(request.profile_namespace, "fleet");
        assert_eq!(endpoint.server, "https://cluster-api");

        // A profile claiming another manager cannot use the CAPI built-in.
        let foreign = profile("tenant", Some("tenant"), &["cluster-api", "token-secret"]);
        let err = choose(&file, &foreign).unwrap_err();
        assert_eq!(err.category(), "untrusted-manager");
        // The label must equal spec.clusterManager.name.
        let forged = profile("tenant", Some(MANAGER_CLUSTER_API), &["cluster-api"]);
        assert_eq!(
            choose(&file, &forged).unwrap_err().category(),
            "untrusted-manager"
        );
        let unlabelled = profile(MANAGER_CLUSTER_API, None, &["cluster-api"]);
        assert_eq!(
            choose(&file, &unlabelled).unwrap_err().category(),
            "untrusted-manager"
        );
    }

    #[test]
    fn choose_reports_what_was_offered_and_known() {
        let unknown = profile(MANAGER_OCM, Some(MANAGER_OCM), &["ocm"]);
        let err = choose(&ProviderFile::default(), &unknown).unwrap_err();
        assert_eq!(err.category(), "no-access-provider");
        assert!(err.to_string().contains("ocm"), "{err}");
        assert!(err.to_string().contains("token-secret"), "{err}");
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

    #[test]
    fn upstream_provider_file_parses_with_policies_and_our_opt_ins() {
        let file = ProviderFile::parse(
            r#"{"providers": [
                {"name": "vault", "execConfig": {"apiVersion": "client.authentication.k8s.io/v1",
                  "command": "/bin/vault-plugin", "args": ["--a"], "env": [{"name": "X", "value": "1"}],
                  "provideClusterInfo": true, "interactiveMode": "Never"},
                 "profileSourcedCLIArgsPolicy": "Append", "profileSourcedEnvVarsPolicy": "Replace",
                 "allowInsecureSkipTLSVerify": true, "clusterManagers": ["*"]},
                {"name": "token-secret"},
                {"name": "other", "execConfig": {"command": "x"}, "profileSourcedCLIArgsPolicy": "",
                 "clusterManagers": ["cluster-api"]}
            ]}"#,
        )
        .unwrap();
        assert_eq!(file.providers.len(), 3);
        let vault = &file.providers[0];
        assert_eq!(vault.profile_sourced_cli_args_policy, ArgsPolicy::Append);
        assert_eq!(vault.profile_sourced_env_vars_policy, EnvPolicy::Replace);
        assert!(vault.allow_insecure_skip_tls_verify);
        assert!(vault.exec_config.as_ref().unwrap().provide_cluster_info);
        assert!(vault.trusts("anyone"));
        assert_eq!(
            file.providers[2].profile_sourced_cli_args_policy,
            ArgsPolicy::Ignore
        );
        assert_eq!(
            file.providers[2].profile_sourced_env_vars_policy,
            EnvPolicy::Ignore
        );
        assert!(!file.providers[2].trusts("anyone"));
        assert!(!file.providers[1].allow_insecure_skip_tls_verify);
    }

    #[test]
    fn bad_provider_files_are_refused() {
        for bad in [
            r#"{"providers": [{"name": "unknown"}]}"#,
            r#"{"providers": [{"name": "a", "execConfig": {"command": ""}, "clusterManagers": ["*"]}]}"#,
            r#"{"providers": [{"name": "token-secret"}, {"name": "token-secret"}]}"#,
            // A plugin must say whose profiles it serves.
            r#"{"providers": [{"name": "a", "execConfig": {"command": "x"}}]}"#,
            r#"{"providers": [{"name": "token-secret", "clusterManagers": []}]}"#,
            r#"{"providers": [{"name": "token-secret", "secretNamespaces": []}]}"#,
            r#"{"providers": [{"name": "token-secret", "secretNamespaces": ["Bad Name"]}]}"#,
            "providers: []",
        ] {
            assert!(ProviderFile::parse(bad).is_err(), "{bad}");
        }
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
}
