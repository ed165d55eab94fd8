//! The sink workloads (sveltos-sink, argocd-sink, flux-sink): N Cluster-API-style profiles over
//! a few members, each a distinct registration (its own member id and its own
//! `cluster.x-k8s.io/secret` kubeconfig Secret), what each sink must publish for them, churn on
//! the profiles, and the sinks' floor.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adapters::profile::{
    ClusterManager, ClusterProfile, ClusterProfileSpec, EXTENSION_EXEC, LABEL_CLUSTER_MANAGER,
    LABEL_INVENTORY_MEMBER_ID,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use super::Member;
use super::observe::{Check, Expect};
use super::phases::Scenario;
use crate::controlplane::client_from_kubeconfig_yaml;
use crate::sinks::{ArgoCluster, FluxKubeconfig, whoami};
use crate::{Result, ensure_namespace};

/// The sinks' default `--concurrency`: the floor uses the same.
const SINK_CONCURRENCY: usize = 8;
/// Requests in flight while the bench writes inputs.
const PREPARE_CONCURRENCY: usize = 16;
/// The label churn sets on profiles (every sink copies profile labels onto what it publishes).
const CHURN_LABEL: &str = "bench-churn";
/// The cluster manager of the profiles: the built-in `cluster-api` provider trusts it.
const MANAGER: &str = "cluster-api";
/// Namespace and name of the floor's member identity.
const FLOOR_IDENTITY: &str = "bench-floor";

/// Which sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkKind {
    /// SveltosCluster + kubeconfig Secret in the inventory namespace.
    Sveltos,
    /// Argo CD cluster Secret in the Argo CD namespace.
    ArgoCd,
    /// Flux kubeconfig Secret in the Flux namespace.
    Flux,
}

impl SinkKind {
    /// The binary (and default instance) name.
    pub fn adapter(self) -> &'static str {
        match self {
            SinkKind::Sveltos => "sveltos-sink",
            SinkKind::ArgoCd => "argocd-sink",
            SinkKind::Flux => "flux-sink",
        }
    }

    fn short(self) -> &'static str {
        match self {
            SinkKind::Sveltos => "sveltos",
            SinkKind::ArgoCd => "argocd",
            SinkKind::Flux => "flux",
        }
    }
}

fn sveltos_clusters() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("lib.projectsveltos.io", "v1beta1", "SveltosCluster"),
        "sveltosclusters",
    )
}

/// N profiles for one sink.
pub struct SinkScenario {
    kind: SinkKind,
    hub: kube::Client,
    members: Vec<Member>,
    n: usize,
    inventory: String,
    /// Where the sink publishes (the inventory itself for sveltos-sink).
    consumer: String,
    churn: Arc<Vec<Mutex<Option<String>>>>,
}

/// `p-<index>` back to the index.
fn profile_index(name: &str, n: usize) -> Option<usize> {
    name.strip_prefix("p-")?
        .parse::<usize>()
        .ok()
        .filter(|i| *i < n)
}

fn env_of(i: usize) -> &'static str {
    if i.is_multiple_of(2) {
        "prod"
    } else {
        "staging"
    }
}

/// The server a kubeconfig points at (its only cluster).
fn kubeconfig_server(kubeconfig: &str) -> Option<String> {
    kubeconfig.lines().find_map(|line| {
        line.trim()
            .strip_prefix("server:")
            .map(|s| s.trim().trim_matches('"').to_string())
    })
}

/// A published credential, read as its consumer reads it.
enum Credential {
    Kubeconfig(String),
    Argo(Box<ArgoCluster>),
}

impl Credential {
    fn server(&self) -> Option<String> {
        match self {
            Credential::Kubeconfig(kubeconfig) => kubeconfig_server(kubeconfig),
            Credential::Argo(cluster) => cluster.data.get("server").cloned(),
        }
    }

    async fn whoami(&self) -> Result<String> {
        let client = match self {
            Credential::Kubeconfig(kubeconfig) => client_from_kubeconfig_yaml(kubeconfig).await?,
            Credential::Argo(cluster) => cluster.client().await?,
        };
        Ok(whoami(&client).await?)
    }
}

impl SinkScenario {
    /// `n` profiles for `kind` over `members`, round-robin.
    pub fn new(kind: SinkKind, hub: kube::Client, members: Vec<Member>, n: usize) -> Self {
        let inventory = format!("bench-{}", kind.short());
        let consumer = match kind {
            SinkKind::Sveltos => inventory.clone(),
            _ => format!("bench-{}-consumer", kind.short()),
        };
        Self {
            kind,
            hub,
            members,
            n,
            inventory,
            consumer,
            churn: Arc::new((0..n).map(|_| Mutex::new(None)).collect()),
        }
    }

    fn name(i: usize) -> String {
        format!("p-{i:05}")
    }

    fn member(&self, i: usize) -> &Member {
        &self.members[i % self.members.len()]
    }

    fn profiles(&self) -> Api<ClusterProfile> {
        Api::namespaced(self.hub.clone(), &self.inventory)
    }

    fn churn_label(&self, i: usize) -> Option<String> {
        self.churn[i].lock().ok().and_then(|v| v.clone())
    }

    /// Name of what the sink publishes (and the bench watches) for profile `i`.
    fn published(&self, i: usize) -> String {
        published_name(self.kind, &self.inventory, &Self::name(i))
    }

    /// The published credential Secrets, by profile index.
    async fn credentials(&self) -> Result<BTreeMap<usize, Credential>> {
        let secrets: Api<Secret> = Api::namespaced(self.hub.clone(), &self.consumer);
        let listed = secrets
            .list(
                &ListParams::default()
                    .labels(&format!("inventory-bridge.io/sink={}", self.kind.adapter())),
            )
            .await?
            .items;
        let mut found = BTreeMap::new();
        for secret in listed {
            let name = secret.metadata.name.clone().unwrap_or_default();
            let profile = match self.kind {
                SinkKind::Sveltos => name.strip_suffix("-sveltos-kubeconfig"),
                SinkKind::ArgoCd => name
                    .strip_prefix("cluster-")
                    .and_then(|n| n.strip_prefix(self.inventory.as_str()))
                    .and_then(|n| n.strip_prefix('-')),
                SinkKind::Flux => name.strip_suffix("-kubeconfig"),
            };
            let Some(i) = profile.and_then(|p| profile_index(p, self.n)) else {
                continue;
            };
            let credential = match self.kind {
                SinkKind::Sveltos => secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get("kubeconfig"))
                    .and_then(|v| String::from_utf8(v.0.clone()).ok())
                    .map(Credential::Kubeconfig),
                SinkKind::ArgoCd => ArgoCluster::parse(secret)
                    .ok()
                    .map(|c| Credential::Argo(Box::new(c))),
                SinkKind::Flux => FluxKubeconfig::parse(secret)
                    .ok()
                    .map(|f| Credential::Kubeconfig(f.kubeconfig)),
            };
            if let Some(credential) = credential {
                found.insert(i, credential);
            }
        }
        Ok(found)
    }
}

/// What `kind` publishes for `profile` of `inventory` (default name templates).
fn published_name(kind: SinkKind, inventory: &str, profile: &str) -> String {
    match kind {
        SinkKind::Sveltos => profile.to_string(),
        SinkKind::ArgoCd => format!("cluster-{inventory}-{profile}"),
        SinkKind::Flux => format!("{profile}-kubeconfig"),
    }
}

impl Scenario for SinkScenario {
    fn adapter(&self) -> &'static str {
        self.kind.adapter()
    }

    fn role(&self) -> &'static str {
        "sink"
    }

    fn size(&self) -> usize {
        self.n
    }

    fn args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--inventory-namespace={}", self.inventory),
            "--identity=bench".to_string(),
        ];
        match self.kind {
            SinkKind::Sveltos => {}
            SinkKind::ArgoCd => args.push(format!("--argocd-namespace={}", self.consumer)),
            SinkKind::Flux => args.push(format!("--flux-namespace={}", self.consumer)),
        }
        args
    }

    fn watched(&self) -> (ApiResource, String) {
        let resource = match self.kind {
            SinkKind::Sveltos => sveltos_clusters(),
            _ => ApiResource::erase::<Secret>(&()),
        };
        (resource, self.consumer.clone())
    }

    fn check(&self) -> Check {
        let (kind, n, churn) = (self.kind, self.n, self.churn.clone());
        let inventory = self.inventory.clone();
        Arc::new(move |object: &Value| {
            let labels = &object["metadata"]["labels"];
            let Some(i) = labels["inventory-bridge.io/profile-name"]
                .as_str()
                .or_else(|| object["metadata"]["name"].as_str())
                .and_then(|name| profile_index(name, n))
            else {
                return false;
            };
            let profile = SinkScenario::name(i);
            let churned = churn[i].lock().ok().and_then(|v| v.clone());
            let own = match kind {
                SinkKind::Sveltos => {
                    object["spec"]["kubeconfigName"] == format!("{profile}-sveltos-kubeconfig")
                }
                SinkKind::ArgoCd => {
                    labels["argocd.argoproj.io/secret-type"] == "cluster"
                        && object["data"]["config"].is_string()
                }
                SinkKind::Flux => object["data"]["value"].is_string(),
            };
            object["metadata"]["name"] == published_name(kind, &inventory, &profile).as_str()
                && own
                && labels["env"] == env_of(i)
                && labels["inventory-bridge.io/instance"] == kind.adapter()
                && labels[CHURN_LABEL].as_str() == churned.as_deref()
        })
    }

    async fn prepare(&self) -> Result<()> {
        ensure_namespace(&self.hub, &self.inventory).await?;
        ensure_namespace(&self.hub, &self.consumer).await?;
        let secrets: Api<Secret> = Api::namespaced(self.hub.clone(), &self.inventory);
        let profiles = self.profiles();
        futures::stream::iter((0..self.n).map(|i| {
            let (secrets, profiles) = (&secrets, &profiles);
            async move {
                let member = self.member(i);
                let secret_name = format!("k-{i:05}");
                // As Cluster API writes `<cluster>-kubeconfig`.
                let secret = json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": secret_name, "namespace": self.inventory,
                                 "labels": {"cluster.x-k8s.io/cluster-name": format!("c-{i:05}")}},
                    "type": "cluster.x-k8s.io/secret",
                    "data": {"value": BASE64.encode(&member.kubeconfig)},
                });
                secrets
                    .patch(
                        &secret_name,
                        &PatchParams::apply("bench-capi-controllers"),
                        &Patch::Apply(&secret),
                    )
                    .await?;
                let name = Self::name(i);
                let profile = ClusterProfile {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(self.inventory.clone()),
                        labels: Some(BTreeMap::from([
                            (LABEL_CLUSTER_MANAGER.to_string(), MANAGER.to_string()),
                            // Distinct members: profiles sharing an id are duplicates.
                            (
                                LABEL_INVENTORY_MEMBER_ID.to_string(),
                                format!("bench-member-{i:05}"),
                            ),
                            ("env".to_string(), env_of(i).to_string()),
                        ])),
                        ..ObjectMeta::default()
                    },
                    spec: ClusterProfileSpec {
                        display_name: Some(format!("c-{i:05}")),
                        cluster_manager: ClusterManager {
                            name: MANAGER.to_string(),
                        },
                    },
                    status: None,
                };
                profiles.create(&PostParams::default(), &profile).await?;
                let status = json!({"status": {
                    "conditions": [
                        {"type": "ControlPlaneHealthy", "status": "True", "reason": "Available", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                        {"type": "Joined", "status": "True", "reason": "KubeconfigAvailable", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                    ],
                    "accessProviders": [{"name": MANAGER, "cluster": {
                        "server": member.server,
                        "certificate-authority-data": BASE64.encode(&member.ca_pem),
                        "extensions": [{"name": EXTENSION_EXEC, "extension": {
                            "name": secret_name, "key": "value", "namespace": self.inventory,
                        }}],
                    }}],
                    "version": {"kubernetes": "v1.36.0"},
                }});
                profiles
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                    .await?;
                Ok::<_, crate::BoxError>(())
            }
        }))
        .buffer_unordered(PREPARE_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
        Ok(())
    }

    /// What the sink published is right, each credential names the profile's member, and one
    /// credential per member is accepted by that member as the sink's own identity.
    async fn verify(&self) -> Result<usize> {
        let check = self.check();
        let (resource, namespace) = self.watched();
        let published: Api<DynamicObject> =
            Api::namespaced_with(self.hub.clone(), &namespace, &resource);
        let good: BTreeSet<String> = published
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter_map(|o| serde_json::to_value(o).ok())
            .filter(|o| check(o))
            .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        let identity = format!(
            "system:serviceaccount:inventory-bridge:inventory-bridge-{}",
            self.kind.adapter()
        );
        let mut verified = 0;
        let mut sampled = BTreeSet::new();
        for (i, credential) in self.credentials().await? {
            let member = self.member(i);
            if !good.contains(&self.published(i))
                || credential.server().as_deref() != Some(member.server.as_str())
            {
                continue;
            }
            if sampled.insert(member.server.clone()) {
                let user = credential.whoami().await?;
                if user != identity {
                    return Err(format!(
                        "the credential {} published for p-{i:05} authenticates as {user}",
                        self.kind.adapter()
                    )
                    .into());
                }
            }
            verified += 1;
        }
        Ok(verified)
    }

    fn plan_change(&self, index: usize, visit: usize) -> (String, Expect) {
        let value = format!("c{}", visit * self.n + index);
        if let Ok(mut label) = self.churn[index].lock() {
            *label = Some(value.clone());
        }
        (
            self.published(index),
            Expect::Label(CHURN_LABEL.to_string(), value),
        )
    }

    async fn apply_change(&self, index: usize, _visit: usize) -> Result<()> {
        let value = self.churn_label(index);
        self.profiles()
            .patch(
                &Self::name(index),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {CHURN_LABEL: value}}})),
            )
            .await?;
        Ok(())
    }

    async fn floor(&self, run: usize) -> Result<Duration> {
        sink_floor(self, run).await
    }
}

/// What a sink must do at least, in a tight loop: per member once its identity (namespace,
/// ServiceAccount, ClusterRole, ClusterRoleBinding); per profile a read of its bootstrap Secret,
/// one server-side apply on the profile (where the sink puts its cleanup finalizer; the floor
/// applies a label instead, so the profiles can still be deleted), one TokenRequest and one
/// SelfSubjectReview with the new token through a client built from the kubeconfig (the
/// "verified" of the target), and a server-side apply of each published object on the hub;
/// with the sinks' default concurrency and admin clients like theirs.
async fn sink_floor(scenario: &SinkScenario, run: usize) -> Result<Duration> {
    let floor = format!("bench-{}-floor-{run}", scenario.kind.short());
    let seen = format!("seen-{run}");
    ensure_namespace(&scenario.hub, &floor).await?;
    let start = Instant::now();
    let params = PatchParams::apply("bench-floor").force();
    let mut accounts = Vec::new();
    for member in &scenario.members {
        let client = client_from_kubeconfig_yaml(&member.kubeconfig).await?;
        accounts.push(floor_identity(&client, scenario.kind, &params).await?);
    }
    let secrets: Api<DynamicObject> = Api::namespaced_with(
        scenario.hub.clone(),
        &floor,
        &ApiResource::erase::<Secret>(&()),
    );
    let clusters: Api<DynamicObject> =
        Api::namespaced_with(scenario.hub.clone(), &floor, &sveltos_clusters());
    futures::stream::iter((0..scenario.n).map(|i| {
        let (accounts, secrets, clusters, params, floor, seen) =
            (&accounts, &secrets, &clusters, &params, &floor, &seen);
        async move {
            let profile = SinkScenario::name(i);
            let bootstrap: Api<Secret> = Api::namespaced(scenario.hub.clone(), &scenario.inventory);
            bootstrap.get(&format!("k-{i:05}")).await?;
            scenario
                .profiles()
                .patch(
                    &profile,
                    params,
                    &Patch::Apply(json!({"apiVersion": "multicluster.x-k8s.io/v1alpha1",
                        "kind": "ClusterProfile",
                        "metadata": {"name": profile, "labels": {"bench-floor": seen}}})),
                )
                .await?;
            let request = TokenRequest {
                spec: Some(TokenRequestSpec {
                    expiration_seconds: Some(24 * 3600),
                    ..TokenRequestSpec::default()
                }),
                ..TokenRequest::default()
            };
            let minted: TokenRequest = accounts[i % accounts.len()]
                .create_subresource("token", FLOOR_IDENTITY, &PostParams::default(), &request)
                .await?;
            let token = minted.status.and_then(|s| s.token).unwrap_or_default();
            let member = scenario.member(i);
            let ca = BASE64.encode(&member.ca_pem);
            let kubeconfig = format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
                member.server
            );
            let verifier = client_from_kubeconfig_yaml(&kubeconfig).await?;
            if whoami(&verifier).await? != format!("system:serviceaccount:{FLOOR_IDENTITY}:{FLOOR_IDENTITY}") {
                return Err("the floor's token does not authenticate as its account".into());
            }
            let labels = json!({"env": env_of(i), "inventory-bridge.io/sink": "bench-floor"});
            let (secret_name, data) = match scenario.kind {
                SinkKind::Sveltos => (
                    format!("{profile}-sveltos-kubeconfig"),
                    json!({"kubeconfig": BASE64.encode(&kubeconfig)}),
                ),
                SinkKind::ArgoCd => {
                    let config = json!({"bearerToken": token,
                        "tlsClientConfig": {"insecure": false, "caData": ca}});
                    (
                        format!("cluster-{floor}-{profile}"),
                        json!({"name": BASE64.encode(&profile),
                               "server": BASE64.encode(&member.server),
                               "config": BASE64.encode(config.to_string())}),
                    )
                }
                SinkKind::Flux => (
                    format!("{profile}-kubeconfig"),
                    json!({"value": BASE64.encode(&kubeconfig)}),
                ),
            };
            secrets
                .patch(
                    &secret_name,
                    params,
                    &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": secret_name, "namespace": floor, "labels": labels},
                        "type": "Opaque", "data": data})),
                )
                .await?;
            if scenario.kind == SinkKind::Sveltos {
                clusters
                    .patch(
                        &profile,
                        params,
                        &Patch::Apply(json!({"apiVersion": "lib.projectsveltos.io/v1beta1", "kind": "SveltosCluster",
                            "metadata": {"name": profile, "namespace": floor, "labels": labels},
                            "spec": {"kubeconfigName": secret_name, "kubeconfigKeyName": "kubeconfig"}})),
                    )
                    .await?;
            }
            Ok::<_, crate::BoxError>(())
        }
    }))
    .buffer_unordered(SINK_CONCURRENCY)
    .try_collect::<Vec<()>>()
    .await?;
    let elapsed = start.elapsed();
    // Untimed: the floor's objects go, so later adapters and runs do not watch them.
    secrets
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    if scenario.kind == SinkKind::Sveltos {
        clusters
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await?;
    }
    Ok(elapsed)
}

/// The floor's member identity on one member (with the sink's default rules); returns the API of
/// its ServiceAccount.
async fn floor_identity(
    client: &kube::Client,
    kind: SinkKind,
    params: &PatchParams,
) -> Result<Api<ServiceAccount>> {
    ensure_namespace(client, FLOOR_IDENTITY).await?;
    let rules = adapters::member::defaults::rules_of(kind.adapter()).unwrap_or_default();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), FLOOR_IDENTITY);
    accounts
        .patch(
            FLOOR_IDENTITY,
            params,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": FLOOR_IDENTITY, "namespace": FLOOR_IDENTITY}})),
        )
        .await?;
    Api::<ClusterRole>::all(client.clone())
        .patch(
            FLOOR_IDENTITY,
            params,
            &Patch::Apply(
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": FLOOR_IDENTITY}, "rules": rules}),
            ),
        )
        .await?;
    Api::<ClusterRoleBinding>::all(client.clone())
        .patch(
            FLOOR_IDENTITY,
            params,
            &Patch::Apply(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": FLOOR_IDENTITY},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": FLOOR_IDENTITY},
                "subjects": [{"kind": "ServiceAccount", "name": FLOOR_IDENTITY, "namespace": FLOOR_IDENTITY}]})),
        )
        .await?;
    Ok(accounts)
}
