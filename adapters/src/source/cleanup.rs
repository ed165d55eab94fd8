//! Deleting what a gone, deselected or re-projected source object left behind: profiles at once,
//! companions once its profiles are really gone.

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, Preconditions};
use kube::core::ApiResource;
use tracing::{info, warn};

use super::*;
use crate::error::Error;
use crate::profile::ClusterProfile;

impl<S: Source> Engine<S> {
    pub(super) async fn delete_profile(&self, profile: &ClusterProfile) -> Result<(), Error> {
        let namespace = profile.namespace().unwrap_or_default();
        let name = profile.name_any();
        let params = DeleteParams {
            // Only the object we saw: never a same-named profile someone created since.
            preconditions: Some(Preconditions {
                uid: profile.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.profile_api.delete(&namespace, &name, &params).await {
            Ok(_) => {
                info!(profile = %format!("{namespace}/{name}"), "deleted ClusterProfile whose source is gone or deselected");
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    pub(super) async fn delete_companion(
        &self,
        resource: &ApiResource,
        object: &DynamicObject,
    ) -> Result<(), Error> {
        let api: Api<DynamicObject> = match object.namespace() {
            Some(ns) => Api::namespaced_with(self.leader.client.clone(), &ns, resource),
            None => Api::all_with(self.leader.client.clone(), resource),
        };
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: object.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&object.name_any(), &params).await {
            Ok(_) => {
                info!(kind = %resource.kind, object = %object.name_any(), "deleted companion whose source is gone or deselected");
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// Delete everything of ours projected from `key` if that object is no longer watched.
    pub(super) async fn sweep_key(&self, key: &str) {
        if self
            .natives
            .get(&object_ref_from_key::<S::Native>(key))
            .is_some()
        {
            return;
        }
        let remaining = self.our_profiles_of(key);
        for profile in &remaining {
            if let Err(err) = self.delete_profile(profile).await {
                warn!(profile = %profile.name_any(), category = %err.category(), error = %err, "cannot delete orphaned profile; will retry on the next sweep");
            }
        }
        if !remaining.is_empty() {
            // Companions go when the last profile is gone (its delete event sweeps again).
            return;
        }
        for companion in &self.companions {
            for object in companion.by_source.get(key, &companion.store) {
                if let Err(err) = self.delete_companion(&companion.resource, &object).await {
                    warn!(kind = %companion.resource.kind, category = %err.category(), error = %err, "cannot delete orphaned companion; will retry on the next sweep");
                }
            }
        }
        if let Ok(mut reported) = self.reported.lock() {
            reported.remove(key);
        }
        self.retries.succeeded(key);
    }

    /// Sweep every object of ours whose source object is gone.
    pub(super) async fn sweep_orphans(&self) {
        let (mut keys, untraced) = self.profiles.sources();
        for companion in &self.companions {
            keys.extend(
                companion
                    .store
                    .state()
                    .iter()
                    .filter(|o| self.is_ours(&o.metadata))
                    .filter_map(|o| source_object_of(&o.metadata).map(str::to_string)),
            );
        }
        // Profiles of ours without the annotation cannot be traced to a source: leave them and say so.
        for profile in untraced {
            warn!(%profile, "profile labelled as ours has no source annotation; left untouched");
        }
        for key in keys {
            self.sweep_key(&key).await;
        }
        self.publish_profile_count();
    }
}
