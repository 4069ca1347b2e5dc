//! Label and field selectors as list and watch take them (`labelSelector=`, `fieldSelector=`).
//!
//! Parsed once per request, matched against the labels and selectable fields each stored object keeps
//! beside its serialized form, so that a watch filters events without decoding objects.

use kube::core::Expression;
use serde_json::Value;

use super::error::ApiError;

/// A label selector, the one matcher for every selector the sandbox meets: `labelSelector=` queries and the
/// `metav1.LabelSelector` objects in PDBs, admission policies and aggregated ClusterRoles. Empty matches
/// everything.
///
/// Its requirements are kube's [`Expression`]s; it matches through a lookup rather than kube's
/// `Selector::matches`, because stored objects keep their labels beside their serialized form, not in a map.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct LabelSelector(Vec<Expression>);

impl LabelSelector {
    pub(crate) fn parse(text: &str) -> Result<LabelSelector, ApiError> {
        let mut reqs = Vec::new();
        for part in split_top(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            reqs.push(
                parse_requirement(part)
                    .map_err(|m| ApiError::BadRequest(format!("unable to parse requirement: {m}")))?,
            );
        }
        Ok(LabelSelector(reqs))
    }

    /// A `metav1.LabelSelector` object (absent fields select everything); None when an expression has an
    /// operator the API does not know, which selects nothing. In and NotIn without values take the empty set.
    pub(crate) fn from_object(sel: &Value) -> Option<LabelSelector> {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let mut reqs: Vec<Expression> = sel["matchLabels"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| Expression::Equal(k.clone(), text(v)))
            .collect();
        for e in sel["matchExpressions"].as_array().into_iter().flatten() {
            let key = text(&e["key"]);
            let values = || e["values"].as_array().into_iter().flatten().map(text).collect();
            reqs.push(match e["operator"].as_str().unwrap_or_default() {
                "In" => Expression::In(key, values()),
                "NotIn" => Expression::NotIn(key, values()),
                "Exists" => Expression::Exists(key),
                "DoesNotExist" => Expression::DoesNotExist(key),
                _ => return None,
            });
        }
        Some(LabelSelector(reqs))
    }

    /// Whether labels (sorted or not) satisfy every requirement.
    pub(crate) fn matches<'a>(&self, labels: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.0.iter().all(|req| match req {
            Expression::Equal(k, v) => labels(k) == Some(v.as_str()),
            Expression::NotEqual(k, v) => labels(k) != Some(v.as_str()),
            Expression::In(k, vs) => labels(k).is_some_and(|x| vs.contains(x)),
            Expression::NotIn(k, vs) => !labels(k).is_some_and(|x| vs.contains(x)),
            Expression::Exists(k) => labels(k).is_some(),
            Expression::DoesNotExist(k) => labels(k).is_none(),
        })
    }
}

/// Splits at commas outside parentheses.
fn split_top(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn valid_key(key: &str) -> Result<String, String> {
    let ok = !key.is_empty()
        && key.len() <= 317
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if ok {
        Ok(key.to_string())
    } else {
        Err(format!("invalid label key \"{key}\""))
    }
}

fn parse_requirement(part: &str) -> Result<Expression, String> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Expression::DoesNotExist(valid_key(key.trim())?));
    }
    for (sep, set_op) in [(" notin ", false), (" in ", true)] {
        if let Some(idx) = part.find(sep) {
            let key = valid_key(part[..idx].trim())?;
            let rest = part[idx + sep.len()..].trim();
            let inner = rest
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| format!("found '{rest}', expected: '(' and ')'"))?;
            let values = inner
                .split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect();
            return Ok(if set_op {
                Expression::In(key, values)
            } else {
                Expression::NotIn(key, values)
            });
        }
    }
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(Expression::NotEqual(valid_key(k.trim())?, v.trim().to_string()));
    }
    if let Some((k, v)) = part.split_once("==") {
        return Ok(Expression::Equal(valid_key(k.trim())?, v.trim().to_string()));
    }
    if let Some((k, v)) = part.split_once('=') {
        return Ok(Expression::Equal(valid_key(k.trim())?, v.trim().to_string()));
    }
    if part.contains(['<', '>', '(', ')', ' ']) {
        return Err(format!("unsupported requirement '{part}'"));
    }
    Ok(Expression::Exists(valid_key(part)?))
}

/// A parsed field selector: equality and inequality on the fields a resource makes selectable.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses and checks every field against `supported` (metadata.name and metadata.namespace always are).
    pub(crate) fn parse(text: &str, supported: &[&str]) -> Result<FieldSelector, ApiError> {
        let mut reqs = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, eq, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(ApiError::BadRequest(format!(
                    "invalid selector: '{text}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            if field != "metadata.name" && field != "metadata.namespace" && !supported.contains(&field) {
                return Err(ApiError::BadRequest(format!("field label not supported: {field}")));
            }
            reqs.push((field.to_string(), eq, value.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    /// Whether the object's fields satisfy every requirement; an absent field reads as "".
    pub(crate) fn matches<'a>(&self, fields: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.0.iter().all(|(f, eq, v)| (fields(f).unwrap_or("") == v) == *eq)
    }
}

/// The selectable fields beyond metadata.name/namespace, per store key.
pub(crate) fn selectable_fields(key: &str) -> &'static [&'static str] {
    match key {
        "pods" => &[
            "spec.nodeName",
            "status.phase",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.podIP",
            "spec.restartPolicy",
        ],
        "events" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "events.k8s.io/events" => &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "reason",
            "type",
        ],
        "nodes" => &["spec.unschedulable"],
        "namespaces" => &["status.phase"],
        "secrets" => &["type"],
        "apps/replicasets" => &["status.replicas"],
        "batch/jobs" => &["status.successful"],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(labels: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> + 'a {
        move |k| labels.iter().find(|(lk, _)| *lk == k).map(|(_, v)| *v)
    }

    #[test]
    fn label_selector_operators() {
        let labels = [("app", "web"), ("tier", "front")];
        let cases = [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (db, web)", true),
            ("app notin (db,web)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("app=web,tier=back", false),
            ("", true),
        ];
        for (text, want) in cases {
            let sel = LabelSelector::parse(text).unwrap();
            assert_eq!(sel.matches(lookup(&labels)), want, "{text}");
        }
        assert!(LabelSelector::parse("app in web").is_err());
    }

    #[test]
    fn objects_and_queries_select_alike() {
        let obj = serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["front", "back"]},
                {"key": "gone", "operator": "DoesNotExist"},
            ],
        });
        let parsed = LabelSelector::parse("app=web,tier in (back,front),!gone").unwrap();
        assert_eq!(LabelSelector::from_object(&obj), Some(parsed));
        let bogus = serde_json::json!({"matchExpressions": [{"key": "a", "operator": "Bogus"}]});
        assert_eq!(LabelSelector::from_object(&bogus), None);
    }

    #[test]
    fn field_selector_rejects_unknown_fields() {
        let sel = FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed", selectable_fields("pods")).unwrap();
        let fields = [("spec.nodeName", "n1"), ("status.phase", "Running")];
        assert!(sel.matches(lookup(&fields)));
        let err = FieldSelector::parse("spec.foo=x", selectable_fields("pods")).unwrap_err();
        assert_eq!(err.code(), 400);
        assert_eq!(err.to_string(), "field label not supported: spec.foo");
    }
}
