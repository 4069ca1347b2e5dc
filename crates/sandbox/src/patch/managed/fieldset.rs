//! Sets of field paths in the API server's `FieldsV1` encoding, and the walks that make them from objects.
//!
//! ```text
//!   object ──to_set──▶ FieldSet          {"f:metadata":{"f:labels":{"f:a":{}}}}
//!   (old, new) ──diff──▶ Diff{added, removed, modified}
//!   FieldSet ⇄ fieldsV1 JSON             (union / difference / intersection in between)
//! ```
//!
//! A path element is kept in its encoded form: `f:NAME` a field, `k:{"key":value}` a map-list item by its
//! keys (JSON, keys sorted), `v:VALUE` a set-list item, `i:N` an item of a list without keys. A node is a
//! *member* when the path itself is in the set (a leaf, or a list item: `"."` in the encoding); a non-empty
//! map is never a member itself, only its fields are, as in the real server.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::patch::schema::{ListType, Node};

/// A set of paths below one value: a tree keyed by encoded path elements.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct FieldSet {
    pub(crate) member: bool,
    pub(crate) children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    pub(crate) fn leaf() -> FieldSet {
        FieldSet {
            member: true,
            children: BTreeMap::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    pub(crate) fn union_with(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (pe, set) in &other.children {
            self.children.entry(pe.clone()).or_default().union_with(set);
        }
    }

    pub(crate) fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.union_with(other);
        out
    }

    /// Removes `other`'s paths in place, in time proportional to `other`.
    pub(crate) fn remove_all(&mut self, other: &FieldSet) {
        if other.member {
            self.member = false;
        }
        for (pe, o) in &other.children {
            if let Some(c) = self.children.get_mut(pe) {
                c.remove_all(o);
                if c.is_empty() {
                    self.children.remove(pe);
                }
            }
        }
    }

    /// The common paths, walking the smaller side at each level.
    pub(crate) fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        let (small, large) = if self.children.len() <= other.children.len() {
            (self, other)
        } else {
            (other, self)
        };
        for (pe, set) in &small.children {
            if let Some(o) = large.children.get(pe) {
                let i = set.intersection(o);
                if !i.is_empty() {
                    out.children.insert(pe.clone(), i);
                }
            }
        }
        out
    }

    /// Every member path, in set order, as encoded elements.
    pub(crate) fn paths(&self) -> Vec<Vec<String>> {
        fn walk(set: &FieldSet, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
            if set.member {
                out.push(prefix.clone());
            }
            for (pe, child) in &set.children {
                prefix.push(pe.clone());
                walk(child, prefix, out);
                prefix.pop();
            }
        }
        let mut out = Vec::new();
        walk(self, &mut Vec::new(), &mut out);
        out
    }

    pub(crate) fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), Value::Object(Map::new()));
        }
        for (pe, child) in &self.children {
            m.insert(pe.clone(), child.to_fields_v1());
        }
        Value::Object(m)
    }

    /// Reads a `fieldsV1` object. `{}` under an element means the element is a leaf member.
    pub(crate) fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        fn element(pe: &str, v: &Value) -> Result<FieldSet, String> {
            let Value::Object(m) = v else {
                return Err(format!("fieldsV1 entry {pe} is not an object"));
            };
            let mut set = FieldSet {
                member: m.is_empty(),
                children: BTreeMap::new(),
            };
            for (k, child) in m {
                if k == "." {
                    set.member = true;
                } else if ["f:", "k:", "v:", "i:"].iter().any(|p| k.starts_with(p)) {
                    set.children.insert(k.clone(), element(k, child)?);
                } else {
                    return Err(format!("fieldsV1 has an unknown path element {k:?}"));
                }
            }
            Ok(set)
        }
        if !v.is_object() {
            return Err("fieldsV1 is not an object".into());
        }
        // The root is the object itself, never a member.
        Ok(FieldSet {
            member: false,
            ..element("fieldsV1", v)?
        })
    }
}

/// A path as the real server prints it in conflicts: `.metadata.labels.a`, `.spec.containers[name="c"].image`.
pub(crate) fn display_path(path: &[String]) -> String {
    let mut out = String::new();
    for pe in path {
        if let Some(name) = pe.strip_prefix("f:") {
            out.push('.');
            out.push_str(name);
        } else if let Some(keys) = pe.strip_prefix("k:") {
            let parsed: Option<Map<String, Value>> = serde_json::from_str(keys).ok();
            let parts: Vec<String> = parsed.iter().flatten().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(value) = pe.strip_prefix("v:") {
            out.push_str(&format!("[={value}]"));
        } else if let Some(i) = pe.strip_prefix("i:") {
            out.push_str(&format!("[{i}]"));
        }
    }
    out
}

/// The encoded path element of every item of `list`, which merges as `node` says. Items a map list cannot
/// key (not objects, or without key fields) fall back to their index.
pub(crate) fn item_elements(list: &[Value], node: &Node) -> Vec<String> {
    match node.list_type() {
        ListType::Atomic => (0..list.len()).map(|i| format!("i:{i}")).collect(),
        ListType::Set => list.iter().map(|v| format!("v:{v}")).collect(),
        ListType::Map(keys) => list
            .iter()
            .enumerate()
            .map(|(i, v)| key_element(v, keys).unwrap_or_else(|| format!("i:{i}")))
            .collect(),
    }
}

/// `k:{...}` for a map-list item, or None if it lacks a key field. A missing `protocol` is the API's default
/// `TCP`, so `{"containerPort": 80}` and `{"containerPort": 80, "protocol": "TCP"}` are one item.
pub(crate) fn key_element(item: &Value, keys: &[String]) -> Option<String> {
    let fields = item.as_object()?;
    let mut key = Map::new();
    for k in keys {
        let v = match fields.get(k) {
            Some(v) if !v.is_null() => v.clone(),
            _ if k == "protocol" => Value::String("TCP".into()),
            _ => return None,
        };
        key.insert(k.clone(), v);
    }
    Some(format!("k:{}", Value::Object(key)))
}

/// The paths `value` sets: leaves, list items (with their fields), empty maps and lists as leaves.
pub(crate) fn to_set(value: &Value, node: &Node) -> FieldSet {
    match value {
        Value::Object(m) if !m.is_empty() && !node.is_atomic_map() => FieldSet {
            member: false,
            children: m
                .iter()
                .map(|(k, v)| (format!("f:{k}"), to_set(v, node.field(k))))
                .collect(),
        },
        Value::Array(a) if !a.is_empty() && *node.list_type() != ListType::Atomic => {
            let item = node.item();
            let is_map = matches!(node.list_type(), ListType::Map(_));
            let children = item_elements(a, node)
                .into_iter()
                .zip(a)
                .map(|(pe, v)| {
                    let mut s = if is_map { to_set(v, item) } else { FieldSet::default() };
                    s.member = true;
                    (pe, s)
                })
                .collect();
            FieldSet {
                member: false,
                children,
            }
        }
        _ => FieldSet::leaf(),
    }
}

/// How `new` differs from `old`, as path sets. `modified` holds leaves present in both with another value.
#[derive(Debug, Default)]
pub(crate) struct Diff {
    pub(crate) added: FieldSet,
    pub(crate) removed: FieldSet,
    pub(crate) modified: FieldSet,
}

impl Diff {
    pub(crate) fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.modified.is_empty()
    }

    fn put(&mut self, pe: String, d: Diff) {
        for (mine, theirs) in [
            (&mut self.added, d.added),
            (&mut self.removed, d.removed),
            (&mut self.modified, d.modified),
        ] {
            if !theirs.is_empty() {
                mine.children.insert(pe.clone(), theirs);
            }
        }
    }
}

pub(crate) fn diff(old: &Value, new: &Value, node: &Node) -> Diff {
    if old == new {
        return Diff::default();
    }
    let mut d = Diff::default();
    match (old, new) {
        // An empty map or list is a leaf only when both sides are empty (then they are equal): a map that
        // empties or fills changes field by field, as in the real server's compare.
        (Value::Object(a), Value::Object(b)) if !node.is_atomic_map() => {
            for (k, va) in a {
                let pe = format!("f:{k}");
                match b.get(k) {
                    Some(vb) => d.put(pe, diff(va, vb, node.field(k))),
                    None => d.put(
                        pe,
                        Diff {
                            removed: to_set(va, node.field(k)),
                            ..Diff::default()
                        },
                    ),
                }
            }
            for (k, vb) in b {
                if !a.contains_key(k) {
                    d.put(
                        format!("f:{k}"),
                        Diff {
                            added: to_set(vb, node.field(k)),
                            ..Diff::default()
                        },
                    );
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if *node.list_type() != ListType::Atomic => {
            let (old_sets, new_sets) = (list_item_sets(a, node), list_item_sets(b, node));
            let item = node.item();
            for (pe, (va, sa)) in &old_sets {
                match new_sets.get(pe) {
                    Some((vb, _)) => d.put(pe.clone(), diff(va, vb, item)),
                    None => d.put(
                        pe.clone(),
                        Diff {
                            removed: sa.clone(),
                            ..Diff::default()
                        },
                    ),
                }
            }
            for (pe, (_, sb)) in new_sets {
                if !old_sets.contains_key(&pe) {
                    d.put(
                        pe,
                        Diff {
                            added: sb,
                            ..Diff::default()
                        },
                    );
                }
            }
        }
        _ => {
            let (sa, sb) = (to_set(old, node), to_set(new, node));
            if sa.member && sb.member && sa.children.is_empty() && sb.children.is_empty() {
                d.modified = FieldSet::leaf();
            } else {
                d.removed = sa;
                d.added = sb;
            }
        }
    }
    d
}

/// Each item of a non-atomic list by its path element, with its value and its own path set.
fn list_item_sets<'a>(list: &'a [Value], node: &Node) -> BTreeMap<String, (&'a Value, FieldSet)> {
    let item = node.item();
    let is_map = matches!(node.list_type(), ListType::Map(_));
    item_elements(list, node)
        .into_iter()
        .zip(list)
        .map(|(pe, v)| {
            let mut s = if is_map { to_set(v, item) } else { FieldSet::default() };
            s.member = true;
            (pe, (v, s))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::patch::MergeSchema;

    #[test]
    fn encoding_matches_the_real_server() {
        let pod = json!({"metadata": {"labels": {"app": "x"}},
                         "spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}],
                                                  "resources": {}}],
                                  "tolerations": [{"key": "k"}]}});
        let set = to_set(&pod, MergeSchema::builtin("", "Pod").root());
        let want = json!({
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:containers": {"k:{\"name\":\"c\"}": {
                    ".": {}, "f:image": {}, "f:name": {}, "f:resources": {},
                    "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}}},
                "f:tolerations": {}
            }
        });
        assert_eq!(set.to_fields_v1(), want);
        assert_eq!(FieldSet::from_fields_v1(&want).unwrap(), set);
        let finalizers = to_set(
            &json!({"metadata": {"finalizers": ["a/b"]}}),
            MergeSchema::builtin("", "Pod").root(),
        );
        assert_eq!(
            finalizers.to_fields_v1(),
            json!({"f:metadata": {"f:finalizers": {"v:\"a/b\"": {}}}})
        );
    }

    #[test]
    fn set_algebra() {
        let a = FieldSet::from_fields_v1(&json!({"f:a": {}, "f:b": {"f:c": {}, "f:d": {}}})).unwrap();
        let b = FieldSet::from_fields_v1(&json!({"f:b": {"f:c": {}}, "f:e": {}})).unwrap();
        assert_eq!(a.intersection(&b).to_fields_v1(), json!({"f:b": {"f:c": {}}}));
        let mut d = a.clone();
        d.remove_all(&b);
        assert_eq!(d.to_fields_v1(), json!({"f:a": {}, "f:b": {"f:d": {}}}));
        assert_eq!(
            a.union(&b).to_fields_v1(),
            json!({"f:a": {}, "f:b": {"f:c": {}, "f:d": {}}, "f:e": {}})
        );
        let paths: Vec<String> = a.paths().iter().map(|p| display_path(p)).collect();
        assert_eq!(paths, [".a", ".b.c", ".b.d"]);
        assert!(FieldSet::from_fields_v1(&json!({"x:a": {}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!([1])).is_err());
    }

    #[test]
    fn display_of_keys_and_values() {
        let path = [
            "f:spec".to_string(),
            "f:containers".into(),
            "k:{\"name\":\"c\"}".into(),
            "f:image".into(),
        ];
        assert_eq!(display_path(&path), ".spec.containers[name=\"c\"].image");
        assert_eq!(
            display_path(&["f:finalizers".to_string(), "v:\"x\"".into()]),
            ".finalizers[=\"x\"]"
        );
    }

    #[test]
    fn diff_finds_added_removed_modified() {
        let schema = MergeSchema::builtin("", "Node");
        let old = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"taints": [{"key": "x"}]},
                         "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let new = json!({"metadata": {"labels": {"a": "9", "c": "3"}}, "spec": {"taints": [{"key": "y"}]},
                         "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Disk", "status": "True"}]}});
        let d = diff(&old, &new, schema.root());
        assert_eq!(
            d.modified.to_fields_v1(),
            json!({"f:metadata": {"f:labels": {"f:a": {}}}, "f:spec": {"f:taints": {}},
                   "f:status": {"f:conditions": {"k:{\"type\":\"Ready\"}": {"f:status": {}}}}})
        );
        assert_eq!(
            d.added.to_fields_v1(),
            json!({"f:metadata": {"f:labels": {"f:c": {}}},
                   "f:status": {"f:conditions": {"k:{\"type\":\"Disk\"}": {".": {}, "f:status": {}, "f:type": {}}}}})
        );
        assert_eq!(
            d.removed.to_fields_v1(),
            json!({"f:metadata": {"f:labels": {"f:b": {}}}})
        );
        assert!(diff(&old, &old, schema.root()).is_empty());
    }
}
