//! ocm-source's own flags (each with an environment fallback), turned into a [`Config`].

use std::time::Duration;

use adapters::names::is_dns1123_label;

use adapters::member::{self, MemberIdentity};

use crate::bootstrap::{Bootstrap, DEFAULT_SPOKE_NAMESPACE};
use crate::project::{
    ClusterProxy, Config, DEFAULT_EXCLUDED_PREFIX, OPEN_CLUSTER_MANAGEMENT, Placement,
};

/// Flags of ocm-source.
#[derive(Clone, Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("placement").required(true).multiple(false))]
pub struct OcmArgs {
    /// The one inventory namespace every selected cluster's profile goes to.
    #[arg(long, env = "IB_INVENTORY_NAMESPACE", group = "placement")]
    pub inventory_namespace: Option<String>,

    /// Instead of one inventory: a profile in every namespace holding a Bound
    /// ManagedClusterSetBinding whose ManagedClusterSet selects the cluster (OCM's semantics).
    #[arg(long, env = "IB_CLUSTERSET_BINDINGS", group = "placement")]
    pub clusterset_bindings: bool,

    /// `spec.clusterManager.name` and the `x-k8s.io/cluster-manager` label of our profiles.
    #[arg(long, env = "IB_CLUSTER_MANAGER", default_value = OPEN_CLUSTER_MANAGEMENT)]
    pub cluster_manager: String,

    /// Name of the access provider published in `status.accessProviders`.
    #[arg(long, env = "IB_ACCESS_PROVIDER_NAME", default_value = OPEN_CLUSTER_MANAGEMENT)]
    pub access_provider_name: String,

    /// ManagedCluster label key prefix not copied onto profiles (repeatable, or comma-separated).
    #[arg(long = "exclude-label-prefix", env = "IB_EXCLUDE_LABEL_PREFIXES", value_delimiter = ',', default_value = DEFAULT_EXCLUDED_PREFIX)]
    pub exclude_label_prefixes: Vec<String>,

    /// Publish the cluster-proxy user server (`https://cluster-proxy-addon-user.<ns>:9092/<cluster>`)
    /// and its CA instead of each cluster's own URL.
    #[arg(long, env = "IB_CLUSTER_PROXY")]
    pub cluster_proxy: bool,

    /// Hub namespace of the cluster-proxy addon.
    #[arg(
        long,
        env = "IB_CLUSTER_PROXY_NAMESPACE",
        default_value = "open-cluster-management-addon"
    )]
    pub cluster_proxy_namespace: String,

    /// Secret (in the cluster-proxy namespace) whose `tls.crt` is the user server's CA.
    #[arg(
        long,
        env = "IB_CLUSTER_PROXY_CA_SECRET",
        default_value = "cluster-proxy-user-serving-cert"
    )]
    pub cluster_proxy_ca_secret: String,

    /// Keep per cluster a ManagedServiceAccount of this name and a ManifestWork granting it what
    /// sinks need to mint identities; the access provider then names its token Secret.
    #[arg(long, env = "IB_BOOTSTRAP_SERVICEACCOUNT")]
    pub bootstrap_serviceaccount: Option<String>,

    /// Spoke namespace where the managed-serviceaccount agent creates that ServiceAccount.
    #[arg(long, env = "IB_BOOTSTRAP_SPOKE_NAMESPACE", default_value = DEFAULT_SPOKE_NAMESPACE)]
    pub bootstrap_spoke_namespace: String,

    /// Validity of the bootstrap token (`24h`, `90m`, `3600s`; at least 10m); OCM rotates it.
    #[arg(long, env = "IB_BOOTSTRAP_TOKEN_VALIDITY", default_value = "24h", value_parser = parse_duration)]
    pub bootstrap_token_validity: Duration,

    /// Sinks whose default member identity the bootstrap ManifestWork provisions on every
    /// cluster (the token may only mint tokens for, and revoke, those): `<sink>` or
    /// `<instance>=<sink>`, repeatable or comma-separated; sinks are sveltos-sink, argocd-sink,
    /// flux-sink.
    #[arg(
        long = "bootstrap-sink",
        env = "IB_BOOTSTRAP_SINKS",
        value_delimiter = ',',
        default_value = "sveltos-sink,argocd-sink,flux-sink"
    )]
    pub bootstrap_sinks: Vec<String>,

    /// `<instance>=<file>`: RBAC rules (YAML/JSON list) of that sink's member ClusterRole, for a
    /// sink run with `--member-rules` (the same file). Repeatable.
    #[arg(
        long = "bootstrap-sink-rules",
        env = "IB_BOOTSTRAP_SINK_RULES",
        value_delimiter = ','
    )]
    pub bootstrap_sink_rules: Vec<String>,
}

/// The member identities of `--bootstrap-sink` values, with `--bootstrap-sink-rules` overrides.
fn bootstrap_identities(sinks: &[String], rules: &[String]) -> Result<Vec<MemberIdentity>, String> {
    let mut overrides = std::collections::BTreeMap::new();
    for entry in rules.iter().filter(|r| !r.is_empty()) {
        let (instance, path) = entry
            .split_once('=')
            .ok_or_else(|| format!("--bootstrap-sink-rules {entry:?} is not <instance>=<file>"))?;
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("--bootstrap-sink-rules {path}: {err}"))?;
        let parsed = member::parse_rules(&text)
            .map_err(|err| format!("--bootstrap-sink-rules {path}: {err}"))?;
        overrides.insert(instance.to_string(), parsed);
    }
    let mut identities = Vec::new();
    for value in sinks.iter().filter(|s| !s.is_empty()) {
        let (instance, sink) = value.split_once('=').unwrap_or((value, value));
        let default_rules = member::defaults::rules_of(sink).ok_or_else(|| {
            format!(
                "--bootstrap-sink {value:?}: unknown sink {sink:?} (known: {})",
                member::defaults::SINKS.join(", ")
            )
        })?;
        let rules = overrides.remove(instance).unwrap_or(default_rules);
        identities.push(MemberIdentity::default_for(instance, rules));
    }
    if let Some(unused) = overrides.keys().next() {
        return Err(format!(
            "--bootstrap-sink-rules names {unused:?}, which no --bootstrap-sink names"
        ));
    }
    Ok(identities)
}

/// `24h`, `90m`, `3600s`, or combinations like `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let mut total = 0u64;
    let mut number = String::new();
    let mut any = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(format!("{text:?}: unknown unit {c:?} (use h, m, s)")),
        };
        let value: u64 = number
            .parse()
            .map_err(|_| format!("{text:?}: a number must precede {c:?}"))?;
        total = value
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{text:?}: too long"))?;
        number.clear();
        any = true;
    }
    if !number.is_empty() || !any {
        return Err(format!("{text:?}: expected e.g. 24h, 90m or 3600s"));
    }
    Ok(Duration::from_secs(total))
}

impl OcmArgs {
    /// The configuration, or what is wrong with the flags.
    pub fn config(&self) -> Result<Config, String> {
        let placement = match (&self.inventory_namespace, self.clusterset_bindings) {
            (Some(namespace), false) => {
                if !is_dns1123_label(namespace) {
                    return Err(format!(
                        "--inventory-namespace {namespace:?} is not a namespace name"
                    ));
                }
                Placement::Inventory(namespace.clone())
            }
            (None, true) => Placement::ClusterSetBindings,
            _ => {
                return Err(
                    "give exactly one of --inventory-namespace or --clusterset-bindings".into(),
                );
            }
        };
        // v1alpha2 requires the manager name to be a valid label value; so does the label itself.
        adapters::source::check_cluster_manager("--cluster-manager", &self.cluster_manager)?;
        if self.access_provider_name.is_empty() {
            return Err("--access-provider-name must not be empty".into());
        }
        let cluster_proxy = self.cluster_proxy.then(|| ClusterProxy {
            namespace: self.cluster_proxy_namespace.clone(),
            ca_secret: self.cluster_proxy_ca_secret.clone(),
        });
        if let Some(proxy) = &cluster_proxy
            && !is_dns1123_label(&proxy.namespace)
        {
            return Err(format!(
                "--cluster-proxy-namespace {:?} is not a namespace name",
                proxy.namespace
            ));
        }
        let bootstrap = match &self.bootstrap_serviceaccount {
            Some(name) => {
                let bootstrap = Bootstrap {
                    service_account: name.clone(),
                    spoke_namespace: self.bootstrap_spoke_namespace.clone(),
                    validity: self.bootstrap_token_validity,
                    identities: bootstrap_identities(
                        &self.bootstrap_sinks,
                        &self.bootstrap_sink_rules,
                    )?,
                };
                bootstrap.validate()?;
                Some(bootstrap)
            }
            None => None,
        };
        Ok(Config {
            placement,
            cluster_manager: self.cluster_manager.clone(),
            access_provider_name: self.access_provider_name.clone(),
            exclude_label_prefixes: self
                .exclude_label_prefixes
                .iter()
                .filter(|p| !p.is_empty())
                .cloned()
                .collect(),
            cluster_proxy,
            bootstrap,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        ocm: OcmArgs,
    }

    fn parse(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(std::iter::once("ocm-source").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.ocm.config()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("3600s"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn defaults_and_placement() {
        let config = parse(&["--inventory-namespace", "fleet"]).unwrap();
        assert_eq!(config.placement, Placement::Inventory("fleet".into()));
        assert_eq!(config.cluster_manager, "open-cluster-management");
        assert_eq!(config.access_provider_name, "open-cluster-management");
        assert_eq!(
            config.exclude_label_prefixes,
            vec!["feature.open-cluster-management.io/".to_string()]
        );
        assert!(config.cluster_proxy.is_none() && config.bootstrap.is_none());
        let bindings = parse(&["--clusterset-bindings"]).unwrap();
        assert_eq!(bindings.placement, Placement::ClusterSetBindings);
        assert!(parse(&[]).is_err(), "a placement is required");
        assert!(parse(&["--inventory-namespace", "x", "--clusterset-bindings"]).is_err());
        assert!(parse(&["--inventory-namespace", "Not_A_Namespace"]).is_err());
        assert!(
            parse(&[
                "--inventory-namespace",
                "x",
                "--cluster-manager",
                "bad value"
            ])
            .is_err()
        );
    }

    #[test]
    fn cluster_manager_names_v1alpha2_rejects_are_refused_with_the_reason() {
        let long = "m".repeat(64);
        for (name, reason) in [
            ("", "it is empty"),
            (long.as_str(), "it is 64 characters long"),
            ("Open Cluster Management", "it is not a valid label value"),
            ("-ocm", "it is not a valid label value"),
        ] {
            // `=` so that a value starting with `-` is not taken for a flag.
            let flag = format!("--cluster-manager={name}");
            let err = parse(&["--inventory-namespace", "x", &flag]).expect_err(name);
            assert!(
                err.starts_with(&format!("--cluster-manager {name:?} is refused: {reason}")),
                "{err}"
            );
            assert!(err.contains("v1alpha2"), "{err}");
        }
        let longest = "m".repeat(63);
        assert_eq!(
            parse(&["--inventory-namespace", "x", "--cluster-manager", &longest])
                .unwrap()
                .cluster_manager,
            longest
        );
    }

    #[test]
    fn proxy_and_bootstrap_flags() {
        let config = parse(&[
            "--inventory-namespace",
            "fleet",
            "--cluster-proxy",
            "--exclude-label-prefix",
            "a.io/,b.io/",
            "--exclude-label-prefix",
            "c.io/",
            "--bootstrap-serviceaccount",
            "ib-bootstrap",
            "--bootstrap-token-validity",
            "2h",
            "--bootstrap-sink",
            "sveltos-sink,blue=argocd-sink",
        ])
        .unwrap();
        assert_eq!(
            config.cluster_proxy,
            Some(ClusterProxy {
                namespace: "open-cluster-management-addon".into(),
                ca_secret: "cluster-proxy-user-serving-cert".into(),
            })
        );
        assert_eq!(
            config.exclude_label_prefixes,
            vec!["a.io/", "b.io/", "c.io/"]
        );
        let bootstrap = config.bootstrap.unwrap();
        assert_eq!(bootstrap.service_account, "ib-bootstrap");
        assert_eq!(bootstrap.spoke_namespace, DEFAULT_SPOKE_NAMESPACE);
        assert_eq!(bootstrap.validity, Duration::from_secs(7200));
        let accounts: Vec<&str> = bootstrap
            .identities
            .iter()
            .map(|i| i.service_account.as_str())
            .collect();
        assert_eq!(
            accounts,
            ["inventory-bridge-sveltos-sink", "inventory-bridge-blue"]
        );
        assert!(
            parse(&[
                "--inventory-namespace",
                "x",
                "--bootstrap-serviceaccount",
                "sa",
                "--bootstrap-sink",
                "helm-sink"
            ])
            .is_err(),
            "unknown sinks are refused"
        );
        assert!(
            parse(&[
                "--inventory-namespace",
                "x",
                "--bootstrap-serviceaccount",
                "sa",
                "--bootstrap-token-validity",
                "1m"
            ])
            .is_err()
        );
    }
}
