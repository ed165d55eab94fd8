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

use std::collections::HashSet;
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

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
}
