//! The sink workload (sveltos-sink): N Cluster-API-style profiles over a few members, each a
//! distinct registration (its own member id and its own `cluster.x-k8s.io/secret` kubeconfig
//! Secret), what the sink must publish for them, churn on the profiles, and the sink's floor.

use std::collections::BTreeMap;
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
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use super::Member;
use super::observe::{Check, Expect};
use super::phases::Scenario;
use crate::{Result, ensure_namespace};

/// sveltos-sink's default `--concurrency`: the floor uses the same.
const SINK_CONCURRENCY: usize = 8;
/// Requests in flight while the bench writes inputs.
const PREPARE_CONCURRENCY: usize = 16;
/// The label churn sets on profiles (the sink copies it onto the SveltosCluster).
const CHURN_LABEL: &str = "bench-churn";
/// The cluster manager of the profiles: the built-in `cluster-api` provider trusts it.
const MANAGER: &str = "cluster-api";
/// Namespace and name of the floor's member identity.
const FLOOR_IDENTITY: &str = "bench-floor";

fn sveltos_clusters() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("lib.projectsveltos.io", "v1beta1", "SveltosCluster"),
        "sveltosclusters",
    )
}

/// N profiles for sveltos-sink.
pub struct SveltosScenario {
    hub: kube::Client,
    members: Vec<Member>,
    n: usize,
    inventory: String,
    churn: Arc<Vec<Mutex<Option<String>>>>,
}

impl SveltosScenario {
    /// `n` profiles over `members`, round-robin.
    pub fn new(hub: kube::Client, members: Vec<Member>, n: usize) -> Self {
        Self {
            hub,
            members,
            n,
            inventory: "bench-sveltos".to_string(),
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
}

fn env_of(i: usize) -> &'static str {
    if i % 2 == 0 { "prod" } else { "staging" }
}

/// The server a published kubeconfig points at (its only cluster).
fn kubeconfig_server(kubeconfig: &str) -> Option<String> {
    kubeconfig.lines().find_map(|line| {
        line.trim()
            .strip_prefix("server:")
            .map(|s| s.trim().trim_matches('"').to_string())
    })
}

impl Scenario for SveltosScenario {
    fn adapter(&self) -> &'static str {
        "sveltos-sink"
    }

    fn role(&self) -> &'static str {
        "sink"
    }

    fn size(&self) -> usize {
        self.n
    }

    fn args(&self) -> Vec<String> {
        vec![
            format!("--inventory-namespace={}", self.inventory),
            "--identity=bench".to_string(),
        ]
    }

    fn watched(&self) -> (ApiResource, String) {
        (sveltos_clusters(), self.inventory.clone())
    }

    fn check(&self) -> Check {
        let (n, churn) = (self.n, self.churn.clone());
        Arc::new(move |cluster: &Value| {
            let Some(i) = cluster["metadata"]["name"]
                .as_str()
                .and_then(|name| name.strip_prefix("p-")?.parse::<usize>().ok())
                .filter(|i| *i < n)
            else {
                return false;
            };
            let labels = &cluster["metadata"]["labels"];
            let churned = churn[i].lock().ok().and_then(|v| v.clone());
            cluster["spec"]["kubeconfigName"] == format!("{}-sveltos-kubeconfig", Self::name(i))
                && labels["env"] == env_of(i)
                && labels["inventory-bridge.io/instance"] == "sveltos-sink"
                && labels[CHURN_LABEL].as_str() == churned.as_deref()
        })
    }

    async fn prepare(&self) -> Result<()> {
        ensure_namespace(&self.hub, &self.inventory).await?;
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

    /// SveltosClusters right, their Secrets holding a kubeconfig for the profile's member, and
    /// one published token per member accepted by that member as the sink's identity.
    async fn verify(&self) -> Result<usize> {
        let check = self.check();
        let clusters: Api<DynamicObject> =
            Api::namespaced_with(self.hub.clone(), &self.inventory, &sveltos_clusters());
        let good_clusters: std::collections::BTreeSet<String> = clusters
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter_map(|c| serde_json::to_value(c).ok())
            .filter(|c| check(c))
            .filter_map(|c| c["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        let secrets: Api<Secret> = Api::namespaced(self.hub.clone(), &self.inventory);
        let published = secrets
            .list(&ListParams::default().labels("inventory-bridge.io/sink=sveltos-sink"))
            .await?
            .items;
        let mut verified = 0;
        let mut sampled = std::collections::BTreeSet::new();
        for secret in &published {
            let Some(profile) = secret
                .metadata
                .name
                .as_deref()
                .and_then(|n| n.strip_suffix("-sveltos-kubeconfig"))
            else {
                continue;
            };
            let Some(i) = profile
                .strip_prefix("p-")
                .and_then(|i| i.parse::<usize>().ok())
            else {
                continue;
            };
            let Some(kubeconfig) = secret
                .data
                .as_ref()
                .and_then(|d| d.get("kubeconfig"))
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
            else {
                continue;
            };
            let member = self.member(i);
            if kubeconfig_server(&kubeconfig).as_deref() != Some(member.server.as_str())
                || !good_clusters.contains(profile)
            {
                continue;
            }
            if sampled.insert(member.server.clone()) {
                let client = crate::controlplane::client_from_kubeconfig_yaml(&kubeconfig).await?;
                let user = crate::sinks::whoami(&client).await?;
                if user != crate::sveltos_member_username() {
                    return Err(format!(
                        "the token published for {profile} authenticates as {user}"
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
            Self::name(index),
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

    /// What the sink must do at least, in a tight loop: per member once its identity (namespace,
    /// ServiceAccount, ClusterRole, ClusterRoleBinding); per profile one TokenRequest on the
    /// member and server-side applies of the kubeconfig Secret and the SveltosCluster on the
    /// hub, with the sink's default concurrency.
    async fn floor(&self) -> Result<Duration> {
        let floor = "bench-sveltos-floor";
        ensure_namespace(&self.hub, floor).await?;
        let start = Instant::now();
        let params = PatchParams::apply("bench-floor").force();
        let mut members = Vec::new();
        for member in &self.members {
            let client =
                crate::controlplane::client_from_kubeconfig_yaml(&member.kubeconfig).await?;
            ensure_namespace(&client, FLOOR_IDENTITY).await?;
            let rules = adapters::member::defaults::rules_of("sveltos-sink").unwrap_or_default();
            let apply = |resource: ApiResource, namespaced: bool, object: Value| {
                let client = client.clone();
                let params = params.clone();
                async move {
                    let api: Api<DynamicObject> = if namespaced {
                        Api::namespaced_with(client, FLOOR_IDENTITY, &resource)
                    } else {
                        Api::all_with(client, &resource)
                    };
                    api.patch(FLOOR_IDENTITY, &params, &Patch::Apply(&object))
                        .await?;
                    Ok::<_, crate::BoxError>(())
                }
            };
            apply(
                ApiResource::erase::<k8s_openapi::api::core::v1::ServiceAccount>(&()),
                true,
                json!({"apiVersion": "v1", "kind": "ServiceAccount",
                       "metadata": {"name": FLOOR_IDENTITY, "namespace": FLOOR_IDENTITY}}),
            )
            .await?;
            apply(
                ApiResource::erase::<k8s_openapi::api::rbac::v1::ClusterRole>(&()),
                false,
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                       "metadata": {"name": FLOOR_IDENTITY}, "rules": rules}),
            )
            .await?;
            apply(
                ApiResource::erase::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>(&()),
                false,
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                       "metadata": {"name": FLOOR_IDENTITY},
                       "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": FLOOR_IDENTITY},
                       "subjects": [{"kind": "ServiceAccount", "name": FLOOR_IDENTITY, "namespace": FLOOR_IDENTITY}]}),
            )
            .await?;
            members.push(
                Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(
                    client,
                    FLOOR_IDENTITY,
                ),
            );
        }
        let secrets: Api<DynamicObject> =
            Api::namespaced_with(self.hub.clone(), floor, &ApiResource::erase::<Secret>(&()));
        let clusters: Api<DynamicObject> =
            Api::namespaced_with(self.hub.clone(), floor, &sveltos_clusters());
        futures::stream::iter((0..self.n).map(|i| {
            let (members, secrets, clusters, params) = (&members, &secrets, &clusters, &params);
            async move {
                let accounts = &members[i % members.len()];
                let request = TokenRequest {
                    spec: Some(TokenRequestSpec {
                        expiration_seconds: Some(24 * 3600),
                        ..TokenRequestSpec::default()
                    }),
                    ..TokenRequest::default()
                };
                let minted: TokenRequest = accounts
                    .create_subresource("token", FLOOR_IDENTITY, &PostParams::default(), &request)
                    .await?;
                let token = minted.status.and_then(|s| s.token).unwrap_or_default();
                let member = self.member(i);
                let kubeconfig = format!(
                    "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
                    member.server,
                    BASE64.encode(&member.ca_pem)
                );
                let name = Self::name(i);
                let secret_name = format!("{name}-sveltos-kubeconfig");
                let labels = json!({"env": env_of(i), "inventory-bridge.io/sink": "bench-floor"});
                secrets
                    .patch(
                        &secret_name,
                        params,
                        &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret",
                            "metadata": {"name": secret_name, "namespace": floor, "labels": labels},
                            "type": "Opaque", "data": {"kubeconfig": BASE64.encode(kubeconfig)}})),
                    )
                    .await?;
                clusters
                    .patch(
                        &name,
                        params,
                        &Patch::Apply(json!({"apiVersion": "lib.projectsveltos.io/v1beta1", "kind": "SveltosCluster",
                            "metadata": {"name": name, "namespace": floor, "labels": labels},
                            "spec": {"kubeconfigName": secret_name, "kubeconfigKeyName": "kubeconfig"}})),
                    )
                    .await?;
                Ok::<_, crate::BoxError>(())
            }
        }))
        .buffer_unordered(SINK_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
        Ok(start.elapsed())
    }
}
