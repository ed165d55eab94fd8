//! The ClusterProfile CRD we generate: committed output is current, its schema equals upstream's
//! (from the pinned `sigs.k8s.io/cluster-inventory-api` module), and it round-trips a fully
//! populated object on a real apiserver, status subresource included.

// Integration test file: helpers panic on a broken fixture, which fails the test as it should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use adapters::apply::{Applier, ApplyOutcome};
use adapters::crd::{CLUSTER_PROFILE_CRD_PATH, cluster_profile_crd, cluster_profile_crd_yaml};
use adapters::profile::*;
use harness::{ForeignCrd, install_crd, repo_root, shared_fleet, test_namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ObjectMeta, PostParams};
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

/// Everything a schema node says that matters for validation and server-side apply; descriptions
/// are deliberately left out (ours are our own words).
fn schema_facts(path: &str, schema: &JSONSchemaProps, out: &mut BTreeMap<String, String>) {
    let mut facts = Vec::new();
    let mut fact = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            facts.push(format!("{name}={value}"));
        }
    };
    fact("type", schema.type_.clone());
    fact("format", schema.format.clone());
    fact(
        "required",
        schema.required.clone().map(|mut r| {
            r.sort();
            r.join(",")
        }),
    );
    fact("list-type", schema.x_kubernetes_list_type.clone());
    fact(
        "list-map-keys",
        schema
            .x_kubernetes_list_map_keys
            .clone()
            .map(|k| k.join(",")),
    );
    fact(
        "preserve-unknown-fields",
        schema
            .x_kubernetes_preserve_unknown_fields
            .map(|b| b.to_string()),
    );
    fact(
        "validations",
        schema.x_kubernetes_validations.as_ref().map(|rules| {
            rules
                .iter()
                .map(|r| format!("{}|{}", r.rule, r.message.clone().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(";")
        }),
    );
    fact(
        "enum",
        schema
            .enum_
            .as_ref()
            .map(|values| serde_json::to_string(values).unwrap()),
    );
    fact("minLength", schema.min_length.map(|v| v.to_string()));
    fact("maxLength", schema.max_length.map(|v| v.to_string()));
    fact("pattern", schema.pattern.clone());
    fact("minimum", schema.minimum.map(|v| v.to_string()));
    out.insert(path.to_string(), facts.join(" "));
    for (name, child) in schema.properties.iter().flatten() {
        schema_facts(&format!("{path}.{name}"), child, out);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = &schema.items {
        schema_facts(&format!("{path}[]"), items, out);
    }
}

fn versions_facts(crd: &CustomResourceDefinition) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    out.insert("group".into(), crd.spec.group.clone());
    out.insert("scope".into(), crd.spec.scope.clone());
    out.insert("kind".into(), crd.spec.names.kind.clone());
    out.insert("plural".into(), crd.spec.names.plural.clone());
    out.insert(
        "singular".into(),
        crd.spec.names.singular.clone().unwrap_or_default(),
    );
    out.insert(
        "listKind".into(),
        crd.spec.names.list_kind.clone().unwrap_or_default(),
    );
    for version in &crd.spec.versions {
        let status = version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some();
        out.insert(
            format!("version {}", version.name),
            format!(
                "served={} storage={} status-subresource={status}",
                version.served, version.storage
            ),
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

#[test]
fn generated_crd_schema_matches_upstream() {
    let ours = versions_facts(&cluster_profile_crd());
    let upstream = versions_facts(&ForeignCrd::ClusterProfile.load().unwrap());
    let mut differences = Vec::new();
    for key in ours
        .keys()
        .chain(upstream.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (a, b) = (ours.get(key), upstream.get(key));
        if a != b {
            differences.push(format!("{key}:\n  ours:     {a:?}\n  upstream: {b:?}"));
        }
    }
    assert!(
        differences.is_empty(),
        "generated ClusterProfile CRD differs from upstream:\n{}",
        differences.join("\n")
    );
    // The comparison is not vacuous: it covers the fields the adapters rely on.
    for path in [
        "v1alpha1 .spec.clusterManager.name",
        "v1alpha1 .status.conditions[].reason",
        "v1alpha1 .status.properties[].lastObservedTime",
        "v1alpha1 .status.accessProviders[].cluster.certificate-authority-data",
        "v1alpha1 .status.accessProviders[].cluster.extensions[].extension",
        "v1alpha1 .status.credentialProviders[].cluster.server",
    ] {
        assert!(ours.contains_key(path), "{path} missing");
    }
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
