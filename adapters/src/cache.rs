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

/// A map a watch keeps: what [`Relisted`] needs of it.
pub(crate) trait WatchedMap: Default {
    /// Names one object.
    type Key;
    /// What is kept of it.
    type Value;
    /// Keep `value` for `key` (replacing what was kept).
    fn put(&mut self, key: Self::Key, value: Self::Value);
    /// Keep nothing for `key`.
    fn forget(&mut self, key: &Self::Key);
}

impl<K: std::hash::Hash + Eq, V> WatchedMap for std::collections::HashMap<K, V> {
    type Key = K;
    type Value = V;

    fn put(&mut self, key: K, value: V) {
        self.insert(key, value);
    }

    fn forget(&mut self, key: &K) {
        self.remove(key);
    }
}

/// A map fed by a watch's events (for caches of our own instead of kube-runtime's store of whole
/// objects): a relist is gathered aside and swapped in whole, so a reader never sees half a list,
/// and the first full list makes it ready (until then, absence proves nothing).
pub(crate) struct Relisted<M> {
    state: std::sync::RwLock<RelistState<M>>,
    ready: tokio::sync::watch::Sender<bool>,
}

#[derive(Default)]
struct RelistState<M> {
    current: M,
    /// A relist in progress.
    next: Option<M>,
}

impl<M: WatchedMap> Relisted<M> {
    pub(crate) fn new() -> Self {
        Self {
            state: std::sync::RwLock::new(RelistState::default()),
            ready: tokio::sync::watch::channel(false).0,
        }
    }

    /// Apply one event of the watch: `key` names an object, `value` is what is kept of it
    /// (`None`: nothing). Both run outside the lock, so readers wait for the update only.
    pub(crate) fn observe<K, E>(
        &self,
        event: &Result<watcher::Event<K>, E>,
        key: impl Fn(&K) -> M::Key,
        value: impl Fn(&K) -> Option<M::Value>,
    ) {
        let Ok(event) = event else {
            return;
        };
        let kept = match event {
            watcher::Event::Apply(object) | watcher::Event::InitApply(object) => {
                Some((key(object), value(object)))
            }
            watcher::Event::Delete(object) => Some((key(object), None)),
            _ => None,
        };
        let mut state = self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (event, kept) {
            (watcher::Event::Apply(_), Some((key, Some(value)))) => state.current.put(key, value),
            (watcher::Event::Apply(_) | watcher::Event::Delete(_), Some((key, None))) => {
                state.current.forget(&key);
            }
            (watcher::Event::InitApply(_), Some((key, Some(value)))) => {
                state.next.get_or_insert_with(M::default).put(key, value)
            }
            (watcher::Event::Init, _) => state.next = Some(M::default()),
            (watcher::Event::InitDone, _) => {
                if let Some(next) = state.next.take() {
                    state.current = next;
                }
                drop(state);
                self.ready.send_replace(true);
            }
            _ => {}
        }
    }

    /// Read the current map.
    pub(crate) fn read<R>(&self, reader: impl FnOnce(&M) -> R) -> R {
        let state = self
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        reader(&state.current)
    }

    /// Whether a full list is in the map.
    pub(crate) fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Wait until a full list is in the map.
    pub(crate) async fn wait_until_ready(&self) {
        let mut ready = self.ready.subscribe();
        // The sender lives in `self`: the channel cannot close while we wait.
        let _ = ready.wait_for(|ready| *ready).await;
    }
}

/// A watched kind kept as one small value per object (e.g. the one key of a Secret a source
/// reads) instead of whole objects: a reflector store holds each object with its metadata (a
/// B-tree node per map, a dozen strings) for as long as it exists, which at 10,000 kubeconfig
/// Secrets was a fifth of a source's memory. Fed by [`CompactStore::observe`] from a watch; a
/// relist is gathered aside and swapped in whole, so a reader never sees half a list.
pub struct CompactStore<K, V> {
    compact: Compaction<K, V>,
    /// By `namespace/name` (`name` for cluster-scoped kinds).
    values: Relisted<std::collections::HashMap<Box<str>, V>>,
}

/// What a [`CompactStore`] keeps of an object (`None`: nothing).
type Compaction<K, V> = Box<dyn Fn(&K) -> Option<V> + Send + Sync>;

impl<K: Resource, V: Clone> CompactStore<K, V> {
    /// An empty store that keeps `compact(object)` of each object (nothing when it says `None`).
    pub fn new(compact: impl Fn(&K) -> Option<V> + Send + Sync + 'static) -> Self {
        Self {
            compact: Box::new(compact),
            values: Relisted::new(),
        }
    }

    /// Apply one event of the watch.
    pub fn observe<E>(&self, event: &Result<watcher::Event<K>, E>) {
        self.values.observe(event, Self::key_of, &self.compact);
    }

    /// The value kept for `namespace/name`.
    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<V> {
        let key = match namespace {
            Some(namespace) => format!("{namespace}/{name}"),
            None => name.to_string(),
        };
        self.values.read(|values| values.get(key.as_str()).cloned())
    }

    /// How many objects have a value.
    pub fn len(&self) -> usize {
        self.values.read(std::collections::HashMap::len)
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wait until a full list is in the store (until then, absence proves nothing); a store that
    /// does not sync within `timeout` (RBAC short, API down) is a problem the caller retries.
    pub async fn ready(&self, what: &str, timeout: Duration) -> Result<(), Problem> {
        match tokio::time::timeout(timeout, self.values.wait_until_ready()).await {
            Ok(()) => Ok(()),
            Err(_) => Err(Problem::new(
                Category::KubeApi,
                format!(
                    "the {what} cache has not synced within {}s: may this adapter list and watch them?",
                    timeout.as_secs()
                ),
            )),
        }
    }

    fn key_of(object: &K) -> Box<str> {
        let name = object.meta().name.as_deref().unwrap_or_default();
        match object.meta().namespace.as_deref() {
            Some(namespace) => format!("{namespace}/{name}").into(),
            None => name.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn config_map(namespace: &str, name: &str, value: Option<&str>) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            },
            data: value.map(|v| [("kept".to_string(), v.to_string())].into()),
            ..ConfigMap::default()
        }
    }

    fn store() -> CompactStore<ConfigMap, String> {
        CompactStore::new(|cm: &ConfigMap| cm.data.as_ref()?.get("kept").cloned())
    }

    fn event(e: watcher::Event<ConfigMap>) -> Result<watcher::Event<ConfigMap>, ()> {
        Ok(e)
    }

    #[tokio::test]
    async fn a_relist_is_swapped_in_whole_and_makes_the_store_ready() {
        let store = store();
        assert!(
            store
                .ready("test", Duration::from_millis(10))
                .await
                .is_err(),
            "not ready before a list"
        );
        store.observe(&event(watcher::Event::Init));
        store.observe(&event(watcher::Event::InitApply(config_map(
            "a",
            "one",
            Some("1"),
        ))));
        store.observe(&event(watcher::Event::InitApply(config_map(
            "a", "skip", None,
        ))));
        assert_eq!(
            store.get(Some("a"), "one"),
            None,
            "half a list is never read"
        );
        store.observe(&event(watcher::Event::InitDone));
        assert_eq!(store.get(Some("a"), "one").as_deref(), Some("1"));
        assert_eq!(store.get(Some("a"), "skip"), None, "no value, nothing kept");
        assert_eq!(
            store.get(Some("b"), "one"),
            None,
            "namespaces are part of the key"
        );
        assert!(store.ready("test", Duration::from_millis(10)).await.is_ok());

        // A relist replaces everything: what it no longer lists is gone.
        store.observe(&event(watcher::Event::Init));
        store.observe(&event(watcher::Event::InitApply(config_map(
            "a",
            "two",
            Some("2"),
        ))));
        assert_eq!(store.get(Some("a"), "one").as_deref(), Some("1"));
        store.observe(&event(watcher::Event::InitDone));
        assert_eq!(store.get(Some("a"), "one"), None);
        assert_eq!(store.get(Some("a"), "two").as_deref(), Some("2"));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn changes_and_deletes_update_the_value() {
        let store = store();
        store.observe(&event(watcher::Event::Apply(config_map(
            "a",
            "one",
            Some("1"),
        ))));
        store.observe(&event(watcher::Event::Apply(config_map(
            "a",
            "one",
            Some("2"),
        ))));
        assert_eq!(store.get(Some("a"), "one").as_deref(), Some("2"));
        // The kept key removed from the object: nothing is kept any more.
        store.observe(&event(watcher::Event::Apply(config_map("a", "one", None))));
        assert_eq!(store.get(Some("a"), "one"), None);
        store.observe(&event(watcher::Event::Apply(config_map(
            "a",
            "two",
            Some("2"),
        ))));
        store.observe(&event(watcher::Event::Delete(config_map(
            "a",
            "two",
            Some("2"),
        ))));
        assert!(store.is_empty());
        // A watch error changes nothing.
        store.observe::<&str>(&Err("gone"));
        assert!(store.is_empty());
    }
}
