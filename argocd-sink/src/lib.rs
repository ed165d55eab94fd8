//! argocd-sink (library part): the Argo CD vocabulary the binary hands to the engine.
//!
//! For each registered profile: one Argo CD cluster Secret in `--argocd-namespace` (default
//! `argocd`), labelled `argocd.argoproj.io/secret-type: cluster`, named `cluster-<inventory>-<profile>`
//! (cut to a valid name with a stable hash), with the data keys Argo CD reads: `name`, `server`,
//! `config` (`bearerToken` of a ServiceAccount minted on the member, `tlsClientConfig`, `proxyUrl`)
//! and, from flags, `project`, `namespaces`, `clusterResources`, `shard`. The profile's labels are
//! copied onto it so the ApplicationSet cluster generator can select on them.
//!
//! The member identity defaults to what `argocd cluster add` grants (every verb on every resource
//! and non-resource URL) under our own names; `--namespaces a,b` narrows it to a Role and
//! RoleBinding per listed namespace, matching the Secret's `namespaces`.
//!
//! This crate is only the Argo CD vocabulary: one pure `render`, the flags. The engine in
//! `adapters::sink` does the watching, minting, rotation and cleanup.

use std::collections::BTreeMap;

use adapters::kubeconfig::KubeconfigNames;
use adapters::profile::ClusterProfile;
use adapters::runtime::RuntimeArgs;
use adapters::sink::render_helpers::{
    NameTemplate, PropertyMapping, add_profile_name_label, add_property_annotations,
    add_property_labels, copied_labels, object_name, parse_namespace, parse_property_mapping,
    profile_key,
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
use serde_json::{Value, json};

/// Adapter name.
pub const NAME: &str = "argocd-sink";
/// The label that makes a Secret an Argo CD cluster.
pub const LABEL_SECRET_TYPE: &str = "argocd.argoproj.io/secret-type";
/// Its value.
pub const SECRET_TYPE_CLUSTER: &str = "cluster";
/// Argo CD's own entry for the cluster it runs in: never written by us.
pub const IN_CLUSTER_SERVER: &str = "https://kubernetes.default.svc";

/// The Argo CD sink: its settings, checked when flags are parsed.
#[derive(Clone, Debug)]
pub struct ArgoCdSink {
    /// Argo CD's namespace (where cluster Secrets live).
    pub namespace: String,
    /// Template of the Argo CD cluster `name`.
    pub cluster_name: NameTemplate,
    /// Argo CD project the clusters belong to.
    pub project: Option<String>,
    /// Argo CD application-controller shard.
    pub shard: Option<u32>,
    /// Namespaced mode: the member namespaces Argo CD may manage (empty: the whole cluster).
    pub namespaces: Vec<String>,
    /// Properties copied as labels.
    pub property_labels: Vec<PropertyMapping>,
    /// Properties copied as annotations.
    pub property_annotations: Vec<PropertyMapping>,
}

impl Default for ArgoCdSink {
    fn default() -> Self {
        Self {
            namespace: "argocd".into(),
            cluster_name: NameTemplate::profile_name(),
            project: None,
            shard: None,
            namespaces: Vec::new(),
            property_labels: Vec::new(),
            property_annotations: Vec::new(),
        }
    }
}

impl Sink for ArgoCdSink {
    const NAME: &'static str = NAME;
    /// What `argocd cluster add` grants its `argocd-manager`: every verb on every resource and
    /// non-resource URL (in namespaced mode the engine keeps only the resource rule, per namespace).
    fn default_member_rules() -> Vec<PolicyRule> {
        adapters::member::defaults::argocd_rules()
    }

    fn kubeconfig_names() -> KubeconfigNames {
        KubeconfigNames {
            cluster: "member".into(),
            user: "inventory-bridge-argocd-sink".into(),
            context: "argocd-sink".into(),
        }
    }

    fn hub_kinds() -> Vec<ApiResource> {
        vec![ApiResource::erase::<Secret>(&())]
    }

    fn member_namespaces(&self) -> Vec<String> {
        self.namespaces.clone()
    }

    /// Argo CD cluster names must be unique in its namespace: two profiles rendering the same
    /// name are a conflict the engine reports instead of letting one shadow the other.
    fn claims(&self, profile: &ObjectMeta, config: &SinkConfig) -> Vec<String> {
        let (Some(name), Some(namespace)) = (&profile.name, &profile.namespace) else {
            return Vec::new();
        };
        vec![format!(
            "Argo CD cluster name {:?} in namespace {}",
            self.cluster_name.render(name, namespace),
            config.namespace
        )]
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

/// Whether `server` is Argo CD's in-cluster address (`kubernetes.default.svc` and its spellings).
pub fn is_in_cluster_server(server: &str) -> bool {
    let host = server
        .trim_start_matches("https://")
        .split(['/', ':'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    host == "kubernetes" || host.starts_with("kubernetes.default")
}

/// Argo CD's `config` JSON for a bearer token: field names and types exactly as Argo CD's
/// `ClusterConfig` reads them (`caData` is base64 of the PEM, `insecure` always present).
pub fn cluster_config(credential: &MintedCredential) -> Value {
    let mut tls = json!({ "insecure": credential.insecure_skip_tls_verify });
    if let Some(ca) = &credential.ca_pem {
        tls["caData"] = json!(BASE64.encode(ca));
    }
    if let Some(name) = &credential.tls_server_name {
        tls["serverName"] = json!(name);
    }
    let mut config = json!({
        "bearerToken": credential.token.expose(),
        "tlsClientConfig": tls,
    });
    if let Some(proxy) = &credential.proxy_url {
        config["proxyUrl"] = json!(proxy);
    }
    config
}

/// The cluster Secret for one profile. Pure.
pub fn render(
    sink: &ArgoCdSink,
    profile: &ClusterProfile,
    credential: &MintedCredential,
    config: &SinkConfig,
) -> Result<Rendered, Problem> {
    let (name, inventory) = profile_key(profile)?;
    let server = credential.server.trim_end_matches('/');
    if is_in_cluster_server(server) {
        return Err(Problem::new(
            "render",
            format!(
                "the member's server {server:?} is Argo CD's in-cluster address ({IN_CLUSTER_SERVER}); that entry is Argo CD's own and is never written"
            ),
        ));
    }
    let mut warnings = Vec::new();
    let mut labels = copied_labels(profile, &[LABEL_SECRET_TYPE]);
    add_profile_name_label(&mut labels, name);
    add_property_labels(&mut labels, profile, &sink.property_labels, &mut warnings);
    labels.insert(LABEL_SECRET_TYPE.into(), SECRET_TYPE_CLUSTER.into());
    let mut annotations = BTreeMap::new();
    add_property_annotations(&mut annotations, profile, &sink.property_annotations);

    let config_json = serde_json::to_string(&cluster_config(credential))
        .map_err(|err| Problem::new("render", format!("cannot encode config: {err}")))?;
    let mut data: BTreeMap<&str, String> = BTreeMap::from([
        ("name", sink.cluster_name.render(name, inventory)),
        ("server", server.to_string()),
        ("config", config_json),
    ]);
    if let Some(project) = &sink.project {
        data.insert("project", project.clone());
    }
    if !sink.namespaces.is_empty() {
        data.insert("namespaces", sink.namespaces.join(","));
        // The identity holds Roles only: Argo CD must not try cluster-scoped resources.
        data.insert("clusterResources", "false".into());
    }
    if let Some(shard) = sink.shard {
        data.insert("shard", shard.to_string());
    }
    let data: BTreeMap<&str, String> = data
        .into_iter()
        .map(|(k, v)| (k, BASE64.encode(v)))
        .collect();
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": object_name(&format!("cluster-{inventory}-{name}")),
            "namespace": config.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "type": "Opaque",
        "data": data,
    });
    Ok(Rendered {
        objects: vec![DesiredObject {
            resource: ApiResource::erase::<Secret>(&()),
            object: secret,
        }],
        warnings,
    })
}

fn parse_cluster_name_template(text: &str) -> Result<NameTemplate, String> {
    NameTemplate::parse(text)
}

/// argocd-sink's own flags. Bad values are refused when parsing, before anything starts.
#[derive(Clone, Debug, clap::Args)]
pub struct ArgoCdArgs {
    /// Argo CD's namespace: where the cluster Secrets are written.
    #[arg(long, env = "IB_ARGOCD_NAMESPACE", default_value = "argocd", value_parser = parse_namespace)]
    pub argocd_namespace: String,

    /// Argo CD cluster `name`: `{name}` (the profile's name) and `{namespace}` (its inventory).
    /// Two profiles rendering the same name are reported (NameConflict); the older one keeps it.
    #[arg(long, env = "IB_CLUSTER_NAME_TEMPLATE", default_value = "{name}", value_parser = parse_cluster_name_template)]
    pub cluster_name_template: NameTemplate,

    /// Argo CD project of the clusters (data key `project`).
    #[arg(long, env = "IB_ARGOCD_PROJECT")]
    pub project: Option<String>,

    /// Application-controller shard of the clusters (data key `shard`).
    #[arg(long, env = "IB_ARGOCD_SHARD")]
    pub shard: Option<u32>,

    /// Namespaced mode: member namespaces Argo CD may manage (comma-separated). The member
    /// identity then gets a Role and RoleBinding in each instead of a ClusterRole, and the Secret
    /// says `namespaces` and `clusterResources: "false"`.
    #[arg(long, env = "IB_ARGOCD_NAMESPACES", value_delimiter = ',', value_parser = parse_namespace)]
    pub namespaces: Vec<String>,

    /// Profile property copied as a label onto the Secret: `name` or `name=label-key`
    /// (repeatable or comma-separated). Values that are not valid label values are skipped and
    /// reported.
    #[arg(long = "property-labels", env = "IB_PROPERTY_LABELS", value_delimiter = ',', value_parser = parse_property_mapping)]
    pub property_labels: Vec<PropertyMapping>,

    /// Profile property copied as an annotation onto the Secret: `name` or `name=annotation-key`
    /// (repeatable or comma-separated).
    #[arg(long = "property-annotations", env = "IB_PROPERTY_ANNOTATIONS", value_delimiter = ',', value_parser = parse_property_mapping)]
    pub property_annotations: Vec<PropertyMapping>,
}

impl ArgoCdArgs {
    /// The sink these flags describe.
    pub fn sink(&self) -> ArgoCdSink {
        let mut namespaces = self.namespaces.clone();
        namespaces.sort();
        namespaces.dedup();
        ArgoCdSink {
            namespace: self.argocd_namespace.clone(),
            cluster_name: self.cluster_name_template.clone(),
            project: self.project.clone().filter(|p| !p.is_empty()),
            shard: self.shard,
            namespaces,
            property_labels: self.property_labels.clone(),
            property_annotations: self.property_annotations.clone(),
        }
    }
}

/// The whole command line of the binary.
#[derive(Debug, clap::Parser)]
#[command(name = NAME, version, about = "ClusterProfiles become Argo CD cluster Secrets with minted credentials")]
pub struct Cli {
    /// Shared runtime flags.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Flags every sink shares.
    #[command(flatten)]
    pub sink: SinkArgs,
    /// Argo CD's flags.
    #[command(flatten)]
    pub argocd: ArgoCdArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use adapters::profile::{ClusterProfileStatus, Property};
    use adapters::sensitive::Sensitive;
    use clap::Parser;
    use k8s_openapi::jiff::Timestamp;

    fn profile() -> ClusterProfile {
        ClusterProfile {
            metadata: ObjectMeta {
                name: Some("edge-1".into()),
                namespace: Some("inventory".into()),
                labels: Some(BTreeMap::from([
                    ("env".to_string(), "prod".to_string()),
                    (LABEL_SECRET_TYPE.to_string(), "repository".to_string()),
                ])),
                ..ObjectMeta::default()
            },
            spec: Default::default(),
            status: Some(ClusterProfileStatus {
                properties: vec![Property {
                    name: "region".into(),
                    value: "eu west".into(),
                    last_observed_time: None,
                }],
                ..ClusterProfileStatus::default()
            }),
        }
    }

    fn credential(server: &str) -> MintedCredential {
        MintedCredential {
            kubeconfig: Sensitive::new("apiVersion: v1\nkind: Config\n"),
            token: Sensitive::new("the-token"),
            server: server.into(),
            ca_pem: Some("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n".into()),
            tls_server_name: Some("member.example".into()),
            insecure_skip_tls_verify: false,
            proxy_url: Some("http://proxy:3128".into()),
            expires_at: Timestamp::UNIX_EPOCH,
            namespace: "inventory-bridge".into(),
            service_account: "inventory-bridge-argocd-sink".into(),
        }
    }

    fn decoded(secret: &Value, key: &str) -> String {
        String::from_utf8(
            BASE64
                .decode(secret["data"][key].as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn renders_a_cluster_secret_in_argocd_format() {
        let sink = ArgoCdSink {
            project: Some("fleet".into()),
            shard: Some(2),
            namespaces: vec!["a".into(), "b".into()],
            property_annotations: vec![("region".into(), "example.com/region".into())],
            property_labels: vec![("region".into(), "example.com/region".into())],
            ..ArgoCdSink::default()
        };
        let config = SinkConfig {
            namespace: "argocd".into(),
        };
        let rendered = render(&sink, &profile(), &credential("https://m:6443/"), &config).unwrap();
        let secret = &rendered.objects[0].object;
        assert_eq!(secret["metadata"]["name"], "cluster-inventory-edge-1");
        assert_eq!(secret["metadata"]["namespace"], "argocd");
        let labels = &secret["metadata"]["labels"];
        assert_eq!(labels[LABEL_SECRET_TYPE], "cluster");
        assert_eq!(labels["env"], "prod");
        assert_eq!(labels["inventory-bridge.io/profile-name"], "edge-1");
        assert!(labels.get("example.com/region").is_none());
        assert_eq!(rendered.warnings.len(), 1);
        assert_eq!(
            secret["metadata"]["annotations"]["example.com/region"],
            "eu west"
        );
        assert_eq!(decoded(secret, "name"), "edge-1");
        assert_eq!(decoded(secret, "server"), "https://m:6443");
        assert_eq!(decoded(secret, "project"), "fleet");
        assert_eq!(decoded(secret, "namespaces"), "a,b");
        assert_eq!(decoded(secret, "clusterResources"), "false");
        assert_eq!(decoded(secret, "shard"), "2");
        let config: Value = serde_json::from_str(&decoded(secret, "config")).unwrap();
        assert_eq!(
            config,
            json!({
                "bearerToken": "the-token",
                "tlsClientConfig": {
                    "insecure": false,
                    "caData": BASE64.encode("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"),
                    "serverName": "member.example",
                },
                "proxyUrl": "http://proxy:3128",
            })
        );
    }

    #[test]
    fn cluster_wide_mode_omits_namespaces_and_the_in_cluster_entry_is_refused() {
        let sink = ArgoCdSink::default();
        let config = SinkConfig {
            namespace: "argocd".into(),
        };
        let rendered = render(&sink, &profile(), &credential("https://m"), &config).unwrap();
        let data = &rendered.objects[0].object["data"];
        assert!(data.get("namespaces").is_none());
        assert!(data.get("clusterResources").is_none());
        assert!(data.get("project").is_none());
        for server in [
            "https://kubernetes.default.svc",
            "https://kubernetes.default.svc/",
            "https://kubernetes.default.svc.cluster.local:443",
        ] {
            let err = render(&sink, &profile(), &credential(server), &config).unwrap_err();
            assert!(err.message.contains("in-cluster"), "{server}");
        }
    }

    #[test]
    fn names_stay_valid_and_distinct_and_claims_follow_the_template() {
        let sink = ArgoCdSink {
            cluster_name: NameTemplate::parse("{namespace}-{name}").unwrap(),
            ..ArgoCdSink::default()
        };
        let mut long = profile();
        long.metadata.name = Some(format!("{}.x", "e".repeat(250)));
        let config = SinkConfig {
            namespace: "argocd".into(),
        };
        let rendered = render(&sink, &long, &credential("https://m"), &config).unwrap();
        let name = rendered.objects[0].object["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(name.len() <= 253, "{name}");
        assert!(name.starts_with("cluster-inventory-eee"), "{name}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'),
            "{name}"
        );
        let claims = sink.claims(&profile().metadata, &config);
        assert_eq!(
            claims,
            vec!["Argo CD cluster name \"inventory-edge-1\" in namespace argocd".to_string()]
        );
    }

    #[test]
    fn flags_are_checked_at_parse_time() {
        let cli = Cli::try_parse_from(["argocd-sink"]).unwrap();
        let sink = cli.argocd.sink();
        assert_eq!(sink.namespace, "argocd");
        assert!(sink.namespaces.is_empty());
        let cli = Cli::try_parse_from(["argocd-sink", "--namespaces", "b,a,b"]).unwrap();
        assert_eq!(cli.argocd.sink().namespaces, vec!["a", "b"]);
        let err = Cli::try_parse_from(["argocd-sink", "--argocd-namespace", "Argo_CD"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a valid namespace name"), "{err}");
        let err = Cli::try_parse_from(["argocd-sink", "--cluster-name-template", "{cluster}"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown placeholder"), "{err}");
        let identity =
            adapters::member::MemberIdentity::default_for(NAME, ArgoCdSink::default_member_rules());
        assert_eq!(identity.namespace, "inventory-bridge");
        assert_ne!(identity.service_account, "argocd-manager");
    }
}
