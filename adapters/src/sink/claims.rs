//! Consumer names that must stay unique across profiles (e.g. Argo CD cluster names): of the
//! profiles claiming one name, the oldest by `creationTimestamp` keeps it (ties: the first by
//! namespace and name, so every replica and every restart decides alike). Pure.

use super::duplicates::Candidate;

/// Whether `a` keeps a claimed name against `b`: older first; equal or unknown times fall back to
/// namespace then name; an unknown time counts as newest.
pub fn precedes(a: &Candidate, b: &Candidate) -> bool {
    let time = |c: &Candidate| (c.created.is_none(), c.created);
    (time(a), &a.namespace, &a.name) < (time(b), &b.namespace, &b.name)
}

/// The first of `others` that claims one of `mine` and precedes `me`, with the name it claims.
pub fn conflict(
    me: &Candidate,
    mine: &[String],
    others: impl IntoIterator<Item = (Candidate, Vec<String>)>,
) -> Option<(Candidate, String)> {
    others.into_iter().find_map(|(other, theirs)| {
        let same =
            (other.namespace == me.namespace && other.name == me.name) || !precedes(&other, me);
        if same {
            return None;
        }
        theirs
            .into_iter()
            .find(|claim| mine.contains(claim))
            .map(|claim| (other, claim))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn candidate(namespace: &str, name: &str, second: Option<i64>) -> Candidate {
        Candidate {
            namespace: namespace.into(),
            name: name.into(),
            member_id: None,
            created: second.map(|s| Timestamp::from_second(s).unwrap()),
        }
    }

    #[test]
    fn the_older_profile_keeps_a_shared_name_and_ties_are_decided_by_key() {
        let old = candidate("inv-b", "edge", Some(10));
        let new = candidate("inv-a", "edge", Some(20));
        let claim = vec!["edge".to_string()];
        let found = conflict(&new, &claim, vec![(old.clone(), claim.clone())]).unwrap();
        assert_eq!(found, (old.clone(), "edge".to_string()));
        assert!(conflict(&old, &claim, vec![(new.clone(), claim.clone())]).is_none());
        // Same second: namespace order decides, identically from both sides.
        let (a, b) = (
            candidate("inv-a", "edge", Some(5)),
            candidate("inv-b", "edge", Some(5)),
        );
        assert!(conflict(&a, &claim, vec![(b.clone(), claim.clone())]).is_none());
        assert!(conflict(&b, &claim, vec![(a, claim.clone())]).is_some());
        // Different names never conflict; a profile never conflicts with itself.
        assert!(conflict(&new, &claim, vec![(old, vec!["other".into()])]).is_none());
        assert!(conflict(&new, &claim, vec![(new.clone(), claim.clone())]).is_none());
        // An unknown creation time counts as newest.
        assert!(precedes(
            &candidate("z", "z", Some(99)),
            &candidate("a", "a", None)
        ));
    }
}
