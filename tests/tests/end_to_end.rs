//! The whole chain, end to end, on one estate (`harness::estate`): a hub and three members, Cluster
//! API and OCM played visibly, every adapter a real process — two replicas each, elected through
//! Leases, each replica its own hub ServiceAccount so the hub's audit log names who wrote.
//!
//! The scenarios run in order on the same estate (each leaves it converged for the next) so the
//! file costs one fleet start:
//! 1. a label changes at the source → profile, SveltosCluster, Argo CD Secret and Flux Secret follow;
//! 2. a member's health flips → `ControlPlaneHealthy` follows, registrations stay, the source's
//!    Events explain (ControlPlaneUnhealthy / ControlPlaneHealthy on the profile);
//! 3. a source cluster is deleted → its profile and every registration go, the member identities are
//!    revoked (the old tokens are rejected by the member);
//! 4. the same member under CAPI and OCM → one registration per consumer, the other profile a
//!    duplicate; when the registered profile goes, the other takes over;
//! 5. every adapter killed (-9) at once mid-way and restarted → convergence, no orphans, no
//!    duplicates, no re-minting of valid registrations (member apiserver counters);
//! 6. two replicas of each adapter → only the leader writes (hub audit log, by user).

// Integration test file: a broken fixture fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters::profile::{CONDITION_CONTROL_PLANE_HEALTHY, ClusterProfile};
use harness::estate::{
    ARGOCD_NAMESPACE, Estate, EstateOptions, FLUX_NAMESPACE, INVENTORY, Inventory, Manager, SINKS,
    sveltos_cluster_resource,
};
use harness::{ControlPlane, wait_for};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, DynamicObject, ListParams};
use kube::{Client, ResourceExt};

const CONVERGE: Duration = Duration::from_secs(90);
const WAIT: Duration = Duration::from_secs(60);

fn log(line: &str) {
    eprintln!("{line}");
}

async fn converge(estate: &mut Estate, what: &str) -> Inventory {
    let took = estate
        .wait_converged(CONVERGE, |waiting| {
            eprintln!("[{what}] waiting: {waiting:?}")
        })
        .await
        .unwrap_or_else(|err| panic!("{what}: {err}\n{}", adapter_logs(estate)));
    eprintln!("MEASURED {what}: converged in {:.1} s", took.as_secs_f64());
    let inventory = estate.inventory().await.unwrap();
    assert_exact_registrations(&inventory);
    inventory
}

fn adapter_logs(estate: &Estate) -> String {
    estate
        .adapters
        .values()
        .flatten()
        .map(|r| format!("--- {} ---\n{}", r.log.display(), r.log_tail(15)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// No sink has two registrations of one profile, nor a registration of a profile that is gone.
fn assert_exact_registrations(inventory: &Inventory) {
    let profiles: BTreeSet<&str> = inventory.rows.iter().map(|r| r.profile.as_str()).collect();
    for sink in SINKS {
        let mine: Vec<&str> = inventory
            .registrations
            .iter()
            .filter(|r| r.sink == sink)
            .map(|r| r.profile.as_str())
            .collect();
        let unique: BTreeSet<&str> = mine.iter().copied().collect();
        assert_eq!(
            mine.len(),
            unique.len(),
            "{sink}: duplicate registrations {mine:?}"
        );
        for profile in &unique {
            assert!(
                profiles.contains(profile),
                "{sink}: orphan registration of {profile}"
            );
        }
    }
}

fn registered(inventory: &Inventory, sink: &str) -> BTreeSet<String> {
    inventory
        .registrations
        .iter()
        .filter(|r| r.sink == sink)
        .map(|r| r.profile.clone())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The labels of `keys` on the profile and on each consumer's object for it.
async fn labels_everywhere(
    hub: &Client,
    profile: &str,
    keys: &[&str],
) -> Option<[BTreeMap<String, String>; 4]> {
    let pick = |labels: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        labels
            .iter()
            .filter(|(k, _)| keys.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let profile_object = Api::<ClusterProfile>::namespaced(hub.clone(), INVENTORY)
        .get_opt(profile)
        .await
        .ok()??;
    let sveltos =
        Api::<DynamicObject>::namespaced_with(hub.clone(), INVENTORY, &sveltos_cluster_resource())
            .get_opt(profile)
            .await
            .ok()??;
    let argo = Api::<Secret>::namespaced(hub.clone(), ARGOCD_NAMESPACE)
        .get_opt(&format!("cluster-{INVENTORY}-{profile}"))
        .await
        .ok()??;
    let flux = Api::<Secret>::namespaced(hub.clone(), FLUX_NAMESPACE)
        .get_opt(&format!("{profile}-kubeconfig"))
        .await
        .ok()??;
    Some([
        pick(profile_object.labels()),
        pick(sveltos.labels()),
        pick(argo.labels()),
        pick(flux.labels()),
    ])
}

async fn wait_labels(hub: &Client, profile: &str, expected: &[(&str, &str)]) {
    let keys = ["env", "region", "tier"];
    let expected: BTreeMap<String, String> = expected
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let started = Instant::now();
    wait_for(
        WAIT,
        &format!("{profile}, its SveltosCluster, Argo CD and Flux Secrets labelled {expected:?}"),
        || async {
            Ok(labels_everywhere(hub, profile, &keys)
                .await
                .filter(|all| all.iter().all(|labels| *labels == expected))
                .map(|_| ()))
        },
    )
    .await
    .unwrap();
    eprintln!(
        "MEASURED label change at the source -> profile and all three consumers: {:.2} s",
        started.elapsed().as_secs_f64()
    );
}

fn token_of(kubeconfig: &str) -> String {
    let doc: serde_json::Value = serde_saphyr::from_str(kubeconfig).unwrap();
    doc["users"][0]["user"]["token"]
        .as_str()
        .expect("a token in the generated kubeconfig")
        .to_string()
}

/// The sinks' member ServiceAccounts (`inventory-bridge/inventory-bridge-<sink>`) on `member`.
async fn sink_accounts(member: &ControlPlane) -> BTreeSet<String> {
    Api::<ServiceAccount>::namespaced(member.client().await.unwrap(), "inventory-bridge")
        .list(&ListParams::default())
        .await
        .map(|list| {
            list.items
                .into_iter()
                .map(|a| a.name_any())
                .filter(|n| n.starts_with("inventory-bridge-"))
                .collect()
        })
        .unwrap_or_default()
}

/// TokenRequests (`POST serviceaccounts/token`) the member's apiserver has served.
async fn token_requests(member: &ControlPlane) -> u64 {
    let client = member.client().await.unwrap();
    let text = client
        .request_text(http::Request::get("/metrics").body(Vec::new()).unwrap())
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter(|l| {
            l.contains("resource=\"serviceaccounts\"")
                && l.contains("subresource=\"token\"")
                && l.contains("verb=\"POST\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Member-side writes of RBAC and ServiceAccounts (what minting an identity anew writes).
async fn identity_writes(member: &ControlPlane) -> u64 {
    let client = member.client().await.unwrap();
    let mut total = 0;
    for resource in [
        "serviceaccounts",
        "clusterroles",
        "clusterrolebindings",
        "roles",
        "rolebindings",
    ] {
        total += harness::apiserver_metrics::request_count(
            &client,
            harness::apiserver_metrics::WRITE_VERBS,
            resource,
        )
        .await
        .unwrap();
    }
    total
}

/// Non-Lease write requests to the hub per user, from the audit log.
fn hub_writes_by_user(estate: &Estate) -> BTreeMap<String, usize> {
    let mut writes = BTreeMap::new();
    for event in estate.fleet.hub.audit_events().unwrap() {
        let resource = event
            .object_ref
            .as_ref()
            .map(|o| o.resource.as_str())
            .unwrap_or_default();
        if matches!(event.verb.as_str(), "get" | "list" | "watch") || resource == "leases" {
            continue;
        }
        *writes.entry(event.user.username.clone()).or_default() += 1;
    }
    writes
}

#[tokio::test]
async fn the_whole_chain_end_to_end() {
    let suite = Instant::now();
    let dir = std::env::temp_dir().join(format!("inventory-bridge-e2e-{}", std::process::id()));
    let mut options = EstateOptions::new(&dir);
    options.replicas = 2;
    options.audit = true;
    // Long enough that a busy 2-core machine renews in time; a replica that loses its lease
    // anyway exits and is started again, as its Deployment would.
    options.lease_seconds = 10;
    options.restart_exited = true;
    let mut estate = Estate::start(options, Arc::new(log)).await.unwrap();
    let hub = estate.hub().await.unwrap();
    let inventory = converge(&mut estate, "initial estate").await;
    for sink in SINKS {
        assert_eq!(
            registered(&inventory, sink),
            set(&["capi-demo-prod-eu", "ap-south"]),
            "{sink}"
        );
    }

    // ---- 1. a label changes at the source --------------------------------------------------
    estate
        .set_cluster_labels(
            "prod-eu",
            Manager::Capi,
            &[("env", Some("production")), ("tier", Some("gold"))],
        )
        .await
        .unwrap();
    wait_labels(
        &hub,
        "capi-demo-prod-eu",
        &[("env", "production"), ("region", "eu"), ("tier", "gold")],
    )
    .await;
    estate
        .set_cluster_labels("ap-south", Manager::Ocm, &[("region", None)])
        .await
        .unwrap();
    wait_labels(&hub, "ap-south", &[("env", "dev")]).await;
    converge(&mut estate, "1. labels followed").await;

    // ---- 2. a member's health flips ----------------------------------------------------------
    let before = estate.inventory().await.unwrap();
    let identities = |inventory: &Inventory| -> BTreeSet<(String, String, String)> {
        inventory
            .registrations
            .iter()
            .filter(|r| r.profile == "ap-south")
            .map(|r| {
                (
                    r.sink.clone(),
                    r.secret.clone(),
                    r.service_account_uid.clone(),
                )
            })
            .collect()
    };
    let events_before = harness::sinks::events_about(&hub, INVENTORY, "ap-south").await;
    estate.set_ocm_available("ap-south", false).await.unwrap();
    let profiles: Api<ClusterProfile> = Api::namespaced(hub.clone(), INVENTORY);
    let healthy = |status: &'static str| {
        move |p: &ClusterProfile| {
            p.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == CONDITION_CONTROL_PLANE_HEALTHY && c.status == status)
            })
        }
    };
    let unhealthy =
        harness::wait_object(&profiles, "ap-south", "unhealthy", WAIT, healthy("False"))
            .await
            .unwrap();
    let condition = unhealthy
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == CONDITION_CONTROL_PLANE_HEALTHY)
        .unwrap();
    assert_eq!(condition.reason, "ManagedClusterLeaseUpdateStopped");
    // Registrations stay: same Secrets, same member identities.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = estate.inventory().await.unwrap();
    assert_eq!(identities(&during), identities(&before));
    assert_eq!(identities(&during).len(), 3);
    // The source explains the flip with an Event on the profile (from what to what, and why);
    // the sinks keep the registration: no Event of theirs about it changes.
    let explained =
        harness::sinks::wait_event(&hub, INVENTORY, "ap-south", "ControlPlaneUnhealthy").await;
    assert!(
        explained.contains("True -> False")
            && explained.contains("ManagedClusterLeaseUpdateStopped"),
        "the health Event does not say what changed and why: {explained}"
    );
    let is_health_event = |reason: &str| reason.starts_with("ControlPlane");
    let sink_events = |events: Vec<(String, String)>| -> Vec<(String, String)> {
        events
            .into_iter()
            .filter(|(reason, _)| !is_health_event(reason))
            .collect()
    };
    let events = harness::sinks::events_about(&hub, INVENTORY, "ap-south").await;
    assert_eq!(
        sink_events(events.clone()),
        sink_events(events_before),
        "the sinks reacted to a health change"
    );
    assert!(
        events
            .iter()
            .filter(|(reason, _)| reason == "Registered")
            .count()
            == 3
    );
    estate.set_ocm_available("ap-south", true).await.unwrap();
    harness::wait_object(
        &profiles,
        "ap-south",
        "healthy again",
        WAIT,
        healthy("True"),
    )
    .await
    .unwrap();
    let recovered =
        harness::sinks::wait_event(&hub, INVENTORY, "ap-south", "ControlPlaneHealthy").await;
    assert!(
        recovered.contains("False -> True"),
        "the recovery Event does not say what changed: {recovered}"
    );
    let after = converge(&mut estate, "2. health flipped and back").await;
    assert_eq!(identities(&after), identities(&before));

    // ---- 3. a source cluster is deleted -----------------------------------------------------
    let old_tokens: Vec<String> = after
        .registrations
        .iter()
        .filter(|r| r.profile == "ap-south")
        .map(|r| token_of(&r.kubeconfig))
        .collect();
    assert_eq!(old_tokens.len(), 3);
    let started = Instant::now();
    estate
        .delete_cluster("ap-south", Manager::Ocm)
        .await
        .unwrap();
    harness::wait_object_gone(&profiles, "ap-south", WAIT)
        .await
        .unwrap();
    let after_delete = converge(&mut estate, "3. cluster deleted").await;
    for sink in SINKS {
        assert!(!registered(&after_delete, sink).contains("ap-south"));
    }
    let member_3 = &estate.fleet.members[2];
    for token in &old_tokens {
        harness::sinks::wait_token_rejected(member_3, token).await;
    }
    eprintln!(
        "MEASURED cluster deleted -> profile, registrations gone and 3 old tokens rejected: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // The played work agent removes what the deleted ManifestWork applied: no sink identity
    // is left on the member.
    wait_for(WAIT, "no sink identity left on member-3", || async {
        Ok(sink_accounts(member_3).await.is_empty().then_some(()))
    })
    .await
    .unwrap();

    // ---- 4. the same member under CAPI and OCM ---------------------------------------------
    let row = |inventory: &Inventory, name: &str| {
        inventory
            .rows
            .iter()
            .find(|r| r.profile == name)
            .cloned()
            .unwrap()
    };
    let prod = row(&after_delete, "capi-demo-prod-eu");
    let shared = row(&after_delete, "eu-central");
    assert_eq!(prod.member_id, shared.member_id);
    assert_eq!(prod.member_id, estate.member_ids[0]);
    assert!(shared.registered_with.is_empty());
    assert_eq!(
        shared.duplicate_reported_by,
        SINKS.iter().map(|s| s.to_string()).collect()
    );
    let prod_identities: BTreeMap<String, (String, String)> = after_delete
        .registrations
        .iter()
        .filter(|r| r.profile == "capi-demo-prod-eu")
        .map(|r| {
            (
                r.sink.clone(),
                (r.service_account_uid.clone(), token_of(&r.kubeconfig)),
            )
        })
        .collect();
    assert_eq!(prod_identities.len(), 3);
    let started = Instant::now();
    estate
        .delete_cluster("prod-eu", Manager::Capi)
        .await
        .unwrap();
    let takeover = converge(&mut estate, "4. the other profile took over").await;
    eprintln!(
        "MEASURED registered profile deleted -> its duplicate registered by all three sinks: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for sink in SINKS {
        assert_eq!(registered(&takeover, sink), set(&["eu-central"]), "{sink}");
    }
    let member_1 = &estate.fleet.members[0];
    for registration in &takeover.registrations {
        assert_eq!(registration.server, member_1.server());
    }
    // A sink's member identity is one per (sink, member): when the duplicate registered before the
    // old profile's cleanup ran, the identity is kept (Event MemberIdentityKept) and carries on;
    // otherwise it was revoked (the old token rejected) and minted anew.
    let prod_events = harness::sinks::events_about(&hub, INVENTORY, "capi-demo-prod-eu").await;
    let kept_events = prod_events
        .iter()
        .filter(|(reason, _)| reason == "MemberIdentityKept")
        .count();
    let mut kept = 0;
    for registration in &takeover.registrations {
        let (old_uid, old_token) = &prod_identities[&registration.sink];
        if &registration.service_account_uid == old_uid {
            kept += 1;
            eprintln!(
                "{}: member identity kept for the takeover",
                registration.sink
            );
        } else {
            harness::sinks::wait_token_rejected(member_1, old_token).await;
            eprintln!(
                "{}: member identity revoked and minted anew",
                registration.sink
            );
        }
    }
    assert!(
        kept_events >= kept,
        "{kept} identities kept, {kept_events} MemberIdentityKept Events: {prod_events:#?}"
    );
    let proofs = estate.prove(&takeover).await;
    assert_eq!(proofs.len(), 3);
    assert!(proofs.iter().all(|p| p.ok), "{proofs:#?}");

    // ---- 5. every adapter killed (-9) at once mid-way, and restarted ----------------------
    let members = &estate.fleet.members;
    let tokens_before = token_requests(&members[0]).await;
    let writes_before = identity_writes(&members[0]).await;
    let registrations_before: BTreeSet<(String, String)> = takeover
        .registrations
        .iter()
        .map(|r| (r.secret.clone(), r.service_account_uid.clone()))
        .collect();
    // Mid-way: a label change the adapters are about to act on.
    estate
        .set_cluster_labels("eu-central", Manager::Ocm, &[("tier", Some("silver"))])
        .await
        .unwrap();
    estate.kill_and_restart_all().unwrap();
    let started = Instant::now();
    wait_labels(
        &hub,
        "eu-central",
        &[("env", "prod"), ("region", "eu"), ("tier", "silver")],
    )
    .await;
    let restarted = converge(&mut estate, "5. after kill -9 of every adapter").await;
    eprintln!(
        "MEASURED every adapter killed and restarted -> converged: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let members = &estate.fleet.members;
    let registrations_after: BTreeSet<(String, String)> = restarted
        .registrations
        .iter()
        .map(|r| (r.secret.clone(), r.service_account_uid.clone()))
        .collect();
    assert_eq!(
        registrations_after, registrations_before,
        "same Secrets, same identities"
    );
    assert_eq!(
        token_requests(&members[0]).await - tokens_before,
        0,
        "a valid registration was minted anew after the restart"
    );
    assert_eq!(
        identity_writes(&members[0]).await - writes_before,
        0,
        "member identity objects were written after the restart"
    );

    // ---- 6. two replicas of each adapter: only the leader writes ------------------------
    let before = hub_writes_by_user(&estate);
    estate
        .set_cluster_labels("eu-central", Manager::Ocm, &[("tier", Some("bronze"))])
        .await
        .unwrap();
    estate
        .set_cluster_labels("staging-us", Manager::Capi, &[("tier", Some("bronze"))])
        .await
        .unwrap();
    wait_labels(
        &hub,
        "eu-central",
        &[("env", "prod"), ("region", "eu"), ("tier", "bronze")],
    )
    .await;
    wait_for(WAIT, "staging-us profile relabelled", || {
        let profiles = profiles.clone();
        async move {
            Ok(profiles
                .get_opt("capi-demo-staging-us")
                .await?
                .filter(|p| p.labels().get("tier").map(String::as_str) == Some("bronze"))
                .map(|_| ()))
        }
    })
    .await
    .unwrap();
    converge(&mut estate, "6. relabelled with two replicas each").await;
    let after = hub_writes_by_user(&estate);
    let leases: Api<Lease> = Api::namespaced(hub.clone(), "default");
    for adapter in [
        "capi-source",
        "ocm-source",
        "sveltos-sink",
        "argocd-sink",
        "flux-sink",
    ] {
        let holder = leases
            .get(adapter)
            .await
            .unwrap()
            .spec
            .and_then(|s| s.holder_identity)
            .unwrap_or_default();
        let delta = |replica: usize| {
            let user = format!("system:serviceaccount:default:{adapter}-{replica}");
            after.get(&user).copied().unwrap_or(0) - before.get(&user).copied().unwrap_or(0)
        };
        let (first, second) = (delta(0), delta(1));
        eprintln!(
            "MEASURED {adapter}: hub writes by replica 0: {first}, replica 1: {second}; lease holder {holder}"
        );
        let leader = match holder.as_str() {
            h if h == format!("{adapter}-0") => 0,
            h if h == format!("{adapter}-1") => 1,
            other => panic!("{adapter}: unexpected lease holder {other:?}"),
        };
        let (leader_writes, standby_writes) = if leader == 0 {
            (first, second)
        } else {
            (second, first)
        };
        assert!(leader_writes > 0, "{adapter}: its leader wrote nothing");
        assert_eq!(standby_writes, 0, "{adapter}: the standby wrote");
    }

    estate.stop_adapters().await;
    drop(estate);
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "MEASURED end-to-end suite: {:.1} s",
        suite.elapsed().as_secs_f64()
    );
}
