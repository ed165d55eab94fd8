//! Pieces every sink's pure `render` shares: copying profile labels, chosen properties as labels
//! or annotations, name templates, and bounding derived names to valid ones.

use std::collections::BTreeMap;

use super::{Problem, is_valid_label_key, is_valid_label_value};
use crate::names::dns1123_name;
use crate::profile::ClusterProfile;

/// Label on hub objects naming the source profile (when its name is a valid label value; the
/// `inventory-bridge.io/profile` annotation always has it, and the engine adds the inventory as
/// `inventory-bridge.io/profile-namespace`).
pub const LABEL_PROFILE_NAME: &str = "inventory-bridge.io/profile-name";

/// Our own label domain: a profile's labels in it are never copied (the engine owns them).
const OWN_DOMAIN: &str = "inventory-bridge.io/";

/// A profile property copied onto a hub object: (property name, label or annotation key).
pub type PropertyMapping = (String, String);

/// The profile's name and namespace (its inventory), both needed to name what a sink writes.
pub fn profile_key(profile: &ClusterProfile) -> Result<(&str, &str), Problem> {
    match (
        profile.metadata.name.as_deref().filter(|n| !n.is_empty()),
        profile
            .metadata
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty()),
    ) {
        (Some(name), Some(namespace)) => Ok((name, namespace)),
        _ => Err(Problem::new(
            "render",
            "the profile has no name or no namespace",
        )),
    }
}

/// The profile's labels to copy onto a hub object: all but `skip` (keys another controller owns on
/// the consumer side) and our own domain. Labels removed from the profile disappear from the hub
/// object at the next apply (the engine applies exactly what is rendered).
pub fn copied_labels(profile: &ClusterProfile, skip: &[&str]) -> BTreeMap<String, String> {
    profile
        .labels_or_empty()
        .into_iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()) && !k.starts_with(OWN_DOMAIN))
        .collect()
}

/// Add the profile-name label when the name is a valid label value.
pub fn add_profile_name_label(labels: &mut BTreeMap<String, String>, profile_name: &str) {
    if is_valid_label_value(profile_name) {
        labels.insert(LABEL_PROFILE_NAME.to_string(), profile_name.to_string());
    }
}

fn property<'a>(profile: &'a ClusterProfile, name: &str) -> Option<&'a str> {
    profile
        .status
        .as_ref()?
        .properties
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.value.as_str())
}

/// Copy the chosen properties as labels. A value that is not a valid label value is skipped and
/// reported as an `invalid-label` warning (naming the property and label, never the value).
pub fn add_property_labels(
    labels: &mut BTreeMap<String, String>,
    profile: &ClusterProfile,
    mappings: &[PropertyMapping],
    warnings: &mut Vec<Problem>,
) {
    for (name, label) in mappings {
        let Some(value) = property(profile, name) else {
            continue;
        };
        if is_valid_label_value(value) {
            labels.insert(label.clone(), value.to_string());
        } else {
            warnings.push(Problem::new(
                "invalid-label",
                format!(
                    "property {name:?} is not a valid label value (63 characters at most, alphanumeric at both ends); label {label:?} not set"
                ),
            ));
        }
    }
}

/// Copy the chosen properties as annotations (any property value fits an annotation).
pub fn add_property_annotations(
    annotations: &mut BTreeMap<String, String>,
    profile: &ClusterProfile,
    mappings: &[PropertyMapping],
) {
    for (name, key) in mappings {
        if let Some(value) = property(profile, name) {
            annotations.insert(key.clone(), value.to_string());
        }
    }
}

/// Parse a `--property-labels` / `--property-annotations` entry: `name` or `name=key`; the key
/// defaults to the property name and must be a valid label/annotation key.
pub fn parse_property_mapping(text: &str) -> Result<PropertyMapping, String> {
    let (property, key) = match text.split_once('=') {
        Some((p, k)) => (p.trim(), k.trim()),
        None => (text.trim(), text.trim()),
    };
    if property.is_empty() {
        return Err(format!("{text:?}: empty property name"));
    }
    if !is_valid_label_key(key) {
        return Err(format!(
            "{text:?}: {key:?} is not a valid label key (write name=label-key)"
        ));
    }
    Ok((property.to_string(), key.to_string()))
}

/// A namespace name (DNS-1123 label), for flags naming hub namespaces.
pub fn parse_namespace(text: &str) -> Result<String, String> {
    if crate::names::is_dns1123_label(text) {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?} is not a valid namespace name (lowercase alphanumerics and '-', 63 characters at most)"
        ))
    }
}

/// `candidate` as a valid object name (DNS-1123 subdomain, ≤ 253): unchanged when valid,
/// otherwise cut and suffixed with a stable SHA-256-based hash of the whole candidate.
pub fn object_name(candidate: &str) -> String {
    dns1123_name(candidate, crate::names::DNS1123_SUBDOMAIN_MAX, true)
}

/// A name template with the placeholders `{name}` (the profile's name, required) and
/// `{namespace}` (its inventory), checked when flags are parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameTemplate(String);

impl NameTemplate {
    /// `{name}<suffix>`: the profile's name and a fixed suffix (e.g. `{name}-kubeconfig`).
    pub fn profile_name_with_suffix(suffix: &str) -> Self {
        Self(format!("{{name}}{suffix}"))
    }

    /// `{name}`: the profile's name as it is.
    pub fn profile_name() -> Self {
        Self("{name}".to_string())
    }

    /// Parse `text`: only `{name}` and `{namespace}` placeholders, and `{name}` present (without it
    /// every profile of an inventory would get the same name).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("{text:?}: unclosed '{{'"))?;
            let placeholder = &after[..close];
            if !matches!(placeholder, "name" | "namespace") {
                return Err(format!(
                    "{text:?}: unknown placeholder {{{placeholder}}} (use {{name}} and {{namespace}})"
                ));
            }
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("{text:?}: unmatched '}}'"));
        }
        if !text.contains("{name}") {
            return Err(format!(
                "{text:?} lacks {{name}}: every profile would get the same name"
            ));
        }
        Ok(Self(text.to_string()))
    }

    /// Parse a template of object names: it must also yield a valid DNS-1123 subdomain for valid
    /// profile names and inventories (checked with samples).
    pub fn parse_object_name(text: &str) -> Result<Self, String> {
        let template = Self::parse(text)?;
        let sample = template.render("profile-1", "inventory-1");
        if !crate::names::is_dns1123_subdomain(&sample) {
            return Err(format!(
                "{text:?} yields names like {sample:?}, which is not a valid object name (lowercase alphanumerics, '-' and '.', 253 characters at most)"
            ));
        }
        Ok(template)
    }

    /// The template with the placeholders filled in.
    pub fn render(&self, name: &str, namespace: &str) -> String {
        self.0
            .replace("{name}", "\u{0}")
            .replace("{namespace}", namespace)
            .replace('\u{0}', name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{ClusterProfileStatus, Property};
    use kube::api::ObjectMeta;

    fn profile() -> ClusterProfile {
        ClusterProfile {
            metadata: ObjectMeta {
                name: Some("edge-1".into()),
                namespace: Some("inv".into()),
                labels: Some(BTreeMap::from([
                    ("env".to_string(), "prod".to_string()),
                    ("owned".to_string(), "x".to_string()),
                    ("inventory-bridge.io/sink".to_string(), "spoof".to_string()),
                ])),
                ..ObjectMeta::default()
            },
            spec: Default::default(),
            status: Some(ClusterProfileStatus {
                properties: vec![
                    Property {
                        name: "region".into(),
                        value: "eu-1".into(),
                        last_observed_time: None,
                    },
                    Property {
                        name: "note".into(),
                        value: "not a label value!".into(),
                        last_observed_time: None,
                    },
                ],
                ..ClusterProfileStatus::default()
            }),
        }
    }

    #[test]
    fn labels_and_properties_are_copied_and_bad_values_reported() {
        let mut labels = copied_labels(&profile(), &["owned"]);
        assert_eq!(labels.len(), 1);
        add_profile_name_label(&mut labels, "edge-1");
        add_profile_name_label(&mut labels, &"x".repeat(64));
        assert_eq!(labels[LABEL_PROFILE_NAME], "edge-1");
        let mut warnings = Vec::new();
        let mappings = vec![
            ("region".to_string(), "example.com/region".to_string()),
            ("note".to_string(), "note".to_string()),
            ("absent".to_string(), "absent".to_string()),
        ];
        add_property_labels(&mut labels, &profile(), &mappings, &mut warnings);
        assert_eq!(labels["example.com/region"], "eu-1");
        assert!(!labels.contains_key("note"));
        assert_eq!(warnings.len(), 1);
        assert!(!warnings[0].message.contains("not a label value!"));
        let mut annotations = BTreeMap::new();
        add_property_annotations(&mut annotations, &profile(), &mappings);
        assert_eq!(annotations["note"], "not a label value!");
        assert_eq!(annotations.len(), 2);
    }

    #[test]
    fn property_mappings_parse() {
        assert_eq!(
            parse_property_mapping("id.k8s.io").unwrap(),
            ("id.k8s.io".into(), "id.k8s.io".into())
        );
        assert_eq!(
            parse_property_mapping("region=example.com/region").unwrap(),
            ("region".into(), "example.com/region".into())
        );
        assert!(parse_property_mapping("x=Bad Key").is_err());
        assert!(parse_property_mapping("=x").is_err());
    }

    #[test]
    fn templates_are_checked_and_filled() {
        let t = NameTemplate::parse("{namespace}/{name}").unwrap();
        assert_eq!(t.render("edge", "inv"), "inv/edge");
        // A profile named like a placeholder is not expanded twice.
        assert_eq!(t.render("{namespace}", "inv"), "inv/{namespace}");
        assert!(NameTemplate::parse("{nme}").is_err());
        assert!(NameTemplate::parse("{name").is_err());
        assert!(NameTemplate::parse("name}").is_err());
        assert!(NameTemplate::parse("{namespace}-fixed").is_err());
        assert!(NameTemplate::parse_object_name("{name}-kubeconfig").is_ok());
        let err = NameTemplate::parse_object_name("{name}_Kubeconfig").unwrap_err();
        assert!(err.contains("not a valid object name"), "{err}");
    }

    #[test]
    fn object_names_are_bounded_stably() {
        assert_eq!(object_name("cluster-inv-edge"), "cluster-inv-edge");
        let long = format!("cluster-inv-{}", "e".repeat(260));
        let cut = object_name(&long);
        // Kubernetes' object-name rule (IsDNS1123Subdomain): ≤ 253, [a-z0-9.-], alphanumeric ends.
        assert!(cut.len() <= 253, "{}", cut.len());
        assert!(
            cut.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert!(cut.ends_with(|c: char| c.is_ascii_alphanumeric()));
        assert_eq!(cut, object_name(&long));
        assert_ne!(cut, object_name(&format!("{long}x")));
    }
}
