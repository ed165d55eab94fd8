//! The Cluster API `Cluster` as this adapter reads it: two small permissive local types (the
//! `v1beta2` and `v1beta1` shapes, only the fields we use, every one defaulted so an odd object
//! never breaks the watch) and the one internal model both normalise into.
//!
//! `Resource` is implemented by hand (as linkerd does for foreign kinds) so each type pins its
//! served version and the spec and status can be absent.

use std::borrow::Cow;
use std::collections::BTreeMap;

use adapters::interned::{Interned, InternedLabels};
use adapters::served_versions::KindRef;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Serialize};

/// API group of Cluster API core types.
pub const GROUP: &str = "cluster.x-k8s.io";
/// Plural of `Cluster`.
pub const PLURAL: &str = "clusters";
/// Label on CAPI's Secrets (and many other objects) naming their Cluster.
pub const LABEL_CLUSTER_NAME: &str = "cluster.x-k8s.io/cluster-name";
/// Annotation that pauses a Cluster like `spec.paused`.
pub const ANNOTATION_PAUSED: &str = "cluster.x-k8s.io/paused";
/// Type of CAPI's Secrets.
pub const SECRET_TYPE: &str = "cluster.x-k8s.io/secret";
/// Key of the kubeconfig in `<cluster>-kubeconfig`.
pub const KUBECONFIG_KEY: &str = "value";
/// Key of the CA certificate in `<cluster>-ca`.
pub const CA_KEY: &str = "tls.crt";

/// Name of a Cluster's kubeconfig Secret.
pub fn kubeconfig_secret_name(cluster: &str) -> String {
    format!("{cluster}-kubeconfig")
}

/// Name of a Cluster's CA Secret.
pub fn ca_secret_name(cluster: &str) -> String {
    format!("{cluster}-ca")
}

/// A condition as CAPI writes it (both shapes), every field optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapiCondition {
    /// Condition type.
    #[serde(default, rename = "type")]
    pub type_: Interned,
    /// `True`, `False` or `Unknown`.
    #[serde(default)]
    pub status: Interned,
    /// CamelCase reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Interned>,
    /// Message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Interned>,
}

/// `spec.controlPlaneEndpoint`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiEndpoint {
    /// Host name or IP.
    #[serde(default)]
    pub host: String,
    /// Port (0: unset).
    #[serde(default)]
    pub port: i64,
}

/// `status.controlPlane` (v1beta2) / `status.v1beta2.controlPlane` (v1beta1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlPlaneStatus {
    /// Versions of the control-plane machines.
    #[serde(default)]
    pub versions: Vec<VersionCount>,
}

/// One version and how many machines run it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionCount {
    /// Kubernetes version.
    #[serde(default)]
    pub version: Interned,
}

macro_rules! cluster_resource {
    ($version:literal) => {
        impl Resource for Cluster {
            type DynamicType = ();
            type Scope = NamespaceResourceScope;

            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed("Cluster")
            }
            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(GROUP)
            }
            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($version)
            }
            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(PLURAL)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// `cluster.x-k8s.io/v1beta2` (storage version since CAPI v1.11).
pub mod v1beta2 {
    use super::*;

    /// A Cluster, v1beta2 shape.
    #[derive(Clone, Debug, Default, Serialize, Deserialize)]
    pub struct Cluster {
        /// Metadata.
        #[serde(default)]
        pub metadata: ObjectMeta,
        /// The labels a projection reads, moved out of `metadata` by [`CapiCluster::trim`].
        #[serde(skip)]
        pub kept_labels: InternedLabels,
        /// Spec.
        #[serde(default)]
        pub spec: ClusterSpec,
        /// Status.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub status: Option<ClusterStatus>,
    }
    cluster_resource!("v1beta2");

    /// Spec fields we read.
    #[derive(Clone, Debug, Default, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ClusterSpec {
        /// Paused.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub paused: Option<bool>,
        /// Control plane endpoint.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub control_plane_endpoint: Option<ApiEndpoint>,
        /// Managed topology.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub topology: Option<Topology>,
        /// Control-plane provider object.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub control_plane_ref: Option<ContractRef>,
        /// Infrastructure provider object.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub infrastructure_ref: Option<ContractRef>,
    }

    /// `spec.topology`.
    #[derive(Clone, Debug, Default, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Topology {
        /// The ClusterClass.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub class_ref: Option<ClassRef>,
        /// Desired Kubernetes version.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub version: Option<Interned>,
    }

    /// `spec.topology.classRef`.
    #[derive(Clone, Debug, Default, Serialize, Deserialize)]
    pub struct ClassRef {
        /// ClusterClass name.
        #[serde(default)]
        pub name: Interned,
    }

    /// A v1beta2 contract reference: group and kind, no version.
    #[derive(Clone, Debug, Default, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ContractRef {
        /// API group.
        #[serde(default)]
        pub api_group: Interned,
        /// Kind.
        #[serde(default)]
        pub kind: Interned,
        /// Name (same namespace as the Cluster).
        #[serde(default)]
        pub name: String,
    }

    /// Status fields we read.
    #[derive(Clone, Debug, Default, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ClusterStatus {
        /// Conditions (`ControlPlaneAvailable`, `ControlPlaneInitialized`, ...).
        #[serde(default)]
        pub conditions: Vec<CapiCondition>,
        /// Initialization milestones.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub initialization: Option<Initialization>,
        /// Control-plane summary.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub control_plane: Option<ControlPlaneStatus>,
    }

    /// `status.initialization`.
    #[derive(Clone, Debug, Default, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Initialization {
        /// The control plane has been initialized.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub control_plane_initialized: Option<bool>,
    }
}

/// `cluster.x-k8s.io/v1beta1` (deprecated; the only version some hubs serve).
pub mod v1beta1 {
    use super::*;

    /// A Cluster, v1beta1 shape.
    #[derive(Clone, Debug, Default, Serialize, Deserialize)]
    pub struct Cluster {
        /// Metadata.
        #[serde(default)]
        pub metadata: ObjectMeta,
        /// The labels a projection reads, moved out of `metadata` by [`CapiCluster::trim`].
        #[serde(skip)]
        pub kept_labels: InternedLabels,
        /// Spec.
        #[serde(default)]
        pub spec: ClusterSpec,
        /// Status.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub status: Option<ClusterStatus>,
    }
    cluster_resource!("v1beta1");

    /// Spec fields we read.
    #[derive(Clone, Debug, Default, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ClusterSpec {
        /// Paused.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub paused: Option<bool>,
        /// Control plane endpoint.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub control_plane_endpoint: Option<ApiEndpoint>,
        /// Managed topology.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub topology: Option<Topology>,
        /// Control-plane provider object.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub control_plane_ref: Option<ObjectRef>,
        /// Infrastructure provider object.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub infrastructure_ref: Option<ObjectRef>,
    }

    /// `spec.topology`.
    #[derive(Clone, Debug, Default, Serialize, Deserialize)]
    pub struct Topology {
        /// The ClusterClass name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub class: Option<Interned>,
        /// Desired Kubernetes version.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub version: Option<Interned>,
    }

    /// A core/v1 ObjectReference.
    #[derive(Clone, Debug, Default, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ObjectRef {
        /// `group/version`.
        #[serde(default)]
        pub api_version: Interned,
        /// Kind.
        #[serde(default)]
        pub kind: Interned,
        /// Name.
        #[serde(default)]
        pub name: String,
        /// Namespace (default: the Cluster's).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub namespace: Option<String>,
    }

    /// Status fields we read.
    #[derive(Clone, Debug, Default, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ClusterStatus {
        /// v1beta1 conditions (`Ready`, `ControlPlaneReady`, ...).
        #[serde(default)]
        pub conditions: Vec<CapiCondition>,
        /// The control plane became ready during initial provisioning.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub control_plane_ready: Option<bool>,
        /// The infrastructure is ready.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub infrastructure_ready: Option<bool>,
        /// The v1beta2 view CAPI ≥ 1.9 adds to v1beta1 objects.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub v1beta2: Option<V1Beta2View>,
    }

    /// `status.v1beta2`.
    #[derive(Clone, Debug, Default, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct V1Beta2View {
        /// v1beta2 conditions.
        #[serde(default)]
        pub conditions: Vec<CapiCondition>,
        /// Control-plane summary.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub control_plane: Option<ControlPlaneStatus>,
    }
}

/// The one internal model both API versions normalise into.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterModel {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// `spec.paused` or the paused annotation.
    pub paused: bool,
    /// `spec.controlPlaneEndpoint`, when the host is set.
    pub control_plane_endpoint: Option<ApiEndpoint>,
    /// `spec.topology.version`.
    pub topology_version: Option<String>,
    /// The ClusterClass name.
    pub class_name: Option<String>,
    /// `spec.infrastructureRef.kind`.
    pub infrastructure_kind: Option<String>,
    /// Where the control-plane object is.
    pub control_plane_ref: Option<KindRef>,
    /// Control-plane versions from the Cluster's status.
    pub control_plane_versions: Vec<String>,
    /// Whether the control plane is initialized (`None`: not reported).
    pub control_plane_initialized: Option<bool>,
    /// The condition saying whether the control plane is available, and its type.
    pub control_plane_available: Option<CapiCondition>,
}

/// A Cluster of either version, as the adapter sees it.
pub trait CapiCluster:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    /// Normalise into the internal model.
    fn model(&self) -> ClusterModel;

    /// Drop what [`CapiCluster::model`] never reads, as the object enters the cache (which holds
    /// it for as long as it exists): annotations but the paused one, finalizers, owner
    /// references, conditions of other types, and labels `reads_label` refuses; the labels
    /// left are kept as [`InternedLabels`].
    fn trim(&mut self, reads_label: &dyn Fn(&str) -> bool);
}

/// Metadata [`common`] does not read; the labels it does, into `kept_labels`.
fn trim_metadata(
    metadata: &mut ObjectMeta,
    kept_labels: &mut InternedLabels,
    reads_label: &dyn Fn(&str) -> bool,
) {
    kept_labels.take_from(metadata, reads_label);
    metadata.finalizers = None;
    metadata.owner_references = None;
    metadata.generate_name = None;
    if let Some(annotations) = metadata.annotations.as_mut() {
        annotations.retain(|key, _| key == ANNOTATION_PAUSED);
        if annotations.is_empty() {
            metadata.annotations = None;
        }
    }
}

/// Keep the conditions of `types` only, their reasons and messages included (a projection
/// publishes them).
fn keep_conditions(conditions: &mut Vec<CapiCondition>, types: &[&str]) {
    conditions.retain(|c| types.contains(&c.type_.as_str()));
    conditions.shrink_to_fit();
}

fn common(
    metadata: &ObjectMeta,
    kept_labels: &InternedLabels,
    paused: Option<bool>,
) -> ClusterModel {
    let labels = kept_labels.with_metadata(metadata);
    let paused_annotation = metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANNOTATION_PAUSED));
    ClusterModel {
        namespace: metadata.namespace.clone().unwrap_or_default(),
        name: metadata.name.clone().unwrap_or_default(),
        labels,
        paused: paused.unwrap_or(false) || paused_annotation,
        ..ClusterModel::default()
    }
}

fn condition(conditions: &[CapiCondition], type_: &str) -> Option<CapiCondition> {
    conditions.iter().find(|c| c.type_ == type_).cloned()
}

fn versions(control_plane: Option<&ControlPlaneStatus>) -> Vec<String> {
    control_plane
        .map(|cp| {
            cp.versions
                .iter()
                .filter(|v| !v.version.is_empty())
                .map(|v| v.version.to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn endpoint(endpoint: Option<&ApiEndpoint>) -> Option<ApiEndpoint> {
    endpoint.filter(|e| !e.host.is_empty()).cloned()
}

fn non_empty(value: Option<&Interned>) -> Option<String> {
    value.filter(|v| !v.is_empty()).map(|v| v.to_string())
}

impl CapiCluster for v1beta2::Cluster {
    fn trim(&mut self, reads_label: &dyn Fn(&str) -> bool) {
        trim_metadata(&mut self.metadata, &mut self.kept_labels, reads_label);
        if let Some(status) = self.status.as_mut() {
            keep_conditions(
                &mut status.conditions,
                &["ControlPlaneInitialized", "ControlPlaneAvailable"],
            );
        }
    }

    fn model(&self) -> ClusterModel {
        let mut model = common(&self.metadata, &self.kept_labels, self.spec.paused);
        let status = self.status.clone().unwrap_or_default();
        model.control_plane_endpoint = endpoint(self.spec.control_plane_endpoint.as_ref());
        if let Some(topology) = &self.spec.topology {
            model.topology_version = non_empty(topology.version.as_ref());
            model.class_name = topology
                .class_ref
                .as_ref()
                .filter(|c| !c.name.is_empty())
                .map(|c| c.name.to_string());
        }
        model.infrastructure_kind = self
            .spec
            .infrastructure_ref
            .as_ref()
            .filter(|r| !r.kind.is_empty())
            .map(|r| r.kind.to_string());
        model.control_plane_ref = self
            .spec
            .control_plane_ref
            .as_ref()
            .filter(|r| !r.kind.is_empty() && !r.name.is_empty())
            .map(|r| KindRef {
                group: r.api_group.to_string(),
                version: None,
                kind: r.kind.to_string(),
                namespace: Some(model.namespace.clone()),
                name: r.name.clone(),
            });
        model.control_plane_versions = versions(status.control_plane.as_ref());
        model.control_plane_initialized = status
            .initialization
            .as_ref()
            .and_then(|i| i.control_plane_initialized)
            .or_else(|| {
                condition(&status.conditions, "ControlPlaneInitialized").map(|c| c.status == "True")
            });
        model.control_plane_available = condition(&status.conditions, "ControlPlaneAvailable");
        model
    }
}

impl CapiCluster for v1beta1::Cluster {
    fn trim(&mut self, reads_label: &dyn Fn(&str) -> bool) {
        trim_metadata(&mut self.metadata, &mut self.kept_labels, reads_label);
        if let Some(status) = self.status.as_mut() {
            keep_conditions(&mut status.conditions, &["ControlPlaneReady"]);
            if let Some(view) = status.v1beta2.as_mut() {
                keep_conditions(
                    &mut view.conditions,
                    &["ControlPlaneInitialized", "ControlPlaneAvailable"],
                );
            }
        }
    }

    fn model(&self) -> ClusterModel {
        let mut model = common(&self.metadata, &self.kept_labels, self.spec.paused);
        let status = self.status.clone().unwrap_or_default();
        let view = status.v1beta2.clone().unwrap_or_default();
        model.control_plane_endpoint = endpoint(self.spec.control_plane_endpoint.as_ref());
        if let Some(topology) = &self.spec.topology {
            model.topology_version = non_empty(topology.version.as_ref());
            model.class_name = non_empty(topology.class.as_ref());
        }
        model.infrastructure_kind = self
            .spec
            .infrastructure_ref
            .as_ref()
            .filter(|r| !r.kind.is_empty())
            .map(|r| r.kind.to_string());
        model.control_plane_ref = self
            .spec
            .control_plane_ref
            .as_ref()
            .filter(|r| !r.kind.is_empty() && !r.name.is_empty())
            .map(|r| {
                let (group, version) = match r.api_version.split_once('/') {
                    Some((group, version)) => (group.to_string(), Some(version.to_string())),
                    None if r.api_version.is_empty() => (String::new(), None),
                    None => (String::new(), Some(r.api_version.to_string())),
                };
                KindRef {
                    group,
                    version,
                    kind: r.kind.to_string(),
                    namespace: Some(
                        r.namespace
                            .clone()
                            .filter(|n| !n.is_empty())
                            .unwrap_or_else(|| model.namespace.clone()),
                    ),
                    name: r.name.clone(),
                }
            });
        model.control_plane_versions = versions(view.control_plane.as_ref());
        // The v1beta2 view (CAPI ≥ 1.9) is more precise; the v1beta1 fields are the fallback.
        model.control_plane_initialized = condition(&view.conditions, "ControlPlaneInitialized")
            .map(|c| c.status == "True")
            .or(status.control_plane_ready);
        model.control_plane_available = condition(&view.conditions, "ControlPlaneAvailable")
            .or_else(|| condition(&status.conditions, "ControlPlaneReady"));
        model
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn v1beta2_normalises() {
        let cluster: v1beta2::Cluster = serde_json::from_value(json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2",
            "kind": "Cluster",
            "metadata": {"name": "web", "namespace": "team-a", "labels": {"env": "prod"}},
            "spec": {
                "controlPlaneEndpoint": {"host": "10.0.0.1", "port": 6443},
                "topology": {"classRef": {"name": "quick-start"}, "version": "v1.36.3"},
                "controlPlaneRef": {"apiGroup": "controlplane.cluster.x-k8s.io", "kind": "KubeadmControlPlane", "name": "web-cp"},
                "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DockerCluster", "name": "web"},
                "somethingNew": {"ignored": true}
            },
            "status": {
                "initialization": {"controlPlaneInitialized": true},
                "controlPlane": {"versions": [{"version": "v1.36.2", "replicas": 3}]},
                "conditions": [{"type": "ControlPlaneAvailable", "status": "False", "reason": "NotAvailable", "message": "1 of 3 down", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
            }
        }))
        .unwrap();
        let model = cluster.model();
        assert_eq!(model.namespace, "team-a");
        assert_eq!(model.name, "web");
        assert!(!model.paused);
        assert_eq!(model.class_name.as_deref(), Some("quick-start"));
        assert_eq!(model.topology_version.as_deref(), Some("v1.36.3"));
        assert_eq!(model.infrastructure_kind.as_deref(), Some("DockerCluster"));
        assert_eq!(model.control_plane_versions, vec!["v1.36.2"]);
        assert_eq!(model.control_plane_initialized, Some(true));
        let available = model.control_plane_available.unwrap();
        assert_eq!(
            (available.status.as_str(), available.reason.as_deref()),
            ("False", Some("NotAvailable"))
        );
        let cp = model.control_plane_ref.unwrap();
        assert_eq!(cp.group, "controlplane.cluster.x-k8s.io");
        assert_eq!(cp.version, None);
        assert_eq!(cp.namespace.as_deref(), Some("team-a"));
        assert_eq!(
            model.control_plane_endpoint,
            Some(ApiEndpoint {
                host: "10.0.0.1".into(),
                port: 6443
            })
        );
    }

    #[test]
    fn v1beta1_normalises_into_the_same_model() {
        let cluster: v1beta1::Cluster = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "team-a", "annotations": {"cluster.x-k8s.io/paused": ""}},
            "spec": {
                "topology": {"class": "quick-start", "version": "v1.35.0"},
                "controlPlaneRef": {"apiVersion": "controlplane.cluster.x-k8s.io/v1beta1", "kind": "KubeadmControlPlane", "name": "web-cp"},
                "infrastructureRef": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "AWSCluster", "name": "web"}
            },
            "status": {
                "controlPlaneReady": true,
                "infrastructureReady": true,
                "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                    {"type": "ControlPlaneReady", "status": "False", "severity": "Warning", "reason": "ScalingDown", "lastTransitionTime": "2026-01-01T00:00:00Z"}
                ]
            }
        }))
        .unwrap();
        let model = cluster.model();
        assert!(model.paused, "the paused annotation pauses too");
        assert_eq!(model.class_name.as_deref(), Some("quick-start"));
        assert_eq!(model.infrastructure_kind.as_deref(), Some("AWSCluster"));
        assert_eq!(model.control_plane_initialized, Some(true));
        assert!(model.control_plane_versions.is_empty());
        let available = model.control_plane_available.unwrap();
        assert_eq!(available.type_, "ControlPlaneReady");
        assert_eq!(available.reason.as_deref(), Some("ScalingDown"));
        let cp = model.control_plane_ref.unwrap();
        assert_eq!(cp.version.as_deref(), Some("v1beta1"));
        assert_eq!(cp.namespace.as_deref(), Some("team-a"));
    }

    #[test]
    fn v1beta1_prefers_its_v1beta2_view() {
        let cluster: v1beta1::Cluster = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "a"},
            "spec": {"paused": true},
            "status": {
                "controlPlaneReady": false,
                "conditions": [{"type": "ControlPlaneReady", "status": "False"}],
                "v1beta2": {
                    "conditions": [
                        {"type": "ControlPlaneInitialized", "status": "True"},
                        {"type": "ControlPlaneAvailable", "status": "True", "reason": "Available"}
                    ],
                    "controlPlane": {"versions": [{"version": "v1.36.3"}]}
                }
            }
        }))
        .unwrap();
        let model = cluster.model();
        assert!(model.paused);
        assert_eq!(model.control_plane_initialized, Some(true));
        assert_eq!(
            model.control_plane_available.unwrap().type_,
            "ControlPlaneAvailable"
        );
        assert_eq!(model.control_plane_versions, vec!["v1.36.3"]);
    }

    #[test]
    fn an_almost_empty_object_still_deserialises() {
        let cluster: v1beta2::Cluster =
            serde_json::from_value(json!({"metadata": {"name": "x", "namespace": "y"}})).unwrap();
        let model = cluster.model();
        assert_eq!(model.control_plane_initialized, None);
        assert_eq!(model.control_plane_ref, None);
    }

    #[test]
    fn trimming_a_cached_cluster_never_changes_its_model() {
        let conditions = json!([
            {"type": "Ready", "status": "True", "message": "all good"},
            {"type": "ControlPlaneInitialized", "status": "True"},
            {"type": "ControlPlaneAvailable", "status": "False", "reason": "Down", "message": "1 of 3"},
            {"type": "ControlPlaneReady", "status": "False", "reason": "ScalingDown"},
            {"type": "InfrastructureReady", "status": "True"}
        ]);
        let metadata = |paused: bool| {
            let mut annotations =
                json!({"kubectl.kubernetes.io/last-applied-configuration": "{...}", "note": "x"});
            if paused {
                annotations["cluster.x-k8s.io/paused"] = json!("");
            }
            json!({"name": "web", "namespace": "team-a", "labels": {"env": "prod"},
                   "annotations": annotations, "finalizers": ["cluster.cluster.x-k8s.io"],
                   "ownerReferences": [{"apiVersion": "v1", "kind": "Namespace", "name": "team-a", "uid": "u"}]})
        };
        for paused in [false, true] {
            let mut v1beta2: v1beta2::Cluster = serde_json::from_value(json!({
                "metadata": metadata(paused),
                "spec": {"controlPlaneRef": {"apiGroup": "g", "kind": "K", "name": "cp"}},
                "status": {"conditions": conditions, "controlPlane": {"versions": [{"version": "v1.36.3"}]}}
            }))
            .unwrap();
            let before = v1beta2.model();
            v1beta2.trim(&|_| true);
            assert_eq!(v1beta2.model(), before);
            assert!(v1beta2.metadata.labels.is_none(), "moved to kept_labels");
            assert_eq!(v1beta2.kept_labels.get("env"), Some("prod"));
            assert_eq!(v1beta2.status.as_ref().unwrap().conditions.len(), 2);
            assert!(v1beta2.metadata.finalizers.is_none());
            assert!(v1beta2.metadata.owner_references.is_none());
            assert_eq!(v1beta2.metadata.annotations.is_some(), paused);

            for view in [true, false] {
                let mut status = json!({"conditions": conditions, "controlPlaneReady": true});
                if view {
                    status["v1beta2"] = json!({"conditions": conditions});
                }
                let mut v1beta1: v1beta1::Cluster = serde_json::from_value(json!({
                    "metadata": metadata(paused), "spec": {}, "status": status
                }))
                .unwrap();
                let before = v1beta1.model();
                v1beta1.trim(&|_| true);
                assert_eq!(v1beta1.model(), before, "paused {paused}, view {view}");
                assert_eq!(v1beta1.status.as_ref().unwrap().conditions.len(), 1);
            }
        }
    }

    #[test]
    fn trimming_keeps_only_the_labels_asked_for() {
        let mut cluster: v1beta2::Cluster = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "team-a",
                         "labels": {"env": "prod", "cluster.x-k8s.io/cluster-name": "web"}}
        }))
        .unwrap();
        cluster.trim(&|key| !key.starts_with("cluster.x-k8s.io/"));
        assert_eq!(
            cluster.model().labels,
            BTreeMap::from([("env".to_string(), "prod".to_string())])
        );
    }
}
