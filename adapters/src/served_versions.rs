//! Which versions of a foreign API the hub serves (so an adapter can read the newest one and fall
//! back to an older one), and reading objects that a native object merely references by group
//! and kind (e.g. a Cluster API `controlPlaneRef`), with a short cache so a reconcile that runs
//! often does not read them every time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::{Category, kube_category};

/// The first of `versions` (in order of preference) in which `group` serves `plural`, or `None`
/// when none does (the CRD is not installed).
pub async fn first_served(
    client: &kube::Client,
    group: &str,
    plural: &str,
    versions: &[&str],
) -> Result<Option<String>, kube::Error> {
    for version in versions {
        match client
            .list_api_group_resources(&format!("{group}/{version}"))
            .await
        {
            Ok(list) if list.resources.iter().any(|r| r.name == plural) => {
                return Ok(Some((*version).to_string()));
            }
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => return Err(err),
        }
    }
    Ok(None)
}

/// [`first_served`], waiting (with backoff, saying clearly what is missing) until one is served.
/// Returns `None` when `stop` fires first.
pub async fn wait_until_served(
    client: &kube::Client,
    group: &str,
    plural: &str,
    versions: &[&str],
    stop: &CancellationToken,
) -> Option<String> {
    let mut delay = Duration::from_secs(2);
    loop {
        match first_served(client, group, plural, versions).await {
            Ok(Some(version)) => {
                info!(group, plural, version = %version, "reading this API version");
                return Some(version);
            }
            Ok(None) => warn!(
                group,
                plural,
                versions = ?versions,
                retry_in = ?delay,
                "the hub serves none of these API versions (is the CRD installed?); waiting"
            ),
            Err(err) => {
                warn!(group, plural, category = %kube_category(&err), error = %err, retry_in = ?delay, "API discovery failed")
            }
        }
        if !crate::runtime::sleep_or_stop(delay, stop).await {
            return None;
        }
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}

/// A reference to an object by group and kind (and optionally version), as CRDs spell them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KindRef {
    /// API group (`""` for core).
    pub group: String,
    /// Version, when the reference pins one; otherwise the group's preferred version is used.
    pub version: Option<String>,
    /// Kind.
    pub kind: String,
    /// Namespace of the object (`None`: cluster-scoped).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

/// Why a referenced object cannot be read. Messages carry only the reference's coordinates.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    /// The group is not served.
    #[error("API group {0:?} is not served")]
    GroupNotServed(String),
    /// The group has no such kind (at that version).
    #[error("API group {group:?} serves no kind {kind:?}{}", version.as_ref().map(|v| format!(" at version {v}")).unwrap_or_default())]
    KindNotServed {
        /// Group.
        group: String,
        /// Version asked for.
        version: Option<String>,
        /// Kind.
        kind: String,
    },
    /// The object does not exist.
    #[error("{kind} {name:?} does not exist")]
    NotFound {
        /// Kind.
        kind: String,
        /// Name.
        name: String,
    },
    /// The API server failed.
    #[error("reading it failed ({0})")]
    Api(Category),
}

impl RefError {
    /// Bounded category.
    pub fn category(&self) -> Category {
        match self {
            RefError::GroupNotServed(_) | RefError::KindNotServed { .. } => Category::InvalidInput,
            RefError::NotFound { .. } => Category::NotFound,
            RefError::Api(category) => *category,
        }
    }
}

type Cached<T> = (Instant, T);
type KindKey = (String, Option<String>, String);

/// Reads referenced objects through discovery, caching both for `ttl`.
pub struct RefReader {
    client: kube::Client,
    ttl: Duration,
    kinds: Mutex<HashMap<KindKey, Cached<Result<ApiResource, RefError>>>>,
    objects: Mutex<HashMap<KindRef, Cached<Result<DynamicObject, RefError>>>>,
}

impl RefReader {
    /// A reader on `client` whose answers are reused for `ttl`.
    pub fn new(client: kube::Client, ttl: Duration) -> Self {
        Self {
            client,
            ttl,
            kinds: Mutex::default(),
            objects: Mutex::default(),
        }
    }

    /// The referenced object (from the cache when younger than the ttl).
    pub async fn get(&self, reference: &KindRef) -> Result<DynamicObject, RefError> {
        let now = Instant::now();
        if let Ok(mut objects) = self.objects.lock() {
            objects.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
            if let Some((_, cached)) = objects.get(reference) {
                return cached.clone();
            }
        }
        let result = self.fetch(reference).await;
        if let Ok(mut objects) = self.objects.lock() {
            objects.insert(reference.clone(), (Instant::now(), result.clone()));
        }
        result
    }

    async fn fetch(&self, reference: &KindRef) -> Result<DynamicObject, RefError> {
        let resource = self.resource(reference).await?;
        let api: Api<DynamicObject> = match &reference.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        };
        match api.get_opt(&reference.name).await {
            Ok(Some(object)) => Ok(object),
            Ok(None) => Err(RefError::NotFound {
                kind: reference.kind.clone(),
                name: reference.name.clone(),
            }),
            Err(err) => Err(RefError::Api(kube_category(&err))),
        }
    }

    async fn resource(&self, reference: &KindRef) -> Result<ApiResource, RefError> {
        let key = (
            reference.group.clone(),
            reference.version.clone(),
            reference.kind.clone(),
        );
        let now = Instant::now();
        let cached = self.kinds.lock().ok().and_then(|kinds| {
            kinds
                .get(&key)
                .filter(|(at, _)| now.duration_since(*at) < self.ttl)
                .map(|(_, resolved)| resolved.clone())
        });
        if let Some(resolved) = cached {
            return resolved;
        }
        let resolved = self.discover(reference).await;
        if !matches!(resolved, Err(RefError::Api(_)))
            && let Ok(mut kinds) = self.kinds.lock()
        {
            kinds.insert(key, (now, resolved.clone()));
        }
        resolved
    }

    async fn discover(&self, reference: &KindRef) -> Result<ApiResource, RefError> {
        let group = match kube::discovery::group(&self.client, &reference.group).await {
            Ok(group) => group,
            Err(kube::Error::Discovery(_)) => {
                return Err(RefError::GroupNotServed(reference.group.clone()));
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {
                return Err(RefError::GroupNotServed(reference.group.clone()));
            }
            Err(err) => return Err(RefError::Api(kube_category(&err))),
        };
        let found = match &reference.version {
            Some(version) => group
                .versioned_resources(version)
                .into_iter()
                .find(|(r, _)| r.kind == reference.kind),
            None => group.recommended_kind(&reference.kind),
        };
        found
            .map(|(resource, _)| resource)
            .ok_or_else(|| RefError::KindNotServed {
                group: reference.group.clone(),
                version: reference.version.clone(),
                kind: reference.kind.clone(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_errors_have_bounded_categories_and_clear_messages() {
        let err = RefError::KindNotServed {
            group: "controlplane.example".into(),
            version: Some("v1".into()),
            kind: "Nope".into(),
        };
        assert_eq!(err.category(), Category::InvalidInput);
        assert_eq!(
            err.to_string(),
            "API group \"controlplane.example\" serves no kind \"Nope\" at version v1"
        );
        assert_eq!(
            RefError::NotFound {
                kind: "KubeadmControlPlane".into(),
                name: "cp".into()
            }
            .category(),
            Category::NotFound
        );
    }
}
