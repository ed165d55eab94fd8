//! Shared pieces of the sink tests (argocd-sink, flux-sink, and the end-to-end tests feeding them):
//! running a sink in-process configured by its real command line, playing a cluster manager and
//! an administrator, reading what a consumer reads the way that consumer reads it, and searching
//! every captured log line and Event for secrets.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use adapters::profile::{
    AccessProvider, Cluster, ClusterManager, ClusterProfile, ClusterProfileSpec, EXTENSION_EXEC,
    LABEL_CLUSTER_MANAGER, NamedExtension,
};
use adapters::runtime::{Metrics, Runtime};
use adapters::sink::{Sink, SinkMetrics, SinkOptions};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use kube::Client;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::{ControlPlane, Result, wait_for, wait_object};

// ---- log capture -----------------------------------------------------------------------------

/// A shared in-memory log sink.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

/// Every log line of this test process, at debug level (kube client included), captured.
pub fn logs() -> &'static Capture {
    static LOGS: OnceLock<Capture> = OnceLock::new();
    LOGS.get_or_init(|| {
        let capture = Capture::default();
        tracing_subscriber::fmt()
            .with_env_filter("debug,hyper=info,hyper_util=info,h2=info,rustls=info,tower=info")
            .with_writer(capture.clone())
            .with_ansi(false)
            .try_init()
            .unwrap();
        capture
    })
}

/// No captured log line and no Event note in `namespaces` contains any of `secrets`.
pub async fn assert_no_secret_leaked(
    hub: &Client,
    namespaces: &[impl AsRef<str>],
    secrets: &[String],
) {
    let text = String::from_utf8_lossy(&logs().0.lock().unwrap()).to_string();
    assert!(text.len() > 1000, "the log capture is not working");
    let mut notes = Vec::new();
    for namespace in namespaces {
        let events: Api<Event> = Api::namespaced(hub.clone(), namespace.as_ref());
        notes.extend(
            events
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter_map(|e| e.note),
        );
    }
    for secret in secrets {
        assert!(secret.len() >= 16, "not a meaningful secret to search for");
        assert!(
            !text.contains(secret.as_str()),
            "a secret appears in the logs"
        );
        for note in &notes {
            assert!(
                !note.contains(secret.as_str()),
                "a secret appears in an Event: {note}"
            );
        }
    }
}

// ---- running a sink ----------------------------------------------------------------------------

/// A sink engine running in-process with the real runtime; stopped when dropped.
pub struct RunningSink {
    address: SocketAddr,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<adapters::Result<()>>>,
}

impl Drop for RunningSink {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl RunningSink {
    /// Stop it and require a clean stop.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    /// The value of the metric `name` whose labels include all of `labels` (summed).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = crate::http_get(self.address, "/metrics").await.unwrap().1;
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter(|l| {
                labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Wait until that metric reaches `at_least`.
    pub async fn wait_metric(&self, name: &str, labels: &[(&str, &str)], at_least: f64) {
        wait_for(
            Duration::from_secs(60),
            &format!("{name} {labels:?} >= {at_least}"),
            || async { Ok((self.metric(name, labels).await >= at_least).then_some(())) },
        )
        .await
        .unwrap();
    }
}

/// Start `sink` with `options` against `hub`, with debug logs captured.
pub async fn start_sink<S: Sink>(hub: &Client, sink: S, options: SinkOptions) -> RunningSink {
    logs();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let mut metrics = Metrics::new(S::NAME);
    let sink_metrics = SinkMetrics::register(metrics.registry_mut());
    let args = crate::in_process_runtime_args("test", "debug");
    let runtime = Runtime::new(S::NAME, args, hub.clone(), metrics);
    let shutdown = runtime.shutdown_token();
    let sink = Arc::new(sink);
    let task = tokio::spawn(runtime.run_with_listener(listener, move |context| {
        adapters::sink::run(sink.clone(), options.clone(), sink_metrics.clone(), context)
    }));
    RunningSink {
        address,
        shutdown,
        task: Some(task),
    }
}

/// argocd-sink's sink value and engine options from its command line `argv` (without the program
/// name), resolved exactly as its binary resolves them.
pub fn argocd_from_args(argv: &[&str]) -> (argocd_sink::ArgoCdSink, SinkOptions) {
    use clap::Parser;
    let cli = argocd_sink::Cli::try_parse_from(
        std::iter::once("argocd-sink").chain(argv.iter().copied()),
    )
    .unwrap();
    let sink = cli.argocd.sink();
    let options = cli
        .sink
        .resolve_for(&sink, Some(sink.namespace.clone()))
        .unwrap();
    (sink, options)
}

/// flux-sink's sink value and engine options from its command line, as its binary resolves them.
pub fn flux_from_args(argv: &[&str]) -> (flux_sink::FluxSink, SinkOptions) {
    use clap::Parser;
    let cli =
        flux_sink::Cli::try_parse_from(std::iter::once("flux-sink").chain(argv.iter().copied()))
            .unwrap();
    let sink = cli.flux.sink();
    let options = cli
        .sink
        .resolve_for(&sink, sink.namespaces.first().cloned())
        .unwrap();
    (sink, options)
}

/// The cluster manager of every test profile ([`create_profile`]).
pub const TEST_MANAGER: &str = "test-manager";

/// Shorter timeouts and backoff for tests (the member answers on loopback), and a provider file
/// whose entries trust the test profiles' cluster manager (the built-ins trust only the real
/// sources' managers by default).
pub fn quick(mut options: SinkOptions) -> SinkOptions {
    for entry in &mut options.providers.providers {
        entry
            .cluster_managers
            .get_or_insert_with(|| vec![TEST_MANAGER.to_string()]);
    }
    options.exec_timeout = Duration::from_secs(3);
    options.member_timeout = Duration::from_secs(5);
    options.max_backoff = Duration::from_secs(5);
    options
}

// ---- playing the cluster manager and the administrator ------------------------------------------

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(str::to_string),
        ..ObjectMeta::default()
    }
}

/// An access provider pointing at `member`, with the exec extension `config`.
pub fn provider(name: &str, member: &ControlPlane, config: Option<Value>) -> AccessProvider {
    AccessProvider {
        name: name.into(),
        cluster: Some(Cluster {
            server: member.server(),
            certificate_authority_data: Some(BASE64.encode(member.ca_pem())),
            extensions: config
                .into_iter()
                .map(|extension| NamedExtension {
                    name: EXTENSION_EXEC.into(),
                    extension,
                })
                .collect(),
            ..Cluster::default()
        }),
    }
}

/// The built-in `kubeconfig-secret` provider pointing at `member` through hub Secret `secret`
/// (key `value`) in the profile's namespace.
pub fn kubeconfig_provider(member: &ControlPlane, secret: &str) -> Vec<AccessProvider> {
    vec![provider(
        "kubeconfig-secret",
        member,
        Some(json!({"name": secret, "key": "value"})),
    )]
}

/// Create a profile as a cluster manager would (spec, labels, then status).
pub async fn create_profile(
    hub: &Client,
    namespace: &str,
    name: &str,
    labels: &[(&str, &str)],
    providers: Vec<AccessProvider>,
    properties: Value,
) -> ClusterProfile {
    let api: Api<ClusterProfile> = Api::namespaced(hub.clone(), namespace);
    let mut all_labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all_labels.insert(LABEL_CLUSTER_MANAGER.into(), TEST_MANAGER.into());
    let profile = ClusterProfile {
        metadata: ObjectMeta {
            labels: Some(all_labels),
            ..meta(name, Some(namespace))
        },
        spec: ClusterProfileSpec {
            display_name: None,
            cluster_manager: ClusterManager {
                name: TEST_MANAGER.into(),
            },
        },
        status: None,
    };
    api.create(&PostParams::default(), &profile).await.unwrap();
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"conditions": [], "accessProviders": providers, "properties": properties}})),
    )
    .await
    .unwrap()
}

/// Replace a profile's labels (merge patch: `None` removes a label).
pub async fn patch_profile_labels(
    hub: &Client,
    namespace: &str,
    name: &str,
    labels: &[(&str, Option<&str>)],
) {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    Api::<ClusterProfile>::namespaced(hub.clone(), namespace)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": labels}})),
        )
        .await
        .unwrap();
}

/// A hub Secret with one key, carrying the marks its source's contract gives it: a kubeconfig
/// (`value`) as Cluster API writes it, a token (`token`) as OCM's managed-serviceaccount addon does.
pub async fn hub_secret(hub: &Client, namespace: &str, name: &str, key: &str, value: &str) {
    let mut metadata = meta(name, Some(namespace));
    let mut type_ = None;
    match key {
        "value" => {
            type_ = Some("cluster.x-k8s.io/secret".to_string());
            metadata.labels = Some(BTreeMap::from([(
                "cluster.x-k8s.io/cluster-name".to_string(),
                name.to_string(),
            )]));
        }
        "token" => {
            metadata.labels = Some(BTreeMap::from([(
                "authentication.open-cluster-management.io/is-managed-serviceaccount".to_string(),
                "true".to_string(),
            )]));
        }
        _ => {}
    }
    Api::<Secret>::namespaced(hub.clone(), namespace)
        .create(
            &PostParams::default(),
            &Secret {
                type_,
                metadata,
                data: Some(BTreeMap::from([(
                    key.to_string(),
                    ByteString(value.as_bytes().to_vec()),
                )])),
                ..Secret::default()
            },
        )
        .await
        .unwrap();
}

/// Play OCM's hub: a ManagedCluster named `name` (so namespace `name` is its hub namespace) whose
/// client configs list `members` — the record that vouches for a token Secret's endpoint.
pub async fn managed_cluster(hub: &Client, name: &str, members: &[&ControlPlane]) {
    let resource = kube::core::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk(
            "cluster.open-cluster-management.io",
            "v1",
            "ManagedCluster",
        ),
        "managedclusters",
    );
    let configs: Vec<Value> = members
        .iter()
        .map(|m| json!({"url": m.server(), "caBundle": BASE64.encode(m.ca_pem())}))
        .collect();
    Api::<kube::api::DynamicObject>::all_with(hub.clone(), &resource)
        .patch(
            name,
            &PatchParams::apply("test-ocm").force(),
            &Patch::Apply(json!({
                "apiVersion": "cluster.open-cluster-management.io/v1",
                "kind": "ManagedCluster",
                "metadata": {"name": name},
                "spec": {"hubAcceptsClient": true, "managedClusterClientConfigs": configs},
            })),
        )
        .await
        .unwrap();
}

/// What an administrator would do to give a sink bootstrap access: a ServiceAccount with
/// cluster-admin on the member, and a token for it.
pub async fn bootstrap_token(member: &ControlPlane, name: &str) -> String {
    let client = member.client().await.unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    accounts
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: meta(name, Some("default")),
                ..ServiceAccount::default()
            },
        )
        .await
        .unwrap();
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(
            &PostParams::default(),
            &ClusterRoleBinding {
                metadata: meta(name, None),
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "ClusterRole".into(),
                    name: "cluster-admin".into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: name.into(),
                    namespace: Some("default".into()),
                    ..Subject::default()
                }]),
            },
        )
        .await
        .unwrap();
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let minted: TokenRequest = accounts
        .create_subresource("token", name, &PostParams::default(), &request)
        .await
        .unwrap();
    minted.status.and_then(|s| s.token).unwrap()
}

// ---- what the member says about a credential ----------------------------------------------------

/// The username the member gives `client`.
pub async fn whoami(client: &Client) -> std::result::Result<String, kube::Error> {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await?;
    Ok(review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .unwrap_or_default())
}

/// Whether the member allows `client` to `verb` `resource` (core group unless `group`) in
/// `namespace` (cluster-wide when `None`), by a SelfSubjectAccessReview.
pub async fn may(
    client: &Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
) -> bool {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: namespace.map(str::to_string),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .is_some_and(|s| s.allowed)
}

/// Wait until `member` rejects `token` with 401 (its account is gone; the apiserver's token cache
/// may accept it for about 10 s more).
pub async fn wait_token_rejected(member: &ControlPlane, token: &str) {
    let client = member.token_client(token).await.unwrap();
    wait_for(
        Duration::from_secs(60),
        "the old token rejected",
        || async {
            Ok(
                matches!(whoami(&client).await, Err(kube::Error::Api(ref s)) if s.code == 401)
                    .then_some(()),
            )
        },
    )
    .await
    .unwrap();
}

/// (reason, note) of the Events about `name` in `namespace`.
pub async fn events_about(hub: &Client, namespace: &str, name: &str) -> Vec<(String, String)> {
    Api::<Event>::namespaced(hub.clone(), namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

/// Wait for an Event with `reason` about `name`; its note.
pub async fn wait_event(hub: &Client, namespace: &str, name: &str, reason: &str) -> String {
    wait_for(
        Duration::from_secs(60),
        &format!("Event {reason} on {name}"),
        || async {
            Ok(events_about(hub, namespace, name)
                .await
                .into_iter()
                .find(|(r, _)| r == reason)
                .map(|(_, note)| note))
        },
    )
    .await
    .unwrap()
}

// ---- reading registrations the way the consumers read them ---------------------------------------

/// Argo CD's `ClusterConfig` for a bearer token, field for field as Argo CD's Go types name them;
/// unknown fields are refused so a misspelt one fails the test.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ArgoClusterConfig {
    /// `bearerToken`.
    pub bearer_token: String,
    /// `tlsClientConfig`.
    pub tls_client_config: ArgoTlsClientConfig,
    /// `proxyUrl`.
    #[serde(default)]
    pub proxy_url: Option<String>,
}

/// Argo CD's `TLSClientConfig`: `caData` is a Go `[]byte`, i.e. base64 in JSON, of PEM.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ArgoTlsClientConfig {
    /// `insecure` (a JSON boolean).
    pub insecure: bool,
    /// `serverName`.
    #[serde(default)]
    pub server_name: Option<String>,
    /// `caData`.
    #[serde(default)]
    pub ca_data: Option<String>,
}

/// An Argo CD cluster Secret as Argo CD reads it.
#[derive(Clone, Debug)]
pub struct ArgoCluster {
    /// The Secret.
    pub secret: Secret,
    /// Its data, decoded to text.
    pub data: BTreeMap<String, String>,
    /// `config`, parsed.
    pub config: ArgoClusterConfig,
}

impl ArgoCluster {
    /// From a Secret: every data key must be UTF-8 and `config` must parse.
    pub fn parse(secret: Secret) -> Result<Self> {
        let data: BTreeMap<String, String> = secret
            .data
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| -> Result<(String, String)> { Ok((k, String::from_utf8(v.0)?)) })
            .collect::<Result<_>>()?;
        let config = serde_json::from_str(data.get("config").ok_or("no config key")?)?;
        Ok(Self {
            secret,
            data,
            config,
        })
    }

    /// A client built the way Argo CD builds one from this Secret (server, bearer token, CA,
    /// server name).
    pub async fn client(&self) -> Result<Client> {
        crate::controlplane::client_from_kubeconfig_yaml(&self.kubeconfig()).await
    }

    /// The kubeconfig Argo CD's view of this Secret amounts to: server, CA, server name and
    /// bearer token, named after the cluster's `name`.
    pub fn kubeconfig(&self) -> String {
        let tls = &self.config.tls_client_config;
        let mut cluster = json!({ "server": self.data.get("server") });
        if let Some(ca) = &tls.ca_data {
            // Both formats carry base64 of the PEM bundle.
            cluster["certificate-authority-data"] = json!(ca);
        }
        if let Some(name) = &tls.server_name {
            cluster["tls-server-name"] = json!(name);
        }
        let name = self.data.get("name").map_or("argocd", String::as_str);
        let kubeconfig = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": name, "cluster": cluster}],
            "users": [{"name": "argocd-sink", "user": {"token": self.config.bearer_token}}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": "argocd-sink"}}],
            "current-context": name,
        });
        serde_json::to_string_pretty(&kubeconfig).unwrap_or_else(|_| kubeconfig.to_string())
    }

    /// The Secret's labels.
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.secret.metadata.labels.clone().unwrap_or_default()
    }
}

/// Wait for the Argo CD cluster Secret `name` in `namespace` and parse it; `check` must accept it.
pub async fn argo_cluster(
    hub: &Client,
    namespace: &str,
    name: &str,
    check: impl Fn(&ArgoCluster) -> bool,
) -> ArgoCluster {
    let secrets: Api<Secret> = Api::namespaced(hub.clone(), namespace);
    let check = &check;
    wait_for(
        Duration::from_secs(60),
        &format!("Argo CD cluster Secret {namespace}/{name}"),
        || {
            let secrets = secrets.clone();
            async move {
                Ok(match secrets.get_opt(name).await? {
                    Some(secret) => Some(ArgoCluster::parse(secret)?).filter(check),
                    None => None,
                })
            }
        },
    )
    .await
    .unwrap()
}

/// A Flux kubeconfig Secret as Flux reads it: the kubeconfig under `value`, which must carry a
/// static token and an inline CA and nothing that runs code or reads files.
#[derive(Clone, Debug)]
pub struct FluxKubeconfig {
    /// The Secret.
    pub secret: Secret,
    /// The kubeconfig text.
    pub kubeconfig: String,
    /// The token.
    pub token: String,
}

impl FluxKubeconfig {
    /// From a Secret, checking what Flux requires.
    pub fn parse(secret: Secret) -> Result<Self> {
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get("value"))
            .ok_or("no value key")?;
        let kubeconfig = String::from_utf8(bytes.0.clone())?;
        let doc: Value = serde_saphyr::from_str(&kubeconfig)?;
        let user = &doc["users"][0]["user"];
        for forbidden in [
            "exec",
            "auth-provider",
            "tokenFile",
            "client-certificate",
            "client-key",
        ] {
            if user.get(forbidden).is_some() {
                return Err(format!("the user carries {forbidden}").into());
            }
        }
        let cluster = &doc["clusters"][0]["cluster"];
        if cluster.get("certificate-authority").is_some() {
            return Err("the CA is a file path".into());
        }
        let ca = cluster["certificate-authority-data"]
            .as_str()
            .ok_or("no inline CA")?;
        String::from_utf8(BASE64.decode(ca)?)?;
        let token = user["token"].as_str().ok_or("no static token")?.to_string();
        Ok(Self {
            secret,
            kubeconfig,
            token,
        })
    }

    /// The kubeconfig's CA (PEM).
    pub fn ca_pem(&self) -> String {
        let doc: Value = serde_saphyr::from_str(&self.kubeconfig).unwrap();
        let ca = doc["clusters"][0]["cluster"]["certificate-authority-data"]
            .as_str()
            .unwrap();
        String::from_utf8(BASE64.decode(ca).unwrap()).unwrap()
    }

    /// A client from the kubeconfig, as Flux builds one.
    pub async fn client(&self) -> Result<Client> {
        crate::controlplane::client_from_kubeconfig_yaml(&self.kubeconfig).await
    }

    /// The Secret's labels.
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.secret.metadata.labels.clone().unwrap_or_default()
    }
}

/// Wait for the Flux kubeconfig Secret `name` in `namespace` and parse it; `check` must accept it.
pub async fn flux_kubeconfig(
    hub: &Client,
    namespace: &str,
    name: &str,
    check: impl Fn(&FluxKubeconfig) -> bool,
) -> FluxKubeconfig {
    let secrets: Api<Secret> = Api::namespaced(hub.clone(), namespace);
    let check = &check;
    wait_for(
        Duration::from_secs(60),
        &format!("Flux kubeconfig Secret {namespace}/{name}"),
        || {
            let secrets = secrets.clone();
            async move {
                Ok(match secrets.get_opt(name).await? {
                    Some(secret) => Some(FluxKubeconfig::parse(secret)?).filter(check),
                    None => None,
                })
            }
        },
    )
    .await
    .unwrap()
}

/// Wait until the Secret `name` in `namespace` is gone.
pub async fn wait_secret_gone(hub: &Client, namespace: &str, name: &str) {
    let secrets: Api<Secret> = Api::namespaced(hub.clone(), namespace);
    crate::wait_object_gone(&secrets, name, Duration::from_secs(60))
        .await
        .unwrap();
}

/// Wait until `member` has the ServiceAccount `namespace/name`.
pub async fn wait_member_account(member: &ControlPlane, namespace: &str, name: &str) {
    let accounts: Api<ServiceAccount> = Api::namespaced(member.client().await.unwrap(), namespace);
    wait_object(
        &accounts,
        name,
        "member ServiceAccount",
        Duration::from_secs(60),
        |_| true,
    )
    .await
    .unwrap();
}
