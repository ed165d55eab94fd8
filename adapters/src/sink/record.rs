//! The registration record: what a sink minted on which member through which bootstrap access,
//! kept as an annotation on each credential Secret it publishes (never a secret itself: names,
//! uids, the public endpoint, times). It is the sink's memory across restarts and the only
//! input of revocation, so a profile edited or deleted later can never steer what is revoked.
//! Pure: parsing and building, unit-tested.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::access::AccessRequest;
use crate::kubeconfig::Endpoint;
use crate::member::{MemberIdentity, MintedIdentity};
use crate::names::short_hash;
use crate::sensitive::Sensitive;

/// The trusted endpoint of a member, as recorded (no credential).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedEndpoint {
    /// `https://host:port`.
    pub server: String,
    /// CA bundle (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// tls-server-name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// Skip verification (only ever true where the provider file allowed it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_tls_verify: bool,
    /// Proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<String>,
}

impl From<&Endpoint> for RecordedEndpoint {
    fn from(endpoint: &Endpoint) -> Self {
        Self {
            server: endpoint.server.clone(),
            ca_pem: endpoint.ca_pem.clone(),
            tls_server_name: endpoint.tls_server_name.clone(),
            insecure_skip_tls_verify: endpoint.insecure_skip_tls_verify,
            proxy_url: endpoint.proxy_url.clone(),
        }
    }
}

impl RecordedEndpoint {
    /// Back to an endpoint.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            server: self.server.clone(),
            ca_pem: self.ca_pem.clone(),
            tls_server_name: self.tls_server_name.clone(),
            insecure_skip_tls_verify: self.insecure_skip_tls_verify,
            proxy_url: self.proxy_url.clone(),
        }
    }
}

/// One registration's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The profile uid it was minted for.
    pub profile_uid: String,
    /// What the profile asked for at mint time (provider, cluster, inventory, manager).
    pub access: AccessRequest,
    /// The member endpoint the credential belongs to (what the token is published with).
    pub endpoint: RecordedEndpoint,
    /// What was minted there.
    pub identity: MintedIdentity,
    /// The settings it was minted under; a different one means "mint again".
    pub fingerprint: String,
    /// When the token expires (RFC 3339).
    pub expires_at: String,
    /// When the sink renews it (RFC 3339).
    pub renew_after: String,
}

impl Record {
    /// Serialize for the annotation.
    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parse an annotation value.
    pub fn from_annotation(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    /// `expires_at` as a time.
    pub fn expires(&self) -> Option<Timestamp> {
        self.expires_at.parse().ok()
    }

    /// `renew_after` as a time.
    pub fn renew(&self) -> Option<Timestamp> {
        self.renew_after.parse().ok()
    }

    /// Whether two records name the same member identity (same account on the same member:
    /// the account's uid is unique per member, the server tells members apart).
    pub fn same_member_identity(&self, other: &Record) -> bool {
        self.identity.service_account_uid == other.identity.service_account_uid
            && self.endpoint.server == other.endpoint.server
    }
}

/// The fingerprint of what a mint depends on: the access request (provider, cluster, manager),
/// the identity settings and the token lifetime. Stable across releases (SHA-256 of JSON).
pub fn fingerprint(request: &AccessRequest, identity: &MemberIdentity, ttl_seconds: u64) -> String {
    let value = serde_json::json!({
        "access": request,
        "identity": {
            "instance": identity.instance,
            "namespace": identity.namespace,
            "serviceAccount": identity.service_account,
            "clusterRole": identity.cluster_role,
            "binding": identity.cluster_role_binding,
            "rules": identity.rules,
            "namespaces": identity.namespaces,
        },
        "ttl": ttl_seconds,
    });
    short_hash(&value.to_string())
}

/// The default [`crate::sink::Sink::published_token`]: the token of a kubeconfig's user (any
/// data key), or `bearerToken` of a JSON document (Argo CD's `config`).
pub fn published_token(secret: &Secret) -> Option<Sensitive> {
    let data: BTreeMap<&str, String> = secret
        .data
        .as_ref()?
        .iter()
        .filter_map(|(k, v)| String::from_utf8(v.0.clone()).ok().map(|t| (k.as_str(), t)))
        .collect();
    for text in data.values() {
        if let Ok(json) = serde_json::from_str::<Value>(text)
            && let Some(token) = json.get("bearerToken").and_then(Value::as_str)
            && !token.is_empty()
        {
            return Some(Sensitive::new(token));
        }
        if let Ok(doc) = serde_saphyr::from_str::<Value>(text)
            && let Some(users) = doc.get("users").and_then(Value::as_array)
            && users.len() == 1
            && let Some(token) = users[0].pointer("/user/token").and_then(Value::as_str)
            && !token.is_empty()
        {
            return Some(Sensitive::new(token));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Cluster;
    use k8s_openapi::ByteString;

    fn request(server: &str) -> AccessRequest {
        AccessRequest {
            provider: "cluster-api".into(),
            cluster: Cluster {
                server: server.into(),
                ..Cluster::default()
            },
            profile_namespace: "fleet".into(),
            manager: "cluster-api".into(),
        }
    }

    #[test]
    fn the_record_round_trips_and_never_holds_a_token() {
        let record = Record {
            profile_uid: "u1".into(),
            access: request("https://a"),
            endpoint: RecordedEndpoint {
                server: "https://a".into(),
                ca_pem: Some("-----BEGIN CERTIFICATE-----".into()),
                tls_server_name: None,
                insecure_skip_tls_verify: false,
                proxy_url: None,
            },
            identity: MintedIdentity {
                instance: "sveltos-sink".into(),
                namespace: "inventory-bridge".into(),
                service_account: "inventory-bridge-sveltos-sink".into(),
                service_account_uid: "sa-uid".into(),
                cluster_role: "r".into(),
                cluster_role_binding: "b".into(),
                namespaces: vec![],
            },
            fingerprint: "f".into(),
            expires_at: "2026-12-02T10:00:00Z".into(),
            renew_after: "2026-12-02T06:00:00Z".into(),
        };
        let text = record.to_annotation();
        assert_eq!(Record::from_annotation(&text), Some(record.clone()));
        assert!(!text.to_lowercase().contains("token\""), "{text}");
        assert!(record.expires().is_some() && record.renew().is_some());
        assert!(Record::from_annotation("{not json").is_none());
        let mut other = record.clone();
        assert!(record.same_member_identity(&other));
        other.identity.service_account_uid = "recreated".into();
        assert!(!record.same_member_identity(&other));
    }

    #[test]
    fn fingerprints_change_with_what_a_mint_depends_on() {
        let identity = MemberIdentity::default_for("s", vec![]);
        let base = fingerprint(&request("https://a"), &identity, 600);
        assert_eq!(base, fingerprint(&request("https://a"), &identity, 600));
        assert_ne!(base, fingerprint(&request("https://b"), &identity, 600));
        assert_ne!(base, fingerprint(&request("https://a"), &identity, 601));
        let other = MemberIdentity::default_for("t", vec![]);
        assert_ne!(base, fingerprint(&request("https://a"), &other, 600));
    }

    #[test]
    fn published_tokens_are_found_in_kubeconfigs_and_argo_cd_configs() {
        let secret = |key: &str, text: &str| Secret {
            data: Some(BTreeMap::from([(
                key.to_string(),
                ByteString(text.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        };
        let kubeconfig =
            "apiVersion: v1\nkind: Config\nusers:\n- name: u\n  user:\n    token: abc.def\n";
        assert_eq!(
            published_token(&secret("kubeconfig", kubeconfig)).map(|t| t.expose().to_string()),
            Some("abc.def".into())
        );
        let config = r#"{"bearerToken": "xyz", "tlsClientConfig": {"insecure": false}}"#;
        assert_eq!(
            published_token(&secret("config", config)).map(|t| t.expose().to_string()),
            Some("xyz".into())
        );
        assert!(published_token(&secret("value", "nothing here")).is_none());
        assert!(published_token(&Secret::default()).is_none());
    }
}
