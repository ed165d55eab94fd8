//! What a sink published on the hub — every kind it writes, selected by its instance label —
//! watched once and kept in memory, so a reconcile reads its own objects without a request.
//!
//! The view is only ever used to *skip* a request, never to decide on less than the server
//! knows: an object missing from it may still exist without our label (someone else's, which we
//! must not overwrite), so absence is always confirmed with the server; and until a kind's first
//! list is in (or while its watch cannot run, e.g. a CRD is missing) every lookup answers
//! [`Lookup::Unknown`] and the caller asks the server as before.

use std::sync::Arc;

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::task::JoinHandle;
use tracing::warn;

use super::LABEL_PROFILE_UID;
use crate::index::Index;

/// An answer from the watched view.
pub enum Lookup<T> {
    /// The view is listed: this is what it holds.
    Known(T),
    /// Not listed yet (or not watched): ask the server.
    Unknown,
}

struct Watched {
    resource: ApiResource,
    /// The namespace watched; `None`: every namespace.
    namespace: Option<String>,
    store: Store<DynamicObject>,
    by_profile: Index<DynamicObject>,
}

/// The watched view of a sink's hub objects. Dropping it stops its watches.
#[derive(Default)]
pub struct HubObjects {
    watched: Vec<Watched>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for HubObjects {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl HubObjects {
    /// Watch `kinds` labelled `selector` in `namespaces` (`None`: every namespace). Each watch
    /// retries with backoff on its own; a failing one only means its lookups stay unknown.
    pub fn watch(
        hub: &Client,
        kinds: &[ApiResource],
        namespaces: Option<&[String]>,
        selector: &str,
    ) -> Self {
        let scopes: Vec<Option<String>> = match namespaces {
            Some(list) => list.iter().cloned().map(Some).collect(),
            None => vec![None],
        };
        let mut view = Self::default();
        for resource in kinds {
            for namespace in &scopes {
                let api: Api<DynamicObject> = match namespace {
                    Some(ns) => Api::namespaced_with(hub.clone(), ns, resource),
                    None => Api::all_with(hub.clone(), resource),
                };
                let writer = reflector::store::Writer::new(resource.clone());
                let store = writer.as_reader();
                let by_profile = Index::new(resource.clone(), |o: &DynamicObject| {
                    o.labels()
                        .get(LABEL_PROFILE_UID)
                        .map(|uid| vec![uid.clone()])
                        .unwrap_or_default()
                });
                let index = by_profile.clone();
                let kind = resource.kind.clone();
                let stream = watcher(api, watcher::Config::default().labels(selector))
                    .default_backoff()
                    .reflect(writer)
                    .inspect(move |event| index.observe(event));
                view.tasks.push(tokio::spawn(async move {
                    let mut stream = std::pin::pin!(stream);
                    while let Some(event) = stream.next().await {
                        if let Err(err) = event {
                            warn!(kind = %kind, error = %err, "cannot watch our published objects; reading them from the API meanwhile");
                        }
                    }
                }));
                view.watched.push(Watched {
                    resource: resource.clone(),
                    namespace: namespace.clone(),
                    store,
                    by_profile,
                });
            }
        }
        view
    }

    fn covering(&self, resource: &ApiResource, namespace: &str) -> Option<&Watched> {
        self.watched.iter().find(|w| {
            w.resource.group == resource.group
                && w.resource.kind == resource.kind
                && w.namespace.as_deref().is_none_or(|ns| ns == namespace)
                && w.by_profile.is_ready()
        })
    }

    /// Our object of this kind and name, if the view is listed.
    pub fn get(
        &self,
        resource: &ApiResource,
        namespace: &str,
        name: &str,
    ) -> Lookup<Option<Arc<DynamicObject>>> {
        match self.covering(resource, namespace) {
            Some(watched) => Lookup::Known(
                watched
                    .store
                    .get(&ObjectRef::new_with(name, resource.clone()).within(namespace)),
            ),
            None => Lookup::Unknown,
        }
    }

    /// Our objects of this kind for profile `uid` in `namespaces`, if all of them are listed.
    pub fn of_profile(
        &self,
        resource: &ApiResource,
        namespaces: &[String],
        uid: &str,
    ) -> Lookup<Vec<Arc<DynamicObject>>> {
        let mut found = Vec::new();
        for namespace in namespaces {
            let Some(watched) = self.covering(resource, namespace) else {
                return Lookup::Unknown;
            };
            found.extend(
                watched
                    .by_profile
                    .get(uid, &watched.store)
                    .into_iter()
                    .filter(|o| o.namespace().as_deref() == Some(namespace.as_str())),
            );
        }
        Lookup::Known(found)
    }
}
