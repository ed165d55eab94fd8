//! The identity a sink mints on a member with bootstrap access: a namespace, a ServiceAccount, a
//! ClusterRole and its ClusterRoleBinding (all labelled as ours, server-side applied), a token
//! from the TokenRequest API, and a check that the token really authenticates as that account.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde::Serialize;

use crate::sensitive::Sensitive;

/// Label on everything we create on a member.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Its value.
pub const MANAGED_BY: &str = "inventory-bridge";
/// Label naming the sink an object belongs to.
pub const LABEL_SINK: &str = "inventory-bridge.io/sink";

/// The apiserver's lower bound for `TokenRequest.spec.expirationSeconds`.
pub const MIN_TOKEN_TTL: Duration = Duration::from_secs(600);

/// Every verb on every resource and every non-resource URL: what the consumers' own registration
/// tools grant (`sveltosctl register cluster`, `argocd cluster add`).
pub fn full_access_rules() -> Vec<PolicyRule> {
    vec![
        PolicyRule {
            api_groups: Some(vec!["*".into()]),
            resources: Some(vec!["*".into()]),
            verbs: vec!["*".into()],
            ..PolicyRule::default()
        },
        PolicyRule {
            non_resource_urls: Some(vec!["*".into()]),
            verbs: vec!["*".into()],
            ..PolicyRule::default()
        },
    ]
}

/// What to create on each member.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberIdentity {
    /// Namespace of the ServiceAccount (created if missing, never deleted).
    pub namespace: String,
    /// ServiceAccount name.
    pub service_account: String,
    /// ClusterRole name.
    pub cluster_role: String,
    /// ClusterRoleBinding name.
    pub cluster_role_binding: String,
    /// Rules of the ClusterRole (or of each Role in namespaced mode).
    pub rules: Vec<PolicyRule>,
    /// Namespaced mode when not empty: instead of the ClusterRole and its binding, a Role and a
    /// RoleBinding (named like them) in each of these member namespaces, with the resource rules
    /// only (a Role cannot hold non-resource URLs).
    pub namespaces: Vec<String>,
}

impl MemberIdentity {
    /// An identity whose ClusterRole and binding are named after the sink and the account, so
    /// two sinks (or two accounts) on one member never share RBAC objects.
    pub fn new(sink: &str, namespace: &str, service_account: &str, rules: Vec<PolicyRule>) -> Self {
        let rbac_name = format!("inventory-bridge:{sink}:{namespace}:{service_account}");
        Self {
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
            cluster_role: rbac_name.clone(),
            cluster_role_binding: rbac_name,
            rules,
            namespaces: Vec::new(),
        }
    }

    /// The same identity in namespaced mode over `namespaces` (empty: cluster-wide).
    pub fn with_namespaces(mut self, namespaces: Vec<String>) -> Self {
        self.namespaces = namespaces;
        self
    }

    /// The rules a namespaced Role gets: those naming resources (non-resource URLs are
    /// cluster-scoped by nature and the apiserver refuses them in a Role).
    pub fn namespaced_rules(&self) -> Vec<PolicyRule> {
        self.rules
            .iter()
            .filter(|rule| rule.resources.as_ref().is_some_and(|r| !r.is_empty()))
            .cloned()
            .collect()
    }

    /// The username the apiserver gives the account's tokens.
    pub fn username(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account
        )
    }
}

/// Why minting failed. Each variant is one bounded category.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    /// The member did not answer (connection refused, timeout, TLS failure).
    #[error("member unreachable: {0}")]
    Unreachable(String),
    /// The member refused the bootstrap credential (401) or it lacks permission (403).
    #[error("member refused the bootstrap credential: {0}")]
    Refused(String),
    /// Any other failure creating the identity or the token.
    #[error("minting failed: {0}")]
    Mint(String),
    /// The new token did not authenticate as the minted account.
    #[error("the minted token failed verification: {0}")]
    Verify(String),
}

impl MemberError {
    /// The bounded category (metric label).
    pub fn category(&self) -> &'static str {
        match self {
            MemberError::Unreachable(_) => "member-unreachable",
            MemberError::Refused(_) => "member-refused",
            MemberError::Mint(_) => "mint-failed",
            MemberError::Verify(_) => "verify-failed",
        }
    }

    /// Classify a kube error from a member request made with the bootstrap credential.
    pub fn from_kube(what: &str, err: kube::Error) -> Self {
        let message = format!("{what}: {err}");
        match &err {
            kube::Error::Api(status) if matches!(status.code, 401 | 403) => {
                MemberError::Refused(message)
            }
            kube::Error::Api(_) => MemberError::Mint(message),
            _ => MemberError::Unreachable(message),
        }
    }
}

/// A token minted for the account.
#[derive(Clone, Debug)]
pub struct MintedToken {
    /// The bearer token.
    pub token: Sensitive,
    /// When it expires (as granted by the apiserver, which may shorten the request).
    pub expires_at: Timestamp,
    /// When we asked for it.
    pub issued_at: Timestamp,
}

fn labels(sink: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (LABEL_SINK.to_string(), sink.to_string()),
    ])
}

fn meta(name: &str, namespace: Option<&str>, sink: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(labels(sink)),
        ..ObjectMeta::default()
    }
}

async fn apply<K>(api: &Api<K>, name: &str, object: &K, sink: &str) -> Result<(), MemberError>
where
    K: kube::Resource + Clone + Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    // Forced: these objects are ours by name and label, and nobody else should own their fields.
    api.patch(
        name,
        &PatchParams::apply(sink).force(),
        &Patch::Apply(object),
    )
    .await
    .map(|_| ())
    .map_err(|err| MemberError::from_kube(&format!("applying {name}"), err))
}

/// Create or update the namespace, ServiceAccount, and the ClusterRole and ClusterRoleBinding
/// (or, in namespaced mode, a Role and RoleBinding per listed namespace).
pub async fn ensure_identity(
    client: &Client,
    identity: &MemberIdentity,
    sink: &str,
) -> Result<(), MemberError> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = Namespace {
        metadata: meta(&identity.namespace, None, sink),
        ..Namespace::default()
    };
    apply(&namespaces, &identity.namespace, &namespace, sink).await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &identity.namespace);
    let account = ServiceAccount {
        metadata: meta(&identity.service_account, Some(&identity.namespace), sink),
        ..ServiceAccount::default()
    };
    apply(&accounts, &identity.service_account, &account, sink).await?;
    if identity.namespaces.is_empty() {
        return ensure_cluster_rbac(client, identity, sink).await;
    }
    ensure_namespaced_rbac(client, identity, sink).await
}

fn account_subject(identity: &MemberIdentity) -> Vec<Subject> {
    vec![Subject {
        kind: "ServiceAccount".into(),
        name: identity.service_account.clone(),
        namespace: Some(identity.namespace.clone()),
        ..Subject::default()
    }]
}

async fn ensure_cluster_rbac(
    client: &Client,
    identity: &MemberIdentity,
    sink: &str,
) -> Result<(), MemberError> {
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let role = ClusterRole {
        metadata: meta(&identity.cluster_role, None, sink),
        rules: Some(identity.rules.clone()),
        ..ClusterRole::default()
    };
    apply(&roles, &identity.cluster_role, &role, sink).await?;
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let binding = ClusterRoleBinding {
        metadata: meta(&identity.cluster_role_binding, None, sink),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: identity.cluster_role.clone(),
        },
        subjects: Some(account_subject(identity)),
    };
    apply(&bindings, &identity.cluster_role_binding, &binding, sink).await
}

/// Namespaced mode: a Role and RoleBinding in each listed namespace (created when missing, like
/// the account's namespace); a cluster-wide grant left from an earlier cluster-wide run is
/// withdrawn, so switching modes really narrows the identity.
async fn ensure_namespaced_rbac(
    client: &Client,
    identity: &MemberIdentity,
    sink: &str,
) -> Result<(), MemberError> {
    let rules = identity.namespaced_rules();
    if rules.is_empty() {
        return Err(MemberError::Mint(
            "namespaced mode needs at least one rule naming resources".into(),
        ));
    }
    for namespace in &identity.namespaces {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let exists = namespaces
            .get_opt(namespace)
            .await
            .map_err(|err| MemberError::from_kube(&format!("reading namespace {namespace}"), err))?
            .is_some();
        if !exists {
            let created = Namespace {
                metadata: meta(namespace, None, sink),
                ..Namespace::default()
            };
            apply(&namespaces, namespace, &created, sink).await?;
        }
        let roles: Api<Role> = Api::namespaced(client.clone(), namespace);
        let role = Role {
            metadata: meta(&identity.cluster_role, Some(namespace), sink),
            rules: Some(rules.clone()),
        };
        apply(&roles, &identity.cluster_role, &role, sink).await?;
        let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), namespace);
        let binding = RoleBinding {
            metadata: meta(&identity.cluster_role_binding, Some(namespace), sink),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Role".into(),
                name: identity.cluster_role.clone(),
            },
            subjects: Some(account_subject(identity)),
        };
        apply(&bindings, &identity.cluster_role_binding, &binding, sink).await?;
    }
    // A bootstrap credential limited to those namespaces cannot see cluster-wide RBAC, and then
    // cannot have created it either: a refusal here is not a failure.
    match remove_cluster_rbac(client, identity).await {
        Err(MemberError::Refused(_)) | Ok(()) => Ok(()),
        Err(err) => Err(err),
    }
}

/// Ask for a token of `ttl` for the account.
pub async fn request_token(
    client: &Client,
    identity: &MemberIdentity,
    ttl: Duration,
) -> Result<MintedToken, MemberError> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &identity.namespace);
    let issued_at = Timestamp::now();
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let minted: TokenRequest = accounts
        .create_subresource(
            "token",
            &identity.service_account,
            &PostParams::default(),
            &request,
        )
        .await
        .map_err(|err| MemberError::from_kube("TokenRequest", err))?;
    let status = minted
        .status
        .ok_or_else(|| MemberError::Mint("TokenRequest answered without status".into()))?;
    let token = status
        .token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| MemberError::Mint("TokenRequest answered without a token".into()))?;
    Ok(MintedToken {
        token: Sensitive::new(token),
        // Absent only from a broken apiserver: then assume exactly what we asked for.
        expires_at: status.expiration_timestamp.map(|t| t.0).unwrap_or_else(|| {
            issued_at
                .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(
                    i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
                ))
                .unwrap_or(issued_at)
        }),
        issued_at,
    })
}

/// Check with a `SelfSubjectReview` that `client` (built with the new token) is `identity`.
pub async fn verify(client: &Client, identity: &MemberIdentity) -> Result<(), MemberError> {
    let reviews: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = reviews
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(|err| MemberError::Verify(format!("SelfSubjectReview: {err}")))?;
    let username = review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .unwrap_or_default();
    if username != identity.username() {
        return Err(MemberError::Verify(format!(
            "the token authenticates as {username:?}, expected {:?}",
            identity.username()
        )));
    }
    Ok(())
}

/// Delete a named object; already gone is fine.
async fn delete_named<K>(api: Api<K>, name: &str) -> Result<(), MemberError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(MemberError::from_kube(&format!("deleting {name}"), err)),
    }
}

async fn remove_cluster_rbac(
    client: &Client,
    identity: &MemberIdentity,
) -> Result<(), MemberError> {
    delete_named(
        Api::<ClusterRoleBinding>::all(client.clone()),
        &identity.cluster_role_binding,
    )
    .await?;
    delete_named(
        Api::<ClusterRole>::all(client.clone()),
        &identity.cluster_role,
    )
    .await
}

/// Delete the bindings and roles (cluster-wide, and in namespaced mode those of each listed
/// namespace) and the ServiceAccount (deleting the account revokes its tokens). Namespaces stay:
/// they may hold other things. Already gone is fine.
pub async fn remove_identity(
    client: &Client,
    identity: &MemberIdentity,
) -> Result<(), MemberError> {
    for namespace in &identity.namespaces {
        delete_named(
            Api::<RoleBinding>::namespaced(client.clone(), namespace),
            &identity.cluster_role_binding,
        )
        .await?;
        delete_named(
            Api::<Role>::namespaced(client.clone(), namespace),
            &identity.cluster_role,
        )
        .await?;
    }
    remove_cluster_rbac(client, identity).await?;
    delete_named(
        Api::<ServiceAccount>::namespaced(client.clone(), &identity.namespace),
        &identity.service_account,
    )
    .await
}

/// Parse a `--member-rules` file: a YAML or JSON list of RBAC PolicyRules, or `{rules: [...]}`.
pub fn parse_rules(text: &str) -> Result<Vec<PolicyRule>, String> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum RulesFile {
        List(Vec<PolicyRule>),
        Wrapped { rules: Vec<PolicyRule> },
    }
    let parsed: RulesFile =
        serde_saphyr::from_str(text).map_err(|err| format!("not a list of PolicyRules: {err}"))?;
    let rules = match parsed {
        RulesFile::List(rules) | RulesFile::Wrapped { rules } => rules,
    };
    if rules.is_empty() {
        return Err("the rules list is empty".into());
    }
    for (i, rule) in rules.iter().enumerate() {
        if rule.verbs.is_empty() {
            return Err(format!("rule {i} has no verbs"));
        }
        let has_resources = rule.resources.as_ref().is_some_and(|r| !r.is_empty());
        let has_urls = rule
            .non_resource_urls
            .as_ref()
            .is_some_and(|u| !u.is_empty());
        if has_resources == has_urls {
            return Err(format!(
                "rule {i} must name either resources or nonResourceURLs"
            ));
        }
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_files_parse_as_list_or_wrapped_and_are_checked() {
        let list = parse_rules(
            "- apiGroups: ['']\n  resources: [configmaps]\n  verbs: [get, list]\n- nonResourceURLs: ['/version']\n  verbs: [get]\n",
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].verbs, vec!["get", "list"]);
        let wrapped = parse_rules(
            r#"{"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}"#,
        )
        .unwrap();
        assert_eq!(
            wrapped[0].resources.as_deref(),
            Some(&["pods".to_string()][..])
        );
        assert!(parse_rules("[]").is_err());
        assert!(parse_rules("- resources: [pods]\n  verbs: []\n").is_err());
        assert!(parse_rules("- verbs: [get]\n").is_err());
        assert!(parse_rules("not: rules").is_err());
    }

    #[test]
    fn namespaced_roles_keep_only_resource_rules() {
        let rules = parse_rules(
            "- apiGroups: ['*']\n  resources: ['*']\n  verbs: ['*']\n- nonResourceURLs: ['*']\n  verbs: ['*']\n",
        )
        .unwrap();
        let identity = MemberIdentity::new("argocd-sink", "ib", "sa", rules)
            .with_namespaces(vec!["a".into(), "b".into()]);
        assert_eq!(identity.namespaced_rules().len(), 1);
        assert_eq!(identity.namespaces, vec!["a", "b"]);
        assert!(
            MemberIdentity::new("s", "ib", "sa", vec![])
                .namespaces
                .is_empty()
        );
    }

    #[test]
    fn identity_names_are_per_sink_and_account() {
        let identity =
            MemberIdentity::new("sveltos-sink", "projectsveltos", "projectsveltos", vec![]);
        assert_eq!(
            identity.cluster_role,
            "inventory-bridge:sveltos-sink:projectsveltos:projectsveltos"
        );
        assert_eq!(
            identity.username(),
            "system:serviceaccount:projectsveltos:projectsveltos"
        );
    }
}
