//! The mapping ManagedCluster → ClusterProfile(s): a pure function of the cluster, the adapter's
//! configuration and what was observed on the hub (sets, bindings, the cluster-proxy CA).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use adapters::Category;
use adapters::names::is_valid_label_value;
use adapters::profile::{
    AccessProvider, CONDITION_CONTROL_PLANE_HEALTHY, CONDITION_JOINED, Cluster,
    ClusterProfileStatus, ClusterVersion, EXTENSION_EXEC, LABEL_CLUSTER_MANAGER, LABEL_CLUSTER_SET,
    LABEL_INVENTORY_MEMBER_ID, NamedExtension, PROPERTY_CLUSTER_ID,
};
use adapters::source::{DesiredProfile, LABEL_SOURCE, Problem, Projection};
use adapters::status::{ConditionFacts, condition, properties};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use crate::bootstrap::{Bootstrap, companions};
use crate::types::{
    CONDITION_AVAILABLE, CONDITION_BOUND, LABEL_OCM_CLUSTERSET, ManagedCluster, ManagedClusterSet,
    ManagedClusterSetBinding, OcmCondition, SELECTOR_EXCLUSIVE, SELECTOR_LABEL,
};

/// Label on each profile: the ManagedCluster it represents.
pub const LABEL_CLUSTER_NAME: &str = "open-cluster-management.io/cluster-name";
/// Default `--cluster-manager` and `--access-provider-name`.
pub const OPEN_CLUSTER_MANAGEMENT: &str = "open-cluster-management";
/// Default `--exclude-label-prefix`: OCM's per-addon feature labels are noise to consumers.
pub const DEFAULT_EXCLUDED_PREFIX: &str = "feature.open-cluster-management.io/";
/// Our own label domain: never copied from a ManagedCluster (nobody may pose as our marker).
const OWN_PREFIX: &str = "inventory-bridge.io/";

/// Where profiles go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// One inventory namespace for every selected cluster.
    Inventory(String),
    /// Every namespace holding a Bound ManagedClusterSetBinding whose set selects the cluster.
    ClusterSetBindings,
}

/// cluster-proxy settings: profiles point at its user server instead of the cluster directly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterProxy {
    /// Namespace of the cluster-proxy addon on the hub (its user Service and serving cert).
    pub namespace: String,
    /// Secret holding the user server's serving certificate (key `tls.crt`).
    pub ca_secret: String,
}

impl ClusterProxy {
    /// Key of the CA in [`ClusterProxy::ca_secret`].
    pub const CA_KEY: &'static str = "tls.crt";

    /// The cluster-proxy user server URL for `cluster`.
    pub fn server(&self, cluster: &str) -> String {
        format!(
            "https://cluster-proxy-addon-user.{}:9092/{cluster}",
            self.namespace
        )
    }
}

/// The adapter's configuration, from its flags.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Where profiles go.
    pub placement: Placement,
    /// `spec.clusterManager.name` and the `x-k8s.io/cluster-manager` label.
    pub cluster_manager: String,
    /// Name of the access provider we publish.
    pub access_provider_name: String,
    /// ManagedCluster label key prefixes not copied onto profiles.
    pub exclude_label_prefixes: Vec<String>,
    /// Reach clusters through cluster-proxy.
    pub cluster_proxy: Option<ClusterProxy>,
    /// Bootstrap credentials for sinks.
    pub bootstrap: Option<Bootstrap>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            placement: Placement::Inventory("default".into()),
            cluster_manager: OPEN_CLUSTER_MANAGEMENT.into(),
            access_provider_name: OPEN_CLUSTER_MANAGEMENT.into(),
            exclude_label_prefixes: vec![DEFAULT_EXCLUDED_PREFIX.into()],
            cluster_proxy: None,
            bootstrap: None,
        }
    }
}

/// What `observe` gathered from the hub caches.
#[derive(Clone, Debug, Default)]
pub struct Observations {
    /// Every ManagedClusterSet (clusterset-bindings mode only).
    pub sets: Vec<Arc<ManagedClusterSet>>,
    /// Every ManagedClusterSetBinding (clusterset-bindings mode only).
    pub bindings: Vec<Arc<ManagedClusterSetBinding>>,
    /// The cluster-proxy user server CA (PEM), when cluster-proxy is used and its Secret exists.
    pub proxy_ca: Option<Vec<u8>>,
}

/// The inventories a cluster belongs to in clusterset-bindings mode, sorted: namespaces of Bound
/// bindings (named after their set, as OCM requires) whose set selects the cluster.
pub fn inventories(
    cluster: &ManagedCluster,
    sets: &[Arc<ManagedClusterSet>],
    bindings: &[Arc<ManagedClusterSetBinding>],
) -> BTreeSet<String> {
    let labels = cluster.all_labels();
    let selecting: BTreeSet<String> = sets
        .iter()
        .filter(|set| set.metadata.deletion_timestamp.is_none() && set_selects(set, &labels))
        .map(|set| set.name_any())
        .collect();
    bindings
        .iter()
        .filter(|b| b.spec.cluster_set == b.name_any() && selecting.contains(&b.spec.cluster_set))
        .filter(|b| {
            b.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == CONDITION_BOUND && c.status == "True")
            })
        })
        .filter_map(|b| b.namespace())
        .collect()
}

/// OCM's selection: the exclusive clusterset label (the default), or a label selector (an absent
/// one selects nothing, an empty one everything — as `metav1.LabelSelectorAsSelector`).
fn set_selects(set: &ManagedClusterSet, labels: &BTreeMap<String, String>) -> bool {
    let selector = &set.spec.cluster_selector;
    match selector.selector_type.as_str() {
        "" | SELECTOR_EXCLUSIVE => {
            labels.get(LABEL_OCM_CLUSTERSET).map(String::as_str) == Some(set.name_any().as_str())
        }
        SELECTOR_LABEL => match &selector.label_selector {
            None => false,
            Some(label_selector) => Selector::try_from(label_selector.clone())
                .map(|s| s.matches(labels))
                .unwrap_or(false),
        },
        _ => false,
    }
}

/// Drop from a ManagedCluster what [`project`] never reads (see `Source::trim`): it reads the
/// labels (all of them: a set's selector may name any; kept as
/// [`adapters::interned::InternedLabels`]), the deletion mark, the spec and, of the status, two
/// condition types, the version and the claims.
pub fn trim(cluster: &mut ManagedCluster) {
    cluster
        .kept_labels
        .take_from(&mut cluster.metadata, |_| true);
    let meta = &mut cluster.metadata;
    meta.annotations = None;
    meta.finalizers = None;
    meta.owner_references = None;
    if let Some(status) = cluster.status.as_mut() {
        status.conditions.retain(|c| {
            c.type_ == CONDITION_AVAILABLE || c.type_ == crate::types::CONDITION_JOINED
        });
    }
}

/// Project one ManagedCluster. `existing` gives the status we published before for a profile
/// (`namespace`, `name`), so timestamps stay put while nothing changes.
pub fn project(
    cluster: &ManagedCluster,
    config: &Config,
    observations: &Observations,
    existing: &dyn Fn(&str, &str) -> ClusterProfileStatus,
    now: &Time,
) -> Projection {
    let name = cluster.name_any();
    if !cluster.spec.hub_accepts_client || cluster.metadata.deletion_timestamp.is_some() {
        return Projection::default();
    }
    let namespaces: BTreeSet<String> = match &config.placement {
        Placement::Inventory(namespace) => BTreeSet::from([namespace.clone()]),
        Placement::ClusterSetBindings => {
            inventories(cluster, &observations.sets, &observations.bindings)
        }
    };
    if namespaces.is_empty() {
        return Projection::default();
    }

    let mut problems = Vec::new();
    let labels = labels(cluster, config, &mut problems);
    let status = cluster.status.clone();
    if status.is_none() {
        problems.push(Problem::invalid(format!(
            "ManagedCluster {name} has no status yet (its registration agent has not reported): conditions are published as Unknown"
        )));
    }
    let status = status.unwrap_or_default();
    let access_provider = access_provider(cluster, config, observations, &mut problems);

    let mut rejected_reported = false;
    let mut profiles = Vec::new();
    for namespace in &namespaces {
        let previous = existing(namespace, &name);
        let conditions = vec![
            condition(
                facts(
                    CONDITION_CONTROL_PLANE_HEALTHY,
                    CONDITION_AVAILABLE,
                    &status.conditions,
                ),
                &previous.conditions,
                now,
            ),
            condition(
                facts(
                    CONDITION_JOINED,
                    crate::types::CONDITION_JOINED,
                    &status.conditions,
                ),
                &previous.conditions,
                now,
            ),
        ];
        let (properties, rejected) = properties(
            status
                .cluster_claims
                .iter()
                .map(|c| (c.name.to_string(), c.value.clone())),
            &previous.properties,
            now,
        );
        // The same claims are rejected for every inventory: report them once.
        if !rejected_reported {
            rejected_reported = true;
            for (claim, why) in rejected {
                problems.push(Problem::invalid(format!(
                    "clusterClaim {:?} of ManagedCluster {name} is not published as a property: {why}",
                    shorten(&claim)
                )));
            }
        }
        let version = (!status.version.kubernetes.is_empty()).then(|| ClusterVersion {
            kubernetes: Some(status.version.kubernetes.to_string()),
        });
        profiles.push(DesiredProfile {
            namespace: namespace.clone(),
            name: name.clone(),
            display_name: Some(name.clone()),
            labels: labels.clone(),
            status: ClusterProfileStatus {
                conditions,
                version,
                properties,
                access_providers: access_provider.iter().cloned().collect(),
                credential_providers: Vec::new(),
            },
        });
    }

    let companions = match &config.bootstrap {
        Some(bootstrap) => match companions(bootstrap, &name) {
            Ok(companions) => companions,
            Err(problem) => {
                problems.push(problem);
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    Projection {
        profiles,
        companions,
        problems,
        requeue_after: None,
    }
}

/// Profile labels: the cluster's own (minus excluded prefixes and ours), then the well-known ones.
fn labels(
    cluster: &ManagedCluster,
    config: &Config,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, String> {
    let name = cluster.name_any();
    let own = cluster.all_labels();
    let mut labels: BTreeMap<String, String> = own
        .iter()
        .filter(|(key, _)| {
            !key.starts_with(OWN_PREFIX)
                && key.as_str() != LABEL_CLUSTER_MANAGER
                && !config
                    .exclude_label_prefixes
                    .iter()
                    .any(|prefix| !prefix.is_empty() && key.starts_with(prefix.as_str()))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // Copied values came through the apiserver's label validation; the ones we derive did not.
    labels.remove(LABEL_INVENTORY_MEMBER_ID);
    labels.remove(LABEL_CLUSTER_SET);
    if is_valid_label_value(&name) {
        labels.insert(LABEL_CLUSTER_NAME.into(), name.clone());
    } else {
        labels.remove(LABEL_CLUSTER_NAME);
        problems.push(Problem::invalid(format!(
            "the name of ManagedCluster {name} is not a valid label value (over 63 characters?): label {LABEL_CLUSTER_NAME} is omitted"
        )));
    }
    if let Some(set) = own.get(LABEL_OCM_CLUSTERSET).filter(|s| !s.is_empty()) {
        labels.insert(LABEL_CLUSTER_SET.into(), set.clone());
    }
    let claim = cluster.status.as_ref().and_then(|s| {
        s.cluster_claims
            .iter()
            .find(|c| c.name == PROPERTY_CLUSTER_ID)
            .map(|c| c.value.clone())
    });
    let claim = match claim {
        Some(id) if !id.is_empty() && is_valid_label_value(&id) => Some(id),
        Some(id) => {
            problems.push(Problem::invalid(format!(
                "clusterClaim {PROPERTY_CLUSTER_ID} of ManagedCluster {name} ({:?}) is not a valid label value; label {LABEL_INVENTORY_MEMBER_ID} falls back to the cluster's own label",
                shorten(&id)
            )));
            None
        }
        None => None,
    };
    let member_id = claim.or_else(|| {
        own.get(LABEL_INVENTORY_MEMBER_ID)
            .filter(|v| !v.is_empty())
            .cloned()
    });
    if let Some(id) = member_id {
        labels.insert(LABEL_INVENTORY_MEMBER_ID.into(), id);
    }
    labels.remove(LABEL_SOURCE);
    labels
}

/// A profile condition from an OCM condition: status, reason and message copied; `Unknown` when
/// the cluster does not report it.
fn facts(profile_type: &str, ocm_type: &str, conditions: &[OcmCondition]) -> ConditionFacts {
    match conditions.iter().find(|c| c.type_ == ocm_type) {
        Some(c) => ConditionFacts {
            type_: profile_type.into(),
            status: match c.status.as_str() {
                "True" | "False" => c.status.to_string(),
                _ => "Unknown".into(),
            },
            reason: c.reason.to_string(),
            message: c.message.to_string(),
        },
        None => ConditionFacts {
            type_: profile_type.into(),
            status: "Unknown".into(),
            reason: format!("{ocm_type}Missing"),
            message: format!("the ManagedCluster does not report {ocm_type}"),
        },
    }
}

/// The access provider, or none (with a problem) when the cluster cannot be reached from what it
/// reports: consumers are better off with no provider than with one that cannot work.
fn access_provider(
    cluster: &ManagedCluster,
    config: &Config,
    observations: &Observations,
    problems: &mut Vec<Problem>,
) -> Option<AccessProvider> {
    let name = cluster.name_any();
    let (server, ca) = match &config.cluster_proxy {
        Some(proxy) => match &observations.proxy_ca {
            Some(ca) if is_pem_certificates(ca) => (proxy.server(&name), Some(BASE64.encode(ca))),
            Some(_) => {
                problems.push(Problem::invalid(format!(
                    "Secret {}/{} key {} is not a PEM certificate: no access provider is published",
                    proxy.namespace,
                    proxy.ca_secret,
                    ClusterProxy::CA_KEY
                )));
                return None;
            }
            None => {
                problems.push(Problem::new(
                    Category::NotFound,
                    format!(
                        "cluster-proxy CA Secret {}/{} (key {}) not found: no access provider is published",
                        proxy.namespace,
                        proxy.ca_secret,
                        ClusterProxy::CA_KEY
                    ),
                ));
                return None;
            }
        },
        None => {
            let Some(client_config) = cluster.spec.managed_cluster_client_configs.first() else {
                problems.push(Problem::invalid(format!(
                    "ManagedCluster {name} has no managedClusterClientConfigs: no access provider is published"
                )));
                return None;
            };
            if let Err(why) = check_server_url(&client_config.url) {
                problems.push(Problem::invalid(format!(
                    "managedClusterClientConfigs[0].url of ManagedCluster {name} is malformed ({why}): no access provider is published"
                )));
                return None;
            }
            let ca = match client_config.ca_bundle.as_deref().filter(|c| !c.is_empty()) {
                None => None,
                Some(text) => match BASE64.decode(text.trim()) {
                    Ok(pem) if is_pem_certificates(&pem) => Some(BASE64.encode(pem)),
                    _ => {
                        problems.push(Problem::invalid(format!(
                            "managedClusterClientConfigs[0].caBundle of ManagedCluster {name} is not a PEM certificate bundle: no access provider is published"
                        )));
                        return None;
                    }
                },
            };
            // Without a CA, TLS relies on the consumer's own trust, as in a kubeconfig without
            // certificate-authority-data.
            (client_config.url.trim_end_matches('/').to_string(), ca)
        }
    };
    Some(AccessProvider {
        name: config.access_provider_name.clone(),
        cluster: Some(Cluster {
            server,
            certificate_authority_data: ca,
            extensions: extensions(config, &name),
            ..Cluster::default()
        }),
    })
}

/// The exec extension naming the bootstrap token Secret (contract of the `token-secret` provider
/// and upstream's secretreader: `{name, namespace, key}`); the Secret's content is never copied.
fn extensions(config: &Config, cluster: &str) -> Vec<NamedExtension> {
    match &config.bootstrap {
        Some(bootstrap) => vec![NamedExtension {
            name: EXTENSION_EXEC.into(),
            extension: serde_json::json!({
                "name": bootstrap.service_account,
                "namespace": cluster,
                "key": "token",
            }),
        }],
        None => Vec::new(),
    }
}

/// An API server URL a kubeconfig can use: `https://host[:port][/path]`.
fn check_server_url(url: &str) -> Result<(), &'static str> {
    let uri: http::Uri = url.parse().map_err(|_| "not a URL")?;
    if uri.scheme_str() != Some("https") {
        return Err("scheme is not https");
    }
    match uri.host() {
        Some(host) if !host.is_empty() => {}
        _ => return Err("no host"),
    }
    if uri.query().is_some() {
        return Err("has a query");
    }
    Ok(())
}

/// Whether `pem` holds one or more PEM certificates (and nothing that is not one).
pub fn is_pem_certificates(pem: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(pem) else {
        return false;
    };
    let mut blocks = 0;
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some(body) = rest.strip_prefix("-----BEGIN CERTIFICATE-----") else {
            return false;
        };
        let Some((body, after)) = body.split_once("-----END CERTIFICATE-----") else {
            return false;
        };
        let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        // DER certificates are ASN.1 SEQUENCEs.
        match BASE64.decode(compact) {
            Ok(der) if der.first() == Some(&0x30) => blocks += 1,
            _ => return false,
        }
        rest = after.trim();
    }
    blocks > 0
}

/// Claim names and values go into Event text: keep them short.
fn shorten(text: &str) -> String {
    if text.chars().count() <= 64 {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(64).collect::<String>())
    }
}

#[cfg(test)]
mod tests;
