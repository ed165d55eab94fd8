//! The adapter runtime against a real apiserver: leader election (a standby is ready but does not
//! write), HTTP endpoints, graceful shutdown releasing the lease, apply without writes when nothing
//! changed (counted by the apiserver itself), and Events.

// Integration test file: helpers panic on a broken fixture, which fails the test as it should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use adapters::apply::{Applier, ApplyOutcome};
use adapters::runtime::{EventRecorder, LogFormat, Metrics, Runtime, RuntimeArgs};
use harness::{shared_fleet, test_namespace, wait_for};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, ObjectMeta};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn runtime_args(namespace: &str, identity: &str) -> RuntimeArgs {
    RuntimeArgs {
        kubeconfig: None,
        http_address: "127.0.0.1:0".parse().unwrap(),
        log_format: LogFormat::Text,
        log_filter: "info".into(),
        leader_election: true,
        lease_name: Some("runtime-test".into()),
        lease_namespace: namespace.into(),
        lease_duration_seconds: 4,
        liveness_stall_seconds: 300,
        identity: Some(identity.into()),
    }
}

async fn http_get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    harness::http_get(address, path).await.unwrap()
}

struct Replica {
    address: std::net::SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<adapters::Result<()>>,
    leading: Arc<AtomicUsize>,
}

/// One replica whose "controller" counts how often it leads and writes a marker ConfigMap as
/// the leader, so a test can see who writes.
async fn start_replica(client: kube::Client, namespace: &str, identity: &'static str) -> Replica {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let runtime = Runtime::new(
        "runtime-test",
        runtime_args(namespace, identity),
        client,
        Metrics::new("runtime-test"),
    );
    let shutdown = runtime.shutdown_token();
    let leading = Arc::new(AtomicUsize::new(0));
    let counter = leading.clone();
    let namespace = namespace.to_string();
    let task = tokio::spawn(runtime.run_with_listener(listener, move |context| {
        let counter = counter.clone();
        let namespace = namespace.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let marker = ConfigMap {
                metadata: ObjectMeta {
                    name: Some("leader".into()),
                    namespace: Some(namespace.clone()),
                    ..ObjectMeta::default()
                },
                data: Some(BTreeMap::from([(
                    "identity".to_string(),
                    identity.to_string(),
                )])),
                ..ConfigMap::default()
            };
            let api: Api<ConfigMap> = Api::namespaced(context.client.clone(), &namespace);
            context.applier.apply(&api, &marker, None, true).await?;
            context.readiness.mark_synced();
            context.stop.cancelled().await;
            Ok(())
        }
    }));
    Replica {
        address,
        shutdown,
        task,
        leading,
    }
}

async fn marker_identity(client: &kube::Client, namespace: &str) -> Option<String> {
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt("leader")
        .await
        .ok()
        .flatten()
        .and_then(|cm| cm.data)
        .and_then(|d| d.get("identity").cloned())
}

#[tokio::test]
async fn one_leader_writes_the_standby_is_ready_and_takes_over_on_shutdown() {
    let fleet = shared_fleet().await.unwrap();
    let client = fleet.hub.client().await.unwrap();
    let namespace = test_namespace(&client, "leader").await.unwrap();

    let first = start_replica(client.clone(), &namespace, "replica-a").await;
    wait_for(Duration::from_secs(30), "replica-a leads", || {
        let client = client.clone();
        let namespace = namespace.clone();
        async move {
            Ok(marker_identity(&client, &namespace)
                .await
                .filter(|i| i == "replica-a"))
        }
    })
    .await
    .unwrap();
    let second = start_replica(client.clone(), &namespace, "replica-b").await;

    // The standby answers ready and healthy but never leads while the leader is alive.
    wait_for(Duration::from_secs(10), "standby ready", || async {
        Ok((http_get(second.address, "/readyz").await.0 == 200).then_some(()))
    })
    .await
    .unwrap();
    assert_eq!(http_get(second.address, "/healthz").await.0, 200);
    tokio::time::sleep(Duration::from_secs(6)).await; // longer than the 4 s lease
    assert_eq!(
        second.leading.load(Ordering::SeqCst),
        0,
        "standby must not lead"
    );
    assert_eq!(first.leading.load(Ordering::SeqCst), 1);
    let (code, metrics) = http_get(first.address, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("inventory_bridge_leader{adapter=\"runtime-test\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("inventory_bridge_ready{adapter=\"runtime-test\"} 1"));
    let (_, standby_metrics) = http_get(second.address, "/metrics").await;
    assert!(standby_metrics.contains("inventory_bridge_leader{adapter=\"runtime-test\"} 0"));
    let lease = Api::<Lease>::namespaced(client.clone(), &namespace)
        .get("runtime-test")
        .await
        .unwrap();
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("replica-a")
    );

    // Graceful shutdown of the leader (what SIGTERM triggers): controllers stop, the lease is
    // released, and the standby takes over well before the lease would have expired on its own.
    first.shutdown.cancel();
    first.task.await.unwrap().unwrap();
    wait_for(Duration::from_secs(30), "replica-b takes over", || {
        let client = client.clone();
        let namespace = namespace.clone();
        async move {
            Ok(marker_identity(&client, &namespace)
                .await
                .filter(|i| i == "replica-b"))
        }
    })
    .await
    .unwrap();
    assert_eq!(second.leading.load(Ordering::SeqCst), 1);
    assert!(
        tokio::net::TcpStream::connect(first.address).await.is_err(),
        "the stopped replica still serves HTTP"
    );
    second.shutdown.cancel();
    second.task.await.unwrap().unwrap();
}

async fn configmap_writes(client: &kube::Client) -> u64 {
    harness::apiserver_metrics::request_count(
        client,
        harness::apiserver_metrics::WRITE_VERBS,
        "configmaps",
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn apply_writes_only_when_something_changed() {
    let fleet = shared_fleet().await.unwrap();
    // A member of its own so no other test's ConfigMap writes are counted.
    let client = fleet.members[0].client().await.unwrap();
    let namespace = test_namespace(&client, "apply").await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let applier = Applier::new("apply-test");
    let desired = |labels: &[(&str, &str)]| ConfigMap {
        metadata: ObjectMeta {
            name: Some("subject".into()),
            namespace: Some(namespace.clone()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
        ..ConfigMap::default()
    };

    let first = desired(&[("env", "prod"), ("team", "a")]);
    assert_eq!(
        applier.apply(&api, &first, None, false).await.unwrap(),
        ApplyOutcome::Applied
    );
    let before = configmap_writes(&client).await;
    for _ in 0..20 {
        let current = api.get("subject").await.unwrap();
        assert_eq!(
            applier
                .apply(&api, &first, Some(&current), false)
                .await
                .unwrap(),
            ApplyOutcome::Unchanged
        );
    }
    let after = configmap_writes(&client).await;
    assert_eq!(after, before, "steady state must send no writes");

    // A label that disappears from what we want disappears from the object.
    let current = api.get("subject").await.unwrap();
    let second = desired(&[("env", "prod")]);
    assert_eq!(
        applier
            .apply(&api, &second, Some(&current), false)
            .await
            .unwrap(),
        ApplyOutcome::Applied
    );
    let labels = api.get("subject").await.unwrap().metadata.labels.unwrap();
    assert_eq!(labels.get("env").map(String::as_str), Some("prod"));
    assert!(!labels.contains_key("team"), "{labels:?}");
    let counted = configmap_writes(&client).await;
    assert_eq!(counted, after + 1);
}

#[tokio::test]
async fn event_recorder_publishes_events_on_the_object() {
    let fleet = shared_fleet().await.unwrap();
    let client = fleet.hub.client().await.unwrap();
    let namespace = test_namespace(&client, "events").await.unwrap();
    let recorder = EventRecorder::new(client.clone(), "runtime-test", "replica-a".into());
    let object = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("ConfigMap".into()),
        name: Some("broken".into()),
        namespace: Some(namespace.clone()),
        uid: Some("00000000-0000-0000-0000-000000000001".into()),
        ..ObjectReference::default()
    };
    // Published in the background: the call returns before the Event exists.
    recorder.warn(&object, "InvalidInput", "Project", "label value too long");
    let events: Api<Event> = Api::namespaced(client, &namespace);
    let found = wait_for(Duration::from_secs(10), "event", || {
        let events = events.clone();
        async move {
            Ok(events
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("InvalidInput")))
        }
    })
    .await
    .unwrap();
    assert_eq!(found.type_.as_deref(), Some("Warning"));
    assert_eq!(found.note.as_deref(), Some("label value too long"));
    assert_eq!(found.reporting_controller.as_deref(), Some("runtime-test"));
    assert_eq!(
        found.regarding.and_then(|r| r.name).as_deref(),
        Some("broken")
    );

    // A second, different problem of the same category is its own Event (not folded into the
    // first one's series with the old text); a repeat of the first aggregates into its series.
    recorder.warn(&object, "InvalidInput", "Project", "claim value too long");
    recorder.warn(&object, "InvalidInput", "Project", "label value too long");
    let expected = std::collections::BTreeMap::from([
        ("claim value too long".to_string(), 1),
        ("label value too long".to_string(), 2),
    ]);
    let notes = || {
        let events = events.clone();
        async move {
            let all = events.list(&ListParams::default()).await?.items;
            Ok::<_, kube::Error>(
                all.iter()
                    .map(|e| {
                        (
                            e.note.clone().unwrap_or_default(),
                            e.series.as_ref().map_or(1, |s| s.count),
                        )
                    })
                    .collect::<std::collections::BTreeMap<String, i32>>(),
            )
        }
    };
    let reached = wait_for(Duration::from_secs(10), "both reports published", || {
        let (notes, expected) = (notes(), expected.clone());
        async move { Ok(Some(notes.await?).filter(|n| *n == expected)) }
    })
    .await;
    assert!(reached.is_ok(), "{:?}", notes().await);
}

/// Events are published several at a time, but one at a time per object: repeats queued back to
/// back still aggregate into one Event's series while other objects' Events go out meanwhile.
#[tokio::test]
async fn queued_repeats_aggregate_while_other_objects_publish_in_parallel() {
    const OTHERS: usize = 30;
    let fleet = shared_fleet().await.unwrap();
    let client = fleet.hub.client().await.unwrap();
    let namespace = test_namespace(&client, "events-parallel").await.unwrap();
    let recorder = EventRecorder::new(client.clone(), "runtime-test", "replica-a".into());
    let object = |name: String, uid: usize| ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("ConfigMap".into()),
        name: Some(name),
        namespace: Some(namespace.clone()),
        uid: Some(format!("00000000-0000-0000-0000-{uid:012}")),
        ..ObjectReference::default()
    };
    let repeated = object("repeated".into(), 0);
    for _ in 0..3 {
        recorder.normal(&repeated, "Registered", "Register", "registered");
    }
    for index in 1..=OTHERS {
        let other = object(format!("c{index}"), index);
        recorder.normal(&other, "Registered", "Register", "registered");
    }
    let events: Api<Event> = Api::namespaced(client, &namespace);
    let counts = || {
        let events = events.clone();
        async move {
            let all = events.list(&ListParams::default()).await?.items;
            let mut by_object = std::collections::BTreeMap::<String, Vec<i32>>::new();
            for event in all {
                by_object
                    .entry(event.regarding.and_then(|r| r.name).unwrap_or_default())
                    .or_default()
                    .push(event.series.map_or(1, |s| s.count));
            }
            Ok::<_, kube::Error>(by_object)
        }
    };
    let reached = wait_for(Duration::from_secs(20), "every report published", || {
        let counts = counts();
        async move {
            let by_object = counts.await?;
            let done = by_object.len() == OTHERS + 1
                && by_object
                    .get("repeated")
                    .is_some_and(|c| c.iter().sum::<i32>() == 3);
            Ok(done.then_some(by_object))
        }
    })
    .await;
    let Ok(by_object) = reached else {
        panic!("not every report published: {:?}", counts().await);
    };
    assert_eq!(by_object.get("repeated"), Some(&vec![3]), "{by_object:?}");
    assert!(
        by_object
            .iter()
            .filter(|(name, _)| *name != "repeated")
            .all(|(_, counts)| counts == &vec![1]),
        "{by_object:?}"
    );
}
