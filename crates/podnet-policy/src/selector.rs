//! Label selectors, as in `metav1.LabelSelector`.
//!
//! The requirements of a selector are ANDed: `matchLabels` entries and
//! `matchExpressions` alike. An empty selector (`{}`) matches everything.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::FieldError;

/// Labels of an object.
pub type Labels = BTreeMap<String, String>;

/// A `matchExpressions` operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Operator {
    /// The label exists with one of the values.
    In,
    /// The label is absent, or its value is none of the values.
    NotIn,
    /// The label exists (no values).
    Exists,
    /// The label is absent (no values).
    DoesNotExist,
}

impl Operator {
    /// Parses an operator as Kubernetes spells it.
    pub fn parse(text: &str) -> Option<Operator> {
        match text {
            "In" => Some(Operator::In),
            "NotIn" => Some(Operator::NotIn),
            "Exists" => Some(Operator::Exists),
            "DoesNotExist" => Some(Operator::DoesNotExist),
            _ => None,
        }
    }
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// How the label is compared.
    pub operator: Operator,
    /// Values (In, NotIn: at least one; Exists, DoesNotExist: none).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub values: BTreeSet<String>,
}

impl Requirement {
    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// A label selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// `key: value` pairs that must all be present.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: Labels,
    /// Further requirements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

impl LabelSelector {
    /// The selector `matchLabels: {k: v, ...}`.
    pub fn matching(pairs: &[(&str, &str)]) -> Self {
        LabelSelector {
            match_labels: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..LabelSelector::default()
        }
    }

    /// Whether `labels` satisfy every requirement (always, for an empty selector).
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// True for `{}`, which matches everything.
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// The selector in `kubectl`'s words: `app=web,tier in (a,b),!legacy`.
    pub fn describe(&self) -> String {
        if self.is_empty() {
            return "(all)".into();
        }
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for r in &self.match_expressions {
            let values = r.values.iter().cloned().collect::<Vec<_>>().join(",");
            parts.push(match r.operator {
                Operator::In => format!("{} in ({values})", r.key),
                Operator::NotIn => format!("{} notin ({values})", r.key),
                Operator::Exists => r.key.clone(),
                Operator::DoesNotExist => format!("!{}", r.key),
            });
        }
        parts.join(",")
    }

    /// The selector's problems, with paths under `path`.
    pub fn check(&self, path: &str, out: &mut Vec<FieldError>) {
        for (k, v) in &self.match_labels {
            check_label_key(&format!("{path}.matchLabels"), k, out);
            check_label_value(&format!("{path}.matchLabels[{k}]"), v, out);
        }
        for (i, r) in self.match_expressions.iter().enumerate() {
            let at = format!("{path}.matchExpressions[{i}]");
            check_label_key(&format!("{at}.key"), &r.key, out);
            match r.operator {
                Operator::In | Operator::NotIn if r.values.is_empty() => out.push(FieldError::new(
                    format!("{at}.values"),
                    format!("must be specified when `operator` is '{:?}'", r.operator),
                )),
                Operator::Exists | Operator::DoesNotExist if !r.values.is_empty() => {
                    out.push(FieldError::new(
                        format!("{at}.values"),
                        format!("may not be specified when `operator` is '{:?}'", r.operator),
                    ))
                }
                _ => {}
            }
            for v in &r.values {
                check_label_value(&format!("{at}.values"), v, out);
            }
        }
    }
}

/// Checks a label key: an optional DNS-subdomain prefix and `/`, then a name
/// of at most 63 characters (alphanumerics, `-`, `_`, `.`, alphanumeric at both ends).
pub fn check_label_key(path: &str, key: &str, out: &mut Vec<FieldError>) {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    });
    if !prefix_ok || !qualified_name(name) {
        out.push(FieldError::new(
            path,
            format!("invalid label key {key:?}: a name of at most 63 alphanumerics, '-', '_' or '.' (alphanumeric at both ends), optionally prefixed by a DNS subdomain and '/'"),
        ));
    }
}

/// Checks a label value: empty, or a name of at most 63 characters.
pub fn check_label_value(path: &str, value: &str, out: &mut Vec<FieldError>) {
    if !value.is_empty() && !qualified_name(value) {
        out.push(FieldError::new(
            path,
            format!("invalid label value {value:?}: at most 63 alphanumerics, '-', '_' or '.', alphanumeric at both ends"),
        ));
    }
}

fn qualified_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, operator: Operator, values: &[&str]) -> Requirement {
        Requirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn operators_follow_the_api() {
        let l = labels(&[("app", "web"), ("tier", "a")]);
        assert!(req("app", Operator::In, &["web", "db"]).matches(&l));
        assert!(!req("app", Operator::In, &["db"]).matches(&l));
        assert!(!req("missing", Operator::In, &["x"]).matches(&l));
        assert!(
            req("missing", Operator::NotIn, &["x"]).matches(&l),
            "NotIn matches an absent label"
        );
        assert!(!req("app", Operator::NotIn, &["web"]).matches(&l));
        assert!(req("tier", Operator::Exists, &[]).matches(&l));
        assert!(req("missing", Operator::DoesNotExist, &[]).matches(&l));
        assert!(!req("tier", Operator::DoesNotExist, &[]).matches(&l));
    }

    #[test]
    fn empty_selector_matches_everything_and_requirements_are_anded() {
        assert!(LabelSelector::default().matches(&Labels::new()));
        let s = LabelSelector {
            match_labels: labels(&[("app", "web")]),
            match_expressions: vec![req("tier", Operator::Exists, &[])],
        };
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "x")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
        assert_eq!(s.describe(), "app=web,tier");
    }

    #[test]
    fn bad_selectors_name_their_field() {
        let s = LabelSelector {
            match_labels: Labels::new(),
            match_expressions: vec![
                req("a", Operator::Exists, &["x"]),
                req("b", Operator::In, &[]),
                req("-bad", Operator::Exists, &[]),
            ],
        };
        let mut out = Vec::new();
        s.check("spec.podSelector", &mut out);
        let paths: Vec<&str> = out.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.podSelector.matchExpressions[0].values",
                "spec.podSelector.matchExpressions[1].values",
                "spec.podSelector.matchExpressions[2].key"
            ]
        );
    }
}
