//! Which requests a policy's matchConstraints or a binding's matchResources select.

use serde_json::{Map, Value};

use super::AdmissionRequest;
use crate::selector::LabelSelector;

/// Whether `m` (a MatchResources) selects the request. A policy's matchConstraints without resourceRules
/// select nothing; a binding's matchResources without them do not constrain resources (`for_binding`).
pub(super) fn matches(m: &Value, req: &AdmissionRequest, namespace_object: Option<&Value>, for_binding: bool) -> bool {
    if !m.is_object() {
        return false;
    }
    let rules = |key: &str| m[key].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let included = rules("resourceRules");
    (included.iter().any(|r| rule_matches(r, req)) || (for_binding && included.is_empty()))
        && !rules("excludeResourceRules").iter().any(|r| rule_matches(r, req))
        && namespace_matches(&m["namespaceSelector"], req, namespace_object)
        && object_matches(&m["objectSelector"], req)
}

fn listed(rule: &Value, key: &str, wanted: &str) -> bool {
    rule[key]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == "*" || x == wanted))
}

fn rule_matches(rule: &Value, req: &AdmissionRequest) -> bool {
    let resources_ok = rule["resources"].as_array().is_some_and(|a| {
        a.iter().filter_map(Value::as_str).any(|p| {
            let sub = req.subresource.as_str();
            match p.split_once('/') {
                None => (p == req.resource || p == "*") && sub.is_empty(),
                Some(("*", "*")) => true,
                Some((res, "*")) => res == req.resource && !sub.is_empty(),
                Some(("*", s)) => s == sub,
                Some((res, s)) => res == req.resource && s == sub,
            }
        })
    });
    let scope_ok = match rule["scope"].as_str().unwrap_or("*") {
        "Namespaced" => req.namespace.is_some(),
        "Cluster" => req.namespace.is_none(),
        _ => true,
    };
    let names_ok = match rule["resourceNames"].as_array() {
        Some(names) if !names.is_empty() => names.iter().any(|n| n == req.name.as_str()),
        _ => true,
    };
    listed(rule, "operations", &req.operation)
        && listed(rule, "apiGroups", &req.group)
        && listed(rule, "apiVersions", &req.version)
        && resources_ok
        && scope_ok
        && names_ok
}

fn labels(obj: Option<&Value>) -> Map<String, Value> {
    obj.and_then(|o| o.pointer("/metadata/labels"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// Namespaced requests match against their namespace's labels, a Namespace against its own; other
/// cluster-scoped requests are never skipped by a namespaceSelector.
fn namespace_matches(sel: &Value, req: &AdmissionRequest, namespace_object: Option<&Value>) -> bool {
    if req.namespace.is_some() {
        selector_matches(sel, &labels(namespace_object))
    } else if req.group.is_empty() && req.resource == "namespaces" {
        selector_matches(sel, &labels(req.object.as_ref().or(req.old_object.as_ref())))
    } else {
        true
    }
}

fn object_matches(sel: &Value, req: &AdmissionRequest) -> bool {
    if !sel.is_object() {
        return true;
    }
    [req.object.as_ref(), req.old_object.as_ref()]
        .into_iter()
        .flatten()
        .any(|o| selector_matches(sel, &labels(Some(o))))
}

/// A metav1.LabelSelector; absent or empty selects everything.
pub(super) fn selector_matches(sel: &Value, labels: &Map<String, Value>) -> bool {
    LabelSelector::from_object(sel).is_some_and(|s| s.matches(|k| labels.get(k).and_then(Value::as_str)))
}
