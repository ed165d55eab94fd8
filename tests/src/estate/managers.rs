//! The cluster managers, played on the hub: the estate's clusters as Cluster API and OCM know
//! them, and what their controllers and registration agent write (Clusters and their kubeconfig
//! Secrets, ManagedClusters and their status), including label changes, health and deletion.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use super::{CAPI_NAMESPACE, Estate, short_id};
use crate::{Result, ensure_namespace};

/// Who manages a cluster of the estate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manager {
    /// Cluster API (a `Cluster` in [`CAPI_NAMESPACE`]).
    Capi,
    /// Open Cluster Management (a cluster-scoped `ManagedCluster`).
    Ocm,
}

impl Manager {
    /// The `x-k8s.io/cluster-manager` value its source writes.
    pub fn cluster_manager(self) -> &'static str {
        match self {
            Manager::Capi => "cluster-api",
            Manager::Ocm => "open-cluster-management",
        }
    }
}

/// One cluster as its manager knows it.
#[derive(Clone, Debug)]
pub struct EstateCluster {
    /// Its manager.
    pub manager: Manager,
    /// The manager's name for it.
    pub name: String,
    /// Index of the member control plane it is (in `Fleet::members`).
    pub member: usize,
    /// Labels the manager carries.
    pub labels: BTreeMap<String, String>,
    /// Provisioned (CAPI: kubeconfig Secret written; OCM: always).
    pub provisioned: bool,
}

impl EstateCluster {
    /// The profile its source writes (`{namespace}-{name}` for CAPI, the name for OCM).
    pub fn profile(&self) -> String {
        match self.manager {
            Manager::Capi => format!("{CAPI_NAMESPACE}-{}", self.name),
            Manager::Ocm => self.name.clone(),
        }
    }

    /// `capi-demo/prod-eu` or `ocm/eu-central`, for messages.
    pub fn display(&self) -> String {
        match self.manager {
            Manager::Capi => format!("{CAPI_NAMESPACE}/{}", self.name),
            Manager::Ocm => format!("ManagedCluster {}", self.name),
        }
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The estate's clusters: member-1 is known to both Cluster API (`prod-eu`, created first, so its
/// profile is the one registered) and OCM (`eu-central`); member-2 is the CAPI Cluster still
/// provisioning; member-3 is OCM's `ap-south`.
pub fn default_clusters() -> Vec<EstateCluster> {
    vec![
        EstateCluster {
            manager: Manager::Capi,
            name: "prod-eu".into(),
            member: 0,
            labels: labels(&[("env", "prod"), ("region", "eu")]),
            provisioned: true,
        },
        EstateCluster {
            manager: Manager::Capi,
            name: "staging-us".into(),
            member: 1,
            labels: labels(&[("env", "staging"), ("region", "us")]),
            provisioned: false,
        },
        EstateCluster {
            manager: Manager::Ocm,
            name: "eu-central".into(),
            member: 0,
            labels: labels(&[("env", "prod"), ("region", "eu")]),
            provisioned: true,
        },
        EstateCluster {
            manager: Manager::Ocm,
            name: "ap-south".into(),
            member: 2,
            labels: labels(&[("env", "dev"), ("region", "ap")]),
            provisioned: true,
        },
    ]
}

fn cluster_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta2", "Cluster"),
        "clusters",
    )
}

fn managed_cluster_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cluster.open-cluster-management.io", "v1", "ManagedCluster"),
        "managedclusters",
    )
}

fn condition(type_: &str, status: &str, reason: &str) -> Value {
    json!({
        "type": type_, "status": status, "reason": reason,
        "message": format!("{type_} {status}"),
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    })
}

impl Estate {
    // ---- playing Cluster API -------------------------------------------------------------------
    /// Play Cluster API's controllers for `cluster`: the Cluster, its status, and (once
    /// provisioned) its `<name>-kubeconfig` Secret holding the member's admin kubeconfig.
    pub async fn play_capi_cluster(&self, cluster: &EstateCluster) -> Result<()> {
        let hub = self.hub().await?;
        let clusters: Api<DynamicObject> =
            Api::namespaced_with(hub.clone(), CAPI_NAMESPACE, &cluster_resource());
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2",
            "kind": "Cluster",
            "metadata": {"name": cluster.name, "namespace": CAPI_NAMESPACE, "labels": cluster.labels},
            "spec": {
                "controlPlaneEndpoint": {"host": "127.0.0.1", "port": 6443},
                "topology": {"classRef": {"name": "quick-start"}, "version": "v1.36.3"},
                "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DockerCluster", "name": cluster.name},
            },
        }))?;
        clusters
            .patch(
                &cluster.name,
                &PatchParams::apply("play-capi-controllers").force(),
                &Patch::Apply(&object),
            )
            .await?;
        let status = if cluster.provisioned {
            json!({
                "phase": "Provisioned",
                "initialization": {"infrastructureProvisioned": true, "controlPlaneInitialized": true},
                "controlPlane": {"versions": [{"version": "v1.36.3", "replicas": 1}]},
                "conditions": [
                    condition("ControlPlaneAvailable", "True", "Available"),
                    condition("Available", "True", "Available"),
                ],
            })
        } else {
            json!({
                "phase": "Provisioning",
                "initialization": {"infrastructureProvisioned": false, "controlPlaneInitialized": false},
                "conditions": [
                    condition("ControlPlaneAvailable", "False", "NotAvailable"),
                    condition("Available", "False", "NotAvailable"),
                ],
            })
        };
        clusters
            .patch_status(
                &cluster.name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await?;
        if cluster.provisioned {
            let member = self.member(cluster.member);
            self.write_capi_kubeconfig(&cluster.name, &member.admin_kubeconfig)
                .await?;
            (self.say)(&format!(
                "[capi] created Cluster {CAPI_NAMESPACE}/{} {:?} (Provisioned) and its Secret {CAPI_NAMESPACE}/{}-kubeconfig (type cluster.x-k8s.io/secret) -> {}",
                cluster.name, cluster.labels, cluster.name, member.name
            ));
        } else {
            (self.say)(&format!(
                "[capi] created Cluster {CAPI_NAMESPACE}/{} {:?} (Provisioning: no kubeconfig Secret yet)",
                cluster.name, cluster.labels
            ));
        }
        Ok(())
    }

    async fn write_capi_kubeconfig(&self, cluster: &str, kubeconfig: &str) -> Result<()> {
        let hub = self.hub().await?;
        let name = format!("{cluster}-kubeconfig");
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(CAPI_NAMESPACE.to_string()),
                labels: Some(BTreeMap::from([(
                    "cluster.x-k8s.io/cluster-name".to_string(),
                    cluster.to_string(),
                )])),
                ..ObjectMeta::default()
            },
            type_: Some("cluster.x-k8s.io/secret".to_string()),
            data: Some(BTreeMap::from([(
                "value".to_string(),
                ByteString(kubeconfig.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        };
        Api::<Secret>::namespaced(hub, CAPI_NAMESPACE)
            .patch(
                &name,
                &PatchParams::apply("play-capi-controllers").force(),
                &Patch::Apply(&secret),
            )
            .await?;
        Ok(())
    }

    /// Change the labels of a cluster at its manager (merge: `None` removes a label).
    pub async fn set_cluster_labels(
        &mut self,
        name: &str,
        manager: Manager,
        changes: &[(&str, Option<&str>)],
    ) -> Result<()> {
        let hub = self.hub().await?;
        let patch: serde_json::Map<String, Value> = changes
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let patch = json!({"metadata": {"labels": patch}});
        match manager {
            Manager::Capi => {
                Api::<DynamicObject>::namespaced_with(hub, CAPI_NAMESPACE, &cluster_resource())
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
            Manager::Ocm => {
                Api::<DynamicObject>::all_with(hub, &managed_cluster_resource())
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
        }
        if let Some(cluster) = self
            .clusters
            .iter_mut()
            .find(|c| c.name == name && c.manager == manager)
        {
            for (k, v) in changes {
                match v {
                    Some(v) => cluster.labels.insert(k.to_string(), v.to_string()),
                    None => cluster.labels.remove(*k),
                };
            }
        }
        (self.say)(&format!(
            "[{manager:?}] labels of {name} changed: {changes:?}"
        ));
        Ok(())
    }

    /// Delete a cluster at its manager.
    pub async fn delete_cluster(&mut self, name: &str, manager: Manager) -> Result<()> {
        let hub = self.hub().await?;
        match manager {
            Manager::Capi => {
                // Cluster API deletes the kubeconfig Secret with the Cluster (owner reference).
                Api::<DynamicObject>::namespaced_with(
                    hub.clone(),
                    CAPI_NAMESPACE,
                    &cluster_resource(),
                )
                .delete(name, &DeleteParams::default())
                .await?;
                let _ = Api::<Secret>::namespaced(hub, CAPI_NAMESPACE)
                    .delete(&format!("{name}-kubeconfig"), &DeleteParams::default())
                    .await;
            }
            Manager::Ocm => {
                self.agents_clean_up_after(name);
                Api::<DynamicObject>::all_with(hub, &managed_cluster_resource())
                    .delete(name, &DeleteParams::default())
                    .await?;
            }
        }
        self.clusters
            .retain(|c| !(c.name == name && c.manager == manager));
        (self.say)(&format!("[{manager:?}] deleted cluster {name}"));
        Ok(())
    }

    // ---- playing OCM -----------------------------------------------------------------------------
    /// Play OCM's hub and registration agent for `cluster`: its hub namespace, the accepted
    /// ManagedCluster with the member's URL and CA, and the agent's status (Available, version,
    /// the `id.k8s.io` claim = the member's kube-system uid).
    pub async fn play_ocm_cluster(&self, cluster: &EstateCluster) -> Result<()> {
        let hub = self.hub().await?;
        let member = self.member(cluster.member);
        ensure_namespace(&hub, &cluster.name).await?;
        let clusters: Api<DynamicObject> = Api::all_with(hub.clone(), &managed_cluster_resource());
        clusters
            .patch(
                &cluster.name,
                &PatchParams::apply("play-ocm-admin").force(),
                &Patch::Apply(json!({
                    "apiVersion": "cluster.open-cluster-management.io/v1",
                    "kind": "ManagedCluster",
                    "metadata": {"name": cluster.name, "labels": cluster.labels},
                    "spec": {
                        "hubAcceptsClient": true,
                        "managedClusterClientConfigs": [{"url": member.server, "caBundle": BASE64.encode(&member.ca_pem)}],
                    },
                })),
            )
            .await?;
        self.agents_serve(&cluster.name, cluster.member);
        self.set_ocm_available(&cluster.name, true).await?;
        (self.say)(&format!(
            "[ocm] accepted ManagedCluster {} {:?} -> {} (registration agent: Available, claim id.k8s.io={})",
            cluster.name,
            cluster.labels,
            member.name,
            short_id(&self.member_ids[cluster.member])
        ));
        Ok(())
    }

    /// Play OCM's registration agent reporting the cluster available or not (its lease stopped).
    pub async fn set_ocm_available(&self, name: &str, available: bool) -> Result<()> {
        let hub = self.hub().await?;
        let member = self
            .clusters
            .iter()
            .find(|c| c.manager == Manager::Ocm && c.name == name)
            .map(|c| c.member)
            .ok_or_else(|| format!("no OCM cluster {name}"))?;
        let (status, reason) = if available {
            ("True", "ManagedClusterAvailable")
        } else {
            ("False", "ManagedClusterLeaseUpdateStopped")
        };
        let patch = json!({"status": {
            "conditions": [
                condition("HubAcceptedManagedCluster", "True", "HubClusterAdminAccepted"),
                condition("ManagedClusterJoined", "True", "ManagedClusterJoined"),
                condition("ManagedClusterConditionAvailable", status, reason),
            ],
            "version": {"kubernetes": "v1.36.3"},
            "clusterClaims": [{"name": "id.k8s.io", "value": self.member_ids[member]}],
        }});
        Api::<DynamicObject>::all_with(hub, &managed_cluster_resource())
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }
}
