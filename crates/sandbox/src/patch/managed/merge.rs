//! The two object edits of an apply: merging the applied configuration into the live object, and pruning
//! the fields the applier stopped applying that nobody else owns.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::fieldset::{FieldSet, item_elements};
use crate::patch::schema::{ListType, Node};

/// Merges `config` into `live`: maps field by field, map and set lists item by item (keeping both lists'
/// orders, as the real server's two-pointer merge does), atomic lists and maps and scalars replaced.
pub(crate) fn merge(live: &Value, config: &Value, node: &Node) -> Value {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) if !node.is_atomic_map() => {
            let mut out = l.clone();
            for (k, cv) in c {
                let merged = match l.get(k) {
                    Some(lv) => merge(lv, cv, node.field(k)),
                    None => cv.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(c)) if *node.list_type() != ListType::Atomic => {
            Value::Array(merge_list(l, c, node))
        }
        _ => config.clone(),
    }
}

fn merge_list(lhs: &[Value], rhs: &[Value], node: &Node) -> Vec<Value> {
    let item = node.item();
    let (lpe, rpe) = (item_elements(lhs, node), item_elements(rhs, node));
    let l_index: HashMap<&str, usize> = lpe.iter().enumerate().map(|(i, pe)| (pe.as_str(), i)).collect();
    let r_index: HashMap<&str, usize> = rpe.iter().enumerate().map(|(i, pe)| (pe.as_str(), i)).collect();
    // Items of both lists, in the config's order: where a live item meets the config's next shared item.
    let shared: Vec<&str> = rpe
        .iter()
        .map(String::as_str)
        .filter(|pe| l_index.contains_key(pe))
        .collect();
    let mut next_shared = 0;
    let mut done: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(lhs.len() + rhs.len());
    let merged_item = |pe: &str| -> Value {
        let r = &rhs[r_index[pe]];
        match l_index.get(pe) {
            Some(&li) => merge(&lhs[li], r, item),
            None => r.clone(),
        }
    };
    let (mut li, mut ri) = (0, 0);
    while li < lhs.len() || ri < rhs.len() {
        if li < lhs.len() {
            let pe = lpe[li].as_str();
            if !r_index.contains_key(pe) {
                out.push(lhs[li].clone());
                li += 1;
                continue;
            }
            if done.contains(pe) || shared.get(next_shared).is_some_and(|s| *s != pe) {
                // Already emitted, or a shared item the config places later: it comes out with the config.
                li += 1;
                continue;
            }
        }
        if ri < rhs.len() {
            let pe = rpe[ri].as_str();
            if done.insert(pe) {
                out.push(merged_item(pe));
            }
            if shared.get(next_shared) == Some(&pe) {
                next_shared += 1;
            }
            ri += 1;
        } else {
            li += 1;
        }
    }
    out
}

/// Removes from `value` the paths of `remove`, except where one of `keep` (the managers' field sets) still
/// owns the path or something below it. Maps and lists left empty by the removal are removed too, as the
/// server's typed objects drop empty maps and lists. Only the paths of `remove` are walked.
pub(crate) fn prune(value: &mut Value, remove: &FieldSet, keep: &[&FieldSet], node: &Node) {
    let kept_below = |pe: &str| -> Vec<&FieldSet> { keep.iter().filter_map(|k| k.children.get(pe)).collect() };
    match value {
        Value::Object(m) => {
            for (pe, rm) in &remove.children {
                let Some(name) = pe.strip_prefix("f:") else { continue };
                if prune_child(m.get_mut(name), rm, &kept_below(pe), node.field(name)) {
                    m.remove(name);
                }
            }
        }
        Value::Array(list) => {
            let elements = item_elements(list, node);
            let item = node.item();
            let mut drop = vec![false; list.len()];
            for (i, pe) in elements.iter().enumerate() {
                if let Some(rm) = remove.children.get(pe) {
                    drop[i] = prune_child(list.get_mut(i), rm, &kept_below(pe), item);
                }
            }
            let mut i = 0;
            list.retain(|_| {
                i += 1;
                !drop[i - 1]
            });
        }
        _ => {}
    }
}

/// Prunes one child; true if the parent should drop it.
fn prune_child(child: Option<&mut Value>, rm: &FieldSet, kept: &[&FieldSet], node: &Node) -> bool {
    let Some(child) = child else { return false };
    if rm.member && kept.is_empty() {
        return true;
    }
    let was_empty = is_empty_container(child);
    prune(child, rm, kept, node);
    !was_empty && is_empty_container(child) && !kept.iter().any(|k| k.member)
}

fn is_empty_container(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// The applied configuration without `null`s: a null says nothing the apply could own or merge.
pub(crate) fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// Checks that every map-list item of `config` carries its keys and that no key repeats, as the server
/// requires of an applied configuration.
pub(crate) fn check_keys(config: &Value, node: &Node, path: &mut String) -> Result<(), String> {
    match config {
        Value::Object(m) => {
            for (k, v) in m {
                let len = path.len();
                path.push('.');
                path.push_str(k);
                check_keys(v, node.field(k), path)?;
                path.truncate(len);
            }
        }
        Value::Array(list) => {
            if let ListType::Map(keys) = node.list_type() {
                let mut seen = std::collections::HashSet::new();
                for (i, item) in list.iter().enumerate() {
                    let Some(pe) = super::fieldset::key_element(item, keys) else {
                        let missing = keys.iter().find(|k| item.get(k.as_str()).is_none_or(Value::is_null));
                        return Err(format!(
                            "{path}: element {i}: associative list with keys has an element that omits key field \
                             {:?} (and doesn't have default value)",
                            missing.map(String::as_str).unwrap_or_default()
                        ));
                    };
                    if !seen.insert(pe.clone()) {
                        return Err(format!("{path}: duplicate entries for key {}", &pe[2..]));
                    }
                }
            }
            if matches!(node.list_type(), ListType::Set) {
                let mut seen = std::collections::HashSet::new();
                if let Some(dup) = list.iter().find(|v| !seen.insert(v.to_string())) {
                    return Err(format!("{path}: duplicate entries for key [value={dup}]"));
                }
            }
            for item in list {
                check_keys(item, node.item(), path)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// An empty object, for merging into when there is no live object.
pub(crate) fn empty_object() -> Value {
    Value::Object(Map::new())
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::patch::MergeSchema;

    #[test]
    fn merge_keeps_both_orders() {
        let s = MergeSchema::builtin("", "Pod");
        let live = json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b"}, {"name": "c"}]}});
        let config =
            json!({"spec": {"containers": [{"name": "c", "image": "3"}, {"name": "d"}, {"name": "a", "image": "2"}]}});
        let got = merge(&live, &config, s.root());
        let names: Vec<&str> = got["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["b", "c", "d", "a"]);
        assert_eq!(got["spec"]["containers"][3]["image"], "2");
    }

    #[test]
    fn merge_sets_and_atomics() {
        let s = MergeSchema::builtin("", "Node");
        let live = json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"taints": [{"key": "x"}, {"key": "y"}]}});
        let config = json!({"metadata": {"finalizers": ["c", "a"]}, "spec": {"taints": [{"key": "z"}]}});
        let got = merge(&live, &config, s.root());
        assert_eq!(got["metadata"]["finalizers"], json!(["c", "a", "b"]));
        assert_eq!(got["spec"]["taints"], json!([{"key": "z"}]));
    }

    #[test]
    fn prune_respects_other_owners() {
        let s = MergeSchema::builtin("", "Pod");
        let mut obj = json!({"metadata": {"labels": {"a": "1", "b": "2"}},
                             "spec": {"containers": [{"name": "c", "image": "x", "env": [{"name": "E"}]}, {"name": "d"}]}});
        let remove = FieldSet::from_fields_v1(&json!({"f:metadata": {"f:labels": {"f:a": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:image": {}}, "k:{\"name\":\"d\"}": {".": {}}}}}))
        .unwrap();
        let keep = FieldSet::from_fields_v1(&json!({"f:metadata": {"f:labels": {"f:b": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {"f:env": {}}}}}))
        .unwrap();
        prune(&mut obj, &remove, &[&keep], s.root());
        assert_eq!(
            obj,
            json!({"metadata": {"labels": {"b": "2"}}, "spec": {"containers": [{"name": "c", "env": [{"name": "E"}]}]}})
        );
        let mut obj = json!({"metadata": {"labels": {"a": "1"}}});
        let remove = FieldSet::from_fields_v1(&json!({"f:metadata": {"f:labels": {"f:a": {}}}})).unwrap();
        prune(&mut obj, &remove, &[], s.root());
        assert_eq!(obj, json!({}));
    }

    #[test]
    fn keys_are_checked() {
        let s = MergeSchema::builtin("", "Pod");
        let check = |v: Value| check_keys(&v, s.root(), &mut String::new());
        assert!(check(json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}})).is_ok());
        let err = check(json!({"spec": {"containers": [{"image": "a"}]}})).unwrap_err();
        assert!(
            err.starts_with(".spec.containers: element 0: associative list"),
            "{err}"
        );
        let err = check(json!({"spec": {"containers": [{"name": "a"}, {"name": "a"}]}}));
        assert_eq!(
            err.unwrap_err(),
            ".spec.containers: duplicate entries for key {\"name\":\"a\"}"
        );
    }
}
