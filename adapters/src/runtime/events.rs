//! Kubernetes Events on the objects concerned, with a matching log line and metric, so every
//! per-object problem is visible where a user looks (`kubectl describe`), in logs and in alerts.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tracing::{info, warn};

/// Events are capped by the API (1 kB note); longer notes are cut on a character boundary.
const MAX_NOTE_BYTES: usize = 1024;

/// Publishes Events as the adapter. Publishing failures are logged, never fatal: an Event is a
/// report, not part of convergence.
#[derive(Clone)]
pub struct EventRecorder {
    recorder: Recorder,
}

impl EventRecorder {
    /// A recorder reporting as `controller` (the adapter name) from `instance` (this replica).
    pub fn new(client: kube::Client, controller: &str, instance: String) -> Self {
        let reporter = Reporter {
            controller: controller.to_string(),
            instance: Some(instance),
        };
        Self {
            recorder: Recorder::new(client, reporter),
        }
    }

    /// A Warning Event on `object`: `reason` is a bounded PascalCase reason (an error category's
    /// event reason), `note` a human explanation that must never contain a secret.
    pub async fn warn(&self, object: &ObjectReference, reason: &str, action: &str, note: &str) {
        warn!(
            object = %describe(object),
            reason,
            action,
            note,
            "problem reported as an Event"
        );
        self.publish(EventType::Warning, object, reason, action, note)
            .await;
    }

    /// A Normal Event on `object`.
    pub async fn normal(&self, object: &ObjectReference, reason: &str, action: &str, note: &str) {
        info!(object = %describe(object), reason, action, note, "event");
        self.publish(EventType::Normal, object, reason, action, note)
            .await;
    }

    async fn publish(
        &self,
        type_: EventType,
        object: &ObjectReference,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(truncate(note, MAX_NOTE_BYTES)),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, object).await {
            warn!(object = %describe(object), error = %err, "cannot publish Event");
        }
    }
}

fn describe(object: &ObjectReference) -> String {
    format!(
        "{}/{}/{}",
        object.kind.as_deref().unwrap_or("?"),
        object.namespace.as_deref().unwrap_or(""),
        object.name.as_deref().unwrap_or("?")
    )
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
}
