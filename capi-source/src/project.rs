//! The mapping from a Cluster (normalised into [`ClusterModel`]) and what was observed about it to
//! its ClusterProfile. Pure: no I/O, no clock; unit-tested with plain values.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use adapters::Category;
use adapters::ca_bundle::CaBundle;
use adapters::kubeconfig_secret::Endpoint;
use adapters::member_reads::MemberRead;
use adapters::names::{dns1123_name, is_valid_label_key, is_valid_label_value};
use adapters::profile::{
    AccessProvider, CONDITION_CONTROL_PLANE_HEALTHY, CONDITION_JOINED, Cluster,
    ClusterProfileStatus, ClusterVersion, EXTENSION_EXEC, LABEL_CLUSTER_MANAGER,
    LABEL_INVENTORY_MEMBER_ID, NamedExtension, PROPERTY_CLUSTER_ID,
};
use adapters::source::{DesiredProfile, LABEL_SOURCE, Problem, Projection};
use adapters::status::{ConditionFacts, condition, properties};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use crate::cluster::{
    ApiEndpoint, ClusterModel, KUBECONFIG_KEY, LABEL_CLUSTER_NAME, kubeconfig_secret_name,
};

/// Label recording the namespace of the Cluster a profile was projected from.
pub const LABEL_SOURCE_NAMESPACE: &str = "inventory-bridge.io/source-namespace";
/// Property: the Cluster's ClusterClass.
pub const PROPERTY_CLUSTER_CLASS: &str = "capi.inventory-bridge.io/cluster-class";
/// Property: the kind of the Cluster's infrastructure object (the infrastructure provider).
pub const PROPERTY_INFRASTRUCTURE_KIND: &str = "capi.inventory-bridge.io/infrastructure-kind";
/// Well-known topology labels copied into properties when the Cluster carries them.
pub const TOPOLOGY_LABELS: [&str; 2] = [
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
];

/// Default `--profile-name-template`.
pub const DEFAULT_NAME_TEMPLATE: &str = "{namespace}-{name}";
/// Default `--exclude-label-prefixes`.
pub const DEFAULT_EXCLUDED_PREFIXES: [&str; 2] =
    ["cluster.x-k8s.io/", "topology.cluster.x-k8s.io/"];
/// Profile names are DNS-1123 labels (≤ 63) so consumers can derive names and label values
/// from them.
pub const PROFILE_NAME_MAX: usize = 63;

/// A profile name template with `{namespace}` and `{name}` placeholders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameTemplate(String);

impl NameTemplate {
    /// Check a template: only `{namespace}` and `{name}`, and `{name}` is required (without it
    /// every Cluster of a namespace would share one profile).
    pub fn parse(template: &str) -> Result<Self, String> {
        let stripped = template.replace("{namespace}", "").replace("{name}", "");
        if stripped.contains('{') || stripped.contains('}') {
            return Err(format!(
                "profile name template {template:?}: only {{namespace}} and {{name}} may be used"
            ));
        }
        if !template.contains("{name}") {
            return Err(format!(
                "profile name template {template:?} must contain {{name}}"
            ));
        }
        Ok(Self(template.to_string()))
    }

    /// The profile name of `namespace/name`: the rendered template when it is a valid DNS-1123
    /// label, else a sanitised, truncated form with a stable hash suffix.
    pub fn render(&self, namespace: &str, name: &str) -> String {
        let rendered = self
            .0
            .replace("{namespace}", namespace)
            .replace("{name}", name);
        dns1123_name(&rendered, PROFILE_NAME_MAX, false)
    }
}

impl Default for NameTemplate {
    fn default() -> Self {
        Self(DEFAULT_NAME_TEMPLATE.to_string())
    }
}

/// What the projection is configured with (from flags).
#[derive(Clone, Debug)]
pub struct ProjectionConfig {
    /// Namespace of the inventory the profiles go to.
    pub inventory_namespace: String,
    /// `spec.clusterManager.name`.
    pub cluster_manager: String,
    /// Profile names.
    pub name_template: NameTemplate,
    /// Cluster label prefixes not copied onto profiles.
    pub excluded_label_prefixes: Vec<String>,
    /// Name of the access provider we publish.
    pub access_provider_name: String,
}

impl ProjectionConfig {
    /// Whether a Cluster's label `key` is copied onto its profile (when valid there).
    pub fn copies_label(&self, key: &str) -> bool {
        !reserved_label(key)
            && !self
                .excluded_label_prefixes
                .iter()
                .any(|prefix| !prefix.is_empty() && key.starts_with(prefix.as_str()))
    }

    /// Whether [`project`] reads a Cluster's label `key` at all: copied, or a topology label
    /// published as a property (see [`crate::cluster::CapiCluster::trim`]).
    pub fn reads_label(&self, key: &str) -> bool {
        self.copies_label(key) || TOPOLOGY_LABELS.contains(&key)
    }

    /// Defaults, with profiles in `inventory_namespace`.
    pub fn new(inventory_namespace: &str) -> Self {
        Self {
            inventory_namespace: inventory_namespace.to_string(),
            cluster_manager: "cluster-api".to_string(),
            name_template: NameTemplate::default(),
            excluded_label_prefixes: DEFAULT_EXCLUDED_PREFIXES.map(String::from).to_vec(),
            access_provider_name: "cluster-api".to_string(),
        }
    }
}

/// The `<cluster>-kubeconfig` Secret as observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum KubeconfigState {
    /// No such Secret (with the `cluster.x-k8s.io/cluster-name` label).
    #[default]
    Missing,
    /// It exists but cannot be used; the reason names what is wrong, never a value.
    Invalid(String),
    /// It is usable; where it points.
    Valid(Endpoint),
}

/// The control-plane object's version, when the Cluster's status has none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ControlPlaneState {
    /// Not needed or no `controlPlaneRef`.
    #[default]
    NotRead,
    /// `status.version` of the control-plane object.
    Version(String),
    /// The object exists but reports no version yet.
    NoVersion,
    /// The reference cannot be followed.
    Failed {
        /// Bounded category.
        category: Category,
        /// Why.
        message: String,
    },
}

/// What `observe` gathered for one Cluster.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observations {
    /// The kubeconfig Secret.
    pub kubeconfig: KubeconfigState,
    /// `tls.crt` of `<cluster>-ca` (for the access-provider fallback; written out only then).
    pub cluster_ca: Option<Arc<CaBundle>>,
    /// The member read, when the kubeconfig was usable.
    pub member: Option<MemberRead>,
    /// The control-plane object's version.
    pub control_plane: ControlPlaneState,
}

fn reserved_label(key: &str) -> bool {
    [
        LABEL_CLUSTER_MANAGER,
        LABEL_SOURCE,
        LABEL_INVENTORY_MEMBER_ID,
        LABEL_SOURCE_NAMESPACE,
        LABEL_CLUSTER_NAME,
    ]
    .contains(&key)
}

fn own_property(name: &str) -> bool {
    name == PROPERTY_CLUSTER_CLASS
        || name == PROPERTY_INFRASTRUCTURE_KIND
        || TOPOLOGY_LABELS.contains(&name)
}

/// The oldest of the control-plane versions (during an upgrade the control plane is only as new
/// as its oldest machine, which is also what control-plane providers report as `status.version`).
fn oldest_version(versions: &[String]) -> Option<String> {
    fn key(version: &str) -> Vec<u64> {
        version
            .trim_start_matches('v')
            .split(['.', '-', '+'])
            .map_while(|part| part.parse::<u64>().ok())
            .collect()
    }
    versions.iter().min_by_key(|v| key(v)).cloned()
}

fn endpoint_url(endpoint: &ApiEndpoint) -> String {
    let port = if endpoint.port > 0 {
        endpoint.port
    } else {
        6443
    };
    if endpoint.host.contains(':') && !endpoint.host.starts_with('[') {
        format!("https://[{}]:{port}", endpoint.host)
    } else {
        format!("https://{}:{port}", endpoint.host)
    }
}

/// Project one Cluster. `Err` (a paused Cluster) leaves its profile exactly as last projected.
pub fn project(
    model: &ClusterModel,
    observed: &Observations,
    config: &ProjectionConfig,
    previous: &ClusterProfileStatus,
    previous_labels: &BTreeMap<String, String>,
    now: &Time,
) -> Result<Projection, Problem> {
    let key = format!("{}/{}", model.namespace, model.name);
    if model.paused {
        return Err(Problem::invalid(format!(
            "Cluster {key} is paused (spec.paused or the cluster.x-k8s.io/paused annotation): its ClusterProfile is left as last projected until it is resumed"
        )));
    }
    let mut problems = Vec::new();
    let secret = kubeconfig_secret_name(&model.name);
    let initialized = model.control_plane_initialized == Some(true);

    // Labels.
    let mut labels = BTreeMap::new();
    for (k, v) in &model.labels {
        if !config.copies_label(k) {
            continue;
        }
        if is_valid_label_key(k) && is_valid_label_value(v) {
            labels.insert(k.clone(), v.clone());
        } else {
            problems.push(Problem::invalid(format!(
                "label {k:?} is not a valid label for a ClusterProfile and is not copied"
            )));
        }
    }
    for (label, value) in [
        (LABEL_CLUSTER_NAME, &model.name),
        (LABEL_SOURCE_NAMESPACE, &model.namespace),
    ] {
        if is_valid_label_value(value) {
            labels.insert(label.to_string(), value.clone());
        } else {
            problems.push(Problem::invalid(format!(
                "{value:?} is not a valid label value (at most 63 alphanumerics, '-', '_', '.'), so label {label} is left off"
            )));
        }
    }

    // Member facts: fresh, else the last known (this process, else the published profile).
    let member = observed.member.as_ref();
    let fresh = member.and_then(|m| m.facts.as_ref());
    let (member_id, member_properties) = match fresh {
        Some(facts) => (
            facts.cluster_id().map(str::to_string),
            facts
                .cluster_properties
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
        ),
        None => (
            previous_labels.get(LABEL_INVENTORY_MEMBER_ID).cloned(),
            previous
                .properties
                .iter()
                .filter(|p| !own_property(&p.name))
                .map(|p| (p.name.clone(), p.value.clone()))
                .collect(),
        ),
    };
    if let Some(id) = member_id.filter(|id| !id.is_empty()) {
        if is_valid_label_value(&id) {
            labels.insert(LABEL_INVENTORY_MEMBER_ID.to_string(), id);
        } else {
            problems.push(Problem::invalid(format!(
                "the member's cluster id (ClusterProperty {PROPERTY_CLUSTER_ID}) is not a valid label value, so label {LABEL_INVENTORY_MEMBER_ID} is left off"
            )));
        }
    }
    if let Some(failure) = member.and_then(|m| m.failure.as_ref()) {
        problems.push(Problem::new(
            failure.category,
            format!(
                "reading the member with the kubeconfig in Secret {}/{secret}: {}; the member id and member properties keep their last known values",
                model.namespace, failure.message
            ),
        ));
    }

    // Version: the Cluster's status, else the control-plane object, else the topology.
    let version = oldest_version(&model.control_plane_versions).or_else(|| {
        match &observed.control_plane {
            ControlPlaneState::Version(v) => Some(v.clone()),
            ControlPlaneState::Failed { category, message } => {
                if let Some(reference) = &model.control_plane_ref {
                    problems.push(Problem::new(
                        *category,
                        format!(
                            "spec.controlPlaneRef ({} {}) cannot be followed: {message}; the version falls back to spec.topology.version",
                            reference.kind, reference.name
                        ),
                    ));
                }
                None
            }
            ControlPlaneState::NotRead | ControlPlaneState::NoVersion => None,
        }
        .or_else(|| model.topology_version.clone())
    });

    // Conditions.
    let healthy = match &model.control_plane_available {
        Some(c) => {
            let status = match c.status.as_str() {
                "True" | "False" => c.status.to_string(),
                _ => "Unknown".to_string(),
            };
            let reason = match c.reason.as_deref().filter(|r| !r.is_empty()) {
                Some(reason) => reason.to_string(),
                None => match status.as_str() {
                    "True" => "ControlPlaneAvailable",
                    "False" => "ControlPlaneNotAvailable",
                    _ => "ControlPlaneAvailabilityUnknown",
                }
                .to_string(),
            };
            let message = match c.message.as_deref().filter(|m| !m.is_empty()) {
                Some(message) => message.to_string(),
                None => format!("Cluster API condition {} is {}", c.type_, c.status),
            };
            ConditionFacts {
                type_: CONDITION_CONTROL_PLANE_HEALTHY.to_string(),
                status,
                reason,
                message,
            }
        }
        None => ConditionFacts {
            type_: CONDITION_CONTROL_PLANE_HEALTHY.to_string(),
            status: "Unknown".to_string(),
            reason: "ControlPlaneAvailabilityNotReported".to_string(),
            message: "Cluster API reports no ControlPlaneAvailable (v1beta2) or ControlPlaneReady (v1beta1) condition yet".to_string(),
        },
    };
    let joined = |status: &str, reason: &str, message: String| ConditionFacts {
        type_: CONDITION_JOINED.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
    };
    let joined = if !initialized {
        joined(
            "False",
            "ControlPlaneNotInitialized",
            "the control plane is not initialized yet".to_string(),
        )
    } else {
        match &observed.kubeconfig {
            KubeconfigState::Missing => {
                problems.push(Problem::new(
                    Category::NotFound,
                    format!(
                        "the control plane is initialized but Secret {}/{secret} (labelled {LABEL_CLUSTER_NAME}={}) does not exist",
                        model.namespace, model.name
                    ),
                ));
                joined(
                    "False",
                    "KubeconfigSecretMissing",
                    format!("Secret {secret} does not exist yet"),
                )
            }
            KubeconfigState::Invalid(reason) => {
                problems.push(Problem::invalid(format!(
                    "Secret {}/{secret}: the kubeconfig {reason}",
                    model.namespace
                )));
                joined(
                    "False",
                    "KubeconfigSecretInvalid",
                    format!("the kubeconfig in Secret {secret} {reason}"),
                )
            }
            KubeconfigState::Valid(_) => match member.and_then(|m| m.failure.as_ref()) {
                Some(failure) => joined(
                    "True",
                    "MemberUnreachable",
                    format!(
                        "the control plane is initialized and Secret {secret} holds its kubeconfig, but {}; the member id and member properties are the last values read",
                        failure.message
                    ),
                ),
                None => joined(
                    "True",
                    "KubeconfigAvailable",
                    format!(
                        "the control plane is initialized and Secret {secret} holds its kubeconfig"
                    ),
                ),
            },
        }
    };
    let conditions = vec![
        condition(healthy, &previous.conditions, now),
        condition(joined, &previous.conditions, now),
    ];

    // Properties: the member's verbatim (KEP: MUST keep name and value), then ours where the
    // member does not already say.
    let mut facts: Vec<(String, String)> = member_properties;
    let mut own = Vec::new();
    if let Some(class) = &model.class_name {
        own.push((PROPERTY_CLUSTER_CLASS.to_string(), class.clone()));
    }
    if let Some(kind) = &model.infrastructure_kind {
        own.push((PROPERTY_INFRASTRUCTURE_KIND.to_string(), kind.clone()));
    }
    for label in TOPOLOGY_LABELS {
        if let Some(value) = model.labels.get(label) {
            own.push((label.to_string(), value.clone()));
        }
    }
    for (name, value) in own {
        if !facts.iter().any(|(n, _)| *n == name) {
            facts.push((name, value));
        }
    }
    let (properties, rejected) = properties(facts, &previous.properties, now);
    for (name, why) in rejected {
        problems.push(Problem::invalid(format!(
            "property {name:?} is not published: {why}"
        )));
    }

    // Access provider: the kubeconfig's current context, else controlPlaneEndpoint + <cluster>-ca.
    let extension = NamedExtension {
        name: EXTENSION_EXEC.to_string(),
        extension: json!({
            "name": secret,
            "key": KUBECONFIG_KEY,
            "namespace": model.namespace,
        }),
    };
    let cluster = match &observed.kubeconfig {
        KubeconfigState::Valid(endpoint) => Some(Cluster {
            server: endpoint.server.clone(),
            certificate_authority_data: endpoint
                .certificate_authority_data
                .as_ref()
                .map(CaBundle::to_base64),
            tls_server_name: endpoint.tls_server_name.clone(),
            insecure_skip_tls_verify: endpoint.insecure_skip_tls_verify,
            proxy_url: endpoint.proxy_url.clone(),
            extensions: vec![extension],
            ..Cluster::default()
        }),
        _ => model
            .control_plane_endpoint
            .as_ref()
            .map(|endpoint| Cluster {
                server: endpoint_url(endpoint),
                certificate_authority_data: observed.cluster_ca.as_deref().map(CaBundle::to_base64),
                extensions: vec![extension],
                ..Cluster::default()
            }),
    };
    let access_providers = cluster
        .map(|cluster| AccessProvider {
            name: config.access_provider_name.clone(),
            cluster: Some(cluster),
        })
        .into_iter()
        .collect();

    let status = ClusterProfileStatus {
        conditions,
        version: version.map(|v| ClusterVersion {
            kubernetes: Some(v),
        }),
        properties,
        access_providers,
        credential_providers: Vec::new(),
    };
    Ok(Projection {
        profiles: vec![DesiredProfile {
            namespace: config.inventory_namespace.clone(),
            name: config.name_template.render(&model.namespace, &model.name),
            display_name: Some(key),
            labels,
            status,
        }],
        companions: Vec::new(),
        problems,
        requeue_after: member.map(|m| m.retry_in).filter(|d| *d > Duration::ZERO),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::CapiCondition;
    use adapters::member_reads::{MemberFacts, MemberReadFailure};
    use adapters::names::is_dns1123_label;
    use adapters::profile::Property;
    use adapters::served_versions::KindRef;

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }
    fn t0() -> Time {
        time("2026-01-01T00:00:00Z")
    }
    fn t1() -> Time {
        time("2026-01-01T01:00:00Z")
    }

    fn model() -> ClusterModel {
        ClusterModel {
            namespace: "team-a".into(),
            name: "web".into(),
            labels: BTreeMap::from([
                ("env".into(), "prod".into()),
                ("cluster.x-k8s.io/cluster-name".into(), "web".into()),
                ("topology.cluster.x-k8s.io/owned".into(), "".into()),
                ("topology.kubernetes.io/region".into(), "eu-west".into()),
            ]),
            control_plane_initialized: Some(true),
            control_plane_available: Some(CapiCondition {
                type_: "ControlPlaneAvailable".into(),
                status: "True".into(),
                reason: Some("Available".into()),
                message: None,
            }),
            control_plane_versions: vec!["v1.36.3".into()],
            topology_version: Some("v1.37.0".into()),
            class_name: Some("quick-start".into()),
            infrastructure_kind: Some("DockerCluster".into()),
            control_plane_endpoint: Some(ApiEndpoint {
                host: "10.0.0.9".into(),
                port: 6443,
            }),
            ..ClusterModel::default()
        }
    }

    fn endpoint() -> Endpoint {
        Endpoint {
            server: "https://127.0.0.1:40001".into(),
            certificate_authority_data: Some(CaBundle::from_base64("Q0E=")),
            ..Endpoint::default()
        }
    }

    fn healthy_member() -> MemberRead {
        MemberRead {
            facts: Some(Arc::new(MemberFacts {
                kube_system_uid: Some("uid-1".into()),
                cluster_properties: Box::new([("clusterset.k8s.io".into(), "set-a".into())]),
            })),
            failure: None,
            retry_in: Duration::from_secs(300),
        }
    }

    /// `observed` with one more property read from the member.
    fn add_member_property(observed: &mut Observations, name: &str, value: &str) {
        let read = observed.member.as_mut().unwrap();
        let mut facts = read.facts.as_deref().cloned().unwrap_or_default();
        let mut properties = facts.cluster_properties.into_vec();
        properties.push((name.into(), value.into()));
        facts.cluster_properties = properties.into();
        read.facts = Some(Arc::new(facts));
    }

    fn observed() -> Observations {
        Observations {
            kubeconfig: KubeconfigState::Valid(endpoint()),
            cluster_ca: None,
            member: Some(healthy_member()),
            control_plane: ControlPlaneState::NotRead,
        }
    }

    fn run(model: &ClusterModel, observed: &Observations) -> Projection {
        run_configured(model, observed, &ProjectionConfig::new("inventory"))
    }

    fn run_configured(
        model: &ClusterModel,
        observed: &Observations,
        config: &ProjectionConfig,
    ) -> Projection {
        project(
            model,
            observed,
            config,
            &ClusterProfileStatus::default(),
            &BTreeMap::new(),
            &t0(),
        )
        .unwrap()
    }

    fn status_of(projection: &Projection) -> &ClusterProfileStatus {
        &projection.profiles[0].status
    }

    fn cond<'a>(
        status: &'a ClusterProfileStatus,
        type_: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        status.condition(type_).unwrap()
    }

    #[test]
    fn names_follow_the_template_and_stay_valid() {
        let default = NameTemplate::default();
        assert_eq!(default.render("team-a", "web"), "team-a-web");
        // Same-named Clusters in two namespaces never collide.
        assert_ne!(
            default.render("team-a", "web"),
            default.render("team-b", "web")
        );
        let custom = NameTemplate::parse("capi-{name}").unwrap();
        assert_eq!(custom.render("team-a", "web"), "capi-web");
        // Too long: truncated with a stable hash suffix.
        let long = "n".repeat(70);
        let name = default.render("team-a", &long);
        assert_eq!(name.len(), PROFILE_NAME_MAX);
        assert!(is_dns1123_label(&name), "{name}");
        assert_eq!(name, default.render("team-a", &long));
        assert_ne!(name, default.render("team-b", &long));
        // Dots are valid in Cluster names but not in DNS-1123 labels.
        let dotted = default.render("team-a", "web.example");
        assert!(is_dns1123_label(&dotted), "{dotted}");
        assert!(NameTemplate::parse("{namespace}").is_err());
        assert!(NameTemplate::parse("{name}-{uid}").is_err());
    }

    #[test]
    fn spec_display_name_labels_and_access_provider() {
        let projection = run(&model(), &observed());
        assert!(projection.problems.is_empty(), "{:?}", projection.problems);
        let profile = &projection.profiles[0];
        assert_eq!(profile.namespace, "inventory");
        assert_eq!(profile.name, "team-a-web");
        assert_eq!(profile.display_name.as_deref(), Some("team-a/web"));
        let labels = &profile.labels;
        assert_eq!(labels.get("env").map(String::as_str), Some("prod"));
        assert_eq!(
            labels.get(LABEL_CLUSTER_NAME).map(String::as_str),
            Some("web")
        );
        assert_eq!(
            labels.get(LABEL_SOURCE_NAMESPACE).map(String::as_str),
            Some("team-a")
        );
        assert!(!labels.contains_key("topology.cluster.x-k8s.io/owned"));
        assert_eq!(
            labels.get(LABEL_INVENTORY_MEMBER_ID).map(String::as_str),
            Some("uid-1")
        );
        let provider = &profile.status.access_providers[0];
        assert_eq!(provider.name, "cluster-api");
        let cluster = provider.cluster.as_ref().unwrap();
        assert_eq!(cluster.server, "https://127.0.0.1:40001");
        assert_eq!(cluster.certificate_authority_data.as_deref(), Some("Q0E="));
        assert_eq!(cluster.extensions.len(), 1);
        assert_eq!(cluster.extensions[0].name, EXTENSION_EXEC);
        assert_eq!(
            cluster.extensions[0].extension,
            json!({"name": "web-kubeconfig", "key": "value", "namespace": "team-a"})
        );
    }

    #[test]
    fn excluded_prefixes_are_configurable_and_reserved_labels_are_never_copied() {
        let mut model = model();
        model
            .labels
            .insert(LABEL_CLUSTER_MANAGER.into(), "someone-else".into());
        model
            .labels
            .insert(LABEL_INVENTORY_MEMBER_ID.into(), "spoofed".into());
        let mut config = ProjectionConfig::new("inventory");
        config.excluded_label_prefixes = vec!["env".into()];
        let projection = run_configured(&model, &observed(), &config);
        let labels = &projection.profiles[0].labels;
        assert!(!labels.contains_key("env"));
        assert!(labels.contains_key("topology.cluster.x-k8s.io/owned"));
        assert!(!labels.contains_key(LABEL_CLUSTER_MANAGER));
        assert_eq!(
            labels.get(LABEL_INVENTORY_MEMBER_ID).map(String::as_str),
            Some("uid-1")
        );
    }

    #[test]
    fn member_id_prefers_the_id_property_then_the_kube_system_uid() {
        let mut observed = observed();
        add_member_property(&mut observed, PROPERTY_CLUSTER_ID, "custom-id");
        let projection = run(&model(), &observed);
        assert_eq!(
            projection.profiles[0]
                .labels
                .get(LABEL_INVENTORY_MEMBER_ID)
                .map(String::as_str),
            Some("custom-id")
        );
        // Neither: no label.
        let mut observed = self::observed();
        observed.member = Some(MemberRead {
            facts: Some(Arc::default()),
            ..MemberRead::default()
        });
        let projection = run(&model(), &observed);
        assert!(
            !projection.profiles[0]
                .labels
                .contains_key(LABEL_INVENTORY_MEMBER_ID)
        );
    }

    #[test]
    fn invalid_label_values_are_skipped_and_reported() {
        let mut model = model();
        model.name = "a".repeat(70);
        let mut observed = observed();
        add_member_property(&mut observed, PROPERTY_CLUSTER_ID, "not a label value!");
        let projection = run(&model, &observed);
        let labels = &projection.profiles[0].labels;
        assert!(!labels.contains_key(LABEL_CLUSTER_NAME));
        assert!(!labels.contains_key(LABEL_INVENTORY_MEMBER_ID));
        assert_eq!(projection.problems.len(), 2, "{:?}", projection.problems);
        assert!(
            projection
                .problems
                .iter()
                .all(|p| p.category == Category::InvalidInput)
        );
        // The profile is still there, with a valid name.
        assert!(is_dns1123_label(&projection.profiles[0].name));
    }

    #[test]
    fn version_from_status_then_control_plane_object_then_topology() {
        let mut model = model();
        model.control_plane_versions = vec!["v1.36.3".into(), "v1.35.9".into(), "v1.36.10".into()];
        let mut observed = observed();
        observed.control_plane = ControlPlaneState::Version("v1.30.0".into());
        let version = |p: &Projection| {
            status_of(p)
                .version
                .as_ref()
                .and_then(|v| v.kubernetes.clone())
        };
        // During an upgrade, the oldest control-plane version.
        assert_eq!(version(&run(&model, &observed)).as_deref(), Some("v1.35.9"));
        model.control_plane_versions.clear();
        assert_eq!(version(&run(&model, &observed)).as_deref(), Some("v1.30.0"));
        observed.control_plane = ControlPlaneState::NoVersion;
        assert_eq!(version(&run(&model, &observed)).as_deref(), Some("v1.37.0"));
        model.topology_version = None;
        assert_eq!(version(&run(&model, &observed)), None);
    }

    #[test]
    fn a_bogus_control_plane_ref_is_reported_and_falls_back_to_topology() {
        let mut model = model();
        model.control_plane_versions.clear();
        model.control_plane_ref = Some(KindRef {
            group: "nope.example".into(),
            version: None,
            kind: "Nope".into(),
            namespace: Some("team-a".into()),
            name: "web".into(),
        });
        let mut observed = observed();
        observed.control_plane = ControlPlaneState::Failed {
            category: Category::InvalidInput,
            message: "API group \"nope.example\" is not served".into(),
        };
        let projection = run(&model, &observed);
        assert_eq!(
            status_of(&projection)
                .version
                .as_ref()
                .and_then(|v| v.kubernetes.as_deref()),
            Some("v1.37.0")
        );
        assert_eq!(projection.problems.len(), 1);
        assert!(
            projection.problems[0]
                .message
                .contains("spec.controlPlaneRef (Nope web)")
        );
    }

    #[test]
    fn control_plane_healthy_follows_the_capi_condition() {
        let projection = run(&model(), &observed());
        let healthy = cond(status_of(&projection), CONDITION_CONTROL_PLANE_HEALTHY);
        assert_eq!(
            (healthy.status.as_str(), healthy.reason.as_str()),
            ("True", "Available")
        );
        // Not available: false, with the reason and message.
        let mut model = model();
        model.control_plane_available = Some(CapiCondition {
            type_: "ControlPlaneAvailable".into(),
            status: "False".into(),
            reason: Some("NotAvailable".into()),
            message: Some("2 of 3 machines down".into()),
        });
        let projection = run(&model, &observed());
        let healthy = cond(status_of(&projection), CONDITION_CONTROL_PLANE_HEALTHY);
        assert_eq!(healthy.status, "False");
        assert_eq!(healthy.reason, "NotAvailable");
        assert_eq!(healthy.message, "2 of 3 machines down");
        // v1beta1's ControlPlaneReady without a reason.
        model.control_plane_available = Some(CapiCondition {
            type_: "ControlPlaneReady".into(),
            status: "False".into(),
            reason: None,
            message: None,
        });
        let projection = run(&model, &observed());
        let healthy = cond(status_of(&projection), CONDITION_CONTROL_PLANE_HEALTHY);
        assert_eq!(healthy.reason, "ControlPlaneNotAvailable");
        assert!(healthy.message.contains("ControlPlaneReady"));
        // Not reported.
        model.control_plane_available = None;
        let projection = run(&model, &observed());
        assert_eq!(
            cond(status_of(&projection), CONDITION_CONTROL_PLANE_HEALTHY).status,
            "Unknown"
        );
    }

    #[test]
    fn joined_needs_an_initialized_control_plane_and_the_kubeconfig() {
        let joined = |model: &ClusterModel, observed: &Observations| {
            let projection = run(model, observed);
            let c = cond(status_of(&projection), CONDITION_JOINED).clone();
            (c.status, c.reason, projection.problems)
        };
        let (status, reason, problems) = joined(&model(), &observed());
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("True", "KubeconfigAvailable")
        );
        assert!(problems.is_empty());

        let mut provisioning = model();
        provisioning.control_plane_initialized = Some(false);
        let mut no_secret = observed();
        no_secret.kubeconfig = KubeconfigState::Missing;
        no_secret.member = None;
        let (status, reason, problems) = joined(&provisioning, &no_secret);
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "ControlPlaneNotInitialized")
        );
        assert!(
            problems.is_empty(),
            "a provisioning Cluster is not a problem"
        );

        let (status, reason, problems) = joined(&model(), &no_secret);
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "KubeconfigSecretMissing")
        );
        assert_eq!(problems[0].category, Category::NotFound);

        let mut invalid = no_secret.clone();
        invalid.kubeconfig = KubeconfigState::Invalid("has no current-context".into());
        let (status, reason, problems) = joined(&model(), &invalid);
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "KubeconfigSecretInvalid")
        );
        assert!(problems[0].message.contains("has no current-context"));
    }

    #[test]
    fn an_unreachable_member_keeps_the_last_known_values() {
        let first = run(&model(), &observed());
        let previous = status_of(&first).clone();
        let previous_labels = first.profiles[0].labels.clone();
        // This process never read it (e.g. after a restart): the published values stay.
        let mut observed = observed();
        observed.member = Some(MemberRead {
            facts: None,
            failure: Some(MemberReadFailure {
                category: Category::KubeApi,
                message: "cannot connect to the member's API server".into(),
            }),
            retry_in: Duration::from_secs(4),
        });
        let projection = project(
            &model(),
            &observed,
            &ProjectionConfig::new("inventory"),
            &previous,
            &previous_labels,
            &t1(),
        )
        .unwrap();
        let status = status_of(&projection);
        assert_eq!(
            projection.profiles[0]
                .labels
                .get(LABEL_INVENTORY_MEMBER_ID)
                .map(String::as_str),
            Some("uid-1")
        );
        assert_eq!(status.properties, previous.properties);
        let joined = cond(status, CONDITION_JOINED);
        assert_eq!(
            (joined.status.as_str(), joined.reason.as_str()),
            ("True", "MemberUnreachable")
        );
        // Same status: the transition time does not move.
        assert_eq!(joined.last_transition_time, t0());
        assert_eq!(projection.requeue_after, Some(Duration::from_secs(4)));
        assert_eq!(projection.problems[0].category, Category::KubeApi);
    }

    #[test]
    fn properties_member_verbatim_plus_class_infrastructure_and_topology() {
        let projection = run(&model(), &observed());
        let props: Vec<(&str, &str)> = status_of(&projection)
            .properties
            .iter()
            .map(|p| (p.name.as_str(), p.value.as_str()))
            .collect();
        assert_eq!(
            props,
            vec![
                ("clusterset.k8s.io", "set-a"),
                (PROPERTY_CLUSTER_CLASS, "quick-start"),
                (PROPERTY_INFRASTRUCTURE_KIND, "DockerCluster"),
                ("topology.kubernetes.io/region", "eu-west"),
            ]
        );
        // The member's own value wins over ours, and lastObservedTime stays while values do.
        let mut observed = observed();
        add_member_property(
            &mut observed,
            "topology.kubernetes.io/region",
            "member-says",
        );
        let first = run(&model(), &observed);
        let again = project(
            &model(),
            &observed,
            &ProjectionConfig::new("inventory"),
            status_of(&first),
            &BTreeMap::new(),
            &t1(),
        )
        .unwrap();
        let region: Vec<&Property> = status_of(&again)
            .properties
            .iter()
            .filter(|p| p.name == "topology.kubernetes.io/region")
            .collect();
        assert_eq!(region.len(), 1);
        assert_eq!(region[0].value, "member-says");
        assert_eq!(region[0].last_observed_time, Some(t0()));
        assert_eq!(
            status_of(&first),
            status_of(&again),
            "recomputing changes nothing"
        );
    }

    #[test]
    fn access_provider_falls_back_to_the_endpoint_and_ca_secret() {
        let mut observed = observed();
        observed.kubeconfig = KubeconfigState::Missing;
        observed.member = None;
        observed.cluster_ca = Some(Arc::new(CaBundle::from_base64("Q0EtZnJvbS1zZWNyZXQ=")));
        let projection = run(&model(), &observed);
        let cluster = status_of(&projection).access_providers[0]
            .cluster
            .clone()
            .unwrap();
        assert_eq!(cluster.server, "https://10.0.0.9:6443");
        assert_eq!(
            cluster.certificate_authority_data.as_deref(),
            Some("Q0EtZnJvbS1zZWNyZXQ=")
        );
        assert_eq!(cluster.extensions[0].name, EXTENSION_EXEC);
        let mut model = model();
        model.control_plane_endpoint = Some(ApiEndpoint {
            host: "fd00::1".into(),
            port: 0,
        });
        let projection = run(&model, &observed);
        assert_eq!(
            status_of(&projection).access_providers[0]
                .cluster
                .as_ref()
                .unwrap()
                .server,
            "https://[fd00::1]:6443"
        );
        model.control_plane_endpoint = None;
        assert!(
            status_of(&run(&model, &observed))
                .access_providers
                .is_empty()
        );
    }

    #[test]
    fn a_paused_cluster_is_left_as_it_was() {
        let mut model = model();
        model.paused = true;
        let err = project(
            &model,
            &observed(),
            &ProjectionConfig::new("inventory"),
            &ClusterProfileStatus::default(),
            &BTreeMap::new(),
            &t0(),
        )
        .unwrap_err();
        assert_eq!(err.category, Category::InvalidInput);
        assert!(err.message.contains("paused"));
    }

    #[test]
    fn a_persistent_member_failure_keeps_status_stable() {
        let mut observed = observed();
        observed.member.as_mut().unwrap().failure = Some(MemberReadFailure {
            category: Category::KubeApi,
            message: "cannot connect to the member's API server".into(),
        });
        let first = run(&model(), &observed);
        let again = project(
            &model(),
            &observed,
            &ProjectionConfig::new("inventory"),
            status_of(&first),
            &first.profiles[0].labels,
            &t1(),
        )
        .unwrap();
        assert_eq!(status_of(&first), status_of(&again));
        assert_eq!(first.problems, again.problems);
    }

    /// The cache trims each Cluster with [`ProjectionConfig::reads_label`]: whatever the
    /// configuration, the trimmed Cluster projects exactly as the whole one (labels copied,
    /// topology properties, the problems of invalid labels).
    #[test]
    fn trimming_a_cached_cluster_never_changes_its_projection() {
        use crate::cluster::{CapiCluster, v1beta2};
        let cluster: v1beta2::Cluster = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "team-a", "labels": {
                "env": "prod",
                "bad": "not a valid value!",
                "cluster.x-k8s.io/cluster-name": "web",
                "topology.cluster.x-k8s.io/owned": "",
                "topology.kubernetes.io/region": "eu-west",
                "topology.kubernetes.io/zone": "eu-west-1a",
                (LABEL_CLUSTER_MANAGER): "spoofed",
            }},
            "spec": {"topology": {"classRef": {"name": "quick-start"}, "version": "v1.36.3"}}
        }))
        .unwrap();
        let mut excluding_topology = ProjectionConfig::new("inventory");
        excluding_topology.excluded_label_prefixes = vec!["topology.kubernetes.io/".into()];
        let mut copying_all = ProjectionConfig::new("inventory");
        copying_all.excluded_label_prefixes.clear();
        for config in [
            ProjectionConfig::new("inventory"),
            excluding_topology,
            copying_all,
        ] {
            let projected = |cluster: &v1beta2::Cluster| {
                format!(
                    "{:?}",
                    run_configured(&cluster.model(), &observed(), &config)
                )
            };
            let mut trimmed = cluster.clone();
            trimmed.trim(&|key| config.reads_label(key));
            assert_eq!(projected(&trimmed), projected(&cluster), "{config:?}");
        }
        // The default configuration keeps neither Cluster API's own labels nor reserved ones.
        let mut trimmed = cluster;
        let config = ProjectionConfig::new("inventory");
        trimmed.trim(&|key| config.reads_label(key));
        assert_eq!(
            trimmed
                .kept_labels
                .iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>(),
            [
                "bad",
                "env",
                "topology.kubernetes.io/region",
                "topology.kubernetes.io/zone"
            ]
        );
    }
}
