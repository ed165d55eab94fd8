//! The ClusterProfile CRD we generate: committed output is current; it equals upstream v0.2.0's in
//! both versions (schemas node by node, printer columns, categories) and its `v1alpha1` equals the
//! pinned v0.1.x module's; on a real apiserver it round-trips a fully populated object, converts
//! between `v1alpha1` and `v1alpha2` losing only what `v1alpha2` dropped, shows the printer columns
//! in `kubectl get`'s Table, and upgrades a hub holding upstream's v0.1.x CRD in place.

// Integration test file: helpers panic on a broken fixture, which fails the test as it should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use adapters::apply::{Applier, ApplyOutcome};
use adapters::crd::{CLUSTER_PROFILE_CRD_PATH, cluster_profile_crd, cluster_profile_crd_yaml};
use adapters::profile::*;
use harness::crds::parse_crd;
use harness::{
    ControlPlane, ControlPlaneOptions, ForeignCrd, install_crd, install_crd_as, repo_root,
    shared_fleet, test_namespace,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

#[test]
fn committed_crd_is_what_the_types_generate() {
    let committed = std::fs::read_to_string(repo_root().join(CLUSTER_PROFILE_CRD_PATH)).unwrap();
    assert_eq!(
        committed,
        cluster_profile_crd_yaml().unwrap(),
        "{CLUSTER_PROFILE_CRD_PATH} is stale: run `make crds`"
    );
}

/// Everything a schema node says (every keyword, `required` sorted), except its description (ours
/// are our own words) and its children, which get their own entries.
fn schema_facts(path: &str, schema: &JSONSchemaProps, out: &mut BTreeMap<String, String>) {
    let mut node = serde_json::to_value(schema).unwrap();
    strip_descriptions(&mut node);
    if let Some(map) = node.as_object_mut() {
        map.remove("properties");
        map.remove("items");
        if let Some(required) = map.get_mut("required").and_then(|r| r.as_array_mut()) {
            required.sort_by_key(|r| r.to_string());
        }
    }
    // serde_json maps are ordered by key: the string is canonical.
    out.insert(path.to_string(), node.to_string());
    for (name, child) in schema.properties.iter().flatten() {
        schema_facts(&format!("{path}.{name}"), child, out);
    }
    match &schema.items {
        Some(JSONSchemaPropsOrArray::Schema(items)) => {
            schema_facts(&format!("{path}[]"), items, out)
        }
        Some(JSONSchemaPropsOrArray::Schemas(items)) => {
            for (i, item) in items.iter().enumerate() {
                schema_facts(&format!("{path}[{i}]"), item, out);
            }
        }
        None => {}
    }
}

fn strip_descriptions(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove("description");
            map.values_mut().for_each(strip_descriptions);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_descriptions),
        _ => {}
    }
}

/// The CRD as comparable facts: names, scope, conversion, and per version served/storage,
/// deprecation, subresources, printer columns and every schema node.
fn versions_facts(crd: &CustomResourceDefinition) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    out.insert("group".into(), crd.spec.group.clone());
    out.insert("scope".into(), crd.spec.scope.clone());
    let mut names = serde_json::to_value(&crd.spec.names).unwrap();
    strip_descriptions(&mut names);
    out.insert("names".into(), names.to_string());
    out.insert(
        "conversion strategy".into(),
        crd.spec
            .conversion
            .as_ref()
            .map_or("None".to_string(), |c| c.strategy.clone()),
    );
    for version in &crd.spec.versions {
        let status = version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some();
        let scale = version
            .subresources
            .as_ref()
            .and_then(|s| s.scale.as_ref())
            .is_some();
        out.insert(
            format!("version {}", version.name),
            format!(
                "served={} storage={} deprecated={:?} status-subresource={status} scale-subresource={scale}",
                version.served, version.storage, version.deprecated
            ),
        );
        let mut columns = serde_json::to_value(&version.additional_printer_columns).unwrap();
        strip_descriptions(&mut columns);
        out.insert(
            format!("{} printer columns", version.name),
            columns.to_string(),
        );
        let schema = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .unwrap();
        let mut fields = BTreeMap::new();
        schema_facts("", schema, &mut fields);
        for (path, facts) in fields {
            out.insert(format!("{} {path}", version.name), facts);
        }
    }
    out
}

/// Every key on which `ours` and `theirs` disagree, for a readable failure.
fn differences(
    ours: &BTreeMap<String, String>,
    theirs: &BTreeMap<String, String>,
    keep: impl Fn(&str) -> bool,
) -> Vec<String> {
    ours.keys()
        .chain(theirs.keys())
        .filter(|key| keep(key))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|key| ours.get(*key) != theirs.get(*key))
        .map(|key| {
            format!(
                "{key}:\n  ours:     {:?}\n  upstream: {:?}",
                ours.get(key),
                theirs.get(key)
            )
        })
        .collect()
}

#[test]
fn generated_crd_equals_upstream_v0_2_0_in_both_versions() {
    let ours = versions_facts(&cluster_profile_crd());
    let upstream = versions_facts(&ForeignCrd::ClusterProfileV1alpha2.load().unwrap());
    let differences = differences(&ours, &upstream, |_| true);
    assert!(
        differences.is_empty(),
        "generated ClusterProfile CRD differs from upstream v0.2.0:\n{}",
        differences.join("\n")
    );
    // The comparison is not vacuous: it covers both versions, their columns and categories, and
    // the fields the adapters rely on.
    assert_eq!(
        ours["version v1alpha1"],
        "served=true storage=true deprecated=None status-subresource=true scale-subresource=false"
    );
    assert_eq!(
        ours["version v1alpha2"],
        "served=true storage=false deprecated=None status-subresource=true scale-subresource=false"
    );
    assert!(ours["names"].contains(r#""categories":["multicluster"]"#));
    for name in ["Display Name", "Manager", "Version", "Healthy", "Age"] {
        assert!(
            ours["v1alpha2 printer columns"].contains(&format!("\"name\":\"{name}\"")),
            "{name}"
        );
    }
    assert!(ours["v1alpha2 .spec.clusterManager.name"].contains("labelValue()"));
    assert!(ours["v1alpha2 .status.accessProviders"].contains(r#""maxItems":64"#));
    for path in [
        "v1alpha1 .spec.clusterManager.name",
        "v1alpha1 .status.conditions[].reason",
        "v1alpha1 .status.properties[].lastObservedTime",
        "v1alpha1 .status.accessProviders[].cluster.certificate-authority-data",
        "v1alpha1 .status.accessProviders[].cluster.extensions[].extension",
        "v1alpha1 .status.credentialProviders[].cluster.server",
        "v1alpha2 .status.conditions[].reason",
        "v1alpha2 .status.properties[].lastObservedTime",
        "v1alpha2 .status.accessProviders[].cluster.server",
        "v1alpha2 .status.accessProviders[].cluster.extensions[].extension",
    ] {
        assert!(ours.contains_key(path), "{path} missing");
    }
    assert!(!ours.contains_key("v1alpha2 .status.credentialProviders"));
}

/// The upgrade path rests on this: our `v1alpha1` validates exactly as the pinned upstream v0.1.x
/// CRD, so every object a v0.1.x hub holds stays valid in the storage version.
#[test]
fn generated_v1alpha1_equals_upstream_v0_1_x() {
    let ours = versions_facts(&cluster_profile_crd());
    let upstream = versions_facts(&ForeignCrd::ClusterProfile.load().unwrap());
    let differences = differences(&ours, &upstream, |key| key.starts_with("v1alpha1 "));
    assert!(
        differences.is_empty(),
        "generated ClusterProfile v1alpha1 differs from upstream v0.1.x:\n{}",
        differences.join("\n")
    );
    assert!(ours.keys().filter(|k| k.starts_with("v1alpha1 .")).count() > 40);
}

fn time(s: &str) -> Time {
    Time(s.parse().unwrap())
}

fn fully_populated_status() -> ClusterProfileStatus {
    let cluster = |server: &str| Cluster {
        server: server.into(),
        tls_server_name: Some("member.example".into()),
        insecure_skip_tls_verify: Some(false),
        certificate_authority: Some("/etc/ca.crt".into()),
        certificate_authority_data: Some("LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t".into()),
        proxy_url: Some("socks5://proxy.example:1080".into()),
        disable_compression: Some(true),
        extensions: vec![NamedExtension {
            name: EXTENSION_EXEC.into(),
            extension: json!({"name": "member-kubeconfig", "key": "value", "nested": {"n": 1}}),
        }],
    };
    ClusterProfileStatus {
        conditions: vec![
            Condition {
                type_: CONDITION_CONTROL_PLANE_HEALTHY.into(),
                status: "True".into(),
                reason: "ManagedClusterAvailable".into(),
                message: "available".into(),
                last_transition_time: time("2026-01-02T03:04:05Z"),
                observed_generation: Some(1),
            },
            Condition {
                type_: CONDITION_JOINED.into(),
                status: "Unknown".into(),
                reason: "NotReported".into(),
                message: String::new(),
                last_transition_time: time("2026-01-02T03:04:06Z"),
                observed_generation: None,
            },
        ],
        version: Some(ClusterVersion {
            kubernetes: Some("v1.36.3".into()),
        }),
        properties: vec![
            Property {
                name: PROPERTY_CLUSTER_ID.into(),
                value: "3b2e1c9a-0000-4000-8000-000000000001".into(),
                last_observed_time: Some(time("2026-01-02T03:04:07Z")),
            },
            Property {
                name: "region".into(),
                value: "x".repeat(PROPERTY_VALUE_MAX_LEN),
                last_observed_time: None,
            },
        ],
        access_providers: vec![AccessProvider {
            name: "open-cluster-management".into(),
            cluster: Some(cluster("https://member.example:6443")),
        }],
        credential_providers: vec![AccessProvider {
            name: "legacy".into(),
            cluster: Some(cluster("https://legacy.example:6443")),
        }],
    }
}

#[tokio::test]
async fn generated_crd_round_trips_a_fully_populated_profile() {
    let fleet = shared_fleet().await.unwrap();
    let client = fleet.hub.client().await.unwrap();
    install_crd(&client, cluster_profile_crd()).await.unwrap();
    let namespace = test_namespace(&client, "roundtrip").await.unwrap();
    let profiles: Api<ClusterProfile> = Api::namespaced(client.clone(), &namespace);

    let mut profile = ClusterProfile::new(
        "member-1",
        ClusterProfileSpec {
            display_name: Some("Member One".into()),
            cluster_manager: ClusterManager {
                name: "open-cluster-management".into(),
            },
        },
    );
    profile.metadata = ObjectMeta {
        name: Some("member-1".into()),
        namespace: Some(namespace.clone()),
        labels: Some(BTreeMap::from([(
            LABEL_CLUSTER_MANAGER.to_string(),
            "open-cluster-management".to_string(),
        )])),
        ..ObjectMeta::default()
    };
    // Status sent on create is dropped: status is a subresource.
    profile.status = Some(fully_populated_status());
    let created = profiles
        .create(&PostParams::default(), &profile)
        .await
        .unwrap();
    assert!(
        created
            .status
            .as_ref()
            .is_none_or(|s| s.conditions.is_empty()),
        "status must only be writable through the subresource: {:?}",
        created.status
    );
    assert_eq!(created.spec, profile.spec);

    let applier = Applier::new("crd-roundtrip-test");
    let desired = ClusterProfile {
        metadata: ObjectMeta {
            name: Some("member-1".into()),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        spec: profile.spec.clone(),
        status: Some(fully_populated_status()),
    };
    let outcome = applier
        .apply_status(&profiles, &desired, Some(&created), false)
        .await
        .unwrap();
    assert_eq!(outcome, ApplyOutcome::Applied);

    let read = profiles.get("member-1").await.unwrap();
    assert_eq!(read.status, Some(fully_populated_status()));
    assert_eq!(read.spec, profile.spec);
    // Applying the same status again is recognised as a no-op.
    assert_eq!(
        applier
            .apply_status(&profiles, &desired, Some(&read), false)
            .await
            .unwrap(),
        ApplyOutcome::Unchanged
    );

    // Our CRD enforces the same validation: immutable manager, bounded property values.
    let mut moved = read.clone();
    moved.spec.cluster_manager.name = "cluster-api".into();
    let err = profiles
        .replace("member-1", &PostParams::default(), &moved)
        .await
        .expect_err("clusterManager is immutable");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422),
        "{err}"
    );
    let mut too_long = desired.clone();
    if let Some(status) = too_long.status.as_mut() {
        status.properties[1].value = "x".repeat(PROPERTY_VALUE_MAX_LEN + 1);
    }
    let err = applier
        .apply_status(&profiles, &too_long, Some(&read), false)
        .await
        .expect_err("a property value over 1024 characters is invalid");
    assert!(err.to_string().contains("1024"), "{err}");
}

fn named(namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        ..ObjectMeta::default()
    }
}

fn spec(manager: &str) -> ClusterProfileSpec {
    ClusterProfileSpec {
        display_name: Some("Member One".into()),
        cluster_manager: ClusterManager {
            name: manager.into(),
        },
    }
}

/// Create `name` through `v1alpha1` and set its status with `applier` (as a source would).
async fn create_v1alpha1(
    profiles: &Api<ClusterProfile>,
    applier: &Applier,
    name: &str,
    manager: &str,
    status: ClusterProfileStatus,
) -> ClusterProfile {
    let namespace = profiles.namespace().unwrap().to_string();
    let mut profile = ClusterProfile::new(name, spec(manager));
    profile.metadata = named(&namespace, name);
    // The label must equal the manager name; a name that is no label value cannot be one.
    if adapters::names::is_valid_label_value(manager) {
        profile.metadata.labels = Some(BTreeMap::from([(
            LABEL_CLUSTER_MANAGER.to_string(),
            manager.to_string(),
        )]));
    }
    let created = profiles
        .create(&PostParams::default(), &profile)
        .await
        .unwrap();
    let desired = ClusterProfile {
        metadata: named(&namespace, name),
        spec: spec(manager),
        status: Some(status),
    };
    applier
        .apply_status(profiles, &desired, Some(&created), false)
        .await
        .unwrap();
    profiles.get(name).await.unwrap()
}

/// What `v1alpha2` cannot carry taken out of a `v1alpha1` status: `credentialProviders` and the
/// kubeconfig `certificate-authority` file path.
fn without_what_v1alpha2_dropped(status: &ClusterProfileStatus) -> ClusterProfileStatus {
    let mut status = status.clone();
    status.credential_providers.clear();
    for provider in &mut status.access_providers {
        if let Some(cluster) = provider.cluster.as_mut() {
            cluster.certificate_authority = None;
        }
    }
    status
}

/// The object as JSON, read through `version`.
async fn raw(
    client: &kube::Client,
    version: &str,
    namespace: &str,
    name: &str,
) -> serde_json::Value {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, version, "ClusterProfile"),
        PLURAL,
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    serde_json::to_value(api.get(name).await.unwrap()).unwrap()
}

#[tokio::test]
async fn objects_convert_between_versions_losing_only_what_v1alpha2_dropped() {
    let fleet = shared_fleet().await.unwrap();
    let client = fleet.hub.client().await.unwrap();
    install_crd(&client, cluster_profile_crd()).await.unwrap();
    let namespace = test_namespace(&client, "versions").await.unwrap();
    let v1: Api<ClusterProfile> = Api::namespaced(client.clone(), &namespace);
    let v2: Api<v1alpha2::ClusterProfile> = Api::namespaced(client.clone(), &namespace);
    let applier = Applier::new("crd-versions-test");

    // Written as v1alpha1 with everything v1alpha1 has; read back as v1alpha2.
    let stored = create_v1alpha1(
        &v1,
        &applier,
        "written-as-v1alpha1",
        "open-cluster-management",
        fully_populated_status(),
    )
    .await;
    assert_eq!(stored.status, Some(fully_populated_status()));
    let as_v2 = v2.get("written-as-v1alpha1").await.unwrap();
    assert_eq!(as_v2.metadata.uid, stored.metadata.uid);
    assert_eq!(as_v2.metadata.labels, stored.metadata.labels);
    assert_eq!(
        as_v2.spec.display_name.as_deref(),
        Some("Member One"),
        "{as_v2:?}"
    );
    assert_eq!(
        as_v2.spec.cluster_manager.name,
        stored.spec.cluster_manager.name
    );
    let back = ClusterProfile::from(&as_v2);
    assert_eq!(back.spec, stored.spec);
    assert_eq!(
        back.status,
        Some(without_what_v1alpha2_dropped(&fully_populated_status())),
        "as v1alpha2, only credentialProviders and the certificate-authority path are gone"
    );
    // The apiserver itself prunes them from the v1alpha2 form (not our types).
    let json = raw(&client, "v1alpha2", &namespace, "written-as-v1alpha1").await;
    assert_eq!(json["apiVersion"], "multicluster.x-k8s.io/v1alpha2");
    assert!(
        json["status"].get("credentialProviders").is_none(),
        "{json}"
    );
    assert!(
        json["status"]["accessProviders"][0]["cluster"]
            .get("certificate-authority")
            .is_none(),
        "{json}"
    );
    assert_eq!(
        json["status"]["accessProviders"][0]["cluster"]["extensions"][0]["extension"]["nested"]["n"],
        1
    );
    // Reading as v1alpha2 changes nothing stored.
    assert_eq!(
        v1.get("written-as-v1alpha1").await.unwrap().status,
        Some(fully_populated_status())
    );

    // Written as v1alpha2; read back as v1alpha1 with nothing lost.
    let status_v2 = v1alpha2::ClusterProfileStatus::from(&fully_populated_status());
    let mut profile = v1alpha2::ClusterProfile::new(
        "written-as-v1alpha2",
        v1alpha2::ClusterProfileSpec {
            display_name: Some("Member Two".into()),
            cluster_manager: v1alpha2::ClusterManager {
                name: "cluster-api".into(),
            },
        },
    );
    profile.metadata = named(&namespace, "written-as-v1alpha2");
    let created = v2.create(&PostParams::default(), &profile).await.unwrap();
    let desired = v1alpha2::ClusterProfile {
        metadata: named(&namespace, "written-as-v1alpha2"),
        spec: profile.spec.clone(),
        status: Some(status_v2.clone()),
    };
    assert_eq!(
        applier
            .apply_status(&v2, &desired, Some(&created), false)
            .await
            .unwrap(),
        ApplyOutcome::Applied
    );
    let stored_v2 = v2.get("written-as-v1alpha2").await.unwrap();
    assert_eq!(stored_v2.status.as_ref(), Some(&status_v2));
    let as_v1 = v1.get("written-as-v1alpha2").await.unwrap();
    assert_eq!(as_v1.spec, ClusterProfile::from(&stored_v2).spec);
    assert_eq!(as_v1.status, ClusterProfile::from(&stored_v2).status);
    let (mut a, mut b) = (
        raw(&client, "v1alpha1", &namespace, "written-as-v1alpha2").await,
        raw(&client, "v1alpha2", &namespace, "written-as-v1alpha2").await,
    );
    for json in [&mut a, &mut b] {
        json["apiVersion"] = serde_json::Value::Null;
    }
    assert_eq!(a, b, "the same object in both versions");

    // v1alpha2 validates what v1alpha1 lets through.
    let mut bad_manager = profile.clone();
    bad_manager.metadata = named(&namespace, "bad-manager");
    bad_manager.spec.cluster_manager.name = "Not A Label Value".into();
    let err = v2
        .create(&PostParams::default(), &bad_manager)
        .await
        .expect_err("v1alpha2 rejects a manager name that is not a label value");
    assert!(
        err.to_string()
            .contains("must be a valid Kubernetes label value"),
        "{err}"
    );
    bad_manager.spec.cluster_manager.name = "m".repeat(64);
    let err = v2
        .create(&PostParams::default(), &bad_manager)
        .await
        .expect_err("v1alpha2 rejects a manager name over 63 characters");
    assert!(err.to_string().contains("63"), "{err}");
    let mut bad_server = desired.clone();
    if let Some(status) = bad_server.status.as_mut() {
        status.access_providers[0].cluster.server = "member.example:6443".into();
    }
    let err = applier
        .apply_status(&v2, &bad_server, Some(&stored_v2), false)
        .await
        .expect_err("v1alpha2 requires an absolute server URL");
    assert!(
        err.to_string()
            .contains("server must be a valid absolute URL with a host"),
        "{err}"
    );
    let mut lenient = ClusterProfile::new("lenient", spec("Not A Label Value"));
    lenient.metadata = named(&namespace, "lenient");
    v1.create(&PostParams::default(), &lenient)
        .await
        .expect("v1alpha1 has no such rule");
}

/// GET a list as `kubectl get` does: a server-side Table.
async fn table(client: &kube::Client, path: &str) -> serde_json::Value {
    let request = http::Request::get(path)
        .header(
            http::header::ACCEPT,
            "application/json;as=Table;v=v1;g=meta.k8s.io",
        )
        .body(Vec::new())
        .unwrap();
    serde_json::from_str(&client.request_text(request).await.unwrap()).unwrap()
}

fn column_names(table: &serde_json::Value) -> Vec<String> {
    table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn kubectl_get_shows_the_printer_columns() {
    let fleet = shared_fleet().await.unwrap();
    let client = fleet.hub.client().await.unwrap();
    install_crd(&client, cluster_profile_crd()).await.unwrap();
    let namespace = test_namespace(&client, "columns").await.unwrap();
    let v1: Api<ClusterProfile> = Api::namespaced(client.clone(), &namespace);
    let applier = Applier::new("crd-columns-test");
    create_v1alpha1(
        &v1,
        &applier,
        "member-1",
        "open-cluster-management",
        fully_populated_status(),
    )
    .await;

    // kubectl picks the group's preferred version, and finds the kind by its category too.
    let groups = client.list_api_groups().await.unwrap();
    let group = groups.groups.iter().find(|g| g.name == GROUP).unwrap();
    assert_eq!(
        group.preferred_version.as_ref().map(|v| v.version.as_str()),
        Some("v1alpha2")
    );
    for version in ["v1alpha1", "v1alpha2"] {
        let resources = client
            .list_api_group_resources(&format!("{GROUP}/{version}"))
            .await
            .unwrap();
        let profiles = resources
            .resources
            .iter()
            .find(|r| r.name == PLURAL)
            .unwrap();
        assert_eq!(
            profiles.categories.as_deref(),
            Some(&["multicluster".to_string()][..]),
            "{version}"
        );
    }

    let v2_table = table(
        &client,
        &format!("/apis/{GROUP}/v1alpha2/namespaces/{namespace}/clusterprofiles"),
    )
    .await;
    assert_eq!(v2_table["kind"], "Table", "{v2_table}");
    assert_eq!(
        column_names(&v2_table),
        [
            "Name",
            "Display Name",
            "Manager",
            "Version",
            "Healthy",
            "Age"
        ]
    );
    let cells = v2_table["rows"][0]["cells"].as_array().unwrap();
    assert_eq!(
        cells[..5],
        [
            json!("member-1"),
            json!("Member One"),
            json!("open-cluster-management"),
            json!("v1.36.3"),
            json!("True"),
        ]
    );
    assert!(
        cells[5].as_str().is_some_and(|age| age.ends_with('s')),
        "{cells:?}"
    );
    // Upstream gives v1alpha1 no columns; neither do we.
    let v1_table = table(
        &client,
        &format!("/apis/{GROUP}/v1alpha1/namespaces/{namespace}/clusterprofiles"),
    )
    .await;
    assert_eq!(column_names(&v1_table), ["Name", "Age"]);
}

#[tokio::test]
async fn a_hub_with_upstream_v0_1_crd_upgrades_in_place() {
    // A hub of its own: this test replaces the CRD, which the other tests share.
    let hub = ControlPlane::start(ControlPlaneOptions::named("upgrade-hub"))
        .await
        .unwrap();
    let client = hub.client().await.unwrap();
    // Set up from upstream's v0.1.x release, by another tool.
    install_crd_as(
        &client,
        ForeignCrd::ClusterProfile.load().unwrap(),
        "kubectl-client-side-apply",
    )
    .await
    .unwrap();
    assert_eq!(
        adapters::served_versions::first_served(&client, GROUP, PLURAL, &["v1alpha2"])
            .await
            .unwrap(),
        None,
        "upstream v0.1.x serves v1alpha1 only"
    );
    let namespace = test_namespace(&client, "fleet").await.unwrap();
    let v1: Api<ClusterProfile> = Api::namespaced(client.clone(), &namespace);
    let v2: Api<v1alpha2::ClusterProfile> = Api::namespaced(client.clone(), &namespace);
    let source = Applier::new("some-source");
    // Profiles written through it: one with everything v1alpha1 has, one whose manager name
    // v1alpha2 would reject (v0.1.x accepted it).
    create_v1alpha1(
        &v1,
        &source,
        "member-1",
        "open-cluster-management",
        fully_populated_status(),
    )
    .await;
    create_v1alpha1(
        &v1,
        &source,
        "legacy",
        "Legacy Manager",
        ClusterProfileStatus::default(),
    )
    .await;
    let before = v1.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(before.len(), 2);

    // The upgrade: the committed CRD file (what the chart ships), applied over it.
    let committed = std::fs::read_to_string(repo_root().join(CLUSTER_PROFILE_CRD_PATH)).unwrap();
    install_crd_as(&client, parse_crd(&committed).unwrap(), "kubectl")
        .await
        .unwrap();
    let crd = Api::<CustomResourceDefinition>::all(client.clone())
        .get("clusterprofiles.multicluster.x-k8s.io")
        .await
        .unwrap();
    let versions: Vec<(String, bool, bool)> = crd
        .spec
        .versions
        .iter()
        .map(|v| (v.name.clone(), v.served, v.storage))
        .collect();
    assert_eq!(
        versions,
        [
            ("v1alpha1".to_string(), true, true),
            ("v1alpha2".to_string(), true, false)
        ]
    );
    assert_eq!(
        crd.status.and_then(|s| s.stored_versions),
        Some(vec!["v1alpha1".to_string()]),
        "storage unchanged: nothing to migrate"
    );

    // Readable: untouched as v1alpha1 (not even rewritten), and as v1alpha2.
    for old in &before {
        let name = old.name_any();
        let now = v1.get(&name).await.unwrap();
        assert_eq!(now.metadata.resource_version, old.metadata.resource_version);
        assert_eq!((&now.spec, &now.status), (&old.spec, &old.status));
        let as_v2 = ClusterProfile::from(&v2.get(&name).await.unwrap());
        assert_eq!(as_v2.spec, old.spec);
        assert_eq!(
            as_v2.status,
            old.status.as_ref().map(without_what_v1alpha2_dropped)
        );
    }
    assert_eq!(
        v2.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );

    // Writable through v1alpha2, by the manager that wrote it before the upgrade.
    let mut newer = fully_populated_status();
    newer.version = Some(ClusterVersion {
        kubernetes: Some("v1.36.4".into()),
    });
    let current = v2.get("member-1").await.unwrap();
    let desired = v1alpha2::ClusterProfile {
        metadata: named(&namespace, "member-1"),
        spec: current.spec.clone(),
        status: Some(v1alpha2::ClusterProfileStatus::from(&newer)),
    };
    assert_eq!(
        source
            .apply_status(&v2, &desired, Some(&current), false)
            .await
            .unwrap(),
        ApplyOutcome::Applied
    );
    let label = |value: &str| Patch::Merge(json!({"metadata": {"labels": {"upgraded": value}}}));
    // "legacy" too, though v1alpha2 would reject its manager name: unchanged fields are not
    // validated again (CRD validation ratcheting).
    for name in ["member-1", "legacy"] {
        v2.patch(name, &PatchParams::default(), &label("through-v1alpha2"))
            .await
            .unwrap_or_else(|err| panic!("{name} through v1alpha2: {err}"));
    }
    let after = v1.get("member-1").await.unwrap();
    assert_eq!(
        after.labels().get("upgraded").map(String::as_str),
        Some("through-v1alpha2")
    );
    // The write went through v1alpha2's form of the object, so what v1alpha2 dropped is gone
    // from storage too; everything else is as written.
    assert_eq!(after.status, Some(without_what_v1alpha2_dropped(&newer)));
    // And through v1alpha1.
    for name in ["member-1", "legacy"] {
        v1.patch(name, &PatchParams::default(), &label("through-v1alpha1"))
            .await
            .unwrap_or_else(|err| panic!("{name} through v1alpha1: {err}"));
        assert_eq!(
            v2.get(name)
                .await
                .unwrap()
                .labels()
                .get("upgraded")
                .map(String::as_str),
            Some("through-v1alpha1")
        );
    }
    // The manager stays immutable in both versions.
    let mut moved = v2.get("member-1").await.unwrap();
    moved.spec.cluster_manager.name = "cluster-api".into();
    let err = v2
        .replace("member-1", &PostParams::default(), &moved)
        .await
        .expect_err("clusterManager is immutable");
    assert!(
        err.to_string().contains("ClusterManager is immutable"),
        "{err}"
    );
}
