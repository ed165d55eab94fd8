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

pub mod defaults;
pub mod ensured;

/// Label on everything we create on a member.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Its value.
pub const MANAGED_BY: &str = "inventory-bridge";
/// Label naming the sink an object belongs to.
pub const LABEL_SINK: &str = "inventory-bridge.io/sink";
/// Label naming the sink *instance* an object belongs to (`--instance`, default the sink name):
/// together with [`LABEL_MANAGED_BY`] it is the ownership mark. An object without it is never
/// changed or deleted.
pub const LABEL_INSTANCE: &str = "inventory-bridge.io/instance";
/// Annotation on member objects that something else provisions for us (ocm-source's
/// ManifestWork): the sink uses them but leaves their removal to their provisioner.
pub const ANNOTATION_PROVISIONED_BY: &str = "inventory-bridge.io/provisioned-by";
/// Default namespace of every sink's member ServiceAccount.
pub const DEFAULT_MEMBER_NAMESPACE: &str = "inventory-bridge";

/// The apiserver's lower bound for `TokenRequest.spec.expirationSeconds`.
pub const MIN_TOKEN_TTL: Duration = Duration::from_secs(600);

/// What to create on each member.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberIdentity {
    /// The sink instance whose ownership mark the objects carry.
    pub instance: String,
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

/// Every verb on every resource and every non-resource URL: what the consumers' own registration
/// tools grant (`sveltosctl register cluster`, `argocd cluster add`).
pub fn full_access_rules() -> Vec<PolicyRule> {
    defaults::sveltos_rules()
}

impl MemberIdentity {
    /// An identity whose ClusterRole and binding are named after the instance and the account,
    /// so two sinks (or two instances, or two accounts) on one member never share RBAC objects.
    pub fn new(
        instance: &str,
        namespace: &str,
        service_account: &str,
        rules: Vec<PolicyRule>,
    ) -> Self {
        let rbac_name = format!("inventory-bridge:{instance}:{namespace}:{service_account}");
        Self {
            instance: instance.to_string(),
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

    /// The default identity of sink instance `instance`: `inventory-bridge/inventory-bridge-<instance>`
    /// — names no consumer's own tooling uses (`sveltosctl` uses `projectsveltos`, `argocd cluster
    /// add` uses `argocd-manager`).
    pub fn default_for(instance: &str, rules: Vec<PolicyRule>) -> Self {
        Self::new(
            instance,
            DEFAULT_MEMBER_NAMESPACE,
            &format!("inventory-bridge-{instance}"),
            rules,
        )
    }

    /// The username the apiserver gives the account's tokens.
    pub fn username(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account
        )
    }

    /// The ownership mark (labels) of this identity's objects.
    pub fn mark(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
            (LABEL_INSTANCE.to_string(), self.instance.clone()),
        ])
    }

    /// Whether `labels` carry this identity's ownership mark.
    pub fn is_marked(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        labels.is_some_and(|labels| {
            self.mark()
                .iter()
                .all(|(k, v)| labels.get(k).is_some_and(|have| have == v))
        })
    }
}

/// What a sink minted on a member, as recorded on the hub: revocation acts on exactly this.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MintedIdentity {
    /// The instance whose mark the objects carry.
    pub instance: String,
    /// ServiceAccount namespace.
    pub namespace: String,
    /// ServiceAccount name.
    pub service_account: String,
    /// ServiceAccount uid (tokens are bound to it; a recreated account is another identity).
    pub service_account_uid: String,
    /// ClusterRole name.
    pub cluster_role: String,
    /// ClusterRoleBinding name.
    pub cluster_role_binding: String,
    /// Namespaced mode: the namespaces holding a Role and RoleBinding of those names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
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
    /// An object of our name exists without our ownership mark: never taken over.
    #[error("{0}")]
    NameConflict(String),
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
            MemberError::NameConflict(_) => "name-conflict",
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

fn meta(name: &str, namespace: Option<&str>, identity: &MemberIdentity, sink: &str) -> ObjectMeta {
    let mut labels = identity.mark();
    labels.insert(LABEL_SINK.to_string(), sink.to_string());
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(labels),
        ..ObjectMeta::default()
    }
}

async fn get<K>(api: &Api<K>, name: &str) -> Result<Option<K>, MemberError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name)
        .await
        .map_err(|err| MemberError::from_kube(&format!("reading {name}"), err))
}

async fn apply<K>(api: &Api<K>, name: &str, object: &K, sink: &str) -> Result<K, MemberError>
where
    K: kube::Resource + Clone + Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    // Forced only after the ownership mark was checked: the object is ours, its fields too.
    api.patch(
        name,
        &PatchParams::apply(sink).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(|err| MemberError::from_kube(&format!("applying {name}"), err))
}

fn conflict(kind: &str, name: &str, identity: &MemberIdentity) -> MemberError {
    MemberError::NameConflict(format!(
        "{kind} {name} exists on the member without our ownership mark ({LABEL_MANAGED_BY}={MANAGED_BY}, {LABEL_INSTANCE}={}); not taking it over (choose other names with --member-namespace/--member-service-account)",
        identity.instance
    ))
}

/// Make sure the namespace, ServiceAccount, ClusterRole and ClusterRoleBinding exist as
/// configured, writing only what is missing or differs. An object of one of these names without
/// our ownership mark is a [`MemberError::NameConflict`]: never overwritten. A namespace that
/// exists is used as it is (namespaces are shared). Returns the ServiceAccount's uid.
pub async fn ensure_identity(
    client: &Client,
    identity: &MemberIdentity,
    sink: &str,
) -> Result<String, MemberError> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if get(&namespaces, &identity.namespace).await?.is_none() {
        let namespace = Namespace {
            metadata: meta(&identity.namespace, None, identity, sink),
            ..Namespace::default()
        };
        apply(&namespaces, &identity.namespace, &namespace, sink).await?;
    }

    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &identity.namespace);
    let account = match get(&accounts, &identity.service_account).await? {
        Some(existing) if !identity.is_marked(existing.metadata.labels.as_ref()) => {
            return Err(conflict(
                "ServiceAccount",
                &format!("{}/{}", identity.namespace, identity.service_account),
                identity,
            ));
        }
        Some(existing) => existing,
        None => {
            let account = ServiceAccount {
                metadata: meta(
                    &identity.service_account,
                    Some(&identity.namespace),
                    identity,
                    sink,
                ),
                ..ServiceAccount::default()
            };
            apply(&accounts, &identity.service_account, &account, sink).await?
        }
    };
    let uid = account
        .metadata
        .uid
        .clone()
        .ok_or_else(|| MemberError::Mint("the ServiceAccount has no uid".into()))?;

    if identity.namespaces.is_empty() {
        ensure_cluster_rbac(client, identity, sink).await?;
    } else {
        ensure_namespaced_rbac(client, identity, sink).await?;
    }
    Ok(uid)
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
    let existing = get(&roles, &identity.cluster_role).await?;
    if let Some(role) = &existing
        && !identity.is_marked(role.metadata.labels.as_ref())
    {
        return Err(conflict("ClusterRole", &identity.cluster_role, identity));
    }
    let rules_match = existing
        .as_ref()
        .is_some_and(|role| role.rules.as_deref().unwrap_or_default() == identity.rules);
    if !rules_match {
        let role = ClusterRole {
            metadata: meta(&identity.cluster_role, None, identity, sink),
            rules: Some(identity.rules.clone()),
            ..ClusterRole::default()
        };
        apply(&roles, &identity.cluster_role, &role, sink).await?;
    }

    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let role_ref = RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "ClusterRole".into(),
        name: identity.cluster_role.clone(),
    };
    let subjects = vec![Subject {
        kind: "ServiceAccount".into(),
        name: identity.service_account.clone(),
        namespace: Some(identity.namespace.clone()),
        ..Subject::default()
    }];
    let existing = get(&bindings, &identity.cluster_role_binding).await?;
    if let Some(binding) = &existing
        && !identity.is_marked(binding.metadata.labels.as_ref())
    {
        return Err(conflict(
            "ClusterRoleBinding",
            &identity.cluster_role_binding,
            identity,
        ));
    }
    let binding_matches = existing.as_ref().is_some_and(|binding| {
        binding.role_ref == role_ref && binding.subjects.as_deref() == Some(&subjects[..])
    });
    if !binding_matches {
        let binding = ClusterRoleBinding {
            metadata: meta(&identity.cluster_role_binding, None, identity, sink),
            role_ref,
            subjects: Some(subjects),
        };
        apply(&bindings, &identity.cluster_role_binding, &binding, sink).await?;
    }
    Ok(())
}

/// Namespaced mode: a Role and RoleBinding in each listed namespace (the namespace created when
/// missing), each written only when missing or different, never over an unmarked object.
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
    let role_ref = RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "Role".into(),
        name: identity.cluster_role.clone(),
    };
    let subjects = account_subject(identity);
    for namespace in &identity.namespaces {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        if get(&namespaces, namespace).await?.is_none() {
            let created = Namespace {
                metadata: meta(namespace, None, identity, sink),
                ..Namespace::default()
            };
            apply(&namespaces, namespace, &created, sink).await?;
        }
        let roles: Api<Role> = Api::namespaced(client.clone(), namespace);
        let existing = get(&roles, &identity.cluster_role).await?;
        if let Some(role) = &existing
            && !identity.is_marked(role.metadata.labels.as_ref())
        {
            return Err(conflict(
                "Role",
                &format!("{namespace}/{}", identity.cluster_role),
                identity,
            ));
        }
        if !existing
            .as_ref()
            .is_some_and(|role| role.rules.as_deref().unwrap_or_default() == rules)
        {
            let role = Role {
                metadata: meta(&identity.cluster_role, Some(namespace), identity, sink),
                rules: Some(rules.clone()),
            };
            apply(&roles, &identity.cluster_role, &role, sink).await?;
        }
        let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), namespace);
        let existing = get(&bindings, &identity.cluster_role_binding).await?;
        if let Some(binding) = &existing
            && !identity.is_marked(binding.metadata.labels.as_ref())
        {
            return Err(conflict(
                "RoleBinding",
                &format!("{namespace}/{}", identity.cluster_role_binding),
                identity,
            ));
        }
        if !existing.as_ref().is_some_and(|binding| {
            binding.role_ref == role_ref && binding.subjects.as_deref() == Some(&subjects[..])
        }) {
            let binding = RoleBinding {
                metadata: meta(
                    &identity.cluster_role_binding,
                    Some(namespace),
                    identity,
                    sink,
                ),
                role_ref: role_ref.clone(),
                subjects: Some(subjects.clone()),
            };
            apply(&bindings, &identity.cluster_role_binding, &binding, sink).await?;
        }
    }
    Ok(())
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

/// Check with a `SelfSubjectReview` that `client` (built with the new token) is `username`.
/// Returns the uid the member gives that user (for a ServiceAccount token: the account's uid,
/// the identity the token is bound to); empty when the member does not say.
pub async fn verify(client: &Client, username: &str) -> Result<String, MemberError> {
    let reviews: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = reviews
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(|err| match &err {
            kube::Error::Api(status) if status.code == 401 => {
                MemberError::Verify("the token is no longer accepted (401)".into())
            }
            kube::Error::Api(_) => MemberError::Verify(format!("SelfSubjectReview: {err}")),
            _ => MemberError::Unreachable(format!("SelfSubjectReview: {err}")),
        })?;
    let user = review.status.and_then(|s| s.user_info).unwrap_or_default();
    let found = user.username.unwrap_or_default();
    if found != username {
        return Err(MemberError::Verify(format!(
            "the token authenticates as {found:?}, expected {username:?}"
        )));
    }
    Ok(user.uid.unwrap_or_default())
}

/// Revoke a recorded identity: delete its ServiceAccount first (that invalidates every token
/// minted for it), then its binding and role. Only objects carrying the instance's ownership mark
/// are deleted, the account only if it is still the one recorded (same uid); objects another
/// party provisioned for us ([`ANNOTATION_PROVISIONED_BY`]) keep their role and binding, which
/// their provisioner removes. Already gone is fine.
pub async fn remove_identity(client: &Client, minted: &MintedIdentity) -> Result<(), MemberError> {
    let marked = |labels: Option<&BTreeMap<String, String>>| {
        labels.is_some_and(|l| {
            l.get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY)
                && l.get(LABEL_INSTANCE) == Some(&minted.instance)
        })
    };
    async fn delete<K>(api: &Api<K>, name: &str, uid: Option<String>) -> Result<(), MemberError>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let params = DeleteParams {
            preconditions: uid.map(|uid| kube::api::Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => Ok(()),
            // Gone, or replaced since we read it (precondition failed): not ours to delete.
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => Ok(()),
            Err(err) => Err(MemberError::from_kube(&format!("deleting {name}"), err)),
        }
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &minted.namespace);
    if let Some(account) = get(&accounts, &minted.service_account).await?
        && marked(account.metadata.labels.as_ref())
        && account.metadata.uid.as_deref() == Some(minted.service_account_uid.as_str())
    {
        delete(&accounts, &minted.service_account, account.metadata.uid).await?;
    }
    for namespace in &minted.namespaces {
        let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), namespace);
        if let Some(binding) = get(&bindings, &minted.cluster_role_binding).await?
            && marked(binding.metadata.labels.as_ref())
            && !provisioned(&binding.metadata)
        {
            delete(
                &bindings,
                &minted.cluster_role_binding,
                binding.metadata.uid,
            )
            .await?;
        }
        let roles: Api<Role> = Api::namespaced(client.clone(), namespace);
        if let Some(role) = get(&roles, &minted.cluster_role).await?
            && marked(role.metadata.labels.as_ref())
            && !provisioned(&role.metadata)
        {
            delete(&roles, &minted.cluster_role, role.metadata.uid).await?;
        }
    }
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    if let Some(binding) = get(&bindings, &minted.cluster_role_binding).await?
        && marked(binding.metadata.labels.as_ref())
        && !provisioned(&binding.metadata)
    {
        delete(
            &bindings,
            &minted.cluster_role_binding,
            binding.metadata.uid,
        )
        .await?;
    }
    let roles: Api<ClusterRole> = Api::all(client.clone());
    if let Some(role) = get(&roles, &minted.cluster_role).await?
        && marked(role.metadata.labels.as_ref())
        && !provisioned(&role.metadata)
    {
        delete(&roles, &minted.cluster_role, role.metadata.uid).await?;
    }
    Ok(())
}

fn provisioned(metadata: &ObjectMeta) -> bool {
    metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANNOTATION_PROVISIONED_BY))
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
    fn identity_names_are_per_instance_and_account_and_avoid_consumer_tooling() {
        let identity = MemberIdentity::default_for("sveltos-sink", vec![]);
        assert_eq!(identity.namespace, "inventory-bridge");
        assert_eq!(identity.service_account, "inventory-bridge-sveltos-sink");
        assert_eq!(
            identity.cluster_role,
            "inventory-bridge:sveltos-sink:inventory-bridge:inventory-bridge-sveltos-sink"
        );
        assert_eq!(
            identity.username(),
            "system:serviceaccount:inventory-bridge:inventory-bridge-sveltos-sink"
        );
        for taken in ["projectsveltos", "argocd-manager", "argocd-manager-role"] {
            assert_ne!(identity.service_account, taken);
            assert_ne!(identity.cluster_role, taken);
        }
        let other = MemberIdentity::default_for("sveltos-sink-b", vec![]);
        assert_ne!(other.service_account, identity.service_account);
        assert_ne!(other.cluster_role, identity.cluster_role);
    }

    #[test]
    fn namespaced_roles_keep_only_resource_rules() {
        let identity = MemberIdentity::default_for("argocd-sink", full_access_rules())
            .with_namespaces(vec!["a".into(), "b".into()]);
        assert_eq!(identity.namespaced_rules().len(), 1);
        assert_eq!(identity.namespaces, vec!["a", "b"]);
        assert!(
            MemberIdentity::default_for("s", vec![])
                .namespaces
                .is_empty()
        );
    }

    #[test]
    fn the_mark_needs_both_labels_and_the_same_instance() {
        let identity = MemberIdentity::default_for("a", vec![]);
        assert!(identity.is_marked(Some(&identity.mark())));
        let mut helm = identity.mark();
        helm.insert(LABEL_MANAGED_BY.into(), "Helm".into());
        assert!(!identity.is_marked(Some(&helm)));
        let other = MemberIdentity::default_for("b", vec![]);
        assert!(!identity.is_marked(Some(&other.mark())));
        assert!(!identity.is_marked(None));
    }
}
