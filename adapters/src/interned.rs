//! Strings that thousands of cached objects share (condition types, statuses and reasons, claim
//! and property names, the inventory namespace), kept once per process.
//!
//! At 10,000 cached objects each such string is an allocation per object, and an allocation costs
//! its header and rounding besides its bytes: a source's caches were a dozen of them per object.
//! [`Interned`] keeps one `Arc<str>` per distinct value. The set is bounded ([`INTERNED_MAX`]
//! values of at most [`INTERNED_MAX_LEN`] bytes):
//! some of these strings are written by whoever writes the object (a member's property names, an
//! agent's condition messages), which is not ours to bound, so past the bound a new value is
//! simply kept per object, as a `String` would be.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Distinct values kept shared at most.
pub const INTERNED_MAX: usize = 4096;
/// Longest value kept shared: what is shared is short (a condition type, a claim name), and the
/// set outlives the objects, so a writer of long unique values (a condition message up to 32 KiB)
/// must not pin them for the life of the process.
pub const INTERNED_MAX_LEN: usize = 256;

static SHARED: LazyLock<Interner> = LazyLock::new(|| Interner::new(INTERNED_MAX));

/// A bounded set of shared strings.
struct Interner {
    values: Mutex<HashSet<Arc<str>>>,
    max: usize,
}

impl Interner {
    fn new(max: usize) -> Self {
        Self {
            values: Mutex::default(),
            max,
        }
    }

    fn get(&self, value: &str) -> Arc<str> {
        let mut values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(kept) = values.get(value) {
            return kept.clone();
        }
        let value: Arc<str> = value.into();
        if values.len() < self.max && value.len() <= INTERNED_MAX_LEN {
            values.insert(value.clone());
        }
        value
    }
}

/// An immutable string, shared with every other `Interned` of the same value (within the bound).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Interned(Arc<str>);

impl Interned {
    /// The shared copy of `value`.
    pub fn new(value: &str) -> Self {
        Self(SHARED.get(value))
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<Interned> for Arc<str> {
    fn from(value: Interned) -> Self {
        value.0
    }
}

impl Default for Interned {
    fn default() -> Self {
        Self::new("")
    }
}

impl Deref for Interned {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Interned {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl PartialEq<str> for Interned {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Interned {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl fmt::Debug for Interned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Interned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl Serialize for Interned {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Interned {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Borrowed where the input allows, so a shared value costs no allocation at all.
        let value = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(Self::new(&value))
    }
}

/// An object's labels as one sorted slice of interned pairs, for objects a cache holds for as
/// long as they exist: a `BTreeMap<String, String>` costs a whole B-tree node (~0.5 KiB) and two
/// allocations per label, where most keys and many values repeat across the fleet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InternedLabels(Box<[(Interned, Interned)]>);

impl InternedLabels {
    /// The pairs of `labels` that `keep` accepts (by key).
    fn kept<'a>(
        labels: impl IntoIterator<Item = (&'a String, &'a String)>,
        keep: impl Fn(&str) -> bool,
    ) -> Self {
        let mut pairs: Vec<_> = labels
            .into_iter()
            .filter(|(key, _)| keep(key))
            .map(|(key, value)| (Interned::new(key), Interned::new(value)))
            .collect();
        // `get` searches by key (a map's order is sorted already; any other input is not).
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        Self(pairs.into_boxed_slice())
    }

    /// Move `metadata`'s labels that `keep` accepts into a compact copy (dropping the others
    /// with the map), for an object entering a cache; with no labels there, `self` is left as is.
    pub fn take_from(&mut self, metadata: &mut ObjectMeta, keep: impl Fn(&str) -> bool) {
        if let Some(labels) = metadata.labels.take() {
            *self = Self::kept(&labels, keep);
        }
    }

    /// Every label of an object: those still in its `metadata` (one that never entered a cache)
    /// and these.
    pub fn with_metadata(&self, metadata: &ObjectMeta) -> BTreeMap<String, String> {
        let mut labels = metadata.labels.clone().unwrap_or_default();
        labels.extend(self.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        labels
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    /// The pairs, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_one_allocation_and_read_as_strings() {
        let a: Interned = serde_json::from_str("\"ManagedClusterJoined\"").unwrap();
        let b = Interned::new("ManagedClusterJoined");
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(a, "ManagedClusterJoined");
        assert_eq!(a.as_str(), "ManagedClusterJoined");
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            "\"ManagedClusterJoined\""
        );
        assert_eq!(
            format!("{a} {a:?}"),
            "ManagedClusterJoined \"ManagedClusterJoined\""
        );
        assert_eq!(Interned::default(), "");
    }

    #[test]
    fn past_the_bound_values_are_kept_per_object_and_stay_right() {
        let interner = Interner::new(2);
        let first = interner.get("a");
        assert!(Arc::ptr_eq(&first, &interner.get("a")));
        interner.get("b");
        let c1 = interner.get("c");
        let c2 = interner.get("c");
        assert_eq!(c1, c2);
        assert!(!Arc::ptr_eq(&c1, &c2), "not shared: the set stays bounded");
        assert!(
            Arc::ptr_eq(&first, &interner.get("a")),
            "what is in stays shared"
        );
        assert_eq!(interner.values.lock().unwrap().len(), 2);
    }

    #[test]
    fn long_values_are_never_pinned_in_the_set() {
        let interner = Interner::new(10);
        let long = "m".repeat(INTERNED_MAX_LEN + 1);
        let a = interner.get(&long);
        assert_eq!(&*a, long.as_str());
        assert!(!Arc::ptr_eq(&a, &interner.get(&long)));
        assert!(interner.values.lock().unwrap().is_empty());
    }

    #[test]
    fn interned_labels_keep_what_is_asked_sorted_and_shared() {
        let labels = std::collections::BTreeMap::from([
            ("zone".to_string(), "a".to_string()),
            ("env".to_string(), "prod".to_string()),
            ("drop/me".to_string(), "x".to_string()),
        ]);
        let kept = InternedLabels::kept(&labels, |key| !key.starts_with("drop/"));
        assert_eq!(
            kept.iter().collect::<Vec<_>>(),
            [("env", "prod"), ("zone", "a")]
        );
        assert_eq!(kept.get("env"), Some("prod"));
        assert_eq!(kept.get("zone"), Some("a"));
        assert_eq!(kept.get("drop/me"), None, "not kept");
        assert_eq!(kept.get("absent"), None);
        let again = InternedLabels::kept(&labels, |_| true);
        assert!(
            Arc::ptr_eq(&kept.0[0].1.0, &again.0[1].1.0),
            "values shared"
        );
        assert!(InternedLabels::default().is_empty());
    }

    #[test]
    fn labels_taken_from_metadata_read_back_whole() {
        let labels = std::collections::BTreeMap::from([
            ("env".to_string(), "prod".to_string()),
            ("drop/me".to_string(), "x".to_string()),
        ]);
        let mut metadata = ObjectMeta {
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        };
        let mut kept = InternedLabels::default();
        assert_eq!(
            kept.with_metadata(&metadata),
            labels,
            "untrimmed: the metadata's"
        );
        kept.take_from(&mut metadata, |key| key != "drop/me");
        assert_eq!(metadata.labels, None);
        assert_eq!(
            kept.with_metadata(&metadata),
            BTreeMap::from([("env".to_string(), "prod".to_string())])
        );
        // Taking again from metadata without labels keeps what was taken.
        kept.take_from(&mut metadata, |_| true);
        assert_eq!(kept.get("env"), Some("prod"));
    }
}
