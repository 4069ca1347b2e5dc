//! The one place the server calls the pure modules (`patch`, `schema`, `rbac`, `table`, `vap`), so that the
//! write path reads as steps and the modules' interfaces are adapted in one file.

use serde_json::{Value, json};

use super::cluster::{Caller, Cluster, PatchKind, WriteCtx};
use super::error::{ApiError, status_body};
use super::meta;
use super::patch::managed::{self, ApplyError};
use super::patch::{self, MergeSchema, PatchError};
use super::rbac::{self, Attributes, Decision, RbacObjects, UserInfo};
use super::registry::ResourceType;
use super::schema::{self, CrdSchema};
use super::server::Server;
use super::table;
use super::vap;

pub(crate) use super::table::IncludeObject;

/// Checks a CRD version's schema compiles (structural, CEL rules valid).
pub(crate) fn check_schema(schema: &Value) -> Result<(), String> {
    CrdSchema::new(schema).map(|_| ())
}

/// The version an object is written in (its apiVersion if served, else the storage version).
fn version_of(rt: &ResourceType, obj: &Value) -> String {
    obj["apiVersion"]
        .as_str()
        .and_then(|av| av.rsplit('/').next())
        .filter(|v| rt.versions.iter().any(|s| s == v))
        .unwrap_or(&rt.version)
        .to_string()
}

/// Defaults, prunes and validates a custom resource (no-op for built-in kinds).
pub(crate) fn admit_custom(
    rt: &ResourceType,
    obj: &mut Value,
    old: Option<&Value>,
    ctx: &WriteCtx,
) -> Result<(), ApiError> {
    let Some(custom) = &rt.custom else { return Ok(()) };
    let Some(compiled) = custom.compiled.get(&version_of(rt, obj)) else {
        return Ok(());
    };
    if ctx.warn {
        for field in compiled.unknown_fields(obj) {
            ctx.warn(format!("unknown field \"{field}\""));
        }
    }
    if ctx.strict {
        let unknown = compiled.unknown_fields(obj);
        if !unknown.is_empty() {
            let list: Vec<String> = unknown.iter().map(|p| format!("unknown field \"{p}\"")).collect();
            return Err(ApiError::BadRequest(format!(
                "strict decoding error: {}",
                list.join(", ")
            )));
        }
    }
    compiled.default_and_prune(obj);
    let causes = compiled.validate(obj, old);
    if causes.is_empty() {
        return Ok(());
    }
    let name = meta::str_at(obj, &["metadata", "name"]).unwrap_or("");
    Err(ApiError::Status(schema::invalid_status(
        &rt.group, &rt.kind, name, &causes,
    )))
}

fn merge_schema(rt: &ResourceType) -> MergeSchema {
    match &rt.custom {
        Some(custom) => custom.merge.get(&rt.version).cloned().unwrap_or_default(),
        None => MergeSchema::builtin(&rt.group, &rt.kind),
    }
}

/// Records a non-apply write in managedFields.
pub(crate) fn record_update(
    rt: &ResourceType,
    old: Option<&Value>,
    new: &Value,
    manager: &str,
    sub: Option<&str>,
) -> Value {
    managed::record_update(old, new, manager, sub, &merge_schema(rt), &meta::now())
}

/// Server-side apply.
pub(crate) fn apply(
    rt: &ResourceType,
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
    sub: Option<&str>,
) -> Result<Value, ApiError> {
    if let Some(kind) = config["kind"].as_str().filter(|k| *k != rt.kind) {
        return Err(ApiError::BadRequest(format!(
            "the kind in the applied configuration ({kind}) does not match the resource ({})",
            rt.kind
        )));
    }
    managed::apply(live, config, manager, force, sub, &merge_schema(rt), &meta::now()).map_err(|e| match &e {
        ApplyError::Conflicts(_) => {
            let mut status = e.status();
            let name = meta::str_at(live.unwrap_or(config), &["metadata", "name"]).unwrap_or("");
            status["details"]["name"] = json!(name);
            status["details"]["kind"] = json!(rt.resource);
            if !rt.group.is_empty() {
                status["details"]["group"] = json!(rt.group);
            }
            ApiError::Status(status)
        }
        ApplyError::Invalid(msg) => ApiError::BadRequest(msg.clone()),
    })
}

/// A JSON, merge or strategic merge patch applied to the live object.
pub(crate) fn patch(rt: &ResourceType, kind: PatchKind, old: &Value, patch_doc: &Value) -> Result<Value, ApiError> {
    let result = match kind {
        PatchKind::Json => patch::json_patch(old, patch_doc),
        PatchKind::Merge => patch::merge_patch(old, patch_doc),
        PatchKind::Strategic => patch::strategic_merge_patch(old, patch_doc, &merge_schema(rt)),
        PatchKind::Apply { .. } => return Err(ApiError::Internal("apply is not a patch".into())),
    };
    let patched = result.map_err(|e| match e {
        PatchError::Malformed(msg) => ApiError::BadRequest(msg),
        // The real server answers a failed JSON patch operation with a generic 422.
        PatchError::Failed(msg) => {
            tracing::debug!(%msg, "patch failed");
            ApiError::Status(status_body(
                422,
                "Invalid",
                "the server rejected our request due to an error in our request",
                None,
            ))
        }
    })?;
    if !patched.is_object() {
        return Err(ApiError::BadRequest("the patched object is not a JSON object".into()));
    }
    Ok(patched)
}

fn values(cluster: &Cluster, key: &str) -> Vec<Value> {
    cluster
        .store
        .list(key, None, None, None, |_| true)
        .items
        .iter()
        .map(|s| s.value())
        .collect()
}

/// ValidatingAdmissionPolicies, when any exist.
#[allow(clippy::too_many_arguments)]
pub(crate) fn admit_policies(
    cluster: &Cluster,
    rt: &ResourceType,
    op: &str,
    ns: &str,
    name: &str,
    obj: Option<&Value>,
    old: Option<&Value>,
    caller: &Caller,
) -> Result<(), ApiError> {
    let policies = values(cluster, "admissionregistration.k8s.io/validatingadmissionpolicies");
    if policies.is_empty() {
        return Ok(());
    }
    let bindings = values(
        cluster,
        "admissionregistration.k8s.io/validatingadmissionpolicybindings",
    );
    let namespaces = values(cluster, "namespaces");
    let request = vap::AdmissionRequest {
        operation: op.into(),
        group: rt.group.clone(),
        version: rt.version.clone(),
        resource: rt.resource.clone(),
        subresource: String::new(),
        kind: rt.kind.clone(),
        namespace: (!ns.is_empty()).then(|| ns.to_string()),
        name: name.into(),
        object: obj.cloned(),
        old_object: old.cloned(),
        user: user_info(caller),
    };
    vap::admit_status(&policies, &bindings, &namespaces, &request).map_err(ApiError::Status)
}

/// The Table of objects of one resource.
pub(crate) fn table(rt: &ResourceType, objects: &[&Value], include: IncludeObject) -> Value {
    let now = jiff::Timestamp::now();
    match &rt.custom {
        Some(custom) => {
            let columns = custom.printer_columns.get(&rt.version).cloned().unwrap_or_default();
            table::crd_table(&columns, objects, now, include)
        }
        None => table::builtin_table(&rt.group, &rt.kind, objects, now, include),
    }
}

pub(crate) fn user_info(caller: &Caller) -> UserInfo {
    UserInfo {
        name: caller.name.clone(),
        groups: caller.groups.clone(),
    }
}

fn rbac_objects(cluster: &Cluster) -> RbacObjects {
    RbacObjects::from_json(
        &values(cluster, "rbac.authorization.k8s.io/roles"),
        &values(cluster, "rbac.authorization.k8s.io/clusterroles"),
        &values(cluster, "rbac.authorization.k8s.io/rolebindings"),
        &values(cluster, "rbac.authorization.k8s.io/clusterrolebindings"),
    )
}

/// RBAC's escalation prevention on writes of roles and bindings (when RBAC is on).
pub(crate) fn check_escalation(
    cluster: &Cluster,
    rt: &ResourceType,
    obj: &Value,
    caller: &Caller,
) -> Result<(), ApiError> {
    if !cluster.settings.rbac || rt.group != "rbac.authorization.k8s.io" {
        return Ok(());
    }
    let ns = meta::str_at(obj, &["metadata", "namespace"]);
    let objects = rbac_objects(cluster);
    let user = user_info(caller);
    let result = match rt.resource.as_str() {
        "roles" | "clusterroles" => rbac::check_role_write(&objects, &user, obj, ns),
        "rolebindings" | "clusterrolebindings" => rbac::check_binding_write(&objects, &user, obj, ns),
        _ => Ok(()),
    };
    result.map_err(ApiError::Status)
}

/// Whether RBAC lets `caller` do what `attrs` say (always, without --rbac).
pub(crate) fn allowed(server: &Server, caller: &Caller, attrs: &Attributes) -> bool {
    !server.auth.rbac || rbac::authorize(&rbac_objects(&server.cluster), &user_info(caller), attrs) == Decision::Allow
}

/// 403 unless RBAC allows the resource request.
pub(crate) fn authorize(
    server: &Server,
    caller: &Caller,
    verb: &str,
    rt: &ResourceType,
    sub: &str,
    ns: Option<&str>,
    name: Option<&str>,
) -> Result<(), ApiError> {
    let attrs = Attributes {
        verb: verb.into(),
        api_group: rt.group.clone(),
        resource: rt.resource.clone(),
        subresource: sub.into(),
        namespace: ns.map(String::from),
        name: name.map(String::from),
        path: None,
    };
    check(server, caller, &attrs)
}

/// 403 unless RBAC allows a non-resource request (discovery, /version, /openapi).
pub(crate) fn authorize_path(server: &Server, caller: &Caller, method: &str, path: &str) -> Result<(), ApiError> {
    let attrs = Attributes {
        verb: method.to_lowercase(),
        path: Some(path.to_string()),
        ..Default::default()
    };
    check(server, caller, &attrs)
}

fn check(server: &Server, caller: &Caller, attrs: &Attributes) -> Result<(), ApiError> {
    if allowed(server, caller, attrs) {
        Ok(())
    } else {
        Err(ApiError::Status(rbac::forbidden_status(&user_info(caller), attrs)))
    }
}

/// 403 unless `caller` may impersonate `target` (verb `impersonate` on users, groups or serviceaccounts).
pub(crate) fn authorize_impersonation(server: &Server, caller: &Caller, target: &Caller) -> Result<(), ApiError> {
    let attrs = match target
        .name
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    {
        Some((ns, name)) => Attributes {
            verb: "impersonate".into(),
            resource: "serviceaccounts".into(),
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..Default::default()
        },
        None => Attributes {
            verb: "impersonate".into(),
            resource: "users".into(),
            name: Some(target.name.clone()),
            ..Default::default()
        },
    };
    check(server, caller, &attrs)
}
