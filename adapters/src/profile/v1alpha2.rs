//! `ClusterProfile` `multicluster.x-k8s.io/v1alpha2`, as upstream's v0.2.0 serves it beside
//! `v1alpha1` (still the storage version; the apiserver converts between them with no webhook).
//!
//! What differs from `v1alpha1` is typed here; what is the same (`status.version`,
//! `status.properties`, the conditions' schema) is shared with it. `v1alpha2` drops
//! `status.credentialProviders` and the kubeconfig `certificate-authority` path, and validates
//! more: the manager name is a label value of 1..63 characters, an access provider needs a
//! `cluster` whose `server` is an absolute URL, and lists and strings are bounded.
//!
//! The engines work on the `v1alpha1` types (a superset); [`ClusterProfile`] is what goes over the
//! wire when the hub serves `v1alpha2`. Converting to it drops only what `v1alpha2` cannot carry.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ClusterVersion, Property, conditions_schema, free_form_object_schema, v1alpha1};
use crate::names::{LABEL_VALUE_MAX, is_valid_label_value};

/// Desired state of a ClusterProfile: who manages it and what to call it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "multicluster.x-k8s.io",
    version = "v1alpha2",
    kind = "ClusterProfile",
    plural = "clusterprofiles",
    singular = "clusterprofile",
    namespaced,
    status = "ClusterProfileStatus",
    derive = "PartialEq",
    derive = "Default",
    category = "multicluster",
    // What `kubectl get clusterprofiles` shows (v1alpha2 is the group's preferred version).
    // Raw JSON (kube's older form): the nested form repeats `type_ = ...`, which clippy's
    // duplicated_attributes lint takes for a mistake.
    printcolumn = r#"{"name": "Display Name", "type": "string", "jsonPath": ".spec.displayName"}"#,
    printcolumn = r#"{"name": "Manager", "type": "string", "jsonPath": ".spec.clusterManager.name"}"#,
    printcolumn = r#"{"name": "Version", "type": "string", "jsonPath": ".status.version.kubernetes"}"#,
    printcolumn = r#"{"name": "Healthy", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"ControlPlaneHealthy\")].status"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#,
    doc = "ClusterProfile represents one member cluster of an inventory (one namespace = one inventory)."
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterProfileSpec {
    /// Human-readable name of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The cluster manager that owns this profile. Immutable.
    pub cluster_manager: ClusterManager,
}

/// The cluster manager that owns a profile.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [{"message": "ClusterManager is immutable", "rule": "self == oldSelf"}]))]
pub struct ClusterManager {
    /// Name of the cluster manager; equals the `x-k8s.io/cluster-manager` label, so it must be a
    /// valid label value.
    #[schemars(length(min = 1, max = 63))]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "must be a valid Kubernetes label value", "rule": "!format.labelValue().validate(self).hasValue()"}]))]
    pub name: String,
}

/// Observed state of a member cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterProfileStatus {
    /// Conditions of the member (`ControlPlaneHealthy`, `Joined`, ...). Sent even when empty, so
    /// an apply owns the list the same way in either version.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Kubernetes version of the member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<ClusterVersion>,
    /// Properties of the member (About API ClusterProperty objects and manager-specific facts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub properties: Vec<Property>,
    /// How consumers reach the member (at most 64 providers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub access_providers: Vec<AccessProvider>,
}

/// One way of reaching a member: a named provider and a kubeconfig `Cluster`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[schemars(transform = require_cluster)]
pub struct AccessProvider {
    /// Provider name, matched against a consumer's provider file.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Connection details (kubeconfig v1 Cluster). Required by the schema; read leniently, since
    /// an object stored through `v1alpha1` may lack it.
    #[serde(default)]
    pub cluster: Cluster,
}

/// The kubeconfig v1 `Cluster` as `v1alpha2` bounds it, with its kebab-case JSON names.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    /// Address of the API server: an absolute URL with a host.
    #[schemars(length(max = 2048))]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "server must be a valid absolute URL with a host", "rule": "isURL(self) && url(self).getHost() != ''"}]))]
    pub server: String,
    /// Name used to verify the server certificate, if not the host of `server`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub tls_server_name: Option<String>,
    /// Skip server certificate verification (insecure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_tls_verify: Option<bool>,
    /// PEM CA bundle, base64 in JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "byte"))]
    pub certificate_authority_data: Option<String>,
    /// Proxy to use for this cluster (`http`, `https` or `socks5` URL with a host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "proxy-url must be a valid URL with scheme http, https, or socks5 and a host", "rule": "self == '' || (isURL(self) && url(self).getScheme() in ['http', 'https', 'socks5'] && url(self).getHost() != '')"}]))]
    pub proxy_url: Option<String>,
    /// Disable response compression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_compression: Option<bool>,
    /// Named extensions (e.g. `client.authentication.k8s.io/exec`), unique by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub extensions: Vec<NamedExtension>,
}

/// A named, free-form extension object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct NamedExtension {
    /// Extension name (1..253 characters).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Extension content: any JSON object.
    #[schemars(schema_with = "free_form_object_schema")]
    pub extension: serde_json::Value,
}

/// `cluster` is read leniently (`serde(default)`), which would make it optional in the schema;
/// upstream requires it, and so does the schema we publish.
fn require_cluster(schema: &mut schemars::Schema) {
    if let Some(required) = schema
        .ensure_object()
        .entry("required")
        .or_insert_with(|| serde_json::Value::Array(Vec::new()))
        .as_array_mut()
        && !required.iter().any(|r| r == "cluster")
    {
        required.push("cluster".into());
    }
}

/// Why a cluster manager name cannot be used (`v1alpha2` would reject it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManagerNameError {
    /// Empty.
    #[error("is empty")]
    Empty,
    /// Longer than a label value may be.
    #[error("is {0} characters long, over the 63 a label value allows")]
    TooLong(usize),
    /// Not a label value.
    #[error(
        "is not a valid label value (alphanumerics, '-', '_' and '.', starting and ending with an alphanumeric)"
    )]
    NotLabelValue,
}

/// Check a cluster manager name against what `v1alpha2` validates (`spec.clusterManager.name`: a
/// non-empty label value of at most 63 characters). Sources refuse such a name at start whatever
/// version the hub serves: the label `x-k8s.io/cluster-manager` must carry it too, and a profile
/// written through `v1alpha1` with it could never be written through `v1alpha2`.
pub fn validate_cluster_manager_name(name: &str) -> Result<(), ManagerNameError> {
    if name.is_empty() {
        return Err(ManagerNameError::Empty);
    }
    let length = name.chars().count();
    if length > LABEL_VALUE_MAX {
        return Err(ManagerNameError::TooLong(length));
    }
    if !is_valid_label_value(name) {
        return Err(ManagerNameError::NotLabelValue);
    }
    Ok(())
}

impl From<&v1alpha1::ClusterProfile> for ClusterProfile {
    /// What `v1alpha2` can carry of a `v1alpha1` profile: `credentialProviders`, the
    /// `certificate-authority` path and access providers without a `cluster` are left out.
    fn from(profile: &v1alpha1::ClusterProfile) -> Self {
        ClusterProfile {
            metadata: profile.metadata.clone(),
            spec: ClusterProfileSpec {
                display_name: profile.spec.display_name.clone(),
                cluster_manager: ClusterManager {
                    name: profile.spec.cluster_manager.name.clone(),
                },
            },
            status: profile.status.as_ref().map(ClusterProfileStatus::from),
        }
    }
}

impl From<&v1alpha1::ClusterProfileStatus> for ClusterProfileStatus {
    fn from(status: &v1alpha1::ClusterProfileStatus) -> Self {
        ClusterProfileStatus {
            conditions: status.conditions.clone(),
            version: status.version.clone(),
            properties: status.properties.clone(),
            access_providers: status
                .access_providers
                .iter()
                .filter_map(|provider| {
                    provider.cluster.as_ref().map(|cluster| AccessProvider {
                        name: provider.name.clone(),
                        cluster: Cluster::from(cluster),
                    })
                })
                .collect(),
        }
    }
}

impl From<&v1alpha1::Cluster> for Cluster {
    fn from(cluster: &v1alpha1::Cluster) -> Self {
        Cluster {
            server: cluster.server.clone(),
            tls_server_name: cluster.tls_server_name.clone(),
            insecure_skip_tls_verify: cluster.insecure_skip_tls_verify,
            certificate_authority_data: cluster.certificate_authority_data.clone(),
            proxy_url: cluster.proxy_url.clone(),
            disable_compression: cluster.disable_compression,
            extensions: cluster
                .extensions
                .iter()
                .map(|e| NamedExtension {
                    name: e.name.clone(),
                    extension: e.extension.clone(),
                })
                .collect(),
        }
    }
}

impl From<&ClusterProfile> for v1alpha1::ClusterProfile {
    /// Lossless: every `v1alpha2` field exists in `v1alpha1`.
    fn from(profile: &ClusterProfile) -> Self {
        v1alpha1::ClusterProfile {
            metadata: profile.metadata.clone(),
            spec: v1alpha1::ClusterProfileSpec {
                display_name: profile.spec.display_name.clone(),
                cluster_manager: v1alpha1::ClusterManager {
                    name: profile.spec.cluster_manager.name.clone(),
                },
            },
            status: profile
                .status
                .as_ref()
                .map(|status| v1alpha1::ClusterProfileStatus {
                    conditions: status.conditions.clone(),
                    version: status.version.clone(),
                    properties: status.properties.clone(),
                    access_providers: status
                        .access_providers
                        .iter()
                        .map(|provider| v1alpha1::AccessProvider {
                            name: provider.name.clone(),
                            cluster: Some(v1alpha1::Cluster {
                                server: provider.cluster.server.clone(),
                                tls_server_name: provider.cluster.tls_server_name.clone(),
                                insecure_skip_tls_verify: provider.cluster.insecure_skip_tls_verify,
                                certificate_authority: None,
                                certificate_authority_data: provider
                                    .cluster
                                    .certificate_authority_data
                                    .clone(),
                                proxy_url: provider.cluster.proxy_url.clone(),
                                disable_compression: provider.cluster.disable_compression,
                                extensions: provider
                                    .cluster
                                    .extensions
                                    .iter()
                                    .map(|e| v1alpha1::NamedExtension {
                                        name: e.name.clone(),
                                        extension: e.extension.clone(),
                                    })
                                    .collect(),
                            }),
                        })
                        .collect(),
                    credential_providers: Vec::new(),
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;
    use serde_json::json;

    fn full_v1alpha1() -> v1alpha1::ClusterProfile {
        let cluster = |server: &str| v1alpha1::Cluster {
            server: server.into(),
            tls_server_name: Some("member".into()),
            insecure_skip_tls_verify: Some(false),
            certificate_authority: Some("/etc/ca.crt".into()),
            certificate_authority_data: Some("Q0E=".into()),
            proxy_url: Some("socks5://proxy:1080".into()),
            disable_compression: Some(true),
            extensions: vec![v1alpha1::NamedExtension {
                name: "client.authentication.k8s.io/exec".into(),
                extension: json!({"name": "s"}),
            }],
        };
        v1alpha1::ClusterProfile {
            metadata: ObjectMeta {
                name: Some("member-1".into()),
                namespace: Some("fleet".into()),
                ..ObjectMeta::default()
            },
            spec: v1alpha1::ClusterProfileSpec {
                display_name: Some("Member 1".into()),
                cluster_manager: v1alpha1::ClusterManager {
                    name: "open-cluster-management".into(),
                },
            },
            status: Some(v1alpha1::ClusterProfileStatus {
                properties: vec![Property {
                    name: "id.k8s.io".into(),
                    value: "uid".into(),
                    last_observed_time: None,
                }],
                version: Some(ClusterVersion {
                    kubernetes: Some("v1.36.3".into()),
                }),
                access_providers: vec![
                    v1alpha1::AccessProvider {
                        name: "ocm".into(),
                        cluster: Some(cluster("https://member:6443")),
                    },
                    v1alpha1::AccessProvider {
                        name: "no-cluster".into(),
                        cluster: None,
                    },
                ],
                credential_providers: vec![v1alpha1::AccessProvider {
                    name: "legacy".into(),
                    cluster: Some(cluster("https://legacy:6443")),
                }],
                ..v1alpha1::ClusterProfileStatus::default()
            }),
        }
    }

    #[test]
    fn converting_to_v1alpha2_drops_only_what_it_cannot_carry() {
        let v1 = full_v1alpha1();
        let v2 = ClusterProfile::from(&v1);
        let status = v2.status.clone().unwrap();
        assert_eq!(
            status
                .access_providers
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            vec!["ocm"],
            "a provider without a cluster cannot be carried"
        );
        assert_eq!(v2.metadata, v1.metadata);
        assert_eq!(v2.spec.cluster_manager.name, "open-cluster-management");

        // Back to v1alpha1: everything but credentialProviders, the CA path and the provider
        // without a cluster is as it was.
        let mut expected = v1.clone();
        if let Some(status) = expected.status.as_mut() {
            status.credential_providers.clear();
            status.access_providers.truncate(1);
            if let Some(cluster) = status.access_providers[0].cluster.as_mut() {
                cluster.certificate_authority = None;
            }
        }
        assert_eq!(v1alpha1::ClusterProfile::from(&v2), expected);
        // And v1alpha2 -> v1alpha1 -> v1alpha2 is lossless.
        assert_eq!(
            ClusterProfile::from(&v1alpha1::ClusterProfile::from(&v2)),
            v2
        );
    }

    #[test]
    fn serialized_like_v1alpha1_for_what_both_carry() {
        // The same apply content in either version: an adapter owns the same fields.
        let mut v1 = full_v1alpha1();
        if let Some(status) = v1.status.as_mut() {
            status.credential_providers.clear();
            status.access_providers.truncate(1);
            if let Some(cluster) = status.access_providers[0].cluster.as_mut() {
                cluster.certificate_authority = None;
            }
        }
        let v2 = ClusterProfile::from(&v1);
        let mut a = serde_json::to_value(&v1).unwrap();
        let mut b = serde_json::to_value(&v2).unwrap();
        assert_eq!(a["apiVersion"], "multicluster.x-k8s.io/v1alpha1");
        assert_eq!(b["apiVersion"], "multicluster.x-k8s.io/v1alpha2");
        a["apiVersion"] = json!(null);
        b["apiVersion"] = json!(null);
        assert_eq!(a, b);
    }

    #[test]
    fn a_provider_without_cluster_is_read_but_the_schema_requires_it() {
        let provider: AccessProvider = serde_json::from_value(json!({"name": "x"})).unwrap();
        assert_eq!(provider.name, "x");
        let schema = serde_json::to_value(schemars::schema_for!(AccessProvider)).unwrap();
        let mut required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r.as_str())
            .collect();
        required.sort();
        assert_eq!(required, vec!["cluster", "name"]);
    }

    #[test]
    fn cluster_manager_names_are_checked_as_v1alpha2_does() {
        assert_eq!(
            validate_cluster_manager_name(""),
            Err(ManagerNameError::Empty)
        );
        assert_eq!(
            validate_cluster_manager_name(&"a".repeat(64)),
            Err(ManagerNameError::TooLong(64))
        );
        for bad in ["a b", "-a", "a-", "a/b", "ä"] {
            assert_eq!(
                validate_cluster_manager_name(bad),
                Err(ManagerNameError::NotLabelValue),
                "{bad:?}"
            );
        }
        for good in ["open-cluster-management", "cluster-api", "A.b_c-9", "x"] {
            assert_eq!(validate_cluster_manager_name(good), Ok(()), "{good:?}");
        }
        assert_eq!(validate_cluster_manager_name(&"a".repeat(63)), Ok(()));
    }
}
