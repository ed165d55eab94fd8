//! The engine's book of the inventory's ClusterProfiles: every profile of the hub (or, for a
//! source with one inventory namespace, every profile there and ours elsewhere), each reduced to
//! what the engine and the projections read, fed by the profile watches.
//!
//! A reflector store keeps each profile as a whole `ClusterProfile` (an object of ~0.5 KiB before
//! any content, metadata maps of a full B-tree node each, the apply records) under a reference of
//! four strings, and an index by source object beside it: at 10,000 profiles that was the
//! largest part of a source's memory. The book keeps, for one of ours, its uid, source object,
//! cluster manager, three labels, the digests of our apply records and the conditions and
//! properties a projection keeps timestamps from; for someone else's, only whose it is. A reader
//! gets a `ClusterProfile` rebuilt from that, which decides applies exactly as the whole object
//! would (see [`crate::apply::keep_own_apply_digests`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    Condition, FieldsV1, ManagedFieldsEntry, Time,
};
use kube::ResourceExt;
use kube::api::ObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;

use super::{LABEL_SOURCE, is_ours, source_object_of};
use crate::apply::{keep_own_apply_digests, keep_own_apply_records};
use crate::cache::{Relisted, WatchedMap, watch_config};
use crate::interned::Interned;
use crate::profile::{
    ClusterProfile, ClusterProfileStatus, LABEL_CLUSTER_MANAGER, LABEL_INVENTORY_MEMBER_ID,
    Property,
};
use crate::profile_api::{ProfileApi, ProfileVersion};

/// Labels of our profiles a reader may ask for: whose it is, and the member id a projection falls
/// back to while a member cannot be read.
const KEPT_LABELS: [&str; 3] = [
    LABEL_SOURCE,
    LABEL_CLUSTER_MANAGER,
    LABEL_INVENTORY_MEMBER_ID,
];

/// `(namespace, name)` of a profile (the namespace interned: an inventory holds thousands).
type ProfileId = (Arc<str>, Arc<str>);

/// The one copy of a string most profiles share (inventory namespaces, the cluster manager,
/// condition types and statuses, property names).
fn shared(value: &str) -> Arc<str> {
    Arc::from(Interned::new(value))
}

/// A profile as a reader finds it.
pub(super) enum Found {
    /// One of ours, rebuilt from the book.
    Ours(Box<ClusterProfile>),
    /// Someone else's; the cluster manager its label names.
    Theirs(Option<String>),
}

/// The profiles the source may meet, as its profile watches report them.
pub(super) struct ProfileBook {
    source: &'static str,
    field_manager: String,
    version: ProfileVersion,
    /// One per watch; their scopes never overlap.
    parts: Vec<Part>,
}

/// Which profiles one watch of the book reports.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Scope {
    /// Every profile of the hub (a source whose inventories vary).
    Everywhere,
    /// Every profile of the one namespace the source writes to: others' too, so that a missing
    /// name there is known to be free.
    Inventory(Arc<str>),
    /// Ours outside that namespace (left by an earlier one, to be swept). Others' profiles
    /// there are never sent: on a hub shared with other sources they would be most of the book.
    OursOutside(Arc<str>),
}

struct Part {
    scope: Scope,
    profiles: Relisted<Profiles>,
}

#[derive(Default)]
struct Profiles {
    entries: HashMap<ProfileId, Entry>,
    /// Our profiles by source object.
    by_source: HashMap<Arc<str>, Vec<ProfileId>>,
    /// How many ids `by_source` holds (counted as they come and go: a count per reconcile must
    /// not cost a walk over the fleet).
    traced: usize,
}

enum Entry {
    Ours(Box<OwnProfile>),
    /// Ours with an apply record that cannot be digested: kept whole, records as text.
    OursWhole(Arc<ClusterProfile>),
    Theirs {
        manager: Option<Arc<str>>,
    },
}

/// What is read of one of our profiles.
struct OwnProfile {
    uid: Option<Box<str>>,
    /// The source object (shared with the by-source lookup).
    source: Option<Arc<str>>,
    cluster_manager: Arc<str>,
    /// Values of [`KEPT_LABELS`], in that order (the source's and the manager's interned).
    labels: [Option<Arc<str>>; KEPT_LABELS.len()],
    /// Digests of our `Apply` records: metadata and spec, status.
    main_digest: Option<Box<str>>,
    status_digest: Option<Box<str>>,
    status: Option<KeptStatus>,
}

/// Of our status: conditions (their reasons and messages are only ever compared, and the
/// digest does that) and properties.
struct KeptStatus {
    conditions: Box<[KeptCondition]>,
    properties: Box<[KeptProperty]>,
}

struct KeptCondition {
    type_: Arc<str>,
    status: Arc<str>,
    last_transition_time: Time,
    observed_generation: Option<i64>,
}

struct KeptProperty {
    name: Arc<str>,
    value: Box<str>,
    last_observed_time: Option<Time>,
}

impl Entry {
    fn source(&self) -> Option<&str> {
        match self {
            Entry::Ours(own) => own.source.as_deref(),
            Entry::OursWhole(profile) => source_object_of(&profile.metadata),
            Entry::Theirs { .. } => None,
        }
    }

    fn is_ours(&self) -> bool {
        !matches!(self, Entry::Theirs { .. })
    }
}

impl Profiles {
    fn insert(&mut self, id: ProfileId, entry: Entry) {
        self.remove(&id);
        let source = match &entry {
            Entry::Ours(own) => own.source.clone(),
            entry => entry.source().map(Arc::from),
        };
        if let Some(source) = source {
            self.by_source.entry(source).or_default().push(id.clone());
            self.traced += 1;
        }
        self.entries.insert(id, entry);
    }

    fn remove(&mut self, id: &ProfileId) {
        let Some(entry) = self.entries.remove(id) else {
            return;
        };
        if let Some(source) = entry.source()
            && let Some(ids) = self.by_source.get_mut(source)
        {
            let before = ids.len();
            ids.retain(|other| other != id);
            self.traced -= before - ids.len();
            if ids.is_empty() {
                self.by_source.remove(source);
            }
        }
    }
}

impl WatchedMap for Profiles {
    type Key = ProfileId;
    type Value = Entry;

    fn put(&mut self, id: ProfileId, entry: Entry) {
        self.insert(id, entry);
    }

    fn forget(&mut self, id: &ProfileId) {
        self.remove(id);
    }
}

impl ProfileBook {
    /// An empty book for the adapter `source`, whose apply records are `field_manager`'s, of
    /// profiles served as `version`; with an `inventory` namespace, it holds every profile there
    /// and only ours elsewhere (see [`super::Source::inventory_namespace`]).
    pub(super) fn new(
        source: &'static str,
        field_manager: &str,
        version: ProfileVersion,
        inventory: Option<&str>,
    ) -> Self {
        let scopes = match inventory {
            None => vec![Scope::Everywhere],
            Some(namespace) => vec![
                Scope::Inventory(shared(namespace)),
                Scope::OursOutside(shared(namespace)),
            ],
        };
        Self {
            source,
            field_manager: field_manager.to_string(),
            version,
            parts: scopes
                .into_iter()
                .map(|scope| Part {
                    scope,
                    profiles: Relisted::new(),
                })
                .collect(),
        }
    }

    /// The book's watches, merged, each event already in the book; each watch backs off on
    /// its own errors.
    pub(super) fn watch(
        self: &Arc<Self>,
        api: &ProfileApi,
    ) -> BoxStream<'static, Result<watcher::Event<ClusterProfile>, watcher::Error>> {
        let watches = self
            .parts
            .iter()
            .enumerate()
            .map(|(part, Part { scope, .. })| {
                let (namespace, config) = match scope {
                    Scope::Everywhere => (None, watch_config()),
                    Scope::Inventory(namespace) => (Some(namespace.as_ref()), watch_config()),
                    Scope::OursOutside(namespace) => (
                        None,
                        watch_config()
                            .labels(&format!("{LABEL_SOURCE}={}", self.source))
                            .fields(&format!("metadata.namespace!={namespace}")),
                    ),
                };
                let book = self.clone();
                api.watch(namespace, config)
                    .default_backoff()
                    .inspect(move |event| book.observe_part(part, event))
                    .boxed()
            });
        futures::stream::select_all(watches).boxed()
    }

    /// Apply one event of the profile watch of `part`.
    fn observe_part<E>(&self, part: usize, event: &Result<watcher::Event<ClusterProfile>, E>) {
        if let Some(part) = self.parts.get(part) {
            part.profiles.observe(
                event,
                |profile| self.id_of(profile),
                |profile| Some(self.compact(profile)),
            );
        }
    }

    /// Whether a full list of every watch is in the book (until then, absence proves nothing).
    pub(super) fn is_ready(&self) -> bool {
        self.parts.iter().all(|part| part.profiles.is_ready())
    }

    /// Wait until a full list of every watch is in the book.
    pub(super) async fn wait_until_ready(&self) {
        for part in &self.parts {
            part.profiles.wait_until_ready().await;
        }
    }

    /// Whether the book holds every profile of `namespace`, others' included: only there is
    /// a name missing from it free.
    pub(super) fn holds_all_of(&self, namespace: &str) -> bool {
        self.parts.iter().any(|part| match &part.scope {
            Scope::Everywhere => true,
            Scope::Inventory(inventory) => inventory.as_ref() == namespace,
            Scope::OursOutside(_) => false,
        })
    }

    /// Our profiles projected from the source object `key`.
    pub(super) fn ours_of(&self, key: &str) -> Vec<ClusterProfile> {
        self.parts
            .iter()
            .flat_map(|part| {
                part.profiles.read(|profiles| {
                    profiles
                        .by_source
                        .get(key)
                        .into_iter()
                        .flatten()
                        .filter_map(|id| self.rebuild(id, profiles.entries.get(id)?))
                        .collect::<Vec<_>>()
                })
            })
            .collect()
    }

    /// The profile `namespace/name`, if the book has it (see [`ProfileBook::holds_all_of`]).
    pub(super) fn get(&self, namespace: &str, name: &str) -> Option<Found> {
        let id: ProfileId = (namespace.into(), name.into());
        self.parts.iter().find_map(|part| {
            part.profiles
                .read(|profiles| match profiles.entries.get(&id)? {
                    Entry::Theirs { manager } => {
                        Some(Found::Theirs(manager.as_deref().map(Into::into)))
                    }
                    entry => self
                        .rebuild(&id, entry)
                        .map(|own| Found::Ours(Box::new(own))),
                })
        })
    }

    /// The source objects of our profiles, and the names of ours that name none.
    pub(super) fn sources(&self) -> (BTreeSet<String>, Vec<String>) {
        let mut keys = BTreeSet::new();
        let mut untraced = Vec::new();
        for part in &self.parts {
            part.profiles.read(|profiles| {
                keys.extend(profiles.by_source.keys().map(|k| k.to_string()));
                untraced.extend(
                    profiles
                        .entries
                        .iter()
                        .filter(|(_, entry)| entry.is_ours() && entry.source().is_none())
                        .map(|((namespace, name), _)| format!("{namespace}/{name}")),
                );
            });
        }
        (keys, untraced)
    }

    /// How many profiles are ours (traced to a source object).
    pub(super) fn ours_count(&self) -> usize {
        self.parts
            .iter()
            .map(|part| part.profiles.read(|profiles| profiles.traced))
            .sum()
    }

    /// The book's entry for a profile as served.
    fn compact(&self, served: &ClusterProfile) -> Entry {
        if !is_ours(&served.metadata, self.source) {
            return Entry::Theirs {
                manager: served
                    .labels()
                    .get(LABEL_CLUSTER_MANAGER)
                    .map(|m| shared(m)),
            };
        }
        let mut profile = served.clone();
        // The served form without the records: every manager's, as trees, would double the work.
        let records = profile.metadata.managed_fields.take();
        let served_form = self.version.served_form(&profile);
        profile.metadata.managed_fields = records;
        let digested = served_form.is_ok_and(|form| {
            keep_own_apply_digests(&mut profile.metadata, &form, &self.field_manager)
        });
        if !digested {
            keep_own_apply_records(&mut profile.metadata, &self.field_manager);
            return Entry::OursWhole(Arc::new(profile));
        }
        let digest_of = |subresource: Option<&str>| {
            profile
                .metadata
                .managed_fields
                .iter()
                .flatten()
                .find(|entry| {
                    entry.operation.as_deref() == Some("Apply")
                        && entry.subresource.as_deref() == subresource
                })
                .and_then(|entry| match &entry.fields_v1 {
                    Some(FieldsV1(Value::String(digest))) => Some(digest.as_str().into()),
                    _ => None,
                })
        };
        let labels = profile.labels();
        let mut kept_labels = KEPT_LABELS.map(|key| labels.get(key).map(|value| value.as_str()));
        let member_id = kept_labels[2].take().map(Arc::from);
        let [source_label, manager_label, _] = kept_labels.map(|v| v.map(shared));
        Entry::Ours(Box::new(OwnProfile {
            uid: profile.metadata.uid.as_deref().map(Into::into),
            source: source_object_of(&profile.metadata).map(Arc::from),
            cluster_manager: shared(&profile.spec.cluster_manager.name),
            labels: [source_label, manager_label, member_id],
            main_digest: digest_of(None),
            status_digest: digest_of(Some("status")),
            status: profile.status.as_ref().map(|status| {
                let conditions = status
                    .conditions
                    .iter()
                    .map(|c| KeptCondition {
                        type_: shared(&c.type_),
                        status: shared(&c.status),
                        last_transition_time: c.last_transition_time.clone(),
                        observed_generation: c.observed_generation,
                    })
                    .collect();
                KeptStatus {
                    conditions,
                    properties: status
                        .properties
                        .iter()
                        .map(|p| KeptProperty {
                            name: shared(&p.name),
                            value: p.value.as_str().into(),
                            last_observed_time: p.last_observed_time.clone(),
                        })
                        .collect(),
                }
            }),
        }))
    }

    fn id_of(&self, profile: &ClusterProfile) -> ProfileId {
        (
            shared(profile.metadata.namespace.as_deref().unwrap_or_default()),
            profile.metadata.name.as_deref().unwrap_or_default().into(),
        )
    }

    /// One of our profiles as the engine reads it.
    fn rebuild(&self, (namespace, name): &ProfileId, entry: &Entry) -> Option<ClusterProfile> {
        let own = match entry {
            Entry::Ours(own) => own,
            Entry::OursWhole(profile) => return Some(ClusterProfile::clone(profile)),
            Entry::Theirs { .. } => return None,
        };
        let record = |subresource: Option<&str>, digest: &str| ManagedFieldsEntry {
            manager: Some(self.field_manager.clone()),
            operation: Some("Apply".to_string()),
            subresource: subresource.map(str::to_string),
            fields_v1: Some(FieldsV1(Value::String(digest.to_string()))),
            ..ManagedFieldsEntry::default()
        };
        let records: Vec<_> = [
            (None, &own.main_digest),
            (Some("status"), &own.status_digest),
        ]
        .into_iter()
        .filter_map(|(subresource, digest)| Some(record(subresource, digest.as_deref()?)))
        .collect();
        let mut profile = ClusterProfile::new(name, Default::default());
        profile.metadata = ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            uid: own.uid.as_deref().map(str::to_string),
            labels: Some(
                KEPT_LABELS
                    .iter()
                    .zip(&own.labels)
                    .filter_map(|(key, value)| {
                        Some((key.to_string(), value.as_deref()?.to_string()))
                    })
                    .collect::<BTreeMap<_, _>>(),
            ),
            annotations: own.source.as_deref().map(|source| {
                BTreeMap::from([(
                    super::ANNOTATION_SOURCE_OBJECT.to_string(),
                    source.to_string(),
                )])
            }),
            managed_fields: (!records.is_empty()).then_some(records),
            ..ObjectMeta::default()
        };
        profile.spec.cluster_manager.name = own.cluster_manager.to_string();
        profile.status = own.status.as_ref().map(|kept| ClusterProfileStatus {
            conditions: kept
                .conditions
                .iter()
                .map(|c| Condition {
                    type_: c.type_.to_string(),
                    status: c.status.to_string(),
                    last_transition_time: c.last_transition_time.clone(),
                    observed_generation: c.observed_generation,
                    reason: String::new(),
                    message: String::new(),
                })
                .collect(),
            properties: kept
                .properties
                .iter()
                .map(|p| Property {
                    name: p.name.to_string(),
                    value: p.value.to_string(),
                    last_observed_time: p.last_observed_time.clone(),
                })
                .collect(),
            ..ClusterProfileStatus::default()
        });
        Some(profile)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::{Subresource, needs_apply};
    use crate::profile::{AccessProvider, Cluster, ClusterVersion};
    use crate::source::ANNOTATION_SOURCE_OBJECT;
    use serde_json::json;

    fn time(second: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(second).unwrap())
    }

    /// A profile of `source` as the hub serves it, projected from `object`.
    fn served(name: &str, source: &str, object: Option<&str>) -> ClusterProfile {
        let mut profile = ClusterProfile::new(name, Default::default());
        profile.metadata.namespace = Some("inv".to_string());
        profile.metadata.uid = Some(format!("uid-{name}"));
        profile.metadata.labels = Some(BTreeMap::from([
            (LABEL_SOURCE.to_string(), source.to_string()),
            (LABEL_CLUSTER_MANAGER.to_string(), "cluster-api".to_string()),
            (LABEL_INVENTORY_MEMBER_ID.to_string(), "m-1".to_string()),
            ("env".to_string(), "prod".to_string()),
        ]));
        profile.metadata.annotations = object.map(|object| {
            BTreeMap::from([(ANNOTATION_SOURCE_OBJECT.to_string(), object.to_string())])
        });
        profile.spec.display_name = Some(name.to_string());
        profile.spec.cluster_manager.name = "cluster-api".to_string();
        profile.status = Some(ClusterProfileStatus {
            conditions: vec![Condition {
                type_: "ControlPlaneHealthy".to_string(),
                status: "True".to_string(),
                reason: "Available".to_string(),
                message: "the member answers".to_string(),
                last_transition_time: time(1_000),
                observed_generation: None,
            }],
            version: Some(ClusterVersion {
                kubernetes: Some("v1.36.0".to_string()),
            }),
            properties: vec![Property {
                name: "region".to_string(),
                value: "eu".to_string(),
                last_observed_time: Some(time(2_000)),
            }],
            access_providers: vec![AccessProvider {
                name: "kubeconfig".to_string(),
                cluster: Some(Cluster {
                    server: "https://member:6443".to_string(),
                    certificate_authority_data: Some("LS0tLS1CRUdJTiBDRVJU".to_string()),
                    ..Cluster::default()
                }),
            }],
            credential_providers: Vec::new(),
        });
        profile
    }

    /// `profile` with the apply records the server keeps for `manager` (and someone else).
    fn with_records(mut profile: ClusterProfile, manager: &str, status: Value) -> ClusterProfile {
        let record = |fields: Value, subresource: Option<&str>| ManagedFieldsEntry {
            manager: Some(manager.to_string()),
            operation: Some("Apply".to_string()),
            fields_v1: Some(FieldsV1(fields)),
            subresource: subresource.map(str::to_string),
            ..ManagedFieldsEntry::default()
        };
        profile.metadata.managed_fields = Some(vec![
            record(
                json!({"f:metadata": {"f:labels": {}, "f:annotations": {}}, "f:spec": {}}),
                None,
            ),
            record(status, Some("status")),
            ManagedFieldsEntry {
                manager: Some("someone-else".to_string()),
                ..ManagedFieldsEntry::default()
            },
        ]);
        profile
    }

    fn ok(event: watcher::Event<ClusterProfile>) -> Result<watcher::Event<ClusterProfile>, ()> {
        Ok(event)
    }

    fn ours(found: Option<Found>) -> ClusterProfile {
        match found {
            Some(Found::Ours(profile)) => *profile,
            Some(Found::Theirs(manager)) => panic!("expected ours, found {manager:?}'s"),
            None => panic!("expected ours, found nothing"),
        }
    }

    /// What the engine applies first: metadata and spec.
    fn desired_main(profile: &ClusterProfile) -> ClusterProfile {
        ClusterProfile {
            metadata: ObjectMeta {
                name: profile.metadata.name.clone(),
                namespace: profile.metadata.namespace.clone(),
                labels: profile.metadata.labels.clone(),
                annotations: profile.metadata.annotations.clone(),
                ..ObjectMeta::default()
            },
            spec: profile.spec.clone(),
            status: None,
        }
    }

    #[test]
    fn our_profiles_are_read_back_with_what_the_engine_reads_and_decide_applies_as_the_whole() {
        for version in [ProfileVersion::V1alpha1, ProfileVersion::V1alpha2] {
            let book = ProfileBook::new("capi-source", "capi-source", version, None);
            let published = served("p", "capi-source", Some("ns/c"));
            book.observe_part(
                0,
                &ok(watcher::Event::Apply(with_records(
                    published.clone(),
                    "capi-source",
                    json!({"f:status": {}}),
                ))),
            );
            let read = ours(book.get("inv", "p"));
            assert_eq!(read.metadata.uid.as_deref(), Some("uid-p"));
            assert_eq!(
                read.labels().keys().map(String::as_str).collect::<Vec<_>>(),
                [
                    LABEL_SOURCE,
                    LABEL_INVENTORY_MEMBER_ID,
                    LABEL_CLUSTER_MANAGER
                ]
            );
            assert_eq!(
                source_object_of(&read.metadata),
                Some("ns/c"),
                "the source object"
            );
            assert_eq!(read.spec.cluster_manager.name, "cluster-api");
            assert_eq!(read.metadata.managed_fields.as_ref().map(Vec::len), Some(2));
            let status = read.status.clone().unwrap_or_default();
            // What projections read stays; what only an apply compares is gone.
            assert_eq!(
                status.properties,
                published.status.clone().unwrap().properties
            );
            assert_eq!(status.conditions[0].status, "True");
            assert_eq!(status.conditions[0].last_transition_time, time(1_000));
            assert!(status.conditions[0].message.is_empty());
            assert!(status.access_providers.is_empty() && status.version.is_none());
            assert_eq!(book.ours_of("ns/c").len(), 1);

            // The digests decide as the whole object did.
            let current = version.served_form(&read).unwrap();
            let applies = |desired: &ClusterProfile, subresource| {
                let desired = version.served_form(desired).unwrap();
                needs_apply(&desired, Some(&current), "capi-source", subresource)
            };
            assert!(!applies(&desired_main(&published), Subresource::Main));
            assert!(!applies(&published, Subresource::Status));
            let mut moved = published.clone();
            if let Some(provider) = moved.status.as_mut().unwrap().access_providers.first_mut() {
                provider.cluster.as_mut().unwrap().server = "https://elsewhere:6443".to_string();
            }
            assert!(applies(&moved, Subresource::Status));
            let mut relabelled = desired_main(&published);
            relabelled.metadata.labels.as_mut().unwrap().remove("env");
            assert!(applies(&relabelled, Subresource::Main));
        }
    }

    #[test]
    fn others_profiles_say_only_whose_they_are() {
        let book = ProfileBook::new("ocm-source", "ocm-source", ProfileVersion::V1alpha2, None);
        let theirs = with_records(
            served("p", "capi-source", Some("ns/c")),
            "capi-source",
            json!({"f:status": {}}),
        );
        book.observe_part(0, &ok(watcher::Event::Apply(theirs)));
        assert!(matches!(
            book.get("inv", "p"),
            Some(Found::Theirs(Some(manager))) if manager == "cluster-api"
        ));
        assert!(book.ours_of("ns/c").is_empty());
        assert_eq!(book.ours_count(), 0);
        assert!(book.get("inv", "absent").is_none());
    }

    #[test]
    fn a_book_with_an_inventory_knows_absence_only_there() {
        let book = ProfileBook::new(
            "capi-source",
            "capi-source",
            ProfileVersion::V1alpha2,
            Some("inv"),
        );
        assert!(book.holds_all_of("inv"));
        assert!(!book.holds_all_of("elsewhere"));
        let mut old = served("old", "capi-source", Some("ns/c"));
        old.metadata.namespace = Some("elsewhere".to_string());
        for (part, event) in [
            (0, watcher::Event::Init),
            (
                0,
                watcher::Event::InitApply(served("p", "capi-source", Some("ns/c"))),
            ),
            (0, watcher::Event::InitDone),
            (1, watcher::Event::Init),
            (1, watcher::Event::InitApply(old)),
        ] {
            book.observe_part(part, &ok(event));
        }
        assert!(!book.is_ready(), "one watch has not listed everything yet");
        book.observe_part(1, &ok(watcher::Event::InitDone));
        assert!(book.is_ready());
        // Ours from both watches; a relist of one leaves the other's alone.
        let mut names: Vec<_> = book.ours_of("ns/c").iter().map(|p| p.name_any()).collect();
        names.sort();
        assert_eq!(names, ["old", "p"]);
        assert_eq!(book.ours_count(), 2);
        book.observe_part(0, &ok(watcher::Event::Init));
        book.observe_part(0, &ok(watcher::Event::InitDone));
        assert_eq!(book.ours_count(), 1);
        assert!(matches!(book.get("elsewhere", "old"), Some(Found::Ours(_))));
        assert!(book.get("inv", "p").is_none());
    }

    #[test]
    fn records_that_cannot_be_digested_keep_the_profile_whole() {
        let book = ProfileBook::new("capi-source", "capi-source", ProfileVersion::V1alpha2, None);
        // A positional list entry cannot be read as values: the record is kept as text.
        let positional = json!({"f:status": {"f:conditions": {"i:0": {"f:status": {}}}}});
        let published = with_records(
            served("p", "capi-source", Some("ns/c")),
            "capi-source",
            positional,
        );
        book.observe_part(0, &ok(watcher::Event::Apply(published)));
        let read = ours(book.get("inv", "p"));
        let status = read.status.clone().unwrap_or_default();
        assert_eq!(status.conditions[0].message, "the member answers");
        assert_eq!(status.access_providers.len(), 1);
        let records = read.metadata.managed_fields.clone().unwrap_or_default();
        assert_eq!(records.len(), 2, "ours only");
        let status_record = records
            .iter()
            .find(|r| r.subresource.as_deref() == Some("status"));
        assert!(matches!(
            status_record.and_then(|r| r.fields_v1.as_ref()),
            Some(FieldsV1(Value::String(text))) if text.starts_with('{')
        ));
        assert_eq!(book.ours_of("ns/c").len(), 1);
    }

    #[test]
    fn a_relist_is_swapped_in_whole_and_makes_the_book_ready() {
        let book = ProfileBook::new("ocm-source", "ocm-source", ProfileVersion::V1alpha1, None);
        book.observe_part(
            0,
            &ok(watcher::Event::Apply(served("a", "ocm-source", Some("a")))),
        );
        assert!(!book.is_ready(), "no full list yet");
        book.observe_part(0, &ok(watcher::Event::Init));
        book.observe_part(
            0,
            &ok(watcher::Event::InitApply(served(
                "b",
                "ocm-source",
                Some("b"),
            ))),
        );
        book.observe_part(
            0,
            &ok(watcher::Event::InitApply(served("x", "ocm-source", None))),
        );
        // Half a list is never read.
        assert_eq!(book.ours_of("a").len(), 1);
        assert!(book.ours_of("b").is_empty());
        book.observe_part(0, &ok(watcher::Event::InitDone));
        assert!(book.is_ready());
        assert!(book.ours_of("a").is_empty());
        assert_eq!(book.ours_of("b").len(), 1);
        let (sources, untraced) = book.sources();
        assert_eq!(sources.into_iter().collect::<Vec<_>>(), ["b"]);
        assert_eq!(untraced, ["inv/x"]);
        assert_eq!(book.ours_count(), 1);

        // A profile that names another source object moves; a deleted one leaves.
        book.observe_part(
            0,
            &ok(watcher::Event::Apply(served("b", "ocm-source", Some("c")))),
        );
        assert!(book.ours_of("b").is_empty());
        assert_eq!(book.ours_of("c").len(), 1);
        assert_eq!(book.ours_count(), 1, "a move is not a second profile");
        book.observe_part(
            0,
            &ok(watcher::Event::Delete(served("b", "ocm-source", Some("c")))),
        );
        assert!(book.ours_of("c").is_empty());
        assert_eq!(book.ours_count(), 0);
        assert!(book.sources().0.is_empty());
    }
}
