//! Pure helpers that keep ClusterProfile status stable: timestamps move only when what they
//! describe changes, so recomputing a status from the same facts yields the same object and the
//! apply helper sends nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::profile::{PROPERTY_NAME_MAX_LEN, PROPERTY_VALUE_MAX_LEN, Property};

/// A condition as a projection computes it, before timestamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionFacts {
    /// Condition type.
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason (must match `^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`).
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

/// The condition to publish: `lastTransitionTime` is kept from `previous` while the status is
/// unchanged, and is `now` when the status changes or the condition is new.
pub fn condition(facts: ConditionFacts, previous: &[Condition], now: &Time) -> Condition {
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == facts.type_ && c.status == facts.status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: facts.type_,
        status: facts.status,
        reason: sanitize_reason(&facts.reason),
        message: bounded_message(facts.message),
        last_transition_time,
        observed_generation: None,
    }
}

/// `message` of a metav1.Condition may hold at most this many characters (the CRD's `maxLength`);
/// a longer one would make the apiserver reject the whole status.
pub const CONDITION_MESSAGE_MAX: usize = 32768;

/// `message` cut to [`CONDITION_MESSAGE_MAX`] characters (never inside a character), ending in `…`
/// when cut so a reader sees it was.
pub fn bounded_message(message: String) -> String {
    if message.chars().count() <= CONDITION_MESSAGE_MAX {
        return message;
    }
    let mut cut: String = message.chars().take(CONDITION_MESSAGE_MAX - 1).collect();
    cut.push('…');
    cut
}

/// Make `reason` satisfy the metav1.Condition reason pattern (CamelCase identifiers); upstream
/// reasons copied from other systems are usually fine, but one bad reason would make the apiserver
/// reject the whole status.
pub fn sanitize_reason(reason: &str) -> String {
    let cleaned: String = reason
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ',' | ':'))
        .take(1024)
        .collect();
    let trimmed = cleaned
        .trim_start_matches(|c: char| !c.is_ascii_alphabetic())
        .trim_end_matches([',', ':']);
    if trimmed.is_empty() {
        "Unknown".to_string()
    } else {
        trimmed.to_string()
    }
}

/// Why a property cannot be published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PropertyRejection {
    /// Empty name or value.
    Empty,
    /// Name longer than 253 characters.
    NameTooLong(usize),
    /// Value longer than 1024 characters.
    ValueTooLong(usize),
    /// The same name appeared before.
    Duplicate,
}

impl std::fmt::Display for PropertyRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PropertyRejection::Empty => f.write_str("empty name or value"),
            PropertyRejection::NameTooLong(n) => {
                write!(f, "name is {n} characters (max {PROPERTY_NAME_MAX_LEN})")
            }
            PropertyRejection::ValueTooLong(n) => {
                write!(f, "value is {n} characters (max {PROPERTY_VALUE_MAX_LEN})")
            }
            PropertyRejection::Duplicate => f.write_str("duplicate name"),
        }
    }
}

/// Build properties from `(name, value)` facts: `lastObservedTime` is when the current value was
/// first seen (kept from `previous` while the value is unchanged, else `now`). Facts that cannot be
/// valid properties are returned separately, with why, so the caller can report them.
pub fn properties(
    facts: impl IntoIterator<Item = (String, String)>,
    previous: &[Property],
    now: &Time,
) -> (Vec<Property>, Vec<(String, PropertyRejection)>) {
    let mut accepted: Vec<Property> = Vec::new();
    let mut rejected = Vec::new();
    for (name, value) in facts {
        let rejection = if name.is_empty() || value.is_empty() {
            Some(PropertyRejection::Empty)
        } else if name.chars().count() > PROPERTY_NAME_MAX_LEN {
            Some(PropertyRejection::NameTooLong(name.chars().count()))
        } else if value.chars().count() > PROPERTY_VALUE_MAX_LEN {
            Some(PropertyRejection::ValueTooLong(value.chars().count()))
        } else if accepted.iter().any(|p| p.name == name) {
            Some(PropertyRejection::Duplicate)
        } else {
            None
        };
        if let Some(rejection) = rejection {
            rejected.push((name, rejection));
            continue;
        }
        let last_observed_time = previous
            .iter()
            .find(|p| p.name == name && p.value == value)
            .and_then(|p| p.last_observed_time.clone())
            .unwrap_or_else(|| now.clone());
        accepted.push(Property {
            name,
            value,
            last_observed_time: Some(last_observed_time),
        });
    }
    (accepted, rejected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_messages_are_cut_to_the_crd_limit() {
        let facts = |message: String| ConditionFacts {
            type_: "Joined".into(),
            status: "True".into(),
            reason: "Joined".into(),
            message,
        };
        let now = time("2026-01-01T00:00:00Z");
        let long = "é".repeat(CONDITION_MESSAGE_MAX + 10);
        let cut = condition(facts(long), &[], &now).message;
        assert_eq!(cut.chars().count(), CONDITION_MESSAGE_MAX);
        assert!(cut.ends_with('…'));
        let exact = "x".repeat(CONDITION_MESSAGE_MAX);
        assert_eq!(condition(facts(exact.clone()), &[], &now).message, exact);
    }

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn facts(status: &str) -> ConditionFacts {
        ConditionFacts {
            type_: "Joined".into(),
            status: status.into(),
            reason: "ManagedClusterJoined".into(),
            message: "joined".into(),
        }
    }

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let t0 = time("2026-01-01T00:00:00Z");
        let t1 = time("2026-01-01T01:00:00Z");
        let first = condition(facts("True"), &[], &t0);
        assert_eq!(first.last_transition_time, t0);
        let same = condition(facts("True"), std::slice::from_ref(&first), &t1);
        assert_eq!(same.last_transition_time, t0);
        let flipped = condition(facts("False"), &[first], &t1);
        assert_eq!(flipped.last_transition_time, t1);
    }

    #[test]
    fn reasons_are_made_valid() {
        assert_eq!(
            sanitize_reason("ManagedClusterAvailable"),
            "ManagedClusterAvailable"
        );
        assert_eq!(
            sanitize_reason("has spaces-and-dashes"),
            "hasspacesanddashes"
        );
        assert_eq!(sanitize_reason("1Leading"), "Leading");
        assert_eq!(sanitize_reason(""), "Unknown");
        assert_eq!(sanitize_reason("Trailing:"), "Trailing");
    }

    #[test]
    fn properties_keep_first_seen_time_and_report_invalid_ones() {
        let t0 = time("2026-01-01T00:00:00Z");
        let t1 = time("2026-01-02T00:00:00Z");
        let input = |region: &str| {
            vec![
                ("region".to_string(), region.to_string()),
                ("empty".to_string(), String::new()),
                ("huge".to_string(), "x".repeat(1025)),
                ("region".to_string(), "again".to_string()),
            ]
        };
        let (first, rejected) = properties(input("eu"), &[], &t0);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].last_observed_time, Some(t0.clone()));
        assert_eq!(
            rejected,
            vec![
                ("empty".to_string(), PropertyRejection::Empty),
                ("huge".to_string(), PropertyRejection::ValueTooLong(1025)),
                ("region".to_string(), PropertyRejection::Duplicate),
            ]
        );
        let (unchanged, _) = properties(input("eu"), &first, &t1);
        assert_eq!(unchanged[0].last_observed_time, Some(t0));
        let (changed, _) = properties(input("us"), &first, &t1);
        assert_eq!(changed[0].last_observed_time, Some(t1));
    }
}
