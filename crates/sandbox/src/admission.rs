//! Admission: what a write must pass before it is stored, after authorization. A custom resource is
//! defaulted, pruned and validated against its CRD's schema and CEL rules (`schema`), then every bound
//! ValidatingAdmissionPolicy is evaluated (`vap`).

use serde_json::Value;

use super::authorization::user_info;
use super::error::ApiError;
use super::meta;
use super::registry::ResourceType;
use super::schema::{self, CrdSchema};
use super::vap;
use super::verbs::{Caller, Cluster, WriteCtx};

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

/// kube-apiserver's NodeRestriction admission, the part about Node updates: a kubelet (user
/// `system:node:NAME` in group `system:nodes`) may change only its own Node, and never its taints.
pub(crate) fn node_restriction(
    rt: &ResourceType,
    name: &str,
    old: &Value,
    new: &Value,
    caller: &Caller,
) -> Result<(), ApiError> {
    if !rt.group.is_empty() || rt.resource != "nodes" || !caller.groups.iter().any(|g| g == "system:nodes") {
        return Ok(());
    }
    let Some(node) = caller.name.strip_prefix("system:node:") else {
        return Ok(());
    };
    let forbidden = |why: String| ApiError::Forbidden(format!("nodes \"{name}\" is forbidden: {why}"));
    if node != name {
        return Err(forbidden(format!(
            "node \"{node}\" is not allowed to modify node \"{name}\""
        )));
    }
    let taints = |o: &Value| o["spec"]["taints"].as_array().cloned().unwrap_or_default();
    if taints(old) != taints(new) {
        return Err(forbidden(format!("node \"{node}\" is not allowed to modify taints")));
    }
    Ok(())
}

/// ValidatingAdmissionPolicies, when any exist; `sub` is the subresource written (a policy's rule for
/// `pods` does not see `pods/status`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn admit_policies(
    cluster: &Cluster,
    rt: &ResourceType,
    op: &str,
    ns: &str,
    name: &str,
    sub: Option<&str>,
    obj: Option<&Value>,
    old: Option<&Value>,
    caller: &Caller,
) -> Result<(), ApiError> {
    let policies = cluster.values("admissionregistration.k8s.io/validatingadmissionpolicies");
    if policies.is_empty() {
        return Ok(());
    }
    let bindings = cluster.values("admissionregistration.k8s.io/validatingadmissionpolicybindings");
    let namespaces = cluster.values("namespaces");
    let request = vap::AdmissionRequest {
        operation: op.into(),
        group: rt.group.clone(),
        version: rt.version.clone(),
        resource: rt.resource.clone(),
        subresource: sub.unwrap_or_default().to_string(),
        kind: rt.kind.clone(),
        namespace: (!ns.is_empty()).then(|| ns.to_string()),
        name: name.into(),
        object: obj.cloned(),
        old_object: old.cloned(),
        user: user_info(caller),
    };
    vap::admit_status(&policies, &bindings, &namespaces, &request).map_err(ApiError::Status)
}
