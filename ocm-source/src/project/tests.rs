//! The mapping, rule by rule, on plain values.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde_json::json;

use super::*;
use crate::types::{
    ClientConfig, ClusterClaim, ManagedClusterSelector, ManagedClusterSetBindingSpec,
    ManagedClusterSetBindingStatus, ManagedClusterSetSpec, ManagedClusterSpec,
    ManagedClusterStatus, ManagedClusterVersion,
};

// A real (self-signed) certificate is not needed: the check is structural (PEM blocks of DER).
const CERT_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQk5hbWUgb2YgYSB0ZXN0IGNlcnQwCgYIKoZIzj0EAwIw\n-----END CERTIFICATE-----\n";

fn t(s: &str) -> Time {
    Time(s.parse().unwrap())
}

fn ocm_condition(type_: &str, status: &str, reason: &str) -> OcmCondition {
    OcmCondition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: format!("{type_} is {status}").as_str().into(),
    }
}

fn cluster(name: &str, labels: &[(&str, &str)]) -> ManagedCluster {
    ManagedCluster {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        spec: ManagedClusterSpec {
            hub_accepts_client: true,
            managed_cluster_client_configs: vec![ClientConfig {
                url: "https://api.cluster-a.example:6443".into(),
                ca_bundle: Some(BASE64.encode(CERT_PEM)),
            }],
        },
        status: Some(ManagedClusterStatus {
            conditions: vec![
                ocm_condition(
                    crate::types::CONDITION_JOINED,
                    "True",
                    "ManagedClusterJoined",
                ),
                ocm_condition(CONDITION_AVAILABLE, "True", "ManagedClusterAvailable"),
            ],
            version: ManagedClusterVersion {
                kubernetes: "v1.36.3".into(),
            },
            cluster_claims: vec![
                ClusterClaim {
                    name: "id.k8s.io".into(),
                    value: "7d2c2c6e-0000-4000-8000-000000000001".into(),
                },
                ClusterClaim {
                    name: "platform.open-cluster-management.io".into(),
                    value: "AWS".into(),
                },
            ],
        }),
        kept_labels: Default::default(),
    }
}

fn config() -> Config {
    Config {
        placement: Placement::Inventory("fleet".into()),
        ..Config::default()
    }
}

fn run(cluster: &ManagedCluster, config: &Config, observations: &Observations) -> Projection {
    project(
        cluster,
        config,
        observations,
        &|_, _| ClusterProfileStatus::default(),
        &t("2026-01-01T00:00:00Z"),
    )
}

fn run_with_previous(
    cluster: &ManagedCluster,
    previous: &ClusterProfileStatus,
    now: &str,
) -> Projection {
    project(
        cluster,
        &config(),
        &Observations::default(),
        &|_, _| previous.clone(),
        &t(now),
    )
}

fn only(projection: &Projection) -> &DesiredProfile {
    assert_eq!(projection.profiles.len(), 1, "{projection:?}");
    &projection.profiles[0]
}

fn categories(projection: &Projection) -> Vec<Category> {
    projection.problems.iter().map(|p| p.category).collect()
}

#[test]
fn a_healthy_cluster_becomes_one_profile_with_everything_mapped() {
    let projection = run(
        &cluster(
            "cluster-a",
            &[
                ("env", "prod"),
                (LABEL_OCM_CLUSTERSET, "east"),
                ("feature.open-cluster-management.io/addon-foo", "available"),
            ],
        ),
        &config(),
        &Observations::default(),
    );
    assert!(projection.problems.is_empty(), "{:?}", projection.problems);
    assert!(projection.companions.is_empty());
    let profile = only(&projection);
    assert_eq!(profile.namespace, "fleet");
    assert_eq!(profile.name, "cluster-a");
    assert_eq!(profile.display_name.as_deref(), Some("cluster-a"));
    let expected: BTreeMap<String, String> = [
        ("env", "prod"),
        (LABEL_OCM_CLUSTERSET, "east"),
        (LABEL_CLUSTER_NAME, "cluster-a"),
        (LABEL_CLUSTER_SET, "east"),
        (
            LABEL_INVENTORY_MEMBER_ID,
            "7d2c2c6e-0000-4000-8000-000000000001",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(profile.labels, expected);
    let status = &profile.status;
    assert_eq!(
        status
            .version
            .as_ref()
            .and_then(|v| v.kubernetes.as_deref()),
        Some("v1.36.3")
    );
    let healthy = status.condition(CONDITION_CONTROL_PLANE_HEALTHY).unwrap();
    assert_eq!(
        (
            healthy.status.as_str(),
            healthy.reason.as_str(),
            healthy.message.as_str()
        ),
        (
            "True",
            "ManagedClusterAvailable",
            "ManagedClusterConditionAvailable is True"
        )
    );
    let joined = status.condition(CONDITION_JOINED).unwrap();
    assert_eq!(joined.status, "True");
    assert_eq!(joined.reason, "ManagedClusterJoined");
    assert_eq!(status.conditions.len(), 2);
    let properties: Vec<(&str, &str)> = status
        .properties
        .iter()
        .map(|p| (p.name.as_str(), p.value.as_str()))
        .collect();
    assert_eq!(
        properties,
        vec![
            ("id.k8s.io", "7d2c2c6e-0000-4000-8000-000000000001"),
            ("platform.open-cluster-management.io", "AWS")
        ]
    );
    assert!(
        status
            .properties
            .iter()
            .all(|p| p.last_observed_time == Some(t("2026-01-01T00:00:00Z")))
    );
    assert_eq!(status.access_providers.len(), 1);
    let provider = &status.access_providers[0];
    assert_eq!(provider.name, "open-cluster-management");
    let cluster = provider.cluster.as_ref().unwrap();
    assert_eq!(cluster.server, "https://api.cluster-a.example:6443");
    assert_eq!(
        cluster.certificate_authority_data.as_deref(),
        Some(BASE64.encode(CERT_PEM).as_str())
    );
    assert!(cluster.extensions.is_empty(), "no bootstrap configured");
    assert!(status.credential_providers.is_empty());
}

#[test]
fn only_accepted_clusters_that_are_not_being_deleted_are_projected() {
    let mut not_accepted = cluster("c", &[]);
    not_accepted.spec.hub_accepts_client = false;
    let projection = run(&not_accepted, &config(), &Observations::default());
    assert!(projection.profiles.is_empty() && projection.companions.is_empty());
    let mut deleting = cluster("c", &[]);
    deleting.metadata.deletion_timestamp = Some(t("2026-01-01T00:00:00Z"));
    assert!(
        run(&deleting, &config(), &Observations::default())
            .profiles
            .is_empty()
    );
}

#[test]
fn manager_labels_and_excluded_prefixes_are_not_copied() {
    let mut config = config();
    config.exclude_label_prefixes = vec!["team.example.com/".into(), "tmp-".into()];
    let projection = run(
        &cluster(
            "c",
            &[
                ("team.example.com/owner", "a"),
                ("tmp-x", "1"),
                ("feature.open-cluster-management.io/addon-foo", "available"),
                ("inventory-bridge.io/source", "spoofed"),
                (LABEL_CLUSTER_MANAGER, "spoofed"),
                (LABEL_CLUSTER_NAME, "spoofed"),
                (LABEL_CLUSTER_SET, "spoofed"),
            ],
        ),
        &config,
        &Observations::default(),
    );
    let labels = &only(&projection).labels;
    assert!(!labels.contains_key("team.example.com/owner"));
    assert!(!labels.contains_key("tmp-x"));
    // Only the configured prefixes are excluded: the default one is kept when not configured.
    assert!(labels.contains_key("feature.open-cluster-management.io/addon-foo"));
    assert!(!labels.contains_key("inventory-bridge.io/source"));
    assert!(
        !labels.contains_key(LABEL_CLUSTER_MANAGER),
        "the engine sets it"
    );
    assert_eq!(labels[LABEL_CLUSTER_NAME], "c");
    // No clusterset label on the cluster: the profile label is omitted, not copied or empty.
    assert!(!labels.contains_key(LABEL_CLUSTER_SET));
}

#[test]
fn member_id_comes_from_the_claim_else_the_clusters_label_else_nothing() {
    let from_claim = run(
        &cluster("c", &[(LABEL_INVENTORY_MEMBER_ID, "from-label")]),
        &config(),
        &Observations::default(),
    );
    assert_eq!(
        only(&from_claim).labels[LABEL_INVENTORY_MEMBER_ID],
        "7d2c2c6e-0000-4000-8000-000000000001"
    );

    let mut no_claim = cluster("c", &[(LABEL_INVENTORY_MEMBER_ID, "from-label")]);
    no_claim
        .status
        .as_mut()
        .unwrap()
        .cluster_claims
        .retain(|c| c.name != "id.k8s.io");
    let from_label = run(&no_claim, &config(), &Observations::default());
    assert_eq!(
        only(&from_label).labels[LABEL_INVENTORY_MEMBER_ID],
        "from-label"
    );

    let mut neither = cluster("c", &[]);
    neither
        .status
        .as_mut()
        .unwrap()
        .cluster_claims
        .retain(|c| c.name != "id.k8s.io");
    let none = run(&neither, &config(), &Observations::default());
    assert!(!only(&none).labels.contains_key(LABEL_INVENTORY_MEMBER_ID));

    // A claim that cannot be a label value: reported, and the label falls back.
    let mut bad = cluster("c", &[(LABEL_INVENTORY_MEMBER_ID, "from-label")]);
    bad.status.as_mut().unwrap().cluster_claims[0].value = "not a label value!".into();
    let fallback = run(&bad, &config(), &Observations::default());
    assert_eq!(
        only(&fallback).labels[LABEL_INVENTORY_MEMBER_ID],
        "from-label"
    );
    assert_eq!(categories(&fallback), vec![Category::InvalidInput]);
    // The claim itself is still a valid property, verbatim.
    assert!(
        only(&fallback)
            .status
            .properties
            .iter()
            .any(|p| p.name == "id.k8s.io" && p.value == "not a label value!")
    );
}

#[test]
fn a_cluster_name_too_long_for_a_label_value_omits_that_label_and_says_so() {
    let long = "c".repeat(70);
    let projection = run(&cluster(&long, &[]), &config(), &Observations::default());
    let profile = only(&projection);
    assert_eq!(profile.name, long);
    assert!(!profile.labels.contains_key(LABEL_CLUSTER_NAME));
    assert_eq!(categories(&projection), vec![Category::InvalidInput]);
}

#[test]
fn conditions_copy_status_reason_message_and_are_unknown_when_absent() {
    let mut c = cluster("c", &[]);
    c.status.as_mut().unwrap().conditions = vec![
        ocm_condition(
            CONDITION_AVAILABLE,
            "False",
            "ManagedClusterLeaseUpdateStopped",
        ),
        ocm_condition(
            "HubAcceptedManagedCluster",
            "True",
            "HubClusterAdminAccepted",
        ),
    ];
    let projection = run(&c, &config(), &Observations::default());
    let status = &only(&projection).status;
    let healthy = status.condition(CONDITION_CONTROL_PLANE_HEALTHY).unwrap();
    assert_eq!(healthy.status, "False");
    assert_eq!(healthy.reason, "ManagedClusterLeaseUpdateStopped");
    assert_eq!(healthy.message, "ManagedClusterConditionAvailable is False");
    let joined = status.condition(CONDITION_JOINED).unwrap();
    assert_eq!(joined.status, "Unknown");
    assert_eq!(joined.reason, "ManagedClusterJoinedMissing");
    // Other OCM conditions are not ours to publish.
    assert_eq!(status.conditions.len(), 2);

    // A status value outside True/False/Unknown would be rejected by the apiserver: Unknown.
    let mut odd = cluster("c", &[]);
    odd.status.as_mut().unwrap().conditions[0].status = "Maybe".into();
    let projection = run(&odd, &config(), &Observations::default());
    assert_eq!(
        only(&projection)
            .status
            .condition(CONDITION_JOINED)
            .unwrap()
            .status,
        "Unknown"
    );
}

#[test]
fn transition_times_move_only_when_the_status_does_and_claims_keep_first_seen_times() {
    let first = only(&run_with_previous(
        &cluster("c", &[]),
        &ClusterProfileStatus::default(),
        "2026-01-01T00:00:00Z",
    ))
    .status
    .clone();

    // Same facts an hour later: byte-for-byte the same status (so the engine writes nothing).
    let same = only(&run_with_previous(
        &cluster("c", &[]),
        &first,
        "2026-01-01T01:00:00Z",
    ))
    .status
    .clone();
    assert_eq!(same, first);

    // Availability flips and one claim changes: only those timestamps move.
    let mut changed = cluster("c", &[]);
    let status = changed.status.as_mut().unwrap();
    status.conditions[1].status = "False".into();
    status.conditions[1].reason = "ManagedClusterLeaseUpdateStopped".into();
    status.cluster_claims[1].value = "GCP".into();
    let next = only(&run_with_previous(&changed, &first, "2026-01-01T02:00:00Z"))
        .status
        .clone();
    let healthy = next.condition(CONDITION_CONTROL_PLANE_HEALTHY).unwrap();
    assert_eq!(healthy.last_transition_time, t("2026-01-01T02:00:00Z"));
    let joined = next.condition(CONDITION_JOINED).unwrap();
    assert_eq!(joined.last_transition_time, t("2026-01-01T00:00:00Z"));
    let time_of = |name: &str| {
        next.properties
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.last_observed_time.clone())
    };
    assert_eq!(time_of("id.k8s.io"), Some(t("2026-01-01T00:00:00Z")));
    assert_eq!(
        time_of("platform.open-cluster-management.io"),
        Some(t("2026-01-01T02:00:00Z"))
    );
}

#[test]
fn invalid_claims_are_skipped_and_reported_the_rest_published() {
    let mut c = cluster("c", &[]);
    let claims = &mut c.status.as_mut().unwrap().cluster_claims;
    claims.push(ClusterClaim {
        name: "huge".into(),
        value: "x".repeat(1025),
    });
    claims.push(ClusterClaim {
        name: "empty".into(),
        value: String::new(),
    });
    claims.push(ClusterClaim {
        name: "platform.open-cluster-management.io".into(),
        value: "duplicate".into(),
    });
    let projection = run(&c, &config(), &Observations::default());
    let names: Vec<&str> = only(&projection)
        .status
        .properties
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(
        names,
        vec!["id.k8s.io", "platform.open-cluster-management.io"]
    );
    assert_eq!(
        only(&projection).status.properties[1].value,
        "AWS",
        "first wins"
    );
    assert_eq!(projection.problems.len(), 3, "{:?}", projection.problems);
    assert!(
        projection
            .problems
            .iter()
            .all(|p| p.category == Category::InvalidInput && p.message.len() < 400),
        "short, clear messages: {:?}",
        projection.problems
    );
}

#[test]
fn a_cluster_without_status_is_published_with_unknown_conditions_and_reported() {
    let mut c = cluster("c", &[]);
    c.status = None;
    let projection = run(&c, &config(), &Observations::default());
    let status = &only(&projection).status;
    assert!(status.conditions.iter().all(|c| c.status == "Unknown"));
    assert_eq!(status.conditions.len(), 2);
    assert!(status.version.is_none());
    assert!(status.properties.is_empty());
    assert_eq!(categories(&projection), vec![Category::InvalidInput]);
    assert!(projection.problems[0].message.contains("no status"));
}

#[test]
fn malformed_client_configs_publish_no_access_provider_and_are_reported() {
    for (url, ca) in [
        ("not a url", Some(BASE64.encode(CERT_PEM))),
        ("http://plain.example:6443", Some(BASE64.encode(CERT_PEM))),
        ("https://", Some(BASE64.encode(CERT_PEM))),
        (
            "https://ok.example:6443",
            Some("%%% not base64".to_string()),
        ),
        (
            "https://ok.example:6443",
            Some(BASE64.encode("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----")),
        ),
        (
            "https://ok.example:6443",
            Some(BASE64.encode("just text, no PEM")),
        ),
    ] {
        let mut c = cluster("c", &[]);
        c.spec.managed_cluster_client_configs = vec![ClientConfig {
            url: url.into(),
            ca_bundle: ca,
        }];
        let projection = run(&c, &config(), &Observations::default());
        let profile = only(&projection);
        assert!(profile.status.access_providers.is_empty(), "{url}");
        assert_eq!(
            categories(&projection),
            vec![Category::InvalidInput],
            "{url}"
        );
        // Everything else is still published.
        assert_eq!(profile.status.conditions.len(), 2);
    }
    let mut none = cluster("c", &[]);
    none.spec.managed_cluster_client_configs.clear();
    let projection = run(&none, &config(), &Observations::default());
    assert!(only(&projection).status.access_providers.is_empty());
    assert_eq!(categories(&projection), vec![Category::InvalidInput]);
}

#[test]
fn a_client_config_without_ca_publishes_the_server_only_and_the_first_config_wins() {
    let mut c = cluster("c", &[]);
    c.spec.managed_cluster_client_configs = vec![
        ClientConfig {
            url: "https://first.example:6443/".into(),
            ca_bundle: None,
        },
        ClientConfig {
            url: "https://second.example:6443".into(),
            ca_bundle: Some(BASE64.encode(CERT_PEM)),
        },
    ];
    let projection = run(&c, &config(), &Observations::default());
    assert!(projection.problems.is_empty());
    let cluster = only(&projection).status.access_providers[0]
        .cluster
        .clone()
        .unwrap();
    assert_eq!(cluster.server, "https://first.example:6443");
    assert_eq!(cluster.certificate_authority_data, None);
}

#[test]
fn the_access_provider_name_is_configurable_and_bootstrap_adds_the_token_secret_extension() {
    let mut config = config();
    config.access_provider_name = "ocm-direct".into();
    config.bootstrap = Some(Bootstrap {
        service_account: "ib-bootstrap".into(),
        spoke_namespace: "open-cluster-management-agent-addon".into(),
        validity: Duration::from_secs(86400),
        identities: vec![adapters::member::MemberIdentity::default_for(
            "sink",
            vec![],
        )],
    });
    let projection = run(
        &cluster("cluster-a", &[]),
        &config,
        &Observations::default(),
    );
    let provider = &only(&projection).status.access_providers[0];
    assert_eq!(provider.name, "ocm-direct");
    let extensions = &provider.cluster.as_ref().unwrap().extensions;
    assert_eq!(extensions.len(), 1);
    assert_eq!(extensions[0].name, "client.authentication.k8s.io/exec");
    assert_eq!(
        extensions[0].extension,
        json!({"name": "ib-bootstrap", "namespace": "cluster-a", "key": "token"})
    );
    // And the companions that make that Secret exist.
    let kinds: Vec<&str> = projection
        .companions
        .iter()
        .map(|c| c.resource.kind.as_str())
        .collect();
    assert_eq!(kinds, vec!["ManagedServiceAccount", "ManifestWork"]);
}

#[test]
fn cluster_proxy_replaces_the_direct_url_and_ca() {
    let mut config = config();
    config.cluster_proxy = Some(ClusterProxy {
        namespace: "open-cluster-management-addon".into(),
        ca_secret: "cluster-proxy-user-serving-cert".into(),
    });
    let observations = Observations {
        proxy_ca: Some(CERT_PEM.as_bytes().to_vec()),
        ..Observations::default()
    };
    let projection = run(&cluster("cluster-a", &[]), &config, &observations);
    assert!(projection.problems.is_empty());
    let entry = only(&projection).status.access_providers[0]
        .cluster
        .clone()
        .unwrap();
    assert_eq!(
        entry.server,
        "https://cluster-proxy-addon-user.open-cluster-management-addon:9092/cluster-a"
    );
    assert_eq!(
        entry.certificate_authority_data,
        Some(BASE64.encode(CERT_PEM))
    );

    // CA Secret missing or garbage: no provider, and a problem saying which.
    let missing = run(
        &cluster("cluster-a", &[]),
        &config,
        &Observations::default(),
    );
    assert!(only(&missing).status.access_providers.is_empty());
    assert_eq!(categories(&missing), vec![Category::NotFound]);
    let garbage = Observations {
        proxy_ca: Some(b"garbage".to_vec()),
        ..Observations::default()
    };
    let bad = run(&cluster("cluster-a", &[]), &config, &garbage);
    assert!(only(&bad).status.access_providers.is_empty());
    assert_eq!(categories(&bad), vec![Category::InvalidInput]);
}

fn set(name: &str, selector: ManagedClusterSelector) -> Arc<ManagedClusterSet> {
    Arc::new(ManagedClusterSet {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: ManagedClusterSetSpec {
            cluster_selector: selector,
        },
    })
}

fn exclusive() -> ManagedClusterSelector {
    ManagedClusterSelector {
        selector_type: "ExclusiveClusterSetLabel".into(),
        label_selector: None,
    }
}

fn by_labels(match_labels: Option<&[(&str, &str)]>) -> ManagedClusterSelector {
    ManagedClusterSelector {
        selector_type: "LabelSelector".into(),
        label_selector: match_labels.map(|labels| LabelSelector {
            match_labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            match_expressions: None,
        }),
    }
}

fn binding(namespace: &str, name: &str, set: &str, bound: &str) -> Arc<ManagedClusterSetBinding> {
    Arc::new(ManagedClusterSetBinding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        spec: ManagedClusterSetBindingSpec {
            cluster_set: set.into(),
        },
        status: Some(ManagedClusterSetBindingStatus {
            conditions: vec![ocm_condition("Bound", bound, "ClusterSetBound")],
        }),
    })
}

#[test]
fn clusterset_bindings_follow_ocm_semantics() {
    let sets = vec![
        set("east", exclusive()),
        set(
            "untyped",
            ManagedClusterSelector {
                selector_type: String::new(),
                label_selector: None,
            },
        ),
        set("prod", by_labels(Some(&[("env", "prod")]))),
        set("global", by_labels(Some(&[]))),
        set("nothing", by_labels(None)),
    ];
    let bindings = vec![
        binding("team-east", "east", "east", "True"),
        binding("team-prod", "prod", "prod", "True"),
        binding("everyone", "global", "global", "True"),
        binding("unbound", "east", "east", "False"),
        // A binding's name must equal its set (OCM's rule): otherwise it binds nothing.
        binding("misnamed", "other", "east", "True"),
        binding("team-nothing", "nothing", "nothing", "True"),
        binding("team-untyped", "untyped", "untyped", "True"),
        // A binding to a set that does not exist binds nothing.
        binding("ghost", "ghost", "ghost", "True"),
    ];
    let in_east_prod = cluster("a", &[(LABEL_OCM_CLUSTERSET, "east"), ("env", "prod")]);
    assert_eq!(
        inventories(&in_east_prod, &sets, &bindings),
        BTreeSet::from([
            "everyone".to_string(),
            "team-east".to_string(),
            "team-prod".to_string()
        ])
    );
    let in_untyped = cluster("b", &[(LABEL_OCM_CLUSTERSET, "untyped")]);
    assert_eq!(
        inventories(&in_untyped, &sets, &bindings),
        BTreeSet::from(["everyone".to_string(), "team-untyped".to_string()])
    );
    let config = Config {
        placement: Placement::ClusterSetBindings,
        ..Config::default()
    };
    let observations = Observations {
        sets: sets.clone(),
        bindings: bindings.clone(),
        proxy_ca: None,
    };
    let projection = run(&in_east_prod, &config, &observations);
    let namespaces: Vec<&str> = projection
        .profiles
        .iter()
        .map(|p| p.namespace.as_str())
        .collect();
    assert_eq!(namespaces, vec!["everyone", "team-east", "team-prod"]);
    assert!(projection.profiles.iter().all(|p| p.name == "a"));

    // Selected by no bound set: no profile anywhere (and no companions).
    let only_global_removed: Vec<_> = bindings
        .iter()
        .filter(|b| b.namespace().as_deref() != Some("everyone"))
        .cloned()
        .collect();
    let lonely = cluster("c", &[("env", "dev")]);
    let mut bootstrap_config = config.clone();
    bootstrap_config.bootstrap = Some(Bootstrap {
        service_account: "sa".into(),
        spoke_namespace: "ns".into(),
        validity: Duration::from_secs(3600),
        identities: vec![adapters::member::MemberIdentity::default_for("x", vec![])],
    });
    let projection = run(
        &lonely,
        &bootstrap_config,
        &Observations {
            sets,
            bindings: only_global_removed,
            proxy_ca: None,
        },
    );
    assert!(projection.profiles.is_empty() && projection.companions.is_empty());
}

#[test]
fn pem_check() {
    assert!(is_pem_certificates(CERT_PEM.as_bytes()));
    assert!(is_pem_certificates(
        format!("{CERT_PEM}\n{CERT_PEM}").as_bytes()
    ));
    assert!(!is_pem_certificates(b""));
    assert!(!is_pem_certificates(
        format!("{CERT_PEM}\ntrailing garbage").as_bytes()
    ));
    assert!(!is_pem_certificates(
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"
    ));
}

#[test]
fn trimming_a_cached_cluster_never_changes_its_projection() {
    let mut full = cluster("a", &[("env", "prod"), (LABEL_OCM_CLUSTERSET, "blue")]);
    full.metadata.annotations = Some(BTreeMap::from([(
        "open-cluster-management.io/note".to_string(),
        "x".repeat(4096),
    )]));
    full.metadata.finalizers = Some(vec![
        "cluster.open-cluster-management.io/api-resource-cleanup".into(),
    ]);
    let status = full.status.as_mut().unwrap();
    status.conditions.insert(
        0,
        ocm_condition(
            "HubAcceptedManagedCluster",
            "True",
            "HubClusterAdminAccepted",
        ),
    );
    status.conditions.push(ocm_condition(
        "ManagedClusterConditionClockSynced",
        "True",
        "ManagedClusterClockSynced",
    ));
    let mut trimmed = full.clone();
    trim(&mut trimmed);
    assert!(trimmed.metadata.annotations.is_none() && trimmed.metadata.finalizers.is_none());
    assert_eq!(trimmed.status.as_ref().unwrap().conditions.len(), 2);
    // The labels move to the compact copy, and sets still select the cluster by any of them.
    assert!(trimmed.metadata.labels.is_none());
    assert_eq!(trimmed.all_labels(), full.all_labels());
    let sets = vec![
        set("blue", exclusive()),
        set("prod", by_labels(Some(&[("env", "prod")]))),
    ];
    let bindings = vec![
        binding("team-blue", "blue", "blue", "True"),
        binding("team-prod", "prod", "prod", "True"),
    ];
    assert_eq!(
        inventories(&trimmed, &sets, &bindings),
        BTreeSet::from(["team-blue".to_string(), "team-prod".to_string()])
    );
    for available in ["True", "False"] {
        let mut full = full.clone();
        full.status.as_mut().unwrap().conditions[2].status = available.into();
        let mut trimmed = full.clone();
        trim(&mut trimmed);
        let (before, after) = (
            run(&full, &config(), &Observations::default()),
            run(&trimmed, &config(), &Observations::default()),
        );
        assert_eq!(before.profiles, after.profiles);
        assert_eq!(before.problems, after.problems);
    }
}
