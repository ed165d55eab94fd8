//! flux-sink on real control planes: a hub and two members of the shared fleet. The sink runs
//! in-process with the real runtime, configured by its real command line; what it writes is read
//! the way Flux reads it (`spec.kubeConfig.secretRef` → key `value`, static token, inline CA).
//! Every log line of the process is captured and searched for secrets.

// Integration test file: helpers panic on a broken fixture, which fails the test as it should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use adapters::profile::ClusterProfile;
use adapters::sink::RenewalPolicy;
use harness::sinks::{
    assert_no_secret_leaked, bootstrap_token, create_profile, flux_from_args, flux_kubeconfig,
    hub_secret, kubeconfig_provider, may, patch_profile_labels, provider, quick, start_sink,
    wait_event, wait_secret_gone, wait_token_rejected, whoami,
};
use harness::{ControlPlane, install_crd, shared_fleet, test_namespace, wait_object_gone};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

async fn hub_ready(hub: &ControlPlane) -> Client {
    let client = hub.client().await.unwrap();
    static CRDS: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    CRDS.get_or_init(|| async {
        install_crd(&client, adapters::crd::cluster_profile_crd())
            .await
            .unwrap();
        harness::install_crds(&client, &[harness::ForeignCrd::ManagedCluster])
            .await
            .unwrap();
    })
    .await;
    client
}

/// One Secret per Flux namespace, each a kubeconfig Flux accepts (static token, inline CA, no
/// exec) that reaches the right member as the minted account, which may impersonate (for
/// `spec.serviceAccountName`); labels copied and removed; a Secret deleted by hand comes back;
/// deleting the profile removes every Secret and the account, and the member rejects the token.
#[tokio::test]
async fn kubeconfig_secrets_in_every_flux_namespace_reach_the_member_and_are_revoked() {
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let m2 = &fleet.members[1];
    let ns = test_namespace(&hub, "flux-life").await.unwrap();
    let flux_a = test_namespace(&hub, "flux-a").await.unwrap();
    let flux_b = test_namespace(&hub, "flux-b").await.unwrap();
    let boot = bootstrap_token(m2, &format!("boot-{ns}")).await;
    hub_secret(&hub, &ns, "boot", "token", &boot).await;
    harness::sinks::managed_cluster(&hub, &ns, &[m2]).await;
    let member_namespace = format!("fx-{ns}");
    let (sink, options) = flux_from_args(&[
        "--inventory-namespace",
        &ns,
        "--flux-namespace",
        &flux_a,
        "--flux-namespace",
        &flux_b,
        "--member-namespace",
        &member_namespace,
    ]);
    let identity = options.identity.clone();
    let running = start_sink(&hub, sink, quick(options)).await;
    let created = std::time::Instant::now();
    create_profile(
        &hub,
        &ns,
        "web",
        &[("env", "test"), ("tier", "gold")],
        vec![provider(
            "token-secret",
            m2,
            Some(json!({"name": "boot", "namespace": ns})),
        )],
        json!([]),
    )
    .await;

    let mut tokens = Vec::new();
    for flux in [&flux_a, &flux_b] {
        let secret = flux_kubeconfig(&hub, flux, "web-kubeconfig", |_| true).await;
        eprintln!(
            "MEASURED flux-sink profile created -> kubeconfig Secret in {flux}: {:.2} s",
            created.elapsed().as_secs_f64()
        );
        let labels = secret.labels();
        assert_eq!(labels["reconcile.fluxcd.io/watch"], "Enabled");
        assert_eq!(labels["env"], "test");
        assert_eq!(labels["tier"], "gold");
        assert_eq!(labels["inventory-bridge.io/profile-name"], "web");
        assert_eq!(
            secret
                .secret
                .data
                .as_ref()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["value"]
        );
        assert_eq!(secret.ca_pem(), m2.ca_pem());
        let client = secret.client().await.unwrap();
        assert_eq!(whoami(&client).await.unwrap(), identity.username());
        let seen = Api::<Namespace>::all(client.clone())
            .get("kube-system")
            .await
            .unwrap()
            .metadata
            .uid;
        assert_eq!(seen.unwrap(), m2.kube_system_uid().await.unwrap());
        for resource in ["serviceaccounts", "users", "groups"] {
            assert!(
                may(&client, "impersonate", "", resource, None).await,
                "{resource}"
            );
        }
        tokens.push(secret.token.clone());
    }
    assert_eq!(
        tokens[0], tokens[1],
        "one identity, one token, every namespace"
    );
    let role = Api::<ClusterRole>::all(m2.client().await.unwrap())
        .get(&identity.cluster_role)
        .await
        .unwrap();
    assert_eq!(role.rules.unwrap(), identity.rules);

    patch_profile_labels(
        &hub,
        &ns,
        "web",
        &[("tier", None), ("env", Some("changed"))],
    )
    .await;
    for flux in [&flux_a, &flux_b] {
        flux_kubeconfig(&hub, flux, "web-kubeconfig", |s| {
            let labels = s.labels();
            labels.get("env").map(String::as_str) == Some("changed") && !labels.contains_key("tier")
        })
        .await;
    }
    // Deleted by hand: put back at once (the engine watches its Secrets).
    Api::<Secret>::namespaced(hub.clone(), &flux_a)
        .delete("web-kubeconfig", &DeleteParams::default())
        .await
        .unwrap();
    flux_kubeconfig(&hub, &flux_a, "web-kubeconfig", |_| true).await;

    Api::<ClusterProfile>::namespaced(hub.clone(), &ns)
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    for flux in [&flux_a, &flux_b] {
        wait_secret_gone(&hub, flux, "web-kubeconfig").await;
    }
    let accounts: Api<ServiceAccount> =
        Api::namespaced(m2.client().await.unwrap(), &identity.namespace);
    wait_object_gone(&accounts, &identity.service_account, WAIT)
        .await
        .unwrap();
    wait_token_rejected(m2, &tokens[0]).await;
    running
        .wait_metric(
            "inventory_bridge_sink_cleanups_total",
            &[("result", "complete")],
            1.0,
        )
        .await;
    let token = tokens[0].clone();
    assert_no_secret_leaked(&hub, &[&ns, &flux_a, &flux_b], &[token, boot]).await;
}

/// Rotation rewrites the same Secret (same uid) with a new token; the old one keeps working.
#[tokio::test]
async fn rotation_updates_the_kubeconfig_secret_in_place() {
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let m1 = &fleet.members[0];
    let ns = test_namespace(&hub, "flux-rot").await.unwrap();
    let flux = test_namespace(&hub, "flux").await.unwrap();
    hub_secret(&hub, &ns, "m1-admin", "value", &m1.admin_kubeconfig_yaml()).await;
    let member_namespace = format!("fx-{ns}");
    let (sink, options) = flux_from_args(&[
        "--inventory-namespace",
        &ns,
        "--flux-namespace",
        &flux,
        "--member-namespace",
        &member_namespace,
        "--token-ttl",
        "10m",
    ]);
    let identity = options.identity.clone();
    let mut options = quick(options);
    options.renewal = RenewalPolicy {
        fraction: 0.005,
        jitter: 0.001,
    };
    let running = start_sink(&hub, sink, options).await;
    create_profile(
        &hub,
        &ns,
        "rotating",
        &[],
        kubeconfig_provider(m1, "m1-admin"),
        json!([]),
    )
    .await;
    let first = flux_kubeconfig(&hub, &flux, "rotating-kubeconfig", |_| true).await;
    let second = flux_kubeconfig(&hub, &flux, "rotating-kubeconfig", |s| {
        s.token != first.token
    })
    .await;
    assert_eq!(first.secret.metadata.uid, second.secret.metadata.uid);
    let old = m1.token_client(&first.token).await.unwrap();
    assert_eq!(whoami(&old).await.unwrap(), identity.username());
    let new = second.client().await.unwrap();
    assert_eq!(whoami(&new).await.unwrap(), identity.username());
    running
        .wait_metric(
            "inventory_bridge_sink_mints_total",
            &[("kind", "rotation"), ("result", "success")],
            1.0,
        )
        .await;
    assert_no_secret_leaked(&hub, &[&ns, &flux], &[first.token, second.token]).await;
}

/// Same-named profiles of two inventories: under the default `{name}-kubeconfig` their Secrets in
/// one Flux namespace would be one, so the newer profile is refused with a NameConflict Event; a
/// template with `{namespace}` keeps them apart.
#[tokio::test]
async fn same_named_profiles_conflict_on_one_secret_name_and_a_template_separates_them() {
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let m1 = &fleet.members[0];
    let inv_a = test_namespace(&hub, "flux-inva").await.unwrap();
    let inv_b = test_namespace(&hub, "flux-invb").await.unwrap();
    let flux = test_namespace(&hub, "flux").await.unwrap();
    for inventory in [&inv_a, &inv_b] {
        hub_secret(
            &hub,
            inventory,
            "m1-admin",
            "value",
            &m1.admin_kubeconfig_yaml(),
        )
        .await;
    }
    let inventories = format!("{inv_a},{inv_b}");
    let member_namespace = format!("fx-{inv_a}");
    let args = |template: &'static str| {
        flux_from_args(&[
            "--inventory-namespace",
            &inventories,
            "--flux-namespace",
            &flux,
            "--member-namespace",
            &member_namespace,
            "--secret-name-template",
            template,
        ])
    };
    let (sink, options) = args("{name}-kubeconfig");
    let running = start_sink(&hub, sink, quick(options)).await;
    create_profile(
        &hub,
        &inv_a,
        "edge",
        &[],
        kubeconfig_provider(m1, "m1-admin"),
        json!([]),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    create_profile(
        &hub,
        &inv_b,
        "edge",
        &[],
        kubeconfig_provider(m1, "m1-admin"),
        json!([]),
    )
    .await;
    let first = flux_kubeconfig(&hub, &flux, "edge-kubeconfig", |_| true).await;
    assert_eq!(
        first.secret.metadata.annotations.as_ref().unwrap()["inventory-bridge.io/profile"],
        format!("{inv_a}/edge")
    );
    let note = wait_event(&hub, &inv_b, "edge", "NameConflict").await;
    assert!(note.contains(&format!("{inv_a}/edge")), "{note}");
    running.stop().await;

    let (sink, options) = args("{namespace}-{name}");
    let _running = start_sink(&hub, sink, quick(options)).await;
    for inventory in [&inv_a, &inv_b] {
        let secret = flux_kubeconfig(&hub, &flux, &format!("{inventory}-edge"), |_| true).await;
        assert_eq!(
            secret.secret.metadata.annotations.as_ref().unwrap()["inventory-bridge.io/profile"],
            format!("{inventory}/edge")
        );
    }
    // The Secret named by the old template stays with its (live) profile until that profile goes:
    // the engine removes hub objects on deletion and as orphans, not when a template changes.
    let ours = Api::<Secret>::namespaced(hub.clone(), &flux)
        .list(&ListParams::default().labels("inventory-bridge.io/sink=flux-sink"))
        .await
        .unwrap();
    assert!(ours.items.len() >= 2);
}

/// Bad input: each broken profile gets its Event and category and no Secret; the good one registers.
#[tokio::test]
async fn bad_inputs_are_reported_and_never_block_the_others() {
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let m1 = &fleet.members[0];
    let ns = test_namespace(&hub, "flux-bad").await.unwrap();
    let flux = test_namespace(&hub, "flux").await.unwrap();
    hub_secret(&hub, &ns, "m1-admin", "value", &m1.admin_kubeconfig_yaml()).await;
    let bogus = "bogus-bootstrap-token-0123456789abcdef".to_string();
    hub_secret(&hub, &ns, "bogus", "token", &bogus).await;
    harness::sinks::managed_cluster(&hub, &ns, &[m1]).await;
    let member_namespace = format!("fx-{ns}");
    let (sink, options) = flux_from_args(&[
        "--inventory-namespace",
        &ns,
        "--flux-namespace",
        &flux,
        "--member-namespace",
        &member_namespace,
    ]);
    let running = start_sink(&hub, sink, quick(options)).await;
    create_profile(
        &hub,
        &ns,
        "good",
        &[],
        kubeconfig_provider(m1, "m1-admin"),
        json!([]),
    )
    .await;
    create_profile(
        &hub,
        &ns,
        "no-provider",
        &[],
        vec![provider("unknown-manager", m1, None)],
        json!([]),
    )
    .await;
    create_profile(
        &hub,
        &ns,
        "refused",
        &[],
        vec![provider(
            "token-secret",
            m1,
            Some(json!({"name": "bogus", "namespace": ns})),
        )],
        json!([]),
    )
    .await;
    create_profile(
        &hub,
        &ns,
        "no-secret",
        &[],
        kubeconfig_provider(m1, "absent"),
        json!([]),
    )
    .await;
    let good = flux_kubeconfig(&hub, &flux, "good-kubeconfig", |_| true).await;
    for (profile, reason, category) in [
        ("no-provider", "NoAccessProvider", "no-access-provider"),
        ("refused", "MemberRefusedCredential", "member-refused"),
        ("no-secret", "BootstrapSecretUnusable", "bootstrap-secret"),
    ] {
        wait_event(&hub, &ns, profile, reason).await;
        running
            .wait_metric(
                "inventory_bridge_problems_total",
                &[("category", category)],
                1.0,
            )
            .await;
        assert!(
            Api::<Secret>::namespaced(hub.clone(), &flux)
                .get_opt(&format!("{profile}-kubeconfig"))
                .await
                .unwrap()
                .is_none(),
            "{profile}"
        );
    }
    assert_no_secret_leaked(&hub, &[&ns, &flux], &[good.token, bogus]).await;
}
