//! The OCM objects ocm-source reads, as small permissive local types: only the fields we use,
//! every one optional or defaulted, unknown fields ignored, so a newer OCM (or one odd object)
//! never breaks a watch. Field names follow `open-cluster-management.io/api` v1.3.0.
//!
//! A top-level `spec` is not required by the upstream CRDs, so the spec types deserialize from an
//! absent `spec` too (through `Option`), instead of failing the whole list.

use std::borrow::Cow;
use std::collections::BTreeMap;

use adapters::interned::{Interned, InternedLabels};
use k8s_openapi::ClusterResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::{CustomResource, Resource};
use serde::{Deserialize, Serialize};

/// Label putting a ManagedCluster into a ManagedClusterSet (exclusive set membership).
pub const LABEL_OCM_CLUSTERSET: &str = "cluster.open-cluster-management.io/clusterset";
/// Condition type on ManagedCluster: the agent has joined.
pub const CONDITION_JOINED: &str = "ManagedClusterJoined";
/// Condition type on ManagedCluster: the cluster is available.
pub const CONDITION_AVAILABLE: &str = "ManagedClusterConditionAvailable";
/// Condition type on ManagedClusterSetBinding: the binding is in effect.
pub const CONDITION_BOUND: &str = "Bound";
/// ManagedClusterSet selector type: clusters labelled `cluster.open-cluster-management.io/clusterset=<set>`.
pub const SELECTOR_EXCLUSIVE: &str = "ExclusiveClusterSetLabel";
/// ManagedClusterSet selector type: a label selector.
pub const SELECTOR_LABEL: &str = "LabelSelector";

/// `cluster.open-cluster-management.io/v1` ManagedCluster (cluster-scoped). `Resource` is
/// implemented by hand so the cache can keep its labels compactly beside its metadata.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ManagedCluster {
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Spec.
    #[serde(default)]
    pub spec: ManagedClusterSpec,
    /// Status, as the registration agent reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ManagedClusterStatus>,
    /// The labels, moved out of `metadata` when the cache trims the cluster
    /// (see `project::trim`).
    #[serde(skip)]
    pub kept_labels: InternedLabels,
}

impl ManagedCluster {
    /// Every label, wherever it is kept (the metadata of a whole object, `kept_labels` of a
    /// trimmed one).
    pub fn all_labels(&self) -> BTreeMap<String, String> {
        self.kept_labels.with_metadata(&self.metadata)
    }
}

impl Resource for ManagedCluster {
    type DynamicType = ();
    type Scope = ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("ManagedCluster")
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("cluster.open-cluster-management.io")
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("managedclusters")
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// ManagedCluster spec.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(from = "Option<ManagedClusterSpecFields>")]
pub struct ManagedClusterSpec {
    /// The hub has accepted the cluster's agent.
    #[serde(rename = "hubAcceptsClient")]
    pub hub_accepts_client: bool,
    /// How to reach the cluster's API server.
    #[serde(rename = "managedClusterClientConfigs")]
    pub managed_cluster_client_configs: Vec<ClientConfig>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
#[doc(hidden)]
pub struct ManagedClusterSpecFields {
    hub_accepts_client: bool,
    managed_cluster_client_configs: Vec<ClientConfig>,
}

impl From<Option<ManagedClusterSpecFields>> for ManagedClusterSpec {
    fn from(fields: Option<ManagedClusterSpecFields>) -> Self {
        let fields = fields.unwrap_or_default();
        Self {
            hub_accepts_client: fields.hub_accepts_client,
            managed_cluster_client_configs: fields.managed_cluster_client_configs,
        }
    }
}

/// One way to reach a managed cluster's API server.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ClientConfig {
    /// `https://host:port` of the API server.
    pub url: String,
    /// PEM CA bundle, base64 in JSON (kept as the text we received; validated when projected).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
}

/// ManagedCluster status, as the registration agent reports it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ManagedClusterStatus {
    /// Conditions (`ManagedClusterJoined`, `ManagedClusterConditionAvailable`, ...).
    pub conditions: Vec<OcmCondition>,
    /// Version of the cluster.
    pub version: ManagedClusterVersion,
    /// Claims the cluster makes about itself.
    pub cluster_claims: Vec<ClusterClaim>,
}

/// A `metav1.Condition`, with every field optional (one malformed condition must not break the watch).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct OcmCondition {
    /// Condition type.
    #[serde(rename = "type")]
    pub type_: Interned,
    /// `True`, `False` or `Unknown`.
    pub status: Interned,
    /// CamelCase reason.
    pub reason: Interned,
    /// Human-readable message (the agents' are a few fixed sentences, shared across the fleet).
    pub message: Interned,
}

/// Version of a managed cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct ManagedClusterVersion {
    /// Kubernetes version (`v1.36.3`; a fleet runs a handful).
    pub kubernetes: Interned,
}

/// A claim (name/value) a managed cluster makes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct ClusterClaim {
    /// Claim name (e.g. `id.k8s.io`).
    pub name: Interned,
    /// Claim value.
    pub value: String,
}

/// `cluster.open-cluster-management.io/v1beta2` ManagedClusterSet spec (cluster-scoped kind).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "cluster.open-cluster-management.io",
    version = "v1beta2",
    kind = "ManagedClusterSet",
    plural = "managedclustersets",
    schema = "disabled",
    derive = "Default",
    derive = "PartialEq"
)]
#[serde(from = "Option<ManagedClusterSetSpecFields>")]
pub struct ManagedClusterSetSpec {
    /// How the set selects clusters.
    #[serde(rename = "clusterSelector")]
    pub cluster_selector: ManagedClusterSelector,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
#[doc(hidden)]
pub struct ManagedClusterSetSpecFields {
    cluster_selector: ManagedClusterSelector,
}

impl From<Option<ManagedClusterSetSpecFields>> for ManagedClusterSetSpec {
    fn from(fields: Option<ManagedClusterSetSpecFields>) -> Self {
        Self {
            cluster_selector: fields.unwrap_or_default().cluster_selector,
        }
    }
}

/// How a ManagedClusterSet selects clusters.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ManagedClusterSelector {
    /// `ExclusiveClusterSetLabel` (also when empty) or `LabelSelector`.
    pub selector_type: String,
    /// The selector when `selectorType` is `LabelSelector` (absent: selects nothing, as OCM does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
}

/// `cluster.open-cluster-management.io/v1beta2` ManagedClusterSetBinding spec (namespaced kind).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "cluster.open-cluster-management.io",
    version = "v1beta2",
    kind = "ManagedClusterSetBinding",
    plural = "managedclustersetbindings",
    namespaced,
    status = "ManagedClusterSetBindingStatus",
    schema = "disabled",
    derive = "Default",
    derive = "PartialEq"
)]
#[serde(from = "Option<ManagedClusterSetBindingSpecFields>")]
pub struct ManagedClusterSetBindingSpec {
    /// The bound set; OCM requires it to equal the binding's name.
    #[serde(rename = "clusterSet")]
    pub cluster_set: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
#[doc(hidden)]
pub struct ManagedClusterSetBindingSpecFields {
    cluster_set: String,
}

impl From<Option<ManagedClusterSetBindingSpecFields>> for ManagedClusterSetBindingSpec {
    fn from(fields: Option<ManagedClusterSetBindingSpecFields>) -> Self {
        Self {
            cluster_set: fields.unwrap_or_default().cluster_set,
        }
    }
}

/// ManagedClusterSetBinding status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct ManagedClusterSetBindingStatus {
    /// Conditions (`Bound`).
    pub conditions: Vec<OcmCondition>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_or_partial_specs_deserialize_to_defaults() {
        let bare: ManagedCluster =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "c"}})).unwrap();
        assert!(!bare.spec.hub_accepts_client);
        assert!(bare.status.is_none());
        let odd: ManagedCluster = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c"},
            "spec": {"hubAcceptsClient": true, "somethingNew": 1},
            "status": {"conditions": [{"type": "ManagedClusterJoined"}], "clusterClaims": [{}]}
        }))
        .unwrap();
        assert!(odd.spec.hub_accepts_client);
        let status = odd.status.unwrap();
        assert_eq!(status.conditions[0].type_, CONDITION_JOINED);
        assert_eq!(status.cluster_claims[0], ClusterClaim::default());
        let binding: ManagedClusterSetBinding = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "s", "namespace": "n"}}),
        )
        .unwrap();
        assert_eq!(binding.spec.cluster_set, "");
        let set: ManagedClusterSet =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "s"}, "spec": {}}))
                .unwrap();
        assert_eq!(set.spec.cluster_selector.selector_type, "");
    }
}
