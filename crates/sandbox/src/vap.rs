//! ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1) evaluation, as the API server's admission
//! plugin runs it, without webhooks.
//!
//! ```text
//!   request ──each policy: matchConstraints (rules, namespaceSelector, objectSelector)
//!           ──each binding of it with validationActions Deny or Warn: matchResources
//!           ──CEL: matchConditions (all true, else skipped) → variables (in order) → validations
//!           ──first failing validation ──▶ Warn: a warning; Deny: the 403/422 Status the server writes
//! ```
//!
//! Expressions are parsed once per thread and cached. The CEL engine lacks the optional field syntax
//! (`a.?b`), `cel.bind` and `sortBy`: an expression using them fails to compile and counts as an error.
//!
//! CEL sees `object`, `oldObject` (null where absent), `request`, `params` (null: paramKind is not
//! supported), `namespaceObject` and `variables`; `authorizer` is not bound. Evaluation errors follow the
//! policy's failurePolicy (Fail by default).

mod matching;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use kube::core::cel::KubeCelExt;
use kube::core::cel::cel::objects::{Key, Map};
use kube::core::cel::cel::{Context, Program, Value as Cel};
use serde_json::{Value, json};

use super::rbac::UserInfo;

/// The request as admission sees it.
#[derive(Clone, Debug)]
pub struct AdmissionRequest {
    /// CREATE, UPDATE, DELETE or CONNECT.
    pub operation: String,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    /// The new object (None on DELETE).
    pub object: Option<Value>,
    /// The stored object (None on CREATE).
    pub old_object: Option<Value>,
    pub user: UserInfo,
}

/// Evaluates every policy bound to this request; Err holds the whole `metav1.Status` of a denial, whose
/// message is worded as the real server words it:
/// `pods "x" is forbidden: ValidatingAdmissionPolicy 'NAME' with binding 'BINDING' denied request: MESSAGE`,
/// with reason `Invalid` (422) unless the failing
/// validation names another (`Forbidden` 403, `Unauthorized` 401, `RequestEntityTooLarge` 413).
pub fn admit_status(
    policies: &[Value],
    bindings: &[Value],
    namespaces: &[Value],
    request: &AdmissionRequest,
) -> Result<(), Value> {
    admit_with_warnings(policies, bindings, namespaces, request).0
}

/// As [`admit_status`], also returning the warnings of bindings with validationAction `Warn`, worded as the
/// server sends them in `Warning` headers (kubectl prints `Warning: ...`):
/// `Validation failed for ValidatingAdmissionPolicy 'NAME' with binding 'BINDING': MESSAGE`.
pub(crate) fn admit_with_warnings(
    policies: &[Value],
    bindings: &[Value],
    namespaces: &[Value],
    request: &AdmissionRequest,
) -> (Result<(), Value>, Vec<String>) {
    let mut warnings = Vec::new();
    let namespace_object = request.namespace.as_deref().and_then(|ns| {
        namespaces
            .iter()
            .find(|n| n.pointer("/metadata/name").and_then(Value::as_str) == Some(ns))
    });
    let name_of = |v: &Value| {
        v.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    for policy in policies {
        let spec = &policy["spec"];
        if !matching::matches(&spec["matchConstraints"], request, namespace_object, false) {
            continue;
        }
        let policy_name = name_of(policy);
        for binding in bindings {
            let bspec = &binding["spec"];
            if bspec["policyName"].as_str() != Some(policy_name.as_str()) {
                continue;
            }
            let action = |a: &str| {
                bspec["validationActions"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|x| x == a))
            };
            let (deny, warn) = (action("Deny"), action("Warn"));
            if !(deny || warn)
                || (bspec["matchResources"].is_object()
                    && !matching::matches(&bspec["matchResources"], request, namespace_object, true))
            {
                continue;
            }
            let Some((message, reason)) = ROOT.with(|ctx| evaluate(ctx, spec, request, namespace_object)) else {
                continue;
            };
            let binding_name = name_of(binding);
            if warn {
                warnings.push(format!(
                    "Validation failed for ValidatingAdmissionPolicy '{policy_name}' with binding '{binding_name}': {message}"
                ));
            }
            if deny {
                let message = format!(
                    "ValidatingAdmissionPolicy '{policy_name}' with binding '{binding_name}' denied request: {message}"
                );
                return (
                    Err(denial(request, &message, reason.as_deref().unwrap_or("Invalid"))),
                    warnings,
                );
            }
        }
    }
    (Ok(()), warnings)
}

thread_local! {
    static ROOT: Context<'static> = {
        let mut ctx = Context::default();
        ctx.register_all();
        ctx
    };
}

/// Runs a policy's CEL against the request: Some((message, reason)) for the first failing validation.
fn evaluate(
    root: &Context<'_>,
    spec: &Value,
    req: &AdmissionRequest,
    namespace_object: Option<&Value>,
) -> Option<(String, Option<String>)> {
    let fail_closed = spec["failurePolicy"].as_str() != Some("Ignore");
    let mut ctx = root.new_inner_scope();
    ctx.add_variable_from_value("object", req.object.as_ref().map_or(Cel::Null, to_cel));
    ctx.add_variable_from_value("oldObject", req.old_object.as_ref().map_or(Cel::Null, to_cel));
    ctx.add_variable_from_value("request", to_cel(&request_value(req)));
    ctx.add_variable_from_value("params", Cel::Null);
    ctx.add_variable_from_value("namespaceObject", namespace_object.map_or(Cel::Null, to_cel));
    let list = |key: &str| spec[key].as_array().map(Vec::as_slice).unwrap_or(&[]);

    match match_conditions_hold(&ctx, list("matchConditions"), fail_closed) {
        Ok(true) => {}
        Ok(false) => return None,
        Err(message) => return Some((message, None)),
    }
    bind_variables(&mut ctx, list("variables"));
    first_failed_validation(&ctx, list("validations"), fail_closed)
}

/// The string at `key` of a policy entry, empty when absent.
fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_owned()
}

/// Whether every matchCondition holds; Err is the message for one that errors when the policy fails closed
/// (failing open, an error counts as not matching).
fn match_conditions_hold(ctx: &Context<'_>, conditions: &[Value], fail_closed: bool) -> Result<bool, String> {
    for cond in conditions {
        let expression = text(cond, "expression");
        match run(ctx, &expression) {
            Ok(Cel::Bool(true)) => {}
            Ok(Cel::Bool(false)) => return Ok(false),
            Ok(_) | Err(_) if !fail_closed => return Ok(false),
            Ok(other) => {
                return Err(format!(
                    "matchCondition '{}' did not evaluate to a bool: {other:?}",
                    text(cond, "name")
                ));
            }
            Err(e) => {
                return Err(format!(
                    "failed to evaluate matchCondition '{}': {e}",
                    text(cond, "name")
                ));
            }
        }
    }
    Ok(true)
}

/// Binds `variables.<name>` for each of the policy's variables. Each variable sees the ones before it; one
/// that fails is left unbound, so a validation using it errors.
fn bind_variables(ctx: &mut Context<'_>, vars: &[Value]) {
    let mut variables: HashMap<Key, Cel> = HashMap::new();
    ctx.add_variable_from_value(
        "variables",
        Cel::Map(Map {
            map: Arc::new(variables.clone()),
        }),
    );
    for var in vars {
        if let Ok(value) = run(ctx, &text(var, "expression")) {
            variables.insert(Key::String(Arc::new(text(var, "name"))), value);
            ctx.add_variable_from_value(
                "variables",
                Cel::Map(Map {
                    map: Arc::new(variables.clone()),
                }),
            );
        }
    }
}

/// The (message, reason) of the first validation that is false, or that errors when the policy fails closed.
fn first_failed_validation(
    ctx: &Context<'_>,
    validations: &[Value],
    fail_closed: bool,
) -> Option<(String, Option<String>)> {
    for validation in validations {
        let expression = text(validation, "expression");
        let reason = validation["reason"].as_str().map(str::to_owned);
        match run(ctx, &expression) {
            Ok(Cel::Bool(true)) => {}
            Ok(Cel::Bool(false)) => return Some((denial_message(ctx, validation, &expression), reason)),
            _ if !fail_closed => {}
            Ok(other) => {
                return Some((
                    format!("expression '{expression}' resulted in error: not a bool: {other:?}"),
                    None,
                ));
            }
            Err(e) => return Some((format!("expression '{expression}' resulted in error: {e}"), None)),
        }
    }
    None
}

/// What a failed validation tells the client: its messageExpression's value if that is a usable one-line
/// string, else its message, else the expression itself.
fn denial_message(ctx: &Context<'_>, validation: &Value, expression: &str) -> String {
    validation["messageExpression"]
        .as_str()
        .and_then(|m| match run(ctx, m) {
            Ok(Cel::String(s)) if !s.trim().is_empty() && !s.contains(['\n', '\r']) => Some(s.to_string()),
            _ => None,
        })
        .or_else(|| {
            validation["message"]
                .as_str()
                .filter(|m| !m.trim().is_empty())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("failed expression: {expression}"))
}

thread_local! {
    /// Policies arrive as JSON on every request; their expressions are parsed once per thread.
    static PROGRAMS: RefCell<HashMap<String, Program>> = RefCell::new(HashMap::new());
}

/// Policies come and go; past this many distinct expressions the cache starts over.
const MAX_CACHED_PROGRAMS: usize = 4096;

fn run(ctx: &Context<'_>, expression: &str) -> Result<Cel, String> {
    PROGRAMS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if !cache.contains_key(expression) {
            let program = Program::compile(expression).map_err(|e| format!("compilation failed: {e}"))?;
            if cache.len() >= MAX_CACHED_PROGRAMS {
                cache.clear();
            }
            cache.insert(expression.to_owned(), program);
        }
        let program = cache
            .get(expression)
            .ok_or_else(|| "expression cache lost an entry".to_owned())?;
        program.execute(ctx).map_err(|e| e.to_string())
    })
}

/// The `request` variable. As kube-apiserver builds it from an AdmissionRequest, empty strings are left out
/// (`omitempty`): an expression must guard `request.subResource`, `request.name` and `request.namespace`
/// with `has()` where they can be empty, or it fails to evaluate.
fn request_value(req: &AdmissionRequest) -> Value {
    let gvk = json!({"group": req.group, "version": req.version, "kind": req.kind});
    let gvr = json!({"group": req.group, "version": req.version, "resource": req.resource});
    let mut r = json!({
        "uid": "",
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "operation": req.operation,
        "userInfo": {"username": req.user.name, "groups": req.user.groups},
        "dryRun": false,
    });
    let namespace = req.namespace.as_deref().unwrap_or("");
    for (key, value) in [
        ("subResource", req.subresource.as_str()),
        ("requestSubResource", req.subresource.as_str()),
        ("name", req.name.as_str()),
        ("namespace", namespace),
    ] {
        if !value.is_empty() {
            r[key] = json!(value);
        }
    }
    r
}

/// JSON to CEL with raw keys: built-in objects have no field names that need escaping, and their maps
/// (labels, annotations, nodeSelector) are read by key.
fn to_cel(v: &Value) -> Cel {
    match v {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => n
            .as_i64()
            .map(Cel::Int)
            .or_else(|| n.as_u64().map(Cel::UInt))
            .unwrap_or_else(|| Cel::Float(n.as_f64().unwrap_or(f64::NAN))),
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(a) => Cel::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(m) => Cel::Map(Map {
            map: Arc::new(
                m.iter()
                    .map(|(k, x)| (Key::String(Arc::new(k.clone())), to_cel(x)))
                    .collect(),
            ),
        }),
    }
}

/// The Status the admission plugin writes: `admission.NewForbidden`'s message with the policy's reason.
fn denial(req: &AdmissionRequest, message: &str, reason: &str) -> Value {
    let name = if req.name.is_empty() {
        req.object
            .as_ref()
            .and_then(|o| o.pointer("/metadata/name"))
            .and_then(Value::as_str)
            .unwrap_or_default()
    } else {
        &req.name
    };
    let qualified = if req.group.is_empty() {
        req.resource.clone()
    } else {
        format!("{}.{}", req.resource, req.group)
    };
    let full = if name.is_empty() {
        format!("{qualified} is forbidden: {message}")
    } else {
        format!("{qualified} {name:?} is forbidden: {message}")
    };
    let code = match reason {
        "Unauthorized" => 401,
        "Forbidden" => 403,
        "RequestEntityTooLarge" => 413,
        _ => 422,
    };
    let mut details = serde_json::Map::new();
    if !name.is_empty() {
        details.insert("name".into(), json!(name));
    }
    if !req.group.is_empty() {
        details.insert("group".into(), json!(req.group));
    }
    details.insert("kind".into(), json!(req.resource));
    details.insert("causes".into(), json!([{"message": message}]));
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": full,
        "reason": reason,
        "details": details,
        "code": code,
    })
}

#[cfg(test)]
mod tests;
