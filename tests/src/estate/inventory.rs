//! What the bridge made of the estate, read back from the hub: the inventory, each sink's
//! registrations, what is still awaited for convergence, and the table the demo prints.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use adapters::profile::{
    CONDITION_CONTROL_PLANE_HEALTHY, CONDITION_JOINED, ClusterProfile, LABEL_CLUSTER_MANAGER,
    LABEL_INVENTORY_MEMBER_ID,
};
use adapters::sink::record::Record;
use adapters::sink::{ANNOTATION_PROFILE, ANNOTATION_REGISTRATION, LABEL_SINK};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};

use super::{Estate, EstateCluster, INVENTORY, Manager, SINKS, short_id};
use crate::Result;

/// The inventory and what the sinks made of it.
#[derive(Clone, Debug)]
pub struct Inventory {
    /// One per profile, sorted by name.
    pub rows: Vec<Row>,
    /// Every registration of every sink.
    pub registrations: Vec<Registration>,
}

/// One profile.
#[derive(Clone, Debug)]
pub struct Row {
    /// Profile name.
    pub profile: String,
    /// `x-k8s.io/cluster-manager`.
    pub manager: String,
    /// `multicluster.x-k8s.io/inventory-member-id` (kube-system uid).
    pub member_id: String,
    /// Kubernetes version.
    pub version: String,
    /// ControlPlaneHealthy (status, reason).
    pub healthy: Option<(String, String)>,
    /// Joined (status, reason).
    pub joined: Option<(String, String)>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Sinks that registered it.
    pub registered_with: Vec<String>,
    /// Sinks whose Events report it as a duplicate of another profile of its member.
    pub duplicate_reported_by: BTreeSet<String>,
}

/// One sink's registration of one profile.
#[derive(Clone, Debug)]
pub struct Registration {
    /// The sink.
    pub sink: String,
    /// The profile.
    pub profile: String,
    /// Its credential Secret on the hub (`namespace/name`).
    pub secret: String,
    /// sveltos-sink: its SveltosCluster (`namespace/name`).
    pub sveltos_cluster: Option<String>,
    /// The member's server.
    pub server: String,
    /// The member ServiceAccount (`namespace/name`).
    pub service_account: String,
    /// Its uid (tokens die with it).
    pub service_account_uid: String,
    /// The generated kubeconfig (holds a token: never print it).
    pub kubeconfig: String,
}

/// The SveltosCluster resource.
pub fn sveltos_cluster_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("lib.projectsveltos.io", "v1beta1", "SveltosCluster"),
        "sveltosclusters",
    )
}

impl Estate {
    // ---- observing -------------------------------------------------------------------------------
    /// The inventory as it stands: one row per profile.
    pub async fn inventory(&self) -> Result<Inventory> {
        let hub = self.hub().await?;
        let profiles = Api::<ClusterProfile>::namespaced(hub.clone(), INVENTORY)
            .list(&ListParams::default())
            .await?
            .items;
        let mut registrations = Vec::new();
        for sink in SINKS {
            let secrets = Api::<Secret>::all(hub.clone())
                .list(&ListParams::default().labels(&format!("{LABEL_SINK}={sink}")))
                .await?
                .items;
            for secret in secrets {
                let annotations = secret.annotations();
                let Some(profile) = annotations.get(ANNOTATION_PROFILE) else {
                    continue;
                };
                let profile = profile
                    .split_once('/')
                    .map(|(_, name)| name.to_string())
                    .unwrap_or_else(|| profile.clone());
                let record: Option<Record> = annotations
                    .get(ANNOTATION_REGISTRATION)
                    .and_then(|r| serde_json::from_str(r).ok());
                let Some(record) = record else { continue };
                let kubeconfig = kubeconfig_of(sink, &secret)?;
                registrations.push(Registration {
                    sink: sink.to_string(),
                    profile,
                    secret: format!(
                        "{}/{}",
                        secret.namespace().unwrap_or_default(),
                        secret.name_any()
                    ),
                    server: record.endpoint.server.clone(),
                    service_account: format!(
                        "{}/{}",
                        record.identity.namespace, record.identity.service_account
                    ),
                    service_account_uid: record.identity.service_account_uid.clone(),
                    kubeconfig,
                    sveltos_cluster: None,
                });
            }
        }
        let sveltos_clusters: Vec<DynamicObject> = Api::<DynamicObject>::namespaced_with(
            hub.clone(),
            INVENTORY,
            &sveltos_cluster_resource(),
        )
        .list(&ListParams::default())
        .await?
        .items;
        for cluster in sveltos_clusters {
            if let Some(registration) = registrations
                .iter_mut()
                .find(|r| r.sink == "sveltos-sink" && r.profile == cluster.name_any())
            {
                registration.sveltos_cluster = Some(format!(
                    "{}/{}",
                    cluster.namespace().unwrap_or_default(),
                    cluster.name_any()
                ));
            }
        }
        let events = Api::<Event>::namespaced(hub.clone(), INVENTORY)
            .list(&ListParams::default())
            .await?
            .items;
        let mut rows = Vec::new();
        for profile in &profiles {
            let name = profile.name_any();
            let condition = |type_: &str| {
                profile
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
                    .map(|c| (c.status.clone(), c.reason.clone()))
            };
            let duplicate_of: BTreeSet<String> = events
                .iter()
                .filter(|e| {
                    e.reason.as_deref() == Some("DuplicateMemberId")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref())
                            == Some(name.as_str())
                        && e.regarding.as_ref().and_then(|r| r.uid.as_deref())
                            == profile.metadata.uid.as_deref()
                })
                .filter_map(|e| e.reporting_controller.clone())
                .collect();
            rows.push(Row {
                profile: name.clone(),
                manager: profile
                    .labels()
                    .get(LABEL_CLUSTER_MANAGER)
                    .cloned()
                    .unwrap_or_default(),
                member_id: profile
                    .labels()
                    .get(LABEL_INVENTORY_MEMBER_ID)
                    .cloned()
                    .unwrap_or_default(),
                version: profile
                    .status
                    .as_ref()
                    .and_then(|s| s.version.as_ref())
                    .and_then(|v| v.kubernetes.clone())
                    .unwrap_or_default(),
                healthy: condition(CONDITION_CONTROL_PLANE_HEALTHY),
                joined: condition(CONDITION_JOINED),
                labels: profile.labels().clone(),
                registered_with: registrations
                    .iter()
                    .filter(|r| r.profile == name)
                    .map(|r| r.sink.clone())
                    .collect(),
                duplicate_reported_by: duplicate_of,
            });
        }
        rows.sort_by(|a, b| a.profile.cmp(&b.profile));
        Ok(Inventory {
            rows,
            registrations,
        })
    }

    /// What converged means for the estate as the managers currently describe it: a profile for
    /// every cluster; every provisioned, available cluster registered with every sink exactly once
    /// per member (the oldest profile of a member), the others reported as duplicates; nothing
    /// registered for a cluster still provisioning; nothing else registered. Returns what is still
    /// awaited (empty = converged).
    pub async fn pending(&self) -> Result<Vec<String>> {
        let inventory = self.inventory().await?;
        let mut waiting = Vec::new();
        let expected_profiles: BTreeSet<String> =
            self.clusters.iter().map(EstateCluster::profile).collect();
        for cluster in &self.clusters {
            let profile = cluster.profile();
            let Some(row) = inventory.rows.iter().find(|r| r.profile == profile) else {
                waiting.push(format!(
                    "{}: {} has no profile {INVENTORY}/{profile} yet",
                    source_of(cluster.manager),
                    cluster.display()
                ));
                continue;
            };
            if !cluster.provisioned {
                continue;
            }
            let wanted_id = &self.member_ids[cluster.member];
            if &row.member_id != wanted_id {
                waiting.push(format!(
                    "{}: profile {profile} does not carry its member id yet",
                    source_of(cluster.manager)
                ));
            }
            for (key, value) in &cluster.labels {
                if row.labels.get(key) != Some(value) {
                    waiting.push(format!(
                        "{}: profile {profile} label {key}={value} not there yet",
                        source_of(cluster.manager)
                    ));
                }
            }
        }
        for row in &inventory.rows {
            if !expected_profiles.contains(&row.profile) {
                waiting.push(format!(
                    "profile {} should be gone (its cluster was deleted)",
                    row.profile
                ));
            }
        }
        // Which profile each sink must register per member: the oldest.
        let winners = self.expected_registered();
        for sink in SINKS {
            let registered: Vec<&Registration> = inventory
                .registrations
                .iter()
                .filter(|r| r.sink == sink)
                .collect();
            let names: BTreeSet<String> = registered.iter().map(|r| r.profile.clone()).collect();
            let missing: Vec<&String> = winners.iter().filter(|w| !names.contains(*w)).collect();
            let extra: Vec<&String> = names.iter().filter(|n| !winners.contains(*n)).collect();
            if !missing.is_empty() || !extra.is_empty() {
                waiting.push(format!(
                    "{sink}: {}/{} registered{}{}",
                    names.intersection(&winners).count(),
                    winners.len(),
                    if missing.is_empty() {
                        String::new()
                    } else {
                        format!(", waiting for {missing:?}")
                    },
                    if extra.is_empty() {
                        String::new()
                    } else {
                        format!(", still registered: {extra:?}")
                    }
                ));
            }
            if sink == "sveltos-sink" {
                for registration in &registered {
                    if registration.sveltos_cluster.is_none() {
                        waiting.push(format!(
                            "sveltos-sink: no SveltosCluster for {} yet",
                            registration.profile
                        ));
                    }
                }
            }
        }
        // The losers of a member are reported as duplicates by every sink.
        for row in &inventory.rows {
            let member_has_winner = !row.member_id.is_empty()
                && inventory
                    .rows
                    .iter()
                    .any(|o| o.member_id == row.member_id && winners.contains(&o.profile));
            if member_has_winner && !winners.contains(&row.profile) {
                for sink in SINKS {
                    if !row.duplicate_reported_by.contains(sink) {
                        waiting.push(format!(
                            "{sink}: {} not reported as a duplicate yet",
                            row.profile
                        ));
                    }
                }
            }
        }
        Ok(waiting)
    }

    /// The profiles every sink should have registered: per member id, the oldest profile of a
    /// provisioned cluster.
    fn expected_registered(&self) -> BTreeSet<String> {
        let mut by_member: BTreeMap<usize, Vec<&EstateCluster>> = BTreeMap::new();
        for cluster in self.clusters.iter().filter(|c| c.provisioned) {
            by_member.entry(cluster.member).or_default().push(cluster);
        }
        by_member
            .values()
            .filter_map(|clusters| {
                // Cluster API's came first in the estate; the order in `clusters` is creation
                // order (the scenarios only delete).
                clusters.first().map(|c| c.profile())
            })
            .collect()
    }

    /// Wait until [`Estate::pending`] is empty, calling `progress` with what is awaited whenever
    /// that changes (and every 5 s); fails after `timeout` naming what was still awaited.
    pub async fn wait_converged(
        &mut self,
        timeout: Duration,
        mut progress: impl FnMut(&[String]),
    ) -> Result<Duration> {
        let started = Instant::now();
        let mut last: Vec<String> = Vec::new();
        let mut last_print = Instant::now();
        loop {
            self.check_adapters_running()?;
            let waiting = match self.pending().await {
                Ok(waiting) => waiting,
                Err(err) => vec![format!("cannot read the hub: {err}")],
            };
            if waiting.is_empty() {
                return Ok(started.elapsed());
            }
            if waiting != last || last_print.elapsed() > Duration::from_secs(5) {
                progress(&waiting);
                last = waiting.clone();
                last_print = Instant::now();
            }
            if started.elapsed() > timeout {
                return Err(format!(
                    "not converged after {timeout:?}; still waiting for:\n  {}",
                    waiting.join("\n  ")
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn source_of(manager: Manager) -> &'static str {
    match manager {
        Manager::Capi => "capi-source",
        Manager::Ocm => "ocm-source",
    }
}

/// The kubeconfig a consumer builds from what `sink` published in `secret`.
fn kubeconfig_of(sink: &str, secret: &Secret) -> Result<String> {
    let data = secret.data.clone().unwrap_or_default();
    let text = |key: &str| -> Result<String> {
        let value = data
            .get(key)
            .ok_or_else(|| format!("{sink} Secret without {key}"))?;
        Ok(String::from_utf8(value.0.clone())?)
    };
    match sink {
        "sveltos-sink" => text("kubeconfig"),
        "flux-sink" => text("value"),
        // Argo CD's cluster Secret: server + config (bearer token, CA), as Argo CD reads it.
        _ => Ok(crate::sinks::ArgoCluster::parse(secret.clone())?.kubeconfig()),
    }
}

/// The inventory as a table (no credentials).
pub fn render_table(inventory: &Inventory) -> String {
    let mut lines = vec![[
        "PROFILE".to_string(),
        "MANAGER".into(),
        "MEMBER ID".into(),
        "VERSION".into(),
        "HEALTHY".into(),
        "JOINED".into(),
        "REGISTERED WITH".into(),
    ]];
    for row in &inventory.rows {
        let registered = if !row.registered_with.is_empty() {
            row.registered_with
                .iter()
                .map(|s| s.trim_end_matches("-sink").to_string())
                .collect::<Vec<_>>()
                .join(",")
        } else if !row.duplicate_reported_by.is_empty() {
            let winner = inventory
                .rows
                .iter()
                .find(|o| {
                    o.member_id == row.member_id
                        && o.profile != row.profile
                        && !o.registered_with.is_empty()
                })
                .map(|o| o.profile.clone())
                .unwrap_or_else(|| "another profile".into());
            format!("- (duplicate of {winner})")
        } else {
            "-".to_string()
        };
        let condition = |c: &Option<(String, String)>| match c {
            Some((status, reason)) => format!("{status} ({reason})"),
            None => "-".into(),
        };
        lines.push([
            row.profile.clone(),
            row.manager.clone(),
            if row.member_id.is_empty() {
                "-".into()
            } else {
                short_id(&row.member_id)
            },
            if row.version.is_empty() {
                "-".into()
            } else {
                row.version.clone()
            },
            condition(&row.healthy),
            condition(&row.joined),
            registered,
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0))
        .collect();
    lines
        .iter()
        .map(|l| {
            l.iter()
                .enumerate()
                .map(|(i, cell)| format!("{cell:<width$}", width = widths[i]))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}
