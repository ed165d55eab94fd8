//! argocd-sink on real control planes: a hub and two members of the shared fleet (plus a member of
//! its own where a test needs the default identity). The sink runs in-process with the real
//! runtime, configured by its real command line; what it writes is read the way Argo CD reads it.
//! Every log line of the process is captured and searched for secrets.

// Integration test file: helpers panic on a broken fixture, which fails the test as it should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use adapters::member::LABEL_MANAGED_BY;
use adapters::profile::ClusterProfile;
use adapters::sink::RenewalPolicy;
use adapters::sink::render_helpers::object_name;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use harness::sinks::{
    argo_cluster, argocd_from_args, assert_no_secret_leaked, bootstrap_token, create_profile,
    flux_from_args, flux_kubeconfig, hub_secret, kubeconfig_provider, may, patch_profile_labels,
    provider, quick, start_sink, wait_event, wait_member_account, wait_secret_gone,
    wait_token_rejected, whoami,
};
use harness::{
    ControlPlane, ControlPlaneOptions, ForeignCrd, install_crd, install_crds, shared_fleet,
    test_namespace, wait_for, wait_object_gone,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

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

/// Argo CD's own in-cluster entry, as Argo CD keeps it when declared as a Secret.
async fn argocd_in_cluster_entry(hub: &Client, argocd_namespace: &str) -> Secret {
    let data = |v: &str| ByteString(v.as_bytes().to_vec());
    Api::<Secret>::namespaced(hub.clone(), argocd_namespace)
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    labels: Some(BTreeMap::from([(
                        "argocd.argoproj.io/secret-type".to_string(),
                        "cluster".to_string(),
                    )])),
                    ..meta(
                        "cluster-kubernetes.default.svc-3396314289",
                        Some(argocd_namespace),
                    )
                },
                data: Some(BTreeMap::from([
                    ("name".to_string(), data("in-cluster")),
                    ("server".to_string(), data(argocd_sink::IN_CLUSTER_SERVER)),
                    (
                        "config".to_string(),
                        data(r#"{"tlsClientConfig":{"insecure":false}}"#),
                    ),
                ])),
                ..Secret::default()
            },
        )
        .await
        .unwrap()
}

/// Namespaced mode, end to end: the Secret has exactly Argo CD's keys, JSON field names and
/// types; its credential authenticates to the right member as the minted account and may act in
/// the listed namespaces only; profile labels are copied and removed; deleting the profile removes
/// the Secret, the Roles and the account, and the member then rejects the old token.
#[tokio::test]
async fn namespaced_cluster_secret_reads_like_argocd_reaches_only_its_namespaces_and_is_revoked() {
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let m1 = &fleet.members[0];
    let ns = test_namespace(&hub, "argo-nsd").await.unwrap();
    let argo = test_namespace(&hub, "argocd").await.unwrap();
    hub_secret(&hub, &ns, "m1-admin", "value", &m1.admin_kubeconfig_yaml()).await;
    let (apps_a, apps_b) = (format!("{ns}-a"), format!("{ns}-b"));
    let member_namespace = format!("ar-{ns}");
    let namespaces = format!("{apps_b},{apps_a}");
    let (sink, options) = argocd_from_args(&[
        "--inventory-namespace",
        &ns,
        "--argocd-namespace",
        &argo,
        "--member-namespace",
        &member_namespace,
        "--namespaces",
        &namespaces,
        "--project",
        "fleet",
        "--shard",
        "1",
        "--property-labels",
        "region=example.com/region",
        "--property-annotations",
        "region=example.com/region-note",
    ]);
    let identity = options.identity.clone();
    assert_eq!(identity.namespaces, vec![apps_a.clone(), apps_b.clone()]);
    let running = start_sink(&hub, sink, quick(options)).await;
    let created = std::time::Instant::now();
    create_profile(
        &hub,
        &ns,
        "edge",
        &[("env", "test"), ("tier", "gold")],
        kubeconfig_provider(m1, "m1-admin"),
        json!([{"name": "region", "value": "eu-1"}]),
    )
    .await;

    let secret_name = format!("cluster-{ns}-edge");
    let cluster = argo_cluster(&hub, &argo, &secret_name, |_| true).await;
    eprintln!(
        "MEASURED argocd-sink profile created -> cluster Secret (namespaced mode, 2 Roles): {:.2} s",
        created.elapsed().as_secs_f64()
    );
    let keys: Vec<&str> = cluster.data.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "clusterResources",
            "config",
            "name",
            "namespaces",
            "project",
            "server",
            "shard"
        ]
    );
    assert_eq!(cluster.data["name"], "edge");
    assert_eq!(cluster.data["server"], m1.server().trim_end_matches('/'));
    assert_eq!(cluster.data["namespaces"], format!("{apps_a},{apps_b}"));
    assert_eq!(cluster.data["clusterResources"], "false");
    assert_eq!(cluster.data["project"], "fleet");
    assert_eq!(cluster.data["shard"], "1");
    let raw: Value = serde_json::from_str(&cluster.data["config"]).unwrap();
    assert!(raw["bearerToken"].is_string());
    assert!(raw["tlsClientConfig"]["insecure"].is_boolean());
    assert!(raw["tlsClientConfig"]["caData"].is_string());
    let tls = &cluster.config.tls_client_config;
    assert!(!tls.insecure);
    let ca = BASE64.decode(tls.ca_data.as_deref().unwrap()).unwrap();
    assert_eq!(String::from_utf8(ca).unwrap(), m1.ca_pem());
    assert!(cluster.config.proxy_url.is_none());
    let labels = cluster.labels();
    assert_eq!(labels["argocd.argoproj.io/secret-type"], "cluster");
    assert_eq!(labels["env"], "test");
    assert_eq!(labels["tier"], "gold");
    assert_eq!(labels["example.com/region"], "eu-1");
    assert_eq!(labels["inventory-bridge.io/profile-name"], "edge");
    assert_eq!(labels["inventory-bridge.io/profile-namespace"], ns);
    let annotations = cluster.secret.metadata.annotations.clone().unwrap();
    assert_eq!(annotations["example.com/region-note"], "eu-1");
    assert_eq!(
        annotations["inventory-bridge.io/profile"],
        format!("{ns}/edge")
    );

    // The credential: m1's CA verifies the server (so it is m1), the account is the minted one,
    // and it may act in the listed namespaces and nowhere else.
    let client = cluster.client().await.unwrap();
    assert_eq!(whoami(&client).await.unwrap(), identity.username());
    assert!(
        may(
            &client,
            "create",
            "apps",
            "deployments",
            Some(apps_a.as_str())
        )
        .await
    );
    assert!(may(&client, "delete", "", "configmaps", Some(apps_b.as_str())).await);
    assert!(!may(&client, "get", "", "secrets", Some("default")).await);
    assert!(
        !may(
            &client,
            "create",
            "apps",
            "deployments",
            Some("kube-system")
        )
        .await
    );
    assert!(!may(&client, "list", "", "namespaces", None).await);
    assert!(
        !may(
            &client,
            "create",
            "rbac.authorization.k8s.io",
            "clusterroles",
            None
        )
        .await
    );
    Api::<ConfigMap>::namespaced(client.clone(), &apps_a)
        .list(&ListParams::default())
        .await
        .expect("allowed in a listed namespace");
    let denied = Api::<ConfigMap>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await;
    assert!(matches!(denied, Err(kube::Error::Api(ref s)) if s.code == 403));
    let admin = m1.client().await.unwrap();
    for namespace in [&apps_a, &apps_b] {
        let role = Api::<Role>::namespaced(admin.clone(), namespace)
            .get(&identity.cluster_role)
            .await
            .unwrap();
        assert_eq!(role.rules.unwrap(), identity.namespaced_rules());
        Api::<RoleBinding>::namespaced(admin.clone(), namespace)
            .get(&identity.cluster_role_binding)
            .await
            .unwrap();
    }
    assert!(
        Api::<ClusterRoleBinding>::all(admin.clone())
            .get_opt(&identity.cluster_role_binding)
            .await
            .unwrap()
            .is_none(),
        "namespaced mode grants nothing cluster-wide"
    );

    // Label copy and removal.
    patch_profile_labels(
        &hub,
        &ns,
        "edge",
        &[("tier", None), ("env", Some("changed"))],
    )
    .await;
    argo_cluster(&hub, &argo, &secret_name, |c| {
        let labels = c.labels();
        labels.get("env").map(String::as_str) == Some("changed") && !labels.contains_key("tier")
    })
    .await;

    // Deletion revokes.
    let token = cluster.config.bearer_token.clone();
    Api::<ClusterProfile>::namespaced(hub.clone(), &ns)
        .delete("edge", &DeleteParams::default())
        .await
        .unwrap();
    wait_secret_gone(&hub, &argo, &secret_name).await;
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), &identity.namespace);
    wait_object_gone(&accounts, &identity.service_account, WAIT)
        .await
        .unwrap();
    for namespace in [&apps_a, &apps_b] {
        let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), namespace);
        wait_object_gone(&bindings, &identity.cluster_role_binding, WAIT)
            .await
            .unwrap();
        let roles: Api<Role> = Api::namespaced(admin.clone(), namespace);
        wait_object_gone(&roles, &identity.cluster_role, WAIT)
            .await
            .unwrap();
    }
    wait_token_rejected(m1, &token).await;
    running
        .wait_metric(
            "inventory_bridge_sink_cleanups_total",
            &[("result", "complete")],
            1.0,
        )
        .await;
    assert_no_secret_leaked(&hub, &[&ns, &argo], &[token]).await;
}

/// Rotation rewrites the same Secret (same uid) with a new token; the old one keeps working until
/// it expires. Cluster-wide mode: the ClusterRole holds exactly the `argocd cluster add` rules.
#[tokio::test]
async fn rotation_updates_the_cluster_secret_in_place() {
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let m2 = &fleet.members[1];
    let ns = test_namespace(&hub, "argo-rot").await.unwrap();
    let argo = test_namespace(&hub, "argocd").await.unwrap();
    let boot = bootstrap_token(m2, &format!("boot-{ns}")).await;
    hub_secret(&hub, &ns, "boot", "token", &boot).await;
    harness::sinks::managed_cluster(&hub, &ns, &[m2]).await;
    let member_namespace = format!("ar-{ns}");
    let (sink, options) = argocd_from_args(&[
        "--inventory-namespace",
        &ns,
        "--argocd-namespace",
        &argo,
        "--member-namespace",
        &member_namespace,
        "--token-ttl",
        "10m",
    ]);
    let identity = options.identity.clone();
    let mut options = quick(options);
    // Renew at 0.5 % of the 600 s lifetime (3 s) instead of at 2/3 (the apiserver's floor is 10m).
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
        vec![provider(
            "token-secret",
            m2,
            Some(json!({"name": "boot", "namespace": ns})),
        )],
        json!([]),
    )
    .await;
    let name = format!("cluster-{ns}-rotating");
    let first = argo_cluster(&hub, &argo, &name, |_| true).await;
    let first_token = first.config.bearer_token.clone();
    let second = argo_cluster(&hub, &argo, &name, |c| c.config.bearer_token != first_token).await;
    assert_eq!(
        first.secret.metadata.uid, second.secret.metadata.uid,
        "the same Secret, updated in place"
    );
    let old = m2.token_client(&first_token).await.unwrap();
    let new = second.client().await.unwrap();
    assert_eq!(whoami(&old).await.unwrap(), identity.username());
    assert_eq!(whoami(&new).await.unwrap(), identity.username());
    assert!(may(&new, "list", "", "namespaces", None).await);
    let role = Api::<ClusterRole>::all(m2.client().await.unwrap())
        .get(&identity.cluster_role)
        .await
        .unwrap();
    assert_eq!(role.rules.unwrap(), adapters::member::full_access_rules());
    running
        .wait_metric(
            "inventory_bridge_sink_mints_total",
            &[("kind", "rotation"), ("result", "success")],
            1.0,
        )
        .await;
    let second_token = second.config.bearer_token.clone();
    assert_no_secret_leaked(&hub, &[&ns, &argo], &[first_token, second_token, boot]).await;
}

/// Two inventories each hold a profile named `edge`. Secret names never collide; with the default
/// `{name}` template their Argo CD cluster names would, so the newer profile is refused with a
/// NameConflict Event naming the older, until the older goes away. With `{namespace}/{name}` both
/// register. Argo CD's own in-cluster entry is never touched.
#[tokio::test]
async fn same_named_profiles_of_two_inventories_never_shadow_each_other() {
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let m1 = &fleet.members[0];
    let inv_a = test_namespace(&hub, "argo-inva").await.unwrap();
    let inv_b = test_namespace(&hub, "argo-invb").await.unwrap();
    let argo = test_namespace(&hub, "argocd").await.unwrap();
    let in_cluster = argocd_in_cluster_entry(&hub, &argo).await;
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
    let member_namespace = format!("ar-{inv_a}");
    let args = |template: &'static str| {
        argocd_from_args(&[
            "--inventory-namespace",
            &inventories,
            "--argocd-namespace",
            &argo,
            "--member-namespace",
            &member_namespace,
            "--cluster-name-template",
            template,
        ])
    };
    let (sink, options) = args("{name}");
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
    tokio::time::sleep(Duration::from_millis(1100)).await; // creationTimestamp has 1 s resolution
    create_profile(
        &hub,
        &inv_b,
        "edge",
        &[],
        kubeconfig_provider(m1, "m1-admin"),
        json!([]),
    )
    .await;
    let (name_a, name_b) = (
        format!("cluster-{inv_a}-edge"),
        format!("cluster-{inv_b}-edge"),
    );
    assert_ne!(name_a, name_b);
    let a = argo_cluster(&hub, &argo, &name_a, |_| true).await;
    assert_eq!(a.data["name"], "edge");
    let note = wait_event(&hub, &inv_b, "edge", "NameConflict").await;
    assert!(note.contains(&format!("{inv_a}/edge")), "{note}");
    assert!(note.contains("\"edge\""), "{note}");
    running
        .wait_metric(
            "inventory_bridge_problems_total",
            &[("category", "name-conflict")],
            1.0,
        )
        .await;
    let secrets: Api<Secret> = Api::namespaced(hub.clone(), &argo);
    assert!(secrets.get_opt(&name_b).await.unwrap().is_none());
    // The older one goes away: the name is free and the other registers (its retry is 30 s).
    Api::<ClusterProfile>::namespaced(hub.clone(), &inv_a)
        .delete("edge", &DeleteParams::default())
        .await
        .unwrap();
    wait_secret_gone(&hub, &argo, &name_a).await;
    let b = argo_cluster(&hub, &argo, &name_b, |_| true).await;
    assert_eq!(b.data["name"], "edge");
    running.stop().await;

    // With the inventory in the template, same-named profiles coexist.
    let (sink, options) = args("{namespace}/{name}");
    let _running = start_sink(&hub, sink, quick(options)).await;
    create_profile(
        &hub,
        &inv_a,
        "core",
        &[],
        kubeconfig_provider(m1, "m1-admin"),
        json!([]),
    )
    .await;
    create_profile(
        &hub,
        &inv_b,
        "core",
        &[],
        kubeconfig_provider(m1, "m1-admin"),
        json!([]),
    )
    .await;
    for inventory in [&inv_a, &inv_b] {
        let c = argo_cluster(&hub, &argo, &format!("cluster-{inventory}-core"), |_| true).await;
        assert_eq!(c.data["name"], format!("{inventory}/core"));
    }
    // A profile name too long for `cluster-<inventory>-<profile>` gets a bounded, stable name.
    let long = format!("{}-edge", "x".repeat(240));
    create_profile(
        &hub,
        &inv_a,
        &long,
        &[],
        kubeconfig_provider(m1, "m1-admin"),
        json!([]),
    )
    .await;
    let bounded = object_name(&format!("cluster-{inv_a}-{long}"));
    assert!(bounded.len() <= 253);
    argo_cluster(&hub, &argo, &bounded, |_| true).await;

    let untouched = secrets
        .get("cluster-kubernetes.default.svc-3396314289")
        .await
        .unwrap();
    assert_eq!(
        untouched.metadata.resource_version, in_cluster.metadata.resource_version,
        "Argo CD's in-cluster entry is never written"
    );
}

/// Play `argocd cluster add`: ServiceAccount `kube-system/argocd-manager`, ClusterRole
/// `argocd-manager-role` (everything) and its binding.
async fn play_argocd_cluster_add(member: &ControlPlane) {
    member.kube_system_uid().await.unwrap();
    let admin = member.client().await.unwrap();
    Api::<ServiceAccount>::namespaced(admin.clone(), "kube-system")
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: meta("argocd-manager", Some("kube-system")),
                ..ServiceAccount::default()
            },
        )
        .await
        .unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .create(
            &PostParams::default(),
            &ClusterRole {
                metadata: meta("argocd-manager-role", None),
                rules: Some(vec![PolicyRule {
                    api_groups: Some(vec!["*".into()]),
                    resources: Some(vec!["*".into()]),
                    verbs: vec!["*".into()],
                    ..PolicyRule::default()
                }]),
                ..ClusterRole::default()
            },
        )
        .await
        .unwrap();
    Api::<ClusterRoleBinding>::all(admin)
        .create(
            &PostParams::default(),
            &ClusterRoleBinding {
                metadata: meta("argocd-manager-role-binding", None),
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "ClusterRole".into(),
                    name: "argocd-manager-role".into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: "argocd-manager".into(),
                    namespace: Some("kube-system".into()),
                    ..Subject::default()
                }]),
            },
        )
        .await
        .unwrap();
}

/// argocd-sink, flux-sink and sveltos-sink, all with their default identities, on one member that
/// `argocd cluster add` has registered too: three distinct accounts and ClusterRoles, Argo CD's own
/// objects untouched; deleting the profile revokes all three and leaves Argo CD's.
#[tokio::test]
async fn three_sinks_on_one_member_get_three_identities_beside_argocd_cluster_add() {
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    // A member of its own: default identities are per member, and other tests use the shared ones.
    let member = ControlPlane::start(ControlPlaneOptions::named("three-sinks"))
        .await
        .unwrap();
    play_argocd_cluster_add(&member).await;
    let admin = member.client().await.unwrap();
    let argocd_manager_version = Api::<ClusterRole>::all(admin.clone())
        .get("argocd-manager-role")
        .await
        .unwrap()
        .metadata
        .resource_version;
    let ns = test_namespace(&hub, "three").await.unwrap();
    let argo = test_namespace(&hub, "argocd").await.unwrap();
    let flux = test_namespace(&hub, "flux").await.unwrap();
    hub_secret(&hub, &ns, "admin", "value", &member.admin_kubeconfig_yaml()).await;
    let (argocd, argocd_options) =
        argocd_from_args(&["--inventory-namespace", &ns, "--argocd-namespace", &argo]);
    let (fluxsink, flux_options) =
        flux_from_args(&["--inventory-namespace", &ns, "--flux-namespace", &flux]);
    let identities = [
        argocd_options.identity.clone(),
        flux_options.identity.clone(),
    ];
    let _argocd = start_sink(&hub, argocd, quick(argocd_options)).await;
    let _flux = start_sink(&hub, fluxsink, quick(flux_options)).await;
    // sveltos-sink from its command line: a provider file trusting the test profiles' manager.
    let provider_file = std::env::temp_dir().join(format!("ib-providers-{ns}.json"));
    std::fs::write(
        &provider_file,
        json!({"providers": [{"name": "kubeconfig-secret", "clusterManagers": [harness::sinks::TEST_MANAGER]}]})
            .to_string(),
    )
    .unwrap();
    let sveltos = harness::run_sveltos_sink(
        hub.clone(),
        &[
            "--inventory-namespace",
            &ns,
            "--clusterprofile-provider-file",
            provider_file.to_str().unwrap(),
        ],
    )
    .await
    .unwrap();
    create_profile(
        &hub,
        &ns,
        "shared",
        &[],
        kubeconfig_provider(&member, "admin"),
        json!([]),
    )
    .await;

    let argo_entry = argo_cluster(&hub, &argo, &format!("cluster-{ns}-shared"), |_| true).await;
    let flux_secret = flux_kubeconfig(&hub, &flux, "shared-kubeconfig", |_| true).await;
    let (sveltos_kubeconfig, sveltos_user) = harness::sveltos_registration(&hub, &ns, "shared")
        .await
        .unwrap();
    let argo_client = argo_entry.client().await.unwrap();
    let flux_client = flux_secret.client().await.unwrap();
    let users = [
        whoami(&argo_client).await.unwrap(),
        whoami(&flux_client).await.unwrap(),
        sveltos_user,
    ];
    assert_eq!(
        users,
        [
            "system:serviceaccount:inventory-bridge:inventory-bridge-argocd-sink",
            "system:serviceaccount:inventory-bridge:inventory-bridge-flux-sink",
            "system:serviceaccount:inventory-bridge:inventory-bridge-sveltos-sink",
        ]
    );
    assert!(may(&flux_client, "impersonate", "", "serviceaccounts", None).await);
    let ours = Api::<ClusterRole>::all(admin.clone())
        .list(&ListParams::default().labels(&format!("{LABEL_MANAGED_BY}=inventory-bridge")))
        .await
        .unwrap();
    let mut names: Vec<String> = ours
        .items
        .iter()
        .filter_map(|r| r.metadata.name.clone())
        .collect();
    names.sort();
    assert_eq!(names.len(), 3, "{names:?}");
    for name in &names {
        assert!(!name.starts_with("argocd-manager"), "{name}");
    }
    for identity in &identities {
        assert!(names.contains(&identity.cluster_role));
        assert_ne!(identity.service_account, "argocd-manager");
    }

    Api::<ClusterProfile>::namespaced(hub.clone(), &ns)
        .delete("shared", &DeleteParams::default())
        .await
        .unwrap();
    for identity in &identities {
        let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), &identity.namespace);
        wait_object_gone(&accounts, &identity.service_account, WAIT)
            .await
            .unwrap();
    }
    harness::wait_sveltos_registration_revoked(&hub, &ns, "shared", &member)
        .await
        .unwrap();
    wait_token_rejected(&member, &argo_entry.config.bearer_token).await;
    wait_token_rejected(&member, &flux_secret.token).await;
    // `argocd cluster add`'s objects are still there, unchanged.
    Api::<ServiceAccount>::namespaced(admin.clone(), "kube-system")
        .get("argocd-manager")
        .await
        .unwrap();
    let role = Api::<ClusterRole>::all(admin.clone())
        .get("argocd-manager-role")
        .await
        .unwrap();
    assert_eq!(role.metadata.resource_version, argocd_manager_version);
    Api::<ClusterRoleBinding>::all(admin)
        .get("argocd-manager-role-binding")
        .await
        .unwrap();
    sveltos.shutdown().await.unwrap();
    let sveltos_token = {
        let doc: Value = serde_saphyr::from_str(&sveltos_kubeconfig).unwrap();
        doc["users"][0]["user"]["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_no_secret_leaked(
        &hub,
        &[&ns, &argo, &flux],
        &[
            argo_entry.config.bearer_token.clone(),
            flux_secret.token.clone(),
            sveltos_token,
        ],
    )
    .await;
}

/// Bad input: each broken profile gets its Event and metric category and no Secret; a property
/// that is not a valid label value is skipped and reported while its profile registers; the good
/// profiles are never held up; no secret reaches a log line or an Event.
#[tokio::test]
async fn bad_inputs_are_reported_and_never_block_the_others() {
    let fleet = shared_fleet().await.unwrap();
    let hub = hub_ready(&fleet.hub).await;
    let m1 = &fleet.members[0];
    let ns = test_namespace(&hub, "argo-bad").await.unwrap();
    let argo = test_namespace(&hub, "argocd").await.unwrap();
    let boot = bootstrap_token(m1, &format!("boot-{ns}")).await;
    hub_secret(&hub, &ns, "boot", "token", &boot).await;
    harness::sinks::managed_cluster(&hub, &ns, &[m1]).await;
    let bogus = "bogus-bootstrap-token-0123456789abcdef".to_string();
    hub_secret(&hub, &ns, "bogus", "token", &bogus).await;
    let malformed_secret = "SECRET-IN-A-MALFORMED-KUBECONFIG-42".to_string();
    hub_secret(
        &hub,
        &ns,
        "malformed",
        "value",
        &format!("apiVersion: v1\nusers: [ {{ token: {malformed_secret}\n"),
    )
    .await;
    let member_namespace = format!("ar-{ns}");
    let (sink, options) = argocd_from_args(&[
        "--inventory-namespace",
        &ns,
        "--argocd-namespace",
        &argo,
        "--member-namespace",
        &member_namespace,
        "--property-labels",
        "note",
    ]);
    let running = start_sink(&hub, sink, quick(options)).await;
    let token_provider = |secret: &str| {
        vec![provider(
            "token-secret",
            m1,
            Some(json!({"name": secret, "namespace": ns})),
        )]
    };
    create_profile(
        &hub,
        &ns,
        "good",
        &[],
        token_provider("boot"),
        json!([{"name": "note", "value": "not a label value!"}]),
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
        token_provider("bogus"),
        json!([]),
    )
    .await;
    create_profile(
        &hub,
        &ns,
        "malformed",
        &[],
        kubeconfig_provider(m1, "malformed"),
        json!([]),
    )
    .await;

    let good = argo_cluster(&hub, &argo, &format!("cluster-{ns}-good"), |_| true).await;
    assert!(!good.labels().contains_key("note"));
    let note = wait_event(&hub, &ns, "good", "InvalidLabelValue").await;
    assert!(!note.contains("not a label value!"), "{note}");
    for (profile, reason, category, says) in [
        (
            "no-provider",
            "NoAccessProvider",
            "no-access-provider",
            "unknown-manager",
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
        running
            .wait_metric(
                "inventory_bridge_problems_total",
                &[("category", category)],
                1.0,
            )
            .await;
        assert!(
            Api::<Secret>::namespaced(hub.clone(), &argo)
                .get_opt(&format!("cluster-{ns}-{profile}"))
                .await
                .unwrap()
                .is_none(),
            "{profile}"
        );
    }
    wait_member_account(m1, &member_namespace, "inventory-bridge-argocd-sink").await;
    let good_client = good.client().await.unwrap();
    assert_eq!(
        whoami(&good_client).await.unwrap(),
        format!("system:serviceaccount:{member_namespace}:inventory-bridge-argocd-sink")
    );
    // Nothing it writes lands outside the Argo CD namespace.
    let stray = Api::<Secret>::namespaced(hub.clone(), &ns)
        .list(&ListParams::default().labels("inventory-bridge.io/sink=argocd-sink"))
        .await
        .unwrap();
    assert!(stray.items.is_empty());
    wait_for(WAIT, "registered gauge", || async {
        Ok((running
            .metric(
                "inventory_bridge_sink_registrations",
                &[("state", "registered")],
            )
            .await
            >= 1.0)
            .then_some(()))
    })
    .await
    .unwrap();
    assert_no_secret_leaked(
        &hub,
        &[&ns, &argo],
        &[
            good.config.bearer_token.clone(),
            boot,
            bogus,
            malformed_secret,
        ],
    )
    .await;
}
