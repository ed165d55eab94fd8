//! A secondary index over a reflector store: objects by a key derived from them (a source
//! object, a member id, a claimed name), kept current from the same watch events the store sees.
//! A lookup costs what it finds, not the size of the fleet, so a reconcile that asks "which
//! profiles belong to this cluster?" stays constant-time as the fleet grows.
//!
//! Feed it with `.inspect(|event| index.observe(event))` right after `.reflect(writer)`. A relist
//! (`Init` … `InitDone`) is buffered and swapped in at the end, as the store does, so lookups never
//! see a half-listed index. Lookups go through the store ([`Index::get`]): the index only says
//! where to look, the store has the object.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

/// `(namespace, name)` of an indexed object.
type Id = (Option<String>, String);

#[derive(Default)]
struct Maps {
    by_key: HashMap<String, BTreeSet<Id>>,
    keys_of: HashMap<Id, Vec<String>>,
}

impl Maps {
    fn insert(&mut self, id: Id, keys: Vec<String>) {
        self.remove(&id);
        if keys.is_empty() {
            return;
        }
        for key in &keys {
            self.by_key
                .entry(key.clone())
                .or_default()
                .insert(id.clone());
        }
        self.keys_of.insert(id, keys);
    }

    fn remove(&mut self, id: &Id) {
        let Some(keys) = self.keys_of.remove(id) else {
            return;
        };
        for key in keys {
            if let Some(ids) = self.by_key.get_mut(&key) {
                ids.remove(id);
                if ids.is_empty() {
                    self.by_key.remove(&key);
                }
            }
        }
    }
}

#[derive(Default)]
struct State {
    current: Maps,
    /// The relist in progress, swapped in at `InitDone`.
    next: Option<Maps>,
    ready: bool,
    /// Bumped on every change, so derived figures (gauges) are recomputed only when needed.
    generation: u64,
}

type KeysFn<K> = dyn Fn(&K) -> Vec<String> + Send + Sync;

/// Objects of one store by derived keys. Cheap to clone (shared).
pub struct Index<K: Resource> {
    dyntype: K::DynamicType,
    keys: Arc<KeysFn<K>>,
    state: Arc<Mutex<State>>,
}

impl<K: Resource> Clone for Index<K>
where
    K::DynamicType: Clone,
{
    fn clone(&self) -> Self {
        Self {
            dyntype: self.dyntype.clone(),
            keys: self.keys.clone(),
            state: self.state.clone(),
        }
    }
}

impl<K> Index<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash,
{
    /// An index of objects of `dyntype` under the keys `keys` gives each (none: not indexed).
    pub fn new(
        dyntype: K::DynamicType,
        keys: impl Fn(&K) -> Vec<String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            dyntype,
            keys: Arc::new(keys),
            state: Arc::default(),
        }
    }

    /// Apply one watch event (after the store has).
    pub fn observe<E>(&self, event: &Result<watcher::Event<K>, E>) {
        let Ok(event) = event else {
            return;
        };
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        state.generation = state.generation.wrapping_add(1);
        match event {
            watcher::Event::Apply(object) => {
                let keys = (self.keys)(object);
                state.current.insert(id_of(object), keys);
            }
            watcher::Event::Delete(object) => state.current.remove(&id_of(object)),
            watcher::Event::Init => state.next = Some(Maps::default()),
            watcher::Event::InitApply(object) => {
                let keys = (self.keys)(object);
                state
                    .next
                    .get_or_insert_with(Maps::default)
                    .insert(id_of(object), keys);
            }
            watcher::Event::InitDone => {
                if let Some(next) = state.next.take() {
                    state.current = next;
                }
                state.ready = true;
            }
        }
    }

    /// Whether a full list has been indexed (until then, absence proves nothing).
    pub fn is_ready(&self) -> bool {
        self.state.lock().is_ok_and(|s| s.ready)
    }

    /// A number that changes whenever the index does.
    pub fn generation(&self) -> u64 {
        self.state.lock().map_or(0, |s| s.generation)
    }

    /// How many objects are indexed (under at least one key).
    pub fn len(&self) -> usize {
        self.state.lock().map_or(0, |s| s.current.keys_of.len())
    }

    /// Whether no object is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// References of the objects indexed under `key`.
    pub fn refs(&self, key: &str) -> Vec<ObjectRef<K>> {
        let Ok(state) = self.state.lock() else {
            return Vec::new();
        };
        state
            .current
            .by_key
            .get(key)
            .map(|ids| ids.iter().map(|id| self.reference(id)).collect())
            .unwrap_or_default()
    }

    /// Every key with the number of objects under it.
    pub fn key_sizes(&self) -> Vec<(String, usize)> {
        let Ok(state) = self.state.lock() else {
            return Vec::new();
        };
        state
            .current
            .by_key
            .iter()
            .map(|(key, ids)| (key.clone(), ids.len()))
            .collect()
    }

    /// The stored objects under `key` that still carry it (the store may be a step ahead).
    pub fn get(&self, key: &str, store: &Store<K>) -> Vec<Arc<K>> {
        self.refs(key)
            .iter()
            .filter_map(|reference| store.get(reference))
            .filter(|object| (self.keys)(object).iter().any(|k| k == key))
            .collect()
    }

    fn reference(&self, (namespace, name): &Id) -> ObjectRef<K> {
        let reference = ObjectRef::new_with(name, self.dyntype.clone());
        match namespace {
            Some(namespace) => reference.within(namespace),
            None => reference,
        }
    }
}

fn id_of<K: Resource>(object: &K) -> Id {
    let meta = object.meta();
    (
        meta.namespace.clone(),
        meta.name.clone().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;
    use std::collections::BTreeMap;

    fn cm(name: &str, owner: Option<&str>) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                labels: owner.map(|o| BTreeMap::from([("owner".to_string(), o.to_string())])),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    #[test]
    fn follows_applies_deletes_and_relists() {
        let index = Index::<ConfigMap>::new((), |o: &ConfigMap| {
            o.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("owner"))
                .cloned()
                .into_iter()
                .collect()
        });
        let ok = |e| Ok::<_, ()>(e);
        index.observe(&ok(watcher::Event::Apply(cm("a", Some("x")))));
        index.observe(&ok(watcher::Event::Apply(cm("b", Some("x")))));
        assert_eq!(index.refs("x").len(), 2);
        assert!(!index.is_ready());
        // A changed key moves the object.
        index.observe(&ok(watcher::Event::Apply(cm("b", Some("y")))));
        assert_eq!(index.refs("x").len(), 1);
        assert_eq!(index.refs("y").len(), 1);
        index.observe(&ok(watcher::Event::Delete(cm("a", Some("x")))));
        assert!(index.refs("x").is_empty());
        // A relist replaces everything, but only once it is complete.
        index.observe(&ok(watcher::Event::Init));
        index.observe(&ok(watcher::Event::InitApply(cm("c", Some("z")))));
        assert_eq!(index.refs("y").len(), 1);
        assert!(index.refs("z").is_empty());
        index.observe(&ok(watcher::Event::InitDone));
        assert!(index.refs("y").is_empty());
        assert_eq!(index.refs("z").len(), 1);
        assert!(index.is_ready());
        assert_eq!(index.len(), 1);
        // Unkeyed objects are not indexed.
        index.observe(&ok(watcher::Event::Apply(cm("d", None))));
        assert_eq!(index.len(), 1);
    }
}
