//! sveltos-sink (library part): the Sveltos vocabulary the binary hands to the engine.
//!
//! For each registered profile: a Secret `<profile>-sveltos-kubeconfig` (key `kubeconfig`) and a
//! `SveltosCluster <profile>` pointing at it, both in `--sveltos-namespace` (default: the profile's
//! namespace). The kubeconfig holds a token of a ServiceAccount the engine mints on the member
//! (default: `inventory-bridge/inventory-bridge-sveltos-sink`, all verbs on everything, like `sveltosctl register
//! cluster`), rotated by the engine; `tokenRequestRenewalOption` stays unset.
//!
//! This crate is only the Sveltos vocabulary: the type, one pure `render`, the flags. The engine
//! in `adapters::sink` does the watching, minting, rotation and cleanup.

use adapters::kubeconfig::KubeconfigNames;
use adapters::profile::ClusterProfile;
use adapters::sink::render_helpers::{add_property_labels, copied_labels};
use adapters::sink::{
    DesiredObject, MintedCredential, Problem, Rendered, Sink, SinkConfig, bounded_name,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::CustomResource;
use kube::core::ApiResource;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Adapter name.
pub const NAME: &str = "sveltos-sink";
/// The Secret key holding the kubeconfig (Sveltos takes an arbitrary key when it is unset).
const KUBECONFIG_KEY: &str = "kubeconfig";
/// Labels sveltoscluster-manager writes: never copied, never fought over.
const MANAGER_LABELS: [&str; 1] = ["projectsveltos.io/k8s-version"];

/// Sveltos' `SveltosCluster` (`lib.projectsveltos.io/v1beta1`): only what we write, all optional
/// and without a schema, so fields Sveltos adds never break us. Sveltos also has an unrelated kind
/// named `ClusterProfile` (`config.projectsveltos.io`): not modelled here.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "lib.projectsveltos.io",
    version = "v1beta1",
    kind = "SveltosCluster",
    plural = "sveltosclusters",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct SveltosClusterSpec {
    /// Secret holding the kubeconfig (same namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_name: Option<String>,
    /// Key of the kubeconfig in that Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_key_name: Option<String>,
}

/// The Sveltos sink: its own settings.
#[derive(Clone, Debug, Default)]
pub struct SveltosSink {
    /// Properties copied as labels: (property name, label key).
    pub property_labels: Vec<(String, String)>,
}

impl Sink for SveltosSink {
    const NAME: &'static str = NAME;
    /// What `sveltosctl register cluster` grants: every verb on every resource and non-resource URL.
    fn default_member_rules() -> Vec<PolicyRule> {
        adapters::member::defaults::sveltos_rules()
    }

    fn kubeconfig_names() -> KubeconfigNames {
        KubeconfigNames {
            cluster: "member".into(),
            user: "inventory-bridge".into(),
            context: "sveltos-context".into(),
        }
    }

    fn hub_kinds() -> Vec<ApiResource> {
        vec![
            ApiResource::erase::<Secret>(&()),
            ApiResource::erase::<SveltosCluster>(&()),
        ]
    }

    fn render(
        &self,
        profile: &ClusterProfile,
        credential: &MintedCredential,
        config: &SinkConfig,
    ) -> Result<Rendered, Problem> {
        render(self, profile, credential, config)
    }
}

/// The Secret and the SveltosCluster for one profile. Pure.
pub fn render(
    sink: &SveltosSink,
    profile: &ClusterProfile,
    credential: &MintedCredential,
    config: &SinkConfig,
) -> Result<Rendered, Problem> {
    let name = profile
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Problem::new("render", "the profile has no name"))?;
    let secret_name = bounded_name(&name, "-sveltos-kubeconfig", 253);
    let mut warnings = Vec::new();
    let mut labels = copied_labels(profile, &MANAGER_LABELS);
    add_property_labels(&mut labels, profile, &sink.property_labels, &mut warnings);
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": secret_name, "namespace": config.namespace, "labels": labels },
        "type": "Opaque",
        "data": { KUBECONFIG_KEY: BASE64.encode(credential.kubeconfig.expose()) },
    });
    // Only our fields: no status, no paused, no tokenRequestRenewalOption (we rotate ourselves).
    let cluster = json!({
        "apiVersion": "lib.projectsveltos.io/v1beta1",
        "kind": "SveltosCluster",
        "metadata": { "name": name, "namespace": config.namespace, "labels": labels },
        "spec": { "kubeconfigName": secret_name, "kubeconfigKeyName": KUBECONFIG_KEY },
    });
    Ok(Rendered {
        objects: vec![
            DesiredObject {
                resource: ApiResource::erase::<Secret>(&()),
                object: secret,
            },
            DesiredObject {
                resource: ApiResource::erase::<SveltosCluster>(&()),
                object: cluster,
            },
        ],
        warnings,
    })
}

/// `name` or `name=label-key`; the label key defaults to the property name.
pub use adapters::sink::render_helpers::parse_property_mapping as parse_property_label;

#[cfg(test)]
mod tests {
    use super::*;
    use adapters::profile::{ClusterProfileStatus, Property};
    use adapters::sensitive::Sensitive;
    use k8s_openapi::jiff::Timestamp;
    use kube::api::ObjectMeta;
    use std::collections::BTreeMap;

    fn profile() -> ClusterProfile {
        ClusterProfile {
            metadata: ObjectMeta {
                name: Some("edge-1".into()),
                namespace: Some("inventory".into()),
                labels: Some(BTreeMap::from([
                    ("env".to_string(), "prod".to_string()),
                    (
                        "projectsveltos.io/k8s-version".to_string(),
                        "v1.30.0".to_string(),
                    ),
                ])),
                ..ObjectMeta::default()
            },
            spec: Default::default(),
            status: Some(ClusterProfileStatus {
                properties: vec![
                    Property {
                        name: "region".into(),
                        value: "eu-west-1".into(),
                        last_observed_time: None,
                    },
                    Property {
                        name: "description".into(),
                        value: "not a label value!".into(),
                        last_observed_time: None,
                    },
                ],
                ..ClusterProfileStatus::default()
            }),
        }
    }

    fn credential() -> MintedCredential {
        MintedCredential {
            kubeconfig: Sensitive::new("apiVersion: v1\nkind: Config\n"),
            token: Sensitive::new("t"),
            server: "https://m".into(),
            ca_pem: None,
            tls_server_name: None,
            insecure_skip_tls_verify: false,
            proxy_url: None,
            expires_at: Timestamp::UNIX_EPOCH,
            namespace: "projectsveltos".into(),
            service_account: "projectsveltos".into(),
        }
    }

    #[test]
    fn renders_secret_and_sveltoscluster_with_only_our_fields() {
        let sink = SveltosSink {
            property_labels: vec![
                ("region".into(), "topology.example.com/region".into()),
                ("description".into(), "description".into()),
                ("absent".into(), "absent".into()),
            ],
        };
        let config = SinkConfig {
            namespace: "sveltos".into(),
        };
        let rendered = render(&sink, &profile(), &credential(), &config).unwrap();
        let [secret, cluster] = &rendered.objects[..] else {
            panic!("two objects expected");
        };
        assert_eq!(
            secret.object["metadata"]["name"],
            "edge-1-sveltos-kubeconfig"
        );
        assert_eq!(secret.object["metadata"]["namespace"], "sveltos");
        assert_eq!(
            BASE64
                .decode(secret.object["data"]["kubeconfig"].as_str().unwrap())
                .unwrap(),
            b"apiVersion: v1\nkind: Config\n"
        );
        assert_eq!(cluster.resource.kind, "SveltosCluster");
        assert_eq!(cluster.object["metadata"]["name"], "edge-1");
        assert_eq!(
            cluster.object["spec"],
            json!({"kubeconfigName": "edge-1-sveltos-kubeconfig", "kubeconfigKeyName": "kubeconfig"})
        );
        assert!(cluster.object.get("status").is_none());
        let labels = &cluster.object["metadata"]["labels"];
        assert_eq!(labels["env"], "prod");
        assert_eq!(labels["topology.example.com/region"], "eu-west-1");
        assert!(labels.get("projectsveltos.io/k8s-version").is_none());
        assert!(labels.get("description").is_none());
        assert_eq!(rendered.warnings.len(), 1);
        assert_eq!(rendered.warnings[0].category, "invalid-label");
        assert!(!rendered.warnings[0].message.contains("not a label value!"));
    }

    #[test]
    fn property_label_flags_parse() {
        assert_eq!(
            parse_property_label("id.k8s.io").unwrap(),
            ("id.k8s.io".into(), "id.k8s.io".into())
        );
        assert_eq!(
            parse_property_label("region=example.com/region").unwrap(),
            ("region".into(), "example.com/region".into())
        );
        assert!(parse_property_label("x=Bad Key").is_err());
        assert!(parse_property_label("=x").is_err());
    }

    #[test]
    fn default_rules_mirror_sveltosctl_under_our_own_names() {
        let rules = SveltosSink::default_member_rules();
        assert_eq!(rules[0].verbs, vec!["*"]);
        assert_eq!(rules[0].resources.as_deref(), Some(&["*".to_string()][..]));
        assert_eq!(
            rules[1].non_resource_urls.as_deref(),
            Some(&["*".to_string()][..])
        );
        // sveltosctl's rules, not its names: `projectsveltos/projectsveltos` is what
        // `sveltosctl register cluster` creates and owns.
        let identity = adapters::member::MemberIdentity::default_for(NAME, rules);
        assert_eq!(identity.namespace, "inventory-bridge");
        assert_eq!(identity.service_account, "inventory-bridge-sveltos-sink");
        assert_eq!(SveltosSink::kubeconfig_names().context, "sveltos-context");
    }
}
