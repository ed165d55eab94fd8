//! Reflector-backed caches of secondary hub objects a source reads while projecting (OCM's
//! ManagedClusterSets and bindings, a CA Secret, ...): `observe` reads them without API calls, and
//! their changes re-trigger reconciles through [`Cache::take_trigger`] (hand it to
//! `Controller::reconcile_all_on` in `Source::watches`), which also drives the watch.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::Resource;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tracing::debug;

use crate::error::Category;
use crate::source::Problem;

/// Objects per page of a watch's initial list. A page is decoded whole (every manager's
/// `managedFields` included) before a cache trims its objects, so the page size is a transient
/// peak at every (re)start: measured 96 MiB for a restarted sink whose 1,000 profiles came in one
/// response, against 61 MiB at its cold start. 100 objects cost 5× the LIST requests of 500.
pub const LIST_PAGE_SIZE: u32 = 100;

/// The watcher configuration every cache starts from: paginated initial lists of
/// [`LIST_PAGE_SIZE`], consistent reads (a watch cache answering `resourceVersion=0` ignores the
/// page size and sends everything at once).
pub fn watch_config() -> watcher::Config {
    watcher::Config::default().page_size(LIST_PAGE_SIZE)
}

/// Every object's metadata that `params` selects, read in pages of [`LIST_PAGE_SIZE`] and kept
/// without `managedFields` (for one-off scans such as a sink's orphan sweep: one unpaged list of
/// 2,000 published objects was a restarted sink's largest transient, 18 MiB).
pub async fn list_metadata_paged(
    api: &Api<DynamicObject>,
    params: &ListParams,
) -> kube::Result<Vec<PartialObjectMeta<DynamicObject>>> {
    let mut params = params.clone().limit(LIST_PAGE_SIZE);
    let mut items = Vec::new();
    loop {
        let page = api.list_metadata(&params).await?;
        items.extend(page.items.into_iter().map(|mut item| {
            item.metadata.managed_fields = None;
            item
        }));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(items),
        }
    }
}

/// A watched, cached kind and the stream of "something changed" ticks that drives it.
pub struct Cache<K: Resource<DynamicType = ()> + 'static> {
    what: String,
    store: Store<K>,
    trigger: Mutex<Option<BoxStream<'static, ()>>>,
}

impl<K> Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    /// Cache what `api` lists under `config`; `what` names it in problems.
    pub fn new(what: impl Into<String>, api: Api<K>, config: watcher::Config) -> Self {
        Self::with_modify(what, api, config, |_| {})
    }

    /// As [`Cache::new`], trimming each object before it is stored (e.g. keep one key of a
    /// Secret, so no other secret material sits in memory).
    pub fn with_modify(
        what: impl Into<String>,
        api: Api<K>,
        config: watcher::Config,
        mut modify: impl FnMut(&mut K) + Send + 'static,
    ) -> Self {
        let what = what.into();
        let (store, writer) = reflector::store();
        let label = what.clone();
        let trigger = watcher(api, config)
            .default_backoff()
            .modify(move |object: &mut K| {
                object.meta_mut().managed_fields = None;
                modify(object);
            })
            .reflect(writer)
            .touched_objects()
            .filter_map(move |event| {
                let label = label.clone();
                async move {
                    match event {
                        Ok(_) => Some(()),
                        // The watcher heals itself (backoff, relist): log and keep going.
                        Err(err) => {
                            debug!(cache = %label, error = %err, "watch error");
                            None
                        }
                    }
                }
            })
            .boxed();
        Self {
            what,
            store,
            trigger: Mutex::new(Some(trigger)),
        }
    }

    /// The stream of change ticks (once): whoever polls it keeps the cache current.
    pub fn take_trigger(&self) -> Option<BoxStream<'static, ()>> {
        self.trigger.lock().ok().and_then(|mut t| t.take())
    }

    /// Every cached object.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.store.state()
    }

    /// One cached object.
    pub fn get(&self, name: &str, namespace: Option<&str>) -> Option<Arc<K>> {
        let mut reference = ObjectRef::<K>::new(name);
        if let Some(namespace) = namespace {
            reference = reference.within(namespace);
        }
        self.store.get(&reference)
    }

    /// Wait until the cache holds a full list; a cache that does not sync within `timeout`
    /// (missing CRD, RBAC short) is a problem the caller retries with backoff.
    pub async fn ready(&self, timeout: Duration) -> Result<(), Problem> {
        match tokio::time::timeout(timeout, self.store.wait_until_ready()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Problem::new(
                Category::KubeApi,
                format!("the {} cache stopped", self.what),
            )),
            Err(_) => Err(Problem::new(
                Category::NotFound,
                format!(
                    "the {} cache has not synced within {}s: is its CRD installed and may this adapter list and watch it?",
                    self.what,
                    timeout.as_secs()
                ),
            )),
        }
    }
}
