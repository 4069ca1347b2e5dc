//! Label selectors, compiled once per plan and matched without allocation.

use std::collections::BTreeMap;

/// One `matchExpressions` requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A label selector: every `match_labels` pair and every requirement must hold. The empty selector matches all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    pub match_labels: Vec<(String, String)>,
    pub requirements: Vec<Requirement>,
}

impl Selector {
    /// A selector that requires each of these labels.
    pub fn from_labels<K: Into<String>, V: Into<String>>(labels: impl IntoIterator<Item = (K, V)>) -> Self {
        Self {
            match_labels: labels.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
            requirements: vec![],
        }
    }

    /// Every label key the selector reads.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        let required = self.requirements.iter().map(|r| match r {
            Requirement::In(k, _)
            | Requirement::NotIn(k, _)
            | Requirement::Exists(k)
            | Requirement::DoesNotExist(k) => k.as_str(),
        });
        self.match_labels.iter().map(|(k, _)| k.as_str()).chain(required)
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.requirements.iter().all(|r| match r {
                Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
                Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
                Requirement::Exists(k) => labels.contains_key(k),
                Requirement::DoesNotExist(k) => !labels.contains_key(k),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(Selector::default().matches(&labels(&[])));
        assert!(Selector::default().matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn every_operator() {
        let l = labels(&[("gpu", "a100"), ("zone", "x")]);
        let sel = |r: Requirement| Selector {
            match_labels: vec![],
            requirements: vec![r],
        };
        assert!(sel(Requirement::In("gpu".into(), vec!["a100".into(), "h100".into()])).matches(&l));
        assert!(!sel(Requirement::In("gpu".into(), vec!["h100".into()])).matches(&l));
        assert!(!sel(Requirement::In("missing".into(), vec!["x".into()])).matches(&l));
        assert!(sel(Requirement::NotIn("gpu".into(), vec!["h100".into()])).matches(&l));
        assert!(sel(Requirement::NotIn("missing".into(), vec!["h100".into()])).matches(&l));
        assert!(!sel(Requirement::NotIn("gpu".into(), vec!["a100".into()])).matches(&l));
        assert!(sel(Requirement::Exists("zone".into())).matches(&l));
        assert!(!sel(Requirement::Exists("rack".into())).matches(&l));
        assert!(sel(Requirement::DoesNotExist("rack".into())).matches(&l));
        assert!(!sel(Requirement::DoesNotExist("zone".into())).matches(&l));
        assert!(Selector::from_labels([("gpu", "a100")]).matches(&l));
        assert!(!Selector::from_labels([("gpu", "h100")]).matches(&l));
    }
}
