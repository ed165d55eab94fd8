//! The built-in providers and the resolution of any provider under the trust rules of the
//! module above: `kubeconfig-secret` (a kubeconfig in a hub Secret; its cluster is the endpoint)
//! and `token-secret` (a bearer token in a hub Secret; the endpoint is the one OCM records for the
//! cluster whose hub namespace holds the Secret).

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::DynamicObject;
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Api, Client, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    AccessError, AccessRequest, MemberAccess, NAMESPACE_OF_MANAGED_CLUSTER, NAMESPACE_OF_PROFILE,
    PROVIDER_KUBECONFIG_SECRET, ProviderEntry, ProviderFile, decode_pem, exec,
};
use crate::kubeconfig::{Credential, Endpoint, bootstrap_credential, bootstrap_endpoint};
use crate::profile::EXTENSION_EXEC;
use crate::sensitive::Sensitive;

/// Type of Cluster API kubeconfig Secrets (the CAPI contract).
pub const CAPI_SECRET_TYPE: &str = "cluster.x-k8s.io/secret";
/// Label every Cluster API kubeconfig Secret carries (the CAPI contract).
pub const CAPI_CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
/// Label the managed-serviceaccount addon puts on the token Secrets it writes on the hub.
pub const MSA_SECRET_LABEL: &str =
    "authentication.open-cluster-management.io/is-managed-serviceaccount";

/// Where a built-in's Secret is: recorded with each registration (never its content).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Key.
    pub key: String,
}

/// Where access is resolved: the hub (for built-in providers' Secrets) and the settings.
pub struct Resolver<'a> {
    /// Hub client.
    pub hub: &'a Client,
    /// Provider file.
    pub providers: &'a ProviderFile,
    /// Namespace for `token-secret`'s `{clusterName}` form; default: the profile's namespace.
    /// Operator-chosen, so it is also an allowed Secret namespace.
    pub credentials_namespace: Option<&'a str>,
    /// `--bootstrap-secret-namespace`: added to every built-in entry without `secretNamespaces`.
    pub extra_secret_namespaces: &'a [String],
    /// Exec plugin timeout.
    pub exec_timeout: Duration,
}

/// `cluster.open-cluster-management.io/v1` ManagedCluster.
fn managed_clusters() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cluster.open-cluster-management.io", "v1", "ManagedCluster"),
        "managedclusters",
    )
}

/// Why access is resolved: minting trusts only live records; revoking may follow the sink's own
/// record of a member whose ManagedCluster is already gone (see [`Resolver::resolve_to_revoke`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Mint,
    Revoke,
}

impl Resolver<'_> {
    /// Resolve bootstrap access for `request`, whose profile advertises `advertised`. Every trust
    /// rule is checked here.
    pub async fn resolve(
        &self,
        request: &AccessRequest,
        advertised: &Endpoint,
    ) -> Result<MemberAccess, AccessError> {
        self.resolve_for(request, advertised, Purpose::Mint).await
    }

    /// Resolve bootstrap access to revoke what was minted under `request` at `recorded` (the
    /// sink's own record). The same rules apply, with one difference: when a cluster leaves OCM,
    /// its ManagedCluster may be gone before the sinks revoke. The token is then sent only to the
    /// recorded server, verified against the CA the token Secret itself carries (`ca.crt`, written
    /// by OCM's agent): a server that is not that member cannot complete the TLS handshake, so
    /// it never sees the token.
    pub async fn resolve_to_revoke(
        &self,
        request: &AccessRequest,
        recorded: &Endpoint,
    ) -> Result<MemberAccess, AccessError> {
        self.resolve_for(request, recorded, Purpose::Revoke).await
    }

    async fn resolve_for(
        &self,
        request: &AccessRequest,
        advertised: &Endpoint,
        purpose: Purpose,
    ) -> Result<MemberAccess, AccessError> {
        let entry =
            self.providers
                .entry(&request.provider)
                .ok_or_else(|| AccessError::ProviderConfig {
                    provider: request.provider.clone(),
                    message: "the provider is not (or no longer) in the provider file".into(),
                })?;
        if !entry.trusts(&request.manager) {
            return Err(AccessError::UntrustedManager(format!(
                "provider {:?} does not trust cluster manager {:?}",
                entry.name, request.manager
            )));
        }
        if let Some(exec_config) = &entry.exec_config {
            // The plugin chooses its credential knowing the cluster; the endpoint is the
            // profile's, which is why exec entries must name the managers they trust.
            let credential = exec::run(exec_config, entry, &request.cluster, self.exec_timeout)
                .await
                .map_err(|source| AccessError::Exec {
                    provider: entry.name.clone(),
                    source,
                })?;
            return Ok(MemberAccess {
                provider: entry.name.clone(),
                endpoint: advertised.clone(),
                credential,
                secret: None,
            });
        }
        let config = BuiltinConfig::parse(&entry.name, request.cluster.extension(EXTENSION_EXEC))?;
        if entry.builtin_kind() == Some(PROVIDER_KUBECONFIG_SECRET) {
            self.kubeconfig_secret(entry, &config, request, advertised)
                .await
        } else {
            self.token_secret(entry, &config, request, advertised, purpose)
                .await
        }
    }

    /// Whether `namespace` is one the entry may read Secrets from for this request. The
    /// ManagedCluster placeholder is confirmed by the endpoint check, which needs that object.
    fn allowed(&self, entry: &ProviderEntry, request: &AccessRequest, namespace: &str) -> Allowed {
        let mut extra = self.extra_secret_namespaces.to_vec();
        if entry.builtin_kind() != Some(PROVIDER_KUBECONFIG_SECRET)
            && let Some(credentials) = self.credentials_namespace
        {
            extra.push(credentials.to_string());
        }
        let allowed = entry.allowed_secret_namespaces(&extra);
        if allowed.iter().any(|a| {
            a == namespace || (a == NAMESPACE_OF_PROFILE && namespace == request.profile_namespace)
        }) {
            return Allowed::Yes;
        }
        if allowed.iter().any(|a| a == NAMESPACE_OF_MANAGED_CLUSTER) {
            return Allowed::IfManagedCluster;
        }
        Allowed::No(allowed)
    }

    fn check_allowed(
        &self,
        entry: &ProviderEntry,
        request: &AccessRequest,
        namespace: &str,
    ) -> Result<Allowed, AccessError> {
        match self.allowed(entry, request, namespace) {
            Allowed::No(allowed) => Err(AccessError::SecretNotAllowed {
                provider: entry.name.clone(),
                message: format!(
                    "Secret namespace {namespace:?} is not allowed for this provider (allowed: {allowed:?}); nothing was read"
                ),
            }),
            other => Ok(other),
        }
    }

    async fn secret(
        &self,
        provider: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Secret, AccessError> {
        let fail = |message: String| AccessError::BootstrapSecret {
            provider: provider.to_string(),
            message,
        };
        let secrets: Api<Secret> = Api::namespaced(self.hub.clone(), namespace);
        secrets
            .get_opt(name)
            .await
            .map_err(|err| fail(format!("cannot read Secret {namespace}/{name}: {err}")))?
            .ok_or_else(|| fail(format!("Secret {namespace}/{name} not found")))
    }

    async fn managed_cluster(
        &self,
        provider: &str,
        name: &str,
    ) -> Result<Option<DynamicObject>, AccessError> {
        let api: Api<DynamicObject> = Api::all_with(self.hub.clone(), &managed_clusters());
        match api.get_opt(name).await {
            Ok(found) => Ok(found),
            // No OCM on this hub: there is no ManagedCluster to vouch for anything.
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
            Err(err) => Err(AccessError::BootstrapSecret {
                provider: provider.to_string(),
                message: format!("cannot read ManagedCluster {name}: {err}"),
            }),
        }
    }

    async fn kubeconfig_secret(
        &self,
        entry: &ProviderEntry,
        config: &BuiltinConfig,
        request: &AccessRequest,
        advertised: &Endpoint,
    ) -> Result<MemberAccess, AccessError> {
        let (Some(name), Some(key)) = (config.name.as_deref(), config.key.as_deref()) else {
            return Err(AccessError::ProviderConfig {
                provider: entry.name.clone(),
                message: format!("the {EXTENSION_EXEC} extension needs name and key"),
            });
        };
        let namespace = config
            .namespace
            .as_deref()
            .unwrap_or(&request.profile_namespace);
        if self.check_allowed(entry, request, namespace)? == Allowed::IfManagedCluster
            && self
                .managed_cluster(&entry.name, namespace)
                .await?
                .is_none()
        {
            return Err(not_a_cluster_namespace(entry, namespace));
        }
        let secret = self.secret(&entry.name, namespace, name).await?;
        let marked = secret.type_.as_deref() == Some(super::builtin::CAPI_SECRET_TYPE)
            && secret.labels().contains_key(CAPI_CLUSTER_NAME_LABEL);
        if !marked {
            return Err(AccessError::SecretNotAllowed {
                provider: entry.name.clone(),
                message: format!(
                    "Secret {namespace}/{name} is not a Cluster API kubeconfig Secret (type {CAPI_SECRET_TYPE} and label {CAPI_CLUSTER_NAME_LABEL} required); not used"
                ),
            });
        }
        let text = secret_text(&entry.name, &secret, key)?;
        let bad = |err: crate::kubeconfig::KubeconfigError| AccessError::BootstrapSecret {
            provider: entry.name.clone(),
            message: format!("Secret {namespace}/{name} key {key:?}: {err}"),
        };
        let trusted = bootstrap_endpoint(
            text.expose(),
            config.context.as_deref(),
            entry.allow_insecure_skip_tls_verify,
        )
        .map_err(bad)?;
        if let Some(why) = advertised.disagreement(&trusted) {
            return Err(AccessError::EndpointMismatch {
                provider: entry.name.clone(),
                message: why,
            });
        }
        let credential =
            bootstrap_credential(text.expose(), config.context.as_deref()).map_err(bad)?;
        Ok(MemberAccess {
            provider: entry.name.clone(),
            endpoint: trusted,
            credential,
            secret: Some(SecretRef {
                namespace: namespace.to_string(),
                name: name.to_string(),
                key: key.to_string(),
            }),
        })
    }

    async fn token_secret(
        &self,
        entry: &ProviderEntry,
        config: &BuiltinConfig,
        request: &AccessRequest,
        advertised: &Endpoint,
        purpose: Purpose,
    ) -> Result<MemberAccess, AccessError> {
        let default_namespace = self
            .credentials_namespace
            .unwrap_or(&request.profile_namespace);
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
        let allowed = self.check_allowed(entry, request, namespace)?;
        // `{managedClusterNamespace}` means the Secret's own namespace is a cluster's hub
        // namespace. The `{name, namespace}` form's record below is that very ManagedCluster; the
        // `{clusterName}` form's is another one, so confirm the namespace separately (revocation
        // keeps what was checked at mint time).
        if allowed == Allowed::IfManagedCluster
            && purpose == Purpose::Mint
            && config.name.is_none()
            && self
                .managed_cluster(&entry.name, namespace)
                .await?
                .is_none()
        {
            return Err(not_a_cluster_namespace(entry, namespace));
        }
        // The endpoint OCM records for the cluster whose hub namespace holds the token. Without
        // that record nothing vouches for any server, whatever namespace the Secret is in.
        // `{name, namespace}` (ocm-source's form): the ManagedCluster whose hub namespace holds the
        // Secret; `{clusterName}` (upstream secretreader's form, Secret in an operator-chosen
        // namespace): the ManagedCluster of that name.
        let record = if config.name.is_some() {
            namespace
        } else {
            name
        };
        let cluster = self.managed_cluster(&entry.name, record).await?;
        if cluster.is_none() && purpose == Purpose::Mint {
            return Err(not_a_cluster_namespace(entry, record));
        }
        let secret = self.secret(&entry.name, namespace, name).await?;
        if secret.labels().get(MSA_SECRET_LABEL).map(String::as_str) != Some("true") {
            return Err(AccessError::SecretNotAllowed {
                provider: entry.name.clone(),
                message: format!(
                    "Secret {namespace}/{name} is not a managed-serviceaccount token Secret (label {MSA_SECRET_LABEL}=true required); not used"
                ),
            });
        }
        let trusted = match &cluster {
            Some(cluster) => recorded_endpoint(cluster, &secret, advertised),
            None => pinned_endpoint(&secret, advertised),
        };
        let trusted = trusted.ok_or_else(|| {
            AccessError::EndpointMismatch {
                provider: entry.name.clone(),
                message: format!(
                    "the profile names server {:?}, which ManagedCluster {record} does not list in spec.managedClusterClientConfigs",
                    advertised.server
                ),
            }
        })?;
        if let Some(why) = advertised.disagreement(&trusted) {
            return Err(AccessError::EndpointMismatch {
                provider: entry.name.clone(),
                message: why,
            });
        }
        let token = secret_text(&entry.name, &secret, key)?;
        let token = token.expose().trim();
        if token.is_empty() || token.contains(char::is_whitespace) {
            return Err(AccessError::BootstrapSecret {
                provider: entry.name.clone(),
                message: format!("Secret {namespace}/{name} key {key:?} is not a bearer token"),
            });
        }
        Ok(MemberAccess {
            provider: entry.name.clone(),
            endpoint: trusted,
            credential: Credential::Token(Sensitive::new(token)),
            secret: Some(SecretRef {
                namespace: namespace.to_string(),
                name: name.to_string(),
                key: key.to_string(),
            }),
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Allowed {
    Yes,
    IfManagedCluster,
    No(Vec<String>),
}

fn not_a_cluster_namespace(entry: &ProviderEntry, namespace: &str) -> AccessError {
    AccessError::SecretNotAllowed {
        provider: entry.name.clone(),
        message: format!(
            "namespace {namespace:?} is not the hub namespace of a ManagedCluster; nothing was read"
        ),
    }
}

/// For revocation after the ManagedCluster is gone: the recorded server, trusted only through the
/// CA in the token Secret (`ca.crt`); without that CA nothing is sent.
fn pinned_endpoint(secret: &Secret, recorded: &Endpoint) -> Option<Endpoint> {
    let ca = secret_ca(secret)?;
    Some(Endpoint {
        server: recorded.server.clone(),
        ca_pem: Some(ca),
        tls_server_name: recorded.tls_server_name.clone(),
        insecure_skip_tls_verify: false,
        proxy_url: None,
    })
}

fn secret_ca(secret: &Secret) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get("ca.crt"))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .filter(|pem| pem.contains("-----BEGIN CERTIFICATE-----"))
}

/// The endpoint of `cluster` (a ManagedCluster) that matches the advertised server: the server
/// must be one of its client configs; the CA is the token Secret's `ca.crt`, else that config's.
fn recorded_endpoint(
    cluster: &DynamicObject,
    secret: &Secret,
    advertised: &Endpoint,
) -> Option<Endpoint> {
    let configs = cluster
        .data
        .pointer("/spec/managedClusterClientConfigs")
        .and_then(Value::as_array)?;
    let matching = configs.iter().find(|c| {
        c.get("url")
            .and_then(Value::as_str)
            .is_some_and(|url| url.trim_end_matches('/') == advertised.server)
    })?;
    let ca_from_secret = secret_ca(secret);
    let ca_from_cluster = matching
        .get("caBundle")
        .and_then(Value::as_str)
        .and_then(decode_pem)
        .filter(|pem| pem.contains("-----BEGIN CERTIFICATE-----"));
    Some(Endpoint {
        server: advertised.server.clone(),
        ca_pem: ca_from_secret.or(ca_from_cluster),
        tls_server_name: None,
        insecure_skip_tls_verify: false,
        proxy_url: None,
    })
}

fn secret_text(provider: &str, secret: &Secret, key: &str) -> Result<Sensitive, AccessError> {
    let namespace = secret.namespace().unwrap_or_default();
    let name = secret.name_any();
    let fail = |message: String| AccessError::BootstrapSecret {
        provider: provider.to_string(),
        message,
    };
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .ok_or_else(|| fail(format!("Secret {namespace}/{name} has no key {key:?}")))?;
    String::from_utf8(bytes)
        .map(Sensitive::new)
        .map_err(|_| fail(format!("Secret {namespace}/{name} key {key:?} is not text")))
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";

    fn cluster(urls: &[&str]) -> DynamicObject {
        let configs: Vec<Value> = urls
            .iter()
            .map(|u| serde_json::json!({"url": u, "caBundle": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, CA)}))
            .collect();
        DynamicObject {
            types: None,
            metadata: Default::default(),
            data: serde_json::json!({"spec": {"managedClusterClientConfigs": configs}}),
        }
    }

    fn advertised(server: &str) -> Endpoint {
        Endpoint {
            server: server.into(),
            ca_pem: None,
            tls_server_name: None,
            insecure_skip_tls_verify: false,
            proxy_url: None,
        }
    }

    #[test]
    fn a_token_goes_only_to_a_server_its_managed_cluster_lists() {
        let secret = Secret::default();
        let found = recorded_endpoint(
            &cluster(&["https://a:6443/"]),
            &secret,
            &advertised("https://a:6443"),
        )
        .unwrap();
        assert_eq!(found.server, "https://a:6443");
        assert_eq!(
            found.ca_pem.as_deref(),
            Some(CA),
            "CA from the ManagedCluster"
        );
        assert!(
            recorded_endpoint(
                &cluster(&["https://a:6443"]),
                &secret,
                &advertised("https://evil:6443")
            )
            .is_none()
        );
        assert!(recorded_endpoint(&cluster(&[]), &secret, &advertised("https://a:6443")).is_none());
    }

    #[test]
    fn without_its_managed_cluster_a_token_is_only_sent_pinned_to_its_own_ca() {
        assert!(pinned_endpoint(&Secret::default(), &advertised("https://a:6443")).is_none());
        let secret = Secret {
            data: Some(BTreeMap::from([(
                "ca.crt".to_string(),
                ByteString(CA.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        };
        let pinned = pinned_endpoint(&secret, &advertised("https://a:6443")).unwrap();
        assert_eq!(pinned.ca_pem.as_deref(), Some(CA));
        assert!(!pinned.insecure_skip_tls_verify);
    }

    #[test]
    fn the_token_secrets_ca_wins_over_the_managed_clusters() {
        let other = CA.replace("AAAA", "BBBB");
        let secret = Secret {
            data: Some(BTreeMap::from([(
                "ca.crt".to_string(),
                ByteString(other.clone().into_bytes()),
            )])),
            ..Secret::default()
        };
        let found = recorded_endpoint(
            &cluster(&["https://a:6443"]),
            &secret,
            &advertised("https://a:6443"),
        )
        .unwrap();
        assert_eq!(found.ca_pem.as_deref(), Some(other.as_str()));
    }
}
