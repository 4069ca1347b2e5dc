//! A TenantPool file checked as the API server checks it, from the CRD's own schema: types, enums, sizes and
//! unknown fields (as `kubectl apply` refuses them, with strict field validation), then every
//! `x-kubernetes-validations` CEL rule with its message. `sublet simulate --pool` refuses what a cluster would
//! refuse, with the same rules the cluster runs, so a file tuned offline applies unchanged.
//!
//! ```text
//!   YAML ──▶ JSON ──apiVersion/kind──▶ schema walk (type, enum, maxItems, maxLength, unknown fields)
//!                                  ──▶ kube-cel: the CRD's CEL rules, schema defaults applied first
//! ```

use kube::CustomResourceExt as _;
use serde_json::Value;

use super::{GROUP, TenantPool, VERSION};

/// Every reason the API server would refuse `obj` as a TenantPool, as `field: message` lines; empty when it
/// would take it.
pub fn tenant_pool_errors(obj: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let api_version = format!("{GROUP}/{VERSION}");
    if obj.get("apiVersion").and_then(Value::as_str) != Some(api_version.as_str()) {
        errors.push(format!(
            "apiVersion: must be {api_version}, not {}",
            obj.get("apiVersion").unwrap_or(&Value::Null)
        ));
    }
    if obj.get("kind").and_then(Value::as_str) != Some("TenantPool") {
        errors.push(format!(
            "kind: must be TenantPool, not {}",
            obj.get("kind").unwrap_or(&Value::Null)
        ));
    }
    if !errors.is_empty() {
        return errors;
    }
    let crd = TenantPool::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .map(|s| serde_json::to_value(s).expect("a schema serializes"))
        .expect("the derived CRD has a schema");
    for key in ["spec", "status"] {
        if let (Some(v), Some(s)) = (obj.get(key), schema["properties"].get(key)) {
            walk(s, v, key, &mut errors);
        }
    }
    if let Some(unknown) = obj
        .as_object()
        .into_iter()
        .flat_map(|m| m.keys())
        .find(|k| !["apiVersion", "kind", "metadata", "spec", "status"].contains(&k.as_str()))
    {
        errors.push(format!("{unknown}: unknown field"));
    }
    // CEL rules run only on values of the right shape, as on the server.
    if errors.is_empty()
        && let Err(failed) = kube::core::cel::Validator::new().validate(&schema, obj, None)
    {
        errors.extend(failed.iter().map(ToString::to_string));
    }
    errors
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The value checks of the schema at one node, and its children's.
fn walk(schema: &Value, v: &Value, path: &str, errors: &mut Vec<String>) {
    if v.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) {
            errors.push(format!("{path}: Invalid value: null: must not be null"));
        }
        return;
    }
    if !type_fits(schema, v, path, errors) {
        return;
    }
    check_value(schema, v, path, errors);
    match v {
        Value::Array(items) => walk_array(schema, items, path, errors),
        Value::Object(fields) => walk_object(schema, fields, path, errors),
        _ => {}
    }
}

/// Whether `v` is of the schema's `type` (if it names one); a whole number is a number too, and the server
/// takes `2.0` where an integer is expected.
fn type_fits(schema: &Value, v: &Value, path: &str, errors: &mut Vec<String>) -> bool {
    let Some(ty) = schema.get("type").and_then(Value::as_str) else {
        return true;
    };
    let got = type_name(v);
    let fits = got == ty
        || (ty == "number" && got == "integer")
        || (ty == "integer" && v.as_f64().is_some_and(|f| f.fract() == 0.0));
    if !fits {
        errors.push(format!("{path}: Invalid value: {v}: must be of type {ty}, not {got}"));
    }
    fits
}

/// The checks on the value itself: enum, minimum and maximum, maxLength.
fn check_value(schema: &Value, v: &Value, path: &str, errors: &mut Vec<String>) {
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let allowed: Vec<String> = allowed.iter().map(ToString::to_string).collect();
        errors.push(format!(
            "{path}: Unsupported value: {v}: supported values: {}",
            allowed.join(", ")
        ));
    }
    for (key, bound) in [("minimum", 1.0), ("maximum", -1.0)] {
        if let (Some(limit), Some(x)) = (schema.get(key).and_then(Value::as_f64), v.as_f64())
            && (x - limit) * bound < 0.0
        {
            let word = if bound > 0.0 { "greater" } else { "less" };
            errors.push(format!(
                "{path}: Invalid value: {v}: must be {word} than or equal to {limit}"
            ));
        }
    }
    if let (Some(max), Some(s)) = (schema.get("maxLength").and_then(Value::as_u64), v.as_str())
        && s.chars().count() as u64 > max
    {
        errors.push(format!("{path}: Too long: may not be more than {max} bytes"));
    }
}

/// maxItems, no duplicates in a set list, then each item against `items`.
fn walk_array(schema: &Value, items: &[Value], path: &str, errors: &mut Vec<String>) {
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && items.len() as u64 > max
    {
        errors.push(format!(
            "{path}: Too many: {}: must have at most {max} items",
            items.len()
        ));
    }
    if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set") {
        for (i, item) in items.iter().enumerate() {
            if items[..i].contains(item) {
                errors.push(format!("{path}[{i}]: Duplicate value: {item}"));
            }
        }
    }
    if let Some(item_schema) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            walk(item_schema, item, &format!("{path}[{i}]"), errors);
        }
    }
}

/// Required fields, then each field against its property or `additionalProperties`; a field neither knows is
/// unknown, unless the object preserves unknown fields (then nothing under it is checked).
fn walk_object(schema: &Value, fields: &serde_json::Map<String, Value>, path: &str, errors: &mut Vec<String>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    for name in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
        if let Some(name) = name.as_str()
            && !fields.contains_key(name)
        {
            errors.push(format!("{path}.{name}: Required value"));
        }
    }
    for (name, value) in fields {
        let child = format!("{path}.{name}");
        match (properties.and_then(|p| p.get(name)), additional) {
            (Some(s), _) => walk(s, value, &child, errors),
            (None, Some(s)) if s.is_object() => walk(s, value, &child, errors),
            (None, Some(Value::Bool(true))) => {}
            (None, _) => errors.push(format!("{child}: unknown field")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(spec: Value) -> Value {
        serde_json::json!({"apiVersion": "sublet.dev/v1alpha1", "kind": "TenantPool", "metadata": {"name": "p"}, "spec": spec})
    }

    #[test]
    fn an_empty_spec_and_the_example_pass() {
        assert_eq!(tenant_pool_errors(&pool(serde_json::json!({}))), Vec::<String>::new());
        let example: Value = serde_yaml_ng::from_str(include_str!("../../examples/tenantpool.yaml")).unwrap();
        assert_eq!(tenant_pool_errors(&example), Vec::<String>::new());
    }

    #[test]
    fn the_crds_cel_rules_refuse_with_their_messages() {
        let errors = tenant_pool_errors(&pool(serde_json::json!({
            "idle": {"maxUtilizationPercent": 150},
            "reclaim": {"noticeSeconds": -1},
            "windows": [{"days": ["Monday"], "start": "18:00", "end": "08:00"}],
        })));
        for message in [
            "maxUtilizationPercent must be between 0 and 100",
            "noticeSeconds must be between 0 and 86400 (one day)",
            "a window's end must be after its start",
        ] {
            assert!(
                errors.iter().any(|e| e.contains(message)),
                "{message} not in {errors:?}"
            );
        }
        assert!(
            errors.iter().any(|e| e.starts_with("spec.idle.maxUtilizationPercent")),
            "{errors:?}"
        );
    }

    #[test]
    fn types_enums_sizes_and_unknown_fields_are_refused() {
        let errors = tenant_pool_errors(&pool(serde_json::json!({
            "mode": "Lend",
            "idle": {"forSeconds": "ten"},
            "idel": {},
            "windows": [{"days": ["Monday", "Monday"], "start": "08:00", "end": "18:00"}],
        })));
        for part in [
            "spec.mode: Unsupported value: \"Lend\"",
            "spec.idle.forSeconds: Invalid value: \"ten\": must be of type integer",
            "spec.idel: unknown field",
            "spec.windows[0].days[1]: Duplicate value",
        ] {
            assert!(errors.iter().any(|e| e.contains(part)), "{part} not in {errors:?}");
        }
        let wrong = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap"});
        assert!(tenant_pool_errors(&wrong)[0].starts_with("apiVersion: must be sublet.dev/v1alpha1"));
    }
}
