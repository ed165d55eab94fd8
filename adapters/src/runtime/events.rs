//! Kubernetes Events on the objects concerned, with a matching log line and metric, so every
//! per-object problem is visible where a user looks (`kubectl describe`), in logs and in alerts.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{info, warn};

/// Events are capped by the API (1 kB note); longer notes are cut on a character boundary.
const MAX_NOTE_BYTES: usize = 1024;
/// How long a published Event is remembered for aggregation (as kube-runtime's recorder).
const SERIES_TTL: SignedDuration = SignedDuration::from_mins(6);
/// How often expired entries are dropped (not on every Event: that would cost the whole map).
const PRUNE_EVERY: SignedDuration = SignedDuration::from_secs(60);

/// What makes two reports "the same Event". Unlike kube-runtime's `Recorder`, the note is part of
/// it: two different problems of one category on one object must both be visible, and a changed
/// problem must not be shown with the old text. Repeats of the very same report aggregate into
/// the Event's `series`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    regarding: String,
    type_: &'static str,
    reason: String,
    action: String,
    note: String,
}

#[derive(Clone, Debug)]
struct Published {
    namespace: String,
    name: String,
    count: i32,
    last: Timestamp,
}

/// Reports waiting to be published; beyond this many a report keeps only its log line.
const QUEUE_CAPACITY: usize = 1024;
/// Events published at once. One at a time fell behind a cold start's registrations (a third of
/// a 1,000-profile start's Events were still queued when the last registration was written), so
/// the Events of the start trickled out long after it.
const PUBLISH_CONCURRENCY: usize = 8;

/// Publishes Events as the adapter, in the background: a report returns at once (its log line
/// written), so an Event never adds a request to the path of a reconcile (as client-go's
/// broadcaster). One worker per recorder publishes them, a few at a time but one at a time per
/// object, so repeats aggregate in order. Failures
/// are logged, never fatal: an Event is a report, not part of convergence.
#[derive(Clone)]
pub struct EventRecorder {
    publisher: Arc<Publisher>,
    /// Started with the first report (it needs the runtime); ends when every clone is gone.
    queue: Arc<OnceLock<Option<mpsc::Sender<Report>>>>,
}

struct Publisher {
    client: kube::Client,
    controller: String,
    instance: String,
    published: Mutex<Memory>,
}

/// One report on its way to the API.
struct Report {
    type_: &'static str,
    object: ObjectReference,
    reason: String,
    action: String,
    note: String,
}

#[derive(Debug, Default)]
struct Memory {
    published: HashMap<Key, Published>,
    pruned: Option<Timestamp>,
}

impl EventRecorder {
    /// A recorder reporting as `controller` (the adapter name) from `instance` (this replica).
    pub fn new(client: kube::Client, controller: &str, instance: String) -> Self {
        Self {
            publisher: Arc::new(Publisher {
                client,
                controller: controller.to_string(),
                instance,
                published: Mutex::default(),
            }),
            queue: Arc::default(),
        }
    }

    /// A Warning Event on `object`: `reason` is a bounded PascalCase reason (an error category's
    /// event reason), `note` a human explanation that must never contain a secret.
    pub fn warn(&self, object: &ObjectReference, reason: &str, action: &str, note: &str) {
        warn!(
            object = %describe(object),
            reason,
            action,
            note,
            "problem reported as an Event"
        );
        self.publish("Warning", object, reason, action, note);
    }

    /// A Normal Event on `object`.
    pub fn normal(&self, object: &ObjectReference, reason: &str, action: &str, note: &str) {
        info!(object = %describe(object), reason, action, note, "event");
        self.publish("Normal", object, reason, action, note);
    }

    fn publish(
        &self,
        type_: &'static str,
        object: &ObjectReference,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        let queue = self.queue.get_or_init(|| {
            let runtime = tokio::runtime::Handle::try_current().ok()?;
            let (sender, mut reports) = mpsc::channel::<Report>(QUEUE_CAPACITY);
            let publisher = self.publisher.clone();
            runtime.spawn(async move {
                let mut in_flight = JoinSet::new();
                let mut objects_in_flight = HashSet::new();
                while let Some(report) = reports.recv().await {
                    let regarding = regarding(&report.object);
                    // One at a time per object, so its repeats aggregate in order.
                    while in_flight.len() >= PUBLISH_CONCURRENCY
                        || objects_in_flight.contains(&regarding)
                    {
                        match in_flight.join_next().await {
                            Some(Ok(done)) => {
                                objects_in_flight.remove(&done);
                            }
                            Some(Err(_)) => {}
                            None => break,
                        }
                    }
                    objects_in_flight.insert(regarding.clone());
                    let publisher = publisher.clone();
                    in_flight.spawn(async move {
                        publisher.publish(report, &regarding).await;
                        regarding
                    });
                }
                while in_flight.join_next().await.is_some() {}
            });
            Some(sender)
        });
        let report = Report {
            type_,
            object: object.clone(),
            reason: reason.to_string(),
            action: action.to_string(),
            note: note.to_string(),
        };
        let sent = queue.as_ref().map(|sender| sender.try_send(report).is_ok());
        if sent != Some(true) {
            warn!(object = %describe(object), reason, "Event not published (no runtime or too many waiting); its log line stands for it");
        }
    }
}

impl Publisher {
    /// Publish `report`; `regarding` names its object (see [`regarding`]).
    async fn publish(&self, report: Report, regarding: &str) {
        let Report {
            type_,
            object,
            reason,
            action,
            note,
        } = report;
        if let Err(err) = self
            .try_publish(type_, &object, regarding, &reason, &action, &note)
            .await
        {
            warn!(object = %describe(&object), error = %err, "cannot publish Event");
        }
    }

    async fn try_publish(
        &self,
        type_: &'static str,
        object: &ObjectReference,
        regarding: &str,
        reason: &str,
        action: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let note = truncate(note, MAX_NOTE_BYTES);
        let now = Timestamp::now();
        let key = Key {
            regarding: regarding.to_string(),
            type_,
            reason: reason.to_string(),
            action: action.to_string(),
            note: note.clone(),
        };
        let previous = self.remembered(&key, now);
        // Cluster-scoped objects get their Events in `default`, as kubectl looks for them.
        let namespace = object
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        if let Some(previous) = previous {
            let count = previous.count.saturating_add(1);
            let patch = serde_json::json!({"series": EventSeries {
                count,
                last_observed_time: MicroTime(now),
            }});
            Api::<Event>::namespaced(self.client.clone(), &previous.namespace)
                .patch(
                    &previous.name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            self.remember(
                key,
                Published {
                    count,
                    last: now,
                    ..previous
                },
            );
            return Ok(());
        }
        let name = event_name(
            object.name.as_deref().unwrap_or(&self.controller),
            now.as_nanosecond(),
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            action: Some(action.to_string()),
            reason: Some(reason.to_string()),
            note: Some(note),
            event_time: Some(MicroTime(now)),
            regarding: Some(object.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(type_.to_string()),
            ..Event::default()
        };
        Api::<Event>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await?;
        self.remember(
            key,
            Published {
                namespace,
                name,
                count: 1,
                last: now,
            },
        );
        Ok(())
    }

    /// The live Event last published for `key`, dropping expired ones now and then.
    fn remembered(&self, key: &Key, now: Timestamp) -> Option<Published> {
        let mut memory = self.published.lock().ok()?;
        if memory.pruned.is_none_or(|at| at + PRUNE_EVERY <= now) {
            memory.published.retain(|_, p| p.last + SERIES_TTL > now);
            memory.pruned = Some(now);
        }
        memory
            .published
            .get(key)
            .filter(|p| p.last + SERIES_TTL > now)
            .cloned()
    }

    fn remember(&self, key: Key, published: Published) {
        if let Ok(mut memory) = self.published.lock() {
            memory.published.insert(key, published);
        }
    }
}

/// The object an Event is about, down to its uid (a re-created object is another one).
fn regarding(object: &ObjectReference) -> String {
    format!(
        "{}/{}",
        describe(object),
        object.uid.as_deref().unwrap_or_default()
    )
}

fn describe(object: &ObjectReference) -> String {
    format!(
        "{}/{}/{}",
        object.kind.as_deref().unwrap_or("?"),
        object.namespace.as_deref().unwrap_or(""),
        object.name.as_deref().unwrap_or("?")
    )
}

/// `<object>.<nanoseconds in hex>`, as client-go names Events, kept within the 253 characters of
/// an object name: a long object name is cut (never inside a character) and the cut end trimmed
/// of `-`/`.` so the name stays a DNS subdomain.
fn event_name(object: &str, nanos: i128) -> String {
    let suffix = format!(".{nanos:x}");
    let room = crate::names::DNS1123_SUBDOMAIN_MAX.saturating_sub(suffix.len());
    let stem: String = object.chars().take(room).collect();
    let stem = stem.trim_end_matches(['-', '.']);
    format!("{stem}{suffix}")
}

fn truncate(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_string();
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(super::truncate("héllo", 2), "h");
        assert_eq!(super::truncate("short", 1024), "short");
    }

    #[test]
    fn event_names_fit_an_object_name() {
        let nanos = 1_764_646_000_123_456_789_i128;
        assert_eq!(super::event_name("c1", nanos), format!("c1.{nanos:x}"));
        // A 253-character object name used to give a 270-character Event name (rejected).
        let long = format!("{}-{}", "a".repeat(200), "b".repeat(52));
        let name = super::event_name(&long, nanos);
        assert_eq!(name.len(), 253, "{name}");
        // The apiserver's subdomain rule: alphanumeric around every `.` and at both ends.
        let subdomain = |n: &str| {
            n.split('.').all(|part| {
                part.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && part.ends_with(|c: char| c.is_ascii_alphanumeric())
            })
        };
        assert!(subdomain(&name), "{name}");
        let dotted = format!("{}.{}", "a".repeat(235), "b".repeat(17));
        let name = super::event_name(&dotted, nanos);
        assert!(name.len() <= 253 && subdomain(&name), "{name}");
    }
}
