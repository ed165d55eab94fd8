//! The trust boundary of the sink engine (issue 8), attack by attack, on real control planes: a
//! hub and two members, sveltos-sink running in-process. Each test plays a ClusterProfile writer
//! trying one attack and shows it refused: a clear Event reason and metric category on the
//! profile, nothing published on the hub, nothing minted on a member, nothing sent anywhere
//! else. Every test has its own inventory namespace(s), its own sink instance and its own member
//! identity, so tests running side by side never see each other's objects.

// Integration test file: helpers panic on a broken fixture, which fails the test as it should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use adapters::access::ProviderFile;
use adapters::member::MemberIdentity;
use adapters::profile::{
    AccessProvider, Cluster, ClusterManager, ClusterProfile, ClusterProfileSpec, EXTENSION_EXEC,
    EXTENSION_EXEC_ADDITIONAL_ENVS, LABEL_CLUSTER_MANAGER, LABEL_INVENTORY_MEMBER_ID,
    NamedExtension,
};
use adapters::runtime::{Metrics, Runtime};
use adapters::sink::{Sink, SinkMetrics, SinkOptions};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use harness::sinks::{bootstrap_token, events_about, hub_secret, whoami};
use harness::{ControlPlane, ForeignCrd, install_crd, install_crds, shared_fleet, wait_for};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use kube::Client;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use sveltos_sink::{SveltosCluster, SveltosSink};
use tokio_util::sync::CancellationToken;

/// The cluster manager capi-source writes (trusted by the `cluster-api`/`kubeconfig-secret`
/// built-in by default).
const CAPI: &str = "cluster-api";
/// The cluster manager ocm-source writes (trusted by the `token-secret` built-in by default).
const OCM: &str = "open-cluster-management";
/// Label of the managed-serviceaccount addon's token Secrets.
const MSA_LABEL: &str = "authentication.open-cluster-management.io/is-managed-serviceaccount";

// ---- log capture ---------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

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
fn logs() -> &'static Capture {
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

/// No captured log line, no Event note and no profile (status included) in `namespaces`
/// contains any of `secrets`.
async fn assert_no_secret_leaked(hub: &Client, namespaces: &[&str], secrets: &[String]) {
    let text = String::from_utf8_lossy(&logs().0.lock().unwrap()).to_string();
    assert!(text.len() > 1000, "the log capture is not working");
    let mut documents = Vec::new();
    for namespace in namespaces {
        let events: Api<Event> = Api::namespaced(hub.clone(), namespace);
        documents.extend(
            events
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter_map(|e| e.note)
                .map(|note| ("an Event", note)),
        );
        documents.extend(
            profiles(hub, namespace)
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|p| ("a profile", serde_json::to_string(&p).unwrap())),
        );
    }
    for secret in secrets {
        assert!(secret.len() >= 16, "not a meaningful secret to search for");
        assert!(
            !text.contains(secret.as_str()),
            "a secret appears in the logs"
        );
        for (what, document) in &documents {
            assert!(
                !document.contains(secret.as_str()),
                "a secret appears in {what}: {document}"
            );
        }
    }
}

/// What identifies an admin kubeconfig of `member` (its client key), for leak searches: the
/// base64 form (as in the kubeconfig) and a line of the PEM.
fn admin_key_material(member: &ControlPlane) -> Vec<String> {
    let key = &member.pki().admin_key;
    let pem_line = key
        .lines()
        .find(|l| !l.starts_with("-----") && l.len() >= 40)
        .unwrap()
        .to_string();
    vec![BASE64.encode(key), pem_line]
}

// ---- running the sink ------------------------------------------------------------------------

struct RunningSink {
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
    async fn metrics(&self) -> String {
        harness::http_get(self.address, "/metrics").await.unwrap().1
    }

    /// The value of the metric `name` whose labels include all of `labels` (summed).
    async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self.metrics().await;
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

    async fn wait_metric(&self, name: &str, labels: &[(&str, &str)], at_least: f64) {
        wait_for(
            Duration::from_secs(90),
            &format!("{name} {labels:?} >= {at_least}"),
            || async { Ok((self.metric(name, labels).await >= at_least).then_some(())) },
        )
        .await
        .unwrap();
    }

    /// `inventory_bridge_problems_total{category}`.
    async fn problems(&self, category: &str) -> f64 {
        self.metric("inventory_bridge_problems_total", &[("category", category)])
            .await
    }
}

async fn start_sink(hub: &Client, options: SinkOptions) -> RunningSink {
    logs();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let mut metrics = Metrics::new(SveltosSink::NAME);
    let sink_metrics = SinkMetrics::register(metrics.registry_mut());
    let args = harness::in_process_runtime_args(&options.instance, "debug");
    let runtime = Runtime::new(SveltosSink::NAME, args, hub.clone(), metrics);
    let shutdown = runtime.shutdown_token();
    let sink = Arc::new(SveltosSink::default());
    let task = tokio::spawn(runtime.run_with_listener(listener, move |context| {
        adapters::sink::run(sink.clone(), options.clone(), sink_metrics.clone(), context)
    }));
    RunningSink {
        address,
        shutdown,
        task: Some(task),
    }
}

/// Options for one test: it serves `inventory` only, as an instance of its own (named after the
/// inventory namespace) with a member identity of its own, so concurrent tests on the shared
/// members never share, adopt or delete each other's accounts.
fn options(inventory: &str, providers: ProviderFile) -> SinkOptions {
    let mut options = SinkOptions::defaults::<SveltosSink>();
    options.instance = inventory.to_string();
    options.inventory_namespaces = vec![inventory.to_string()];
    options.providers = providers;
    options.identity = MemberIdentity::new(
        inventory,
        &format!("ib-{inventory}"),
        "sink",
        SveltosSink::default_member_rules(),
    );
    options.exec_timeout = Duration::from_secs(5);
    options.member_timeout = Duration::from_secs(5);
    options.max_backoff = Duration::from_secs(5);
    options.cleanup_timeout = Duration::from_secs(60);
    options
}

// ---- fixtures ----------------------------------------------------------------------------------

async fn hub_ready(hub: &ControlPlane) -> Client {
    let client = hub.client().await.unwrap();
    static CRDS: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    CRDS.get_or_init(|| async {
        install_crd(&client, adapters::crd::cluster_profile_crd())
            .await
            .unwrap();
        install_crds(
            &client,
            &[ForeignCrd::SveltosCluster, ForeignCrd::ManagedCluster],
        )
        .await
        .unwrap();
    })
    .await;
    client
}

/// A namespace of its own for one test (short: it names a sink instance and member objects).
async fn namespace(hub: &Client, prefix: &str) -> String {
    harness::test_namespace(hub, prefix).await.unwrap()
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(str::to_string),
        ..ObjectMeta::default()
    }
}

fn labelled(name: &str, namespace: Option<&str>, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        labels: Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..meta(name, namespace)
    }
}

fn profiles(hub: &Client, namespace: &str) -> Api<ClusterProfile> {
    Api::namespaced(hub.clone(), namespace)
}

fn sveltos_clusters(hub: &Client, namespace: &str) -> Api<SveltosCluster> {
    Api::namespaced(hub.clone(), namespace)
}

/// An access provider named `name` advertising `server` (with `ca_pem`, if any) and extensions.
fn provider(
    name: &str,
    server: &str,
    ca_pem: Option<&str>,
    extensions: Vec<(&str, Value)>,
) -> AccessProvider {
    AccessProvider {
        name: name.into(),
        cluster: Some(Cluster {
            server: server.into(),
            certificate_authority_data: ca_pem.map(|ca| BASE64.encode(ca)),
            extensions: extensions
                .into_iter()
                .map(|(name, extension)| NamedExtension {
                    name: name.into(),
                    extension,
                })
                .collect(),
            ..Cluster::default()
        }),
    }
}

/// An access provider reaching `member` as the member itself advertises it (server and CA),
/// with the exec extension `config`.
fn provider_to(name: &str, member: &ControlPlane, config: Value) -> AccessProvider {
    provider(
        name,
        &member.server(),
        Some(member.ca_pem()),
        vec![(EXTENSION_EXEC, config)],
    )
}

/// Create a profile as a cluster manager would (spec, labels, then status): its
/// `x-k8s.io/cluster-manager` label is `label_manager`, its `spec.clusterManager.name` is
/// `spec_manager`.
async fn create_profile_as(
    hub: &Client,
    namespace: &str,
    name: &str,
    label_manager: &str,
    spec_manager: &str,
    labels: &[(&str, &str)],
    providers: Vec<AccessProvider>,
) -> ClusterProfile {
    let api = profiles(hub, namespace);
    let mut all_labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all_labels.insert(LABEL_CLUSTER_MANAGER.into(), label_manager.into());
    let profile = ClusterProfile {
        metadata: ObjectMeta {
            labels: Some(all_labels),
            ..meta(name, Some(namespace))
        },
        spec: ClusterProfileSpec {
            display_name: None,
            cluster_manager: ClusterManager {
                name: spec_manager.into(),
            },
        },
        status: None,
    };
    api.create(&PostParams::default(), &profile).await.unwrap();
    set_providers(hub, namespace, name, providers).await
}

/// A profile whose label and spec agree on `manager`.
async fn create_profile(
    hub: &Client,
    namespace: &str,
    name: &str,
    manager: &str,
    providers: Vec<AccessProvider>,
) -> ClusterProfile {
    create_profile_as(hub, namespace, name, manager, manager, &[], providers).await
}

async fn set_providers(
    hub: &Client,
    namespace: &str,
    name: &str,
    providers: Vec<AccessProvider>,
) -> ClusterProfile {
    profiles(hub, namespace)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"conditions": [], "accessProviders": providers, "properties": []}}),
            ),
        )
        .await
        .unwrap()
}

/// A Secret with one key, of `type_` with `labels`.
async fn secret(
    hub: &Client,
    namespace: &str,
    name: &str,
    type_: Option<&str>,
    labels: &[(&str, &str)],
    key: &str,
    value: &str,
) {
    Api::<Secret>::namespaced(hub.clone(), namespace)
        .create(
            &PostParams::default(),
            &Secret {
                metadata: labelled(name, Some(namespace), labels),
                type_: type_.map(str::to_string),
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

/// A kubeconfig Secret exactly as Cluster API writes it (type, cluster-name label, key `value`).
async fn capi_secret(hub: &Client, namespace: &str, name: &str, kubeconfig: &str) {
    hub_secret(hub, namespace, name, "value", kubeconfig).await;
}

/// A cluster-scoped OCM ManagedCluster named `name` whose recorded client config is `url`/`ca`.
async fn managed_cluster(hub: &Client, name: &str, url: &str, ca_pem: &str) {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cluster.open-cluster-management.io", "v1", "ManagedCluster"),
        "managedclusters",
    );
    let api: Api<DynamicObject> = Api::all_with(hub.clone(), &resource);
    let object = json!({
        "apiVersion": "cluster.open-cluster-management.io/v1",
        "kind": "ManagedCluster",
        "metadata": {"name": name},
        "spec": {
            "hubAcceptsClient": true,
            "managedClusterClientConfigs": [{"url": url, "caBundle": BASE64.encode(ca_pem)}],
        },
    });
    api.patch(
        name,
        &PatchParams::apply("test-admin"),
        &Patch::Apply(&object),
    )
    .await
    .unwrap();
}

/// Wait for the profile's Secret and return its kubeconfig text.
async fn published_kubeconfig(hub: &Client, namespace: &str, profile: &str) -> String {
    let secrets: Api<Secret> = Api::namespaced(hub.clone(), namespace);
    let name = format!("{profile}-sveltos-kubeconfig");
    wait_for(Duration::from_secs(90), &format!("Secret {name}"), || {
        let secrets = secrets.clone();
        let name = name.clone();
        async move {
            Ok(secrets
                .get_opt(&name)
                .await?
                .and_then(|s| s.data)
                .and_then(|d| d.get("kubeconfig").cloned())
                .map(|b| String::from_utf8(b.0).unwrap()))
        }
    })
    .await
    .unwrap()
}

fn token_of(kubeconfig: &str) -> String {
    let doc: Value = serde_saphyr::from_str(kubeconfig).unwrap();
    doc["users"][0]["user"]["token"]
        .as_str()
        .unwrap()
        .to_string()
}

fn server_of(kubeconfig: &str) -> String {
    let doc: Value = serde_saphyr::from_str(kubeconfig).unwrap();
    doc["clusters"][0]["cluster"]["server"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn wait_event(hub: &Client, namespace: &str, name: &str, reason: &str) -> String {
    wait_for(
        Duration::from_secs(90),
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

/// The profile got Event `reason` whose note says `says`, and its category was counted.
async fn assert_refused(
    hub: &Client,
    running: &RunningSink,
    namespace: &str,
    profile: &str,
    (reason, category): (&str, &str),
    says: &str,
) -> String {
    let note = wait_event(hub, namespace, profile, reason).await;
    assert!(
        note.contains(says),
        "{profile}: the {reason} Event should say {says:?}: {note}"
    );
    running
        .wait_metric(
            "inventory_bridge_problems_total",
            &[("category", category)],
            1.0,
        )
        .await;
    note
}

/// Nothing was published for `profile`: no credential Secret, no SveltosCluster, and no
/// Registered Event.
async fn assert_nothing_published(hub: &Client, namespace: &str, profile: &str) {
    assert!(
        Api::<Secret>::namespaced(hub.clone(), namespace)
            .get_opt(&format!("{profile}-sveltos-kubeconfig"))
            .await
            .unwrap()
            .is_none(),
        "{profile}: a credential Secret was published"
    );
    assert!(
        sveltos_clusters(hub, namespace)
            .get_opt(profile)
            .await
            .unwrap()
            .is_none(),
        "{profile}: a SveltosCluster was published"
    );
    let events = events_about(hub, namespace, profile).await;
    assert!(
        !events.iter().any(|(reason, _)| reason == "Registered"),
        "{profile}: {events:?}"
    );
}

/// None of this instance's hub objects exist in `namespace`.
async fn assert_no_hub_objects_of(hub: &Client, namespace: &str, instance: &str) {
    let selector = format!("inventory-bridge.io/instance={instance}");
    let secrets = Api::<Secret>::namespaced(hub.clone(), namespace)
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap();
    assert!(secrets.items.is_empty(), "Secrets were published");
    let clusters = sveltos_clusters(hub, namespace)
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap();
    assert!(clusters.items.is_empty(), "SveltosClusters were published");
}

/// Nothing of `identity` exists on `member`: no token was ever minted there for it.
async fn assert_no_identity(member: &ControlPlane, identity: &MemberIdentity) {
    let admin = member.client().await.unwrap();
    assert!(
        Api::<Namespace>::all(admin.clone())
            .get_opt(&identity.namespace)
            .await
            .unwrap()
            .is_none(),
        "the identity's namespace was created on {}",
        member.name()
    );
    assert!(
        Api::<ClusterRoleBinding>::all(admin)
            .get_opt(&identity.cluster_role_binding)
            .await
            .unwrap()
            .is_none(),
        "the identity's binding was created on {}",
        member.name()
    );
}

fn has_our_finalizer(profile: &ClusterProfile, instance: &str) -> bool {
    profile
        .metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.contains(&format!("inventory-bridge.io/{instance}-cleanup")))
}

/// A TCP listener on loopback that counts every connection it accepts: a stand-in for "a server
/// of the attacker's choice".
struct Trap {
    port: u16,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Trap {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                eprintln!("the trap accepted a connection from {peer}");
                drop(stream);
            }
        });
        Self {
            port,
            connections,
            task,
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Trap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A test exec plugin: a shell script in a temp dir.
fn plugin(name: &str, body: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ib-trust-plugins-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    });
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn exec_entry(name: &str, command: &Path, env: &[(&str, &str)], env_policy: &str) -> Value {
    json!({
        "name": name,
        "execConfig": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": command,
            "env": env.iter().map(|(n, v)| json!({"name": n, "value": v})).collect::<Vec<_>>(),
            "provideClusterInfo": true,
        },
        "profileSourcedEnvVarsPolicy": env_policy,
        "clusterManagers": ["*"],
    })
}

/// Plugin body printing an ExecCredential with the token in `$TOKEN_FILE`.
const PRINT_TOKEN: &str = r#"printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"%s"}}' "$(cat "$TOKEN_FILE")""#;

// ---- attack 1: read any hub Secret through the sink ---------------------------------------------

/// Attack 1a. A profile in a namespace the sink does not serve, pointing at a real Cluster API
/// admin kubeconfig Secret in another namespace, is never touched: no finalizer, no Secret or
/// SveltosCluster, no Event — although the very same reference registers from the served
/// inventory (the operator allowed that Secret namespace), so only the namespace refuses it.
#[tokio::test]
async fn a_profile_outside_the_served_inventories_is_never_touched() {
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let m1 = &fleet.members[0];
    let inventory = namespace(&hub, "tb-served").await;
    let tenant = namespace(&hub, "tb-tenant").await;
    let capi = namespace(&hub, "tb-capi").await;
    capi_secret(&hub, &capi, "prod-kubeconfig", &m1.admin_kubeconfig_yaml()).await;
    let mut opts = options(&inventory, ProviderFile::default());
    opts.extra_secret_namespaces = vec![capi.clone()];
    let instance = opts.instance.clone();
    let identity = opts.identity.clone();
    let running = start_sink(&hub, opts).await;

    let reference = || {
        vec![provider_to(
            "cluster-api",
            m1,
            json!({"name": "prod-kubeconfig", "key": "value", "namespace": capi}),
        )]
    };
    create_profile(&hub, &tenant, "steal", CAPI, reference()).await;
    // The control: the same reference from the served inventory registers.
    create_profile(&hub, &inventory, "control", CAPI, reference()).await;
    let kubeconfig = published_kubeconfig(&hub, &inventory, "control").await;
    let client = harness::controlplane::client_from_kubeconfig_yaml(&kubeconfig)
        .await
        .unwrap();
    assert_eq!(whoami(&client).await.unwrap(), identity.username());

    // The sink is running and has registered a profile since the tenant's was created; give it
    // a few more seconds to misbehave.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let steal = profiles(&hub, &tenant).get("steal").await.unwrap();
    assert!(
        steal.metadata.finalizers.unwrap_or_default().is_empty(),
        "the unserved profile got a finalizer"
    );
    assert_nothing_published(&hub, &tenant, "steal").await;
    assert_no_hub_objects_of(&hub, &tenant, &instance).await;
    assert!(
        Api::<Event>::namespaced(hub.clone(), &tenant)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "the sink reported on a profile it does not serve"
    );
    running
        .wait_metric(
            "inventory_bridge_sink_registrations",
            &[("state", "registered")],
            1.0,
        )
        .await;
    assert_eq!(
        running
            .metric("inventory_bridge_sink_registrations", &[])
            .await,
        1.0,
        "the sink counts only the served profile"
    );
    let mut secrets = admin_key_material(m1);
    secrets.push(token_of(&kubeconfig));
    assert_no_secret_leaked(&hub, &[&inventory, &tenant], &secrets).await;
}

/// Attacks 1b-1d. Inside a served inventory a profile names Secrets the operator did not allow
/// for its provider: a real Cluster API kubeconfig in another namespace, a kubeconfig Secret
/// without the Cluster API marks, a token Secret without the managed-serviceaccount label, and a
/// token Secret in a namespace no ManagedCluster vouches for. Each is refused with
/// `secret-not-allowed` (BootstrapSecretNotAllowed); nothing is published, nothing minted.
#[tokio::test]
async fn a_profile_cannot_make_the_sink_use_a_secret_it_was_not_allowed() {
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let m1 = &fleet.members[0];
    let inventory = namespace(&hub, "tb-read").await;
    let elsewhere = namespace(&hub, "tb-prod").await;
    let cluster_ns = namespace(&hub, "tb-ocm").await;
    let plain_ns = namespace(&hub, "tb-plain").await;
    let admin = m1.admin_kubeconfig_yaml();
    // 1b: a real, correctly marked CAPI kubeconfig Secret, in a namespace not allowed.
    capi_secret(&hub, &elsewhere, "prod-kubeconfig", &admin).await;
    // 1c: in the inventory, but a plain Opaque kubeconfig; and one typed but unlabelled.
    secret(&hub, &inventory, "plain", None, &[], "value", &admin).await;
    secret(
        &hub,
        &inventory,
        "typed-only",
        Some("cluster.x-k8s.io/secret"),
        &[],
        "value",
        &admin,
    )
    .await;
    // 1d: a real bootstrap token in a ManagedCluster's namespace, without the addon's label;
    // and a labelled token in a namespace that is no ManagedCluster's.
    let boot = bootstrap_token(m1, &format!("boot-{inventory}")).await;
    managed_cluster(&hub, &cluster_ns, &m1.server(), m1.ca_pem()).await;
    secret(&hub, &cluster_ns, "unlabelled", None, &[], "token", &boot).await;
    secret(
        &hub,
        &plain_ns,
        "labelled",
        None,
        &[(MSA_LABEL, "true")],
        "token",
        &boot,
    )
    .await;
    let opts = options(&inventory, ProviderFile::default());
    let identity = opts.identity.clone();
    let running = start_sink(&hub, opts).await;

    create_profile(
        &hub,
        &inventory,
        "other-namespace",
        CAPI,
        vec![provider_to(
            "cluster-api",
            m1,
            json!({"name": "prod-kubeconfig", "key": "value", "namespace": elsewhere}),
        )],
    )
    .await;
    create_profile(
        &hub,
        &inventory,
        "unmarked",
        CAPI,
        vec![provider_to(
            "cluster-api",
            m1,
            json!({"name": "plain", "key": "value"}),
        )],
    )
    .await;
    create_profile(
        &hub,
        &inventory,
        "typed-only",
        CAPI,
        vec![provider_to(
            "kubeconfig-secret",
            m1,
            json!({"name": "typed-only", "key": "value"}),
        )],
    )
    .await;
    create_profile(
        &hub,
        &inventory,
        "no-msa-label",
        OCM,
        vec![provider_to(
            "open-cluster-management",
            m1,
            json!({"name": "unlabelled", "namespace": cluster_ns}),
        )],
    )
    .await;
    create_profile(
        &hub,
        &inventory,
        "no-managed-cluster",
        OCM,
        vec![provider_to(
            "token-secret",
            m1,
            json!({"name": "labelled", "namespace": plain_ns}),
        )],
    )
    .await;

    let refused = ("BootstrapSecretNotAllowed", "secret-not-allowed");
    for (profile, says) in [
        ("other-namespace", "is not allowed for this provider"),
        ("unmarked", "is not a Cluster API kubeconfig Secret"),
        ("typed-only", "is not a Cluster API kubeconfig Secret"),
        (
            "no-msa-label",
            "is not a managed-serviceaccount token Secret",
        ),
        (
            "no-managed-cluster",
            "is not the hub namespace of a ManagedCluster",
        ),
    ] {
        let note = assert_refused(&hub, &running, &inventory, profile, refused, says).await;
        assert!(
            note.contains("nothing was read") || note.contains("not used"),
            "{note}"
        );
    }
    running
        .wait_metric(
            "inventory_bridge_problems_total",
            &[("category", "secret-not-allowed")],
            5.0,
        )
        .await;
    running
        .wait_metric(
            "inventory_bridge_sink_mints_total",
            &[("result", "error"), ("category", "secret-not-allowed")],
            5.0,
        )
        .await;
    for profile in [
        "other-namespace",
        "unmarked",
        "typed-only",
        "no-msa-label",
        "no-managed-cluster",
    ] {
        assert_nothing_published(&hub, &inventory, profile).await;
    }
    assert_no_hub_objects_of(&hub, &inventory, &identity.instance).await;
    assert_no_identity(m1, &identity).await;
    assert_eq!(
        running
            .metric(
                "inventory_bridge_sink_mints_total",
                &[("result", "success")]
            )
            .await,
        0.0
    );
    let mut secrets = admin_key_material(m1);
    secrets.push(boot);
    assert_no_secret_leaked(&hub, &[&inventory], &secrets).await;
}

// ---- attack 2: send a bootstrap credential to a server of one's choice ---------------------------

/// Attack 2. Profiles of a legitimate inventory reference valid bootstrap credentials of member 1
/// (a Cluster API kubeconfig Secret; an OCM token Secret whose ManagedCluster records member 1's
/// URL) but advertise a server of the attacker's (a loopback listener counting connections), or
/// member 1's server with another CA. Each gets `endpoint-mismatch` (EndpointMismatch), is
/// retried several times, and the listener never sees a single connection.
#[tokio::test]
async fn a_bootstrap_credential_is_never_sent_to_a_server_the_profile_chooses() {
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let (m1, m2) = (&fleet.members[0], &fleet.members[1]);
    let inventory = namespace(&hub, "tb-send").await;
    let cluster_ns = namespace(&hub, "tb-mc").await;
    let trap = Trap::start().await;
    capi_secret(
        &hub,
        &inventory,
        "m1-kubeconfig",
        &m1.admin_kubeconfig_yaml(),
    )
    .await;
    let boot = bootstrap_token(m1, &format!("boot-{inventory}")).await;
    managed_cluster(&hub, &cluster_ns, &m1.server(), m1.ca_pem()).await;
    secret(
        &hub,
        &cluster_ns,
        "m1-token",
        None,
        &[(MSA_LABEL, "true")],
        "token",
        &boot,
    )
    .await;
    let opts = options(&inventory, ProviderFile::default());
    let identity = opts.identity.clone();
    let running = start_sink(&hub, opts).await;

    let kubeconfig_ref = json!({"name": "m1-kubeconfig", "key": "value"});
    let token_ref = json!({"name": "m1-token", "namespace": cluster_ns});
    create_profile(
        &hub,
        &inventory,
        "kubeconfig-to-trap",
        CAPI,
        vec![provider(
            "cluster-api",
            &trap.url(),
            Some(m1.ca_pem()),
            vec![(EXTENSION_EXEC, kubeconfig_ref.clone())],
        )],
    )
    .await;
    create_profile(
        &hub,
        &inventory,
        "token-to-trap",
        OCM,
        vec![provider(
            "open-cluster-management",
            &trap.url(),
            Some(m1.ca_pem()),
            vec![(EXTENSION_EXEC, token_ref.clone())],
        )],
    )
    .await;
    // The right server, but a CA of the attacker's choice (here: member 2's).
    create_profile(
        &hub,
        &inventory,
        "kubeconfig-other-ca",
        CAPI,
        vec![provider(
            "cluster-api",
            &m1.server(),
            Some(m2.ca_pem()),
            vec![(EXTENSION_EXEC, kubeconfig_ref.clone())],
        )],
    )
    .await;
    create_profile(
        &hub,
        &inventory,
        "token-other-ca",
        OCM,
        vec![provider(
            "open-cluster-management",
            &m1.server(),
            Some(m2.ca_pem()),
            vec![(EXTENSION_EXEC, token_ref.clone())],
        )],
    )
    .await;

    let mismatch = ("EndpointMismatch", "endpoint-mismatch");
    let to_trap = format!("the profile names server \"{}\"", trap.url());
    for (profile, says) in [
        ("kubeconfig-to-trap", to_trap.as_str()),
        ("token-to-trap", to_trap.as_str()),
        (
            "kubeconfig-other-ca",
            "certificate-authority-data differs from the credential's",
        ),
        (
            "token-other-ca",
            "certificate-authority-data differs from the credential's",
        ),
    ] {
        let note = assert_refused(&hub, &running, &inventory, profile, mismatch, says).await;
        assert!(note.contains("nothing was sent"), "{note}");
    }
    // Several retries of each (backoff 2 s, 4 s, then 5 s; about four attempts per profile):
    // the refusal is not a one-off race.
    let started = Instant::now();
    running
        .wait_metric(
            "inventory_bridge_problems_total",
            &[("category", "endpoint-mismatch")],
            16.0,
        )
        .await;
    running
        .wait_metric(
            "inventory_bridge_sink_mints_total",
            &[("result", "error"), ("category", "endpoint-mismatch")],
            16.0,
        )
        .await;
    eprintln!(
        "{} endpoint-mismatch refusals after {:?} more",
        running.problems("endpoint-mismatch").await,
        started.elapsed()
    );
    assert_eq!(
        trap.connections(),
        0,
        "a bootstrap credential was sent to the profile's server"
    );
    for profile in [
        "kubeconfig-to-trap",
        "token-to-trap",
        "kubeconfig-other-ca",
        "token-other-ca",
    ] {
        assert_nothing_published(&hub, &inventory, profile).await;
    }
    assert_no_hub_objects_of(&hub, &inventory, &identity.instance).await;
    assert_no_identity(m1, &identity).await;

    // The same references with the credential's own endpoint register (the refusals above were
    // about the endpoint only), and what is published names member 1.
    create_profile(
        &hub,
        &inventory,
        "kubeconfig-right",
        CAPI,
        vec![provider_to("cluster-api", m1, kubeconfig_ref)],
    )
    .await;
    create_profile(
        &hub,
        &inventory,
        "token-right",
        OCM,
        vec![provider_to("open-cluster-management", m1, token_ref)],
    )
    .await;
    let mut secrets = admin_key_material(m1);
    secrets.push(boot);
    for profile in ["kubeconfig-right", "token-right"] {
        let kubeconfig = published_kubeconfig(&hub, &inventory, profile).await;
        assert_eq!(server_of(&kubeconfig), m1.server(), "{profile}");
        let client = harness::controlplane::client_from_kubeconfig_yaml(&kubeconfig)
            .await
            .unwrap();
        assert_eq!(whoami(&client).await.unwrap(), identity.username());
        secrets.push(token_of(&kubeconfig));
    }
    assert_eq!(trap.connections(), 0);
    assert_no_secret_leaked(&hub, &[&inventory, &cluster_ns], &secrets).await;
}

// ---- attack 3: be served from any namespace / by any manager -------------------------------------

/// Attack 3. A sink started without naming its inventories is refused at start (nothing watches
/// every namespace by default). A profile whose `x-k8s.io/cluster-manager` label and
/// `spec.clusterManager.name` disagree, or whose manager the chosen provider entry does not
/// trust, gets `untrusted-manager` (UntrustedClusterManager): no finalizer, nothing published,
/// nothing minted — while a trusted profile beside them registers.
#[tokio::test]
async fn a_sink_serves_only_named_inventories_and_trusted_cluster_managers() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        sink: adapters::sink::SinkArgs,
    }
    let resolve = |argv: &[&str]| {
        let cli = Cli::try_parse_from(std::iter::once("sveltos-sink").chain(argv.iter().copied()))
            .unwrap();
        cli.sink.resolve::<SveltosSink>(None)
    };
    let err = resolve(&[]).unwrap_err().to_string();
    assert!(
        err.contains("--inventory-namespace") && err.contains("--all-namespaces"),
        "{err}"
    );
    let err = resolve(&["--inventory-namespace", "fleet", "--all-namespaces"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("exclude each other"), "{err}");
    let err = resolve(&["--inventory-namespace", "Not A Namespace"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not a namespace name"), "{err}");
    let named = resolve(&["--inventory-namespace", "fleet-a,fleet-b"]).unwrap();
    assert_eq!(named.inventory_namespaces, ["fleet-a", "fleet-b"]);
    assert!(!named.all_namespaces);
    let everything = resolve(&["--all-namespaces"]).unwrap();
    assert!(everything.all_namespaces && everything.inventory_namespaces.is_empty());

    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let m1 = &fleet.members[0];
    // The sink's in-process entry point refuses to start as its binary would.
    let refused = harness::run_sveltos_sink(hub.clone(), &[]).await;
    let err = refused.err().expect("a sink without inventories started");
    assert!(err.to_string().contains("--inventory-namespace"), "{err}");

    let inventory = namespace(&hub, "tb-trust").await;
    capi_secret(
        &hub,
        &inventory,
        "m1-kubeconfig",
        &m1.admin_kubeconfig_yaml(),
    )
    .await;
    let opts = options(&inventory, ProviderFile::default());
    let instance = opts.instance.clone();
    let identity = opts.identity.clone();
    let running = start_sink(&hub, opts).await;
    let reference = || {
        vec![provider_to(
            "cluster-api",
            m1,
            json!({"name": "m1-kubeconfig", "key": "value"}),
        )]
    };
    // The label claims cluster-api; the spec says otherwise.
    create_profile_as(
        &hub,
        &inventory,
        "forged-label",
        CAPI,
        "tenant",
        &[],
        reference(),
    )
    .await;
    // The spec claims cluster-api; the label says otherwise.
    create_profile_as(
        &hub,
        &inventory,
        "forged-spec",
        "tenant",
        CAPI,
        &[],
        reference(),
    )
    .await;
    // An honest profile of a manager the cluster-api entry does not trust, also offering the
    // plain built-in names (none of which trusts "tenant" either).
    let mut offered = reference();
    offered.push(provider_to(
        "kubeconfig-secret",
        m1,
        json!({"name": "m1-kubeconfig", "key": "value"}),
    ));
    offered.push(provider_to(
        "token-secret",
        m1,
        json!({"name": "m1-kubeconfig", "key": "value"}),
    ));
    create_profile(&hub, &inventory, "tenant-manager", "tenant", offered).await;
    // No manager label at all.
    let api = profiles(&hub, &inventory);
    api.create(
        &PostParams::default(),
        &ClusterProfile {
            metadata: meta("unlabelled", Some(&inventory)),
            spec: ClusterProfileSpec {
                display_name: None,
                cluster_manager: ClusterManager { name: CAPI.into() },
            },
            status: None,
        },
    )
    .await
    .unwrap();
    set_providers(&hub, &inventory, "unlabelled", reference()).await;
    // The control: a trusted profile of the same inventory with the same reference registers.
    create_profile(&hub, &inventory, "trusted", CAPI, reference()).await;

    let untrusted = ("UntrustedClusterManager", "untrusted-manager");
    for (profile, says) in [
        ("forged-label", "must equal spec.clusterManager.name"),
        ("forged-spec", "must equal spec.clusterManager.name"),
        ("tenant-manager", "trusts cluster manager \"tenant\""),
        ("unlabelled", "must equal spec.clusterManager.name"),
    ] {
        assert_refused(&hub, &running, &inventory, profile, untrusted, says).await;
    }
    let kubeconfig = published_kubeconfig(&hub, &inventory, "trusted").await;
    running
        .wait_metric(
            "inventory_bridge_problems_total",
            &[("category", "untrusted-manager")],
            4.0,
        )
        .await;
    for profile in [
        "forged-label",
        "forged-spec",
        "tenant-manager",
        "unlabelled",
    ] {
        assert_nothing_published(&hub, &inventory, profile).await;
        let current = api.get(profile).await.unwrap();
        assert!(
            !has_our_finalizer(&current, &instance),
            "{profile} got our finalizer"
        );
    }
    assert_eq!(
        running
            .metric(
                "inventory_bridge_sink_mints_total",
                &[("category", "untrusted-manager")]
            )
            .await,
        0.0,
        "an untrusted profile is refused before any credential is looked at"
    );

    // A registered profile whose manager label is changed to an untrusted one is withdrawn:
    // its hub objects and our finalizer go, and its identity (the only registration of this
    // instance on member 1) is revoked.
    let token = token_of(&kubeconfig);
    api.patch(
        "trusted",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {LABEL_CLUSTER_MANAGER: "tenant"}}})),
    )
    .await
    .unwrap();
    wait_event(&hub, &inventory, "trusted", "UntrustedClusterManager").await;
    wait_for(
        Duration::from_secs(60),
        "the now untrusted profile withdrawn",
        || async {
            let gone = Api::<Secret>::namespaced(hub.clone(), &inventory)
                .get_opt("trusted-sveltos-kubeconfig")
                .await?
                .is_none();
            let released = !has_our_finalizer(&api.get("trusted").await?, &instance);
            Ok((gone && released).then_some(()))
        },
    )
    .await
    .unwrap();
    assert_no_hub_objects_of(&hub, &inventory, &instance).await;
    let admin = m1.client().await.unwrap();
    assert!(
        Api::<ServiceAccount>::namespaced(admin, &identity.namespace)
            .get_opt(&identity.service_account)
            .await
            .unwrap()
            .is_none(),
        "the withdrawn profile's identity was not revoked"
    );
    let mut secrets = admin_key_material(m1);
    secrets.push(token);
    assert_no_secret_leaked(&hub, &[&inventory], &secrets).await;
}

// ---- attack 4: delete another member's identity by changing the lever before deleting -----------

/// Attack 4. A profile registered on member 1 is re-pointed at member 2 (a valid Cluster API
/// Secret of member 2 in the same inventory) and deleted within the controller's 300 ms
/// debounce. Member 2 holds a ServiceAccount, ClusterRole and binding of exactly the sink's names
/// that belong to someone else (no ownership mark). Cleanup follows the record, not the profile:
/// member 1's identity is revoked (its token is rejected), member 2's objects are untouched.
#[tokio::test]
async fn changing_the_lever_before_deleting_revokes_only_the_recorded_identity() {
    lever_attack("tb-lever", Lever::DeleteInsideTheDebounce).await;
}

/// Attack 4, slowly: the re-pointed profile is reconciled before it is deleted. The sink then
/// tries member 2, meets someone else's objects of its names and reports `name-conflict`
/// (NameConflict) without writing anything there; deleting the profile afterwards still revokes
/// exactly the identity recorded on member 1.
#[tokio::test]
async fn a_repointed_profile_never_takes_over_another_members_objects() {
    lever_attack("tb-slow", Lever::ReconcileThenDelete).await;
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Lever {
    /// Status change and delete ~20 ms apart.
    DeleteInsideTheDebounce,
    /// Status change, wait for the sink to act on it (NameConflict), then delete.
    ReconcileThenDelete,
}

async fn lever_attack(prefix: &str, lever: Lever) {
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let (m1, m2) = (&fleet.members[0], &fleet.members[1]);
    let inventory = namespace(&hub, prefix).await;
    capi_secret(
        &hub,
        &inventory,
        "m1-kubeconfig",
        &m1.admin_kubeconfig_yaml(),
    )
    .await;
    capi_secret(
        &hub,
        &inventory,
        "m2-kubeconfig",
        &m2.admin_kubeconfig_yaml(),
    )
    .await;
    let opts = options(&inventory, ProviderFile::default());
    let identity = opts.identity.clone();
    let running = start_sink(&hub, opts).await;

    create_profile(
        &hub,
        &inventory,
        "lever",
        CAPI,
        vec![provider_to(
            "cluster-api",
            m1,
            json!({"name": "m1-kubeconfig", "key": "value"}),
        )],
    )
    .await;
    let kubeconfig = published_kubeconfig(&hub, &inventory, "lever").await;
    let token = token_of(&kubeconfig);
    let old = m1.token_client(&token).await.unwrap();
    assert_eq!(whoami(&old).await.unwrap(), identity.username());
    let m1_admin = m1.client().await.unwrap();
    let m1_account = Api::<ServiceAccount>::namespaced(m1_admin.clone(), &identity.namespace)
        .get(&identity.service_account)
        .await
        .unwrap();
    assert!(identity.is_marked(m1_account.metadata.labels.as_ref()));

    // Someone else's objects on member 2, of exactly the names the sink uses. The role even
    // carries inventory-bridge's managed-by label, for another instance: still not ours.
    let m2_admin = m2.client().await.unwrap();
    let theirs = [("owner", "someone-else")];
    let namespaces: Api<Namespace> = Api::all(m2_admin.clone());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: labelled(&identity.namespace, None, &theirs),
                ..Namespace::default()
            },
        )
        .await
        .unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(m2_admin.clone(), &identity.namespace);
    accounts
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: labelled(
                    &identity.service_account,
                    Some(&identity.namespace),
                    &theirs,
                ),
                ..ServiceAccount::default()
            },
        )
        .await
        .unwrap();
    let roles: Api<ClusterRole> = Api::all(m2_admin.clone());
    roles
        .create(
            &PostParams::default(),
            &ClusterRole {
                metadata: labelled(
                    &identity.cluster_role,
                    None,
                    &[
                        ("owner", "someone-else"),
                        ("app.kubernetes.io/managed-by", "inventory-bridge"),
                        ("inventory-bridge.io/instance", "someone-else"),
                    ],
                ),
                rules: Some(vec![PolicyRule {
                    api_groups: Some(vec![String::new()]),
                    resources: Some(vec!["configmaps".into()]),
                    verbs: vec!["get".into()],
                    ..PolicyRule::default()
                }]),
                ..ClusterRole::default()
            },
        )
        .await
        .unwrap();
    let bindings: Api<ClusterRoleBinding> = Api::all(m2_admin.clone());
    bindings
        .create(
            &PostParams::default(),
            &ClusterRoleBinding {
                metadata: labelled(&identity.cluster_role_binding, None, &theirs),
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "ClusterRole".into(),
                    name: identity.cluster_role.clone(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: identity.service_account.clone(),
                    namespace: Some(identity.namespace.clone()),
                    ..Subject::default()
                }]),
            },
        )
        .await
        .unwrap();
    let before = (
        namespaces.get(&identity.namespace).await.unwrap().metadata,
        accounts
            .get(&identity.service_account)
            .await
            .unwrap()
            .metadata,
        roles.get(&identity.cluster_role).await.unwrap().metadata,
        bindings
            .get(&identity.cluster_role_binding)
            .await
            .unwrap()
            .metadata,
    );

    // The lever, then the delete.
    let profiles_api = profiles(&hub, &inventory);
    let pulled = Instant::now();
    set_providers(
        &hub,
        &inventory,
        "lever",
        vec![provider_to(
            "cluster-api",
            m2,
            json!({"name": "m2-kubeconfig", "key": "value"}),
        )],
    )
    .await;
    if lever == Lever::ReconcileThenDelete {
        let note = assert_refused(
            &hub,
            &running,
            &inventory,
            "lever",
            ("NameConflict", "name-conflict"),
            "without our ownership mark",
        )
        .await;
        assert!(note.contains(&identity.service_account), "{note}");
        // Retried with backoff, never taking the objects over.
        running
            .wait_metric(
                "inventory_bridge_problems_total",
                &[("category", "name-conflict")],
                3.0,
            )
            .await;
        assert_eq!(
            published_kubeconfig(&hub, &inventory, "lever").await,
            kubeconfig,
            "the registration on member 1 stays published while member 2 is refused"
        );
    }
    profiles_api
        .delete("lever", &DeleteParams::default())
        .await
        .unwrap();
    // Inside the debounce this is normally ~20 ms: the sink never reconciles the re-pointed
    // profile before it sees the deletion (on a loaded machine it might, which is the other
    // variant; the outcome must be the same either way).
    if lever == Lever::DeleteInsideTheDebounce {
        eprintln!("status change and delete {:?} apart", pulled.elapsed());
    }

    harness::wait_object_gone(&profiles_api, "lever", Duration::from_secs(90))
        .await
        .unwrap();
    // Member 1: the recorded identity is revoked, and its token dies with the account.
    assert!(
        Api::<ServiceAccount>::namespaced(m1_admin.clone(), &identity.namespace)
            .get_opt(&identity.service_account)
            .await
            .unwrap()
            .is_none(),
        "member 1's identity survived"
    );
    assert!(
        Api::<ClusterRoleBinding>::all(m1_admin.clone())
            .get_opt(&identity.cluster_role_binding)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<ClusterRole>::all(m1_admin)
            .get_opt(&identity.cluster_role)
            .await
            .unwrap()
            .is_none()
    );
    let revoked = Instant::now();
    wait_for(
        Duration::from_secs(45),
        "the published token rejected by member 1",
        || async {
            Ok(
                matches!(whoami(&old).await, Err(kube::Error::Api(ref s)) if s.code == 401)
                    .then_some(()),
            )
        },
    )
    .await
    .unwrap();
    eprintln!(
        "the published token was rejected {:?} after the profile was gone",
        revoked.elapsed()
    );
    // Member 2: someone else's objects are exactly as they were.
    let after = (
        namespaces.get(&identity.namespace).await.unwrap().metadata,
        accounts
            .get(&identity.service_account)
            .await
            .unwrap()
            .metadata,
        roles.get(&identity.cluster_role).await.unwrap().metadata,
        bindings
            .get(&identity.cluster_role_binding)
            .await
            .unwrap()
            .metadata,
    );
    let same = |a: &ObjectMeta, b: &ObjectMeta| {
        a.uid == b.uid
            && a.labels == b.labels
            && a.annotations == b.annotations
            && a.resource_version == b.resource_version
            && a.deletion_timestamp.is_none()
    };
    assert!(same(&before.0, &after.0), "member 2's namespace changed");
    assert!(
        same(&before.1, &after.1),
        "member 2's ServiceAccount changed"
    );
    assert!(same(&before.2, &after.2), "member 2's ClusterRole changed");
    assert!(same(&before.3, &after.3), "member 2's binding changed");
    assert!(
        Api::<Secret>::namespaced(hub.clone(), &inventory)
            .get_opt("lever-sveltos-kubeconfig")
            .await
            .unwrap()
            .is_none()
    );
    assert_no_hub_objects_of(&hub, &inventory, &identity.instance).await;
    running
        .wait_metric(
            "inventory_bridge_sink_cleanups_total",
            &[("result", "complete")],
            1.0,
        )
        .await;
    let mut secrets = admin_key_material(m1);
    secrets.extend(admin_key_material(m2));
    secrets.push(token);
    assert_no_secret_leaked(&hub, &[&inventory], &secrets).await;

    // Leave member 2 as we found it.
    let _ = bindings
        .delete(&identity.cluster_role_binding, &DeleteParams::default())
        .await;
    let _ = roles
        .delete(&identity.cluster_role, &DeleteParams::default())
        .await;
    let _ = accounts
        .delete(&identity.service_account, &DeleteParams::default())
        .await;
}

// ---- attack 5: member-id suppression by an untrusted profile -------------------------------------

/// Attack 5. An untrusted profile (manager `tenant`) created first claims the member id of a
/// trusted profile created after it. Duplicates are decided among trusted profiles only: the
/// trusted one registers and gets no DuplicateMemberId Event; the untrusted one is refused.
#[tokio::test]
async fn an_untrusted_profile_cannot_suppress_a_trusted_one_by_claiming_its_member_id() {
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let m1 = &fleet.members[0];
    let inventory = namespace(&hub, "tb-dup").await;
    capi_secret(
        &hub,
        &inventory,
        "m1-kubeconfig",
        &m1.admin_kubeconfig_yaml(),
    )
    .await;
    let opts = options(&inventory, ProviderFile::default());
    let identity = opts.identity.clone();
    let running = start_sink(&hub, opts).await;
    let reference = || {
        vec![provider_to(
            "cluster-api",
            m1,
            json!({"name": "m1-kubeconfig", "key": "value"}),
        )]
    };
    let id = [(LABEL_INVENTORY_MEMBER_ID, "member-one")];
    let squatter = create_profile_as(
        &hub,
        &inventory,
        "squatter",
        "tenant",
        "tenant",
        &id,
        reference(),
    )
    .await;
    wait_event(&hub, &inventory, "squatter", "UntrustedClusterManager").await;
    // creationTimestamp has a 1 s resolution: make the squatter strictly older.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let real = create_profile_as(&hub, &inventory, "real", CAPI, CAPI, &id, reference()).await;
    assert!(
        squatter.metadata.creation_timestamp.unwrap().0
            < real.metadata.creation_timestamp.unwrap().0,
        "test premise: the squatter is older"
    );

    let kubeconfig = published_kubeconfig(&hub, &inventory, "real").await;
    let client = harness::controlplane::client_from_kubeconfig_yaml(&kubeconfig)
        .await
        .unwrap();
    assert_eq!(whoami(&client).await.unwrap(), identity.username());
    wait_event(&hub, &inventory, "real", "Registered").await;
    // It stays registered across the re-evaluations that follow.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let events = events_about(&hub, &inventory, "real").await;
    assert!(
        !events
            .iter()
            .any(|(reason, _)| reason == "DuplicateMemberId" || reason == "AmbiguousMemberId"),
        "{events:?}"
    );
    assert!(
        sveltos_clusters(&hub, &inventory)
            .get_opt("real")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        running
            .metric(
                "inventory_bridge_sink_registrations",
                &[("state", "suppressed")]
            )
            .await,
        0.0
    );
    assert_eq!(running.problems("duplicate").await, 0.0);
    assert_nothing_published(&hub, &inventory, "squatter").await;
    let events = events_about(&hub, &inventory, "squatter").await;
    assert!(
        !events
            .iter()
            .any(|(reason, _)| reason == "DuplicateMemberId"),
        "{events:?}"
    );
    let mut secrets = admin_key_material(m1);
    secrets.push(token_of(&kubeconfig));
    assert_no_secret_leaked(&hub, &[&inventory], &secrets).await;
}

// ---- attack 6: the exec plugin's environment -----------------------------------------------------

/// Attack 6. An exec plugin gets a minimal environment — PATH, the provider file's variables and
/// KUBERNETES_EXEC_INFO — never the controller's (here: cargo's variables of the test process),
/// so a plugin that refuses to run with them registers. A profile setting a loader, network or
/// config variable (`LD_PRELOAD`, `PATH`, `HTTPS_PROXY`, `KUBECONFIG`, `HOME`) under the
/// `Replace` policy is refused with `exec-plugin` and the plugin never runs, while a harmless
/// variable under the same entry is passed on.
#[tokio::test]
async fn exec_plugins_get_a_minimal_environment_and_profiles_cannot_set_loader_variables() {
    let controller_var = ["CARGO_PKG_NAME", "CARGO_MANIFEST_DIR"]
        .into_iter()
        .find(|name| std::env::var(name).is_ok_and(|v| !v.is_empty()))
        .expect(
            "test premise: cargo sets CARGO_PKG_NAME / CARGO_MANIFEST_DIR for the test process",
        );
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let m1 = &fleet.members[0];
    let inventory = namespace(&hub, "tb-exec").await;
    let boot = bootstrap_token(m1, &format!("boot-{inventory}")).await;
    let work = std::env::temp_dir().join(format!("ib-trust-{inventory}"));
    std::fs::create_dir_all(&work).unwrap();
    let token_file = work.join("token");
    std::fs::write(&token_file, &boot).unwrap();
    let env_dump = work.join("env");
    let markers = work.join("ran");
    std::fs::create_dir_all(&markers).unwrap();

    // Refuses to run if it sees the controller's environment; records the names it saw.
    let minimal = plugin(
        &format!("minimal-{inventory}"),
        &format!(
            r#"env | cut -d= -f1 | sort > "$ENV_DUMP"
for name in CARGO_PKG_NAME CARGO_MANIFEST_DIR {controller_var}; do
  if env | grep -q "^$name="; then echo "the controller's environment reached me: $name" >&2; exit 5; fi
done
{PRINT_TOKEN}"#
        ),
    );
    // Writes a marker named after the profile's TAG as soon as it runs.
    let marking = plugin(
        &format!("marking-{inventory}"),
        &format!("touch \"$MARKERS/ran-$TAG\"\n{PRINT_TOKEN}"),
    );
    let token_path = token_file.to_str().unwrap();
    let providers: ProviderFile = serde_json::from_value(json!({"providers": [
        exec_entry("minimal-exec", &minimal, &[
            ("TOKEN_FILE", token_path),
            ("ENV_DUMP", env_dump.to_str().unwrap()),
        ], "Ignore"),
        exec_entry("marking-exec", &marking, &[
            ("TOKEN_FILE", token_path),
            ("MARKERS", markers.to_str().unwrap()),
            ("TAG", "unset"),
        ], "Replace"),
    ]}))
    .unwrap();
    let opts = options(&inventory, providers);
    let identity = opts.identity.clone();
    let running = start_sink(&hub, opts).await;

    let exec_provider = |name: &str, envs: Value| {
        provider(
            name,
            &m1.server(),
            Some(m1.ca_pem()),
            vec![
                (EXTENSION_EXEC, json!({"cluster": "member-1"})),
                (EXTENSION_EXEC_ADDITIONAL_ENVS, envs),
            ],
        )
    };
    create_profile(
        &hub,
        &inventory,
        "minimal",
        "tenant",
        vec![exec_provider("minimal-exec", json!({}))],
    )
    .await;
    let kubeconfig = published_kubeconfig(&hub, &inventory, "minimal").await;
    let client = harness::controlplane::client_from_kubeconfig_yaml(&kubeconfig)
        .await
        .unwrap();
    assert_eq!(whoami(&client).await.unwrap(), identity.username());
    let seen: Vec<String> = std::fs::read_to_string(&env_dump)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let allowed = [
        "PATH",
        "TOKEN_FILE",
        "ENV_DUMP",
        "KUBERNETES_EXEC_INFO",
        // What /bin/sh itself sets.
        "PWD",
        "OLDPWD",
        "SHLVL",
        "_",
    ];
    let unexpected: Vec<&String> = seen
        .iter()
        .filter(|name| !allowed.contains(&name.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "the plugin saw more than a minimal environment: {unexpected:?} (all: {seen:?})"
    );
    assert!(seen.iter().any(|n| n == "KUBERNETES_EXEC_INFO"), "{seen:?}");

    // The same entry passes a harmless profile variable on (Replace policy)...
    create_profile(
        &hub,
        &inventory,
        "harmless",
        "tenant",
        vec![exec_provider("marking-exec", json!({"TAG": "harmless"}))],
    )
    .await;
    // ...and refuses every loader, network or config variable before running anything.
    let denied = [
        ("ld-preload", "LD_PRELOAD", "/tmp/evil.so"),
        ("path", "PATH", "/tmp/evil-bin"),
        ("https-proxy", "HTTPS_PROXY", "http://127.0.0.1:1"),
        ("kubeconfig", "KUBECONFIG", "/tmp/evil-kubeconfig"),
        ("home", "HOME", "/tmp/evil-home"),
    ];
    for (profile, variable, value) in denied {
        create_profile(
            &hub,
            &inventory,
            profile,
            "tenant",
            vec![exec_provider(
                "marking-exec",
                json!({ "TAG": profile, variable: value }),
            )],
        )
        .await;
    }
    published_kubeconfig(&hub, &inventory, "harmless").await;
    assert!(
        markers.join("ran-harmless").exists(),
        "the marker mechanism works"
    );
    for (profile, variable, _) in denied {
        assert_refused(
            &hub,
            &running,
            &inventory,
            profile,
            ("ExecPluginFailed", "exec-plugin"),
            &format!("may not set \"{variable}\""),
        )
        .await;
    }
    // Retried (backoff) without ever running the plugin.
    running
        .wait_metric(
            "inventory_bridge_problems_total",
            &[("category", "exec-plugin")],
            2.0 * denied.len() as f64,
        )
        .await;
    for (profile, _, _) in denied {
        assert!(
            !markers.join(format!("ran-{profile}")).exists(),
            "the plugin ran for {profile}"
        );
        assert_nothing_published(&hub, &inventory, profile).await;
    }
    let mut secrets = vec![boot, token_of(&kubeconfig)];
    secrets.push(token_of(
        &published_kubeconfig(&hub, &inventory, "harmless").await,
    ));
    assert_no_secret_leaked(&hub, &[&inventory], &secrets).await;
    let _ = std::fs::remove_dir_all(&work);
}
