//! Defaulting and pruning, as the server applies them to a custom resource on every request and read.

use serde_json::Value;

use super::node::{Node, Ty};

/// Fields every object keeps at its root and in embedded resources; the server handles `metadata` itself.
const OBJECT_META_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

pub(super) fn default_and_prune(node: &Node, value: &mut Value, root: bool) {
    match value {
        Value::Object(map) if node.ty == Some(Ty::Object) || node.ty.is_none() => {
            let keeps_meta = root || node.embedded;
            // A null in a field that is not nullable is dropped, so that its default (if any) applies.
            map.retain(|k, v| !v.is_null() || node.child(k).is_none_or(|c| c.nullable));
            if !node.preserve_unknown && node.additional.is_none() {
                map.retain(|k, _| {
                    node.properties.contains_key(k) || (keeps_meta && OBJECT_META_FIELDS.contains(&&**k))
                });
            }
            for (name, child) in &node.properties {
                if !map.contains_key(name)
                    && let Some(default) = &child.default
                {
                    map.insert(name.clone(), default.clone());
                }
            }
            for (k, v) in map.iter_mut() {
                // ObjectMeta is pruned and defaulted by the server's own rules, even where the schema
                // declares metadata properties (which may only restrict name and generateName).
                if keeps_meta && k == "metadata" {
                    continue;
                }
                if let Some(child) = node.child(k) {
                    default_and_prune(child, v, false);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = &node.items {
                for v in items {
                    default_and_prune(item, v, false);
                }
            }
        }
        _ => {}
    }
}

/// Collects the paths of fields the schema does not know (`spec.windows[0].bogus`).
pub(super) fn unknown_fields(node: &Node, value: &Value, path: &str, root: bool, found: &mut Vec<String>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    match value {
        Value::Object(map) if node.ty == Some(Ty::Object) || node.ty.is_none() => {
            let keeps_meta = root || node.embedded;
            for (k, v) in map {
                if keeps_meta
                    && (k == "metadata"
                        || (OBJECT_META_FIELDS.contains(&k.as_str()) && !node.properties.contains_key(k)))
                {
                    continue;
                }
                match node.properties.get(k) {
                    Some(child) => unknown_fields(child, v, &join(k), false, found),
                    None => match &node.additional {
                        Some(child) => unknown_fields(child, v, &join(k), false, found),
                        None if node.preserve_unknown => {}
                        None => found.push(join(k)),
                    },
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = &node.items {
                for (i, v) in items.iter().enumerate() {
                    unknown_fields(item, v, &format!("{path}[{i}]"), false, found);
                }
            }
        }
        _ => {}
    }
}
