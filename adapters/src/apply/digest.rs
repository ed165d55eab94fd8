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
//! Both sides are written in one canonical form, straight from the JSON without copies: empty
//! values dropped (the server drops them), numbers compared as numbers, lists of objects in a fixed
//! order (as `is_subset` ignores their order), object keys sorted.

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
    let mut text = Vec::new();
    write_owned(fields_v1, served, &mut text)?;
    Some(digest(&text))
}

/// The digest of what an apply of `desired` to `subresource` would own, in the form
/// [`owned_values_digest`] gives for an object that holds exactly that.
pub(super) fn desired_digest(desired: &Value, subresource: Subresource) -> String {
    let top = desired.as_object().into_iter().flatten();
    let mut text = Vec::new();
    match subresource {
        Subresource::Status => {
            write_members(
                top.filter(|(key, _)| *key == "status"),
                &mut text,
                |_, value, out| write_canonical(value, out),
            );
        }
        Subresource::Main => {
            // Identity selects the object; status goes through its subresource.
            let content =
                top.filter(|(key, _)| !matches!(key.as_str(), "apiVersion" | "kind" | "status"));
            write_members(content, &mut text, |key, value, out| {
                if key != "metadata" {
                    return write_canonical(value, out);
                }
                let metadata = value.as_object().into_iter().flatten();
                write_members(
                    metadata.filter(|(key, _)| !matches!(key.as_str(), "name" | "namespace")),
                    out,
                    |_, value, out| write_canonical(value, out),
                )
            });
        }
    }
    digest(&text)
}

fn digest(text: &[u8]) -> String {
    format!(
        "{DIGEST_PREFIX}{}",
        STANDARD_NO_PAD.encode(Sha256::digest(text))
    )
}

/// Canonical text of the part of `value` at the fields `fields_v1` names, appended to `out`.
/// `Some(false)` when nothing is left of it (nothing appended), `None` when unreadable.
fn write_owned(fields_v1: &Value, value: &Value, out: &mut Vec<u8>) -> Option<bool> {
    let fields = fields_v1.as_object()?;
    // A leaf (`{}`): the whole value is ours. Only `.`: the map or list exists, none of its members.
    if fields.is_empty() {
        return Some(write_canonical(value, out));
    }
    if fields.keys().all(|key| key == ".") {
        return Some(false);
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
                    let mut text = Vec::new();
                    if write_owned(child, item, &mut text)? {
                        owned.push((item.is_object(), text));
                    }
                }
            } else if let Some(set_value) = key.strip_prefix("v:") {
                members.push(serde_json::from_str::<Value>(set_value).ok()?);
            } else {
                return None;
            }
        }
        // Set members in the object's order: the order of a list of scalars counts.
        for item in items.iter().filter(|item| members.contains(item)) {
            let mut text = Vec::new();
            if write_canonical(item, &mut text) {
                owned.push((item.is_object(), text));
            }
        }
        return Some(write_items(owned, out));
    }
    let object = value.as_object()?;
    let mut owned = Vec::new();
    for (key, child) in fields {
        if key == "." {
            continue;
        }
        let field = key.strip_prefix("f:")?;
        if let Some((name, present)) = object.get_key_value(field) {
            owned.push((name, (child, present)));
        }
    }
    // Unreadable children make the whole record unreadable.
    let mut readable = true;
    let written = write_members(
        owned.into_iter(),
        out,
        |_, (child, present), out| match write_owned(child, present, out) {
            Some(written) => written,
            None => {
                readable = false;
                false
            }
        },
    );
    readable.then_some(written)
}

/// Canonical text of `value` appended to `out`: empty values left out (the server drops them),
/// numbers as numbers, lists of objects ordered by content, object keys sorted. False when
/// nothing is left of it (nothing appended).
fn write_canonical(value: &Value, out: &mut Vec<u8>) -> bool {
    match value {
        Value::Null => false,
        Value::Object(fields) => write_members(fields.iter(), out, |_, value, out| {
            write_canonical(value, out)
        }),
        Value::Array(items) => {
            let texts = items
                .iter()
                .filter_map(|item| {
                    let mut text = Vec::new();
                    write_canonical(item, &mut text).then_some((item.is_object(), text))
                })
                .collect();
            write_items(texts, out)
        }
        Value::Number(number) => {
            match number.as_f64() {
                Some(float) if float.fract() == 0.0 && float.abs() < 9.0e15 => {
                    out.extend_from_slice((float as i64).to_string().as_bytes());
                }
                _ => out.extend_from_slice(number.to_string().as_bytes()),
            }
            true
        }
        Value::String(text) => {
            write_string(text, out);
            true
        }
        Value::Bool(flag) => {
            out.extend_from_slice(if *flag { b"true" } else { b"false" });
            true
        }
    }
}

/// An object of `members` (sorted by key, each written by `write_value`, empty ones left out).
fn write_members<'a, V>(
    members: impl Iterator<Item = (&'a String, V)>,
    out: &mut Vec<u8>,
    mut write_value: impl FnMut(&str, V, &mut Vec<u8>) -> bool,
) -> bool {
    let mut members: Vec<(&String, V)> = members.collect();
    members.sort_by(|a, b| a.0.cmp(b.0));
    let start = out.len();
    out.push(b'{');
    let mut any = false;
    for (key, value) in members {
        let mark = out.len();
        if any {
            out.push(b',');
        }
        write_string(key, out);
        out.push(b':');
        if write_value(key, value, out) {
            any = true;
        } else {
            out.truncate(mark);
        }
    }
    if !any {
        out.truncate(start);
        return false;
    }
    out.push(b'}');
    true
}

/// A list of items' texts; ordered by content when any item is an object.
fn write_items(mut items: Vec<(bool, Vec<u8>)>, out: &mut Vec<u8>) -> bool {
    if items.is_empty() {
        return false;
    }
    if items.iter().any(|(is_object, _)| *is_object) {
        items.sort_by(|a, b| a.1.cmp(&b.1));
    }
    out.push(b'[');
    for (index, (_, text)) in items.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(text);
    }
    out.push(b']');
    true
}

fn write_string(text: &str, out: &mut Vec<u8>) {
    // Writing to a Vec cannot fail; the fallback only keeps this total.
    if serde_json::to_writer(&mut *out, text).is_err() {
        out.extend_from_slice(text.as_bytes());
    }
}
