//! Property tests of the laws the patch functions keep.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::managed::{self, ApplyError};
use super::*;

/// JSON values with few distinct keys, so that patches and documents overlap often.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..3).prop_map(Value::from),
        "[a-c]{0,2}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-d]", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map("[a-d]", json_value(), 0..5).prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// Every JSON pointer into `v`, with the value there.
fn pointers(v: &Value, prefix: String, out: &mut Vec<(String, Value)>) {
    out.push((prefix.clone(), v.clone()));
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                pointers(c, format!("{prefix}/{}", k.replace('~', "~0").replace('/', "~1")), out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                pointers(c, format!("{prefix}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn without_null_fields(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_null_fields(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_null_fields).collect()),
        other => other.clone(),
    }
}

fn labels() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("[a-e]", "[0-2]".prop_map(Value::String), 0..4).prop_map(|m| m.into_iter().collect())
}

fn node_config(labels: &Map<String, Value>, taints: Option<&[&str]>) -> Value {
    let mut config = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n", "labels": labels}});
    if let Some(keys) = taints {
        let taints: Vec<Value> = keys.iter().map(|k| json!({"key": k, "effect": "NoSchedule"})).collect();
        config["spec"] = json!({"taints": taints});
    }
    config
}

proptest! {
    #[test]
    fn merge_patch_twice_equals_once(doc in json_value(), patch in json_value()) {
        let once = merge_patch(&doc, &patch).unwrap();
        prop_assert_eq!(merge_patch(&once, &patch).unwrap(), once);
    }

    #[test]
    fn json_patch_test_of_an_existing_value_succeeds(doc in json_value(), pick in any::<prop::sample::Index>()) {
        let mut all = Vec::new();
        pointers(&doc, String::new(), &mut all);
        let (path, value) = &all[pick.index(all.len())];
        let patch = json!([{"op": "test", "path": path, "value": value}]);
        prop_assert_eq!(json_patch(&doc, &patch).unwrap(), doc);
    }

    #[test]
    fn json_patch_add_then_remove_restores(doc in json_object(), key in "[a-z/~]{1,4}", value in json_value()) {
        prop_assume!(doc.get(&key).is_none());
        let path = format!("/{}", key.replace('~', "~0").replace('/', "~1"));
        let patch = json!([{"op": "add", "path": path, "value": value}, {"op": "remove", "path": path}]);
        prop_assert_eq!(json_patch(&doc, &patch).unwrap(), doc);
    }

    /// Without list metadata and directives, a strategic merge patch is a JSON merge patch, up to the null
    /// fields inside replaced lists, which the strategic patch drops as the server's typed decoding does.
    #[test]
    fn strategic_without_metadata_is_merge_patch(doc in json_object(), patch in json_object()) {
        let want = without_null_fields(&merge_patch(&doc, &patch).unwrap());
        let got = strategic_merge_patch(&doc, &patch, &MergeSchema::default()).unwrap();
        prop_assert_eq!(without_null_fields(&got), want);
    }

    #[test]
    fn apply_twice_is_stable(first in labels(), second in labels(), taints in any::<bool>()) {
        let schema = MergeSchema::builtin("", "Node");
        let taint_keys = taints.then_some(&["x", "y"][..]);
        let live = managed::apply(None, &node_config(&first, None), "other", false, None, &schema, "2026-01-01T00:00:00Z").unwrap();
        let config = node_config(&second, taint_keys);
        let once = managed::apply(Some(&live), &config, "me", true, None, &schema, "2026-01-01T00:00:01Z").unwrap();
        let twice = managed::apply(Some(&once), &config, "me", false, None, &schema, "2026-01-01T00:00:02Z").unwrap();
        prop_assert_eq!(&once, &twice);
        // The forced apply set every applied label; labels only the other manager applied stay.
        for (k, v) in &second {
            prop_assert_eq!(&once["metadata"]["labels"][k], v);
        }
        for (k, v) in first.iter().filter(|(k, _)| !second.contains_key(*k)) {
            prop_assert_eq!(&once["metadata"]["labels"][k], v);
        }
    }

    /// Conflicts are exactly the other manager's labels the config gives another value.
    #[test]
    fn conflicts_are_the_changed_foreign_fields(first in labels(), second in labels()) {
        let schema = MergeSchema::builtin("", "Node");
        let live = managed::apply(None, &node_config(&first, None), "A", false, None, &schema, "2026-01-01T00:00:00Z").unwrap();
        let mut want: Vec<String> = second
            .iter()
            .filter(|(k, v)| first.get(*k).is_some_and(|f| f != *v))
            .map(|(k, _)| format!(".metadata.labels.{k}"))
            .collect();
        want.sort();
        match managed::apply(Some(&live), &node_config(&second, None), "B", false, None, &schema, "2026-01-01T00:00:01Z") {
            Ok(_) => prop_assert!(want.is_empty()),
            Err(ApplyError::Conflicts(c)) => {
                let got: Vec<String> = c.iter().map(|c| c.field.clone()).collect();
                prop_assert_eq!(got, want);
                prop_assert!(c.iter().all(|c| c.manager == "A"));
            }
            Err(e) => prop_assert!(false, "{e:?}"),
        }
    }

    /// After a manager stops applying everything, only the fields others applied remain.
    #[test]
    fn withdrawing_leaves_only_what_others_own(first in labels(), second in labels()) {
        let schema = MergeSchema::builtin("", "Node");
        let t = "2026-01-01T00:00:00Z";
        let live = managed::apply(None, &node_config(&first, None), "A", false, None, &schema, t).unwrap();
        let Ok(both) = managed::apply(Some(&live), &node_config(&second, None), "B", false, None, &schema, t) else {
            return Ok(());
        };
        let gone = managed::apply(Some(&both), &node_config(&Map::new(), None), "A", false, None, &schema, t).unwrap();
        let left = gone["metadata"].get("labels").and_then(Value::as_object).cloned().unwrap_or_default();
        prop_assert_eq!(left, second);
    }
}

/// JSON built from the names the patch code looks at, so that odd input reaches its branches.
fn odd_value() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(vec![
        "metadata",
        "spec",
        "status",
        "containers",
        "name",
        "image",
        "env",
        "ports",
        "containerPort",
        "protocol",
        "labels",
        "finalizers",
        "managedFields",
        "manager",
        "operation",
        "fieldsV1",
        "fieldsType",
        "f:spec",
        "k:{",
        ".",
        "$patch",
        "$retainKeys",
        "$setElementOrder/containers",
        "$deleteFromPrimitiveList/finalizers",
        "op",
        "path",
        "from",
        "value",
        "taints",
        "apiVersion",
        "kind",
        "type",
        "conditions",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-2i64..3).prop_map(Value::from),
        prop::sample::select(vec![
            "", "a", "/spec", "/-", "~", "add", "delete", "replace", "merge", "Apply", "Update"
        ])
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(5, 48, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

proptest! {
    /// Whatever the input, the patch functions answer with a value or an error, never a panic.
    #[test]
    fn odd_input_never_panics(doc in odd_value(), patch in odd_value(), force in any::<bool>()) {
        let pod = MergeSchema::builtin("", "Pod");
        let _ = json_patch(&doc, &patch);
        let _ = merge_patch(&doc, &patch);
        let _ = strategic_merge_patch(&doc, &patch, &pod);
        let _ = strategic_merge_patch(&doc, &patch, &MergeSchema::from_openapi(&patch));
        let now = "2026-01-01T00:00:00Z";
        let _ = managed::apply(Some(&doc), &patch, "m", force, None, &pod, now);
        let _ = managed::apply(None, &patch, "kubectl", force, Some("status"), &pod, now);
        let _ = managed::record_update(Some(&doc), &patch, "m", None, &pod, now);
        let _ = managed::record_update(None, &patch, "m", Some("status"), &pod, now);
    }
}
