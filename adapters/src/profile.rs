//! `ClusterProfile` (`multicluster.x-k8s.io`, SIG-Multicluster KEP-4322) and the upstream constants
//! every adapter must spell exactly as upstream does.
//!
//! The types at this module's root are `v1alpha1` (also reachable as [`v1alpha1`]): the storage
//! version, and a superset of [`v1alpha2`], so the engines work on them whatever version the hub
//! serves. [`v1alpha2`] holds what that version types differently and converts to and from them.
//!
//! The schema attributes reproduce upstream's CRD of `sigs.k8s.io/cluster-inventory-api` v0.2.0
//! (checked by a test, version by version), so the CRD we generate validates exactly what upstream's
//! does.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of ClusterProfile.
pub const GROUP: &str = "multicluster.x-k8s.io";
/// The storage version (served by every release). Which version adapters write is chosen by
/// discovery: see [`crate::profile_api::ProfileVersion`].
pub const VERSION: &str = VERSION_V1ALPHA1;
/// `v1alpha1`: served by every release, the storage version.
pub const VERSION_V1ALPHA1: &str = "v1alpha1";
/// `v1alpha2`: served from upstream v0.2.0 on; upstream's consumer library reads only this one.
pub const VERSION_V1ALPHA2: &str = "v1alpha2";
/// Resource name (plural) of ClusterProfile.
pub const PLURAL: &str = "clusterprofiles";
/// The `kubectl get` category both versions belong to.
pub const CATEGORY: &str = "multicluster";

/// Label: MUST equal `spec.clusterManager.name`.
pub const LABEL_CLUSTER_MANAGER: &str = "x-k8s.io/cluster-manager";
/// Label: the ClusterSet the member belongs to.
pub const LABEL_CLUSTER_SET: &str = "multicluster.x-k8s.io/clusterset";
/// Label: correlates profiles that represent the same member cluster (non-empty, stable).
pub const LABEL_INVENTORY_MEMBER_ID: &str = "multicluster.x-k8s.io/inventory-member-id";

/// Condition: the member's control plane is healthy (the only Go constant upstream).
pub const CONDITION_CONTROL_PLANE_HEALTHY: &str = "ControlPlaneHealthy";
/// Condition: the member has joined the inventory (KEP text and conformance suite).
pub const CONDITION_JOINED: &str = "Joined";

/// Reserved access-provider extension handed to exec plugins as `ExecCredential.spec.cluster.config`.
pub const EXTENSION_EXEC: &str = "client.authentication.k8s.io/exec";
/// Reserved extension: extra exec plugin arguments (a YAML list of strings).
pub const EXTENSION_EXEC_ADDITIONAL_ARGS: &str =
    "clusterprofiles.multicluster.x-k8s.io/exec/additional-args";
/// Reserved extension: extra exec plugin environment (a YAML map).
pub const EXTENSION_EXEC_ADDITIONAL_ENVS: &str =
    "clusterprofiles.multicluster.x-k8s.io/exec/additional-envs";

/// Well-known property (KEP-2149 About API): the ClusterSet of the member.
pub const PROPERTY_CLUSTER_CLUSTERSET: &str = "cluster.clusterset.k8s.io";
/// Well-known property (KEP-2149 About API): the ClusterSet.
pub const PROPERTY_CLUSTERSET: &str = "clusterset.k8s.io";
/// About API ClusterProperty commonly holding the cluster id (the `kube-system` namespace UID).
pub const PROPERTY_CLUSTER_ID: &str = "id.k8s.io";

/// Bounds of a property, from the upstream schema.
pub const PROPERTY_NAME_MAX_LEN: usize = 253;
/// Bounds of a property value, from the upstream schema.
pub const PROPERTY_VALUE_MAX_LEN: usize = 1024;

pub mod v1alpha2;

/// The `v1alpha1` types under their version's name (they are this module's root types).
pub mod v1alpha1 {
    pub use super::{
        AccessProvider, Cluster, ClusterManager, ClusterProfile, ClusterProfileSpec,
        ClusterProfileStatus, NamedExtension,
    };
}

/// Desired state of a ClusterProfile: who manages it and what to call it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "multicluster.x-k8s.io",
    version = "v1alpha1",
    kind = "ClusterProfile",
    plural = "clusterprofiles",
    singular = "clusterprofile",
    namespaced,
    status = "ClusterProfileStatus",
    derive = "PartialEq",
    derive = "Default",
    category = "multicluster",
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
    /// Name of the cluster manager; equals the `x-k8s.io/cluster-manager` label.
    pub name: String,
}

/// Observed state of a member cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterProfileStatus {
    /// Conditions of the member (`ControlPlaneHealthy`, `Joined`, ...). Always sent, possibly empty:
    /// upstream v1alpha1 does not mark it omitempty.
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
    /// How consumers reach the member.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub access_providers: Vec<AccessProvider>,
    /// Deprecated alias of `accessProviders`: read for compatibility, never written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub credential_providers: Vec<AccessProvider>,
}

/// Version information of a member.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ClusterVersion {
    /// Kubernetes version, e.g. `v1.36.3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<String>,
}

/// A name/value fact about a member.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Property {
    /// Property name (1..253 characters).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Property value (1..1024 characters).
    #[schemars(length(min = 1, max = 1024))]
    pub value: String,
    /// When the value was observed on the member (not when the profile was written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_observed_time: Option<Time>,
}

/// One way of reaching a member: a named provider and a kubeconfig `Cluster`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct AccessProvider {
    /// Provider name, matched against a consumer's provider file.
    pub name: String,
    /// Connection details (kubeconfig v1 Cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Cluster>,
}

/// The kubeconfig v1 `Cluster`, with its kebab-case JSON names.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    /// Address of the API server (`https://host:port`).
    pub server: String,
    /// Name used to verify the server certificate, if not the host of `server`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// Skip server certificate verification (insecure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_tls_verify: Option<bool>,
    /// Path to a CA file: meaningless across machines, kept only to read upstream objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    /// PEM CA bundle, base64 in JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "byte"))]
    pub certificate_authority_data: Option<String>,
    /// Proxy to use for this cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<String>,
    /// Disable response compression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_compression: Option<bool>,
    /// Named extensions (e.g. `client.authentication.k8s.io/exec`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<NamedExtension>,
}

/// A named, free-form extension object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct NamedExtension {
    /// Extension name.
    pub name: String,
    /// Extension content: any JSON object.
    #[schemars(schema_with = "free_form_object_schema")]
    pub extension: serde_json::Value,
}

impl ClusterProfileStatus {
    /// Access providers as a reader should see them: `accessProviders`, plus any deprecated
    /// `credentialProviders` entry whose name is not already there (`accessProviders` wins).
    pub fn effective_access_providers(&self) -> Vec<&AccessProvider> {
        let mut providers: Vec<&AccessProvider> = self.access_providers.iter().collect();
        for legacy in &self.credential_providers {
            if !providers.iter().any(|p| p.name == legacy.name) {
                providers.push(legacy);
            }
        }
        providers
    }

    /// The condition of the given type, if present.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

impl Cluster {
    /// The extension with this name, if present.
    pub fn extension(&self, name: &str) -> Option<&serde_json::Value> {
        self.extensions
            .iter()
            .find(|e| e.name == name)
            .map(|e| &e.extension)
    }
}

impl ClusterProfile {
    /// The profile's labels (empty map when none).
    pub fn labels_or_empty(&self) -> BTreeMap<String, String> {
        self.metadata.labels.clone().unwrap_or_default()
    }
}

fn free_form_object_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// `[]metav1.Condition` as a list-map keyed by `type`, with the validation metav1 declares.
fn conditions_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "description": "Condition contains details for one aspect of the current state of this API Resource.",
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
            "properties": {
                "lastTransitionTime": {
                    "description": "When the condition last changed status.",
                    "type": "string",
                    "format": "date-time",
                },
                "message": {
                    "description": "Human-readable details of the last transition.",
                    "type": "string",
                    "maxLength": 32768,
                },
                "observedGeneration": {
                    "description": "The .metadata.generation the condition was set for.",
                    "type": "integer",
                    "format": "int64",
                    "minimum": 0,
                },
                "reason": {
                    "description": "Programmatic identifier of the reason for the last transition (CamelCase).",
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 1024,
                    "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
                },
                "status": {
                    "description": "Status of the condition: True, False or Unknown.",
                    "type": "string",
                    "enum": ["True", "False", "Unknown"],
                },
                "type": {
                    "description": "Type of condition in CamelCase or in foo.example.com/CamelCase.",
                    "type": "string",
                    "maxLength": 316,
                    "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_serializes_with_kebab_case_names() {
        let cluster = Cluster {
            server: "https://member:6443".into(),
            tls_server_name: Some("member".into()),
            insecure_skip_tls_verify: Some(false),
            certificate_authority_data: Some("Q0E=".into()),
            proxy_url: Some("socks5://proxy:1080".into()),
            disable_compression: Some(true),
            extensions: vec![NamedExtension {
                name: EXTENSION_EXEC.into(),
                extension: serde_json::json!({"name": "s", "key": "value"}),
            }],
            ..Cluster::default()
        };
        let json = serde_json::to_value(&cluster).unwrap_or_default();
        for key in [
            "server",
            "tls-server-name",
            "insecure-skip-tls-verify",
            "certificate-authority-data",
            "proxy-url",
            "disable-compression",
            "extensions",
        ] {
            assert!(json.get(key).is_some(), "missing {key} in {json}");
        }
        assert_eq!(
            cluster.extension(EXTENSION_EXEC),
            Some(&serde_json::json!({"name": "s", "key": "value"}))
        );
    }

    #[test]
    fn empty_status_still_sends_conditions() {
        let json = serde_json::to_value(ClusterProfileStatus::default()).unwrap_or_default();
        assert_eq!(json, serde_json::json!({"conditions": []}));
    }

    #[test]
    fn access_providers_win_over_deprecated_credential_providers() {
        let provider = |name: &str, server: &str| AccessProvider {
            name: name.into(),
            cluster: Some(Cluster {
                server: server.into(),
                ..Cluster::default()
            }),
        };
        let status = ClusterProfileStatus {
            access_providers: vec![provider("a", "https://new")],
            credential_providers: vec![provider("a", "https://old"), provider("b", "https://b")],
            ..ClusterProfileStatus::default()
        };
        let effective: Vec<(&str, &str)> = status
            .effective_access_providers()
            .into_iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.cluster.as_ref().map_or("", |c| c.server.as_str()),
                )
            })
            .collect();
        assert_eq!(effective, vec![("a", "https://new"), ("b", "https://b")]);
    }
}
