//! Foreign CRDs installed from pinned upstream Go modules (versions in `tests/crds/go.mod`),
//! read out of the Go module cache, plus the ClusterProfile CRD we generate.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};

use crate::{Result, repo_root, wait_for};

/// A CRD the harness can install.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ForeignCrd {
    /// `multicluster.x-k8s.io` ClusterProfile, upstream's CRD from the pinned module (v0.1.x:
    /// `v1alpha1` only).
    ClusterProfile,
    /// ClusterProfile as upstream v0.2.0 installs it (`v1alpha1` storage + `v1alpha2`), from
    /// `tests/crds/cluster-inventory-api-v0.2.0/` (the Go module proxy refuses v0.2.0; its
    /// README.txt says how the file was made). Not in [`ForeignCrd::ALL`]: it is the same CRD as
    /// [`ForeignCrd::ClusterProfile`] at a later release.
    ClusterProfileV1alpha2,
    /// OCM `cluster.open-cluster-management.io/v1` ManagedCluster.
    ManagedCluster,
    /// OCM ManagedClusterSet (`v1beta2`).
    ManagedClusterSet,
    /// OCM ManagedClusterSetBinding (`v1beta2`).
    ManagedClusterSetBinding,
    /// OCM `work.open-cluster-management.io/v1` ManifestWork.
    ManifestWork,
    /// OCM `authentication.open-cluster-management.io` ManagedServiceAccount.
    ManagedServiceAccount,
    /// Cluster API `cluster.x-k8s.io` Cluster.
    CapiCluster,
    /// Sveltos `lib.projectsveltos.io` SveltosCluster.
    SveltosCluster,
    /// About API `about.k8s.io` ClusterProperty (see `tests/crds/about.k8s.io_clusterproperties.yaml`).
    ClusterProperty,
}

impl ForeignCrd {
    /// Every foreign CRD.
    pub const ALL: [ForeignCrd; 9] = [
        ForeignCrd::ClusterProfile,
        ForeignCrd::ManagedCluster,
        ForeignCrd::ManagedClusterSet,
        ForeignCrd::ManagedClusterSetBinding,
        ForeignCrd::ManifestWork,
        ForeignCrd::ManagedServiceAccount,
        ForeignCrd::CapiCluster,
        ForeignCrd::SveltosCluster,
        ForeignCrd::ClusterProperty,
    ];

    /// (Go module, path inside it); no module means a file under `tests/crds/`.
    fn source(self) -> (Option<&'static str>, &'static str) {
        match self {
            ForeignCrd::ClusterProfile => (
                Some("sigs.k8s.io/cluster-inventory-api"),
                "config/crd/bases/multicluster.x-k8s.io_clusterprofiles.yaml",
            ),
            ForeignCrd::ManagedCluster => (
                Some("open-cluster-management.io/api"),
                "cluster/v1/0000_00_clusters.open-cluster-management.io_managedclusters.crd.yaml",
            ),
            ForeignCrd::ManagedClusterSet => (
                Some("open-cluster-management.io/api"),
                "cluster/v1beta2/0000_00_clusters.open-cluster-management.io_managedclustersets.crd.yaml",
            ),
            ForeignCrd::ManagedClusterSetBinding => (
                Some("open-cluster-management.io/api"),
                "cluster/v1beta2/0000_01_clusters.open-cluster-management.io_managedclustersetbindings.crd.yaml",
            ),
            ForeignCrd::ManifestWork => (
                Some("open-cluster-management.io/api"),
                "work/v1/0000_00_work.open-cluster-management.io_manifestworks.crd.yaml",
            ),
            ForeignCrd::ManagedServiceAccount => (
                Some("open-cluster-management.io/managed-serviceaccount"),
                "config/crd/bases/authentication.open-cluster-management.io_managedserviceaccounts.yaml",
            ),
            ForeignCrd::CapiCluster => (
                Some("sigs.k8s.io/cluster-api"),
                "core/config/crd/bases/cluster.x-k8s.io_clusters.yaml",
            ),
            ForeignCrd::SveltosCluster => (
                Some("github.com/projectsveltos/libsveltos"),
                "config/crd/bases/lib.projectsveltos.io_sveltosclusters.yaml",
            ),
            ForeignCrd::ClusterProperty => (None, "about.k8s.io_clusterproperties.yaml"),
            ForeignCrd::ClusterProfileV1alpha2 => (
                None,
                "cluster-inventory-api-v0.2.0/multicluster.x-k8s.io_clusterprofiles.yaml",
            ),
        }
    }

    /// The file holding this CRD.
    pub fn path(self) -> Result<PathBuf> {
        let (module, path) = self.source();
        Ok(match module {
            Some(module) => module_dir(module)?.join(path),
            None => repo_root().join("tests/crds").join(path),
        })
    }

    /// The CRD, parsed.
    pub fn load(self) -> Result<CustomResourceDefinition> {
        let path = self.path()?;
        let text = std::fs::read_to_string(&path)
            .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        parse_crd(&text).map_err(|err| format!("{}: {err}", path.display()).into())
    }
}

/// Parse one CRD from YAML (a leading `---` and comments are fine).
pub fn parse_crd(text: &str) -> Result<CustomResourceDefinition> {
    let mut documents: Vec<CustomResourceDefinition> = serde_saphyr::from_multiple(text)?;
    match documents.len() {
        1 => Ok(documents.remove(0)),
        n => Err(format!("expected one CRD document, found {n}").into()),
    }
}

/// Directory of a pinned module in the Go module cache (downloaded on first use, verified
/// against `tests/crds/go.sum`).
pub fn module_dir(module: &str) -> Result<PathBuf> {
    static DIRS: OnceLock<Mutex<BTreeMap<String, PathBuf>>> = OnceLock::new();
    let dirs = DIRS.get_or_init(Mutex::default);
    if let Some(dir) = dirs.lock().map_err(|_| "poisoned")?.get(module) {
        return Ok(dir.clone());
    }
    let output = Command::new("go")
        .args(["mod", "download", "-json", module])
        .current_dir(repo_root().join("tests/crds"))
        .env("GOFLAGS", "-mod=readonly")
        .env("GOTOOLCHAIN", "local")
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run go (is Go installed?): {err}"))?;
    let info: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|err| format!("go mod download -json {module}: {err}"))?;
    if let Some(error) = info.get("Error").and_then(|e| e.as_str()) {
        return Err(format!("go mod download {module}: {error}").into());
    }
    let dir = info
        .get("Dir")
        .and_then(|d| d.as_str())
        .map(PathBuf::from)
        .ok_or_else(|| format!("go mod download {module}: no Dir in its answer"))?;
    dirs.lock()
        .map_err(|_| "poisoned")?
        .insert(module.to_string(), dir.clone());
    Ok(dir)
}

/// Install foreign CRDs and wait until each serves.
pub async fn install_crds(client: &Client, crds: &[ForeignCrd]) -> Result<()> {
    for crd in crds {
        install_crd(client, crd.load()?).await?;
    }
    Ok(())
}

/// Apply `crd` (server-side, as the harness) and wait until it is Established and every served
/// version answers a list.
pub async fn install_crd(client: &Client, crd: CustomResourceDefinition) -> Result<()> {
    install_crd_as(client, crd, "inventory-bridge-harness").await
}

/// [`install_crd`] with another field manager (e.g. `kubectl`, to apply a CRD over one another
/// tool installed, as an operator upgrading a hub would), taking conflicting fields (`--force-conflicts`).
pub async fn install_crd_as(
    client: &Client,
    crd: CustomResourceDefinition,
    field_manager: &str,
) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().ok_or("CRD without a name")?;
    let mut crd = crd;
    crd.metadata.creation_timestamp = None;
    crd.status = None;
    crds.patch(
        &name,
        &PatchParams::apply(field_manager).force(),
        &Patch::Apply(&crd),
    )
    .await?;
    wait_for(
        Duration::from_secs(60),
        &format!("CRD {name} established"),
        || {
            let crds = crds.clone();
            let name = name.clone();
            async move {
                let current = crds.get(&name).await?;
                let established = current
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                Ok(established.then_some(()))
            }
        },
    )
    .await?;
    // Established can precede discovery by a moment: wait until every served version lists.
    for version in crd.spec.versions.iter().filter(|v| v.served) {
        let gvk = GroupVersionKind::gvk(&crd.spec.group, &version.name, &crd.spec.names.kind);
        let resource = ApiResource::from_gvk_with_plural(&gvk, &crd.spec.names.plural);
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        wait_for(
            Duration::from_secs(60),
            &format!("{name} {} serving", version.name),
            || {
                let api = api.clone();
                async move {
                    Ok(api
                        .list(&ListParams::default().limit(1))
                        .await
                        .ok()
                        .map(|_| ()))
                }
            },
        )
        .await?;
    }
    Ok(())
}
