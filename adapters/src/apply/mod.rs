//! Server-side apply that writes nothing when nothing changed.
//!
//! Steady state must be quiet (KEP: under one status write per 30 s per profile; ours: zero). A
//! server-side apply of identical content is a no-op for etcd but still a request, so we decide
//! locally whether an apply would change anything: it would not when
//! 1. every value we want is already on the object (`desired ⊆ current`), and
//! 2. every field our field manager owns on the object is still in what we want; otherwise the
//!    apply must run so the server removes the fields we dropped (a label that disappeared upstream).
//!
//! Both checks are schema-free: ownership comes from the server's own `managedFields` (`fieldsV1`),
//! which already encodes list-map keys and set values.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ObjectMeta};
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::Result;

mod digest;

/// Which part of an object an apply targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    /// The object itself (metadata, spec, data, ...).
    Main,
    /// The status subresource.
    Status,
}

impl Subresource {
    fn managed_fields_name(self) -> Option<&'static str> {
        match self {
            Subresource::Main => None,
            Subresource::Status => Some("status"),
        }
    }
}

/// What an apply did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The object already held exactly what we own and want: no request was sent.
    Unchanged,
    /// A server-side apply request was sent.
    Applied,
}

/// Whether applying `desired` with `field_manager` could change `current`.
///
/// `desired` and `current` are JSON forms of the object (`current` including `metadata.managedFields`).
pub fn needs_apply(
    desired: &Value,
    current: Option<&Value>,
    field_manager: &str,
    subresource: Subresource,
) -> bool {
    let Some(current) = current else {
        return true;
    };
    match owned_record(current, field_manager, subresource) {
        // Not yet a manager of this object: apply once so our ownership is recorded and later
        // removals are carried out by the server.
        None => true,
        Some(OwnedRecord::Digest(kept)) => digest::desired_digest(desired, subresource) != kept,
        Some(OwnedRecord::Fields(owned)) => {
            !(is_subset(&strip_identity(desired), current) && fields_covered(&owned, desired))
        }
    }
}

/// Keep of a cached object's server-side apply records only `field_manager`'s own, each as a
/// digest of the values `served` (the object as the API serves it) holds at the fields it names
/// (see [`digest`]). Returns whether every `Apply` record of ours could be kept so: then
/// [`needs_apply`] no longer reads the object's content, and the cache may drop what nothing else
/// reads. A record that cannot (positional list entries) is kept as [`keep_own_apply_records`]
/// keeps it.
pub fn keep_own_apply_digests(meta: &mut ObjectMeta, served: &Value, field_manager: &str) -> bool {
    let Some(entries) = meta.managed_fields.as_mut() else {
        return true;
    };
    entries.retain(|entry| entry.manager.as_deref() == Some(field_manager));
    let mut content_unneeded = true;
    for entry in entries.iter_mut() {
        let Some(FieldsV1(fields)) = entry.fields_v1.as_mut() else {
            continue;
        };
        let kept = match &*fields {
            Value::String(text) => serde_json::from_str(text)
                .ok()
                .and_then(|tree| digest::owned_values_digest(&tree, served)),
            tree => digest::owned_values_digest(tree, served),
        };
        match kept {
            Some(kept) => {
                *fields = Value::String(kept);
                // Never read: which manager, operation and subresource, and the digest, decide.
                entry.api_version = None;
                entry.fields_type = None;
                entry.time = None;
            }
            None => {
                content_unneeded &= entry.operation.as_deref() != Some("Apply");
                if !fields.is_string()
                    && let Ok(text) = serde_json::to_string(fields)
                {
                    *fields = Value::String(text);
                }
            }
        }
    }
    if entries.is_empty() {
        meta.managed_fields = None;
    }
    content_unneeded
}

/// Keep of a cached object's server-side apply records only `field_manager`'s own, each with its
/// `fieldsV1` as compact JSON text. Other managers' records are never read and can be as large as
/// the object; ours are read only when an apply is considered, and as a tree of JSON maps they
/// cost several times their text (measured: 14 KiB of a cached profile's 17 KiB). Kubernetes keeps
/// `fieldsV1` as raw bytes for the same reason; [`needs_apply`] reads both forms.
pub fn keep_own_apply_records(meta: &mut ObjectMeta, field_manager: &str) {
    let Some(entries) = meta.managed_fields.as_mut() else {
        return;
    };
    entries.retain(|entry| entry.manager.as_deref() == Some(field_manager));
    for entry in entries.iter_mut() {
        if let Some(FieldsV1(fields)) = entry.fields_v1.as_mut()
            && !fields.is_string()
            && let Ok(text) = serde_json::to_string(fields)
        {
            *fields = Value::String(text);
        }
    }
    if entries.is_empty() {
        meta.managed_fields = None;
    }
}

/// What a cache keeps of the fields our manager owns.
enum OwnedRecord<'a> {
    /// The `fieldsV1` tree (as the server sends it, or parsed from the text
    /// [`keep_own_apply_records`] keeps).
    Fields(Cow<'a, Value>),
    /// The digest [`keep_own_apply_digests`] keeps.
    Digest(&'a str),
}

/// The record of the fields our manager holds for this subresource via `Apply` operations.
fn owned_record<'a>(
    current: &'a Value,
    field_manager: &str,
    subresource: Subresource,
) -> Option<OwnedRecord<'a>> {
    current
        .pointer("/metadata/managedFields")?
        .as_array()?
        .iter()
        .find(|entry| {
            entry.get("manager").and_then(Value::as_str) == Some(field_manager)
                && entry.get("operation").and_then(Value::as_str) == Some("Apply")
                && entry.get("subresource").and_then(Value::as_str)
                    == subresource.managed_fields_name()
        })
        .and_then(|entry| entry.get("fieldsV1"))
        .and_then(|fields| match fields {
            Value::String(text) if text.starts_with(digest::DIGEST_PREFIX) => {
                Some(OwnedRecord::Digest(text))
            }
            // Unreadable text counts as "not recorded": the apply then runs, which is safe.
            Value::String(text) => serde_json::from_str(text)
                .ok()
                .map(|tree| OwnedRecord::Fields(Cow::Owned(tree))),
            tree => Some(OwnedRecord::Fields(Cow::Borrowed(tree))),
        })
}

/// `desired` without apiVersion/kind: they select the endpoint, they are not content.
fn strip_identity(desired: &Value) -> Value {
    let mut value = desired.clone();
    if let Some(map) = value.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
    }
    value
}

/// Whether every value in `desired` is present and equal in `current`. Lists: every desired item
/// must match some current item (others' list-map entries may sit beside ours), and a list of
/// scalars must be equal as a whole.
pub fn is_subset(desired: &Value, current: &Value) -> bool {
    match (desired, current) {
        (Value::Object(want), Value::Object(have)) => {
            want.iter().all(|(key, value)| match have.get(key) {
                Some(present) => is_subset(value, present),
                // Absent on the server and empty in our object: the server drops empty values.
                None => is_empty(value),
            })
        }
        (Value::Array(want), Value::Array(have)) => {
            if want.iter().all(|v| !v.is_object()) {
                return want == have;
            }
            want.len() <= have.len()
                && want
                    .iter()
                    .all(|item| have.iter().any(|present| is_subset(item, present)))
        }
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => desired == current,
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

/// Whether every field in `fields_v1` (the server's record of what we own) is still in `desired`.
fn fields_covered(fields_v1: &Value, desired: &Value) -> bool {
    let Some(fields) = fields_v1.as_object() else {
        return true;
    };
    fields.iter().all(|(key, child)| {
        if key == "." {
            return true;
        }
        if let Some(field) = key.strip_prefix("f:") {
            return match desired.get(field) {
                Some(value) => fields_covered(child, value),
                None => false,
            };
        }
        if let Some(item_key) = key.strip_prefix("k:") {
            return match (
                serde_json::from_str::<Map<String, Value>>(item_key),
                desired,
            ) {
                (Ok(keys), Value::Array(items)) => items.iter().any(|item| {
                    keys.iter().all(|(k, v)| item.get(k) == Some(v)) && fields_covered(child, item)
                }),
                _ => false,
            };
        }
        if let Some(set_value) = key.strip_prefix("v:") {
            return match (serde_json::from_str::<Value>(set_value), desired) {
                (Ok(v), Value::Array(items)) => items.contains(&v),
                _ => false,
            };
        }
        // `i:<index>` (positional, atomic lists): we cannot tell, so let the server decide.
        false
    })
}

/// Server-side apply helper bound to one field manager.
#[derive(Clone, Debug)]
pub struct Applier {
    field_manager: String,
}

impl Applier {
    /// An applier writing as `field_manager` (the adapter's name).
    pub fn new(field_manager: impl Into<String>) -> Self {
        Self {
            field_manager: field_manager.into(),
        }
    }

    /// The field manager this applier writes as.
    pub fn field_manager(&self) -> &str {
        &self.field_manager
    }

    /// Apply `desired` (main resource) unless `current` already matches it. `force` takes fields
    /// from other managers: only for fields that are unambiguously ours.
    pub async fn apply<K>(
        &self,
        api: &Api<K>,
        desired: &K,
        current: Option<&K>,
        force: bool,
    ) -> Result<ApplyOutcome>
    where
        K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    {
        self.apply_to(api, desired, current, force, Subresource::Main)
            .await
    }

    /// Apply `desired` to the status subresource unless `current` already matches it.
    pub async fn apply_status<K>(
        &self,
        api: &Api<K>,
        desired: &K,
        current: Option<&K>,
        force: bool,
    ) -> Result<ApplyOutcome>
    where
        K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    {
        self.apply_to(api, desired, current, force, Subresource::Status)
            .await
    }

    async fn apply_to<K>(
        &self,
        api: &Api<K>,
        desired: &K,
        current: Option<&K>,
        force: bool,
        subresource: Subresource,
    ) -> Result<ApplyOutcome>
    where
        K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    {
        let desired_json = serde_json::to_value(desired)?;
        let current_json = current.map(serde_json::to_value).transpose()?;
        if !needs_apply(
            &desired_json,
            current_json.as_ref(),
            &self.field_manager,
            subresource,
        ) {
            return Ok(ApplyOutcome::Unchanged);
        }
        let name = desired.meta().name.clone().unwrap_or_default();
        let mut params = PatchParams::apply(&self.field_manager);
        if force {
            params = params.force();
        }
        match subresource {
            Subresource::Main => {
                api.patch(&name, &params, &Patch::Apply(&desired_json))
                    .await?;
            }
            Subresource::Status => {
                api.patch_status(&name, &params, &Patch::Apply(&desired_json))
                    .await?;
            }
        }
        Ok(ApplyOutcome::Applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    use serde_json::json;

    fn object_with_managed(fields_v1: Value, subresource: Option<&str>, body: Value) -> Value {
        let mut entry = json!({
            "manager": "ocm-source",
            "operation": "Apply",
            "fieldsV1": fields_v1,
        });
        if let Some(sub) = subresource {
            entry["subresource"] = json!(sub);
        }
        let mut object = body;
        object["metadata"]["managedFields"] = json!([entry]);
        object
    }

    #[test]
    fn unchanged_object_needs_no_apply() {
        let desired = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "labels": {"env": "prod"}},
            "data": {"k": "v"},
        });
        let current = object_with_managed(
            json!({"f:metadata": {"f:labels": {"f:env": {}}}, "f:data": {"f:k": {}}}),
            None,
            json!({"metadata": {"name": "a", "uid": "1", "labels": {"env": "prod", "other": "x"}}, "data": {"k": "v"}}),
        );
        assert!(!needs_apply(
            &desired,
            Some(&current),
            "ocm-source",
            Subresource::Main
        ));
    }

    #[test]
    fn changed_value_needs_apply() {
        let desired = json!({"metadata": {"name": "a", "labels": {"env": "dev"}}});
        let current = object_with_managed(
            json!({"f:metadata": {"f:labels": {"f:env": {}}}}),
            None,
            json!({"metadata": {"name": "a", "labels": {"env": "prod"}}}),
        );
        assert!(needs_apply(
            &desired,
            Some(&current),
            "ocm-source",
            Subresource::Main
        ));
    }

    #[test]
    fn dropped_owned_field_needs_apply_so_the_server_removes_it() {
        let desired = json!({"metadata": {"name": "a", "labels": {"env": "prod"}}});
        let current = object_with_managed(
            json!({"f:metadata": {"f:labels": {"f:env": {}, "f:gone": {}}}}),
            None,
            json!({"metadata": {"name": "a", "labels": {"env": "prod", "gone": "x"}}}),
        );
        assert!(needs_apply(
            &desired,
            Some(&current),
            "ocm-source",
            Subresource::Main
        ));
    }

    #[test]
    fn missing_object_or_missing_ownership_needs_apply() {
        let desired = json!({"metadata": {"name": "a"}, "data": {"k": "v"}});
        assert!(needs_apply(&desired, None, "ocm-source", Subresource::Main));
        let foreign = json!({"metadata": {"name": "a", "managedFields": [
            {"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:data": {"f:k": {}}}}
        ]}, "data": {"k": "v"}});
        assert!(needs_apply(
            &desired,
            Some(&foreign),
            "ocm-source",
            Subresource::Main
        ));
    }

    #[test]
    fn list_map_entries_are_matched_by_key_and_others_entries_are_tolerated() {
        let desired = json!({"metadata": {"name": "a"}, "status": {"conditions": [
            {"type": "Joined", "status": "True"}
        ]}});
        let current = object_with_managed(
            json!({"f:status": {"f:conditions": {"k:{\"type\":\"Joined\"}": {".": {}, "f:status": {}, "f:type": {}}}}}),
            Some("status"),
            json!({"metadata": {"name": "a"}, "status": {"conditions": [
                {"type": "Other", "status": "False"},
                {"type": "Joined", "status": "True"}
            ]}}),
        );
        assert!(!needs_apply(
            &desired,
            Some(&current),
            "ocm-source",
            Subresource::Status
        ));
        // Main-resource ownership does not count for the status subresource.
        assert!(needs_apply(
            &desired,
            Some(&current),
            "ocm-source",
            Subresource::Main
        ));
        // A condition we owned and no longer want must be removed by an apply.
        let current_with_stale = object_with_managed(
            json!({"f:status": {"f:conditions": {
                "k:{\"type\":\"Joined\"}": {"f:status": {}},
                "k:{\"type\":\"Stale\"}": {"f:status": {}}
            }}}),
            Some("status"),
            json!({"metadata": {"name": "a"}, "status": {"conditions": [
                {"type": "Joined", "status": "True"}, {"type": "Stale", "status": "True"}
            ]}}),
        );
        assert!(needs_apply(
            &desired,
            Some(&current_with_stale),
            "ocm-source",
            Subresource::Status
        ));
    }

    #[test]
    fn scalar_lists_compare_whole_and_set_entries_are_checked() {
        assert!(is_subset(&json!({"a": [1, 2]}), &json!({"a": [1, 2]})));
        assert!(!is_subset(&json!({"a": [1]}), &json!({"a": [1, 2]})));
        let desired = json!({"metadata": {"name": "a", "finalizers": ["x"]}});
        let current = object_with_managed(
            json!({"f:metadata": {"f:finalizers": {"v:\"x\"": {}, "v:\"y\"": {}}}}),
            None,
            json!({"metadata": {"name": "a", "finalizers": ["x"]}}),
        );
        assert!(needs_apply(
            &desired,
            Some(&current),
            "ocm-source",
            Subresource::Main
        ));
    }

    #[test]
    fn empty_desired_values_match_absent_server_values() {
        assert!(is_subset(
            &json!({"status": {"conditions": []}}),
            &json!({"status": {}})
        ));
        assert!(!is_subset(
            &json!({"status": {"x": ""}}),
            &json!({"status": {}})
        ));
    }

    #[test]
    fn compacted_records_keep_only_ours_and_decide_as_the_server_form() {
        let fields = json!({"f:metadata": {"f:labels": {"f:env": {}}}, "f:data": {"f:k": {}}});
        let entry = |manager: &str| ManagedFieldsEntry {
            manager: Some(manager.to_string()),
            operation: Some("Apply".to_string()),
            fields_v1: Some(FieldsV1(fields.clone())),
            ..ManagedFieldsEntry::default()
        };
        let mut meta = ObjectMeta {
            name: Some("a".to_string()),
            labels: Some([("env".to_string(), "prod".to_string())].into()),
            managed_fields: Some(vec![entry("someone-else"), entry("ocm-source")]),
            ..ObjectMeta::default()
        };
        keep_own_apply_records(&mut meta, "ocm-source");
        let kept = meta.managed_fields.clone().unwrap_or_default();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].manager.as_deref(), Some("ocm-source"));
        assert!(matches!(
            &kept[0].fields_v1,
            Some(FieldsV1(Value::String(_)))
        ));
        let current = json!({"metadata": serde_json::to_value(&meta).unwrap(), "data": {"k": "v"}});
        let same =
            json!({"metadata": {"name": "a", "labels": {"env": "prod"}}, "data": {"k": "v"}});
        assert!(!needs_apply(
            &same,
            Some(&current),
            "ocm-source",
            Subresource::Main
        ));
        // A dropped field we own still needs the apply that removes it.
        let dropped = json!({"metadata": {"name": "a", "labels": {"env": "prod"}}});
        assert!(needs_apply(
            &dropped,
            Some(&current),
            "ocm-source",
            Subresource::Main
        ));

        let mut foreign_only = ObjectMeta {
            managed_fields: Some(vec![entry("someone-else")]),
            ..ObjectMeta::default()
        };
        keep_own_apply_records(&mut foreign_only, "ocm-source");
        assert!(foreign_only.managed_fields.is_none());
    }

    /// `current` as a cache that keeps digests holds it: metadata only, records as digests.
    fn digested(current: &Value) -> Value {
        let mut meta: ObjectMeta = serde_json::from_value(current["metadata"].clone()).unwrap();
        assert!(keep_own_apply_digests(&mut meta, current, "ocm-source"));
        json!({"metadata": serde_json::to_value(&meta).unwrap()})
    }

    #[test]
    fn digested_records_decide_as_the_whole_object() {
        let conditions_owned = json!({"f:status": {"f:conditions": {
            ".": {},
            "k:{\"type\":\"Joined\"}": {".": {}, "f:status": {}, "f:type": {}}
        }}});
        let with_conditions = |conditions: Value| {
            object_with_managed(
                conditions_owned.clone(),
                Some("status"),
                json!({"metadata": {"name": "a"}, "status": {"conditions": conditions}}),
            )
        };
        let labelled = object_with_managed(
            json!({"f:metadata": {"f:labels": {".": {}, "f:env": {}}}, "f:data": {"f:k": {}, "f:n": {}}}),
            None,
            json!({"metadata": {"name": "a", "labels": {"env": "prod", "other": "x"}}, "data": {"k": "v", "n": 2}}),
        );
        let cases = [
            // (what we want, what the server holds, subresource, whether an apply is needed)
            (
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "labels": {"env": "prod"}}, "data": {"k": "v", "n": 2.0}}),
                labelled.clone(),
                Subresource::Main,
                false,
            ),
            (
                json!({"metadata": {"name": "a", "labels": {"env": "dev"}}, "data": {"k": "v", "n": 2}}),
                labelled.clone(),
                Subresource::Main,
                true,
            ),
            // A field we own and no longer want: the apply removes it.
            (
                json!({"metadata": {"name": "a", "labels": {"env": "prod"}}, "data": {"k": "v"}}),
                labelled.clone(),
                Subresource::Main,
                true,
            ),
            // A field we do not have yet.
            (
                json!({"metadata": {"name": "a", "labels": {"env": "prod", "new": "y"}}, "data": {"k": "v", "n": 2}}),
                labelled.clone(),
                Subresource::Main,
                true,
            ),
            // Empty values are dropped by the server.
            (
                json!({"metadata": {"name": "a", "labels": {"env": "prod"}, "annotations": {}}, "data": {"k": "v", "n": 2}, "spec": null}),
                labelled.clone(),
                Subresource::Main,
                false,
            ),
            // Others' list-map entries beside ours, in any order.
            (
                json!({"metadata": {"name": "a"}, "status": {"conditions": [{"type": "Joined", "status": "True"}]}}),
                with_conditions(
                    json!([{"type": "Other", "status": "False"}, {"type": "Joined", "status": "True"}]),
                ),
                Subresource::Status,
                false,
            ),
            (
                json!({"metadata": {"name": "a"}, "status": {"conditions": [{"type": "Joined", "status": "False"}]}}),
                with_conditions(json!([{"type": "Joined", "status": "True"}])),
                Subresource::Status,
                true,
            ),
            // The status we own says nothing about the main resource, nor the reverse.
            (
                json!({"metadata": {"name": "a"}, "status": {"conditions": [{"type": "Joined", "status": "True"}]}}),
                with_conditions(json!([{"type": "Joined", "status": "True"}])),
                Subresource::Main,
                true,
            ),
            // Set members, in order.
            (
                json!({"metadata": {"name": "a", "finalizers": ["x", "y"]}}),
                object_with_managed(
                    json!({"f:metadata": {"f:finalizers": {".": {}, "v:\"x\"": {}, "v:\"y\"": {}}}}),
                    None,
                    json!({"metadata": {"name": "a", "finalizers": ["x", "y"]}}),
                ),
                Subresource::Main,
                false,
            ),
            (
                json!({"metadata": {"name": "a", "finalizers": ["x"]}}),
                object_with_managed(
                    json!({"f:metadata": {"f:finalizers": {".": {}, "v:\"x\"": {}, "v:\"y\"": {}}}}),
                    None,
                    json!({"metadata": {"name": "a", "finalizers": ["x", "y"]}}),
                ),
                Subresource::Main,
                true,
            ),
        ];
        for (index, (desired, current, subresource, expected)) in cases.iter().enumerate() {
            let whole = needs_apply(desired, Some(current), "ocm-source", *subresource);
            let kept = needs_apply(
                desired,
                Some(&digested(current)),
                "ocm-source",
                *subresource,
            );
            assert_eq!(whole, *expected, "case {index}, whole object");
            assert_eq!(kept, *expected, "case {index}, digest");
        }
    }

    #[test]
    fn records_that_cannot_be_digested_are_kept_and_say_so() {
        let current = object_with_managed(
            json!({"f:spec": {"f:args": {"i:0": {}}}}),
            None,
            json!({"metadata": {"name": "a"}, "spec": {"args": ["x"]}}),
        );
        let mut meta: ObjectMeta = serde_json::from_value(current["metadata"].clone()).unwrap();
        assert!(!keep_own_apply_digests(&mut meta, &current, "ocm-source"));
        let record = meta.managed_fields.unwrap_or_default()[0].fields_v1.clone();
        assert!(matches!(record, Some(FieldsV1(Value::String(text))) if text.starts_with('{')));
    }
}
