//! kubectl's client-side apply annotation, as the real server treats it on a server-side apply by the field
//! manager `kubectl`: moving an object from `kubectl apply` to `kubectl apply --server-side` raises no
//! conflict on the fields the annotation recorded (and the live object still has), and an object that has
//! the annotation keeps it equal to the last applied configuration, so that going back works too.

use std::collections::HashSet;

use serde_json::Value;

use super::fieldset::{diff, display_path, to_set};
use crate::patch::MergeSchema;

/// The only field manager the real server does this for.
pub(crate) const KUBECTL: &str = "kubectl";

const ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

fn annotation(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/annotations")?
        .get(ANNOTATION)?
        .as_str()
        .filter(|s| !s.is_empty())
}

/// The fields (as printed in conflicts) the annotation of `live` recorded with their live values, or None
/// when there is no usable annotation (absent, unreadable, or of another API version than `config`).
pub(crate) fn allowed_conflicts(live: Option<&Value>, config: &Value, schema: &MergeSchema) -> Option<HashSet<String>> {
    let last: Value = serde_json::from_str(annotation(live?)?).ok()?;
    if last.get("apiVersion") != config.get("apiVersion") {
        return None;
    }
    let mut recorded = to_set(&last, schema.root());
    let d = diff(&last, live?, schema.root());
    for changed in [&d.modified, &d.added, &d.removed] {
        recorded.remove_all(changed);
    }
    Some(recorded.paths().iter().map(|p| display_path(p)).collect())
}

/// Sets an existing annotation of `applied` to `config` (without the annotation), encoded as Go's JSON
/// encoder writes it: sorted keys, HTML characters escaped, a final newline.
pub(crate) fn sync(applied: &mut Value, config: &Value) {
    if annotation(applied).is_none() {
        return;
    }
    let mut recorded = config.clone();
    if let Some(annotations) = recorded
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.remove(ANNOTATION);
        if annotations.is_empty()
            && let Some(meta) = recorded.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.remove("annotations");
        }
    }
    let mut text = String::new();
    for c in recorded.to_string().chars() {
        match c {
            '<' => text.push_str("\\u003c"),
            '>' => text.push_str("\\u003e"),
            '&' => text.push_str("\\u0026"),
            '\u{2028}' => text.push_str("\\u2028"),
            '\u{2029}' => text.push_str("\\u2029"),
            c => text.push(c),
        }
    }
    text.push('\n');
    if let Some(annotations) = applied
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.insert(ANNOTATION.to_string(), Value::String(text));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{ApplyError, apply, record_update};
    use super::*;

    const T0: &str = "2026-11-22T03:00:00Z";

    /// A ConfigMap as `kubectl apply` (client-side) leaves it: an Update entry and the annotation.
    fn client_side_applied() -> Value {
        let last =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "c", "annotations": {ANNOTATION: format!("{last}\n")}},
                         "data": {"a": "1", "b": "2"}});
        record_update(
            None,
            &obj,
            "kubectl-client-side-apply",
            None,
            &MergeSchema::builtin("", "ConfigMap"),
            T0,
        )
    }

    #[test]
    fn kubectl_moves_from_client_side_apply_without_conflicts() {
        let schema = MergeSchema::builtin("", "ConfigMap");
        let live = client_side_applied();
        let config =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "9", "b": "2"}});
        let out = apply(Some(&live), &config, KUBECTL, false, None, &schema, T0).unwrap();
        assert_eq!(out["data"], json!({"a": "9", "b": "2"}));
        assert_eq!(
            annotation(&out).unwrap(),
            "{\"apiVersion\":\"v1\",\"data\":{\"a\":\"9\",\"b\":\"2\"},\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"c\"}}\n"
        );
        // Another manager gets the conflict, and so does kubectl for a field the annotation did not record.
        let err = apply(Some(&live), &config, "other", false, None, &schema, T0);
        assert!(matches!(err, Err(ApplyError::Conflicts(_))));
        let mut edited = live.clone();
        edited["data"]["a"] = json!("edited");
        let edited = record_update(Some(&live), &edited, "kubectl-edit", None, &schema, T0);
        let err = apply(Some(&edited), &config, KUBECTL, false, None, &schema, T0).unwrap_err();
        assert_eq!(
            err.status_message(),
            "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using v1: .data.a"
        );
    }

    #[test]
    fn annotation_is_encoded_as_go_does() {
        let mut applied = json!({"metadata": {"annotations": {ANNOTATION: "x"}}});
        let config = json!({"metadata": {"annotations": {ANNOTATION: "old", "note": "a<b & c>d"}}});
        sync(&mut applied, &config);
        assert_eq!(
            annotation(&applied).unwrap(),
            "{\"metadata\":{\"annotations\":{\"note\":\"a\\u003cb \\u0026 c\\u003ed\"}}}\n"
        );
        let mut without = json!({"metadata": {}});
        sync(&mut without, &config);
        assert_eq!(without, json!({"metadata": {}}));
    }
}
