//! flux-sink (library part): the Flux vocabulary the binary hands to the engine.
//!
//! For each registered profile: a Secret (`--secret-name-template`, default `{name}-kubeconfig`)
//! holding, under key `value`, a kubeconfig with a static token of a ServiceAccount minted on the
//! member and the member's CA inline (Flux refuses exec plugins by default), in every namespace of
//! `--flux-namespace` (default `flux-system`). It is labelled `reconcile.fluxcd.io/watch: Enabled`
//! (Flux reacts at once when it changes) and carries the profile's labels. A Kustomization or
//! HelmRelease targets the cluster with `spec.kubeConfig.secretRef.name`; the Flux objects stay the
//! user's.
//!
//! The member identity defaults to every verb everywhere plus `impersonate` on serviceaccounts,
//! users and groups (Flux impersonates when a Kustomization sets `spec.serviceAccountName`).

use adapters::kubeconfig::KubeconfigNames;
use adapters::profile::ClusterProfile;
use adapters::runtime::RuntimeArgs;
use adapters::sink::render_helpers::{
    NameTemplate, add_profile_name_label, copied_labels, object_name, parse_namespace, profile_key,
};
use adapters::sink::{
    DesiredObject, MintedCredential, Problem, Rendered, Sink, SinkArgs, SinkConfig,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::api::ObjectMeta;
use kube::core::ApiResource;
use serde_json::json;

/// Adapter name.
pub const NAME: &str = "flux-sink";
/// The key Flux reads the kubeconfig from when `secretRef.key` is not set.
pub const KUBECONFIG_KEY: &str = "value";
/// The label that makes Flux react at once to changes of the Secret.
pub const LABEL_WATCH: &str = "reconcile.fluxcd.io/watch";
/// Its value.
pub const WATCH_ENABLED: &str = "Enabled";

/// The Flux sink: its settings, checked when flags are parsed.
#[derive(Clone, Debug)]
pub struct FluxSink {
    /// Namespaces of the Secrets (the namespaces of the Kustomizations that use them).
    pub namespaces: Vec<String>,
    /// Template of the Secret name.
    pub secret_name: NameTemplate,
}

impl Default for FluxSink {
    fn default() -> Self {
        Self {
            namespaces: vec!["flux-system".into()],
            secret_name: NameTemplate::profile_name_with_suffix("-kubeconfig"),
        }
    }
}

impl Sink for FluxSink {
    const NAME: &'static str = NAME;
    /// Every verb everywhere, and `impersonate` on the subjects a Kustomization's
    /// `spec.serviceAccountName` makes Flux impersonate (named, so the intent survives review).
    fn default_member_rules() -> Vec<PolicyRule> {
        // One definition, shared with ocm-source's bootstrap provisioning.
        adapters::member::defaults::flux_rules()
    }

    fn kubeconfig_names() -> KubeconfigNames {
        KubeconfigNames {
            cluster: "member".into(),
            user: "inventory-bridge-flux-sink".into(),
            context: "flux-sink".into(),
        }
    }

    fn hub_kinds() -> Vec<ApiResource> {
        vec![ApiResource::erase::<Secret>(&())]
    }

    fn hub_namespaces(&self) -> Option<Vec<String>> {
        Some(self.namespaces.clone())
    }

    /// A Secret name per Flux namespace: two profiles rendering the same one (e.g. same-named
    /// profiles of two inventories under the default template) are a reported conflict.
    fn claims(&self, profile: &ObjectMeta, _config: &SinkConfig) -> Vec<String> {
        let (Some(name), Some(namespace)) = (&profile.name, &profile.namespace) else {
            return Vec::new();
        };
        let secret = object_name(&self.secret_name.render(name, namespace));
        self.namespaces
            .iter()
            .map(|ns| format!("Secret {ns}/{secret}"))
            .collect()
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

/// One Secret per Flux namespace for one profile. Pure.
pub fn render(
    sink: &FluxSink,
    profile: &ClusterProfile,
    credential: &MintedCredential,
    _config: &SinkConfig,
) -> Result<Rendered, Problem> {
    let (name, inventory) = profile_key(profile)?;
    let secret_name = object_name(&sink.secret_name.render(name, inventory));
    let mut labels = copied_labels(profile, &[LABEL_WATCH]);
    add_profile_name_label(&mut labels, name);
    labels.insert(LABEL_WATCH.into(), WATCH_ENABLED.into());
    let value = BASE64.encode(credential.kubeconfig.expose());
    let objects = sink
        .namespaces
        .iter()
        .map(|namespace| DesiredObject {
            resource: ApiResource::erase::<Secret>(&()),
            object: json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": { "name": secret_name, "namespace": namespace, "labels": labels },
                "type": "Opaque",
                "data": { KUBECONFIG_KEY: value },
            }),
        })
        .collect();
    Ok(Rendered {
        objects,
        warnings: Vec::new(),
    })
}

fn parse_secret_name_template(text: &str) -> Result<NameTemplate, String> {
    NameTemplate::parse_object_name(text)
}

/// flux-sink's own flags. Bad values are refused when parsing, before anything starts.
#[derive(Clone, Debug, clap::Args)]
pub struct FluxArgs {
    /// Namespace of the kubeconfig Secrets: that of the Kustomizations/HelmReleases using them
    /// (repeatable or comma-separated; one Secret per namespace).
    #[arg(long = "flux-namespace", env = "IB_FLUX_NAMESPACES", value_delimiter = ',', default_value = "flux-system", value_parser = parse_namespace)]
    pub flux_namespaces: Vec<String>,

    /// Secret name: `{name}` (the profile's name) and `{namespace}` (its inventory). Names over
    /// 253 characters are cut with a stable hash. Two profiles rendering the same name are
    /// reported (NameConflict); the older one keeps it.
    #[arg(long, env = "IB_SECRET_NAME_TEMPLATE", default_value = "{name}-kubeconfig", value_parser = parse_secret_name_template)]
    pub secret_name_template: NameTemplate,
}

impl FluxArgs {
    /// The sink these flags describe.
    pub fn sink(&self) -> FluxSink {
        let mut namespaces = self.flux_namespaces.clone();
        namespaces.sort();
        namespaces.dedup();
        FluxSink {
            namespaces,
            secret_name: self.secret_name_template.clone(),
        }
    }
}

/// The whole command line of the binary.
#[derive(Debug, clap::Parser)]
#[command(name = NAME, version, about = "ClusterProfiles become Flux kubeconfig Secrets with minted credentials")]
pub struct Cli {
    /// Shared runtime flags.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Flags every sink shares.
    #[command(flatten)]
    pub sink: SinkArgs,
    /// Flux's flags.
    #[command(flatten)]
    pub flux: FluxArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use adapters::sensitive::Sensitive;
    use clap::Parser;
    use k8s_openapi::jiff::Timestamp;
    use std::collections::BTreeMap;

    fn profile() -> ClusterProfile {
        ClusterProfile {
            metadata: ObjectMeta {
                name: Some("edge-1".into()),
                namespace: Some("inventory".into()),
                labels: Some(BTreeMap::from([
                    ("env".to_string(), "prod".to_string()),
                    (LABEL_WATCH.to_string(), "Disabled".to_string()),
                ])),
                ..ObjectMeta::default()
            },
            spec: Default::default(),
            status: None,
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
            namespace: "inventory-bridge".into(),
            service_account: "inventory-bridge-flux-sink".into(),
        }
    }

    #[test]
    fn one_secret_per_flux_namespace_with_the_kubeconfig_under_value() {
        let sink = FluxSink {
            namespaces: vec!["flux-system".into(), "team-a".into()],
            ..FluxSink::default()
        };
        let config = SinkConfig {
            namespace: "flux-system".into(),
        };
        let rendered = render(&sink, &profile(), &credential(), &config).unwrap();
        assert_eq!(rendered.objects.len(), 2);
        for (object, namespace) in rendered.objects.iter().zip(["flux-system", "team-a"]) {
            let secret = &object.object;
            assert_eq!(secret["metadata"]["name"], "edge-1-kubeconfig");
            assert_eq!(secret["metadata"]["namespace"], namespace);
            assert_eq!(secret["metadata"]["labels"][LABEL_WATCH], "Enabled");
            assert_eq!(secret["metadata"]["labels"]["env"], "prod");
            assert_eq!(
                BASE64
                    .decode(secret["data"]["value"].as_str().unwrap())
                    .unwrap(),
                b"apiVersion: v1\nkind: Config\n"
            );
        }
        assert_eq!(
            sink.claims(&profile().metadata, &config),
            vec![
                "Secret flux-system/edge-1-kubeconfig",
                "Secret team-a/edge-1-kubeconfig"
            ]
        );
    }

    #[test]
    fn default_identity_can_impersonate() {
        let rules = FluxSink::default_member_rules();
        assert!(rules.iter().any(|r| r.verbs == vec!["impersonate"]
            && r.resources.as_ref().is_some_and(|r| r.len() == 3)));
        let identity = adapters::member::MemberIdentity::default_for(NAME, rules);
        assert_eq!(identity.namespace, "inventory-bridge");
        assert_eq!(identity.service_account, "inventory-bridge-flux-sink");
    }

    #[test]
    fn flags_are_checked_at_parse_time() {
        let cli = Cli::try_parse_from(["flux-sink"]).unwrap();
        assert_eq!(cli.flux.sink().namespaces, vec!["flux-system"]);
        let cli = Cli::try_parse_from([
            "flux-sink",
            "--flux-namespace",
            "b",
            "--flux-namespace",
            "a,b",
            "--secret-name-template",
            "{namespace}-{name}",
        ])
        .unwrap();
        let sink = cli.flux.sink();
        assert_eq!(sink.namespaces, vec!["a", "b"]);
        assert_eq!(sink.secret_name.render("p", "inv"), "inv-p");
        let err = Cli::try_parse_from(["flux-sink", "--secret-name-template", "{name}_KUBE"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a valid object name"), "{err}");
        let err = Cli::try_parse_from(["flux-sink", "--flux-namespace", "Flux"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a valid namespace name"), "{err}");
    }
}
