//! OCM's managed-serviceaccount and work agents, played in the background for every
//! ManagedCluster the estate accepted.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use super::{Estate, MemberHandle, OCM_BOOTSTRAP_SERVICE_ACCOUNT, OCM_SPOKE_NAMESPACE, Say};
use crate::{Result, ensure_namespace};

fn manifest_work_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("work.open-cluster-management.io", "v1", "ManifestWork"),
        "manifestworks",
    )
}

fn managed_service_account_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            "authentication.open-cluster-management.io",
            "v1beta1",
            "ManagedServiceAccount",
        ),
        "managedserviceaccounts",
    )
}

/// What the played OCM agents have done, per ManagedCluster.
#[derive(Default)]
pub(super) struct AgentState {
    /// cluster -> (member index, manifests applied by the work agent, as (resource, ns, name)).
    clusters: BTreeMap<String, OcmAgentCluster>,
}

#[derive(Clone)]
struct OcmAgentCluster {
    member: usize,
    token_written: bool,
    applied: Vec<(ApiResource, Option<String>, String)>,
    orphaning: Value,
    work_seen: bool,
    /// resourceVersion of the ManifestWork last applied in full.
    applied_version: Option<String>,
    deleting: bool,
}

impl Estate {
    /// The played agents serve the ManagedCluster `name` (on member `member`) from now on.
    pub(super) fn agents_serve(&self, name: &str, member: usize) {
        if let Ok(mut state) = self.agent_state.lock() {
            state.clusters.insert(
                name.to_string(),
                OcmAgentCluster {
                    member,
                    token_written: false,
                    applied: Vec::new(),
                    orphaning: Value::Null,
                    work_seen: false,
                    applied_version: None,
                    deleting: false,
                },
            );
        }
    }

    /// The ManagedCluster `name` is being deleted: once its companions are gone, its agents clean
    /// up and stop serving it.
    pub(super) fn agents_clean_up_after(&self, name: &str) {
        if let Ok(mut state) = self.agent_state.lock()
            && let Some(agent) = state.clusters.get_mut(name)
        {
            agent.deleting = true;
        }
    }

    /// OCM's managed-serviceaccount and work agents, played in the background as the real ones
    /// run: for each ManagedCluster, once its ManagedServiceAccount exists, the ServiceAccount on
    /// the member and the token Secret in the cluster's hub namespace; its ManifestWorks applied
    /// to the member (again every 2 s, as the work agent keeps them applied), and removed when
    /// the ManifestWork goes (except what it orphans).
    pub(super) fn start_ocm_agents(&mut self) {
        let state = self.agent_state.clone();
        let hub_kubeconfig = self.fleet.hub.admin_kubeconfig_yaml();
        let members: Vec<MemberHandle> = (0..self.fleet.members.len())
            .map(|i| self.member(i))
            .collect();
        let say = self.say.clone();
        self.agents = Some(tokio::spawn(async move {
            let Ok(hub) = crate::controlplane::client_from_kubeconfig_yaml(&hub_kubeconfig).await
            else {
                return;
            };
            loop {
                let clusters: Vec<(String, OcmAgentCluster)> = state
                    .lock()
                    .map(|s| s.clusters.clone().into_iter().collect())
                    .unwrap_or_default();
                for (name, agent) in clusters {
                    let member = &members[agent.member];
                    match play_ocm_agents_once(&hub, member, &name, agent, &say).await {
                        Ok(Some(updated)) => {
                            if let Ok(mut s) = state.lock() {
                                s.clusters.insert(name, updated);
                            }
                        }
                        Ok(None) => {
                            if let Ok(mut s) = state.lock() {
                                s.clusters.remove(&name);
                            }
                        }
                        Err(err) => say(&format!("[ocm agents] {name}: {err} (retrying)")),
                    }
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }));
    }
}

async fn play_ocm_agents_once(
    hub: &Client,
    member: &MemberHandle,
    cluster: &str,
    mut agent: OcmAgentCluster,
    say: &Say,
) -> Result<Option<OcmAgentCluster>> {
    let works: Api<DynamicObject> =
        Api::namespaced_with(hub.clone(), cluster, &manifest_work_resource());
    let msas: Api<DynamicObject> =
        Api::namespaced_with(hub.clone(), cluster, &managed_service_account_resource());
    let spoke = member.client().await?;
    let current_works = works.list(&ListParams::default()).await?.items;
    if current_works.is_empty() && agent.work_seen {
        // The ManifestWork is gone: the work agent removes what it applied, except what the
        // work orphans (the namespaces).
        let orphaned = |resource: &ApiResource, name: &str| {
            agent.orphaning.as_array().is_some_and(|rules| {
                rules.iter().any(|rule| {
                    rule["resource"].as_str() == Some(resource.plural.as_str())
                        && rule["name"].as_str() == Some(name)
                })
            })
        };
        for (resource, namespace, name) in &agent.applied {
            if orphaned(resource, name) {
                continue;
            }
            let api: Api<DynamicObject> = match namespace {
                Some(ns) => Api::namespaced_with(spoke.clone(), ns, resource),
                None => Api::all_with(spoke.clone(), resource),
            };
            let _ = api.delete(name, &DeleteParams::default()).await;
        }
        say(&format!(
            "[ocm work agent] ManifestWork of {cluster} deleted: removed what it applied on {}",
            member.name
        ));
        agent.applied.clear();
        agent.work_seen = false;
        agent.applied_version = None;
    }
    for work in &current_works {
        agent.orphaning =
            work.data["spec"]["deleteOption"]["selectivelyOrphans"]["orphaningRules"].clone();
        // Like the work agent: apply a new version of the work in full; otherwise only put back
        // what went missing (e.g. a ServiceAccount a sink revoked), so steady state writes nothing.
        let unchanged =
            agent.applied_version.is_some() && agent.applied_version == work.resource_version();
        let mut applied = Vec::new();
        for manifest in work.data["spec"]["workload"]["manifests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let api_version = manifest["apiVersion"].as_str().unwrap_or_default();
            let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
            let kind = manifest["kind"].as_str().unwrap_or_default();
            let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
            let namespace = manifest["metadata"]["namespace"]
                .as_str()
                .map(str::to_string);
            let name = manifest["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let api: Api<DynamicObject> = match &namespace {
                Some(ns) => Api::namespaced_with(spoke.clone(), ns, &resource),
                None => Api::all_with(spoke.clone(), &resource),
            };
            if !unchanged || api.get_opt(&name).await?.is_none() {
                api.patch(
                    &name,
                    &PatchParams::apply("work-agent").force(),
                    &Patch::Apply(&manifest),
                )
                .await?;
            }
            applied.push((resource, namespace, name));
        }
        agent.applied_version = work.resource_version();
        if !agent.work_seen {
            say(&format!(
                "[ocm work agent] applied ManifestWork {cluster}/{} on {}: {} objects (the sinks' member identities, provisioned)",
                work.name_any(),
                member.name,
                applied.len()
            ));
        }
        agent.work_seen = true;
        for item in applied {
            if !agent.applied.contains(&item) {
                agent.applied.push(item);
            }
        }
    }
    if !agent.token_written
        && let Some(msa) = msas.get_opt(OCM_BOOTSTRAP_SERVICE_ACCOUNT).await?
    {
        ensure_namespace(&spoke, OCM_SPOKE_NAMESPACE).await?;
        let accounts: Api<ServiceAccount> = Api::namespaced(spoke.clone(), OCM_SPOKE_NAMESPACE);
        let mark = BTreeMap::from([(
            "authentication.open-cluster-management.io/is-managed-serviceaccount".to_string(),
            "true".to_string(),
        )]);
        if accounts
            .get_opt(OCM_BOOTSTRAP_SERVICE_ACCOUNT)
            .await?
            .is_none()
        {
            accounts
                .create(
                    &PostParams::default(),
                    &ServiceAccount {
                        metadata: ObjectMeta {
                            name: Some(OCM_BOOTSTRAP_SERVICE_ACCOUNT.into()),
                            labels: Some(mark.clone()),
                            ..ObjectMeta::default()
                        },
                        ..ServiceAccount::default()
                    },
                )
                .await?;
        }
        let token = accounts
            .create_token_request(
                OCM_BOOTSTRAP_SERVICE_ACCOUNT,
                &PostParams::default(),
                &TokenRequest {
                    spec: Some(TokenRequestSpec {
                        audiences: Some(vec![]),
                        expiration_seconds: Some(24 * 3600),
                        ..TokenRequestSpec::default()
                    }),
                    ..TokenRequest::default()
                },
            )
            .await?
            .status
            .and_then(|s| s.token)
            .ok_or("the member minted no token")?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(OCM_BOOTSTRAP_SERVICE_ACCOUNT.into()),
                namespace: Some(cluster.to_string()),
                labels: Some(mark),
                owner_references: Some(vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                        api_version: "authentication.open-cluster-management.io/v1beta1".into(),
                        kind: "ManagedServiceAccount".into(),
                        name: OCM_BOOTSTRAP_SERVICE_ACCOUNT.into(),
                        uid: msa.uid().unwrap_or_default(),
                        ..Default::default()
                    },
                ]),
                ..ObjectMeta::default()
            },
            string_data: Some(BTreeMap::from([
                ("token".to_string(), token),
                ("ca.crt".to_string(), member.ca_pem.clone()),
            ])),
            ..Secret::default()
        };
        Api::<Secret>::namespaced(hub.clone(), cluster)
            .patch(
                OCM_BOOTSTRAP_SERVICE_ACCOUNT,
                &PatchParams::apply("managed-serviceaccount-agent").force(),
                &Patch::Apply(&secret),
            )
            .await?;
        msas.patch_status(
            OCM_BOOTSTRAP_SERVICE_ACCOUNT,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"tokenSecretRef": {"name": OCM_BOOTSTRAP_SERVICE_ACCOUNT, "lastRefreshTimestamp": "2026-01-01T00:00:00Z"}}})),
        )
        .await?;
        say(&format!(
            "[ocm managed-serviceaccount agent] ServiceAccount {OCM_SPOKE_NAMESPACE}/{OCM_BOOTSTRAP_SERVICE_ACCOUNT} on {}, its token in Secret {cluster}/{OCM_BOOTSTRAP_SERVICE_ACCOUNT} on the hub",
            member.name
        ));
        agent.token_written = true;
    }
    if agent.deleting
        && current_works.is_empty()
        && msas.list(&ListParams::default()).await?.items.is_empty()
    {
        // The cluster is gone and ocm-source removed its companions: the agents clean up.
        let _ = Api::<ServiceAccount>::namespaced(spoke, OCM_SPOKE_NAMESPACE)
            .delete(OCM_BOOTSTRAP_SERVICE_ACCOUNT, &DeleteParams::default())
            .await;
        let _ = Api::<Secret>::namespaced(hub.clone(), cluster)
            .delete(OCM_BOOTSTRAP_SERVICE_ACCOUNT, &DeleteParams::default())
            .await;
        return Ok(None);
    }
    Ok(Some(agent))
}
