//! The Helm charts (`charts/`), with Helm built from its Go module (`tests/helm`):
//! - `helm lint` and `helm template` of every chart, with the values a user must set and with a
//!   values file turning every option on; the values schema refuses wrong types and unknown keys;
//! - every flag of every adapter binary's `--help` is reachable from the chart's values;
//! - the chart's ClusterProfile CRD is the generated one; the README's RBAC lists equal the
//!   charts' RBAC; the Dockerfile builds workspace binaries into a non-root image;
//! - `helm install` of each chart into a real hub, then the adapter runs in-process, configured by
//!   the command line the chart's Deployment gives it, authenticated by a TokenRequest token of
//!   the chart's ServiceAccount (so only the chart's RBAC), and passes its main scenario;
//!   SelfSubjectAccessReviews with that token show what it cannot do; `helm uninstall` removes
//!   everything but the CRD;
//! - each sink's post-delete uninstall hook: its own ServiceAccount, RBAC (the sink's grants plus
//!   the Lease) and ConfigMap before the Job; on a real hub the Job's command line runs with a
//!   token of the hook's ServiceAccount, waits for the Deployment's leader to release the Lease,
//!   then revokes, deregisters and removes the finalizer.
//!
//! The chart's RBAC is the single source of truth for what each adapter may do on the hub.

// Integration test file: helpers panic on a broken fixture, which fails the test as it should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use adapters::profile::ClusterProfile;
use adapters::runtime::{Metrics, Runtime, RuntimeArgs};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::Parser;
use harness::helm::{Helm, helm_binary, pinned_helm_version, yaml_documents};
use harness::{
    ControlPlane, ControlPlaneOptions, ForeignCrd, install_crd, install_crds, repo_root, wait_for,
    wait_object, wait_object_gone,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const CHARTS: [&str; 5] = [
    "ocm-source",
    "capi-source",
    "sveltos-sink",
    "argocd-sink",
    "flux-sink",
];
const WAIT: Duration = Duration::from_secs(60);

fn chart_dir(chart: &str) -> String {
    format!("charts/{chart}")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ib-charts-{name}-{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn offline_helm() -> (Helm, Scratch) {
    let dir = scratch("offline");
    (Helm::offline(&dir).unwrap(), Scratch(dir))
}

/// `helm template` of `chart` as release `release` in `namespace` with values files and `--set`s.
fn template(
    helm: &Helm,
    chart: &str,
    namespace: &str,
    files: &[&str],
    sets: &[&str],
) -> Result<Vec<Value>, String> {
    let mut args: Vec<String> = vec![
        "template".into(),
        "ib".into(),
        chart_dir(chart),
        "--namespace".into(),
        namespace.into(),
    ];
    for file in files {
        args.push("-f".into());
        args.push(format!("{}/ci/{file}-values.yaml", chart_dir(chart)));
    }
    for set in sets {
        args.push("--set".into());
        args.push((*set).into());
    }
    let output = helm.run(&args).map_err(|e| e.to_string())?;
    if !output.success {
        return Err(format!("{}{}", output.stdout, output.stderr));
    }
    yaml_documents(&output.stdout).map_err(|e| e.to_string())
}

fn kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn deployment(objects: &[Value]) -> &Value {
    let deployments = kind(objects, "Deployment");
    assert_eq!(deployments.len(), 1, "one Deployment");
    deployments[0]
}

fn container(objects: &[Value]) -> &Value {
    &deployment(objects)["spec"]["template"]["spec"]["containers"][0]
}

fn args_of(objects: &[Value]) -> Vec<String> {
    container(objects)["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

fn is_source(chart: &str) -> bool {
    chart.ends_with("-source")
}

/// Sink charts have the uninstall hook (`releaseOnUninstall`): post-delete hook resources (a
/// ServiceAccount, its RBAC, a ConfigMap copy) and the Job running the sink with
/// `--release-finalizers`.
fn has_release_hook(chart: &str) -> bool {
    !is_source(chart)
}

/// A Helm hook resource (not part of the release's manifest).
fn is_hook(object: &Value) -> bool {
    object["metadata"]["annotations"]["helm.sh/hook"].is_string()
}

fn hook_weight(object: &Value) -> i64 {
    object["metadata"]["annotations"]["helm.sh/hook-weight"]
        .as_str()
        .unwrap_or("0")
        .parse()
        .unwrap()
}

/// The objects of the release itself, without its hooks.
fn release_objects(objects: &[Value]) -> Vec<Value> {
    objects.iter().filter(|o| !is_hook(o)).cloned().collect()
}

/// The uninstall hook Job, if rendered.
fn release_job(objects: &[Value]) -> Option<&Value> {
    let jobs = kind(objects, "Job");
    assert!(jobs.len() <= 1, "at most one Job");
    jobs.first().copied()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Helm itself.

#[test]
fn helm_is_the_pinned_release_built_from_its_go_module() {
    let (helm, _) = offline_helm();
    let version = helm
        .run(&["version", "--template", "{{.Version}}"])
        .unwrap()
        .ok()
        .unwrap();
    assert_eq!(version.trim(), pinned_helm_version().unwrap());
    assert!(helm_binary().unwrap().exists());
}

// ---------------------------------------------------------------------------------------------
// Lint, template, schema.

#[test]
fn every_chart_lints_and_renders_with_minimal_and_everything_on() {
    let (helm, _) = offline_helm();
    for chart in CHARTS {
        for values in ["minimal", "everything"] {
            let file = format!("{}/ci/{values}-values.yaml", chart_dir(chart));
            let lint = helm
                .run(&["lint", "--strict", &chart_dir(chart), "-f", &file])
                .unwrap();
            assert!(
                lint.success,
                "helm lint {chart} ({values}):\n{}{}",
                lint.stdout, lint.stderr
            );
        }

        // The values a user must set, nothing else.
        let objects = template(&helm, chart, "inventory-bridge", &["minimal"], &[]).unwrap();
        let kinds: BTreeSet<&str> = objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        let mut expected: BTreeSet<&str> = [
            "Deployment",
            "ServiceAccount",
            "Service",
            "Role",
            "RoleBinding",
            "ClusterRole",
            "ClusterRoleBinding",
        ]
        .into();
        if is_source(chart) {
            expected.insert("CustomResourceDefinition");
        } else {
            expected.insert("ConfigMap");
        }
        if has_release_hook(chart) {
            expected.insert("Job");
        }
        assert_eq!(kinds, expected, "{chart}: objects with minimal values");
        let pod = &deployment(&objects)["spec"]["template"]["spec"];
        let c = container(&objects);
        // Restricted Pod Security.
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{chart}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        let security = &c["securityContext"];
        assert_eq!(security["allowPrivilegeEscalation"], false, "{chart}");
        assert_eq!(security["readOnlyRootFilesystem"], true, "{chart}");
        assert_eq!(security["runAsNonRoot"], true, "{chart}");
        assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{chart}");
        assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
        // Probes on the --http-address port.
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(c["ports"][0]["containerPort"], 8080);
        let args = args_of(&objects);
        assert!(args.contains(&"--http-address=0.0.0.0:8080".to_string()));
        assert!(args.contains(&"--leader-election=true".to_string()));
        assert!(args.contains(&"--lease-namespace=inventory-bridge".to_string()));
        let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap();
        assert!(grace > 15, "{chart}: grace {grace} > lease duration");
        assert_eq!(
            c["image"],
            format!("ghcr.io/inventory-bridge/{chart}:0.1.0"),
            "{chart}: image tag defaults to appVersion"
        );

        // Every option on.
        let objects = template(&helm, chart, "inventory-bridge", &["everything"], &[]).unwrap();
        for k in ["ServiceMonitor", "PodDisruptionBudget", "NetworkPolicy"] {
            assert_eq!(kind(&objects, k).len(), 1, "{chart}: {k}");
        }
        assert_eq!(kind(&objects, "CustomResourceDefinition").len(), 1);
        let pod = &deployment(&objects)["spec"]["template"]["spec"];
        let c = container(&objects);
        assert_eq!(
            c["image"],
            format!(
                "registry.example/inventory-bridge/{chart}@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
            ),
            "{chart}: a digest wins over the tag"
        );
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(pod["imagePullSecrets"][0]["name"], "pull-secret");
        assert_eq!(deployment(&objects)["spec"]["replicas"], 2);
        let args = args_of(&objects);
        assert!(
            args.contains(&"--leader-election=true".to_string()),
            "{chart}: two replicas force leader election on, even when disabled: {args:?}"
        );
        assert!(args.contains(&"--lease-duration-seconds=20".to_string()));
        assert!(args.contains(&"--lease-name=my-lease".to_string()));
        assert!(args.contains(&"--kubeconfig=/etc/inventory-bridge/hub/config".to_string()));
        assert_eq!(pod["terminationGracePeriodSeconds"], 45);
        assert_eq!(pod["priorityClassName"], "system-cluster-critical");
        assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux");
        assert_eq!(pod["tolerations"][0]["key"], "dedicated");
        assert!(pod["affinity"]["podAntiAffinity"].is_object());
        assert_eq!(pod["topologySpreadConstraints"][0]["maxSkew"], 1);
        let template_meta = &deployment(&objects)["spec"]["template"]["metadata"];
        assert_eq!(template_meta["annotations"]["example.com/scrape"], "true");
        assert_eq!(template_meta["labels"]["team"], "platform");
        assert_eq!(c["resources"]["limits"]["memory"], "128Mi");
        assert!(
            c["env"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == "RUST_BACKTRACE")
        );
        let volumes: Vec<&str> = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert!(volumes.contains(&"extra") && volumes.contains(&"hub-kubeconfig"));
        assert_eq!(c["ports"][0]["containerPort"], 9090);
        let service_account = kind(&release_objects(&objects), "ServiceAccount")[0].clone();
        assert_eq!(service_account["metadata"]["name"], "ib-adapter");
        assert_eq!(pod["serviceAccountName"], "ib-adapter");
        if !is_source(chart) {
            // The provider file: values -> JSON in a ConfigMap, mounted, passed as a flag.
            let config = kind(&release_objects(&objects), "ConfigMap")[0].clone();
            let providers: Value =
                serde_json::from_str(config["data"]["providers.json"].as_str().unwrap()).unwrap();
            assert_eq!(providers["providers"][2]["name"], "vault");
            let rules: Value =
                serde_json::from_str(config["data"]["member-rules.json"].as_str().unwrap())
                    .unwrap();
            assert_eq!(rules[0]["verbs"], json!(["get", "list", "watch"]));
            assert!(
                args.contains(
                    &"--clusterprofile-provider-file=/etc/inventory-bridge/config/providers.json"
                        .to_string()
                )
            );
            assert!(args.contains(
                &"--member-rules=/etc/inventory-bridge/config/member-rules.json".to_string()
            ));
            assert!(volumes.contains(&"config") && volumes.contains(&"exec-plugins"));
            let plugins = pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == "exec-plugins")
                .unwrap();
            assert_eq!(plugins["configMap"]["name"], "exec-plugins");
        }
    }
}

#[test]
fn required_values_and_a_short_grace_period_are_refused_clearly() {
    let (helm, _) = offline_helm();
    for chart in CHARTS {
        let err = template(&helm, chart, "ns", &[], &[]).unwrap_err();
        assert!(
            err.contains("inventoryNamespace"),
            "{chart} without its inventory must say so: {err}"
        );
        let err = template(
            &helm,
            chart,
            "ns",
            &["minimal"],
            &["terminationGracePeriodSeconds=15"],
        )
        .unwrap_err();
        assert!(
            err.contains("must be longer than leaderElection.leaseDurationSeconds"),
            "{chart}: {err}"
        );
    }
    let err = template(
        &helm,
        "ocm-source",
        "ns",
        &["minimal"],
        &["config.clustersetBindings=true"],
    )
    .unwrap_err();
    assert!(err.contains("exactly one of"), "{err}");
}

#[test]
fn values_schema_rejects_wrong_types_and_unknown_keys() {
    let (helm, _) = offline_helm();
    for chart in CHARTS {
        for bad in [
            "replicaCount=two",
            "leaderElection.enabled=maybe",
            "http.port=eighty",
            "config.concurrency=many",
            "log.format=xml",
            "confg.inventoryNamespace=typo",
            "image.pullPolicy=Sometimes",
        ] {
            let err = template(&helm, chart, "ns", &["minimal"], &[bad]).unwrap_err();
            assert!(
                err.contains("schema"),
                "{chart}: --set {bad} must be refused by values.schema.json: {err}"
            );
        }
    }
}

#[test]
fn sink_uninstall_hook_releases_finalizers_after_the_deployment_with_its_own_rbac() {
    let (helm, _) = offline_helm();
    for chart in CHARTS.into_iter().filter(|c| has_release_hook(c)) {
        for (values, sets) in [
            ("minimal", &[][..]),
            ("everything", &[][..]),
            // No leader election in the Deployment: the Job still elects (on the same name).
            ("minimal", &["leaderElection.enabled=false"][..]),
        ] {
            let objects = template(&helm, chart, "inventory-bridge", &[values], sets).unwrap();
            let what = format!("{chart} ({values} {sets:?})");
            let job = release_job(&objects)
                .unwrap_or_else(|| panic!("{what}: the hook is on by default"));
            // post-delete: Helm deletes the Deployment first, so no running sink re-adds what
            // the Job releases.
            let hooks: Vec<&Value> = objects.iter().filter(|o| is_hook(o)).collect();
            for hook in &hooks {
                let annotations = &hook["metadata"]["annotations"];
                assert_eq!(annotations["helm.sh/hook"], "post-delete", "{what}");
                assert_eq!(
                    annotations["helm.sh/hook-delete-policy"],
                    "before-hook-creation,hook-succeeded",
                    "{what}"
                );
            }
            // Everything the Job needs exists before it: its ServiceAccount, its ConfigMap, then
            // roles, then bindings, then the Job.
            let weight_of = |k: &str| -> Vec<i64> {
                hooks
                    .iter()
                    .filter(|o| o["kind"] == k)
                    .map(|o| hook_weight(o))
                    .collect()
            };
            let job_weight = hook_weight(job);
            let account_weight = weight_of("ServiceAccount");
            assert_eq!(
                account_weight.len(),
                1,
                "{what}: the hook's own ServiceAccount"
            );
            let roles: Vec<i64> = [weight_of("Role"), weight_of("ClusterRole")].concat();
            let bindings: Vec<i64> =
                [weight_of("RoleBinding"), weight_of("ClusterRoleBinding")].concat();
            assert!(!roles.is_empty() && roles.len() == bindings.len(), "{what}");
            for role in &roles {
                assert!(account_weight[0] < *role, "{what}");
                for binding in &bindings {
                    assert!(role < binding && *binding < job_weight, "{what}");
                }
            }
            for config in weight_of("ConfigMap") {
                assert!(config < job_weight, "{what}");
            }
            let spec = &job["spec"];
            let deadline = spec["activeDeadlineSeconds"].as_i64().unwrap();
            assert!((30..=3600).contains(&deadline), "bounded: {deadline}");
            assert!(spec["backoffLimit"].as_i64().unwrap() <= 3);
            let pod = &spec["template"]["spec"];
            assert_eq!(pod["restartPolicy"], "Never");
            // Its own ServiceAccount (the chart's is deleted before post-delete hooks run),
            // bound by its own roles to exactly the sink's rights plus the Lease.
            let account = pod["serviceAccountName"].as_str().unwrap();
            let hook_account = hooks
                .iter()
                .find(|o| o["kind"] == "ServiceAccount")
                .unwrap();
            assert_eq!(hook_account["metadata"]["name"], account, "{what}");
            let deployment_pod = &deployment(&objects)["spec"]["template"]["spec"];
            assert_ne!(
                pod["serviceAccountName"],
                deployment_pod["serviceAccountName"]
            );
            for binding in hooks
                .iter()
                .filter(|o| o["kind"] == "RoleBinding" || o["kind"] == "ClusterRoleBinding")
            {
                assert_eq!(
                    binding["subjects"],
                    json!([{"kind": "ServiceAccount", "name": account, "namespace": "inventory-bridge"}]),
                    "{what}"
                );
            }
            // chart_permissions reads the release's roles only: strip the hook annotations.
            let hook_roles: Vec<Value> = hooks
                .iter()
                .map(|o| {
                    let mut o = (*o).clone();
                    o["metadata"]["annotations"] = json!({});
                    o
                })
                .collect();
            let mut expected = chart_permissions(&objects);
            for verb in ["create", "get", "patch"] {
                expected.insert((
                    "namespace inventory-bridge".into(),
                    "coordination.k8s.io".into(),
                    "leases".into(),
                    verb.into(),
                    String::new(),
                ));
            }
            assert_eq!(chart_permissions(&hook_roles), expected, "{what}");
            // Same image and pod security as the Deployment.
            assert_eq!(pod["securityContext"], deployment_pod["securityContext"]);
            let c = &pod["containers"][0];
            assert_eq!(c["image"], container(&objects)["image"]);
            assert_eq!(c["securityContext"], container(&objects)["securityContext"]);
            assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
            assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
            assert_eq!(c["volumeMounts"], container(&objects)["volumeMounts"]);
            // The provider file and member rules: the hook's copy of the chart's ConfigMap.
            let config_volume = pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == "config")
                .unwrap();
            let hook_config = hooks
                .iter()
                .find(|o| o["kind"] == "ConfigMap")
                .expect("the hook's ConfigMap");
            assert_eq!(
                config_volume["configMap"]["name"],
                hook_config["metadata"]["name"]
            );
            let chart_config = kind(&release_objects(&objects), "ConfigMap")[0].clone();
            assert_eq!(hook_config["data"], chart_config["data"], "{what}");
            // The Deployment's flags plus --release-finalizers, with leader election on the
            // Deployment's Lease (same name, namespace and duration): the Job writes only once
            // the old leader is gone.
            let is_election = |a: &String| a.starts_with("--leader-election");
            let mut expected: Vec<String> = args_of(&objects)
                .into_iter()
                .filter(|a| !is_election(a) && !a.starts_with("--lease-"))
                .collect();
            expected.push("--release-finalizers".into());
            let args = strings(&c["args"]);
            assert!(
                args.contains(&"--leader-election=true".to_string()),
                "{what}"
            );
            for flag in [
                "--lease-name",
                "--lease-namespace",
                "--lease-duration-seconds",
            ] {
                let of = |args: &[String]| {
                    args.iter()
                        .find(|a| a.starts_with(&format!("{flag}=")))
                        .cloned()
                };
                assert!(of(&args).is_some(), "{what}: {flag}");
                if args_of(&objects).contains(&"--leader-election=true".to_string()) {
                    assert_eq!(of(&args), of(&args_of(&objects)), "{what}: {flag}");
                }
            }
            let args: Vec<String> = args
                .into_iter()
                .filter(|a| !is_election(a) && !a.starts_with("--lease-"))
                .collect();
            assert_eq!(args, expected, "{what}");
        }
        let objects = template(
            &helm,
            chart,
            "inventory-bridge",
            &["minimal"],
            &["releaseOnUninstall.enabled=false"],
        )
        .unwrap();
        assert!(
            objects.iter().all(|o| !is_hook(o)),
            "{chart}: the hook is optional"
        );
        // A ServiceAccount of the user's (it outlives the release): the Job runs as it, bound to
        // the hook's roles; without rbac.create, no roles (the user grants them).
        let objects = template(
            &helm,
            chart,
            "inventory-bridge",
            &["minimal"],
            &["serviceAccount.create=false", "serviceAccount.name=mine"],
        )
        .unwrap();
        let job = release_job(&objects).unwrap();
        assert_eq!(
            job["spec"]["template"]["spec"]["serviceAccountName"],
            "mine"
        );
        assert!(kind(&objects, "ServiceAccount").is_empty());
        let objects = template(
            &helm,
            chart,
            "inventory-bridge",
            &["minimal"],
            &["rbac.create=false"],
        )
        .unwrap();
        assert!(release_job(&objects).is_some());
        assert!(kind(&objects, "Role").is_empty() && kind(&objects, "ClusterRole").is_empty());

        // --instance: empty leaves the sink's name (no flag); set, it is passed.
        let objects = template(&helm, chart, "inventory-bridge", &["minimal"], &[]).unwrap();
        assert!(
            !args_of(&objects)
                .iter()
                .any(|a| a.starts_with("--instance"))
        );
        let objects = template(
            &helm,
            chart,
            "inventory-bridge",
            &["minimal"],
            &["config.instance=blue"],
        )
        .unwrap();
        assert!(args_of(&objects).contains(&"--instance=blue".to_string()));
        let job = release_job(&objects).unwrap();
        assert!(
            strings(&job["spec"]["template"]["spec"]["containers"][0]["args"])
                .contains(&"--instance=blue".to_string())
        );
        let err = template(
            &helm,
            chart,
            "inventory-bridge",
            &["minimal"],
            &["config.instance=Not_A_Label"],
        )
        .unwrap_err();
        assert!(err.contains("schema"), "{chart}: {err}");
    }
}

#[test]
fn sink_secret_reads_are_per_namespace_unless_cluster_wide_is_chosen() {
    let (helm, _) = offline_helm();
    let secret_get = |scope: &str| {
        (
            scope.to_string(),
            String::new(),
            "secrets".to_string(),
            "get".to_string(),
            String::new(),
        )
    };
    for chart in CHARTS.into_iter().filter(|c| !is_source(c)) {
        let objects = template(&helm, chart, "ns", &[], &readme_values(chart)).unwrap();
        let permissions = chart_permissions(&objects);
        assert!(
            !permissions.contains(&secret_get("cluster")),
            "{chart}: off by default"
        );
        for ns in ["fleet", "capi-clusters"] {
            assert!(permissions.contains(&secret_get(&format!("namespace {ns}"))));
        }
        let mut sets = readme_values(chart);
        sets.push("rbac.readSecretsClusterWide=true");
        let objects = template(&helm, chart, "ns", &[], &sets).unwrap();
        let permissions = chart_permissions(&objects);
        assert!(
            permissions.contains(&secret_get("cluster")),
            "{chart}: the OCM setup: token Secrets in every ManagedCluster's namespace"
        );
        // Only get: never list or watch Secrets cluster-wide.
        for verb in ["list", "watch", "create", "patch", "delete"] {
            assert!(
                !permissions
                    .iter()
                    .any(|p| p.0 == "cluster" && p.2 == "secrets" && p.3 == verb)
            );
        }
    }
}

#[test]
fn ocm_source_bootstrap_sinks_and_their_rules_files() {
    let (helm, _) = offline_helm();
    let objects = template(
        &helm,
        "ocm-source",
        "inventory-bridge",
        &["everything"],
        &[],
    )
    .unwrap();
    let args = args_of(&objects);
    for sink in ["sveltos-sink", "argocd-sink", "sveltos-prod=sveltos-sink"] {
        assert!(
            args.contains(&format!("--bootstrap-sink={sink}")),
            "{args:?}"
        );
    }
    let rules_flag = "--bootstrap-sink-rules=sveltos-prod=/etc/inventory-bridge/bootstrap-rules/sveltos-prod.json";
    assert!(args.contains(&rules_flag.to_string()), "{args:?}");
    let config = kind(&objects, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == "ib-bootstrap-rules")
        .expect("the rules ConfigMap");
    let rules: Value =
        serde_json::from_str(config["data"]["sveltos-prod.json"].as_str().unwrap()).unwrap();
    assert_eq!(rules[0]["verbs"], json!(["get", "list", "watch"]));
    let c = container(&objects);
    assert!(
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "bootstrap-rules"
                && m["mountPath"] == "/etc/inventory-bridge/bootstrap-rules")
    );
    let annotations = &deployment(&objects)["spec"]["template"]["metadata"]["annotations"];
    assert!(
        annotations["checksum/config"].is_string(),
        "new rules restart the pod"
    );
    // The file parses as the adapter reads it.
    let dir = Scratch(scratch("bootstrap-rules"));
    let file = dir.0.join("sveltos-prod.json");
    std::fs::write(&file, config["data"]["sveltos-prod.json"].as_str().unwrap()).unwrap();
    let cli = OcmCli::try_parse_from([
        "ocm-source".to_string(),
        "--inventory-namespace=fleet".into(),
        "--bootstrap-serviceaccount=inventory-bridge".into(),
        "--bootstrap-sink=sveltos-prod=sveltos-sink".into(),
        format!("--bootstrap-sink-rules=sveltos-prod={}", file.display()),
    ])
    .unwrap();
    cli.ocm.config().unwrap();

    // Defaults: no --bootstrap-sink (the adapter's: all three sinks), no ConfigMap.
    let objects = template(
        &helm,
        "ocm-source",
        "inventory-bridge",
        &["minimal"],
        &["config.bootstrap.serviceAccount=inventory-bridge"],
    )
    .unwrap();
    assert!(
        !args_of(&objects)
            .iter()
            .any(|a| a.starts_with("--bootstrap-sink"))
    );
    assert!(kind(&objects, "ConfigMap").is_empty());
    let err = template(
        &helm,
        "ocm-source",
        "inventory-bridge",
        &["minimal"],
        &["config.bootstrap.sinks={nope-sink}"],
    )
    .unwrap_err();
    assert!(err.contains("schema"), "{err}");
    // Rules for an instance no bootstrap sink names: refused by the chart, as the adapter would.
    let err = template(
        &helm,
        "ocm-source",
        "inventory-bridge",
        &["everything"],
        &["config.bootstrap.sinks={argocd-sink}"],
    )
    .unwrap_err();
    assert!(err.contains("sinkRules names \"sveltos-prod\""), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Flags: every flag of every adapter is reachable from values.

/// Long flags of `--help` with their environment variable, if any.
fn help_flags(binary: &Path) -> Vec<(String, Option<String>)> {
    let output = std::process::Command::new(binary)
        .arg("--help")
        .output()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", binary.display()));
    assert!(output.status.success(), "{} --help", binary.display());
    let text = String::from_utf8(output.stdout).unwrap();
    let mut flags: Vec<(String, Option<String>)> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let flag_part = trimmed
            .strip_prefix('-')
            .filter(|rest| !rest.starts_with('-'))
            .and_then(|rest| rest.split_once(", ").map(|(_, long)| long))
            .unwrap_or(trimmed);
        if let Some(rest) = flag_part.strip_prefix("--") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            let indent = line.len() - trimmed.len();
            if !name.is_empty() && (indent == 2 || indent == 6) {
                flags.push((format!("--{name}"), None));
            }
        }
        if let Some(env) = trimmed.split("[env: ").nth(1)
            && let Some(last) = flags.last_mut()
        {
            last.1 = Some(env.split(['=', ']']).next().unwrap().to_string());
        }
    }
    flags
}

fn adapter_binary(name: &str) -> PathBuf {
    // target/<profile>/deps/<this test> -> target/<profile>/<adapter>
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let binary = profile_dir.join(name);
    assert!(
        binary.exists(),
        "{} is missing: build the adapters first (`cargo build --workspace --bins`; `make test` does)",
        binary.display()
    );
    binary
}

/// `--set`s rendered on top of ci/everything-values.yaml: the file itself, then the other side of
/// options that exclude each other.
fn flag_variants(chart: &str) -> Vec<Vec<&'static str>> {
    match chart {
        "ocm-source" => vec![
            vec![],
            vec![
                "config.inventoryNamespace=",
                "config.clustersetBindings=true",
            ],
        ],
        "capi-source" => vec![vec![]],
        _ => vec![
            vec![],
            vec![
                "config.inventoryNamespaces=null",
                "config.allNamespaces=true",
            ],
        ],
    }
}

#[test]
fn every_adapter_flag_is_reachable_from_values() {
    let (helm, _) = offline_helm();
    for chart in CHARTS {
        let flags = help_flags(&adapter_binary(chart));
        assert!(
            flags.iter().any(|(f, _)| f == "--http-address"),
            "{chart}: --help parsed: {flags:?}"
        );
        // Every option on, plus the alternatives of options that exclude each other.
        let mut args = Vec::new();
        let mut env: Vec<String> = Vec::new();
        for sets in flag_variants(chart) {
            let objects = template(&helm, chart, "inventory-bridge", &["everything"], &sets)
                .unwrap_or_else(|err| panic!("{chart} {sets:?}: {err}"));
            args.extend(args_of(&objects));
            // Flags only the uninstall hook passes (--release-finalizers) count too.
            if let Some(job) = release_job(&objects) {
                args.extend(strings(
                    &job["spec"]["template"]["spec"]["containers"][0]["args"],
                ));
            }
            env.extend(
                container(&objects)["env"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["name"].as_str().unwrap().to_string()),
            );
        }
        let passed = |flag: &str| {
            args.iter()
                .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
        };
        for (flag, env_var) in &flags {
            if flag == "--help" || flag == "--version" {
                continue;
            }
            let reachable = passed(flag) || env_var.as_ref().is_some_and(|v| env.contains(v));
            assert!(
                reachable,
                "{chart}: flag {flag} (env {env_var:?}) is not reachable from the chart's values (rendered with ci/everything-values.yaml): add a value for it"
            );
        }
        // The other way: the chart passes no flag the binary does not know.
        let known: BTreeSet<&str> = flags.iter().map(|(f, _)| f.as_str()).collect();
        let unknown: BTreeSet<String> = args
            .iter()
            .map(|a| a.split('=').next().unwrap().to_string())
            .filter(|f| !known.contains(f.as_str()))
            .collect();
        assert!(
            unknown.is_empty(),
            "{chart}: the chart passes flags the binary does not have: {unknown:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The CRD, the README's RBAC, the Dockerfile.

#[test]
fn the_chart_crd_is_the_generated_crd_and_is_kept_on_uninstall() {
    let (helm, _) = offline_helm();
    let generated_text = std::fs::read_to_string(
        repo_root().join("charts/crds/multicluster.x-k8s.io_clusterprofiles.yaml"),
    )
    .unwrap();
    let generated = yaml_documents(&generated_text).unwrap();
    assert_eq!(generated.len(), 1);
    for chart in CHARTS {
        let sets: &[&str] = if is_source(chart) {
            &[]
        } else {
            &["crds.install=true"]
        };
        let objects = template(&helm, chart, "ns", &["minimal"], sets).unwrap();
        let crds = kind(&objects, "CustomResourceDefinition");
        assert_eq!(crds.len(), 1, "{chart}");
        let crd = crds[0];
        assert_eq!(
            numbers_as_f64(&crd["spec"]),
            numbers_as_f64(&generated[0]["spec"]),
            "{chart}: every served version"
        );
        assert_eq!(crd["metadata"]["name"], generated[0]["metadata"]["name"]);
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "{chart}"
        );
        if !is_source(chart) {
            let objects = template(&helm, chart, "ns", &["minimal"], &[]).unwrap();
            assert!(
                kind(&objects, "CustomResourceDefinition").is_empty(),
                "{chart}: sinks do not install the CRD by default"
            );
        }
    }
}

/// The same value with every number as a float (Helm writes `minimum: 0.0` back as `0`).
fn numbers_as_f64(value: &Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::Array(items) => Value::Array(items.iter().map(numbers_as_f64).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), numbers_as_f64(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// One RBAC permission: (scope, API group, resource, verb, resource name or "").
type Permission = (String, String, String, String, String);

fn chart_permissions(objects: &[Value]) -> BTreeSet<Permission> {
    let mut permissions = BTreeSet::new();
    // The release's RBAC (the uninstall hook's is checked on its own).
    for role in objects
        .iter()
        .filter(|o| !is_hook(o) && (o["kind"] == "Role" || o["kind"] == "ClusterRole"))
    {
        let scope = if role["kind"] == "ClusterRole" {
            "cluster".to_string()
        } else {
            format!(
                "namespace {}",
                role["metadata"]["namespace"].as_str().unwrap()
            )
        };
        for rule in role["rules"].as_array().unwrap() {
            let strings = |key: &str| -> Vec<String> {
                rule[key]
                    .as_array()
                    .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default()
            };
            let names = strings("resourceNames");
            let names = if names.is_empty() {
                vec![String::new()]
            } else {
                names
            };
            for group in strings("apiGroups") {
                for resource in strings("resources") {
                    for verb in strings("verbs") {
                        for name in &names {
                            permissions.insert((
                                scope.clone(),
                                group.clone(),
                                resource.clone(),
                                verb.clone(),
                                name.clone(),
                            ));
                        }
                    }
                }
            }
        }
    }
    permissions
}

/// The first table after "Hub RBAC it needs" following the README heading (any level) whose
/// title starts with the adapter's name.
fn readme_permissions(readme: &str, adapter: &str) -> BTreeSet<Permission> {
    let start = readme
        .lines()
        .position(|l| l.starts_with('#') && l.trim_start_matches('#').trim().starts_with(adapter))
        .unwrap_or_else(|| panic!("README has no heading for {adapter}"));
    let section = readme
        .lines()
        .skip(start + 1)
        .collect::<Vec<_>>()
        .join("\n");
    let table = section
        .split("Hub RBAC it needs")
        .nth(1)
        .unwrap_or_else(|| panic!("README section {adapter} has no \"Hub RBAC it needs\""));
    let rows: Vec<&str> = table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .collect();
    assert!(!rows.is_empty(), "README section {adapter}: no RBAC table");
    let mut permissions = BTreeSet::new();
    for row in rows {
        let cells: Vec<String> = row
            .trim_matches('|')
            .split('|')
            .map(|c| c.replace('`', "").trim().to_string())
            .collect();
        assert_eq!(cells.len(), 5, "README {adapter}: row {row}");
        let list = |cell: &str| -> Vec<String> {
            cell.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let group = if cells[1] == "core" {
            String::new()
        } else {
            cells[1].clone()
        };
        let names = list(&cells[4]);
        let names = if names.is_empty() {
            vec![String::new()]
        } else {
            names
        };
        for resource in list(&cells[2]) {
            for verb in list(&cells[3]) {
                for name in &names {
                    permissions.insert((
                        cells[0].clone(),
                        group.clone(),
                        resource.clone(),
                        verb.clone(),
                        name.clone(),
                    ));
                }
            }
        }
    }
    permissions
}

/// The configuration each README RBAC table describes: the README's `helm install` command.
fn readme_values(chart: &str) -> Vec<&'static str> {
    match chart {
        "ocm-source" => vec![
            "config.inventoryNamespace=fleet",
            "config.bootstrap.serviceAccount=inventory-bridge",
        ],
        "capi-source" => vec![
            "config.inventoryNamespace=fleet",
            "config.watchNamespace=capi-clusters",
        ],
        _ => vec![
            "config.inventoryNamespaces={fleet}",
            "config.bootstrapSecretNamespaces={capi-clusters}",
        ],
    }
}

#[test]
fn readme_hub_rbac_lists_equal_the_chart_rbac() {
    let (helm, _) = offline_helm();
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    for chart in CHARTS {
        let objects = template(&helm, chart, "inventory-bridge", &[], &readme_values(chart))
            .unwrap_or_else(|err| panic!("{chart}: {err}"));
        let rendered = chart_permissions(&objects);
        let documented = readme_permissions(&readme, chart);
        assert_eq!(
            documented,
            rendered,
            "{chart}: README's \"Hub RBAC it needs\" differs from the chart.\nonly in README: {:?}\nonly in chart: {:?}",
            documented.difference(&rendered).collect::<Vec<_>>(),
            rendered.difference(&documented).collect::<Vec<_>>()
        );
    }
}

#[test]
fn dockerfile_builds_workspace_binaries_into_a_non_root_image_from_pinned_bases() {
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let workspace = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    // The adapters the build argument may name are exactly the workspace's adapter binaries.
    let allowed: BTreeSet<String> = dockerfile
        .lines()
        .find(|l| l.trim_start().starts_with("ocm-source|"))
        .unwrap()
        .trim()
        .split(')')
        .next()
        .unwrap()
        .split('|')
        .map(str::to_string)
        .collect();
    let expected: BTreeSet<String> = CHARTS.iter().map(|s| s.to_string()).collect();
    assert_eq!(allowed, expected);
    for adapter in &allowed {
        assert!(
            workspace.contains(&format!("\"{adapter}\"")),
            "{adapter} is a workspace member"
        );
        let manifest =
            std::fs::read_to_string(repo_root().join(adapter).join("Cargo.toml")).unwrap();
        assert!(manifest.contains(&format!("name = \"{adapter}\"")));
        assert!(
            adapter_binary(adapter).exists(),
            "cargo builds a binary {adapter}"
        );
    }
    assert!(
        dockerfile.contains("--bin \"$ADAPTER\""),
        "it builds the binary it names"
    );
    let default = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("ARG ADAPTER="))
        .unwrap();
    assert!(expected.contains(default));
    // Base images pinned to a version or digest (never latest or untagged); the runtime stage
    // is scratch (a static binary).
    let bases: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(bases.len(), 2, "a build stage and a runtime stage");
    let tag = bases[0].rsplit_once(':').map(|(_, t)| t).unwrap_or("");
    assert!(
        bases[0].contains('@') || tag.starts_with(|c: char| c.is_ascii_digit()),
        "the build image is pinned to a version: {}",
        bases[0]
    );
    assert_eq!(bases[1], "scratch", "static runtime");
    let user = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .unwrap()
        .trim();
    let uid = user.split(':').next().unwrap();
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u != 0),
        "the image runs as a numeric non-root user (runAsNonRoot can check it): {user}"
    );
    // The chart's pod security matches the image's user.
    let values =
        std::fs::read_to_string(repo_root().join("charts/ocm-source/values.yaml")).unwrap();
    assert!(values.contains(&format!("runAsUser: {uid}")));
}

// ---------------------------------------------------------------------------------------------
// On a real hub.

/// A hub of the chart's own (an installed chart owns cluster-scoped objects: its CRD, its
/// ClusterRole), with Helm pointed at it.
struct Hub {
    plane: ControlPlane,
    client: Client,
    helm: Helm,
    _dir: Scratch,
}

async fn hub(name: &str) -> Hub {
    let plane = ControlPlane::start(ControlPlaneOptions::named(name))
        .await
        .unwrap();
    let client = plane.client().await.unwrap();
    let dir = scratch(name);
    let helm = Helm::with_kubeconfig(&dir, &plane.admin_kubeconfig_yaml()).unwrap();
    Hub {
        plane,
        client,
        helm,
        _dir: Scratch(dir),
    }
}

async fn namespace(client: &Client, name: &str) {
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await
        .unwrap();
}

impl Hub {
    /// `helm install` the chart as release `ib` into `release_namespace` with `sets`.
    fn install(&self, chart: &str, release_namespace: &str, sets: &[&str]) {
        let mut args: Vec<String> = vec![
            "install".into(),
            "ib".into(),
            chart_dir(chart),
            "--namespace".into(),
            release_namespace.into(),
            "--create-namespace".into(),
        ];
        for set in sets {
            args.push("--set".into());
            args.push((*set).into());
        }
        let output = self.helm.run(&args).unwrap().ok().unwrap();
        assert!(output.contains("STATUS: deployed"), "{output}");
        assert!(output.contains("Check it:"), "NOTES.txt: {output}");
    }

    /// The rendered manifest of the installed release (what the adapter's pod would get).
    fn manifest(&self, release_namespace: &str) -> Vec<Value> {
        let text = self
            .helm
            .run(&["get", "manifest", "ib", "--namespace", release_namespace])
            .unwrap()
            .ok()
            .unwrap();
        yaml_documents(&text).unwrap()
    }

    fn uninstall(&self, release_namespace: &str) {
        self.helm
            .run(&["uninstall", "ib", "--namespace", release_namespace])
            .unwrap()
            .ok()
            .unwrap();
    }

    /// `helm uninstall --no-hooks`: this hub has no kubelet, so a hook Job would never run (Helm
    /// would wait for it until its timeout). The test runs the hook's command line in-process
    /// instead, before uninstalling.
    fn uninstall_without_hooks(&self, release_namespace: &str) {
        self.helm
            .run(&[
                "uninstall",
                "ib",
                "--no-hooks",
                "--namespace",
                release_namespace,
            ])
            .unwrap()
            .ok()
            .unwrap();
    }

    /// The release's hooks (not part of `helm get manifest`).
    fn hooks(&self, release_namespace: &str) -> Vec<Value> {
        let text = self
            .helm
            .run(&["get", "hooks", "ib", "--namespace", release_namespace])
            .unwrap()
            .ok()
            .unwrap();
        yaml_documents(&text).unwrap()
    }

    /// What Helm does before the post-delete hook Job (which this kubelet-less hub cannot run):
    /// create the release's hook resources but the Job, in hook-weight order (Helm's), and
    /// return the Job.
    async fn create_hook_resources(&self, release_namespace: &str) -> Value {
        let mut hooks = self.hooks(release_namespace);
        hooks.sort_by_key(hook_weight);
        let job = release_job(&hooks)
            .expect("the uninstall hook Job is part of the release")
            .clone();
        for hook in hooks.iter().filter(|o| o["kind"] != "Job") {
            assert_eq!(
                hook["metadata"]["annotations"]["helm.sh/hook"],
                "post-delete"
            );
            assert!(
                hook_weight(hook) < hook_weight(&job),
                "before the Job: {hook}"
            );
            let (group, version) = match hook["apiVersion"].as_str().unwrap().split_once('/') {
                Some((g, v)) => (g, v),
                None => ("", hook["apiVersion"].as_str().unwrap()),
            };
            let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
                group,
                version,
                hook["kind"].as_str().unwrap(),
            ));
            let api: Api<DynamicObject> = match hook["metadata"]["namespace"].as_str() {
                Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
                None => Api::all_with(self.client.clone(), &resource),
            };
            let object: DynamicObject = serde_json::from_value(hook.clone()).unwrap();
            api.create(&PostParams::default(), &object)
                .await
                .unwrap_or_else(|err| panic!("hook {}: {err}", hook["metadata"]["name"]));
        }
        job
    }

    /// A TokenRequest token of the chart's ServiceAccount, and a client using only it.
    async fn service_account_client(&self, namespace: &str, account: &str) -> Client {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let minted: TokenRequest = accounts
            .create_subresource("token", account, &PostParams::default(), &request)
            .await
            .unwrap();
        let token = minted.status.and_then(|s| s.token).unwrap();
        self.plane.token_client(&token).await.unwrap()
    }

    /// After `helm uninstall`: nothing of the release is left but the CRD (and namespaces).
    async fn assert_uninstalled(&self, manifest: &[Value]) {
        for object in manifest {
            let kind = object["kind"].as_str().unwrap();
            let name = object["metadata"]["name"].as_str().unwrap();
            let namespace = object["metadata"]["namespace"].as_str();
            let (group, version) = match object["apiVersion"].as_str().unwrap().split_once('/') {
                Some((g, v)) => (g, v),
                None => ("", object["apiVersion"].as_str().unwrap()),
            };
            let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
            let api: Api<DynamicObject> = match namespace {
                Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
                None => Api::all_with(self.client.clone(), &resource),
            };
            if kind == "CustomResourceDefinition" {
                assert!(
                    api.get_opt(name).await.unwrap().is_some(),
                    "the CRD stays after helm uninstall"
                );
            } else {
                wait_object_gone(&api, name, Duration::from_secs(30))
                    .await
                    .unwrap_or_else(|err| panic!("{kind} {name} left after helm uninstall: {err}"));
            }
        }
    }
}

/// Can the client `verb` `resource` (in `namespace`, or cluster-wide)?
async fn can(
    client: &Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> bool {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: namespace.map(str::to_string),
                name: name.map(str::to_string),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .is_some_and(|s| s.allowed)
}

/// (verb, API group, resource, namespace, name, allowed): one SelfSubjectAccessReview and its
/// expected answer.
type Access<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    bool,
);

/// Assert each (verb, group, resource, namespace, name, allowed) answer.
async fn assert_access(client: &Client, chart: &str, cases: &[Access<'_>]) {
    for (verb, group, resource, namespace, name, allowed) in cases {
        let answer = can(client, verb, group, resource, *namespace, *name).await;
        assert_eq!(
            answer, *allowed,
            "{chart}: {verb} {group}/{resource} in {namespace:?} name {name:?}: expected allowed={allowed}"
        );
    }
}

/// The adapter's command line as the chart's Deployment gives it.
fn chart_args(manifest: &[Value]) -> Vec<String> {
    args_of(manifest)
}

fn service_account_of(manifest: &[Value]) -> String {
    deployment(manifest)["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap()
        .to_string()
}

struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<adapters::Result<()>>,
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// Run an adapter in-process with `runtime` flags (leader election as the chart sets it) and the
/// HTTP server on a free port.
async fn run_in_process<F, Fut>(
    name: &'static str,
    runtime: RuntimeArgs,
    client: Client,
    metrics: Metrics,
    controllers: F,
) -> Running
where
    F: Fn(adapters::runtime::LeaderContext) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = adapters::Result<()>> + Send + 'static,
{
    let runtime = Runtime::new(name, runtime, client, metrics);
    let stop = runtime.shutdown_token();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let task = tokio::spawn(runtime.run_with_listener(listener, controllers));
    Running { stop, task }
}

async fn wait_profile(
    profiles: &Api<ClusterProfile>,
    name: &str,
    check: impl Fn(&ClusterProfile) -> bool,
) -> ClusterProfile {
    wait_object(profiles, name, &format!("profile {name}"), WAIT, check)
        .await
        .unwrap()
}

// ---- ocm-source -----------------------------------------------------------------------------

#[derive(clap::Parser)]
struct OcmCli {
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[command(flatten)]
    source: adapters::source::SourceArgs,
    #[command(flatten)]
    ocm: ocm_source::args::OcmArgs,
}

#[tokio::test]
async fn ocm_source_chart_installs_and_runs_with_only_its_rbac() {
    let hub = hub("chart-ocm").await;
    install_crds(
        &hub.client,
        &[
            ForeignCrd::ManagedCluster,
            ForeignCrd::ManifestWork,
            ForeignCrd::ManagedServiceAccount,
        ],
    )
    .await
    .unwrap();
    let release = "inventory-bridge";
    namespace(&hub.client, "fleet").await;
    hub.install(
        "ocm-source",
        release,
        &[
            "config.inventoryNamespace=fleet",
            "config.bootstrap.serviceAccount=inventory-bridge",
        ],
    );
    // The chart installed the CRD; the hub serves it.
    wait_for(WAIT, "ClusterProfile CRD established", || {
        let client = hub.client.clone();
        async move {
            let crd = Api::<CustomResourceDefinition>::all(client)
                .get("clusterprofiles.multicluster.x-k8s.io")
                .await?;
            Ok(crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(()))
        }
    })
    .await
    .unwrap();
    let manifest = hub.manifest(release);
    let account = service_account_of(&manifest);
    let client = hub.service_account_client(release, &account).await;

    let cli = OcmCli::try_parse_from(
        std::iter::once("ocm-source".to_string()).chain(chart_args(&manifest)),
    )
    .unwrap();
    assert!(cli.runtime.leader_election, "the chart elects a leader");
    let config = cli.ocm.config().unwrap();
    let settings = adapters::source::SourceSettings {
        watch_namespace: None,
        args: cli.source,
    };
    let mut metrics = Metrics::new(ocm_source::NAME);
    let source_metrics = adapters::source::SourceMetrics::register(&mut metrics);
    let running = run_in_process(
        ocm_source::NAME,
        cli.runtime,
        client.clone(),
        metrics,
        move |context| {
            let source = ocm_source::OcmSource::new(context.client.clone(), config.clone());
            adapters::source::run_source(source, settings.clone(), source_metrics.clone(), context)
        },
    )
    .await;

    // Main scenario: an accepted, joined ManagedCluster becomes a profile with its bootstrap
    // provider; the ManifestWork and ManagedServiceAccount are written; deleting it removes them.
    let cluster = "spoke-1";
    namespace(&hub.client, cluster).await; // OCM's hub registration controller
    let clusters: Api<DynamicObject> = Api::all_with(
        hub.client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("cluster.open-cluster-management.io", "v1", "ManagedCluster"),
            "managedclusters",
        ),
    );
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "cluster.open-cluster-management.io/v1",
        "kind": "ManagedCluster",
        "metadata": {"name": cluster, "labels": {"env": "prod"}},
        "spec": {"hubAcceptsClient": true, "managedClusterClientConfigs": [
            {"url": "https://spoke-1.example:6443", "caBundle": BASE64.encode(hub.plane.ca_pem())}
        ]},
    }))
    .unwrap();
    clusters
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
    // OCM's registration agent.
    let condition = |t: &str, r: &str| json!({"type": t, "status": "True", "reason": r, "message": t, "lastTransitionTime": "2026-01-01T00:00:00Z"});
    clusters
        .patch_status(
            cluster,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "conditions": [
                    condition("HubAcceptedManagedCluster", "HubClusterAdminAccepted"),
                    condition("ManagedClusterJoined", "ManagedClusterJoined"),
                    condition("ManagedClusterConditionAvailable", "ManagedClusterAvailable"),
                ],
                "version": {"kubernetes": "v1.36.3"},
            }})),
        )
        .await
        .unwrap();
    let profiles: Api<ClusterProfile> = Api::namespaced(hub.client.clone(), "fleet");
    let profile = wait_profile(&profiles, cluster, |p| {
        p.status
            .as_ref()
            .is_some_and(|s| !s.access_providers.is_empty())
    })
    .await;
    assert_eq!(
        profile.labels().get("env").map(String::as_str),
        Some("prod")
    );
    let works: Api<DynamicObject> = Api::namespaced_with(
        hub.client.clone(),
        cluster,
        &ocm_source::bootstrap::manifest_work_resource(),
    );
    wait_object(
        &works,
        "inventory-bridge-bootstrap-inventory-bridge",
        "ManifestWork",
        WAIT,
        |_| true,
    )
    .await
    .unwrap();
    let accounts: Api<DynamicObject> = Api::namespaced_with(
        hub.client.clone(),
        cluster,
        &ocm_source::bootstrap::managed_service_account_resource(),
    );
    wait_object(
        &accounts,
        "inventory-bridge",
        "ManagedServiceAccount",
        WAIT,
        |_| true,
    )
    .await
    .unwrap();
    // The Lease was taken with the chart's RBAC.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(hub.client.clone(), release);
    wait_object(&leases, "ib-ocm-source", "Lease", WAIT, |l| {
        l.spec.as_ref().is_some_and(|s| s.holder_identity.is_some())
    })
    .await
    .unwrap();

    clusters
        .delete(cluster, &DeleteParams::default())
        .await
        .unwrap();
    wait_object_gone(&profiles, cluster, WAIT).await.unwrap();
    wait_object_gone(&works, "inventory-bridge-bootstrap-inventory-bridge", WAIT)
        .await
        .unwrap();

    // Minimality: no Secret anywhere, no writes outside the inventory, nothing it does not call.
    assert_access(
        &client,
        "ocm-source",
        &[
            (
                "list",
                "multicluster.x-k8s.io",
                "clusterprofiles",
                None,
                None,
                true,
            ),
            (
                "patch",
                "multicluster.x-k8s.io",
                "clusterprofiles",
                Some("fleet"),
                None,
                true,
            ),
            (
                "patch",
                "multicluster.x-k8s.io",
                "clusterprofiles",
                Some("default"),
                None,
                false,
            ),
            (
                "update",
                "multicluster.x-k8s.io",
                "clusterprofiles",
                Some("fleet"),
                None,
                false,
            ),
            ("get", "", "secrets", Some("fleet"), None, false),
            ("list", "", "secrets", None, None, false),
            (
                "get",
                "",
                "secrets",
                Some(cluster),
                Some("inventory-bridge"),
                false,
            ),
            (
                "get",
                "cluster.open-cluster-management.io",
                "managedclusters",
                None,
                None,
                false,
            ),
            (
                "update",
                "cluster.open-cluster-management.io",
                "managedclusters",
                None,
                None,
                false,
            ),
            (
                "list",
                "cluster.open-cluster-management.io",
                "managedclustersets",
                None,
                None,
                false,
            ),
            (
                "create",
                "events.k8s.io",
                "events",
                Some("default"),
                None,
                true,
            ),
            (
                "create",
                "events.k8s.io",
                "events",
                Some("fleet"),
                None,
                false,
            ),
            ("create", "", "events", Some("default"), None, false),
            (
                "update",
                "coordination.k8s.io",
                "leases",
                Some(release),
                None,
                false,
            ),
            (
                "get",
                "coordination.k8s.io",
                "leases",
                Some("default"),
                None,
                false,
            ),
            (
                "create",
                "rbac.authorization.k8s.io",
                "clusterrolebindings",
                None,
                None,
                false,
            ),
            (
                "create",
                "",
                "serviceaccounts",
                Some(cluster),
                Some("x"),
                false,
            ),
        ],
    )
    .await;
    running.stop().await;

    hub.uninstall(release);
    hub.assert_uninstalled(&manifest).await;
}

// ---- capi-source ----------------------------------------------------------------------------

#[derive(clap::Parser)]
struct CapiCli {
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[command(flatten)]
    capi: capi_source::CapiArgs,
}

#[tokio::test]
async fn capi_source_chart_installs_and_runs_with_only_its_rbac() {
    let hub = hub("chart-capi").await;
    install_crds(&hub.client, &[ForeignCrd::CapiCluster])
        .await
        .unwrap();
    let member = ControlPlane::start(ControlPlaneOptions::named("chart-capi-member"))
        .await
        .unwrap();
    let release = "inventory-bridge";
    namespace(&hub.client, "fleet").await;
    namespace(&hub.client, "capi-clusters").await;
    namespace(&hub.client, "elsewhere").await;
    hub.install(
        "capi-source",
        release,
        &[
            "config.inventoryNamespace=fleet",
            "config.watchNamespace=capi-clusters",
        ],
    );
    let manifest = hub.manifest(release);
    let client = hub
        .service_account_client(release, &service_account_of(&manifest))
        .await;
    let cli = CapiCli::try_parse_from(
        std::iter::once("capi-source".to_string()).chain(chart_args(&manifest)),
    )
    .unwrap();
    let mut metrics = Metrics::new(capi_source::NAME);
    let capi_metrics = capi_source::CapiMetrics::register(&mut metrics);
    let capi = cli.capi;
    let running = run_in_process(
        capi_source::NAME,
        cli.runtime,
        client.clone(),
        metrics,
        move |context| {
            capi_source::run(
                capi_source::NAME,
                capi.clone(),
                capi_metrics.clone(),
                context,
            )
        },
    )
    .await;

    // Main scenario: a provisioned Cluster and its kubeconfig Secret (as CAPI writes them) become
    // a joined profile with the member's id; deleting the Cluster removes it.
    let clusters: Api<DynamicObject> = Api::namespaced_with(
        hub.client.clone(),
        "capi-clusters",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta2", "Cluster"),
            "clusters",
        ),
    );
    let cluster: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2",
        "kind": "Cluster",
        "metadata": {"name": "web", "namespace": "capi-clusters", "labels": {"env": "prod"}},
        "spec": {"controlPlaneEndpoint": {"host": "10.11.12.13", "port": 6443}},
    }))
    .unwrap();
    clusters
        .create(&PostParams::default(), &cluster)
        .await
        .unwrap();
    clusters
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "initialization": {"infrastructureProvisioned": true, "controlPlaneInitialized": true},
                "controlPlane": {"versions": [{"version": "v1.36.3", "replicas": 1}]},
                "conditions": [{"type": "ControlPlaneAvailable", "status": "True", "reason": "Available", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            }})),
        )
        .await
        .unwrap();
    Api::<Secret>::namespaced(hub.client.clone(), "capi-clusters")
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("web-kubeconfig".into()),
                    labels: Some(BTreeMap::from([(
                        "cluster.x-k8s.io/cluster-name".to_string(),
                        "web".to_string(),
                    )])),
                    ..ObjectMeta::default()
                },
                type_: Some("cluster.x-k8s.io/secret".into()),
                data: Some(BTreeMap::from([(
                    "value".to_string(),
                    ByteString(member.admin_kubeconfig_yaml().into_bytes()),
                )])),
                ..Secret::default()
            },
        )
        .await
        .unwrap();
    let member_uid = member.kube_system_uid().await.unwrap();
    let profiles: Api<ClusterProfile> = Api::namespaced(hub.client.clone(), "fleet");
    // Labels and status are separate writes: wait for both.
    let profile = wait_profile(&profiles, "capi-clusters-web", |p| {
        p.labels().get("multicluster.x-k8s.io/inventory-member-id") == Some(&member_uid)
            && p.status
                .as_ref()
                .is_some_and(|s| !s.access_providers.is_empty())
    })
    .await;
    let provider = &profile.status.as_ref().unwrap().access_providers[0];
    assert_eq!(provider.cluster.as_ref().unwrap().server, member.server());

    clusters
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    wait_object_gone(&profiles, "capi-clusters-web", WAIT)
        .await
        .unwrap();

    // Minimality: Secrets of the watch namespace only (get/list/watch: a member read fetches
    // the kubeconfig by name), no writes there.
    assert_access(
        &client,
        "capi-source",
        &[
            ("list", "", "secrets", Some("capi-clusters"), None, true),
            ("watch", "", "secrets", Some("capi-clusters"), None, true),
            (
                "get",
                "",
                "secrets",
                Some("capi-clusters"),
                Some("web-kubeconfig"),
                true,
            ),
            ("get", "", "secrets", Some("fleet"), Some("any"), false),
            ("list", "", "secrets", None, None, false),
            ("list", "", "secrets", Some("elsewhere"), None, false),
            ("list", "", "secrets", Some("fleet"), None, false),
            ("create", "", "secrets", Some("capi-clusters"), None, false),
            ("list", "cluster.x-k8s.io", "clusters", None, None, false),
            (
                "patch",
                "cluster.x-k8s.io",
                "clusters",
                Some("capi-clusters"),
                None,
                false,
            ),
            (
                "patch",
                "multicluster.x-k8s.io",
                "clusterprofiles",
                Some("fleet"),
                None,
                true,
            ),
            (
                "patch",
                "multicluster.x-k8s.io",
                "clusterprofiles",
                Some("elsewhere"),
                None,
                false,
            ),
            (
                "get",
                "controlplane.cluster.x-k8s.io",
                "kubeadmcontrolplanes",
                Some("capi-clusters"),
                None,
                true,
            ),
            (
                "list",
                "controlplane.cluster.x-k8s.io",
                "kubeadmcontrolplanes",
                Some("capi-clusters"),
                None,
                false,
            ),
            (
                "create",
                "events.k8s.io",
                "events",
                Some("capi-clusters"),
                None,
                true,
            ),
            (
                "create",
                "events.k8s.io",
                "events",
                Some("elsewhere"),
                None,
                false,
            ),
        ],
    )
    .await;
    running.stop().await;

    hub.uninstall(release);
    hub.assert_uninstalled(&manifest).await;
}

// ---- sinks ----------------------------------------------------------------------------------

#[derive(clap::Parser)]
struct SveltosCli {
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[command(flatten)]
    sink: adapters::sink::SinkArgs,
    #[arg(long, env = "IB_SVELTOS_NAMESPACE")]
    sveltos_namespace: Option<String>,
    #[arg(long = "property-labels", env = "IB_PROPERTY_LABELS", value_delimiter = ',', value_parser = sveltos_sink::parse_property_label)]
    property_labels: Vec<(String, String)>,
}

/// A command line of the chart (its Deployment's or its hook Job's) for the in-process adapter:
/// the ConfigMap `config_map` it mounts is written to `dir` (as the kubelet would mount it) and
/// its path rewritten.
async fn sink_args(
    hub: &Hub,
    config_map: &str,
    release: &str,
    args: Vec<String>,
    dir: &Path,
) -> Vec<String> {
    let config = Api::<ConfigMap>::namespaced(hub.client.clone(), release)
        .get(config_map)
        .await
        .unwrap();
    let mounted = dir.join("config");
    std::fs::create_dir_all(&mounted).unwrap();
    for (key, value) in config.data.unwrap_or_default() {
        std::fs::write(mounted.join(key), value).unwrap();
    }
    args.into_iter()
        .map(|a| {
            a.replace(
                "/etc/inventory-bridge/config",
                &mounted.display().to_string(),
            )
        })
        .collect()
}

/// The Job pod's identity in the Lease: its POD_NAME (the Job's pod name; here its name plus a
/// suffix, as the Job controller names pods), distinct from the Deployment's replica.
fn job_identity(job: &Value) -> String {
    let env = &job["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "POD_NAME"
                && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"),
        "the Job's pod names itself in the Lease"
    );
    format!(
        "--identity={}-x7k2p",
        job["metadata"]["name"].as_str().unwrap()
    )
}

#[tokio::test]
async fn sveltos_sink_chart_installs_and_runs_with_only_its_rbac() {
    let hub = hub("chart-sveltos").await;
    install_crd(&hub.client, adapters::crd::cluster_profile_crd())
        .await
        .unwrap();
    install_crds(
        &hub.client,
        &[ForeignCrd::SveltosCluster, ForeignCrd::ManagedCluster],
    )
    .await
    .unwrap();
    let member = ControlPlane::start(ControlPlaneOptions::named("chart-sveltos-member"))
        .await
        .unwrap();
    let release = "inventory-bridge";
    for ns in ["fleet", "capi-clusters", "elsewhere"] {
        namespace(&hub.client, ns).await;
    }
    hub.install(
        "sveltos-sink",
        release,
        &[
            "config.inventoryNamespaces={fleet}",
            "config.bootstrapSecretNamespaces={capi-clusters}",
        ],
    );
    let manifest = hub.manifest(release);
    let client = hub
        .service_account_client(release, &service_account_of(&manifest))
        .await;
    let dir = Scratch(scratch("sveltos-run"));
    let args = sink_args(
        &hub,
        "ib-sveltos-sink-config",
        release,
        chart_args(&manifest),
        &dir.0,
    )
    .await;
    let cli = SveltosCli::try_parse_from(std::iter::once("sveltos-sink".to_string()).chain(args))
        .unwrap();
    let options = cli
        .sink
        .resolve::<sveltos_sink::SveltosSink>(cli.sveltos_namespace.clone())
        .unwrap();
    assert_eq!(options.inventory_namespaces, vec!["fleet".to_string()]);
    let mut metrics = Metrics::new(sveltos_sink::NAME);
    let sink_metrics = adapters::sink::SinkMetrics::register(metrics.registry_mut());
    let sink = std::sync::Arc::new(sveltos_sink::SveltosSink {
        property_labels: cli.property_labels,
    });
    let running = run_in_process(
        sveltos_sink::NAME,
        cli.runtime,
        client.clone(),
        metrics,
        move |context| {
            adapters::sink::run(sink.clone(), options.clone(), sink_metrics.clone(), context)
        },
    )
    .await;

    // Main scenario: a profile whose bootstrap provider (capi-source's `cluster-api`, served by
    // the chart's default provider file) names a CAPI kubeconfig Secret in an allowed namespace
    // becomes a SveltosCluster with a kubeconfig of the sink's own member identity; deleting the
    // profile revokes it.
    Api::<Secret>::namespaced(hub.client.clone(), "capi-clusters")
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("web-kubeconfig".into()),
                    labels: Some(BTreeMap::from([(
                        "cluster.x-k8s.io/cluster-name".to_string(),
                        "web".to_string(),
                    )])),
                    ..ObjectMeta::default()
                },
                type_: Some("cluster.x-k8s.io/secret".into()),
                data: Some(BTreeMap::from([(
                    "value".to_string(),
                    ByteString(member.admin_kubeconfig_yaml().into_bytes()),
                )])),
                ..Secret::default()
            },
        )
        .await
        .unwrap();
    let profiles: Api<ClusterProfile> = Api::namespaced(hub.client.clone(), "fleet");
    let profile = ClusterProfile {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("fleet".into()),
            labels: Some(BTreeMap::from([
                (
                    "x-k8s.io/cluster-manager".to_string(),
                    "cluster-api".to_string(),
                ),
                ("env".to_string(), "prod".to_string()),
            ])),
            ..ObjectMeta::default()
        },
        spec: adapters::profile::ClusterProfileSpec {
            display_name: Some("capi-clusters/web".into()),
            cluster_manager: adapters::profile::ClusterManager {
                name: "cluster-api".into(),
            },
        },
        status: None,
    };
    profiles
        .create(&PostParams::default(), &profile)
        .await
        .unwrap();
    profiles
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [], "accessProviders": [{
                "name": "cluster-api",
                "cluster": {
                    "server": member.server(),
                    "certificate-authority-data": BASE64.encode(member.ca_pem()),
                    "extensions": [{"name": "client.authentication.k8s.io/exec", "extension": {
                        "name": "web-kubeconfig", "key": "value", "namespace": "capi-clusters"}}],
                },
            }]}})),
        )
        .await
        .unwrap();
    let (_, username) = harness::sveltos_registration(&hub.client, "fleet", "web")
        .await
        .unwrap();
    assert_eq!(username, harness::sveltos_member_username());
    let sveltos_clusters: Api<DynamicObject> = Api::namespaced_with(
        hub.client.clone(),
        "fleet",
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "lib.projectsveltos.io",
            "v1beta1",
            "SveltosCluster",
        )),
    );
    // The Secret is applied before the SveltosCluster: wait for the latter too.
    let registered = wait_object(&sveltos_clusters, "web", "SveltosCluster", WAIT, |_| true)
        .await
        .unwrap();
    assert_eq!(
        registered.labels().get("env").map(String::as_str),
        Some("prod")
    );

    profiles
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    harness::wait_sveltos_registration_revoked(&hub.client, "fleet", "web", &member)
        .await
        .unwrap();
    wait_object_gone(&profiles, "web", WAIT).await.unwrap();

    assert_sink_minimal(&client, "sveltos-sink", release, "fleet").await;
    assert_access(
        &client,
        "sveltos-sink",
        &[
            (
                "create",
                "lib.projectsveltos.io",
                "sveltosclusters",
                Some("fleet"),
                None,
                true,
            ),
            (
                "create",
                "lib.projectsveltos.io",
                "sveltosclusters",
                Some("elsewhere"),
                None,
                false,
            ),
            // Watched where it writes: what it published is read from the watch.
            (
                "watch",
                "lib.projectsveltos.io",
                "sveltosclusters",
                Some("fleet"),
                None,
                true,
            ),
            (
                "update",
                "lib.projectsveltos.io",
                "sveltosclusters",
                Some("fleet"),
                None,
                false,
            ),
            (
                "patch",
                "lib.projectsveltos.io",
                "sveltosclusters/status",
                Some("fleet"),
                None,
                false,
            ),
        ],
    )
    .await;

    // Uninstall: the chart's post-delete hook Job runs the Deployment's command line plus
    // --release-finalizers under its own ServiceAccount. No kubelet here, so its command line
    // runs in-process with a token of that ServiceAccount (only the hook's RBAC): a registered
    // profile is released (identity revoked on the member, SveltosCluster and Secret deleted,
    // finalizer removed) and the process exits by itself.
    let mut api_profile = profile.clone();
    api_profile.metadata.name = Some("api".into());
    profiles
        .create(&PostParams::default(), &api_profile)
        .await
        .unwrap();
    profiles
        .patch_status(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [], "accessProviders": [{
                "name": "cluster-api",
                "cluster": {
                    "server": member.server(),
                    "certificate-authority-data": BASE64.encode(member.ca_pem()),
                    "extensions": [{"name": "client.authentication.k8s.io/exec", "extension": {
                        "name": "web-kubeconfig", "key": "value", "namespace": "capi-clusters"}}],
                },
            }]}})),
        )
        .await
        .unwrap();
    harness::sveltos_registration(&hub.client, "fleet", "api")
        .await
        .unwrap();
    wait_object(&sveltos_clusters, "api", "SveltosCluster", WAIT, |_| true)
        .await
        .unwrap();
    let finalizer = "inventory-bridge.io/sveltos-sink-cleanup";
    wait_profile(&profiles, "api", |p| {
        p.finalizers().iter().any(|f| f == finalizer)
    })
    .await;

    // Helm creates the hook's ServiceAccount, ConfigMap and RBAC (the chart's are deleted by
    // then) and the Job; the Job's command line runs in-process with a token of the hook's
    // ServiceAccount. It is started while the Deployment's leader still runs, to show the
    // hand-over: it waits for the Lease and writes nothing until the leader is gone.
    let job = hub.create_hook_resources(release).await;
    let pod = &job["spec"]["template"]["spec"];
    let hook_account = pod["serviceAccountName"].as_str().unwrap().to_string();
    assert_ne!(hook_account, service_account_of(&manifest));
    let hook_client = hub.service_account_client(release, &hook_account).await;
    assert_sink_minimal(
        &hook_client,
        "sveltos-sink (uninstall hook)",
        release,
        "fleet",
    )
    .await;
    let job_args = strings(&pod["containers"][0]["args"]);
    assert!(job_args.contains(&"--release-finalizers".to_string()));
    let hook_dir = Scratch(scratch("sveltos-release"));
    let mut args = sink_args(
        &hub,
        "ib-sveltos-sink-release-config",
        release,
        job_args,
        &hook_dir.0,
    )
    .await;
    args.push(job_identity(&job));
    let cli = SveltosCli::try_parse_from(std::iter::once("sveltos-sink".to_string()).chain(args))
        .unwrap();
    let deployment_cli = SveltosCli::try_parse_from(
        std::iter::once("sveltos-sink".to_string()).chain(chart_args(&manifest)),
    )
    .unwrap();
    assert!(cli.runtime.leader_election, "the Job waits for the Lease");
    assert_eq!(cli.runtime.lease_name, deployment_cli.runtime.lease_name);
    assert_eq!(
        cli.runtime.lease_namespace,
        deployment_cli.runtime.lease_namespace
    );
    let options = cli
        .sink
        .resolve::<sveltos_sink::SveltosSink>(cli.sveltos_namespace.clone())
        .unwrap();
    assert!(options.release_finalizers);
    let mut metrics = Metrics::new(sveltos_sink::NAME);
    let sink_metrics = adapters::sink::SinkMetrics::register(metrics.registry_mut());
    let sink = std::sync::Arc::new(sveltos_sink::SveltosSink {
        property_labels: cli.property_labels,
    });
    let releasing = run_in_process(
        sveltos_sink::NAME,
        cli.runtime,
        hook_client.clone(),
        metrics,
        move |context| {
            adapters::sink::run(sink.clone(), options.clone(), sink_metrics.clone(), context)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !releasing.task.is_finished(),
        "the Job waits while the Deployment's leader holds the Lease"
    );
    assert!(
        profiles
            .get("api")
            .await
            .unwrap()
            .finalizers()
            .iter()
            .any(|f| f == finalizer),
        "nothing released while the old leader runs"
    );
    // helm uninstall: the Deployment's pod stops gracefully (releasing the Lease), the chart's
    // objects are deleted; the hook runs on with only its own RBAC.
    running.stop().await;
    hub.uninstall_without_hooks(release);
    tokio::time::timeout(WAIT, releasing.task)
        .await
        .expect("release mode exits by itself")
        .unwrap()
        .unwrap();
    let released = profiles.get("api").await.unwrap();
    assert!(
        !released.finalizers().iter().any(|f| f == finalizer),
        "finalizer released: {:?}",
        released.finalizers()
    );
    harness::wait_sveltos_registration_revoked(&hub.client, "fleet", "api", &member)
        .await
        .unwrap();
    wait_object_gone(&sveltos_clusters, "api", WAIT)
        .await
        .unwrap();

    hub.assert_uninstalled(&manifest).await;
    // The profile is deletable: nothing of ours holds it.
    profiles
        .delete("api", &DeleteParams::default())
        .await
        .unwrap();
    wait_object_gone(&profiles, "api", WAIT).await.unwrap();
}

/// What every sink's token may and may not do (inventory `fleet`, extra bootstrap namespace
/// `capi-clusters`, another namespace `elsewhere`; objects written into `target`).
async fn assert_sink_minimal(client: &Client, chart: &str, release: &str, target: &str) {
    assert_access(
        client,
        chart,
        &[
            // Profiles: only in the inventory; watch with list (never one without the other).
            (
                "list",
                "multicluster.x-k8s.io",
                "clusterprofiles",
                Some("fleet"),
                None,
                true,
            ),
            (
                "watch",
                "multicluster.x-k8s.io",
                "clusterprofiles",
                Some("fleet"),
                None,
                true,
            ),
            (
                "patch",
                "multicluster.x-k8s.io",
                "clusterprofiles",
                Some("fleet"),
                None,
                true,
            ),
            (
                "list",
                "multicluster.x-k8s.io",
                "clusterprofiles",
                None,
                None,
                false,
            ),
            (
                "list",
                "multicluster.x-k8s.io",
                "clusterprofiles",
                Some("elsewhere"),
                None,
                false,
            ),
            (
                "patch",
                "multicluster.x-k8s.io",
                "clusterprofiles/status",
                Some("fleet"),
                None,
                false,
            ),
            (
                "delete",
                "multicluster.x-k8s.io",
                "clusterprofiles",
                Some("fleet"),
                None,
                false,
            ),
            // Bootstrap Secrets: get by name in the inventory and the allowed namespaces only.
            ("get", "", "secrets", Some("fleet"), Some("any"), true),
            (
                "get",
                "",
                "secrets",
                Some("capi-clusters"),
                Some("web-kubeconfig"),
                true,
            ),
            ("list", "", "secrets", Some("capi-clusters"), None, false),
            ("watch", "", "secrets", Some("capi-clusters"), None, false),
            ("get", "", "secrets", Some("elsewhere"), Some("any"), false),
            (
                "get",
                "",
                "secrets",
                Some("kube-system"),
                Some("any"),
                false,
            ),
            ("list", "", "secrets", None, None, false),
            // Its own Secrets where it writes.
            ("create", "", "secrets", Some(target), None, true),
            ("delete", "", "secrets", Some(target), None, true),
            ("update", "", "secrets", Some(target), None, false),
            ("create", "", "secrets", Some("capi-clusters"), None, false),
            // OCM: read a ManagedCluster's endpoint, nothing else.
            (
                "get",
                "cluster.open-cluster-management.io",
                "managedclusters",
                None,
                Some("spoke"),
                true,
            ),
            (
                "list",
                "cluster.open-cluster-management.io",
                "managedclusters",
                None,
                None,
                false,
            ),
            // Events on profiles; its Lease.
            (
                "create",
                "events.k8s.io",
                "events",
                Some("fleet"),
                None,
                true,
            ),
            (
                "create",
                "events.k8s.io",
                "events",
                Some("elsewhere"),
                None,
                false,
            ),
            (
                "patch",
                "coordination.k8s.io",
                "leases",
                Some(release),
                None,
                true,
            ),
            (
                "delete",
                "coordination.k8s.io",
                "leases",
                Some(release),
                None,
                false,
            ),
            // Nothing else.
            ("get", "", "configmaps", Some("fleet"), None, false),
            ("create", "", "serviceaccounts", Some("fleet"), None, false),
            (
                "create",
                "",
                "serviceaccounts/token",
                Some(release),
                None,
                false,
            ),
            (
                "create",
                "rbac.authorization.k8s.io",
                "rolebindings",
                Some("fleet"),
                None,
                false,
            ),
        ],
    )
    .await;
}

/// argocd-sink or flux-sink in-process, configured by a command line of its chart.
async fn run_argo_or_flux(
    chart: &str,
    args: Vec<String>,
    client: Client,
) -> (Running, RuntimeArgs, adapters::sink::SinkOptions) {
    async fn run<S: adapters::sink::Sink>(
        runtime: RuntimeArgs,
        sink: S,
        options: adapters::sink::SinkOptions,
        client: Client,
    ) -> (Running, RuntimeArgs, adapters::sink::SinkOptions) {
        let mut metrics = Metrics::new(S::NAME);
        let sink_metrics = adapters::sink::SinkMetrics::register(metrics.registry_mut());
        let sink = std::sync::Arc::new(sink);
        let engine_options = options.clone();
        let running = run_in_process(S::NAME, runtime.clone(), client, metrics, move |context| {
            adapters::sink::run(
                sink.clone(),
                engine_options.clone(),
                sink_metrics.clone(),
                context,
            )
        })
        .await;
        (running, runtime, options)
    }
    let argv = std::iter::once(chart.to_string()).chain(args);
    match chart {
        "argocd-sink" => {
            let cli = argocd_sink::Cli::try_parse_from(argv).unwrap();
            let sink = cli.argocd.sink();
            let options = cli
                .sink
                .resolve_for(&sink, Some(sink.namespace.clone()))
                .unwrap();
            run(cli.runtime, sink, options, client).await
        }
        "flux-sink" => {
            let cli = flux_sink::Cli::try_parse_from(argv).unwrap();
            let sink = cli.flux.sink();
            let options = cli
                .sink
                .resolve_for(&sink, sink.namespaces.first().cloned())
                .unwrap();
            run(cli.runtime, sink, options, client).await
        }
        other => panic!("not argocd-sink or flux-sink: {other}"),
    }
}

/// argocd-sink or flux-sink: `helm install` into a real hub, the adapter runs in-process under
/// the chart's token (a profile becomes its registration, with the default member identity),
/// SelfSubjectAccessReviews show what it cannot do, then uninstall: the post-delete hook's
/// command line runs under the hook's own token, waits for the Deployment's leader to go, and
/// releases the profile (identity revoked, Secret deleted, finalizer removed).
async fn argo_or_flux_chart_runs_and_uninstalls(chart: &str, target: &str, secret: &str) {
    let hub = hub(&format!("chart-{chart}")).await;
    install_crd(&hub.client, adapters::crd::cluster_profile_crd())
        .await
        .unwrap();
    install_crds(&hub.client, &[ForeignCrd::ManagedCluster])
        .await
        .unwrap();
    let member = ControlPlane::start(ControlPlaneOptions::named(&format!("chart-{chart}-member")))
        .await
        .unwrap();
    let release = "inventory-bridge";
    for ns in ["fleet", "capi-clusters", "elsewhere", target] {
        namespace(&hub.client, ns).await;
    }
    hub.install(
        chart,
        release,
        &[
            "config.inventoryNamespaces={fleet}",
            "config.bootstrapSecretNamespaces={capi-clusters}",
        ],
    );
    let manifest = hub.manifest(release);
    let client = hub
        .service_account_client(release, &service_account_of(&manifest))
        .await;
    // The RBAC in force is the chart's: every Role and ClusterRole it rendered exists.
    for object in kind(&manifest, "Role") {
        Api::<Role>::namespaced(
            hub.client.clone(),
            object["metadata"]["namespace"].as_str().unwrap(),
        )
        .get(object["metadata"]["name"].as_str().unwrap())
        .await
        .unwrap();
    }
    for object in kind(&manifest, "ClusterRole") {
        Api::<ClusterRole>::all(hub.client.clone())
            .get(object["metadata"]["name"].as_str().unwrap())
            .await
            .unwrap();
    }
    let dir = Scratch(scratch(&format!("{chart}-run")));
    let config = format!("ib-{chart}-config");
    let args = sink_args(&hub, &config, release, chart_args(&manifest), &dir.0).await;
    let (running, runtime, options) = run_argo_or_flux(chart, args, client.clone()).await;
    assert!(runtime.leader_election, "the chart elects a leader");
    assert_eq!(options.inventory_namespaces, vec!["fleet".to_string()]);

    // Main scenario: a profile whose bootstrap provider names a CAPI kubeconfig Secret in an
    // allowed namespace becomes the sink's Secret, whose credential is the sink's default member
    // identity.
    Api::<Secret>::namespaced(hub.client.clone(), "capi-clusters")
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("web-kubeconfig".into()),
                    labels: Some(BTreeMap::from([(
                        "cluster.x-k8s.io/cluster-name".to_string(),
                        "web".to_string(),
                    )])),
                    ..ObjectMeta::default()
                },
                type_: Some("cluster.x-k8s.io/secret".into()),
                data: Some(BTreeMap::from([(
                    "value".to_string(),
                    ByteString(member.admin_kubeconfig_yaml().into_bytes()),
                )])),
                ..Secret::default()
            },
        )
        .await
        .unwrap();
    let profiles: Api<ClusterProfile> = Api::namespaced(hub.client.clone(), "fleet");
    let profile = ClusterProfile {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("fleet".into()),
            labels: Some(BTreeMap::from([(
                "x-k8s.io/cluster-manager".to_string(),
                "cluster-api".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: adapters::profile::ClusterProfileSpec {
            display_name: Some("capi-clusters/web".into()),
            cluster_manager: adapters::profile::ClusterManager {
                name: "cluster-api".into(),
            },
        },
        status: None,
    };
    profiles
        .create(&PostParams::default(), &profile)
        .await
        .unwrap();
    profiles
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [], "accessProviders": [{
                "name": "cluster-api",
                "cluster": {
                    "server": member.server(),
                    "certificate-authority-data": BASE64.encode(member.ca_pem()),
                    "extensions": [{"name": "client.authentication.k8s.io/exec", "extension": {
                        "name": "web-kubeconfig", "key": "value", "namespace": "capi-clusters"}}],
                },
            }]}})),
        )
        .await
        .unwrap();
    let member_client = match chart {
        "argocd-sink" => harness::sinks::argo_cluster(&hub.client, target, secret, |_| true)
            .await
            .client()
            .await
            .unwrap(),
        _ => harness::sinks::flux_kubeconfig(&hub.client, target, secret, |_| true)
            .await
            .client()
            .await
            .unwrap(),
    };
    let account = format!("inventory-bridge-{chart}");
    assert_eq!(
        harness::sinks::whoami(&member_client).await.unwrap(),
        format!("system:serviceaccount:inventory-bridge:{account}")
    );
    let finalizer = format!("inventory-bridge.io/{chart}-cleanup");
    wait_profile(&profiles, "web", |p| p.finalizers().contains(&finalizer)).await;

    assert_sink_minimal(&client, chart, release, target).await;

    // Uninstall: Helm creates the hook's ServiceAccount, ConfigMap and RBAC, then the Job,
    // whose command line runs in-process with the hook's token, started while the Deployment's
    // leader still holds the Lease.
    let job = hub.create_hook_resources(release).await;
    let pod = &job["spec"]["template"]["spec"];
    let hook_account = pod["serviceAccountName"].as_str().unwrap().to_string();
    assert_ne!(hook_account, service_account_of(&manifest));
    let hook_client = hub.service_account_client(release, &hook_account).await;
    assert_sink_minimal(
        &hook_client,
        &format!("{chart} (uninstall hook)"),
        release,
        target,
    )
    .await;
    let hook_dir = Scratch(scratch(&format!("{chart}-release")));
    let mut args = sink_args(
        &hub,
        &format!("ib-{chart}-release-config"),
        release,
        strings(&pod["containers"][0]["args"]),
        &hook_dir.0,
    )
    .await;
    args.push(job_identity(&job));
    let (releasing, hook_runtime, hook_options) =
        run_argo_or_flux(chart, args, hook_client.clone()).await;
    assert!(hook_options.release_finalizers);
    assert!(hook_runtime.leader_election, "the Job waits for the Lease");
    assert_eq!(hook_runtime.lease_name, runtime.lease_name);
    assert_eq!(hook_runtime.lease_namespace, runtime.lease_namespace);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !releasing.task.is_finished(),
        "{chart}: the Job waits while the Deployment's leader holds the Lease"
    );
    assert!(
        profiles
            .get("web")
            .await
            .unwrap()
            .finalizers()
            .contains(&finalizer),
        "nothing released while the old leader runs"
    );
    running.stop().await;
    hub.uninstall_without_hooks(release);
    tokio::time::timeout(WAIT, releasing.task)
        .await
        .expect("release mode exits by itself")
        .unwrap()
        .unwrap();
    let released = profiles.get("web").await.unwrap();
    assert!(
        !released.finalizers().contains(&finalizer),
        "{chart}: finalizer released: {:?}",
        released.finalizers()
    );
    harness::sinks::wait_secret_gone(&hub.client, target, secret).await;
    let member_accounts: Api<ServiceAccount> =
        Api::namespaced(member.client().await.unwrap(), "inventory-bridge");
    wait_object_gone(&member_accounts, &account, WAIT)
        .await
        .unwrap();
    hub.assert_uninstalled(&manifest).await;
    profiles
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    wait_object_gone(&profiles, "web", WAIT).await.unwrap();
}

#[tokio::test]
async fn argocd_sink_chart_installs_and_runs_with_only_its_rbac() {
    argo_or_flux_chart_runs_and_uninstalls("argocd-sink", "argocd", "cluster-fleet-web").await;
}

#[tokio::test]
async fn flux_sink_chart_installs_and_runs_with_only_its_rbac() {
    argo_or_flux_chart_runs_and_uninstalls("flux-sink", "flux-system", "web-kubeconfig").await;
}
