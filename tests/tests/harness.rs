//! Proof that the harness is real: these tests pass only against a real kube-apiserver and etcd.

// Integration test file: helpers panic on a broken fixture, which fails the test as it should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use harness::{
    ControlPlane, ControlPlaneOptions, ForeignCrd, controllers, install_crds, shared_fleet,
    test_namespace, wait_for,
};
use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, PostParams};
use kube::core::{ApiResource, GroupVersionKind};

fn meta(name: &str, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        ..ObjectMeta::default()
    }
}

/// Create a ServiceAccount and mint a token for it with the TokenRequest API.
async fn service_account_token(client: &kube::Client, namespace: &str, name: &str) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    accounts
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: meta(name, namespace),
                ..ServiceAccount::default()
            },
        )
        .await
        .unwrap();
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let minted: TokenRequest = accounts
        .create_subresource("token", name, &PostParams::default(), &request)
        .await
        .unwrap();
    minted.status.and_then(|s| s.token).unwrap()
}

#[tokio::test]
async fn version_reports_the_pinned_kubernetes_release() {
    let fleet = shared_fleet().await.unwrap();
    let pinned = harness::binary::pinned_kubernetes_version().unwrap();
    for control_plane in std::iter::once(&fleet.hub).chain(&fleet.members) {
        let version = control_plane
            .client()
            .await
            .unwrap()
            .apiserver_version()
            .await
            .unwrap();
        assert_eq!(version.git_version, pinned, "{}", control_plane.name());
    }
}

#[tokio::test]
async fn crd_with_cel_validation_rejects_a_bad_object() {
    let fleet = shared_fleet().await.unwrap();
    let client = fleet.hub.client().await.unwrap();
    install_crds(&client, &[ForeignCrd::ClusterProfile])
        .await
        .unwrap();
    let namespace = test_namespace(&client, "cel").await.unwrap();
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("multicluster.x-k8s.io", "v1alpha1", "ClusterProfile"),
        "clusterprofiles",
    );
    let profiles: Api<DynamicObject> = Api::namespaced_with(client, &namespace, &resource);
    let profile: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ClusterProfile",
        "metadata": {"name": "member-1", "namespace": namespace},
        "spec": {"clusterManager": {"name": "one-manager"}},
    }))
    .unwrap();
    let created = profiles
        .create(&PostParams::default(), &profile)
        .await
        .unwrap();

    // spec.clusterManager is immutable through the CEL rule `self == oldSelf`.
    let mut changed = created.clone();
    changed.data["spec"]["clusterManager"]["name"] = "another-manager".into();
    let err = profiles
        .replace("member-1", &PostParams::default(), &changed)
        .await
        .expect_err("the apiserver must reject a changed clusterManager");
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert!(
                status.message.contains("ClusterManager is immutable"),
                "{status:?}"
            );
        }
        other => panic!("unexpected error {other}"),
    }
    // An unchanged update passes, so the rule is what rejected the change.
    profiles
        .replace("member-1", &PostParams::default(), &created)
        .await
        .unwrap();
}

#[tokio::test]
async fn token_request_yields_a_token_that_authenticates() {
    let fleet = shared_fleet().await.unwrap();
    let member = &fleet.members[0];
    let admin = member.client().await.unwrap();
    let namespace = test_namespace(&admin, "token").await.unwrap();
    let token = service_account_token(&admin, &namespace, "probe").await;

    let as_service_account = member.token_client(&token).await.unwrap();
    let reviews: Api<SelfSubjectReview> = Api::all(as_service_account);
    let review = reviews
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .unwrap();
    let username = review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .unwrap_or_default();
    assert_eq!(username, format!("system:serviceaccount:{namespace}:probe"));

    // Each control plane signs with its own key: the token means nothing to another member.
    let other = fleet.members[1].token_client(&token).await.unwrap();
    let err = Api::<SelfSubjectReview>::all(other)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect_err("another member must not accept this token");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 401),
        "{err}"
    );
}

#[tokio::test]
async fn rbac_denies_what_was_not_granted() {
    let fleet = shared_fleet().await.unwrap();
    let member = &fleet.members[1];
    let admin = member.client().await.unwrap();
    let namespace = test_namespace(&admin, "rbac").await.unwrap();
    let token = service_account_token(&admin, &namespace, "reader").await;

    Api::<Role>::namespaced(admin.clone(), &namespace)
        .create(
            &PostParams::default(),
            &Role {
                metadata: meta("read-configmaps", &namespace),
                rules: Some(vec![PolicyRule {
                    api_groups: Some(vec![String::new()]),
                    resources: Some(vec!["configmaps".into()]),
                    verbs: vec!["get".into(), "list".into(), "watch".into()],
                    ..PolicyRule::default()
                }]),
            },
        )
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), &namespace)
        .create(
            &PostParams::default(),
            &RoleBinding {
                metadata: meta("read-configmaps", &namespace),
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "Role".into(),
                    name: "read-configmaps".into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: "reader".into(),
                    namespace: Some(namespace.clone()),
                    ..Subject::default()
                }]),
            },
        )
        .await
        .unwrap();

    let reader = member.token_client(&token).await.unwrap();
    // Granted: list configmaps (RBAC takes a moment to see the new binding).
    let configmaps: Api<ConfigMap> = Api::namespaced(reader.clone(), &namespace);
    wait_for(Duration::from_secs(30), "granted list", || {
        let configmaps = configmaps.clone();
        async move {
            Ok(configmaps
                .list(&ListParams::default())
                .await
                .ok()
                .map(|_| ()))
        }
    })
    .await
    .unwrap();
    // Not granted: Secrets in the same namespace, and configmaps elsewhere.
    for err in [
        Api::<Secret>::namespaced(reader.clone(), &namespace)
            .list(&ListParams::default())
            .await
            .expect_err("secrets were not granted"),
        Api::<ConfigMap>::namespaced(reader.clone(), "default")
            .list(&ListParams::default())
            .await
            .expect_err("other namespaces were not granted"),
        Api::<ConfigMap>::namespaced(reader, &namespace)
            .create(
                &PostParams::default(),
                &ConfigMap {
                    metadata: meta("nope", &namespace),
                    ..ConfigMap::default()
                },
            )
            .await
            .expect_err("create was not granted"),
    ] {
        assert!(
            matches!(err, kube::Error::Api(ref s) if s.code == 403),
            "{err}"
        );
    }
}

#[tokio::test]
async fn members_are_distinct_clusters() {
    let fleet = shared_fleet().await.unwrap();
    let mut uids = Vec::new();
    for control_plane in std::iter::once(&fleet.hub).chain(&fleet.members) {
        uids.push(control_plane.kube_system_uid().await.unwrap());
    }
    let distinct: std::collections::BTreeSet<&String> = uids.iter().collect();
    assert_eq!(distinct.len(), 3, "kube-system UIDs {uids:?}");
    assert_ne!(fleet.members[0].server(), fleet.members[1].server());

    // A write on one member is invisible on the other.
    let one = fleet.members[0].client().await.unwrap();
    let namespace = test_namespace(&one, "only-on-one").await.unwrap();
    let two: Api<Namespace> = Api::all(fleet.members[1].client().await.unwrap());
    assert!(two.get_opt(&namespace).await.unwrap().is_none());
}

#[tokio::test]
async fn foreign_crds_install_from_pinned_upstream_modules() {
    let fleet = shared_fleet().await.unwrap();
    let client = fleet.hub.client().await.unwrap();
    install_crds(&client, &ForeignCrd::ALL).await.unwrap();
    let expected = [
        ("multicluster.x-k8s.io", "ClusterProfile"),
        ("cluster.open-cluster-management.io", "ManagedCluster"),
        ("cluster.open-cluster-management.io", "ManagedClusterSet"),
        (
            "cluster.open-cluster-management.io",
            "ManagedClusterSetBinding",
        ),
        ("work.open-cluster-management.io", "ManifestWork"),
        (
            "authentication.open-cluster-management.io",
            "ManagedServiceAccount",
        ),
        ("cluster.x-k8s.io", "Cluster"),
        ("lib.projectsveltos.io", "SveltosCluster"),
        ("about.k8s.io", "ClusterProperty"),
    ];
    let discovery = kube::Discovery::new(client).run().await.unwrap();
    for (group, kind) in expected {
        let found = discovery
            .get(group)
            .map(|g| {
                g.versions()
                    .any(|v| g.versioned_resources(v).iter().any(|(r, _)| r.kind == kind))
            })
            .unwrap_or(false);
        assert!(found, "{group}/{kind} is not served");
    }
    // The module cache path proves where the CRD came from: the pinned module version.
    let path = ForeignCrd::ManagedCluster.path().unwrap();
    assert!(
        path.to_string_lossy()
            .contains("open-cluster-management.io/api@v1.3.0"),
        "{}",
        path.display()
    );
}

#[tokio::test]
async fn controller_manager_runs_the_chosen_controllers_and_drop_stops_everything() {
    let control_plane = ControlPlane::start(
        ControlPlaneOptions::named("with-kcm")
            .with_controllers(&[controllers::NAMESPACE, controllers::SERVICEACCOUNT]),
    )
    .await
    .unwrap();
    let client = control_plane.client().await.unwrap();
    let namespace = test_namespace(&client, "kcm").await.unwrap();

    // serviceaccount-controller creates `default` in every namespace.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    wait_for(Duration::from_secs(60), "default ServiceAccount", || {
        let accounts = accounts.clone();
        async move { Ok(accounts.get_opt("default").await?) }
    })
    .await
    .unwrap();

    // namespace controller finishes deletion (without it the namespace stays Terminating).
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete(&namespace, &DeleteParams::default())
        .await
        .unwrap();
    wait_for(Duration::from_secs(60), "namespace deleted", || {
        let namespaces = namespaces.clone();
        let namespace = namespace.clone();
        async move {
            Ok(namespaces
                .get_opt(&namespace)
                .await?
                .is_none()
                .then_some(()))
        }
    })
    .await
    .unwrap();

    // Dropping the control plane kills every process and removes its directory.
    let dir = control_plane.dir().to_path_buf();
    let server = control_plane.server();
    drop(control_plane);
    assert!(!dir.exists(), "{} still exists", dir.display());
    let port = server.rsplit(':').next().unwrap();
    assert!(
        std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err(),
        "apiserver still listening on {port}"
    );
}

fn alive(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie would still show, so check its state too.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.split_whitespace()
                .nth(2)
                .is_none_or(|state| state != "Z")
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn a_panicking_test_leaves_no_process_behind() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let outcome = tokio::spawn(async move {
        let control_plane = ControlPlane::start(ControlPlaneOptions::named("doomed"))
            .await
            .unwrap();
        tx.send((control_plane.pids(), control_plane.dir().to_path_buf()))
            .unwrap();
        panic!("a test failing while it holds a control plane");
    })
    .await;
    assert!(outcome.unwrap_err().is_panic());
    let (pids, dir) = rx.await.unwrap();
    assert_eq!(pids.len(), 2, "etcd and kube-apiserver");
    for pid in pids {
        assert!(!alive(pid), "process {pid} survived the panic");
    }
    assert!(!dir.exists(), "{} survived the panic", dir.display());
}

#[tokio::test]
async fn a_killed_test_process_takes_its_control_planes_with_it() {
    use std::io::BufRead;
    // The fleet command uses the same harness; SIGKILL gives it no chance to clean up, so only
    // the parent-death signal set on every child can stop its control planes.
    let kubeconfigs = std::env::temp_dir().join(format!("fleet-kill-{}", std::process::id()));
    let mut fleet = std::process::Command::new(env!("CARGO_BIN_EXE_fleet"))
        .args(["--members", "1", "--dir"])
        .arg(&kubeconfigs)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(fleet.stdout.take().unwrap());
    let mut pids = Vec::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        if let Some(list) = line.strip_prefix("pids ").and_then(|l| l.split_once(": ")) {
            pids.extend(
                list.1
                    .trim_matches(['[', ']'])
                    .split(", ")
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
        if line.starts_with("Ctrl-C") {
            break;
        }
    }
    assert_eq!(
        pids.len(),
        4,
        "hub and one member, etcd + apiserver each: {pids:?}"
    );
    assert!(pids.iter().all(|pid| alive(*pid)));
    fleet.kill().unwrap();
    fleet.wait().unwrap();
    wait_for(Duration::from_secs(10), "children gone", || {
        let pids = pids.clone();
        async move { Ok(pids.iter().all(|pid| !alive(*pid)).then_some(())) }
    })
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(kubeconfigs);
}

/// The verbs `apiserver_request_total` reports for each kind of write, read from the apiserver's
/// own /metrics: the "0 writes" checks of the other tests count exactly these
/// (`harness::apiserver_metrics::WRITE_VERBS`). A create is `POST` and an update `PUT` — a helper
/// looking for `CREATE`/`UPDATE` would see neither.
#[tokio::test]
async fn apiserver_request_total_names_every_write_verb() {
    use harness::apiserver_metrics::{WRITE_VERBS, request_count};
    use k8s_openapi::api::core::v1::PodTemplate;
    use kube::api::{Patch, PatchParams};

    let fleet = shared_fleet().await.unwrap();
    let client = fleet.hub.client().await.unwrap();
    let namespace = test_namespace(&client, "verbs").await.unwrap();
    // PodTemplates: a kind no adapter or other test writes, so every count below is ours.
    let api: Api<PodTemplate> = Api::namespaced(client.clone(), &namespace);
    let count = |verbs: &'static [&'static str]| {
        let client = client.clone();
        async move { request_count(&client, verbs, "podtemplates").await.unwrap() }
    };
    const EACH: [&[&str]; 6] = [
        &["POST"],
        &["PUT"],
        &["PATCH"],
        &["APPLY"],
        &["DELETE"],
        &["DELETECOLLECTION"],
    ];
    let mut before = Vec::new();
    for verbs in EACH {
        before.push(count(verbs).await);
    }
    let all_before = count(WRITE_VERBS).await;
    let template = |name: &str| PodTemplate {
        metadata: meta(name, &namespace),
        template: Some(k8s_openapi::api::core::v1::PodTemplateSpec {
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                containers: vec![k8s_openapi::api::core::v1::Container {
                    name: "c".into(),
                    image: Some("example.com/c".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let created = api
        .create(&PostParams::default(), &template("a"))
        .await
        .unwrap();
    api.replace("a", &PostParams::default(), &created)
        .await
        .unwrap();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"labels": {"x": "y"}}})),
    )
    .await
    .unwrap();
    api.patch(
        "b",
        &PatchParams::apply("verbs-test"),
        &Patch::Apply(&template("b")),
    )
    .await
    .unwrap();
    api.delete("a", &DeleteParams::default()).await.unwrap();
    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();

    let mut after = Vec::new();
    for verbs in EACH {
        after.push(count(verbs).await);
    }
    let deltas: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    // A collection delete is labelled DELETE too (seen on v1.36: never DELETECOLLECTION).
    assert_eq!(
        deltas,
        vec![1, 1, 1, 1, 2, 0],
        "POST, PUT, PATCH, APPLY once each; DELETE for the delete and the collection delete"
    );
    assert_eq!(count(WRITE_VERBS).await - all_before, 6);
    assert_eq!(
        count(&["CREATE", "UPDATE"]).await,
        0,
        "the apiserver has no CREATE/UPDATE verb label"
    );
}
