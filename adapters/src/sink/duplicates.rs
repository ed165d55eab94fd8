//! Profiles sharing `multicluster.x-k8s.io/inventory-member-id` within one inventory (namespace)
//! represent the same member: only the oldest by `creationTimestamp` is registered; when the oldest
//! time is shared (a tie), none is, because picking one would be arbitrary. Pure.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;

/// The facts about a profile this decision needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Namespace (the inventory).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The member id label, if any (empty counts as none).
    pub member_id: Option<String>,
    /// `creationTimestamp`.
    pub created: Option<Timestamp>,
}

/// What to do with one profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Register it (no member id, alone with its id, or the oldest of its group).
    Register,
    /// Another, older profile represents the same member.
    Duplicate {
        /// The profile that is registered instead.
        winner: String,
    },
    /// Several profiles share the oldest creation time: none is registered.
    Ambiguous {
        /// All tied profiles.
        tied: Vec<String>,
    },
}

/// Counts of member-id groups, for the gauge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupCounts {
    /// Ids held by exactly one profile.
    pub unique: i64,
    /// Ids held by several profiles with a clear oldest.
    pub duplicate: i64,
    /// Ids held by several profiles tied for oldest.
    pub ambiguous: i64,
}

/// The verdict for `profile` among `all` (which should include it).
pub fn verdict(profile: &Candidate, all: &[Candidate]) -> Verdict {
    let Some(id) = profile.member_id.as_deref().filter(|id| !id.is_empty()) else {
        return Verdict::Register;
    };
    let group: Vec<&Candidate> = all
        .iter()
        .filter(|c| c.namespace == profile.namespace && c.member_id.as_deref() == Some(id))
        .collect();
    decide(profile, &group)
}

fn decide(profile: &Candidate, group: &[&Candidate]) -> Verdict {
    if group.len() <= 1 {
        return Verdict::Register;
    }
    // A missing timestamp sorts last: the server always sets it, so it only happens in tests.
    let oldest = group.iter().filter_map(|c| c.created).min();
    let tied: Vec<String> = group
        .iter()
        .filter(|c| c.created == oldest)
        .map(|c| c.name.clone())
        .collect();
    if tied.len() > 1 {
        let mut tied = tied;
        tied.sort();
        return Verdict::Ambiguous { tied };
    }
    match tied.into_iter().next() {
        Some(winner) if winner == profile.name => Verdict::Register,
        Some(winner) => Verdict::Duplicate { winner },
        None => Verdict::Register,
    }
}

/// Count unique, duplicate and ambiguous member-id groups.
pub fn count_groups(all: &[Candidate]) -> GroupCounts {
    let mut groups: BTreeMap<(&str, &str), Vec<&Candidate>> = BTreeMap::new();
    for c in all {
        if let Some(id) = c.member_id.as_deref().filter(|id| !id.is_empty()) {
            groups.entry((&c.namespace, id)).or_default().push(c);
        }
    }
    let mut counts = GroupCounts::default();
    for group in groups.values() {
        if group.len() == 1 {
            counts.unique += 1;
        } else if matches!(decide(group[0], group), Verdict::Ambiguous { .. }) {
            counts.ambiguous += 1;
        } else {
            counts.duplicate += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(ns: &str, name: &str, id: Option<&str>, created: i64) -> Candidate {
        Candidate {
            namespace: ns.into(),
            name: name.into(),
            member_id: id.map(str::to_string),
            created: Some(Timestamp::from_second(created).unwrap()),
        }
    }

    #[test]
    fn oldest_wins_ties_register_none_and_inventories_are_separate() {
        let all = vec![
            c("inv", "old", Some("m1"), 100),
            c("inv", "new", Some("m1"), 200),
            c("inv", "tie-a", Some("m2"), 100),
            c("inv", "tie-b", Some("m2"), 100),
            c("inv", "tie-late", Some("m2"), 300),
            c("other", "new", Some("m1"), 50),
            c("inv", "alone", Some("m3"), 1),
            c("inv", "no-id", None, 1),
            c("inv", "empty-id", Some(""), 1),
        ];
        assert_eq!(verdict(&all[0], &all), Verdict::Register);
        assert_eq!(
            verdict(&all[1], &all),
            Verdict::Duplicate {
                winner: "old".into()
            }
        );
        let tied = Verdict::Ambiguous {
            tied: vec!["tie-a".into(), "tie-b".into()],
        };
        assert_eq!(verdict(&all[2], &all), tied);
        assert_eq!(verdict(&all[4], &all), tied);
        assert_eq!(verdict(&all[5], &all), Verdict::Register);
        for i in 6..9 {
            assert_eq!(verdict(&all[i], &all), Verdict::Register);
        }
        assert_eq!(
            count_groups(&all),
            GroupCounts {
                unique: 2,
                duplicate: 1,
                ambiguous: 1
            }
        );
    }
}
