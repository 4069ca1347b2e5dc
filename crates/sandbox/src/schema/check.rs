//! The structural (OpenAPI) checks, worded as the server's `kubeOpenAPIResultToFieldErrors` words them:
//! `spec.x: Invalid value: -1: spec.x in body should be greater than or equal to 0`.

use serde_json::Value;

use super::node::{ListType, Node, Ty};
use super::{FieldCause, go_float, go_value};

/// The JSON type name the OpenAPI validator reports for a value.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(ty: Ty, v: &Value) -> bool {
    match (ty, v) {
        (Ty::Object, Value::Object(_))
        | (Ty::Array, Value::Array(_))
        | (Ty::String, Value::String(_))
        | (Ty::Boolean, Value::Bool(_))
        | (Ty::Number, Value::Number(_)) => true,
        // A float with no fraction decodes as an integer on the server too.
        (Ty::Integer, Value::Number(n)) => !n.is_f64() || n.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => false,
    }
}

/// `field.TooMany` and `field.TooLongMaxLength` say "1 item", "2 items".
fn plural(n: u64, unit: &str) -> String {
    if n == 1 { unit.to_owned() } else { format!("{unit}s") }
}

fn invalid(causes: &mut Vec<FieldCause>, path: &str, value: &Value, detail: String) {
    causes.push(FieldCause::new(
        "FieldValueInvalid",
        path,
        format!("Invalid value: {}: {detail}", go_value(value)),
    ));
}

fn child_path(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// Checks `value` against `node` and its children. On update, `old` is the correlated old value: a value
/// equal to it is not checked again (validation ratcheting, as the server does since 1.30), so objects stored
/// under an older schema can still be updated elsewhere.
pub(super) fn check(
    node: &Node,
    value: &Value,
    old: Option<&Value>,
    path: &str,
    root: bool,
    causes: &mut Vec<FieldCause>,
) {
    if old == Some(value) {
        return;
    }
    if value.is_null() && node.nullable {
        return;
    }
    if !type_ok(node, value, path, causes) {
        return;
    }
    check_enum(node, value, path, causes);
    match value {
        Value::String(s) => check_string(node, s, value, path, causes),
        Value::Number(n) => check_number(node, n.as_f64().unwrap_or(f64::NAN), value, path, causes),
        Value::Array(items) => check_array(node, items, old, path, causes),
        Value::Object(map) => check_object(node, map, old, path, root, causes),
        Value::Bool(_) | Value::Null => {}
    }
}

/// An enum value must be one of the listed values.
fn check_enum(node: &Node, value: &Value, path: &str, causes: &mut Vec<FieldCause>) {
    if let Some(allowed) = &node.enum_values
        && !allowed.iter().any(|a| json_equal(a, value))
    {
        let list: Vec<String> = allowed
            .iter()
            .map(|a| match a {
                Value::String(s) => format!("{s:?}"),
                other => format!("{:?}", other.to_string()),
            })
            .collect();
        causes.push(FieldCause::new(
            "FieldValueNotSupported",
            path,
            format!(
                "Unsupported value: {}: supported values: {}",
                go_value(value),
                list.join(", ")
            ),
        ));
    }
}

/// An object's property count and required properties, then each property against its schema (an embedded
/// resource's or the root's `metadata` is the server's to check).
fn check_object(
    node: &Node,
    map: &serde_json::Map<String, Value>,
    old: Option<&Value>,
    path: &str,
    root: bool,
    causes: &mut Vec<FieldCause>,
) {
    let n = map.len() as u64;
    if let Some(max) = node.max_properties
        && n > max
    {
        causes.push(FieldCause::new(
            "FieldValueTooMany",
            path,
            format!("Too many: {n}: must have at most {max} {}", plural(max, "item")),
        ));
    }
    if let Some(min) = node.min_properties
        && n < min
    {
        invalid(
            causes,
            path,
            &Value::from(n),
            format!("{path} in body should have at least {min} properties"),
        );
    }
    for name in &node.required {
        if !map.contains_key(name) {
            causes.push(FieldCause::new(
                "FieldValueRequired",
                &child_path(path, name),
                "Required value".into(),
            ));
        }
    }
    for (k, v) in map {
        if (root || node.embedded) && k == "metadata" && !node.properties.contains_key(k) {
            continue;
        }
        if let Some(child) = node.child(k) {
            check(
                child,
                v,
                old.and_then(|o| o.get(k)),
                &child_path(path, k),
                false,
                causes,
            );
        }
    }
}

fn type_ok(node: &Node, value: &Value, path: &str, causes: &mut Vec<FieldCause>) -> bool {
    let expected = if node.int_or_string {
        if matches!(value, Value::String(_)) || type_matches(Ty::Integer, value) {
            return true;
        }
        "integer,string"
    } else {
        match node.ty {
            None => return true,
            Some(ty) if type_matches(ty, value) => return true,
            Some(ty) => ty.name(),
        }
    };
    let actual = json_type(value);
    causes.push(FieldCause::new(
        "FieldValueTypeInvalid",
        path,
        format!("Invalid value: {actual:?}: {path} in body must be of type {expected}: {actual:?}"),
    ));
    false
}

/// Whether `value` has the node's type (the CEL rules of a node run only then).
pub(super) fn conforms(node: &Node, value: &Value) -> bool {
    if node.int_or_string {
        return matches!(value, Value::String(_)) || type_matches(Ty::Integer, value);
    }
    node.ty.is_none_or(|ty| type_matches(ty, value))
}

fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn check_string(node: &Node, s: &str, value: &Value, path: &str, causes: &mut Vec<FieldCause>) {
    let chars = s.chars().count() as u64;
    if let Some(max) = node.max_length
        && chars > max
    {
        causes.push(FieldCause::new(
            "FieldValueTooLong",
            path,
            format!("Too long: may not be more than {max} {}", plural(max, "byte")),
        ));
    }
    if let Some(min) = node.min_length
        && chars < min
    {
        invalid(
            causes,
            path,
            value,
            format!("{path} in body should be at least {min} chars long"),
        );
    }
    if let Some((text, re)) = &node.pattern
        && !re.is_match(s)
    {
        invalid(causes, path, value, format!("{path} in body should match '{text}'"));
    }
    if let Some(format) = node.format.as_deref()
        && !format_ok(format, s)
    {
        invalid(
            causes,
            path,
            value,
            format!("{path} in body must be of type {format}: {s:?}"),
        );
    }
}

/// The string formats the server checks; other formats (and numeric ones such as int32) are not enforced
/// by the server's validator either.
fn format_ok(format: &str, s: &str) -> bool {
    match format {
        "date-time" => s.parse::<jiff::Timestamp>().is_ok(),
        "date" => s.parse::<jiff::civil::Date>().is_ok() && s.len() == 10,
        "int-or-string" => true,
        "byte" => {
            s.len().is_multiple_of(4)
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
        }
        "uuid" => {
            s.len() == 36
                && s.char_indices().all(|(i, c)| {
                    if [8, 13, 18, 23].contains(&i) {
                        c == '-'
                    } else {
                        c.is_ascii_hexdigit()
                    }
                })
        }
        _ => true,
    }
}

fn check_number(node: &Node, f: f64, value: &Value, path: &str, causes: &mut Vec<FieldCause>) {
    if let Some(min) = node.minimum {
        if node.exclusive_minimum && f <= min {
            invalid(
                causes,
                path,
                value,
                format!("{path} in body should be greater than {}", go_float(min)),
            );
        } else if f < min {
            invalid(
                causes,
                path,
                value,
                format!("{path} in body should be greater than or equal to {}", go_float(min)),
            );
        }
    }
    if let Some(max) = node.maximum {
        if node.exclusive_maximum && f >= max {
            invalid(
                causes,
                path,
                value,
                format!("{path} in body should be less than {}", go_float(max)),
            );
        } else if f > max {
            invalid(
                causes,
                path,
                value,
                format!("{path} in body should be less than or equal to {}", go_float(max)),
            );
        }
    }
}

fn check_array(node: &Node, items: &[Value], old: Option<&Value>, path: &str, causes: &mut Vec<FieldCause>) {
    let n = items.len() as u64;
    if let Some(max) = node.max_items
        && n > max
    {
        causes.push(FieldCause::new(
            "FieldValueTooMany",
            path,
            format!("Too many: {n}: must have at most {max} {}", plural(max, "item")),
        ));
    }
    if let Some(min) = node.min_items
        && n < min
    {
        invalid(
            causes,
            path,
            &Value::from(n),
            format!("{path} in body should have at least {min} items"),
        );
    }
    if let Some(item) = &node.items {
        for (i, v) in items.iter().enumerate() {
            check(
                item,
                v,
                correlate(node, i, v, old),
                &format!("{path}[{i}]"),
                false,
                causes,
            );
        }
    }
}

/// The `x-kubernetes-list-type` set and map invariants (no duplicate items or keys), over the whole object.
pub(super) fn list_errors(node: &Node, value: &Value, path: &str, root: bool, causes: &mut Vec<FieldCause>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if (root || node.embedded) && k == "metadata" && !node.properties.contains_key(k) {
                    continue;
                }
                if let Some(child) = node.child(k) {
                    list_errors(child, v, &child_path(path, k), false, causes);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = &node.items {
                for (i, v) in items.iter().enumerate() {
                    list_errors(item, v, &format!("{path}[{i}]"), false, causes);
                }
            }
            duplicates(node, items, path, causes);
        }
        _ => {}
    }
}

fn duplicates(node: &Node, items: &[Value], path: &str, causes: &mut Vec<FieldCause>) {
    match &node.list_type {
        ListType::Atomic => {}
        ListType::Set => {
            for (i, v) in items.iter().enumerate() {
                if items[..i].iter().any(|earlier| json_equal(earlier, v)) {
                    causes.push(FieldCause::new(
                        "FieldValueDuplicate",
                        &format!("{path}[{i}]"),
                        format!("Duplicate value: {}", go_value(v)),
                    ));
                }
            }
        }
        ListType::Map(keys) => {
            let key_of = |v: &Value| -> serde_json::Map<String, Value> {
                keys.iter()
                    .filter_map(|k| v.get(k).map(|x| (k.clone(), x.clone())))
                    .collect()
            };
            // One pass with the keys seen so far: a status can list hundreds of items.
            let mut seen = std::collections::HashSet::with_capacity(items.len());
            for (i, v) in items.iter().enumerate() {
                let key = key_of(v);
                if !seen.insert(Value::Object(key.clone()).to_string()) {
                    causes.push(FieldCause::new(
                        "FieldValueDuplicate",
                        &format!("{path}[{i}]"),
                        format!("Duplicate value: {}", go_value(&Value::Object(key))),
                    ));
                }
            }
        }
    }
}

/// Finds the item of `old` a list item correlates with, as the server does for ratcheting and transition
/// rules: a list-map item by its key fields, a set item by value; atomic list items do not correlate.
/// Item `i` is tried first: lists mostly keep their order, so a long list correlates in one pass.
pub(super) fn correlate<'a>(node: &Node, i: usize, item: &Value, old: Option<&'a Value>) -> Option<&'a Value> {
    let old = old?.as_array()?;
    let same: Box<dyn Fn(&Value) -> bool> = match &node.list_type {
        ListType::Map(keys) => Box::new(move |o: &Value| keys.iter().all(|k| o.get(k) == item.get(k))),
        ListType::Set => Box::new(move |o: &Value| o == item),
        ListType::Atomic => return None,
    };
    match old.get(i) {
        Some(o) if same(o) => Some(o),
        _ => old.iter().find(|o| same(o)),
    }
}
