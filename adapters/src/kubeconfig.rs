//! Kubeconfigs: the ones we build for consumers (one cluster, one token user, one context; no exec,
//! no file paths), the ones we read from bootstrap Secrets (static token or client certificate
//! only), and the kube client configuration we use to reach a member.
//!
//! Error messages here never quote kubeconfig content: a parse error of a Secret's data could
//! otherwise echo a token.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use crate::profile::Cluster;
use crate::sensitive::Sensitive;

/// Why a kubeconfig or endpoint cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KubeconfigError {
    /// The access provider's cluster is unusable (bad server, bad CA, insecure not allowed).
    #[error("access provider cluster: {0}")]
    Endpoint(String),
    /// A bootstrap kubeconfig cannot be used; the message names the problem, never the content.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
}

/// How to reach a member's API server, from a profile's access provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://host:port`.
    pub server: String,
    /// The CA bundle (PEM) to trust; none means the system roots.
    pub ca_pem: Option<String>,
    /// Name to verify the server certificate against, when not the host of `server`.
    pub tls_server_name: Option<String>,
    /// Skip server certificate verification (only when the provider file allows it).
    pub insecure_skip_tls_verify: bool,
    /// Proxy to reach the server through.
    pub proxy_url: Option<String>,
}

impl Endpoint {
    /// The endpoint of an access provider's cluster. `allow_insecure` comes from the provider file:
    /// a profile alone can never turn certificate verification off.
    pub fn from_cluster(cluster: &Cluster, allow_insecure: bool) -> Result<Self, KubeconfigError> {
        let server = cluster.server.trim_end_matches('/').to_string();
        if !server.starts_with("https://") || server.len() <= "https://".len() {
            return Err(KubeconfigError::Endpoint(format!(
                "server {server:?} is not an https:// URL"
            )));
        }
        let insecure = cluster.insecure_skip_tls_verify.unwrap_or(false);
        if insecure && !allow_insecure {
            return Err(KubeconfigError::Endpoint(
                "insecure-skip-tls-verify is set but the provider file does not allow it \
                 (allowInsecureSkipTLSVerify)"
                    .into(),
            ));
        }
        let ca_pem = match cluster.certificate_authority_data.as_deref() {
            Some(data) if !data.trim().is_empty() => {
                let bytes = BASE64.decode(data.trim()).map_err(|_| {
                    KubeconfigError::Endpoint("certificate-authority-data is not base64".into())
                })?;
                let pem = String::from_utf8(bytes).map_err(|_| {
                    KubeconfigError::Endpoint("certificate-authority-data is not PEM text".into())
                })?;
                if !pem.contains("-----BEGIN CERTIFICATE-----") {
                    return Err(KubeconfigError::Endpoint(
                        "certificate-authority-data holds no PEM certificate".into(),
                    ));
                }
                Some(pem)
            }
            _ => None,
        };
        Ok(Self {
            server,
            ca_pem,
            tls_server_name: cluster.tls_server_name.clone().filter(|s| !s.is_empty()),
            insecure_skip_tls_verify: insecure,
            proxy_url: cluster.proxy_url.clone().filter(|s| !s.is_empty()),
        })
    }

    /// The kubeconfig `cluster` entry (kebab-case names, inline CA).
    fn cluster_json(&self) -> Value {
        let mut cluster = json!({ "server": self.server });
        if let Some(ca) = &self.ca_pem {
            cluster["certificate-authority-data"] = json!(BASE64.encode(ca));
        }
        if let Some(name) = &self.tls_server_name {
            cluster["tls-server-name"] = json!(name);
        }
        if self.insecure_skip_tls_verify {
            cluster["insecure-skip-tls-verify"] = json!(true);
        }
        if let Some(proxy) = &self.proxy_url {
            cluster["proxy-url"] = json!(proxy);
        }
        cluster
    }
}

/// A credential for a member: what bootstrap providers and exec plugins yield.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// A bearer token.
    Token(Sensitive),
    /// A client certificate and its key (PEM).
    ClientCertificate {
        /// Certificate chain (PEM).
        certificate_pem: String,
        /// Private key (PEM).
        key_pem: Sensitive,
    },
}

impl Credential {
    fn user_json(&self) -> Value {
        match self {
            Credential::Token(token) => json!({ "token": token.expose() }),
            Credential::ClientCertificate {
                certificate_pem,
                key_pem,
            } => json!({
                "client-certificate-data": BASE64.encode(certificate_pem),
                "client-key-data": BASE64.encode(key_pem.expose()),
            }),
        }
    }
}

/// Names inside a kubeconfig we build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeconfigNames {
    /// Cluster entry name.
    pub cluster: String,
    /// User entry name.
    pub user: String,
    /// Context name (also the current context).
    pub context: String,
}

/// A kubeconfig (JSON form) with exactly one cluster, one user and one context.
fn single_kubeconfig(
    endpoint: &Endpoint,
    credential: &Credential,
    names: &KubeconfigNames,
    namespace: Option<&str>,
) -> Value {
    let mut context = json!({ "cluster": names.cluster, "user": names.user });
    if let Some(namespace) = namespace {
        context["namespace"] = json!(namespace);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": names.cluster, "cluster": endpoint.cluster_json() }],
        "users": [{ "name": names.user, "user": credential.user_json() }],
        "contexts": [{ "name": names.context, "context": context }],
        "current-context": names.context,
    })
}

/// The kubeconfig a consumer receives: the member's endpoint, the minted token, and a context
/// whose namespace is the ServiceAccount's. YAML, as consumers and humans expect.
pub fn minted_kubeconfig(
    endpoint: &Endpoint,
    token: &Sensitive,
    names: &KubeconfigNames,
    namespace: &str,
) -> Sensitive {
    let value = single_kubeconfig(
        endpoint,
        &Credential::Token(token.clone()),
        names,
        Some(namespace),
    );
    // JSON is valid YAML; prefer real YAML, fall back to JSON only if the emitter ever fails.
    let text = serde_saphyr::to_string(&value).unwrap_or_else(|_| value.to_string());
    Sensitive::new(text)
}

/// A kube client configuration for `endpoint` with `credential`, with bounded timeouts so an
/// unreachable member fails fast instead of holding a reconcile.
pub async fn client_config(
    endpoint: &Endpoint,
    credential: &Credential,
    timeout: std::time::Duration,
) -> Result<kube::Config, KubeconfigError> {
    let names = KubeconfigNames {
        cluster: "member".into(),
        user: "bootstrap".into(),
        context: "member".into(),
    };
    let value = single_kubeconfig(endpoint, credential, &names, None);
    let kubeconfig: kube::config::Kubeconfig = serde_json::from_value(value)
        .map_err(|_| KubeconfigError::Kubeconfig("cannot build the member kubeconfig".into()))?;
    let mut config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|err| KubeconfigError::Kubeconfig(redacted_kube_config_error(&err)))?;
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    Ok(config)
}

/// kube's kubeconfig errors name fields, not values; still pass them through the redactor.
fn redacted_kube_config_error(err: &kube::config::KubeconfigError) -> String {
    crate::sensitive::redact_credential_like(&err.to_string())
}

/// Read a bootstrap credential from a kubeconfig (the `kubeconfig-secret` provider): the user of
/// `context` (default: the current context) must carry a static token or an inline client
/// certificate and key. Exec plugins, auth providers and file paths are refused: they would run
/// code or read files on our side.
pub fn bootstrap_credential(
    text: &str,
    context: Option<&str>,
) -> Result<Credential, KubeconfigError> {
    let invalid = |what: &str| KubeconfigError::Kubeconfig(what.to_string());
    let doc: Value =
        serde_saphyr::from_str(text).map_err(|_| invalid("the data is not a valid kubeconfig"))?;
    if !doc.is_object() {
        return Err(invalid("the data is not a valid kubeconfig"));
    }
    let context_name = match context {
        Some(name) => name.to_string(),
        None => doc
            .get("current-context")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("no context given and no current-context"))?
            .to_string(),
    };
    let named = |list: &str, name: &str| -> Option<Value> {
        doc.get(list)?
            .as_array()?
            .iter()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
            .cloned()
    };
    let ctx = named("contexts", &context_name)
        .ok_or_else(|| invalid(&format!("context {context_name:?} not found")))?;
    let user_name = ctx
        .pointer("/context/user")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(&format!("context {context_name:?} names no user")))?;
    let user = named("users", user_name)
        .and_then(|u| u.get("user").cloned())
        .ok_or_else(|| invalid(&format!("user {user_name:?} not found")))?;
    for refused in ["exec", "auth-provider"] {
        if user.get(refused).is_some_and(|v| !v.is_null()) {
            return Err(invalid(&format!(
                "user {user_name:?} uses {refused}; only a static token or client certificate is accepted"
            )));
        }
    }
    for path_field in ["tokenFile", "client-certificate", "client-key"] {
        if user
            .get(path_field)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(invalid(&format!(
                "user {user_name:?} refers to a file ({path_field}); only inline data is accepted"
            )));
        }
    }
    if let Some(token) = user
        .get("token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        return Ok(Credential::Token(Sensitive::new(token)));
    }
    let decode = |field: &str| -> Result<Option<String>, KubeconfigError> {
        match user.get(field).and_then(Value::as_str) {
            None | Some("") => Ok(None),
            Some(data) => BASE64
                .decode(data.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .map(Some)
                .ok_or_else(|| invalid(&format!("{field} is not base64 PEM"))),
        }
    };
    match (
        decode("client-certificate-data")?,
        decode("client-key-data")?,
    ) {
        (Some(certificate_pem), Some(key)) => Ok(Credential::ClientCertificate {
            certificate_pem,
            key_pem: Sensitive::new(key),
        }),
        _ => Err(invalid(&format!(
            "user {user_name:?} has neither a token nor client-certificate-data and client-key-data"
        ))),
    }
}

/// The endpoint a bootstrap kubeconfig itself names: the cluster of `context` (default: the
/// current context). A bootstrap credential is only ever sent to this server, whatever a profile
/// says. A CA given as a file path is refused (it would read files on our side);
/// `insecure-skip-tls-verify` only where the provider file allows it.
pub fn bootstrap_endpoint(
    text: &str,
    context: Option<&str>,
    allow_insecure: bool,
) -> Result<Endpoint, KubeconfigError> {
    let invalid = |what: &str| KubeconfigError::Kubeconfig(what.to_string());
    let doc: Value =
        serde_saphyr::from_str(text).map_err(|_| invalid("the data is not a valid kubeconfig"))?;
    let context_name = match context {
        Some(name) => name.to_string(),
        None => doc
            .get("current-context")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("no context given and no current-context"))?
            .to_string(),
    };
    let named = |list: &str, name: &str| -> Option<Value> {
        doc.get(list)?
            .as_array()?
            .iter()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
            .cloned()
    };
    let cluster_name = named("contexts", &context_name)
        .and_then(|c| {
            c.pointer("/context/cluster")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .ok_or_else(|| invalid(&format!("context {context_name:?} names no cluster")))?;
    let cluster = named("clusters", &cluster_name)
        .and_then(|c| c.get("cluster").cloned())
        .ok_or_else(|| invalid(&format!("cluster {cluster_name:?} not found")))?;
    let cluster: Cluster = serde_json::from_value(cluster)
        .map_err(|_| invalid(&format!("cluster {cluster_name:?} is malformed")))?;
    if cluster
        .certificate_authority
        .as_deref()
        .is_some_and(|path| !path.is_empty())
    {
        return Err(invalid(&format!(
            "cluster {cluster_name:?} refers to a CA file; only inline certificate-authority-data is accepted"
        )));
    }
    Endpoint::from_cluster(&cluster, allow_insecure)
}

impl Endpoint {
    /// Why `self` (what a profile advertises) disagrees with `trusted` (what the credential's own
    /// record names), if it does. A field the profile leaves out is no disagreement; the trusted
    /// endpoint is what gets used.
    pub fn disagreement(&self, trusted: &Endpoint) -> Option<String> {
        if self.server != trusted.server {
            return Some(format!(
                "the profile names server {:?} but the credential belongs to {:?}",
                self.server, trusted.server
            ));
        }
        let differs = |ours: &Option<String>, theirs: &Option<String>| {
            ours.as_deref()
                .is_some_and(|o| theirs.as_deref().map(str::trim) != Some(o.trim()))
        };
        if differs(&self.ca_pem, &trusted.ca_pem) {
            return Some(
                "the profile's certificate-authority-data differs from the credential's".into(),
            );
        }
        if differs(&self.tls_server_name, &trusted.tls_server_name) {
            return Some("the profile's tls-server-name differs from the credential's".into());
        }
        if differs(&self.proxy_url, &trusted.proxy_url) {
            return Some("the profile's proxy-url differs from the credential's".into());
        }
        if self.insecure_skip_tls_verify && !trusted.insecure_skip_tls_verify {
            return Some(
                "the profile turns off certificate verification; the credential's cluster does not"
                    .into(),
            );
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn cluster() -> Cluster {
        Cluster {
            server: "https://10.0.0.1:6443/".into(),
            certificate_authority_data: Some(BASE64.encode(CA)),
            tls_server_name: Some("member.internal".into()),
            ..Cluster::default()
        }
    }

    fn names() -> KubeconfigNames {
        KubeconfigNames {
            cluster: "member".into(),
            user: "sveltos".into(),
            context: "sveltos-context".into(),
        }
    }

    #[test]
    fn minted_kubeconfig_has_one_cluster_one_token_user_one_namespaced_context() {
        let endpoint = Endpoint::from_cluster(&cluster(), false).unwrap();
        let text = minted_kubeconfig(
            &endpoint,
            &Sensitive::new("tok"),
            &names(),
            "projectsveltos",
        );
        let doc: Value = serde_saphyr::from_str(text.expose()).unwrap();
        assert_eq!(doc["clusters"].as_array().unwrap().len(), 1);
        assert_eq!(doc["users"].as_array().unwrap().len(), 1);
        assert_eq!(doc["contexts"].as_array().unwrap().len(), 1);
        assert_eq!(doc["current-context"], "sveltos-context");
        let cluster = &doc["clusters"][0]["cluster"];
        assert_eq!(cluster["server"], "https://10.0.0.1:6443");
        assert_eq!(cluster["tls-server-name"], "member.internal");
        assert_eq!(
            BASE64
                .decode(cluster["certificate-authority-data"].as_str().unwrap())
                .unwrap(),
            CA.as_bytes()
        );
        assert_eq!(doc["users"][0]["user"], json!({"token": "tok"}));
        assert_eq!(doc["contexts"][0]["context"]["namespace"], "projectsveltos");
        // Parsed back as a bootstrap kubeconfig it yields the same token.
        assert_eq!(
            bootstrap_credential(text.expose(), None).unwrap(),
            Credential::Token(Sensitive::new("tok"))
        );
    }

    #[test]
    fn insecure_needs_the_provider_file_opt_in() {
        let mut insecure = cluster();
        insecure.insecure_skip_tls_verify = Some(true);
        assert!(matches!(
            Endpoint::from_cluster(&insecure, false),
            Err(KubeconfigError::Endpoint(_))
        ));
        assert!(
            Endpoint::from_cluster(&insecure, true)
                .unwrap()
                .insecure_skip_tls_verify
        );
    }

    #[test]
    fn bad_endpoints_are_refused_with_a_reason() {
        let mut http = cluster();
        http.server = "http://10.0.0.1".into();
        assert!(Endpoint::from_cluster(&http, false).is_err());
        let mut bad_ca = cluster();
        bad_ca.certificate_authority_data = Some("%%%".into());
        assert!(Endpoint::from_cluster(&bad_ca, false).is_err());
    }

    #[test]
    fn bootstrap_accepts_token_or_inline_certificate_and_refuses_the_rest() {
        let base = |user: &str| {
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {{cluster: x, user: u}}\n- name: other\n  context: {{cluster: x, user: v}}\nusers:\n- name: u\n  user: {user}\n- name: v\n  user: {{token: second}}\n"
            )
        };
        assert_eq!(
            bootstrap_credential(&base("{token: abc}"), None).unwrap(),
            Credential::Token(Sensitive::new("abc"))
        );
        assert_eq!(
            bootstrap_credential(&base("{token: abc}"), Some("other")).unwrap(),
            Credential::Token(Sensitive::new("second"))
        );
        let cert = format!(
            "{{client-certificate-data: {}, client-key-data: {}}}",
            BASE64.encode("CERT"),
            BASE64.encode("KEY")
        );
        assert_eq!(
            bootstrap_credential(&base(&cert), None).unwrap(),
            Credential::ClientCertificate {
                certificate_pem: "CERT".into(),
                key_pem: Sensitive::new("KEY")
            }
        );
        for refused in [
            "{exec: {command: aws}}",
            "{tokenFile: /var/run/token}",
            "{client-certificate: /a, client-key: /b}",
            "{username: a, password: b}",
        ] {
            assert!(
                bootstrap_credential(&base(refused), None).is_err(),
                "{refused}"
            );
        }
        assert!(bootstrap_credential(&base("{token: abc}"), Some("missing")).is_err());
    }

    #[test]
    fn malformed_kubeconfig_errors_never_quote_the_content() {
        for text in [
            "token: secret-value-123 [unbalanced",
            "just-a-secret-value-123",
            "",
        ] {
            let err = bootstrap_credential(text, None).unwrap_err().to_string();
            assert!(!err.contains("secret-value-123"), "{err}");
        }
    }
}
