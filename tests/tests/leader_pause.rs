//! A deposed leader writes nothing: two replicas of an adapter run as real processes, each with
//! its own ServiceAccount on the hub; the leader is paused (SIGSTOP) past its lease, the standby
//! takes over, the old leader is resumed (SIGCONT). The hub's audit log, which names the user of
//! every write request it receives, must show no write from the old leader after the takeover,
//! and the old leader must end with a failure exit code (its Pod restarts).
//!
//! Why the audit log: `apiserver_request_total` has no user label, and `managedFields` name the
//! field manager, which both replicas share. One ServiceAccount per replica plus the audit log
//! attributes every request, including refused ones, to the replica that sent it.

// Integration test file: helpers panic on a broken fixture, which fails the test as it should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use harness::adapter_process::AdapterProcess;
use harness::{ControlPlane, ControlPlaneOptions, test_namespace, wait_for};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, PostParams};

fn meta(name: &str, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        ..ObjectMeta::default()
    }
}

fn rule(group: &str, resource: &str, verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.into()]),
        resources: Some(vec![resource.into()]),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    }
}

/// A ServiceAccount `name` allowed what the probe does in `namespace`; returns its token.
async fn replica_identity(client: &kube::Client, namespace: &str, name: &str) -> String {
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
    Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .create(
            &PostParams::default(),
            &RoleBinding {
                metadata: meta(name, namespace),
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "Role".into(),
                    name: "probe".into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: name.into(),
                    namespace: Some(namespace.into()),
                    ..Subject::default()
                }]),
            },
        )
        .await
        .unwrap();
    let minted: TokenRequest = accounts
        .create_subresource(
            "token",
            name,
            &PostParams::default(),
            &TokenRequest {
                spec: Some(TokenRequestSpec {
                    expiration_seconds: Some(3600),
                    ..TokenRequestSpec::default()
                }),
                ..TokenRequest::default()
            },
        )
        .await
        .unwrap();
    minted.status.and_then(|s| s.token).unwrap()
}

async fn heartbeat_writer(client: &kube::Client, namespace: &str) -> Option<String> {
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt("heartbeat")
        .await
        .ok()
        .flatten()
        .and_then(|cm| cm.data)
        .and_then(|d| d.get("writer").cloned())
}

#[tokio::test]
async fn a_paused_leader_writes_nothing_after_the_standby_took_over() {
    let hub = ControlPlane::start(ControlPlaneOptions::named("hub").with_audit())
        .await
        .unwrap();
    let admin = hub.client().await.unwrap();
    let namespace = test_namespace(&admin, "leader").await.unwrap();
    Api::<Role>::namespaced(admin.clone(), &namespace)
        .create(
            &PostParams::default(),
            &Role {
                metadata: meta("probe", &namespace),
                rules: Some(vec![
                    rule(
                        "",
                        "configmaps",
                        &["get", "list", "watch", "create", "update", "patch"],
                    ),
                    rule(
                        "coordination.k8s.io",
                        "leases",
                        &["get", "list", "watch", "create", "update", "patch"],
                    ),
                    rule("events.k8s.io", "events", &["create", "patch"]),
                ]),
            },
        )
        .await
        .unwrap();
    let binary = Path::new(env!("CARGO_BIN_EXE_leader-probe"));
    let start = |identity: &'static str, token: &str| {
        AdapterProcess::start_with_kubeconfig(
            binary,
            &hub.token_kubeconfig_yaml(token),
            &[
                "--probe-namespace",
                &namespace,
                "--lease-namespace",
                &namespace,
                "--lease-name",
                "probe",
                "--lease-duration-seconds",
                "4",
                "--identity",
                identity,
            ],
        )
        .unwrap()
    };
    let token_a = replica_identity(&admin, &namespace, "replica-a").await;
    let token_b = replica_identity(&admin, &namespace, "replica-b").await;
    let user_a = format!("system:serviceaccount:{namespace}:replica-a");
    let user_b = format!("system:serviceaccount:{namespace}:replica-b");

    let mut a = start("replica-a", &token_a);
    let writer = |who: &'static str| {
        let admin = admin.clone();
        let namespace = namespace.clone();
        move || {
            let admin = admin.clone();
            let namespace = namespace.clone();
            async move {
                Ok(heartbeat_writer(&admin, &namespace)
                    .await
                    .filter(|w| w == who))
            }
        }
    };
    wait_for(
        Duration::from_secs(60),
        "replica-a leads",
        writer("replica-a"),
    )
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", a.log_tail(30)));
    let mut b = start("replica-b", &token_b);
    b.wait_http("/readyz", 200, Duration::from_secs(30))
        .await
        .unwrap();

    // Pause the leader for longer than its lease: the standby takes over.
    a.process().signal(libc::SIGSTOP).unwrap();
    wait_for(
        Duration::from_secs(60),
        "replica-b takes over",
        writer("replica-b"),
    )
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", b.log_tail(30)));
    // Resume the old leader while the new one writes: its overdue timers fire at once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    a.process().signal(libc::SIGCONT).unwrap();
    let status = wait_for(Duration::from_secs(30), "the old leader to exit", || {
        let status = a.process().exit_status();
        async move { Ok(status) }
    })
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", a.log_tail(30)));
    assert!(
        !status.success(),
        "a deposed leader ends with a failure so its Pod restarts: {status}\n{}",
        a.log_tail(30)
    );
    // The new leader keeps writing meanwhile.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        heartbeat_writer(&admin, &namespace).await.as_deref(),
        Some("replica-b")
    );

    let events = hub.audit_events().unwrap();
    let in_namespace = |e: &&harness::controlplane::AuditEvent| {
        e.object_ref.as_ref().and_then(|o| o.namespace.as_deref()) == Some(namespace.as_str())
    };
    // The takeover: the first write the new leader's identity got accepted (its lease grab).
    let takeover = events
        .iter()
        .filter(in_namespace)
        .filter(|e| e.user.username == user_b && e.succeeded())
        .filter_map(|e| e.received())
        .min()
        .expect("replica-b wrote");
    let from_a: Vec<_> = events
        .iter()
        .filter(in_namespace)
        .filter(|e| e.user.username == user_a)
        .collect();
    let before = from_a
        .iter()
        .filter(|e| e.received().is_some_and(|t| t < takeover))
        .filter(|e| {
            e.object_ref
                .as_ref()
                .is_some_and(|o| o.resource == "configmaps")
        })
        .count();
    assert!(before > 0, "replica-a wrote heartbeats while it led");
    let after: Vec<String> = from_a
        .iter()
        .filter(|e| e.received().is_none_or(|t| t >= takeover))
        .map(|e| {
            format!(
                "{} {} {} at {}",
                e.verb,
                e.object_ref
                    .as_ref()
                    .map(|o| o.resource.clone())
                    .unwrap_or_default(),
                e.response_status.as_ref().map_or(0, |s| s.code),
                e.request_received_timestamp
            )
        })
        .collect();
    println!(
        "MEASURED leader pause: replica-a wrote {before} heartbeats while leading, {} requests to write after replica-b took over",
        after.len()
    );
    assert!(
        after.is_empty(),
        "the deposed leader sent writes after the takeover: {after:#?}\n{}",
        a.log_tail(40)
    );
    drop(b);
}
