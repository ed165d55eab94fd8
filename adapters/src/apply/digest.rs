//! Apply records kept as digests: what a cache needs to decide an apply, in 50 bytes.
//!
//! [`super::needs_apply`] compares what we want with the values at the fields our manager owns.
//! A cache that keeps the whole object for that holds its `managedFields` and every owned value
//! (for a ClusterProfile: the CA bundle, condition messages, ...) for as long as the object
//! exists. Instead, when an object enters the cache, the values at the fields we own are hashed
//! and the hash is kept in place of our `fieldsV1`; deciding later hashes what we want the same
//! way. Equal hashes mean the server already holds exactly what we would apply (and we own nothing
//! we no longer want); anything else applies.
//!
//! Both sides are brought to one canonical form first: empty values dropped (the server drops
//! them), numbers compared as numbers, lists of objects in a fixed order (as `is_subset` ignores
//! their order), object keys sorted.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::Subresource;

/// Prefix of a digest kept in place of a `fieldsV1` tree (a tree's text starts with `{`).
pub(super) const DIGEST_PREFIX: &str = "sha256:";

/// The digest of the values `served` (an object as the API serves it) holds at the fields in
/// `fields_v1`. `None` when the record cannot be read that way (`i:` positional entries, a shape
/// that does not match the object): the caller then keeps the record itself.
pub(super) fn owned_values_digest(fields_v1: &Value, served: &Value) -> Option<String> {
    let owned = owned_values(fields_v1, served)?;
    Some(digest(&owned))
}

/// The digest of what an apply of `desired` to `subresource` would own, in the form
/// [`owned_values_digest`] gives for an object that holds exactly that.
pub(super) fn desired_digest(desired: &Value, subresource: Subresource) -> String {
    let mut content = Map::new();
    if let Some(fields) = desired.as_object() {
        match subresource {
            Subresource::Status => {
                if let Some(status) = fields.get("status") {
                    content.insert("status".to_string(), status.clone());
                }
            }
            Subresource::Main => {
                for (key, value) in fields {
                    match key.as_str() {
                        // Identity selects the object; status goes through its subresource.
                        "apiVersion" | "kind" | "status" => {}
                        "metadata" => {
                            let mut metadata = value.as_object().cloned().unwrap_or_default();
                            metadata.remove("name");
                            metadata.remove("namespace");
                            content.insert(key.clone(), Value::Object(metadata));
                        }
                        _ => {
                            content.insert(key.clone(), value.clone());
                        }
                    }
                }
            }
        }
    }
    digest(&Value::Object(content))
}

/// The part of `value` at the fields `fields_v1` names.
fn owned_values(fields_v1: &Value, value: &Value) -> Option<Value> {
    let fields = fields_v1.as_object()?;
    // A leaf (`{}`): the whole value is ours.
    if fields.keys().all(|key| key == ".") && !fields.is_empty() {
        return Some(empty_like(value));
    }
    if fields.is_empty() {
        return Some(value.clone());
    }
    let keyed = fields
        .keys()
        .any(|key| key.starts_with("k:") || key.starts_with("v:"));
    if keyed {
        let items = value.as_array()?;
        let mut owned = Vec::new();
        let mut members = Vec::new();
        for (key, child) in fields {
            if key == "." {
                continue;
            }
            if let Some(item_key) = key.strip_prefix("k:") {
                let keys: Map<String, Value> = serde_json::from_str(item_key).ok()?;
                // Owned but gone from the object: left out, so what we want differs and applies.
                if let Some(item) = items
                    .iter()
                    .find(|item| keys.iter().all(|(k, v)| item.get(k) == Some(v)))
                {
                    owned.push(owned_values(child, item)?);
                }
            } else if let Some(set_value) = key.strip_prefix("v:") {
                members.push(serde_json::from_str::<Value>(set_value).ok()?);
            } else {
                return None;
            }
        }
        // Set members in the object's order: the order of a list of scalars counts.
        owned.extend(items.iter().filter(|item| members.contains(item)).cloned());
        return Some(Value::Array(owned));
    }
    let object = value.as_object()?;
    let mut owned = Map::new();
    for (key, child) in fields {
        if key == "." {
            continue;
        }
        let field = key.strip_prefix("f:")?;
        if let Some(present) = object.get(field) {
            owned.insert(field.to_string(), owned_values(child, present)?);
        }
    }
    Some(Value::Object(owned))
}

/// A map or list whose own presence is recorded (`{".": {}}`) but none of its members.
fn empty_like(value: &Value) -> Value {
    match value {
        Value::Array(_) => Value::Array(Vec::new()),
        Value::Object(_) => Value::Object(Map::new()),
        other => other.clone(),
    }
}

fn digest(value: &Value) -> String {
    let mut hasher = Sha256::new();
    if let Some(canonical) = canonical(value) {
        write_canonical(&canonical, &mut hasher);
    }
    format!(
        "{DIGEST_PREFIX}{}",
        STANDARD_NO_PAD.encode(hasher.finalize())
    )
}

/// `value` without empty values, its numbers as the server would compare them and its lists of
/// objects ordered by content. `None` when nothing is left.
fn canonical(value: &Value) -> Option<Value> {
    match value {
        Value::Null => None,
        Value::Object(fields) => {
            let kept: Map<String, Value> = fields
                .iter()
                .filter_map(|(key, child)| Some((key.clone(), canonical(child)?)))
                .collect();
            (!kept.is_empty()).then_some(Value::Object(kept))
        }
        Value::Array(items) => {
            let mut kept: Vec<Value> = items.iter().filter_map(canonical).collect();
            if kept.is_empty() {
                return None;
            }
            if kept.iter().any(Value::is_object) {
                kept.sort_by_cached_key(|item| {
                    let mut text = Vec::new();
                    write_canonical(item, &mut text);
                    text
                });
            }
            Some(Value::Array(kept))
        }
        Value::Number(number) => Some(match number.as_f64() {
            Some(float) if float.fract() == 0.0 && float.abs() < 9.0e15 => {
                Value::from(float as i64)
            }
            _ => value.clone(),
        }),
        other => Some(other.clone()),
    }
}

/// Something canonical text can be written to (a hasher, or bytes to sort by).
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// JSON text with object keys sorted, whatever order the map keeps them in.
fn write_canonical(value: &Value, out: &mut impl Sink) {
    match value {
        Value::Object(fields) => {
            let mut keys: Vec<&String> = fields.keys().collect();
            keys.sort();
            out.put(b"{");
            for (index, key) in keys.into_iter().enumerate() {
                if index > 0 {
                    out.put(b",");
                }
                write_canonical(&Value::String(key.clone()), out);
                out.put(b":");
                if let Some(child) = fields.get(key) {
                    write_canonical(child, out);
                }
            }
            out.put(b"}");
        }
        Value::Array(items) => {
            out.put(b"[");
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.put(b",");
                }
                write_canonical(item, out);
            }
            out.put(b"]");
        }
        scalar => out.put(scalar.to_string().as_bytes()),
    }
}
