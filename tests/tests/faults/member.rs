//! Faults with a sink in the picture: the hub's apiserver and, separately, its etcd gone mid-sync
//! (ocm-source and sveltos-sink recover by themselves); a member control plane gone for longer
//! than its token's lifetime (re-minted when back; other members never wait for it).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use adapters::profile::{
    AccessProvider, Cluster as ProfileCluster, ClusterManager, ClusterProfile, ClusterProfileSpec,
    EXTENSION_EXEC, LABEL_CLUSTER_MANAGER, NamedExtension,
};
use adapters::sink::record::Record;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use harness::adapter_process::AdapterProcess;
use harness::sinks::{bootstrap_token, whoami};
use harness::{ControlPlane, ControlPlaneOptions, ForeignCrd, install_crds, wait_for};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use sveltos_sink::SveltosCluster;

use crate::common::{
    Cluster, Hub, ReadyzWatch, assert_alive, create_clusters, good_cluster, ocm_args,
    start_adapter, wait_exact, writes,
};

/// The registration record annotation on each credential Secret a sink publishes.
const ANNOTATION_RECORD: &str = "inventory-bridge.io/registration";
/// The manager of the sink's test profiles: the built-in kubeconfig-secret provider trusts it
/// by default.
const CAPI: &str = "cluster-api";

/// Play Cluster API for one cluster reaching `member`: its `<name>-kubeconfig` Secret (type
/// `cluster.x-k8s.io/secret`, labelled with the cluster name, an admin-like bootstrap token) and
/// its ClusterProfile with the `kubeconfig-secret` access provider pointing at that Secret.
async fn capi_profile(
    hub: &Client,
    namespace: &str,
    name: &str,
    member: &ControlPlane,
    token: &str,
) {
    let secret_name = format!("{name}-kubeconfig");
    Api::<Secret>::namespaced(hub.clone(), namespace)
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some(secret_name.clone()),
                    labels: Some(BTreeMap::from([(
                        "cluster.x-k8s.io/cluster-name".to_string(),
                        name.to_string(),
                    )])),
                    ..ObjectMeta::default()
                },
                type_: Some("cluster.x-k8s.io/secret".into()),
                data: Some(BTreeMap::from([(
                    "value".to_string(),
                    ByteString(member.token_kubeconfig_yaml(token).into_bytes()),
                )])),
                ..Secret::default()
            },
        )
        .await
        .unwrap();
    let profiles: Api<ClusterProfile> = Api::namespaced(hub.clone(), namespace);
    let mut profile = ClusterProfile::new(
        name,
        ClusterProfileSpec {
            display_name: None,
            cluster_manager: ClusterManager { name: CAPI.into() },
        },
    );
    profile.metadata.labels = Some(BTreeMap::from([(
        LABEL_CLUSTER_MANAGER.to_string(),
        CAPI.to_string(),
    )]));
    profiles
        .create(&PostParams::default(), &profile)
        .await
        .unwrap();
    let provider = AccessProvider {
        name: "kubeconfig-secret".into(),
        cluster: Some(ProfileCluster {
            server: member.server(),
            certificate_authority_data: Some(BASE64.encode(member.ca_pem())),
            extensions: vec![NamedExtension {
                name: EXTENSION_EXEC.into(),
                extension: json!({"name": secret_name, "key": "value"}),
            }],
            ..ProfileCluster::default()
        }),
    };
    profiles
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [], "accessProviders": [provider]}})),
        )
        .await
        .unwrap();
}

fn sveltos_args(inventory: &str) -> Vec<String> {
    vec![
        format!("--inventory-namespace={inventory}"),
        "--leader-election=false".to_string(),
        "--member-timeout=5s".to_string(),
        "--log-filter=info".to_string(),
    ]
}

/// The sveltos registrations of `namespace`, by profile: the published Secret's record and the
/// kubeconfig. Also checks nothing is duplicated: exactly one SveltosCluster and one Secret per
/// expected profile, nothing else.
async fn sveltos_state(
    hub: &Client,
    namespace: &str,
    expected: &BTreeSet<String>,
) -> Result<BTreeMap<String, (Record, String, String)>, String> {
    let clusters: Api<SveltosCluster> = Api::namespaced(hub.clone(), namespace);
    let names: BTreeSet<String> = clusters
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?
        .items
        .iter()
        .map(|c| c.name_any())
        .collect();
    if &names != expected {
        return Err(format!("SveltosClusters {names:?}"));
    }
    let secrets: Vec<Secret> = Api::<Secret>::namespaced(hub.clone(), namespace)
        .list(&ListParams::default().labels("inventory-bridge.io/sink"))
        .await
        .map_err(|e| e.to_string())?
        .items;
    let mut found = BTreeMap::new();
    for secret in secrets {
        let name = secret.name_any();
        let Some(profile) = name.strip_suffix("-sveltos-kubeconfig") else {
            return Err(format!("unexpected sink Secret {name}"));
        };
        let record = secret
            .annotations()
            .get(ANNOTATION_RECORD)
            .and_then(|a| Record::from_annotation(a))
            .ok_or_else(|| format!("{name} has no record"))?;
        let kubeconfig = secret
            .data
            .as_ref()
            .and_then(|d| d.get("kubeconfig"))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .ok_or_else(|| format!("{name} has no kubeconfig"))?;
        let version = secret.resource_version().unwrap_or_default();
        if found
            .insert(profile.to_string(), (record, kubeconfig, version))
            .is_some()
        {
            return Err(format!("two Secrets for {profile}"));
        }
    }
    let keys: BTreeSet<String> = found.keys().cloned().collect();
    if &keys != expected {
        return Err(format!("sink Secrets for {keys:?}"));
    }
    Ok(found)
}

async fn wait_sveltos(
    hub: &Client,
    namespace: &str,
    expected: &BTreeSet<String>,
    timeout: Duration,
) -> BTreeMap<String, (Record, String, String)> {
    let started = Instant::now();
    loop {
        let last = match sveltos_state(hub, namespace, expected).await {
            Ok(state) => return state,
            Err(why) => why,
        };
        assert!(
            started.elapsed() < timeout,
            "sveltos registrations of {expected:?} not exact after {timeout:?}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The user a published kubeconfig authenticates as on its member.
async fn user_of(kubeconfig: &str) -> String {
    let client = harness::controlplane::client_from_kubeconfig_yaml(kubeconfig)
        .await
        .unwrap();
    whoami(&client).await.unwrap()
}

/// How long the hub is gone in the outage scenario: the 30 s, far past every client
/// timeout and retry of the adapters (watch restarts, per-object backoff, the 5 s member timeout).
const OUTAGE: Duration = Duration::from_secs(30);

/// Stop the hub's apiserver, then separately its etcd, for [`OUTAGE`] each, mid-sync: ocm-source
/// and sveltos-sink recover by themselves (no restart), nothing is lost or duplicated.
///
/// One replica each, without leader election: with it, a replica that cannot renew its Lease for
/// the lease duration stops and exits (its Pod restarts), which is not "by themselves".
/// `/readyz` drops while the hub apiserver is down (the watches fail, so neither adapter is
/// ready) and answers 200 again after. With only etcd down the apiserver keeps serving watches
/// from its cache, so the adapters' watches do not fail and readiness is only reported (their
/// writes fail and are retried; nothing else is lost).
#[tokio::test]
async fn hub_apiserver_and_etcd_outages_mid_sync_lose_nothing() {
    let (hub, member) = tokio::join!(
        Hub::start("outage-hub", ControlPlaneOptions::default()),
        ControlPlane::start(ControlPlaneOptions::named("outage-member"))
    );
    let mut hub = hub;
    let member = member.unwrap();
    install_crds(&hub.client, &[ForeignCrd::SveltosCluster])
        .await
        .unwrap();
    let fleet = harness::test_namespace(&hub.client, "fleet").await.unwrap();
    let token = bootstrap_token(&member, "capi-admin").await;
    let ca = hub.plane.ca_pem().to_string();
    let mut clusters: Vec<Cluster> = (0..100)
        .map(|i| good_cluster("o", "outage", i, &ca))
        .collect();
    create_clusters(&hub.client, &clusters).await;
    let mut sink_profiles: BTreeSet<String> = (0..10).map(|i| format!("edge-{i:02}")).collect();
    for name in &sink_profiles {
        capi_profile(&hub.client, &fleet, name, &member, &token).await;
    }
    // Writes counted from before each round's work appears, so a quick adapter cannot finish
    // the round before the test starts counting.
    let mut before = writes(&hub.client, "clusterprofiles").await;
    let mut ocm = start_adapter("ocm-source", &hub.plane, &ocm_args(&hub, "outage"));
    let mut sink = start_adapter("sveltos-sink", &hub.plane, &sveltos_args(&fleet));
    for adapter in [&mut ocm, &mut sink] {
        adapter
            .wait_http("/readyz", 200, Duration::from_secs(60))
            .await
            .unwrap();
    }
    let mut measured = Vec::new();
    for (round, fault) in ["apiserver", "etcd"].into_iter().enumerate() {
        if round == 1 {
            before = writes(&hub.client, "clusterprofiles").await;
            // New work for the second outage to interrupt.
            let more: Vec<Cluster> = (100..150)
                .map(|i| good_cluster("o", "outage", i, &ca))
                .collect();
            create_clusters(&hub.client, &more).await;
            clusters.extend(more);
            for i in 10..15 {
                let name = format!("edge-{i:02}");
                capi_profile(&hub.client, &fleet, &name, &member, &token).await;
                sink_profiles.insert(name);
            }
        }
        let expected: BTreeMap<String, Cluster> = clusters
            .iter()
            .map(|c| (c.name.clone(), c.clone()))
            .collect();
        // Mid-sync: some of this round's work written, not all of it.
        let client = hub.fresh_client().await;
        wait_for(Duration::from_secs(120), "some profile writes", || {
            let client = client.clone();
            async move { Ok((writes(&client, "clusterprofiles").await >= before + 20).then_some(())) }
        })
        .await
        .unwrap();
        let present = hub
            .profiles()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len();
        let watches = [
            ReadyzWatch::start(ocm.address),
            ReadyzWatch::start(sink.address),
        ];
        match fault {
            "apiserver" => hub.plane.stop_apiserver(),
            _ => hub.plane.stop_etcd(),
        }
        tokio::time::sleep(OUTAGE).await;
        assert_alive(&mut ocm, &format!("ocm-source during the {fault} outage"));
        assert_alive(
            &mut sink,
            &format!("sveltos-sink during the {fault} outage"),
        );
        let back = Instant::now();
        match fault {
            "apiserver" => hub.plane.start_apiserver().await.unwrap(),
            _ => hub.plane.start_etcd().await.unwrap(),
        }
        let hub_ready = back.elapsed();
        let client = hub.fresh_client().await;
        let ocm_exact = wait_exact(
            &client,
            &hub.inventory,
            &expected,
            &BTreeSet::new(),
            Duration::from_secs(300),
        )
        .await
        .unwrap_or_else(|d| {
            panic!(
                "after the {fault} outage: {}\n{}",
                d.summary(),
                ocm.log_tail(30)
            )
        });
        let registrations =
            wait_sveltos(&client, &fleet, &sink_profiles, Duration::from_secs(300)).await;
        let sink_exact = back.elapsed();
        // Up to the watchers' backoff cap (30 s, as client-go's) before a failed watch is tried
        // again, and a streak of watch errors counts as "failing" for 65 s after its last error:
        // after a 30 s outage readiness may take that long to come back.
        for adapter in [&mut ocm, &mut sink] {
            adapter
                .wait_http("/readyz", 200, Duration::from_secs(100))
                .await
                .unwrap();
            assert_alive(adapter, &format!("after the {fault} outage"));
        }
        let [ocm_watch, sink_watch] = watches;
        let (ocm_dropped, _) = ocm_watch.finish().await;
        let (sink_dropped, _) = sink_watch.finish().await;
        if fault == "apiserver" {
            assert!(
                ocm_dropped && sink_dropped,
                "/readyz did not drop while the hub apiserver was down (ocm-source {ocm_dropped}, sveltos-sink {sink_dropped})"
            );
        }
        // Each registration works on the member as the sink's one identity.
        let users: BTreeSet<String> = futures::future::join_all(
            registrations
                .values()
                .map(|(_, kubeconfig, _)| user_of(kubeconfig)),
        )
        .await
        .into_iter()
        .collect();
        assert_eq!(
            users,
            BTreeSet::from([harness::sveltos_member_username()]),
            "every published kubeconfig works as the sink's member identity"
        );
        measured.push(format!(
            "{fault} down {OUTAGE:?} at {present} profiles present: hub ready {hub_ready:?} after the restart; ocm-source exact ({} profiles) {:?} and sveltos-sink exact ({} registrations) {sink_exact:?} after the restart; /readyz dropped: ocm-source {ocm_dropped}, sveltos-sink {sink_dropped}",
            expected.len(),
            hub_ready + ocm_exact,
            registrations.len()
        ));
    }
    eprintln!(
        "MEASURED hub outages (lost 0, duplicated 0): {}",
        measured.join("; ")
    );
}

/// The rotation metric of a sink: failed renewals by category.
async fn failed_rotations(adapter: &AdapterProcess, category: &str) -> u64 {
    let text = harness::http_get(adapter.address, "/metrics")
        .await
        .map(|r| r.1)
        .unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("inventory_bridge_sink_mints_total{"))
        .filter(|l| l.contains("kind=\"rotation\"") && l.contains("result=\"error\""))
        .filter(|l| l.contains(&format!("category=\"{category}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A member control plane gone for longer than its token's lifetime, then back: the
/// registration is re-minted (one TokenRequest on that member) and published; meanwhile the sink
/// retries it with backoff and registers another member's new profile at once.
///
/// Time passing, played honestly: TokenRequest enforces at least 10 minutes of validity, so a
/// real lifetime cannot elapse in a bounded test. The sink's only memory of a token's lifetime
/// across processes is the record on its published Secret; while the member is down the test
/// restarts the sink (kill -9) and moves that record's `expiresAt`/`renewAfter` into the past, as
/// if the TTL had run out while the member was away. Everything else is real.
#[tokio::test]
async fn a_member_back_after_its_token_expired_is_reminted_without_delaying_others() {
    let (hub, m1, m2) = tokio::join!(
        Hub::start("ttl-hub", ControlPlaneOptions::default()),
        ControlPlane::start(ControlPlaneOptions::named("ttl-member-1")),
        ControlPlane::start(ControlPlaneOptions::named("ttl-member-2")),
    );
    let (mut m1, m2) = (m1.unwrap(), m2.unwrap());
    install_crds(&hub.client, &[ForeignCrd::SveltosCluster])
        .await
        .unwrap();
    let fleet = harness::test_namespace(&hub.client, "fleet").await.unwrap();
    let token1 = bootstrap_token(&m1, "capi-admin").await;
    let token2 = bootstrap_token(&m2, "capi-admin").await;
    capi_profile(&hub.client, &fleet, "away", &m1, &token1).await;
    capi_profile(&hub.client, &fleet, "stays", &m2, &token2).await;
    let args = sveltos_args(&fleet);
    let mut sink = start_adapter("sveltos-sink", &hub.plane, &args);
    let mut expected = BTreeSet::from(["away".to_string(), "stays".to_string()]);
    let before = wait_sveltos(&hub.client, &fleet, &expected, Duration::from_secs(90)).await;
    let (away_record, _, _) = before["away"].clone();
    let (_, _, stays_version) = before["stays"].clone();

    // The member goes away; the sink restarts meanwhile and its token's lifetime runs out.
    m1.stop_apiserver();
    let gone = Instant::now();
    sink.process().kill();
    let secrets: Api<Secret> = Api::namespaced(hub.client.clone(), &fleet);
    let now = k8s_openapi::jiff::Timestamp::now();
    let expired = Record {
        expires_at: (now - k8s_openapi::jiff::SignedDuration::from_mins(1)).to_string(),
        renew_after: (now - k8s_openapi::jiff::SignedDuration::from_mins(5)).to_string(),
        ..away_record.clone()
    };
    secrets
        .patch(
            "away-sveltos-kubeconfig",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                ANNOTATION_RECORD: expired.to_annotation(),
                adapters::sink::ANNOTATION_TOKEN_RENEW_AFTER: expired.renew_after,
            }}})),
        )
        .await
        .unwrap();
    let mut sink = start_adapter("sveltos-sink", &hub.plane, &args);

    // While it is gone: renewal attempts fail and are retried with backoff ...
    let retried = wait_for(
        Duration::from_secs(60),
        "two failed renewals of the unreachable member",
        || {
            let sink = &sink;
            async move {
                Ok(Some(failed_rotations(sink, "member-unreachable").await).filter(|n| *n >= 2))
            }
        },
    )
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", sink.log_tail(40)));
    // ... and another member's new profile registers promptly.
    let created = Instant::now();
    capi_profile(&hub.client, &fleet, "newcomer", &m2, &token2).await;
    expected.insert("newcomer".to_string());
    let newcomer_state = {
        let started = Instant::now();
        loop {
            let secret = secrets
                .get_opt("newcomer-sveltos-kubeconfig")
                .await
                .unwrap();
            if let Some(secret) = secret
                && secret.annotations().contains_key(ANNOTATION_RECORD)
            {
                break secret;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the newcomer on the other member was not registered while member-1 was down\n{}",
                sink.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let newcomer_latency = created.elapsed();
    let kubeconfig = newcomer_state
        .data
        .as_ref()
        .and_then(|d| d.get("kubeconfig"))
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        .unwrap();
    assert_eq!(
        user_of(&kubeconfig).await,
        harness::sveltos_member_username()
    );
    // The other member's registration was adopted, not rewritten.
    let during = sveltos_state(&hub.client, &fleet, &expected).await;
    let stays_now = during
        .as_ref()
        .map(|s| s["stays"].2.clone())
        .unwrap_or_default();
    assert_eq!(
        stays_now, stays_version,
        "the other member's Secret is untouched"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let retries_while_down = failed_rotations(&sink, "member-unreachable").await;
    assert_alive(&mut sink, "while member-1 is down");

    // The member comes back: a new token is minted there (its counters start at zero with the
    // restarted apiserver: exactly one TokenRequest) and published.
    m1.start_apiserver().await.unwrap();
    let down_for = gone.elapsed();
    let back = Instant::now();
    let m1_client = m1.client().await.unwrap();
    let state = {
        let started = Instant::now();
        loop {
            if let Ok(state) = sveltos_state(&hub.client, &fleet, &expected).await
                && state["away"].0.expires_at != expired.expires_at
            {
                break state;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "member-1's registration was not re-minted after it came back\n{}",
                sink.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let reminted = back.elapsed();
    let (record, kubeconfig, _) = &state["away"];
    let expires: k8s_openapi::jiff::Timestamp = record.expires_at.parse().unwrap();
    assert!(
        expires > k8s_openapi::jiff::Timestamp::now(),
        "a fresh token"
    );
    assert_eq!(
        record.identity.service_account_uid, away_record.identity.service_account_uid,
        "the same member identity, a new token"
    );
    assert_eq!(
        user_of(kubeconfig).await,
        harness::sveltos_member_username()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Minted tokens (201); an attempt the starting apiserver refused minted nothing.
    let token_requests = crate::common::requests(
        &m1_client,
        &["POST"],
        "serviceaccounts",
        Some("token"),
        Some(201),
    )
    .await;
    assert_eq!(
        token_requests, 1,
        "one token minted on member-1 after it came back"
    );
    assert_alive(&mut sink, "after member-1 came back");
    eprintln!(
        "MEASURED member gone past its token TTL: down {down_for:?}; {retries_while_down} failed renewals retried meanwhile (the first {retried} seen soon after the sink's restart); another member's new profile registered in {newcomer_latency:?} meanwhile; re-minted and published {reminted:?} after the member was back; TokenRequests there: {token_requests}",
    );
}
