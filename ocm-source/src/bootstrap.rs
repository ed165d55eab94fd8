//! Bootstrap credentials for sinks: per cluster, a `ManagedServiceAccount` (OCM's
//! managed-serviceaccount addon creates the ServiceAccount on the spoke and keeps a token for it in
//! a hub Secret of the same name) and a `ManifestWork` (applied on the spoke by OCM's work agent)
//! that grants that ServiceAccount what a sink needs to mint identities — nothing more.
//!
//! What RBAC can and cannot express here (so "least privilege" is precise):
//! - RBAC cannot select by label, so "ServiceAccounts, ClusterRoles and ClusterRoleBindings it
//!   labels as ours" is enforced by *name*: every verb that names an object (get, update, patch,
//!   delete, `serviceaccounts/token` create, `bind`, `escalate`) is limited with `resourceNames` to
//!   the member identities the sinks use (`--bootstrap-member-identity`).
//! - `create` cannot be limited by name (the name is not part of the authorization of a create),
//!   so creating ServiceAccounts, ClusterRoles and ClusterRoleBindings of any name is granted.
//!   That is safe: Kubernetes' escalation checks only let the token create a role whose rules it
//!   already holds or which it may `escalate` (the named ones), and only bind roles it holds or may
//!   `bind` (the named ones); a new ServiceAccount grants nothing by itself.
//! - Minting a token (`serviceaccounts/token`) is limited to the named ServiceAccounts, so the
//!   token cannot impersonate any other ServiceAccount on the member (e.g. a controller's in
//!   `kube-system`).
//! - No read of Secrets, ConfigMaps or any workload, and no `list`/`watch`.
//! - Honestly: whoever holds this token can create a named ClusterRole with any rules and bind
//!   it, so it is as powerful as the identities the sinks are meant to mint (that is its job); the
//!   limits above stop it from doing anything else, and from reaching other identities.

use std::time::Duration;

use adapters::Category;
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bootstrap {
    /// Name of the ManagedServiceAccount, of the spoke ServiceAccount and of the token Secret.
    pub service_account: String,
    /// Namespace of that ServiceAccount on the spoke (the managed-serviceaccount agent's).
    pub spoke_namespace: String,
    /// Validity of the token the agent requests (it rotates before expiry).
    pub validity: Duration,
    /// Names of the ServiceAccounts, ClusterRoles and ClusterRoleBindings sinks create on members.
    pub member_identities: Vec<String>,
    /// Namespaces the sinks' ServiceAccounts live in on members: created by the ManifestWork (the
    /// token cannot create namespaces), and only `get`/`patch`able by name for the sinks' apply.
    pub member_namespaces: Vec<String>,
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
        if self.member_identities.is_empty() {
            // An empty resourceNames list means "every name" to RBAC: never emit one.
            return Err("--bootstrap-member-identity needs at least one name".into());
        }
        // ServiceAccount names are DNS-1123 subdomains; ClusterRole(Binding) names only need to be
        // valid path segments (sinks name theirs like `inventory-bridge:sveltos-sink:ns:sa`).
        if let Some(bad) = self
            .member_identities
            .iter()
            .find(|n| !is_dns1123_subdomain(n) && !is_rbac_object_name(n))
        {
            return Err(format!(
                "--bootstrap-member-identity {bad:?} is not a valid object name"
            ));
        }
        if self.member_namespaces.is_empty() {
            return Err("--bootstrap-member-namespace needs at least one namespace".into());
        }
        if let Some(bad) = self.member_namespaces.iter().find(|n| !is_dns1123_label(n)) {
            return Err(format!(
                "--bootstrap-member-namespace {bad:?} is not a valid namespace name"
            ));
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
    let work = json!({
        "spec": {
            "workload": {"manifests": member_grant(bootstrap)},
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

/// The member-side objects of the grant: one ClusterRole and its ClusterRoleBinding to the spoke
/// ServiceAccount. See the module documentation for why each rule is shaped as it is.
pub fn member_grant(bootstrap: &Bootstrap) -> Vec<Value> {
    let names = &bootstrap.member_identities;
    let namespaces = &bootstrap.member_namespaces;
    let labels = json!({LABEL_MEMBER_MANAGED_BY: MANAGED_BY});
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": bootstrap.grant_name(), "labels": labels},
        "rules": [
            {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["serviceaccounts"],
             "verbs": ["get", "update", "patch", "delete"], "resourceNames": names},
            {"apiGroups": [""], "resources": ["serviceaccounts/token"],
             "verbs": ["create"], "resourceNames": names},
            {"apiGroups": ["rbac.authorization.k8s.io"],
             "resources": ["clusterroles", "clusterrolebindings"], "verbs": ["create"]},
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"],
             "verbs": ["get", "update", "patch", "delete", "bind", "escalate"], "resourceNames": names},
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterrolebindings"],
             "verbs": ["get", "update", "patch", "delete"], "resourceNames": names},
            // Sinks apply (label) their namespace; the work agent has created it already.
            {"apiGroups": [""], "resources": ["namespaces"],
             "verbs": ["get", "patch"], "resourceNames": namespaces},
        ],
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": bootstrap.grant_name(), "labels": labels},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": bootstrap.grant_name(),
        },
        "subjects": [{
            "kind": "ServiceAccount",
            "name": bootstrap.service_account,
            "namespace": bootstrap.spoke_namespace,
        }],
    });
    let mut manifests: Vec<Value> = namespaces
        .iter()
        .map(|namespace| {
            json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": namespace, "labels": labels},
            })
        })
        .collect();
    manifests.push(role);
    manifests.push(binding);
    manifests
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bootstrap() -> Bootstrap {
        Bootstrap {
            service_account: "inventory-bridge".into(),
            spoke_namespace: DEFAULT_SPOKE_NAMESPACE.into(),
            validity: Duration::from_secs(24 * 3600),
            member_identities: vec!["sveltos-member".into()],
            member_namespaces: vec!["projectsveltos".into()],
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
            member_identities: vec![],
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
        let no_namespace = Bootstrap {
            member_namespaces: vec![],
            ..bootstrap()
        };
        assert!(
            no_namespace.validate().is_err(),
            "empty resourceNames means all"
        );
        let role_style = Bootstrap {
            member_identities: vec![
                "inventory-bridge:sveltos-sink:projectsveltos:projectsveltos".into(),
            ],
            ..bootstrap()
        };
        assert!(role_style.validate().is_ok());
        let slash = Bootstrap {
            member_identities: vec!["a/b".into()],
            ..bootstrap()
        };
        assert!(slash.validate().is_err());
    }

    #[test]
    fn companions_are_a_managed_service_account_and_a_manifest_work_in_the_cluster_namespace() {
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
        assert_eq!(work.object.metadata.namespace.as_deref(), Some("cluster-a"));
        assert_eq!(
            work.object.data["spec"]["workload"]["manifests"]
                .as_array()
                .unwrap()
                .len(),
            3,
            "the member namespace, the ClusterRole and its binding"
        );
        assert!(companions_for_bad_name().is_err());
    }

    fn companions_for_bad_name() -> Result<Vec<Companion>, Problem> {
        companions(&bootstrap(), "Not.A.Namespace")
    }

    #[test]
    fn the_grant_names_every_object_it_can_name_and_reads_nothing() {
        let grant = member_grant(&bootstrap());
        assert_eq!(grant[0]["kind"], "Namespace");
        assert_eq!(grant[0]["metadata"]["name"], "projectsveltos");
        let grant = &grant[1..];
        let rules = grant[0]["rules"].as_array().unwrap();
        for rule in rules {
            let verbs: Vec<&str> = rule["verbs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert!(!verbs.contains(&"list") && !verbs.contains(&"watch") && !verbs.contains(&"*"));
            let resources: Vec<&str> = rule["resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            for resource in &resources {
                assert!(
                    [
                        "serviceaccounts",
                        "serviceaccounts/token",
                        "clusterroles",
                        "clusterrolebindings",
                        "namespaces"
                    ]
                    .contains(resource),
                    "{resource}"
                );
            }
            if resources == ["namespaces"] {
                assert_eq!(verbs, ["get", "patch"]);
                assert_eq!(rule["resourceNames"], json!(["projectsveltos"]), "{rule}");
                continue;
            }
            // Only `create` may go without resourceNames (RBAC cannot name what does not exist yet),
            // and never for tokens.
            if verbs != ["create"] || resources == ["serviceaccounts/token"] {
                assert_eq!(rule["resourceNames"], json!(["sveltos-member"]), "{rule}");
            }
        }
        assert_eq!(
            grant[1]["subjects"][0],
            json!({"kind": "ServiceAccount", "name": "inventory-bridge", "namespace": DEFAULT_SPOKE_NAMESPACE})
        );
        assert_eq!(grant[1]["roleRef"]["name"], grant[0]["metadata"]["name"]);
    }
}
