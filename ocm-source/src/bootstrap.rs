//! Bootstrap credentials for sinks: per cluster, a `ManagedServiceAccount` (OCM's
//! managed-serviceaccount addon creates the ServiceAccount on the spoke and keeps a token for it in
//! a hub Secret of the same name) and a `ManifestWork` (applied on the spoke by OCM's work agent).
//!
//! The ManifestWork itself provisions each configured sink's member identity — its namespace,
//! ServiceAccount, ClusterRole with exactly the configured rules, and the binding — carrying the
//! sink instance's ownership mark, so the sinks find them ready. The bootstrap token can then do
//! only what a sink still needs:
//! - `get` those objects by name (to check they are as configured);
//! - `create serviceaccounts/token` for those ServiceAccounts only (minting);
//! - `delete` those ServiceAccounts only (revoking every token minted for them; the work agent
//!   recreates the account, without tokens).
//!
//! It cannot create, change, bind or escalate any role, bind anything to anyone, create any
//! ServiceAccount, or read anything else (Secrets, ConfigMaps, workloads): nothing it holds grants
//! any subject anything beyond the configured sink identities, nor any rule the operator did not
//! configure. The sink identities themselves are as powerful as their rules say (by default what
//! each consumer's own registration tool grants); that power is the operator's choice.
//!
//! When the ManifestWork is deleted (the cluster left the inventory and every sink has finished
//! with its profile), the work agent removes what it applied, except the shared namespaces, which
//! are orphaned (they may hold other things).

use std::time::Duration;

use adapters::Category;
use adapters::member::{self, MemberIdentity};
use adapters::names::{dns1123_name, is_dns1123_label, is_dns1123_subdomain};
use adapters::source::{Companion, Problem};
use kube::api::{DynamicObject, ObjectMeta};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

/// Default namespace of the managed-serviceaccount agent on the spoke (the addon's default
/// install namespace), where it creates the ServiceAccount.
pub const DEFAULT_SPOKE_NAMESPACE: &str = "open-cluster-management-agent-addon";
/// Label on what we put on members.
pub const LABEL_MEMBER_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Its value.
pub const MANAGED_BY: &str = "inventory-bridge";

/// Bootstrap configuration (`--bootstrap-serviceaccount` and friends).
#[derive(Clone, Debug, PartialEq)]
pub struct Bootstrap {
    /// Name of the ManagedServiceAccount, of the spoke ServiceAccount and of the token Secret.
    pub service_account: String,
    /// Namespace of that ServiceAccount on the spoke (the managed-serviceaccount agent's).
    pub spoke_namespace: String,
    /// Validity of the token the agent requests (it rotates before expiry).
    pub validity: Duration,
    /// The sink identities the ManifestWork provisions and the token may mint tokens for.
    pub identities: Vec<MemberIdentity>,
}

impl Bootstrap {
    /// Check names once, at start: a bad one is a configuration error.
    pub fn validate(&self) -> Result<(), String> {
        if !is_dns1123_label(&self.service_account) {
            return Err(format!(
                "--bootstrap-serviceaccount {:?} is not a valid ServiceAccount/Secret name (DNS-1123 label)",
                self.service_account
            ));
        }
        if !is_dns1123_label(&self.spoke_namespace) {
            return Err(format!(
                "--bootstrap-spoke-namespace {:?} is not a valid namespace name",
                self.spoke_namespace
            ));
        }
        if self.identities.is_empty() {
            // An empty resourceNames list means "every name" to RBAC: never emit one.
            return Err("--bootstrap-sink needs at least one sink".into());
        }
        for identity in &self.identities {
            if !is_dns1123_label(&identity.namespace) {
                return Err(format!(
                    "sink {}: member namespace {:?} is not a valid namespace name",
                    identity.instance, identity.namespace
                ));
            }
            if !is_dns1123_subdomain(&identity.service_account) {
                return Err(format!(
                    "sink {}: member ServiceAccount {:?} is not a valid name",
                    identity.instance, identity.service_account
                ));
            }
            if !is_rbac_object_name(&identity.cluster_role) {
                return Err(format!(
                    "sink {}: ClusterRole name {:?} is not a valid name",
                    identity.instance, identity.cluster_role
                ));
            }
        }
        let mut accounts = std::collections::BTreeSet::new();
        for identity in &self.identities {
            if !accounts.insert((&identity.namespace, &identity.service_account)) {
                return Err(format!(
                    "two bootstrap sinks share the member ServiceAccount {}/{}",
                    identity.namespace, identity.service_account
                ));
            }
        }
        if self.validity < Duration::from_secs(600) {
            return Err("--bootstrap-token-validity must be at least 10m".into());
        }
        Ok(())
    }

    /// Name of the ClusterRole/ClusterRoleBinding (on the spoke) and of the ManifestWork (on the hub).
    pub fn grant_name(&self) -> String {
        dns1123_name(
            &format!("inventory-bridge-bootstrap-{}", self.service_account),
            63,
            false,
        )
    }

    /// The member namespaces of the identities, each once, in order.
    pub fn member_namespaces(&self) -> Vec<String> {
        let mut namespaces: Vec<String> = Vec::new();
        for identity in &self.identities {
            if !namespaces.contains(&identity.namespace) {
                namespaces.push(identity.namespace.clone());
            }
        }
        namespaces
    }
}

/// A name RBAC objects accept: a path segment (no `/` or `%`, not `.` or `..`), at most 253.
fn is_rbac_object_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name != "."
        && name != ".."
        && !name.contains(['/', '%'])
}

/// `authentication.open-cluster-management.io/v1beta1` ManagedServiceAccount.
pub fn managed_service_account_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            "authentication.open-cluster-management.io",
            "v1beta1",
            "ManagedServiceAccount",
        ),
        "managedserviceaccounts",
    )
}

/// `work.open-cluster-management.io/v1` ManifestWork.
pub fn manifest_work_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("work.open-cluster-management.io", "v1", "ManifestWork"),
        "manifestworks",
    )
}

/// Go's `time.Duration` text (`24h0m0s`), as `metav1.Duration` is written back by OCM: the same
/// spelling keeps our apply a no-op.
pub fn go_duration(duration: Duration) -> String {
    let total = duration.as_secs();
    format!("{}h{}m{}s", total / 3600, (total % 3600) / 60, total % 60)
}

/// The companions of cluster `cluster` (in its hub namespace, named after it).
pub fn companions(bootstrap: &Bootstrap, cluster: &str) -> Result<Vec<Companion>, Problem> {
    if !is_dns1123_label(cluster) {
        return Err(Problem::new(
            Category::InvalidInput,
            format!(
                "ManagedCluster {cluster} cannot have a hub namespace (not a DNS-1123 label): no bootstrap credentials"
            ),
        ));
    }
    let msa = json!({
        "spec": {
            "rotation": {"enabled": true, "validity": go_duration(bootstrap.validity)},
        },
    });
    // Shared namespaces outlive the work: they may hold other things.
    let orphaned: Vec<Value> = bootstrap
        .member_namespaces()
        .iter()
        .map(|ns| json!({"group": "", "resource": "namespaces", "name": ns}))
        .collect();
    let work = json!({
        "spec": {
            "workload": {"manifests": member_grant(bootstrap)},
            "deleteOption": {
                "propagationPolicy": "SelectivelyOrphan",
                "selectivelyOrphans": {"orphaningRules": orphaned},
            },
        },
    });
    Ok(vec![
        companion(
            managed_service_account_resource(),
            &bootstrap.service_account,
            cluster,
            msa,
        ),
        companion(
            manifest_work_resource(),
            &bootstrap.grant_name(),
            cluster,
            work,
        ),
    ])
}

fn companion(resource: ApiResource, name: &str, namespace: &str, data: Value) -> Companion {
    Companion {
        object: DynamicObject {
            types: None,
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            },
            data,
        },
        resource,
    }
}

/// The member-side objects: each sink identity (namespace, ServiceAccount, ClusterRole,
/// ClusterRoleBinding, marked as that instance's and as provisioned by us), then the bootstrap
/// grant (a Role per member namespace for the accounts, a ClusterRole for reading the RBAC objects
/// and namespaces by name) bound to the spoke ServiceAccount.
pub fn member_grant(bootstrap: &Bootstrap) -> Vec<Value> {
    let grant = bootstrap.grant_name();
    let grant_labels = json!({LABEL_MEMBER_MANAGED_BY: MANAGED_BY});
    let subject = json!({
        "kind": "ServiceAccount",
        "name": bootstrap.service_account,
        "namespace": bootstrap.spoke_namespace,
    });
    let namespaces = bootstrap.member_namespaces();
    let mut manifests: Vec<Value> = namespaces
        .iter()
        .map(|namespace| {
            json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": namespace, "labels": grant_labels},
            })
        })
        .collect();
    for identity in &bootstrap.identities {
        let mut labels = identity.mark();
        labels.insert(member::LABEL_SINK.to_string(), identity.instance.clone());
        let metadata = |name: &str, namespace: Option<&str>| {
            let mut meta = json!({
                "name": name,
                "labels": labels,
                "annotations": {member::ANNOTATION_PROVISIONED_BY: "ocm-source"},
            });
            if let Some(namespace) = namespace {
                meta["namespace"] = json!(namespace);
            }
            meta
        };
        manifests.push(json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": metadata(&identity.service_account, Some(&identity.namespace)),
        }));
        manifests.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": metadata(&identity.cluster_role, None),
            "rules": identity.rules,
        }));
        manifests.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": metadata(&identity.cluster_role_binding, None),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": identity.cluster_role,
            },
            "subjects": [{
                "kind": "ServiceAccount",
                "name": identity.service_account,
                "namespace": identity.namespace,
            }],
        }));
    }
    for namespace in &namespaces {
        let accounts: Vec<&str> = bootstrap
            .identities
            .iter()
            .filter(|i| &i.namespace == namespace)
            .map(|i| i.service_account.as_str())
            .collect();
        manifests.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": grant, "namespace": namespace, "labels": grant_labels},
            "rules": [
                {"apiGroups": [""], "resources": ["serviceaccounts"],
                 "verbs": ["get", "delete"], "resourceNames": accounts},
                {"apiGroups": [""], "resources": ["serviceaccounts/token"],
                 "verbs": ["create"], "resourceNames": accounts},
            ],
        }));
        manifests.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": grant, "namespace": namespace, "labels": grant_labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": grant},
            "subjects": [subject],
        }));
    }
    let mut role_names: Vec<&str> = Vec::new();
    for identity in &bootstrap.identities {
        for name in [&identity.cluster_role, &identity.cluster_role_binding] {
            if !role_names.contains(&name.as_str()) {
                role_names.push(name);
            }
        }
    }
    manifests.push(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": grant, "labels": grant_labels},
        "rules": [
            {"apiGroups": ["rbac.authorization.k8s.io"],
             "resources": ["clusterroles", "clusterrolebindings"],
             "verbs": ["get"], "resourceNames": role_names},
            {"apiGroups": [""], "resources": ["namespaces"],
             "verbs": ["get"], "resourceNames": namespaces},
        ],
    }));
    manifests.push(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": grant, "labels": grant_labels},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": grant},
        "subjects": [subject],
    }));
    manifests
}

#[cfg(test)]
mod tests {
    use super::*;
    use adapters::member::defaults;

    fn bootstrap() -> Bootstrap {
        Bootstrap {
            service_account: "inventory-bridge".into(),
            spoke_namespace: DEFAULT_SPOKE_NAMESPACE.into(),
            validity: Duration::from_secs(24 * 3600),
            identities: defaults::SINKS
                .iter()
                .filter_map(|s| defaults::identity_of(s))
                .collect(),
        }
    }

    #[test]
    fn durations_are_spelled_like_go() {
        assert_eq!(go_duration(Duration::from_secs(24 * 3600)), "24h0m0s");
        assert_eq!(go_duration(Duration::from_secs(3600 + 61)), "1h1m1s");
    }

    #[test]
    fn validation_refuses_what_would_widen_the_grant() {
        assert!(bootstrap().validate().is_ok());
        let empty = Bootstrap {
            identities: vec![],
            ..bootstrap()
        };
        assert!(empty.validate().is_err(), "empty resourceNames means all");
        let short = Bootstrap {
            validity: Duration::from_secs(60),
            ..bootstrap()
        };
        assert!(short.validate().is_err());
        let bad = Bootstrap {
            service_account: "Not_A_Name".into(),
            ..bootstrap()
        };
        assert!(bad.validate().is_err());
        let mut twice = bootstrap();
        twice.identities.push(twice.identities[0].clone());
        assert!(twice.validate().is_err());
    }

    #[test]
    fn companions_are_a_managed_service_account_and_a_manifest_work_that_orphans_namespaces() {
        let companions = companions(&bootstrap(), "cluster-a").unwrap();
        assert_eq!(companions.len(), 2);
        let msa = &companions[0];
        assert_eq!(msa.resource.kind, "ManagedServiceAccount");
        assert_eq!(
            msa.object.metadata.name.as_deref(),
            Some("inventory-bridge")
        );
        assert_eq!(msa.object.metadata.namespace.as_deref(), Some("cluster-a"));
        assert_eq!(
            msa.object.data["spec"]["rotation"],
            json!({"enabled": true, "validity": "24h0m0s"})
        );
        let work = &companions[1];
        assert_eq!(work.resource.kind, "ManifestWork");
        assert_eq!(
            work.object.metadata.name.as_deref(),
            Some("inventory-bridge-bootstrap-inventory-bridge")
        );
        assert_eq!(
            work.object.data["spec"]["deleteOption"],
            json!({"propagationPolicy": "SelectivelyOrphan", "selectivelyOrphans": {"orphaningRules": [
                {"group": "", "resource": "namespaces", "name": "inventory-bridge"}]}})
        );
        assert!(companions_for_bad_name().is_err());
    }

    fn companions_for_bad_name() -> Result<Vec<Companion>, Problem> {
        companions(&bootstrap(), "Not.A.Namespace")
    }

    #[test]
    fn the_work_provisions_each_sink_identity_exactly_as_the_sinks_mint_it() {
        let grant = member_grant(&bootstrap());
        for identity in &bootstrap().identities {
            let account = grant
                .iter()
                .find(|m| {
                    m["kind"] == "ServiceAccount"
                        && m["metadata"]["name"] == identity.service_account.as_str()
                })
                .unwrap();
            assert_eq!(
                account["metadata"]["namespace"],
                identity.namespace.as_str()
            );
            let labels: std::collections::BTreeMap<String, String> =
                serde_json::from_value(account["metadata"]["labels"].clone()).unwrap();
            assert!(identity.is_marked(Some(&labels)), "{labels:?}");
            let role = grant
                .iter()
                .find(|m| {
                    m["kind"] == "ClusterRole"
                        && m["metadata"]["name"] == identity.cluster_role.as_str()
                })
                .unwrap();
            assert_eq!(
                role["rules"],
                serde_json::to_value(&identity.rules).unwrap()
            );
            let binding = grant
                .iter()
                .find(|m| {
                    m["kind"] == "ClusterRoleBinding"
                        && m["metadata"]["name"] == identity.cluster_role_binding.as_str()
                })
                .unwrap();
            assert_eq!(
                binding["subjects"][0]["name"],
                identity.service_account.as_str()
            );
        }
    }

    #[test]
    fn the_bootstrap_grant_names_every_object_and_never_writes_rbac_or_reads_secrets() {
        let grant = member_grant(&bootstrap());
        let name = bootstrap().grant_name();
        let grant_rules: Vec<&Value> = grant
            .iter()
            .filter(|m| {
                m["metadata"]["name"] == name.as_str()
                    && (m["kind"] == "Role" || m["kind"] == "ClusterRole")
            })
            .flat_map(|m| m["rules"].as_array().unwrap().iter())
            .collect();
        assert!(!grant_rules.is_empty());
        for rule in grant_rules {
            let verbs: Vec<&str> = rule["verbs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            for verb in &verbs {
                assert!(["get", "delete", "create"].contains(verb), "{rule}");
            }
            let resources: Vec<&str> = rule["resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            if verbs.contains(&"create") {
                assert_eq!(resources, ["serviceaccounts/token"], "{rule}");
            }
            if verbs.contains(&"delete") {
                assert_eq!(resources, ["serviceaccounts"], "{rule}");
            }
            for resource in &resources {
                assert!(!resource.contains("secret"), "{rule}");
            }
            let names = rule["resourceNames"].as_array().unwrap();
            assert!(!names.is_empty(), "every rule is limited by name: {rule}");
        }
        let bindings: Vec<&Value> = grant
            .iter()
            .filter(|m| {
                m["metadata"]["name"] == name.as_str()
                    && m["kind"].as_str().unwrap().ends_with("Binding")
            })
            .collect();
        assert_eq!(
            bindings.len(),
            2,
            "a RoleBinding in the one member namespace and a ClusterRoleBinding"
        );
        for binding in bindings {
            assert_eq!(
                binding["subjects"][0],
                json!({"kind": "ServiceAccount", "name": "inventory-bridge", "namespace": DEFAULT_SPOKE_NAMESPACE})
            );
        }
    }
}
