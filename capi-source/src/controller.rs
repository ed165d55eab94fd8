//! The adapter: flags, the `Source` implementation handed to the shared source engine (watches of
//! Clusters and of their kubeconfig Secrets, observations from caches) and `run`.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use adapters::ca_bundle::CaBundle;
use adapters::cache::{CompactStore, watch_config};
use adapters::error::{Category, kube_category};
use adapters::kubeconfig_secret::{KubeconfigSecretError, KubeconfigSummary, SecretKubeconfig};
use adapters::member_reads::{
    MemberReadFailure, MemberReadMetrics, MemberReadSettings, MemberReader,
};
use adapters::runtime::{LeaderContext, Metrics};
use adapters::served_versions::{RefReader, wait_until_served};
use adapters::source::{
    Observed, Problem, Projection, Source, SourceArgs, SourceMetrics, SourceSettings,
    related_triggers, run_source, source_key,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use crate::cluster::{
    CA_KEY, CapiCluster, GROUP, KUBECONFIG_KEY, LABEL_CLUSTER_NAME, PLURAL, SECRET_TYPE,
    ca_secret_name, kubeconfig_secret_name, v1beta1, v1beta2,
};
use crate::project::{
    ControlPlaneState, DEFAULT_NAME_TEMPLATE, KubeconfigState, NameTemplate, Observations,
    ProjectionConfig, project,
};

/// Adapter name: field manager, `inventory-bridge.io/source` label value, Event reporter.
pub const NAME: &str = "capi-source";

/// How long a followed `controlPlaneRef` (and its discovery) is reused.
const REF_TTL: Duration = Duration::from_secs(30);

/// How long a reconcile waits for the first list of CAPI's Secrets before it retries: until
/// then, a Secret's absence proves nothing.
const SECRETS_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// What is kept of a CAPI Secret between reconciles.
#[derive(Clone, Debug)]
enum KeptSecret {
    /// `<cluster>-kubeconfig`, checked when it arrived: where it points and its fingerprint, or
    /// what is wrong with it. Never its credentials: they are read from the hub again when the
    /// member is (once per refresh interval).
    Kubeconfig(Result<Arc<KubeconfigSummary>, KubeconfigSecretError>),
    /// `tls.crt` of `<cluster>-ca` (`None`: the Secret exists without it).
    Ca(Option<Arc<CaBundle>>),
}

/// capi-source's own flags (each falls back to the environment variable beside it).
#[derive(Clone, Debug, clap::Args)]
pub struct CapiArgs {
    /// Namespace of the inventory the ClusterProfiles are written to.
    #[arg(long, env = "IB_INVENTORY_NAMESPACE")]
    pub inventory_namespace: String,
    /// Watch Clusters (and their Secrets) in this namespace only (default: all namespaces).
    #[arg(long, env = "IB_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// `spec.clusterManager.name` and the `x-k8s.io/cluster-manager` label.
    #[arg(long, env = "IB_CLUSTER_MANAGER", default_value = "cluster-api")]
    pub cluster_manager: String,
    /// Profile name; placeholders `{namespace}` and `{name}` (required). Results that are not a
    /// DNS-1123 label of at most 63 characters are sanitised and cut with a stable hash suffix.
    #[arg(long, env = "IB_PROFILE_NAME_TEMPLATE", default_value = DEFAULT_NAME_TEMPLATE)]
    pub profile_name_template: String,
    /// Cluster label prefixes not copied onto profiles (comma-separated; empty: copy all).
    #[arg(
        long,
        env = "IB_EXCLUDE_LABEL_PREFIXES",
        value_delimiter = ',',
        default_value = "cluster.x-k8s.io/,topology.cluster.x-k8s.io/"
    )]
    pub exclude_label_prefixes: Vec<String>,
    /// Name of the access provider published in `status.accessProviders`.
    #[arg(long, env = "IB_ACCESS_PROVIDER_NAME", default_value = "cluster-api")]
    pub access_provider_name: String,
    /// Seconds between reads of a healthy member (kube-system UID, ClusterProperty objects); also
    /// the cap of the retry backoff for an unreachable one.
    #[arg(long, env = "IB_MEMBER_REFRESH_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub member_refresh_seconds: u64,
    /// Connect and read timeout, in seconds, of each request to a member.
    #[arg(long, env = "IB_MEMBER_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub member_timeout_seconds: u64,
    /// Flags every source adapter shares.
    #[command(flatten)]
    pub source: SourceArgs,
}

impl CapiArgs {
    /// The projection configuration, or what is wrong with the flags.
    pub fn projection_config(&self) -> adapters::Result<ProjectionConfig> {
        let name_template =
            NameTemplate::parse(&self.profile_name_template).map_err(adapters::Error::Config)?;
        // v1alpha2 requires the manager name to be a valid label value; so does the label itself.
        adapters::source::check_cluster_manager("--cluster-manager", &self.cluster_manager)
            .map_err(adapters::Error::Config)?;
        if self.inventory_namespace.is_empty() {
            return Err(adapters::Error::Config(
                "--inventory-namespace must not be empty".to_string(),
            ));
        }
        if self.access_provider_name.is_empty() {
            return Err(adapters::Error::Config(
                "--access-provider-name must not be empty".to_string(),
            ));
        }
        Ok(ProjectionConfig {
            inventory_namespace: self.inventory_namespace.clone(),
            cluster_manager: self.cluster_manager.clone(),
            name_template,
            excluded_label_prefixes: self
                .exclude_label_prefixes
                .iter()
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
            access_provider_name: self.access_provider_name.clone(),
        })
    }
}

/// Metrics capi-source registers before the runtime starts.
#[derive(Clone, Debug)]
pub struct CapiMetrics {
    source: SourceMetrics,
    member_reads: MemberReadMetrics,
}

impl CapiMetrics {
    /// Register the source engine's and the member reads' metrics.
    pub fn register(metrics: &mut Metrics) -> Self {
        Self {
            source: SourceMetrics::register(metrics),
            member_reads: MemberReadMetrics::register(metrics),
        }
    }
}

/// The Cluster API source, for Clusters read at API version `C`.
pub struct CapiSource<C> {
    name: &'static str,
    config: ProjectionConfig,
    client: Client,
    watch_namespace: Option<String>,
    /// CAPI's Secrets, each as the one key read of it.
    secrets: Arc<CompactStore<Secret, KeptSecret>>,
    secret_watch_started: AtomicBool,
    members: MemberReader,
    refs: RefReader,
    cluster: PhantomData<fn() -> C>,
}

impl<C: CapiCluster> CapiSource<C> {
    fn new(
        name: &'static str,
        config: ProjectionConfig,
        args: &CapiArgs,
        metrics: MemberReadMetrics,
        client: Client,
    ) -> Self {
        Self {
            name,
            config,
            watch_namespace: args.watch_namespace.clone(),
            secrets: Arc::new(CompactStore::new(kept_secret)),
            secret_watch_started: AtomicBool::new(false),
            members: MemberReader::new(
                MemberReadSettings {
                    refresh: Duration::from_secs(args.member_refresh_seconds),
                    timeout: Duration::from_secs(args.member_timeout_seconds),
                },
                metrics,
            ),
            refs: RefReader::new(client.clone(), REF_TTL),
            client,
            cluster: PhantomData,
        }
    }

    fn secret(&self, namespace: &str, name: &str) -> Option<KeptSecret> {
        self.secrets.get(Some(namespace), name)
    }

    /// The kubeconfig of `cluster` in `namespace`, read from the hub for a member read. It must
    /// still be Cluster API's (its Secret type, and this cluster's name in its label): another
    /// Secret that took its name is not trusted with a member's identity.
    async fn load_kubeconfig(
        &self,
        namespace: &str,
        cluster: &str,
    ) -> Result<SecretKubeconfig, MemberReadFailure> {
        let name = kubeconfig_secret_name(cluster);
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let secret = api
            .get_opt(&name)
            .await
            .map_err(|err| hub_read_failure(&name, &err))?;
        let secret = secret
            .filter(|secret| is_clusters_capi_secret(secret, cluster))
            .ok_or_else(|| MemberReadFailure {
                category: Category::NotFound,
                message: format!(
                    "the kubeconfig Secret {name:?} is gone or no longer Cluster API's (type {SECRET_TYPE}, label {LABEL_CLUSTER_NAME})"
                ),
            })?;
        SecretKubeconfig::from_secret_data(secret.data.as_ref(), KUBECONFIG_KEY)
            .map_err(|err| MemberReadFailure::kubeconfig(&err))
    }
}

/// Whether `secret` is one the watch selects for `cluster`: Cluster API's type and its label.
fn is_clusters_capi_secret(secret: &Secret, cluster: &str) -> bool {
    secret.type_.as_deref() == Some(SECRET_TYPE)
        && secret.labels().get(LABEL_CLUSTER_NAME).map(String::as_str) == Some(cluster)
}

/// Why a Secret could not be read from the hub, in words that carry no object content.
fn hub_read_failure(name: &str, err: &kube::Error) -> MemberReadFailure {
    let why = match err {
        kube::Error::Api(status) => format!("answered {}", status.code),
        _ => "did not answer".to_string(),
    };
    MemberReadFailure {
        category: kube_category(err),
        message: format!("cannot read the kubeconfig Secret {name:?}: the hub {why}"),
    }
}

/// What is kept of a CAPI Secret: the checked `value` of `<cluster>-kubeconfig` without its
/// credentials, `tls.crt` of `<cluster>-ca`, nothing of the others. They carry private keys (CA,
/// etcd, service-account signing, the kubeconfig's client key) that have no business in this
/// process's memory between reads, and nothing else of a Secret is read.
fn kept_secret(secret: &Secret) -> Option<KeptSecret> {
    let name = secret.metadata.name.as_deref()?;
    let value = |key: &str| secret.data.as_ref().and_then(|data| data.get(key));
    if name.ends_with("-kubeconfig") {
        Some(KeptSecret::Kubeconfig(
            value(KUBECONFIG_KEY)
                .ok_or_else(|| KubeconfigSecretError::MissingKey(KUBECONFIG_KEY.to_string()))
                .and_then(|bytes| SecretKubeconfig::parse(&bytes.0))
                .map(|kubeconfig| Arc::new(kubeconfig.into_summary())),
        ))
    } else if name.ends_with("-ca") {
        Some(KeptSecret::Ca(
            value(CA_KEY).map(|ca| Arc::new(CaBundle::from_pem(&ca.0))),
        ))
    } else {
        None
    }
}

impl<C: CapiCluster> Source for CapiSource<C> {
    type Native = C;
    type Extra = Observations;

    fn name(&self) -> &'static str {
        self.name
    }

    fn cluster_manager(&self) -> &str {
        &self.config.cluster_manager
    }

    fn inventory_namespace(&self) -> Option<&str> {
        Some(&self.config.inventory_namespace)
    }

    fn trim(&self, cluster: &mut C) {
        cluster.trim(&|key| self.config.reads_label(key));
    }

    fn native_api(&self, client: Client, namespace: Option<&str>) -> Api<C> {
        match namespace {
            Some(namespace) => Api::namespaced(client, namespace),
            None => Api::all(client),
        }
    }

    fn watches(&self, controller: Controller<C>, metrics: &Arc<Metrics>) -> Controller<C> {
        if self.secret_watch_started.swap(true, Ordering::SeqCst) {
            return controller;
        }
        let api: Api<Secret> = match &self.watch_namespace {
            Some(namespace) => Api::namespaced(self.client.clone(), namespace),
            None => Api::all(self.client.clone()),
        };
        // CAPI's Secrets only, by label and type: never every Secret of the hub.
        let config = watch_config()
            .labels(LABEL_CLUSTER_NAME)
            .fields(&format!("type={SECRET_TYPE}"));
        let secrets = self.secrets.clone();
        let stream = watcher(api, config)
            .default_backoff()
            .inspect(move |event| secrets.observe(event))
            .touched_objects();
        controller.reconcile_on(related_triggers(
            stream,
            metrics.clone(),
            |secret: Secret| {
                let cluster = secret.labels().get(LABEL_CLUSTER_NAME)?.clone();
                let namespace = secret.namespace()?;
                Some(ObjectRef::<C>::new(&cluster).within(&namespace))
            },
        ))
    }

    async fn observe(&self, _client: &Client, native: &C) -> Result<Observations, Problem> {
        let model = native.model();
        if model.paused {
            // Nothing is projected while paused: do no I/O either.
            return Ok(Observations::default());
        }
        let key = source_key(native);
        self.secrets
            .ready("CAPI Secrets", SECRETS_SYNC_TIMEOUT)
            .await?;
        let mut observations = Observations::default();
        let kubeconfig = match self.secret(&model.namespace, &kubeconfig_secret_name(&model.name)) {
            Some(KeptSecret::Kubeconfig(Ok(summary))) => Some(summary),
            Some(KeptSecret::Kubeconfig(Err(err))) => {
                observations.kubeconfig = KubeconfigState::Invalid(err.to_string());
                None
            }
            _ => None,
        };
        match kubeconfig {
            Some(summary) => {
                observations.kubeconfig = KubeconfigState::Valid(summary.endpoint.clone());
                let load = || self.load_kubeconfig(&model.namespace, &model.name);
                observations.member =
                    Some(self.members.read(&key, &summary.fingerprint, load).await);
            }
            None => self.members.forget(&key),
        }
        observations.cluster_ca = match self.secret(&model.namespace, &ca_secret_name(&model.name))
        {
            Some(KeptSecret::Ca(Some(ca))) => Some(ca.clone()),
            _ => None,
        };
        if model.control_plane_versions.is_empty()
            && let Some(reference) = &model.control_plane_ref
        {
            observations.control_plane = match self.refs.get(reference).await {
                Ok(object) => match object
                    .data
                    .pointer("/status/version")
                    .and_then(|v| v.as_str())
                {
                    Some(version) if !version.is_empty() => {
                        ControlPlaneState::Version(version.to_string())
                    }
                    _ => ControlPlaneState::NoVersion,
                },
                Err(err) => ControlPlaneState::Failed {
                    category: err.category(),
                    message: err.to_string(),
                },
            };
        }
        Ok(observations)
    }

    fn project(
        &self,
        native: &C,
        observed: &Observed<'_, Observations>,
    ) -> Result<Projection, Problem> {
        let model = native.model();
        let name = self
            .config
            .name_template
            .render(&model.namespace, &model.name);
        let existing = observed.existing_profile(&self.config.inventory_namespace, &name);
        let previous_status = existing.and_then(|p| p.status.clone()).unwrap_or_default();
        let previous_labels = existing.map(|p| p.labels().clone()).unwrap_or_default();
        project(
            &model,
            &observed.extra,
            &self.config,
            &previous_status,
            &previous_labels,
            &observed.now,
        )
    }
}

/// Run capi-source as `name` (the adapter name; tests give each run its own so they can share a
/// hub) until `context.stop` fires: find the Cluster API version the hub serves (`v1beta2`, else
/// `v1beta1`), then run the source engine on it.
pub async fn run(
    name: &'static str,
    args: CapiArgs,
    metrics: CapiMetrics,
    context: LeaderContext,
) -> adapters::Result<()> {
    let config = args.projection_config()?;
    let settings = SourceSettings {
        watch_namespace: args.watch_namespace.clone(),
        args: args.source.clone(),
    };
    let client = context.client.clone();
    let Some(version) = wait_until_served(
        &client,
        GROUP,
        PLURAL,
        &["v1beta2", "v1beta1"],
        &context.stop,
    )
    .await
    else {
        return Ok(());
    };
    if version == "v1beta2" {
        let source = CapiSource::<v1beta2::Cluster>::new(
            name,
            config,
            &args,
            metrics.member_reads.clone(),
            client,
        );
        run_source(source, settings, metrics.source, context).await
    } else {
        let source = CapiSource::<v1beta1::Cluster>::new(
            name,
            config,
            &args,
            metrics.member_reads.clone(),
            client,
        );
        run_source(source, settings, metrics.source, context).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        capi: CapiArgs,
    }

    #[test]
    fn flags_have_the_documented_defaults_and_are_checked() {
        let cli = Cli::try_parse_from(["capi-source", "--inventory-namespace", "fleet"]).unwrap();
        let config = cli.capi.projection_config().unwrap();
        assert_eq!(config.cluster_manager, "cluster-api");
        assert_eq!(config.access_provider_name, "cluster-api");
        assert_eq!(
            config.excluded_label_prefixes,
            vec!["cluster.x-k8s.io/", "topology.cluster.x-k8s.io/"]
        );
        assert_eq!(config.name_template.render("a", "b"), "a-b");
        let none = Cli::try_parse_from([
            "capi-source",
            "--inventory-namespace",
            "fleet",
            "--exclude-label-prefixes",
            "",
        ])
        .unwrap();
        assert!(
            none.capi
                .projection_config()
                .unwrap()
                .excluded_label_prefixes
                .is_empty()
        );
        for bad in [
            ["--profile-name-template", "{namespace}"],
            ["--cluster-manager", "not a label"],
        ] {
            let cli = Cli::try_parse_from(
                ["capi-source", "--inventory-namespace", "fleet"]
                    .into_iter()
                    .chain(bad),
            )
            .unwrap();
            assert!(cli.capi.projection_config().is_err(), "{bad:?}");
        }
        assert!(
            Cli::try_parse_from(["capi-source"]).is_err(),
            "inventory namespace is required"
        );
    }

    #[test]
    fn cluster_manager_names_v1alpha2_rejects_are_refused_with_the_reason() {
        let long = "c".repeat(64);
        for (name, reason) in [
            ("", "it is empty"),
            (long.as_str(), "it is 64 characters long"),
            ("Cluster API", "it is not a valid label value"),
            ("capi.", "it is not a valid label value"),
        ] {
            let cli = Cli::try_parse_from([
                "capi-source",
                "--inventory-namespace",
                "fleet",
                "--cluster-manager",
                name,
            ])
            .unwrap();
            let err = cli.capi.projection_config().unwrap_err().to_string();
            assert!(
                err.contains(&format!("--cluster-manager {name:?} is refused: {reason}")),
                "{err}"
            );
            assert!(err.contains("v1alpha2"), "{err}");
        }
    }

    #[test]
    fn a_member_read_trusts_only_the_clusters_capi_secret() {
        let secret = |type_: Option<&str>, cluster: Option<&str>| Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("web-kubeconfig".into()),
                labels: cluster.map(|c| [(LABEL_CLUSTER_NAME.to_string(), c.to_string())].into()),
                ..Default::default()
            },
            type_: type_.map(str::to_string),
            ..Secret::default()
        };
        assert!(is_clusters_capi_secret(
            &secret(Some(SECRET_TYPE), Some("web")),
            "web"
        ));
        for (type_, cluster, why) in [
            (Some("Opaque"), Some("web"), "another type took the name"),
            (Some(SECRET_TYPE), None, "no cluster label"),
            (Some(SECRET_TYPE), Some("db"), "another cluster's"),
            (None, Some("web"), "no type"),
        ] {
            assert!(
                !is_clusters_capi_secret(&secret(type_, cluster), "web"),
                "{why}"
            );
        }
    }

    #[test]
    fn only_the_needed_secret_keys_are_kept() {
        use k8s_openapi::ByteString;
        let secret = |name: &str, keys: &[&str]| Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("team-a".into()),
                annotations: Some(
                    [(
                        "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                        "{...}".to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            data: Some(
                keys.iter()
                    .map(|k| (k.to_string(), ByteString(k.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        };
        let kubeconfig = "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://10.0.0.1:6443\ncontexts:\n- name: ctx\n  context:\n    cluster: c\n    user: u\ncurrent-context: ctx\nusers:\n- name: u\n  user:\n    token: s3cr3t-t0ken\n";
        let kept = |secret: &Secret| kept_secret(secret).map(|kept| format!("{kept:?}"));
        let mut with_kubeconfig = secret("web-kubeconfig", &["other"]);
        if let Some(data) = with_kubeconfig.data.as_mut() {
            data.insert("value".into(), ByteString(kubeconfig.as_bytes().to_vec()));
        }
        let summary = kept(&with_kubeconfig).unwrap_or_default();
        assert!(summary.contains("https://10.0.0.1:6443"), "{summary}");
        assert!(
            !summary.contains("s3cr3t") && !summary.contains("other"),
            "never the kubeconfig's credentials nor other keys: {summary}"
        );
        assert!(
            matches!(
                kept_secret(&secret("web-ca", &["tls.crt", "tls.key"])),
                Some(KeptSecret::Ca(Some(ca))) if ca.to_base64() == BASE64.encode("tls.crt")
            ),
            "the CA's certificate, never its private key"
        );
        assert_eq!(
            kept(&secret("web-kubeconfig", &["other"])),
            Some("Kubeconfig(Err(MissingKey(\"value\")))".to_string()),
            "a kubeconfig Secret without its key is known to exist (and reported as such)"
        );
        assert!(
            kept(&secret("web-kubeconfig", &["value"]))
                .is_some_and(|kept| kept.contains("Err(NotYaml)")),
            "a kubeconfig that is not one is known as such"
        );
        assert_eq!(kept(&secret("web-etcd", &["tls.crt", "tls.key"])), None);
        assert_eq!(kept(&secret("web-sa", &["tls.key"])), None);
    }
}
