//! A kubeconfig held in a Secret (Cluster API's `<cluster>-kubeconfig`, the upstream
//! kubeconfig-secretreader contract): parsed, checked and turned into a client — without ever
//! letting its content out. Errors name what is wrong, never a value from the kubeconfig (YAML
//! parser messages can quote the input, so they are dropped).
//!
//! Only self-contained static credentials are accepted (bearer token, client certificate, basic
//! auth): an exec plugin would run a command of the Secret author's choosing inside this
//! controller, and file paths point at this controller's file system, not the author's.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::ca_bundle::CaBundle;
use crate::error::Category;
use crate::names::short_hash;

/// Why a kubeconfig from a Secret cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KubeconfigSecretError {
    /// The Secret has no data under the expected key.
    #[error("has no key {0:?}")]
    MissingKey(String),
    /// Not UTF-8 text.
    #[error("is not text (not UTF-8)")]
    NotText,
    /// Not a YAML kubeconfig document.
    #[error("is not a YAML kubeconfig")]
    NotYaml,
    /// `current-context` is unset.
    #[error("has no current-context")]
    NoCurrentContext,
    /// `current-context` names a context that is not there.
    #[error("names a current-context that it does not define")]
    ContextNotFound,
    /// The current context names a cluster that is not there.
    #[error("names a cluster in its current context that it does not define")]
    ClusterNotFound,
    /// The current context names no user, or one that is not there.
    #[error("names no user, or an undefined one, in its current context")]
    UserNotFound,
    /// The cluster has no `server`.
    #[error("has no server for its current cluster")]
    NoServer,
    /// The user authenticates with an exec plugin or an auth provider.
    #[error(
        "uses {0} credentials; only a static token, client certificate or basic auth is accepted"
    )]
    UnsupportedCredentials(&'static str),
    /// A field points at a file path.
    #[error("refers to a file path ({0}); only inline data is accepted")]
    FilePath(&'static str),
    /// The user has no credentials at all.
    #[error("has no credentials for its current user")]
    NoCredentials,
    /// `certificate-authority-data` is not base64 of a PEM certificate.
    #[error("has certificate-authority-data that is not base64 of a PEM certificate")]
    BadCaData,
    /// kube could not build a client from it.
    #[error("cannot be turned into a client ({0})")]
    Client(&'static str),
}

impl KubeconfigSecretError {
    /// Every one of these is a problem with the Secret's content.
    pub fn category(&self) -> Category {
        Category::InvalidInput
    }
}

/// Where the current context of a kubeconfig points (no credentials: safe to publish).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// API server URL.
    pub server: String,
    /// Base64 PEM CA bundle, as in the kubeconfig (kept compact: one per cluster, for the
    /// cluster's life).
    pub certificate_authority_data: Option<CaBundle>,
    /// TLS server name override.
    pub tls_server_name: Option<String>,
    /// Whether TLS verification is disabled.
    pub insecure_skip_tls_verify: Option<bool>,
    /// Proxy URL.
    pub proxy_url: Option<String>,
}

/// What is worth keeping of a checked kubeconfig between member reads: where it points and the
/// hash of its content, never its credentials (a client key or token per cluster would be most of
/// a source's memory at fleet size; they are read again from the Secret when a member is read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeconfigSummary {
    /// Where the current context points.
    pub endpoint: Endpoint,
    /// [`SecretKubeconfig::fingerprint`].
    pub fingerprint: String,
}

/// A checked kubeconfig from a Secret. `Debug` shows only the endpoint and the fingerprint.
#[derive(Clone)]
pub struct SecretKubeconfig {
    endpoint: Endpoint,
    fingerprint: String,
    kubeconfig: Kubeconfig,
}

impl std::fmt::Debug for SecretKubeconfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKubeconfig")
            .field("endpoint", &self.endpoint)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl SecretKubeconfig {
    /// Parse and check the kubeconfig stored under `key` of a Secret's `data`.
    pub fn from_secret_data(
        data: Option<&std::collections::BTreeMap<String, k8s_openapi::ByteString>>,
        key: &str,
    ) -> Result<Self, KubeconfigSecretError> {
        let bytes = data
            .and_then(|d| d.get(key))
            .ok_or_else(|| KubeconfigSecretError::MissingKey(key.to_string()))?;
        Self::parse(&bytes.0)
    }

    /// Parse and check kubeconfig bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, KubeconfigSecretError> {
        let text = std::str::from_utf8(bytes).map_err(|_| KubeconfigSecretError::NotText)?;
        let kubeconfig = Kubeconfig::from_yaml(text).map_err(|_| KubeconfigSecretError::NotYaml)?;
        // An empty or scalar document parses into an empty config: that is not a kubeconfig.
        if kubeconfig.clusters.is_empty() && kubeconfig.contexts.is_empty() {
            return Err(KubeconfigSecretError::NotYaml);
        }
        let current = kubeconfig
            .current_context
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or(KubeconfigSecretError::NoCurrentContext)?;
        let context = kubeconfig
            .contexts
            .iter()
            .find(|c| c.name == current)
            .and_then(|c| c.context.as_ref())
            .ok_or(KubeconfigSecretError::ContextNotFound)?;
        let cluster = kubeconfig
            .clusters
            .iter()
            .find(|c| c.name == context.cluster)
            .and_then(|c| c.cluster.as_ref())
            .ok_or(KubeconfigSecretError::ClusterNotFound)?;
        let user = context
            .user
            .as_deref()
            .and_then(|name| kubeconfig.auth_infos.iter().find(|u| u.name == name))
            .and_then(|u| u.auth_info.as_ref())
            .ok_or(KubeconfigSecretError::UserNotFound)?;
        if user.exec.is_some() {
            return Err(KubeconfigSecretError::UnsupportedCredentials("exec plugin"));
        }
        if user.auth_provider.is_some() {
            return Err(KubeconfigSecretError::UnsupportedCredentials(
                "auth-provider",
            ));
        }
        for (set, field) in [
            (user.token_file.is_some(), "tokenFile"),
            (user.client_certificate.is_some(), "client-certificate"),
            (user.client_key.is_some(), "client-key"),
            (
                cluster.certificate_authority.is_some(),
                "certificate-authority",
            ),
        ] {
            if set {
                return Err(KubeconfigSecretError::FilePath(field));
            }
        }
        let has_token = user.token.is_some();
        let has_cert = user.client_certificate_data.is_some() && user.client_key_data.is_some();
        let has_basic = user.username.is_some() && user.password.is_some();
        if !(has_token || has_cert || has_basic) {
            return Err(KubeconfigSecretError::NoCredentials);
        }
        let server = cluster
            .server
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or(KubeconfigSecretError::NoServer)?;
        if let Some(ca) = &cluster.certificate_authority_data {
            let pem = BASE64
                .decode(ca.trim())
                .map_err(|_| KubeconfigSecretError::BadCaData)?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(KubeconfigSecretError::BadCaData);
            }
        }
        let endpoint = Endpoint {
            server,
            certificate_authority_data: cluster
                .certificate_authority_data
                .as_deref()
                .map(CaBundle::from_base64),
            tls_server_name: cluster.tls_server_name.clone(),
            insecure_skip_tls_verify: cluster.insecure_skip_tls_verify,
            proxy_url: cluster.proxy_url.clone(),
        };
        Ok(Self {
            endpoint,
            fingerprint: short_hash(text),
            kubeconfig,
        })
    }

    /// Where the current context points.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// A stable hash of the content: changes when the Secret is rotated.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Its endpoint and fingerprint, without the credentials.
    pub fn into_summary(self) -> KubeconfigSummary {
        KubeconfigSummary {
            endpoint: self.endpoint,
            fingerprint: self.fingerprint,
        }
    }

    /// A client for the member, with `timeout` for connecting and for each read.
    pub async fn client(&self, timeout: Duration) -> Result<kube::Client, KubeconfigSecretError> {
        // kube's errors here can quote the kubeconfig (PEM parsing): only a fixed phrase leaves.
        let mut config = kube::Config::from_custom_kubeconfig(
            self.kubeconfig.clone(),
            &KubeConfigOptions::default(),
        )
        .await
        .map_err(|_| KubeconfigSecretError::Client("invalid kubeconfig content"))?;
        config.connect_timeout = Some(timeout);
        config.read_timeout = Some(timeout);
        config.write_timeout = Some(timeout);
        kube::Client::try_from(config)
            .map_err(|_| KubeconfigSecretError::Client("invalid TLS material"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn kubeconfig(user: &str, cluster_extra: &str, current: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://10.0.0.1:6443\n    certificate-authority-data: {ca}\n{cluster_extra}contexts:\n- name: ctx\n  context:\n    cluster: c\n    user: u\n{current}users:\n- name: u\n  user:\n{user}",
            ca = BASE64.encode(CA)
        )
    }

    fn parse(text: &str) -> Result<SecretKubeconfig, KubeconfigSecretError> {
        SecretKubeconfig::parse(text.as_bytes())
    }

    const TOKEN: &str = "    token: s3cr3t-t0ken\n";
    const CURRENT: &str = "current-context: ctx\n";

    #[test]
    fn static_token_kubeconfig_is_accepted_and_its_endpoint_read() {
        let parsed = parse(&kubeconfig(
            TOKEN,
            "    tls-server-name: api.example\n",
            CURRENT,
        ))
        .unwrap();
        assert_eq!(parsed.endpoint().server, "https://10.0.0.1:6443");
        assert_eq!(
            parsed
                .endpoint()
                .certificate_authority_data
                .as_ref()
                .map(CaBundle::to_base64),
            Some(BASE64.encode(CA))
        );
        assert_eq!(
            parsed.endpoint().tls_server_name.as_deref(),
            Some("api.example")
        );
        // Debug output carries no credential.
        assert!(!format!("{parsed:?}").contains("s3cr3t"));
        // The fingerprint follows the content.
        let other = parse(&kubeconfig("    token: other\n", "", CURRENT)).unwrap();
        assert_ne!(parsed.fingerprint(), other.fingerprint());
        // The summary keeps where it points and the fingerprint, and no credential.
        let fingerprint = parsed.fingerprint().to_string();
        let endpoint = parsed.endpoint().clone();
        let summary = parsed.into_summary();
        assert_eq!(
            (summary.endpoint.clone(), summary.fingerprint.clone()),
            (endpoint, fingerprint)
        );
        assert!(!format!("{summary:?}").contains("s3cr3t"));
    }

    #[test]
    fn client_certificates_and_basic_auth_are_accepted() {
        let cert = "    client-certificate-data: Y2VydA==\n    client-key-data: a2V5\n";
        assert!(parse(&kubeconfig(cert, "", CURRENT)).is_ok());
        let basic = "    username: admin\n    password: pw\n";
        assert!(parse(&kubeconfig(basic, "", CURRENT)).is_ok());
    }

    #[test]
    fn malformed_kubeconfigs_are_refused_without_quoting_them() {
        let cases: Vec<(String, KubeconfigSecretError)> = vec![
            (
                "not: [yaml s3cr3t".to_string(),
                KubeconfigSecretError::NotYaml,
            ),
            (
                "just text s3cr3t".to_string(),
                KubeconfigSecretError::NotYaml,
            ),
            (
                kubeconfig(TOKEN, "", ""),
                KubeconfigSecretError::NoCurrentContext,
            ),
            (
                kubeconfig(TOKEN, "", "current-context: elsewhere\n"),
                KubeconfigSecretError::ContextNotFound,
            ),
            (
                kubeconfig(
                    "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/steal\n",
                    "",
                    CURRENT,
                ),
                KubeconfigSecretError::UnsupportedCredentials("exec plugin"),
            ),
            (
                kubeconfig("    auth-provider:\n      name: gcp\n", "", CURRENT),
                KubeconfigSecretError::UnsupportedCredentials("auth-provider"),
            ),
            (
                kubeconfig("    tokenFile: /var/run/secrets/token\n", "", CURRENT),
                KubeconfigSecretError::FilePath("tokenFile"),
            ),
            (
                kubeconfig(
                    "    client-certificate: /etc/cert.pem\n    client-key: /etc/key.pem\n",
                    "",
                    CURRENT,
                ),
                KubeconfigSecretError::FilePath("client-certificate"),
            ),
            (
                kubeconfig(TOKEN, "    certificate-authority: /etc/ca.pem\n", CURRENT),
                KubeconfigSecretError::FilePath("certificate-authority"),
            ),
            (
                kubeconfig("    username: only\n", "", CURRENT),
                KubeconfigSecretError::NoCredentials,
            ),
        ];
        for (text, expected) in cases {
            let err = parse(&text).unwrap_err();
            assert_eq!(err, expected, "{text}");
            assert!(!err.to_string().contains("s3cr3t"), "{err}");
            assert_eq!(err.category(), Category::InvalidInput);
        }
        assert_eq!(
            SecretKubeconfig::parse(&[0xff, 0xfe]).unwrap_err(),
            KubeconfigSecretError::NotText
        );
        let bad_ca = kubeconfig(TOKEN, "", CURRENT).replace(&BASE64.encode(CA), "bm90IGEgY2VydA==");
        assert_eq!(
            parse(&bad_ca).unwrap_err(),
            KubeconfigSecretError::BadCaData
        );
        assert_eq!(
            SecretKubeconfig::from_secret_data(None, "value").unwrap_err(),
            KubeconfigSecretError::MissingKey("value".into())
        );
    }
}
