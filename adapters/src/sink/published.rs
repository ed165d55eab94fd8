//! What a sink published on the hub — every kind it writes, selected by its instance label —
//! watched once and kept in memory, so a reconcile reads its own objects without a request.
//!
//! Beside it, the *names* of every object of those kinds in those namespaces (a metadata-only
//! watch, no content): an object of our name without our label is someone else's and must never
//! be overwritten, so "not ours" is "absent" only when no object of that name exists at all.
//! Until a kind's first lists are in (or while a watch cannot run, e.g. a CRD is missing) every
//! lookup answers [`Lookup::Unknown`] and the caller asks the server, as without the view.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::task::JoinHandle;
use tracing::warn;

use super::LABEL_PROFILE_UID;
use crate::apply::keep_own_apply_records;
use crate::cache::watch_config;
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
    /// Every object of the kind there, ours or not: metadata only.
    names: Store<PartialObjectMeta<DynamicObject>>,
    names_listed: Arc<AtomicBool>,
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
        field_manager: &str,
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
                let manager = field_manager.to_string();
                let stream = watcher(api, watch_config().labels(selector))
                    .default_backoff()
                    // What "anything to write?" needs: our content and our own field ownership.
                    // A consumer's status (Sveltos reports on its SveltosClusters) and other
                    // managers' entries are never compared, so they are not kept.
                    .modify(move |o: &mut DynamicObject| {
                        keep_own_apply_records(&mut o.metadata, &manager);
                        if let Some(fields) = o.data.as_object_mut() {
                            fields.remove("status");
                        }
                    })
                    .reflect(writer)
                    .inspect(move |event| index.observe(event));
                view.tasks.push(tokio::spawn(drain(stream, kind.clone())));
                // Every object's name, in the namespaces we write to; not over every namespace
                // (that would hold the whole cluster's names): there, absence is asked of the
                // server.
                let names_writer = reflector::store::Writer::new(resource.clone());
                let names = names_writer.as_reader();
                let names_listed = Arc::new(AtomicBool::new(false));
                let listed = names_listed.clone();
                let names_api: Api<PartialObjectMeta<DynamicObject>> = match namespace {
                    Some(ns) => Api::namespaced_with(hub.clone(), ns, resource),
                    None => Api::all_with(hub.clone(), resource),
                };
                let names_stream = watcher(names_api, watch_config())
                    .default_backoff()
                    // Names are all this view is for.
                    .modify(|o| {
                        o.metadata.managed_fields = None;
                        o.metadata.annotations = None;
                        o.metadata.labels = None;
                    })
                    .reflect(names_writer)
                    .inspect(move |event| {
                        if matches!(event, Ok(watcher::Event::InitDone)) {
                            listed.store(true, Ordering::Relaxed);
                        }
                    });
                if namespace.is_some() {
                    view.tasks.push(tokio::spawn(drain(names_stream, kind)));
                }
                view.watched.push(Watched {
                    resource: resource.clone(),
                    namespace: namespace.clone(),
                    store,
                    by_profile,
                    names,
                    names_listed,
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

    /// Our object of this kind and name (`Known(None)`: no object of that name exists at all),
    /// when the view can tell; `Unknown` also when an object of that name exists that is not
    /// (or not yet) ours in the view: the caller reads it and checks its owner.
    pub fn get(
        &self,
        resource: &ApiResource,
        namespace: &str,
        name: &str,
    ) -> Lookup<Option<Arc<DynamicObject>>> {
        let Some(watched) = self.covering(resource, namespace) else {
            return Lookup::Unknown;
        };
        let reference = ObjectRef::new_with(name, resource.clone()).within(namespace);
        if let Some(ours) = watched.store.get(&reference) {
            return Lookup::Known(Some(ours));
        }
        let absent = watched.names_listed.load(Ordering::Relaxed)
            && watched
                .names
                .get(&ObjectRef::new_with(name, resource.clone()).within(namespace))
                .is_none();
        if absent {
            Lookup::Known(None)
        } else {
            Lookup::Unknown
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

/// Run a watch stream for its side effects (the store), saying when it fails.
async fn drain<T>(stream: impl futures::Stream<Item = Result<T, watcher::Error>>, kind: String) {
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        if let Err(err) = event {
            warn!(kind = %kind, error = %err, "cannot watch our published objects; reading them from the API meanwhile");
        }
    }
}
