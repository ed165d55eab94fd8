//! The default member identities of the three sinks, in one place: the sinks mint them, and
//! ocm-source's bootstrap ManifestWork provisions exactly them on OCM members, so the two can
//! never drift apart.

use k8s_openapi::api::rbac::v1::PolicyRule;

use super::MemberIdentity;

/// Sink names (also their default instance names).
pub const SVELTOS_SINK: &str = "sveltos-sink";
/// argocd-sink.
pub const ARGOCD_SINK: &str = "argocd-sink";
/// flux-sink.
pub const FLUX_SINK: &str = "flux-sink";
/// Every sink, in a stable order.
pub const SINKS: [&str; 3] = [SVELTOS_SINK, ARGOCD_SINK, FLUX_SINK];

fn all_verbs_everywhere() -> Vec<PolicyRule> {
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

/// What `sveltosctl register cluster` grants: every verb on every resource and non-resource URL.
pub fn sveltos_rules() -> Vec<PolicyRule> {
    all_verbs_everywhere()
}

/// What `argocd cluster add` grants (`argocd-manager-role`): the same.
pub fn argocd_rules() -> Vec<PolicyRule> {
    all_verbs_everywhere()
}

/// Flux: every verb everywhere, plus `impersonate` (spelled out, so a reader sees why) on the
/// subjects a Kustomization's `spec.serviceAccountName` makes Flux impersonate.
pub fn flux_rules() -> Vec<PolicyRule> {
    let mut rules = all_verbs_everywhere();
    rules.push(PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec![
            "serviceaccounts".into(),
            "users".into(),
            "groups".into(),
        ]),
        verbs: vec!["impersonate".into()],
        ..PolicyRule::default()
    });
    rules
}

/// The default rules of `sink` (None for an unknown name).
pub fn rules_of(sink: &str) -> Option<Vec<PolicyRule>> {
    match sink {
        SVELTOS_SINK => Some(sveltos_rules()),
        ARGOCD_SINK => Some(argocd_rules()),
        FLUX_SINK => Some(flux_rules()),
        _ => None,
    }
}

/// The default identity of sink `sink` running as instance `sink`.
pub fn identity_of(sink: &str) -> Option<MemberIdentity> {
    rules_of(sink).map(|rules| MemberIdentity::default_for(sink, rules))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_distinct_default_identities() {
        let identities: Vec<MemberIdentity> = SINKS.iter().filter_map(|s| identity_of(s)).collect();
        assert_eq!(identities.len(), 3);
        for (i, a) in identities.iter().enumerate() {
            for b in &identities[i + 1..] {
                assert_ne!(a.service_account, b.service_account);
                assert_ne!(a.cluster_role, b.cluster_role);
            }
        }
        assert!(flux_rules().iter().any(|r| r.verbs == ["impersonate"]));
        assert!(rules_of("other").is_none());
    }
}
