//! The CEL rules (`x-kubernetes-validations`), evaluated node by node as the server does.
//!
//! Each node's value is converted to CEL with its schema: property names escaped (`__dash__`...), map keys
//! raw, `date-time` strings as timestamps, every number in a `type: number` field as a double (the server
//! decodes `2` there as a float, so `self >= 0.0` holds; the plain JSON conversion would give an int), and a
//! whole `2.0` in a `type: integer` field as an int.
//! `oldSelf` follows object properties, map values and list-map items with the same keys; transition rules
//! are skipped where there is no old value.

use std::collections::HashMap;
use std::sync::Arc;

use kube::core::cel::KubeCelExt;
use kube::core::cel::cel::objects::{Key, Map, OptionalValue};
use kube::core::cel::cel::{Context, Value as Cel};
use serde_json::Value;

use super::FieldCause;
use super::check::{conforms, correlate};
use super::node::{Node, Rule, Ty};

thread_local! {
    /// Registering the Kubernetes function library takes a while; every evaluation on a thread shares it.
    static ROOT: Context<'static> = {
        let mut ctx = Context::default();
        ctx.register_all();
        ctx
    };
}

pub(super) fn evaluate(root: &Node, obj: &Value, old: Option<&Value>) -> Vec<FieldCause> {
    let mut causes = Vec::new();
    if root.rules.is_empty() {
        ROOT.with(|ctx| walk(ctx, root, obj, old, "", true, &mut causes));
    } else {
        let (obj, old) = (root_view(obj), old.map(root_view));
        ROOT.with(|ctx| walk(ctx, root, &obj, old.as_ref(), "", true, &mut causes));
    }
    causes
}

/// Rules at the root see only `metadata.name` and `metadata.generateName`, as on the server.
fn root_view(obj: &Value) -> Value {
    let mut view = obj.clone();
    if let Some(meta) = view.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|k, _| k == "name" || k == "generateName");
    }
    view
}

fn walk(
    ctx: &Context<'_>,
    node: &Node,
    value: &Value,
    old: Option<&Value>,
    path: &str,
    root: bool,
    causes: &mut Vec<FieldCause>,
) {
    // Null (in a nullable field) and mistyped values get no rule evaluation; the type error is reported already.
    if value.is_null() || !conforms(node, value) {
        return;
    }
    let old = old.filter(|o| !o.is_null());
    if !node.rules.is_empty() {
        run_rules(ctx, node, value, old, path, causes);
    }
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if (root || node.embedded) && k == "metadata" && !node.properties.contains_key(k) {
                    continue;
                }
                let Some(child) = node.child(k) else { continue };
                let child_path = if node.properties.contains_key(k) {
                    if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    }
                } else {
                    format!("{path}[{k}]")
                };
                walk(ctx, child, v, old.and_then(|o| o.get(k)), &child_path, false, causes);
            }
        }
        Value::Array(items) => {
            if let Some(item) = &node.items {
                for (i, v) in items.iter().enumerate() {
                    walk(
                        ctx,
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
        _ => {}
    }
}

fn run_rules(
    ctx: &Context<'_>,
    node: &Node,
    value: &Value,
    old: Option<&Value>,
    path: &str,
    causes: &mut Vec<FieldCause>,
) {
    let old_cel = old.map(|o| to_cel(Some(node), o));
    let mut scope = ctx.new_inner_scope();
    scope.add_variable_from_value("self", to_cel(Some(node), value));
    scope.add_variable_from_value("oldSelf", old_cel.clone().unwrap_or(Cel::Null));
    // With optionalOldSelf, oldSelf is an optional, empty on create: such rules run on create too.
    let mut optional_scope = scope.new_inner_scope();
    let optional = old_cel.map_or_else(OptionalValue::none, OptionalValue::of);
    optional_scope.add_variable_from_value("oldSelf", Cel::Opaque(Arc::new(optional)));
    // Ratcheting: a value equal to the old one is not re-validated, except by rules that compare with it.
    let unchanged = old == Some(value);
    for rule in &node.rules {
        if (rule.transition && old.is_none() && !rule.optional_old_self) || (unchanged && !rule.transition) {
            continue;
        }
        let scope = if rule.optional_old_self {
            &optional_scope
        } else {
            &scope
        };
        let field = rule_path(path, rule.field_path.as_deref());
        match rule.program.execute(scope) {
            Ok(Cel::Bool(true)) => {}
            Ok(Cel::Bool(false)) => {
                let detail = message(rule, scope);
                causes.push(failure(rule.reason.as_deref(), &field, node.type_name(), &detail));
            }
            Ok(other) => causes.push(FieldCause::new(
                "FieldValueInvalid",
                &field,
                format!(
                    "Invalid value: {:?}: rule did not evaluate to a bool: {other:?}",
                    node.type_name()
                ),
            )),
            Err(e) => causes.push(FieldCause::new(
                "FieldValueInvalid",
                &field,
                format!("Invalid value: {:?}: rule evaluation error: {e}", node.type_name()),
            )),
        }
    }
}

/// The failure text: messageExpression when it yields a non-blank single-line string, else message, else the rule.
fn message(rule: &Rule, scope: &Context<'_>) -> String {
    if let Some(expr) = &rule.message_expression
        && let Ok(Cel::String(s)) = expr.execute(scope)
        && !s.trim().is_empty()
        && !s.contains(['\n', '\r'])
    {
        return s.to_string();
    }
    match &rule.message {
        Some(m) if !m.trim().is_empty() => m.clone(),
        _ => format!("failed rule: {}", rule.rule),
    }
}

fn failure(reason: Option<&str>, field: &str, type_name: &str, detail: &str) -> FieldCause {
    match reason {
        Some("FieldValueForbidden") => FieldCause::new("FieldValueForbidden", field, format!("Forbidden: {detail}")),
        Some("FieldValueRequired") => FieldCause::new("FieldValueRequired", field, format!("Required value: {detail}")),
        Some("FieldValueDuplicate") => {
            FieldCause::new("FieldValueDuplicate", field, format!("Duplicate value: {type_name:?}"))
        }
        _ => FieldCause::new(
            "FieldValueInvalid",
            field,
            format!("Invalid value: {type_name:?}: {detail}"),
        ),
    }
}

/// Joins a rule's `fieldPath` (`.a.b`, `.a['x.y']`) to the node's path, as `field.Path` prints it.
fn rule_path(path: &str, field_path: Option<&str>) -> String {
    let Some(fp) = field_path.filter(|f| !f.is_empty()) else {
        return path.to_owned();
    };
    let rel = fp.trim_start_matches('.').replace("['", "[").replace("']", "]");
    if path.is_empty() {
        rel
    } else if rel.starts_with('[') {
        format!("{path}{rel}")
    } else {
        format!("{path}.{rel}")
    }
}

const CEL_RESERVED: [&str; 21] = [
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// The name under which a property is visible to CEL.
fn escape(name: &str) -> String {
    if CEL_RESERVED.contains(&name) {
        return format!("__{name}__");
    }
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '_' => out.push_str("__"),
            '.' => out.push_str("__dot__"),
            '-' => out.push_str("__dash__"),
            '/' => out.push_str("__slash__"),
            c => out.push(c),
        }
    }
    out
}

/// Converts a JSON value to CEL, typed by its schema node (None below untyped, preserved fields).
pub(super) fn to_cel(node: Option<&Node>, v: &Value) -> Cel {
    match v {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => {
            if node.is_some_and(|n| n.ty == Some(Ty::Number)) {
                Cel::Float(n.as_f64().unwrap_or(f64::NAN))
            } else if let Some(i) = n.as_i64() {
                Cel::Int(i)
            } else if let Some(u) = n.as_u64() {
                Cel::UInt(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                // `2.0` passes the type check of an integer field; its rules see the integer 2.
                if node.is_some_and(|n| n.ty == Some(Ty::Integer)) && f.fract() == 0.0 && f.abs() < 9.0e18 {
                    Cel::Int(f as i64)
                } else {
                    Cel::Float(f)
                }
            }
        }
        Value::String(s) => {
            if node.and_then(|n| n.format.as_deref()) == Some("date-time")
                && let Ok(t) = chrono::DateTime::parse_from_rfc3339(s)
            {
                return Cel::Timestamp(t);
            }
            Cel::String(Arc::new(s.clone()))
        }
        Value::Array(items) => {
            let item = node.and_then(|n| n.items.as_deref());
            Cel::List(Arc::new(items.iter().map(|x| to_cel(item, x)).collect()))
        }
        Value::Object(map) => {
            let is_map = node.is_some_and(|n| n.additional.is_some());
            let mut out = HashMap::with_capacity(map.len());
            for (k, x) in map {
                let child = node.and_then(|n| n.child(k));
                let key = if is_map { k.clone() } else { escape(k) };
                out.insert(Key::String(Arc::new(key)), to_cel(child, x));
            }
            Cel::Map(Map { map: Arc::new(out) })
        }
    }
}
