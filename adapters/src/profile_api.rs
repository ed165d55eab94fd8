//! ClusterProfiles through the version the hub serves best for writing.
//!
//! Upstream v0.2.0 serves `v1alpha2` beside `v1alpha1` (storage), and its consumer library reads
//! only `v1alpha2`; a hub still holding upstream's v0.1.x CRD serves `v1alpha1` alone. Writers
//! therefore pick, by discovery at start, `v1alpha2` where served and `v1alpha1` otherwise, so the
//! objects they write pass `v1alpha2`'s validation wherever it exists. Whatever the version on the
//! wire, callers see the `v1alpha1` types (a superset of `v1alpha2`): reading converts losslessly,
//! writing as `v1alpha2` leaves out only what that version cannot carry.

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use kube::Client;
use kube::api::{Api, DeleteParams};
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

use crate::apply::{Applier, ApplyOutcome};
use crate::profile::{ClusterProfile, GROUP, PLURAL, VERSION_V1ALPHA1, VERSION_V1ALPHA2, v1alpha2};
use crate::served_versions;

/// A ClusterProfile version the adapters speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProfileVersion {
    /// `v1alpha1`: every release serves it; the storage version.
    V1alpha1,
    /// `v1alpha2`: upstream v0.2.0 on.
    V1alpha2,
}

impl ProfileVersion {
    /// What writers use, most preferred first.
    pub const WRITE_PREFERENCE: [ProfileVersion; 2] =
        [ProfileVersion::V1alpha2, ProfileVersion::V1alpha1];

    /// The version's name (`v1alpha1`, `v1alpha2`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileVersion::V1alpha1 => VERSION_V1ALPHA1,
            ProfileVersion::V1alpha2 => VERSION_V1ALPHA2,
        }
    }

    /// The version named `name`, if we speak it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::WRITE_PREFERENCE
            .into_iter()
            .find(|v| v.as_str() == name)
    }

    /// The version a writer uses among the `served` ones: `v1alpha2` when served, else `v1alpha1`.
    pub fn for_writing<S: AsRef<str>>(served: &[S]) -> Option<Self> {
        Self::WRITE_PREFERENCE
            .into_iter()
            .find(|v| served.iter().any(|s| s.as_ref() == v.as_str()))
    }

    /// `profile` as this version serves it (the form `managedFields` paths refer to).
    pub fn served_form(self, profile: &ClusterProfile) -> serde_json::Result<serde_json::Value> {
        match self {
            ProfileVersion::V1alpha1 => serde_json::to_value(profile),
            ProfileVersion::V1alpha2 => {
                serde_json::to_value(v1alpha2::ClusterProfile::from(profile))
            }
        }
    }

    /// Ask the hub which version to write, waiting (with backoff, saying what is missing) until
    /// the ClusterProfile CRD is served. `None` when `stop` fires first.
    pub async fn discover_for_writing(client: &Client, stop: &CancellationToken) -> Option<Self> {
        let names = Self::WRITE_PREFERENCE.map(Self::as_str);
        let served =
            served_versions::wait_until_served(client, GROUP, PLURAL, &names, stop).await?;
        Self::from_name(&served)
    }
}

impl std::fmt::Display for ProfileVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// ClusterProfiles read and written as one [`ProfileVersion`], seen as the `v1alpha1` types.
#[derive(Clone)]
pub struct ProfileApi {
    client: Client,
    version: ProfileVersion,
}

impl std::fmt::Debug for ProfileApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileApi")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl ProfileApi {
    /// Profiles on `client`'s hub, through `version`.
    pub fn new(client: Client, version: ProfileVersion) -> Self {
        Self { client, version }
    }

    /// The version on the wire.
    pub fn version(&self) -> ProfileVersion {
        self.version
    }

    fn v1(&self, namespace: Option<&str>) -> Api<ClusterProfile> {
        match namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    fn v2(&self, namespace: Option<&str>) -> Api<v1alpha2::ClusterProfile> {
        match namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// Server-side apply metadata and spec of `desired` (its namespace and name set) unless
    /// `current` already holds them (see [`Applier::apply`]).
    pub async fn apply(
        &self,
        applier: &Applier,
        desired: &ClusterProfile,
        current: Option<&ClusterProfile>,
        force: bool,
    ) -> crate::Result<ApplyOutcome> {
        let namespace = desired.metadata.namespace.as_deref();
        match self.version {
            ProfileVersion::V1alpha1 => {
                applier
                    .apply(&self.v1(namespace), desired, current, force)
                    .await
            }
            ProfileVersion::V1alpha2 => {
                let current = current.map(v1alpha2::ClusterProfile::from);
                applier
                    .apply(
                        &self.v2(namespace),
                        &v1alpha2::ClusterProfile::from(desired),
                        current.as_ref(),
                        force,
                    )
                    .await
            }
        }
    }

    /// Server-side apply the status of `desired` unless `current` already holds it (see
    /// [`Applier::apply_status`]).
    pub async fn apply_status(
        &self,
        applier: &Applier,
        desired: &ClusterProfile,
        current: Option<&ClusterProfile>,
        force: bool,
    ) -> crate::Result<ApplyOutcome> {
        let namespace = desired.metadata.namespace.as_deref();
        match self.version {
            ProfileVersion::V1alpha1 => {
                applier
                    .apply_status(&self.v1(namespace), desired, current, force)
                    .await
            }
            ProfileVersion::V1alpha2 => {
                let current = current.map(v1alpha2::ClusterProfile::from);
                applier
                    .apply_status(
                        &self.v2(namespace),
                        &v1alpha2::ClusterProfile::from(desired),
                        current.as_ref(),
                        force,
                    )
                    .await
            }
        }
    }

    /// Delete `namespace/name` with `params`.
    pub async fn delete(
        &self,
        namespace: &str,
        name: &str,
        params: &DeleteParams,
    ) -> Result<(), kube::Error> {
        match self.version {
            ProfileVersion::V1alpha1 => {
                self.v1(Some(namespace)).delete(name, params).await?;
            }
            ProfileVersion::V1alpha2 => {
                self.v2(Some(namespace)).delete(name, params).await?;
            }
        }
        Ok(())
    }

    /// A watch of profiles in `namespace` (`None`: every namespace) as `config` selects them, as
    /// `v1alpha1` types.
    pub fn watch(
        &self,
        namespace: Option<&str>,
        config: watcher::Config,
    ) -> BoxStream<'static, Result<watcher::Event<ClusterProfile>, watcher::Error>> {
        match self.version {
            ProfileVersion::V1alpha1 => watcher(self.v1(namespace), config).boxed(),
            ProfileVersion::V1alpha2 => watcher(self.v2(namespace), config)
                .map_ok(|event| match event {
                    watcher::Event::Apply(p) => watcher::Event::Apply(ClusterProfile::from(&p)),
                    watcher::Event::Delete(p) => watcher::Event::Delete(ClusterProfile::from(&p)),
                    watcher::Event::Init => watcher::Event::Init,
                    watcher::Event::InitApply(p) => {
                        watcher::Event::InitApply(ClusterProfile::from(&p))
                    }
                    watcher::Event::InitDone => watcher::Event::InitDone,
                })
                .boxed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_prefer_v1alpha2_and_fall_back_to_v1alpha1() {
        assert_eq!(
            ProfileVersion::for_writing(&["v1alpha1", "v1alpha2"]),
            Some(ProfileVersion::V1alpha2)
        );
        assert_eq!(
            ProfileVersion::for_writing(&["v1alpha1"]),
            Some(ProfileVersion::V1alpha1)
        );
        assert_eq!(
            ProfileVersion::for_writing(&["v1alpha2"]),
            Some(ProfileVersion::V1alpha2)
        );
        assert_eq!(ProfileVersion::for_writing(&["v1beta1"]), None);
        assert_eq!(ProfileVersion::for_writing::<&str>(&[]), None);
        assert_eq!(
            ProfileVersion::from_name("v1alpha2"),
            Some(ProfileVersion::V1alpha2)
        );
        assert_eq!(ProfileVersion::V1alpha1.to_string(), "v1alpha1");
    }
}
