//! sveltos-sink end to end on real control planes: a hub and two members (plus an owned member
//! that a test stops). The engine runs in-process with the real runtime; everything it talks to is
//! a real kube-apiserver. Every log line of the process is captured and searched for secrets.

// Integration test file: helpers panic on a broken fixture, which fails the test as it should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use adapters::access::ProviderFile;
use adapters::member::MemberIdentity;
use adapters::profile::{
    AccessProvider, Cluster, ClusterManager, ClusterProfile, ClusterProfileSpec, EXTENSION_EXEC,
    EXTENSION_EXEC_ADDITIONAL_ENVS, LABEL_CLUSTER_MANAGER, LABEL_INVENTORY_MEMBER_ID,
    NamedExtension,
};
use adapters::runtime::{Metrics, Runtime};
use adapters::sink::{RenewalPolicy, Sink, SinkMetrics, SinkOptions};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use harness::sinks::{bootstrap_token, hub_secret, wait_event, whoami};
use harness::{
    ControlPlane, ControlPlaneOptions, ForeignCrd, install_crd, install_crds, shared_fleet,
    test_namespace, wait_for,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Client;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use sveltos_sink::{SveltosCluster, SveltosSink};
use tokio_util::sync::CancellationToken;

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

/// No captured log line, no Event note and no Secret annotation in `namespace` contains any of
/// `secrets`.
async fn assert_no_secret_leaked(hub: &Client, namespace: &str, secrets: &[String]) {
    let text = String::from_utf8_lossy(&logs().0.lock().unwrap()).to_string();
    assert!(text.len() > 1000, "the log capture is not working");
    let events: Api<Event> = Api::namespaced(hub.clone(), namespace);
    let notes: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.note)
        .collect();
    // Annotations of every Secret (ours carry the registration record, which never holds a token).
    let annotations: Vec<String> = Api::<Secret>::namespaced(hub.clone(), namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .flat_map(|s| s.metadata.annotations.unwrap_or_default().into_values())
        .collect();
    for secret in secrets {
        assert!(secret.len() >= 16, "not a meaningful secret to search for");
        for annotation in &annotations {
            assert!(
                !annotation.contains(secret.as_str()),
                "a secret appears in a Secret annotation"
            );
        }
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

    /// The value of the metric `name` whose labels include all of `labels`.
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
            Duration::from_secs(60),
            &format!("{name} {labels:?} >= {at_least}"),
            || async { Ok((self.metric(name, labels).await >= at_least).then_some(())) },
        )
        .await
        .unwrap();
    }
}

async fn start_sink(hub: &Client, options: SinkOptions, sink: SveltosSink) -> RunningSink {
    logs();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let mut metrics = Metrics::new(SveltosSink::NAME);
    let sink_metrics = SinkMetrics::register(metrics.registry_mut());
    let args = harness::in_process_runtime_args("test", "debug");
    let runtime = Runtime::new(SveltosSink::NAME, args, hub.clone(), metrics);
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

/// The cluster manager of every test profile (`x-k8s.io/cluster-manager` and
/// `spec.clusterManager.name`): each provider entry of the tests trusts it explicitly.
const MANAGER: &str = "test-manager";

/// The default provider file (the sources' names, then the built-ins), each entry trusting
/// [`MANAGER`] instead of its source's manager.
fn default_providers() -> ProviderFile {
    let mut file = ProviderFile::default();
    for entry in &mut file.providers {
        entry.cluster_managers = Some(vec![MANAGER.into()]);
    }
    file
}

/// Options for a test: one inventory namespace, and a member identity of the test's own (so
/// concurrent tests on the shared members never share or delete each other's accounts).
fn options(inventory: &str, providers: ProviderFile) -> SinkOptions {
    let mut options = SinkOptions::defaults::<SveltosSink>();
    options.inventory_namespaces = vec![inventory.to_string()];
    options.providers = providers;
    options.identity = MemberIdentity::new(
        &options.instance,
        &format!("sv-{inventory}"),
        "sveltos",
        SveltosSink::default_member_rules(),
    );
    options.exec_timeout = Duration::from_secs(3);
    options.member_timeout = Duration::from_secs(5);
    options.max_backoff = Duration::from_secs(5);
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

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(str::to_string),
        ..ObjectMeta::default()
    }
}

/// An access provider pointing at `member`, with the exec extension `config`.
fn provider(name: &str, member: &ControlPlane, config: Option<Value>) -> AccessProvider {
    provider_ext(
        name,
        member,
        config.into_iter().map(|c| (EXTENSION_EXEC, c)).collect(),
    )
}

fn provider_ext(
    name: &str,
    member: &ControlPlane,
    extensions: Vec<(&str, Value)>,
) -> AccessProvider {
    AccessProvider {
        name: name.into(),
        cluster: Some(Cluster {
            server: member.server(),
            certificate_authority_data: Some(BASE64.encode(member.ca_pem())),
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

/// Create a profile as a cluster manager would (spec, labels, then status).
async fn create_profile(
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
    all_labels.insert(LABEL_CLUSTER_MANAGER.into(), MANAGER.into());
    let profile = ClusterProfile {
        metadata: ObjectMeta {
            labels: Some(all_labels),
            ..meta(name, Some(namespace))
        },
        spec: ClusterProfileSpec {
            display_name: None,
            cluster_manager: ClusterManager {
                name: MANAGER.into(),
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

async fn create_secret(hub: &Client, secret: Secret) {
    let namespace = secret.metadata.namespace.clone().unwrap();
    Api::<Secret>::namespaced(hub.clone(), &namespace)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

/// A kubeconfig Secret as Cluster API writes `<cluster>-kubeconfig`: type
/// `cluster.x-k8s.io/secret`, label `cluster.x-k8s.io/cluster-name`, the kubeconfig under `value`.
async fn capi_kubeconfig_secret(hub: &Client, namespace: &str, name: &str, kubeconfig: &str) {
    hub_secret(hub, namespace, name, "value", kubeconfig).await;
}

/// A token Secret as OCM's managed-serviceaccount addon writes it into a cluster's hub namespace:
/// label `authentication.open-cluster-management.io/is-managed-serviceaccount: "true"`, keys
/// `token` and `ca.crt` (the CA of `member`).
async fn msa_token_secret(
    hub: &Client,
    namespace: &str,
    name: &str,
    token: &str,
    member: &ControlPlane,
) {
    create_secret(
        hub,
        Secret {
            metadata: ObjectMeta {
                labels: Some(BTreeMap::from([(
                    "authentication.open-cluster-management.io/is-managed-serviceaccount"
                        .to_string(),
                    "true".to_string(),
                )])),
                ..meta(name, Some(namespace))
            },
            data: Some(BTreeMap::from([
                ("token".to_string(), ByteString(token.as_bytes().to_vec())),
                (
                    "ca.crt".to_string(),
                    ByteString(member.ca_pem().as_bytes().to_vec()),
                ),
            ])),
            ..Secret::default()
        },
    )
    .await;
}

/// The OCM ManagedCluster whose hub namespace is `namespace` (same name), recording the API server
/// (URL and CA bundle) of `member`: what vouches for where a token Secret of that namespace may go.
async fn managed_cluster(hub: &Client, namespace: &str, member: &ControlPlane) {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cluster.open-cluster-management.io", "v1", "ManagedCluster"),
        "managedclusters",
    );
    let cluster: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "cluster.open-cluster-management.io/v1",
        "kind": "ManagedCluster",
        "metadata": {"name": namespace},
        "spec": {
            "hubAcceptsClient": true,
            "managedClusterClientConfigs": [
                {"url": member.server(), "caBundle": BASE64.encode(member.ca_pem())},
            ],
        },
    }))
    .unwrap();
    Api::<DynamicObject>::all_with(hub.clone(), &resource)
        .create(&PostParams::default(), &cluster)
        .await
        .unwrap();
}

/// Wait for the profile's Secret and return its kubeconfig text.
async fn published_kubeconfig(hub: &Client, namespace: &str, profile: &str) -> String {
    let secrets: Api<Secret> = Api::namespaced(hub.clone(), namespace);
    let name = format!("{profile}-sveltos-kubeconfig");
    wait_for(Duration::from_secs(60), &format!("Secret {name}"), || {
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

async fn client_of(kubeconfig: &str) -> Client {
    harness::controlplane::client_from_kubeconfig_yaml(kubeconfig)
        .await
        .unwrap()
}

fn sveltos_clusters(hub: &Client, namespace: &str) -> Api<SveltosCluster> {
    Api::namespaced(hub.clone(), namespace)
}

/// A test exec plugin: a shell script in a temp dir.
fn plugin(name: &str, body: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ib-exec-plugins-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    });
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn exec_entry(name: &str, command: &std::path::Path, env: &[(&str, &str)]) -> Value {
    json!({
        "name": name,
        "execConfig": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": command,
            "env": env.iter().map(|(n, v)| json!({"name": n, "value": v})).collect::<Vec<_>>(),
            "provideClusterInfo": true,
        },
        "clusterManagers": [MANAGER],
    })
}

// ---- tests -------------------------------------------------------------------------------------

/// Each built-in provider and an exec plugin lead to a Secret and a SveltosCluster whose
/// kubeconfig authenticates to the right member as the minted ServiceAccount, with exactly the
/// default rules; Sveltos' own fields are left alone.
#[tokio::test]
async fn each_provider_registers_a_working_minted_identity_on_the_right_member() {
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let (m1, m2) = (&fleet.members[0], &fleet.members[1]);
    let ns = test_namespace(&hub, "happy").await.unwrap();

    // kubeconfig-secret: the member's admin kubeconfig (client certificate), as CAPI would hold it.
    capi_kubeconfig_secret(&hub, &ns, "m1-admin", &m1.admin_kubeconfig_yaml()).await;
    // token-secret, {clusterName} form: Secret <namespace>/<clusterName>, key token; the
    // ManagedCluster named <clusterName> vouches for the endpoint (here the cluster is named like
    // the test namespace, so the ManagedCluster is unique to this test).
    let boot2 = bootstrap_token(m2, &format!("boot-{ns}")).await;
    managed_cluster(&hub, &ns, m2).await;
    msa_token_secret(&hub, &ns, &ns, &boot2, m2).await;
    // exec plugin: reads its token from a file; fails if it did not get the cluster config, or if
    // a profile-sourced environment variable reached it (the policy is Ignore).
    let boot1 = bootstrap_token(m1, &format!("boot-{ns}")).await;
    let token_file = std::env::temp_dir().join(format!("ib-token-{ns}"));
    std::fs::write(&token_file, &boot1).unwrap();
    let script = plugin(
        &format!("good-{ns}"),
        r#"[ -n "$REFUSE" ] && { echo "a profile-sourced env var reached me" >&2; exit 9; }
case "$KUBERNETES_EXEC_INFO" in *'"marker":"from-profile"'*) ;; *) echo "no cluster config" >&2; exit 3;; esac
printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"%s"}}' "$(cat "$TOKEN_FILE")""#,
    );
    let providers: ProviderFile = serde_json::from_value(json!({"providers": [
        exec_entry("test-exec", &script, &[("TOKEN_FILE", token_file.to_str().unwrap())]),
        {"name": "kubeconfig-secret", "clusterManagers": [MANAGER]},
        {"name": "token-secret", "clusterManagers": [MANAGER]},
    ]}))
    .unwrap();
    let sink = SveltosSink {
        property_labels: vec![("region".into(), "example.com/region".into())],
    };
    let opts = options(&ns, providers);
    let identity = opts.identity.clone();
    let running = start_sink(&hub, opts, sink).await;

    let region = json!([{"name": "region", "value": "eu-1"}]);
    create_profile(
        &hub,
        &ns,
        "via-kubeconfig",
        &[("env", "test")],
        vec![provider(
            "kubeconfig-secret",
            m1,
            Some(json!({"name": "m1-admin", "key": "value"})),
        )],
        region.clone(),
    )
    .await;
    create_profile(
        &hub,
        &ns,
        "via-token",
        &[("env", "test")],
        vec![provider(
            "token-secret",
            m2,
            Some(json!({"clusterName": ns})),
        )],
        region.clone(),
    )
    .await;
    create_profile(
        &hub,
        &ns,
        "via-exec",
        &[("env", "test")],
        vec![provider_ext(
            "test-exec",
            m1,
            vec![
                (EXTENSION_EXEC, json!({"marker": "from-profile"})),
                (EXTENSION_EXEC_ADDITIONAL_ENVS, json!({"REFUSE": "1"})),
            ],
        )],
        region,
    )
    .await;

    let mut minted = Vec::new();
    for (profile, member) in [("via-kubeconfig", m1), ("via-token", m2), ("via-exec", m1)] {
        let kubeconfig = published_kubeconfig(&hub, &ns, profile).await;
        let doc: Value = serde_saphyr::from_str(&kubeconfig).unwrap();
        assert_eq!(doc["clusters"].as_array().unwrap().len(), 1, "{profile}");
        assert_eq!(doc["users"].as_array().unwrap().len(), 1, "{profile}");
        assert_eq!(doc["contexts"].as_array().unwrap().len(), 1, "{profile}");
        assert_eq!(
            doc["clusters"][0]["cluster"]["server"],
            member.server(),
            "{profile}"
        );
        assert_eq!(
            doc["contexts"][0]["context"]["namespace"],
            identity.namespace.as_str()
        );
        assert!(doc["users"][0]["user"].get("exec").is_none());
        let client = client_of(&kubeconfig).await;
        assert_eq!(
            whoami(&client).await.unwrap(),
            identity.username(),
            "{profile}"
        );
        // The right member: its kube-system namespace, read through the minted identity.
        let seen = Api::<Namespace>::all(client)
            .get("kube-system")
            .await
            .unwrap()
            .metadata
            .uid;
        assert_eq!(
            seen.unwrap(),
            member.kube_system_uid().await.unwrap(),
            "{profile}"
        );
        minted.push(token_of(&kubeconfig));
        // The credential Secret names this sink instance and carries the registration record
        // (searched for tokens by assert_no_secret_leaked below).
        let secret = Api::<Secret>::namespaced(hub.clone(), &ns)
            .get(&format!("{profile}-sveltos-kubeconfig"))
            .await
            .unwrap();
        assert_eq!(
            secret.metadata.labels.unwrap_or_default()["inventory-bridge.io/instance"],
            "sveltos-sink",
            "{profile}"
        );
        assert!(
            secret
                .metadata
                .annotations
                .unwrap_or_default()
                .contains_key("inventory-bridge.io/registration"),
            "{profile}"
        );

        let cluster = sveltos_clusters(&hub, &ns).get(profile).await.unwrap();
        assert_eq!(
            cluster.spec.kubeconfig_name.as_deref(),
            Some(format!("{profile}-sveltos-kubeconfig").as_str())
        );
        assert_eq!(
            cluster.spec.kubeconfig_key_name.as_deref(),
            Some("kubeconfig")
        );
        let labels = cluster.metadata.labels.clone().unwrap();
        assert_eq!(labels.get("env").map(String::as_str), Some("test"));
        assert_eq!(
            labels.get("example.com/region").map(String::as_str),
            Some("eu-1")
        );
        let raw = Api::<DynamicObject>::namespaced_with(
            hub.clone(),
            &ns,
            &ApiResource::erase::<SveltosCluster>(&()),
        )
        .get(profile)
        .await
        .unwrap();
        assert!(raw.data["spec"].get("tokenRequestRenewalOption").is_none());
    }

    // RBAC on each member is exactly the configured (default, sveltosctl-like) rules, and every
    // member object carries this instance's ownership mark.
    let marked = |labels: Option<BTreeMap<String, String>>| {
        let labels = labels.unwrap_or_default();
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str)
            == Some("inventory-bridge")
            && labels
                .get("inventory-bridge.io/instance")
                .map(String::as_str)
                == Some("sveltos-sink")
    };
    for member in [m1, m2] {
        let admin = member.client().await.unwrap();
        let account = Api::<ServiceAccount>::namespaced(admin.clone(), &identity.namespace)
            .get(&identity.service_account)
            .await
            .unwrap();
        assert!(marked(account.metadata.labels));
        let role = Api::<ClusterRole>::all(admin.clone())
            .get(&identity.cluster_role)
            .await
            .unwrap();
        assert!(marked(role.metadata.labels));
        assert_eq!(role.rules.unwrap(), identity.rules);
        let binding = Api::<ClusterRoleBinding>::all(admin)
            .get(&identity.cluster_role_binding)
            .await
            .unwrap();
        assert!(marked(binding.metadata.labels));
        assert_eq!(binding.role_ref.name, identity.cluster_role);
        let subjects = binding.subjects.unwrap();
        assert_eq!(subjects.len(), 1);
        assert_eq!(
            (subjects[0].name.as_str(), subjects[0].namespace.as_deref()),
            (
                identity.service_account.as_str(),
                Some(identity.namespace.as_str())
            )
        );
    }

    // Play sveltoscluster-manager: it sets status, its version label and paused. Then change a
    // profile label; our next apply carries the new label and leaves the manager's fields alone.
    let manager = PatchParams::apply("sveltoscluster-manager");
    let clusters = Api::<DynamicObject>::namespaced_with(
        hub.clone(),
        &ns,
        &ApiResource::erase::<SveltosCluster>(&()),
    );
    clusters.patch("via-token", &manager, &Patch::Apply(json!({
        "apiVersion": "lib.projectsveltos.io/v1beta1", "kind": "SveltosCluster",
        "metadata": {"name": "via-token", "labels": {"projectsveltos.io/k8s-version": "v1.36.3"}},
        "spec": {"paused": true},
    }))).await.unwrap();
    clusters
        .patch_status(
            "via-token",
            &manager,
            &Patch::Apply(json!({
                "apiVersion": "lib.projectsveltos.io/v1beta1", "kind": "SveltosCluster",
                "metadata": {"name": "via-token"}, "status": {"ready": true},
            })),
        )
        .await
        .unwrap();
    Api::<ClusterProfile>::namespaced(hub.clone(), &ns)
        .patch(
            "via-token",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"env": "changed"}}})),
        )
        .await
        .unwrap();
    let updated = wait_for(Duration::from_secs(30), "label copied", || async {
        let c = clusters.get("via-token").await?;
        Ok((c.labels().get("env").map(String::as_str) == Some("changed")).then_some(c))
    })
    .await
    .unwrap();
    use kube::ResourceExt;
    assert_eq!(
        updated
            .labels()
            .get("projectsveltos.io/k8s-version")
            .map(String::as_str),
        Some("v1.36.3")
    );
    assert_eq!(updated.data["spec"]["paused"], json!(true));
    assert_eq!(updated.data["status"]["ready"], json!(true));

    running
        .wait_metric(
            "inventory_bridge_sink_mints_total",
            &[("kind", "mint"), ("result", "success")],
            3.0,
        )
        .await;
    running
        .wait_metric(
            "inventory_bridge_sink_registrations",
            &[("state", "registered")],
            3.0,
        )
        .await;
    let mut secrets = minted;
    secrets.extend([boot1, boot2]);
    assert_no_secret_leaked(&hub, &ns, &secrets).await;
}

/// A narrower `--member-rules` file is what the member enforces: allowed verbs work, others 403.
#[tokio::test]
async fn narrower_member_rules_are_enforced_on_the_member() {
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let m1 = &fleet.members[0];
    let ns = test_namespace(&hub, "rules").await.unwrap();
    capi_kubeconfig_secret(&hub, &ns, "m1-admin", &m1.admin_kubeconfig_yaml()).await;
    let rules = adapters::member::parse_rules(
        "- apiGroups: ['']\n  resources: [configmaps]\n  verbs: [get, list, watch]\n",
    )
    .unwrap();
    let mut opts = options(&ns, default_providers());
    opts.identity.rules = rules.clone();
    let identity = opts.identity.clone();
    let _running = start_sink(&hub, opts, SveltosSink::default()).await;
    create_profile(
        &hub,
        &ns,
        "narrow",
        &[],
        vec![provider(
            "kubeconfig-secret",
            m1,
            Some(json!({"name": "m1-admin", "key": "value"})),
        )],
        json!([]),
    )
    .await;
    let kubeconfig = published_kubeconfig(&hub, &ns, "narrow").await;
    let client = client_of(&kubeconfig).await;

    let admin = m1.client().await.unwrap();
    let role = Api::<ClusterRole>::all(admin)
        .get(&identity.cluster_role)
        .await
        .unwrap();
    assert_eq!(role.rules.unwrap(), rules);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    configmaps
        .list(&ListParams::default())
        .await
        .expect("list configmaps is allowed");
    let forbidden =
        |r: Result<_, kube::Error>| matches!(r, Err(kube::Error::Api(s)) if s.code == 403);
    assert!(forbidden(
        configmaps
            .create(
                &PostParams::default(),
                &ConfigMap {
                    metadata: meta("x", Some("default")),
                    ..ConfigMap::default()
                }
            )
            .await
            .map(|_| ())
    ));
    assert!(forbidden(
        Api::<Secret>::namespaced(client.clone(), "default")
            .list(&ListParams::default())
            .await
            .map(|_| ())
    ));
    assert!(forbidden(
        Api::<Namespace>::all(client)
            .list(&ListParams::default())
            .await
            .map(|_| ())
    ));
}

/// With a shortened renewal point (test knob: the apiserver refuses TokenRequests under 10 minutes,
/// so the TTL cannot be shortened instead), the Secret gets a new token long before the old one
/// expires, and the old one keeps working.
#[tokio::test]
async fn rotation_publishes_a_new_token_and_the_old_one_keeps_working() {
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let m2 = &fleet.members[1];
    let ns = test_namespace(&hub, "rotate").await.unwrap();
    let boot = bootstrap_token(m2, &format!("boot-{ns}")).await;
    managed_cluster(&hub, &ns, m2).await;
    msa_token_secret(&hub, &ns, "boot", &boot, m2).await;
    let mut opts = options(&ns, default_providers());
    opts.token_ttl = Duration::from_secs(600);
    // Renew at 0.5 % of the 600 s lifetime (3 s) ± 0.1 % instead of at 2/3.
    opts.renewal = RenewalPolicy {
        fraction: 0.005,
        jitter: 0.001,
    };
    let running = start_sink(&hub, opts, SveltosSink::default()).await;
    create_profile(
        &hub,
        &ns,
        "rotating",
        &[],
        vec![provider(
            "token-secret",
            m2,
            Some(json!({"name": "boot", "namespace": ns})),
        )],
        json!([]),
    )
    .await;

    let first = published_kubeconfig(&hub, &ns, "rotating").await;
    let first_token = token_of(&first);
    let secrets: Api<Secret> = Api::namespaced(hub.clone(), &ns);
    let secret = secrets.get("rotating-sveltos-kubeconfig").await.unwrap();
    let annotations = secret.metadata.annotations.unwrap();
    let expires: k8s_openapi::jiff::Timestamp = annotations["inventory-bridge.io/token-expires-at"]
        .parse()
        .unwrap();
    let renew: k8s_openapi::jiff::Timestamp = annotations["inventory-bridge.io/token-renew-after"]
        .parse()
        .unwrap();
    let lifetime = expires.duration_since(renew).as_secs_f64();
    assert!(
        lifetime > 500.0,
        "the apiserver granted {lifetime}s beyond the renewal point"
    );

    let second_token = wait_for(Duration::from_secs(60), "a rotated token", || async {
        let kubeconfig = published_kubeconfig(&hub, &ns, "rotating").await;
        let token = token_of(&kubeconfig);
        Ok((token != first_token).then_some(token))
    })
    .await
    .unwrap();
    let old = m2.token_client(&first_token).await.unwrap();
    let new = m2.token_client(&second_token).await.unwrap();
    let expected = format!("system:serviceaccount:sv-{ns}:sveltos");
    assert_eq!(
        whoami(&old).await.unwrap(),
        expected,
        "the old token still works"
    );
    assert_eq!(whoami(&new).await.unwrap(), expected);
    running
        .wait_metric(
            "inventory_bridge_sink_mints_total",
            &[("kind", "rotation"), ("result", "success")],
            1.0,
        )
        .await;
    let earliest = running
        .metric("inventory_bridge_sink_earliest_token_expiry_seconds", &[])
        .await;
    assert!(
        earliest > 0.0 && earliest <= 600.0,
        "earliest expiry {earliest}"
    );
    assert_no_secret_leaked(&hub, &ns, &[first_token, second_token, boot]).await;
}

/// 50 profiles minted at the same moment with the default 24 h TTL: their scheduled renewals are
/// spread over the jitter window instead of falling together.
#[tokio::test]
async fn fifty_profiles_do_not_renew_in_a_storm() {
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let m2 = &fleet.members[1];
    let ns = test_namespace(&hub, "storm").await.unwrap();
    let boot = bootstrap_token(m2, &format!("boot-{ns}")).await;
    managed_cluster(&hub, &ns, m2).await;
    msa_token_secret(&hub, &ns, "boot", &boot, m2).await;
    let running = start_sink(
        &hub,
        options(&ns, default_providers()),
        SveltosSink::default(),
    )
    .await;
    let creates = (0..50).map(|i| {
        let hub = hub.clone();
        let ns = ns.clone();
        async move {
            create_profile(
                &hub,
                &ns,
                &format!("p{i:02}"),
                &[],
                vec![provider(
                    "token-secret",
                    m2,
                    Some(json!({"name": "boot", "namespace": ns})),
                )],
                json!([]),
            )
            .await
        }
    });
    futures::future::join_all(creates).await;
    running
        .wait_metric(
            "inventory_bridge_sink_registrations",
            &[("state", "registered")],
            50.0,
        )
        .await;

    let secrets: Api<Secret> = Api::namespaced(hub.clone(), &ns);
    let list = secrets
        .list(&ListParams::default().labels(
            "inventory-bridge.io/sink=sveltos-sink,inventory-bridge.io/instance=sveltos-sink",
        ))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 50);
    let stamp = |s: &Secret, key: &str| -> i64 {
        s.metadata.annotations.as_ref().unwrap()[key]
            .parse::<k8s_openapi::jiff::Timestamp>()
            .unwrap()
            .as_second()
    };
    let mut renewals: Vec<i64> = list
        .items
        .iter()
        .map(|s| stamp(s, "inventory-bridge.io/token-renew-after"))
        .collect();
    let issued_spread = {
        let expiries: Vec<i64> = list
            .items
            .iter()
            .map(|s| stamp(s, "inventory-bridge.io/token-expires-at"))
            .collect();
        expiries.iter().max().unwrap() - expiries.iter().min().unwrap()
    };
    renewals.sort_unstable();
    let busiest_minute = renewals
        .iter()
        .map(|start| {
            renewals
                .iter()
                .filter(|t| **t >= *start && **t - *start < 60)
                .count()
        })
        .max()
        .unwrap();
    let spread = renewals.last().unwrap() - renewals.first().unwrap();
    eprintln!(
        "rotation spread over 50 profiles: tokens issued within {issued_spread}s; renewals span {spread}s ({:.2} h); busiest minute holds {busiest_minute}",
        spread as f64 / 3600.0
    );
    // Without jitter all 50 would renew within the few seconds they were issued in.
    assert!(
        issued_spread < 600,
        "issuance itself was spread ({issued_spread}s): test premise broken"
    );
    assert!(
        busiest_minute <= 5,
        "{busiest_minute} renewals within one minute"
    );
    assert!(
        spread >= 3 * 3600,
        "renewals span only {spread}s of the 4 h jitter window"
    );
}

/// Deleting a profile removes the hub objects and the member ServiceAccount and binding; the old
/// token is then rejected by the member. An orphan left from before start is swept.
#[tokio::test]
async fn deletion_revokes_the_member_identity_and_orphans_are_swept() {
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let m1 = &fleet.members[0];
    let ns = test_namespace(&hub, "delete").await.unwrap();
    capi_kubeconfig_secret(&hub, &ns, "m1-admin", &m1.admin_kubeconfig_yaml()).await;
    // An orphan: ours (this instance's) by label, for a profile uid that does not exist.
    Api::<Secret>::namespaced(hub.clone(), &ns)
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    labels: Some(BTreeMap::from([
                        (
                            "inventory-bridge.io/sink".to_string(),
                            "sveltos-sink".to_string(),
                        ),
                        (
                            "inventory-bridge.io/instance".to_string(),
                            "sveltos-sink".to_string(),
                        ),
                        (
                            "inventory-bridge.io/profile-uid".to_string(),
                            "00000000-0000-0000-0000-000000000000".to_string(),
                        ),
                    ])),
                    ..meta("orphan-sveltos-kubeconfig", Some(&ns))
                },
                ..Secret::default()
            },
        )
        .await
        .unwrap();
    let opts = options(&ns, default_providers());
    let identity = opts.identity.clone();
    let running = start_sink(&hub, opts, SveltosSink::default()).await;
    let secrets: Api<Secret> = Api::namespaced(hub.clone(), &ns);
    wait_for(Duration::from_secs(30), "orphan swept", || async {
        Ok(secrets
            .get_opt("orphan-sveltos-kubeconfig")
            .await?
            .is_none()
            .then_some(()))
    })
    .await
    .unwrap();

    create_profile(
        &hub,
        &ns,
        "doomed",
        &[],
        vec![provider(
            "kubeconfig-secret",
            m1,
            Some(json!({"name": "m1-admin", "key": "value"})),
        )],
        json!([]),
    )
    .await;
    let token = token_of(&published_kubeconfig(&hub, &ns, "doomed").await);
    let old = m1.token_client(&token).await.unwrap();
    assert_eq!(whoami(&old).await.unwrap(), identity.username());
    let profiles: Api<ClusterProfile> = Api::namespaced(hub.clone(), &ns);
    let finalizers = profiles
        .get("doomed")
        .await
        .unwrap()
        .metadata
        .finalizers
        .unwrap_or_default();
    assert!(finalizers.contains(&"inventory-bridge.io/sveltos-sink-cleanup".to_string()));

    profiles
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(Duration::from_secs(60), "profile gone", || async {
        Ok(profiles.get_opt("doomed").await?.is_none().then_some(()))
    })
    .await
    .unwrap();
    assert!(
        secrets
            .get_opt("doomed-sveltos-kubeconfig")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        sveltos_clusters(&hub, &ns)
            .get_opt("doomed")
            .await
            .unwrap()
            .is_none()
    );
    let admin = m1.client().await.unwrap();
    assert!(
        Api::<ServiceAccount>::namespaced(admin.clone(), &identity.namespace)
            .get_opt(&identity.service_account)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<ClusterRoleBinding>::all(admin)
            .get_opt(&identity.cluster_role_binding)
            .await
            .unwrap()
            .is_none()
    );
    // The token's account is gone, so the member rejects it (once the apiserver's token
    // authentication cache, about 10 s, has let go of the earlier success).
    wait_for(
        Duration::from_secs(60),
        "the old token rejected",
        || async {
            Ok(
                matches!(whoami(&old).await, Err(kube::Error::Api(ref s)) if s.code == 401)
                    .then_some(()),
            )
        },
    )
    .await
    .unwrap();
    running
        .wait_metric(
            "inventory_bridge_sink_cleanups_total",
            &[("result", "complete")],
            1.0,
        )
        .await;
    running
        .wait_metric(
            "inventory_bridge_sink_cleanups_total",
            &[("result", "orphan")],
            1.0,
        )
        .await;
    assert_no_secret_leaked(&hub, &ns, &[token]).await;
}

/// A member that goes away: its registration is kept (stale) while the token is valid and
/// rotation retries with backoff; a new profile for it fails with an Event while a profile on a
/// healthy member registers; deleting the profile completes after the cleanup timeout.
#[tokio::test]
async fn unreachable_member_keeps_the_registration_and_deletion_completes_after_the_timeout() {
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let m1 = &fleet.members[0];
    let mut down = ControlPlane::start(ControlPlaneOptions::named("member-down"))
        .await
        .unwrap();
    let ns = test_namespace(&hub, "down").await.unwrap();
    capi_kubeconfig_secret(&hub, &ns, "down-admin", &down.admin_kubeconfig_yaml()).await;
    capi_kubeconfig_secret(&hub, &ns, "m1-admin", &m1.admin_kubeconfig_yaml()).await;
    let mut opts = options(&ns, default_providers());
    opts.token_ttl = Duration::from_secs(600);
    opts.renewal = RenewalPolicy {
        fraction: 0.005,
        jitter: 0.001,
    };
    opts.cleanup_timeout = Duration::from_secs(8);
    let running = start_sink(&hub, opts, SveltosSink::default()).await;
    let down_provider = vec![provider(
        "kubeconfig-secret",
        &down,
        Some(json!({"name": "down-admin", "key": "value"})),
    )];
    let to_down = || down_provider.clone();
    create_profile(&hub, &ns, "on-down", &[], to_down(), json!([])).await;
    published_kubeconfig(&hub, &ns, "on-down").await;

    down.stop_apiserver();
    running
        .wait_metric(
            "inventory_bridge_sink_mints_total",
            &[
                ("kind", "rotation"),
                ("result", "error"),
                ("category", "member-unreachable"),
            ],
            1.0,
        )
        .await;
    running
        .wait_metric(
            "inventory_bridge_sink_registrations",
            &[("state", "stale")],
            1.0,
        )
        .await;
    let kept = published_kubeconfig(&hub, &ns, "on-down").await;
    wait_event(&hub, &ns, "on-down", "MemberUnreachable").await;
    // Retries back off: far fewer attempts than a hot loop would make (counted, not timed).
    let attempts_before = running
        .metric(
            "inventory_bridge_sink_mints_total",
            &[("category", "member-unreachable")],
        )
        .await;

    create_profile(&hub, &ns, "new-on-down", &[], to_down(), json!([])).await;
    create_profile(
        &hub,
        &ns,
        "healthy",
        &[],
        vec![provider(
            "kubeconfig-secret",
            m1,
            Some(json!({"name": "m1-admin", "key": "value"})),
        )],
        json!([]),
    )
    .await;
    published_kubeconfig(&hub, &ns, "healthy").await;
    wait_event(&hub, &ns, "new-on-down", "MemberUnreachable").await;
    running
        .wait_metric(
            "inventory_bridge_sink_mints_total",
            &[
                ("kind", "mint"),
                ("result", "error"),
                ("category", "member-unreachable"),
            ],
            1.0,
        )
        .await;
    assert_eq!(
        published_kubeconfig(&hub, &ns, "on-down").await,
        kept,
        "the last good registration is kept"
    );

    let profiles: Api<ClusterProfile> = Api::namespaced(hub.clone(), &ns);
    profiles
        .delete("on-down", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(90),
        "deletion completes despite the member being down",
        || async { Ok(profiles.get_opt("on-down").await?.is_none().then_some(())) },
    )
    .await
    .unwrap();
    let note = wait_event(&hub, &ns, "on-down", "MemberCleanupAbandoned").await;
    assert!(note.contains("gave up"), "{note}");
    assert!(
        Api::<Secret>::namespaced(hub.clone(), &ns)
            .get_opt("on-down-sveltos-kubeconfig")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        sveltos_clusters(&hub, &ns)
            .get_opt("on-down")
            .await
            .unwrap()
            .is_none()
    );
    running
        .wait_metric(
            "inventory_bridge_sink_cleanups_total",
            &[("result", "member-abandoned")],
            1.0,
        )
        .await;
    let attempts_after = running
        .metric(
            "inventory_bridge_sink_mints_total",
            &[("category", "member-unreachable")],
        )
        .await;
    // Backoff starts at 2 s and doubles (max 5 s in this test): over the whole test that is a
    // handful of attempts per profile, not thousands.
    assert!(
        attempts_after - attempts_before < 40.0,
        "{attempts_before} -> {attempts_after} attempts"
    );
    drop(down);
}

/// Bad input of every kind: each profile gets a clear Event and its metric category; a good
/// profile beside them registers; no secret reaches a log line or an Event.
#[tokio::test]
async fn bad_inputs_are_reported_and_never_block_the_others() {
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let m1 = &fleet.members[0];
    let ns = test_namespace(&hub, "bad").await.unwrap();
    let boot = bootstrap_token(m1, &format!("boot-{ns}")).await;
    managed_cluster(&hub, &ns, m1).await;
    msa_token_secret(&hub, &ns, "boot", &boot, m1).await;
    let bogus = "bogus-bootstrap-token-0123456789abcdef".to_string();
    msa_token_secret(&hub, &ns, "bogus", &bogus, m1).await;
    let malformed_secret = "SECRET-IN-A-MALFORMED-KUBECONFIG-42".to_string();
    capi_kubeconfig_secret(
        &hub,
        &ns,
        "malformed",
        &format!("apiVersion: v1\nusers: [ {{ token: {malformed_secret}\n"),
    )
    .await;
    let stderr_secret = "s3cr3t0k3n0123456789abcdefABCDEF0123456789".to_string();
    // The hanging plugin hangs in a child of its own, as wrappers do: the timeout must end both.
    let hang_marker = format!("30.{}", std::process::id());
    let hang = plugin(
        &format!("hang-{ns}"),
        &format!("sleep {hang_marker} &\nwait"),
    );
    let garbage = plugin(
        &format!("garbage-{ns}"),
        "echo 'this is not an ExecCredential'",
    );
    let failing = plugin(
        &format!("failing-{ns}"),
        &format!("echo \"vault unreachable, token={stderr_secret}\" >&2\nexit 7"),
    );
    let providers: ProviderFile = serde_json::from_value(json!({"providers": [
        exec_entry("missing-plugin", std::path::Path::new("/nonexistent/inventory-bridge-plugin"), &[]),
        exec_entry("hang-plugin", &hang, &[]),
        exec_entry("garbage-plugin", &garbage, &[]),
        exec_entry("failing-plugin", &failing, &[]),
        {"name": "kubeconfig-secret", "clusterManagers": [MANAGER]},
        {"name": "token-secret", "clusterManagers": [MANAGER]},
    ]}))
    .unwrap();
    let running = start_sink(&hub, options(&ns, providers), SveltosSink::default()).await;
    let token_provider = |secret: &str| {
        vec![provider(
            "token-secret",
            m1,
            Some(json!({"name": secret, "namespace": ns})),
        )]
    };

    create_profile(&hub, &ns, "good", &[], token_provider("boot"), json!([])).await;
    create_profile(
        &hub,
        &ns,
        "no-provider",
        &[],
        vec![provider("open-cluster-management", m1, None)],
        json!([]),
    )
    .await;
    create_profile(
        &hub,
        &ns,
        "missing-binary",
        &[],
        vec![provider("missing-plugin", m1, None)],
        json!([]),
    )
    .await;
    create_profile(
        &hub,
        &ns,
        "hanging",
        &[],
        vec![provider("hang-plugin", m1, None)],
        json!([]),
    )
    .await;
    create_profile(
        &hub,
        &ns,
        "garbage",
        &[],
        vec![provider("garbage-plugin", m1, None)],
        json!([]),
    )
    .await;
    create_profile(
        &hub,
        &ns,
        "failing",
        &[],
        vec![provider("failing-plugin", m1, None)],
        json!([]),
    )
    .await;
    create_profile(
        &hub,
        &ns,
        "malformed",
        &[],
        vec![provider(
            "kubeconfig-secret",
            m1,
            Some(json!({"name": "malformed", "key": "value"})),
        )],
        json!([]),
    )
    .await;
    create_profile(
        &hub,
        &ns,
        "refused",
        &[],
        token_provider("bogus"),
        json!([]),
    )
    .await;

    let good = token_of(&published_kubeconfig(&hub, &ns, "good").await);
    for (profile, reason, category, says) in [
        (
            "no-provider",
            "NoAccessProvider",
            "no-access-provider",
            "open-cluster-management",
        ),
        (
            "missing-binary",
            "ExecPluginFailed",
            "exec-plugin",
            "cannot start exec plugin",
        ),
        (
            "hanging",
            "ExecPluginFailed",
            "exec-plugin",
            "did not finish",
        ),
        (
            "garbage",
            "ExecPluginFailed",
            "exec-plugin",
            "no usable ExecCredential",
        ),
        (
            "failing",
            "ExecPluginFailed",
            "exec-plugin",
            "vault unreachable",
        ),
        (
            "malformed",
            "BootstrapSecretUnusable",
            "bootstrap-secret",
            "not a valid kubeconfig",
        ),
        (
            "refused",
            "MemberRefusedCredential",
            "member-refused",
            "401",
        ),
    ] {
        let note = wait_event(&hub, &ns, profile, reason).await;
        assert!(note.contains(says), "{profile}: {note}");
        // A profile no provider entry serves is refused before any mint is attempted (trust is
        // checked first), so it counts as a problem but not as a failed mint.
        if category != "no-access-provider" {
            running
                .wait_metric(
                    "inventory_bridge_sink_mints_total",
                    &[("result", "error"), ("category", category)],
                    1.0,
                )
                .await;
        }
        running
            .wait_metric(
                "inventory_bridge_problems_total",
                &[("category", category)],
                1.0,
            )
            .await;
        assert!(
            Api::<Secret>::namespaced(hub.clone(), &ns)
                .get_opt(&format!("{profile}-sveltos-kubeconfig"))
                .await
                .unwrap()
                .is_none(),
            "{profile}"
        );
        assert!(
            sveltos_clusters(&hub, &ns)
                .get_opt(profile)
                .await
                .unwrap()
                .is_none(),
            "{profile}"
        );
    }
    // The engine retries the hanging plugin, so a child of the attempt in flight may be alive
    // (at most 3 s old: the plugin timeout); none may be older than 8 s. Waiting 8 s after the
    // first timeout makes a survivor of that first attempt at least 11 s old.
    wait_event(&hub, &ns, "hanging", "ExecPluginFailed").await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let survivors: Vec<f64> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|entry| {
            std::fs::read(entry.path().join("cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&hang_marker))
        })
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter_map(|stat| {
            // Field 22 (after the parenthesised command): start time in clock ticks (100/s).
            let after_command = stat.rsplit_once(')')?.1;
            let start_ticks: f64 = after_command.split_whitespace().nth(19)?.parse().ok()?;
            Some(uptime - start_ticks / 100.0)
        })
        .filter(|age| *age > 8.0)
        .collect();
    assert!(
        survivors.is_empty(),
        "children of the hung plugin outlived its timeout: ages {survivors:?}"
    );
    let failing_note = wait_event(&hub, &ns, "failing", "ExecPluginFailed").await;
    assert!(failing_note.contains("exit status: 7"), "{failing_note}");

    // Duplicates: the older of two profiles sharing a member id is registered, the newer is not.
    let dup = [(LABEL_INVENTORY_MEMBER_ID, "member-one")];
    create_profile(
        &hub,
        &ns,
        "dup-old",
        &dup,
        token_provider("boot"),
        json!([]),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // creationTimestamp has 1 s resolution
    create_profile(
        &hub,
        &ns,
        "dup-new",
        &dup,
        token_provider("boot"),
        json!([]),
    )
    .await;
    published_kubeconfig(&hub, &ns, "dup-old").await;
    let note = wait_event(&hub, &ns, "dup-new", "DuplicateMemberId").await;
    assert!(note.contains("dup-old"), "{note}");
    // A tie: two profiles created in the same second; retried until the apiserver stamps them
    // alike (creation in one burst almost always lands in one second).
    let profiles: Api<ClusterProfile> = Api::namespaced(hub.clone(), &ns);
    let mut tie = 0;
    loop {
        let id = format!("member-tie-{tie}");
        let labels = [(LABEL_INVENTORY_MEMBER_ID, id.as_str())];
        let (name_a, name_b) = (format!("tie-a{tie}"), format!("tie-b{tie}"));
        let (a, b) = tokio::join!(
            create_profile(
                &hub,
                &ns,
                &name_a,
                &labels,
                token_provider("boot"),
                json!([])
            ),
            create_profile(
                &hub,
                &ns,
                &name_b,
                &labels,
                token_provider("boot"),
                json!([])
            ),
        );
        if a.metadata.creation_timestamp == b.metadata.creation_timestamp {
            break;
        }
        for name in [format!("tie-a{tie}"), format!("tie-b{tie}")] {
            profiles
                .delete(&name, &DeleteParams::default())
                .await
                .unwrap();
        }
        tie += 1;
        assert!(tie < 5, "could not create two profiles in the same second");
    }
    for name in [format!("tie-a{tie}"), format!("tie-b{tie}")] {
        wait_event(&hub, &ns, &name, "AmbiguousMemberId").await;
        assert!(
            Api::<Secret>::namespaced(hub.clone(), &ns)
                .get_opt(&format!("{name}-sveltos-kubeconfig"))
                .await
                .unwrap()
                .is_none()
        );
    }
    wait_for(Duration::from_secs(30), "group gauge", || async {
        let dup = running
            .metric(
                "inventory_bridge_sink_member_id_groups",
                &[("kind", "duplicate")],
            )
            .await;
        let amb = running
            .metric(
                "inventory_bridge_sink_member_id_groups",
                &[("kind", "ambiguous")],
            )
            .await;
        Ok((dup == 1.0 && amb == 1.0).then_some(()))
    })
    .await
    .unwrap();
    running
        .wait_metric(
            "inventory_bridge_sink_registrations",
            &[("state", "suppressed")],
            3.0,
        )
        .await;

    // The good profiles were never held up by the broken ones.
    let client = client_of(&published_kubeconfig(&hub, &ns, "good").await).await;
    assert_eq!(
        whoami(&client).await.unwrap(),
        format!("system:serviceaccount:sv-{ns}:sveltos")
    );
    let dup_old = token_of(&published_kubeconfig(&hub, &ns, "dup-old").await);
    assert_no_secret_leaked(
        &hub,
        &ns,
        &[good, dup_old, boot, bogus, malformed_secret, stderr_secret],
    )
    .await;
}
