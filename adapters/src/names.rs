//! Kubernetes name and label rules, and stable derivation of names that must fit them.

use sha2::{Digest, Sha256};

/// Max length of a DNS-1123 subdomain (most object names).
pub const DNS1123_SUBDOMAIN_MAX: usize = 253;
/// Max length of a DNS-1123 label (namespace names, label values, many derived names).
pub const DNS1123_LABEL_MAX: usize = 63;
/// Max length of a label value.
pub const LABEL_VALUE_MAX: usize = 63;

/// Whether `value` is a valid label value: empty, or ≤63 alphanumerics, `-`, `_`, `.` that start
/// and end alphanumeric.
pub fn is_valid_label_value(value: &str) -> bool {
    if value.is_empty() {
        return true;
    }
    value.len() <= LABEL_VALUE_MAX
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Whether `key` is a valid label key: optional DNS-1123 subdomain prefix and `/`, then a name
/// part that follows the label value rules and is not empty.
pub fn is_valid_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && !is_dns1123_subdomain(prefix)
    {
        return false;
    }
    !name.is_empty() && is_valid_label_value(name)
}

/// Whether `name` is a DNS-1123 subdomain (lowercase alphanumerics, `-` and `.`, ≤253).
pub fn is_dns1123_subdomain(name: &str) -> bool {
    !name.is_empty() && name.len() <= DNS1123_SUBDOMAIN_MAX && name.split('.').all(is_dns1123_label)
}

/// Whether `name` is a DNS-1123 label (lowercase alphanumerics and `-`, ≤63, alphanumeric ends).
pub fn is_dns1123_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= DNS1123_LABEL_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A short stable hash of `input` (8 hex characters of SHA-256).
pub fn short_hash(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// Turn `candidate` into a valid DNS-1123 name of at most `max_len` characters. A name that is
/// already valid is returned unchanged; otherwise it is lowercased, invalid characters become
/// `-`, and — when anything had to change or it is too long — it is cut and suffixed with
/// `-<hash of the original>` so distinct inputs never collide and the result is stable.
pub fn dns1123_name(candidate: &str, max_len: usize, subdomain: bool) -> String {
    let valid = if subdomain {
        is_dns1123_subdomain(candidate)
    } else {
        is_dns1123_label(candidate)
    };
    if valid && candidate.len() <= max_len {
        return candidate.to_string();
    }
    let hash = short_hash(candidate);
    let sanitized: String = candidate
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || (subdomain && c == '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let room = max_len.saturating_sub(hash.len() + 1);
    let mut stem: String = sanitized.chars().take(room).collect();
    while stem.ends_with(['-', '.']) {
        stem.pop();
    }
    let stem = stem.trim_start_matches(['-', '.']);
    if stem.is_empty() {
        hash
    } else {
        format!("{stem}-{hash}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values() {
        assert!(is_valid_label_value(""));
        assert!(is_valid_label_value("prod"));
        assert!(is_valid_label_value("a.b_c-d"));
        assert!(!is_valid_label_value("-prod"));
        assert!(!is_valid_label_value("prod."));
        assert!(!is_valid_label_value("has space"));
        assert!(!is_valid_label_value(&"x".repeat(64)));
        assert!(is_valid_label_value(&"x".repeat(63)));
    }

    #[test]
    fn label_keys() {
        assert!(is_valid_label_key("env"));
        assert!(is_valid_label_key("x-k8s.io/cluster-manager"));
        assert!(!is_valid_label_key("Bad_Prefix/env"));
        assert!(!is_valid_label_key("example.com/"));
        assert!(!is_valid_label_key("a/b/c"));
    }

    #[test]
    fn dns_names_are_kept_when_valid_and_hashed_otherwise() {
        assert_eq!(dns1123_name("team-a-prod", 63, false), "team-a-prod");
        let fixed = dns1123_name("Team_A/Prod", 63, false);
        assert!(is_dns1123_label(&fixed), "{fixed}");
        assert!(fixed.starts_with("team-a-prod-"), "{fixed}");
        // Stable, and distinct inputs that sanitize alike do not collide.
        assert_eq!(fixed, dns1123_name("Team_A/Prod", 63, false));
        assert_ne!(fixed, dns1123_name("team-a-prod-", 63, false));
        let long = "n".repeat(300);
        let cut = dns1123_name(&long, 63, false);
        assert_eq!(cut.len(), 63);
        assert!(is_dns1123_label(&cut));
        assert_ne!(cut, dns1123_name(&"n".repeat(301), 63, false));
        assert!(is_dns1123_label(&dns1123_name("---", 63, false)));
    }
}
