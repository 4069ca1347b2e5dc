//! The one place the server calls the pure modules (`patch`, `schema`, `rbac`, `table`, `vap`), so that the
//! write path reads as steps and the modules' interfaces are adapted in one file.

use serde_json::Value;

use super::cluster::{Caller, Cluster, PatchKind};
use super::error::ApiError;
use super::registry::ResourceType;
use super::server::Server;

/// Checks a CRD version's schema compiles (structural, CEL rules valid).
pub fn check_schema(_schema: &Value) -> Result<(), String> {
    Ok(())
}

/// Compiles and caches the schemas of a CRD's versions.
pub fn compile_schemas(_rt: &ResourceType) {}

/// Defaults, prunes and validates a custom resource.
pub fn admit_custom(_rt: &ResourceType, _obj: &mut Value, _old: Option<&Value>, _strict: bool) -> Result<(), ApiError> {
    Ok(())
}

pub fn record_update(
    _rt: &ResourceType,
    _old: Option<&Value>,
    new: &Value,
    _manager: &str,
    _sub: Option<&str>,
) -> Value {
    new.clone()
}

pub fn apply(
    _rt: &ResourceType,
    _live: Option<&Value>,
    _config: &Value,
    _manager: &str,
    _force: bool,
    _sub: Option<&str>,
) -> Result<Value, ApiError> {
    Err(ApiError::UnsupportedMediaType(
        "server-side apply is not available yet".into(),
    ))
}

pub fn patch(_rt: &ResourceType, _kind: PatchKind, _old: &Value, _patch: &Value) -> Result<Value, ApiError> {
    Err(ApiError::UnsupportedMediaType("patches are not available yet".into()))
}

#[allow(clippy::too_many_arguments)]
pub fn admit_policies(
    _cluster: &Cluster,
    _rt: &ResourceType,
    _op: &str,
    _ns: &str,
    _name: &str,
    _obj: Option<&Value>,
    _old: Option<&Value>,
    _caller: &Caller,
) -> Result<(), ApiError> {
    Ok(())
}

/// What `?includeObject=` asks a Table to carry per row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

/// The Table of objects of one resource.
pub fn table(rt: &ResourceType, objects: &[&Value], _include: IncludeObject) -> Value {
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| serde_json::json!({"cells": [o["metadata"]["name"], o["metadata"]["creationTimestamp"]], "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}}))
        .collect();
    let _ = rt;
    serde_json::json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {}, "columnDefinitions": [
        {"name": "Name", "type": "string", "format": "name", "description": "", "priority": 0},
        {"name": "Created At", "type": "date", "format": "", "description": "", "priority": 0}], "rows": rows})
}

/// Request attributes for authorization.
#[allow(dead_code)]
#[derive(Clone, Debug, Default)]
pub struct Attrs {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub path: Option<String>,
}

/// Whether RBAC lets `caller` do what `attrs` say (always, without --rbac).
pub fn allowed(server: &Server, caller: &Caller, _attrs: &Attrs) -> bool {
    !server.auth.rbac || caller.groups.iter().any(|g| g == "system:masters")
}

/// 403 unless RBAC allows the request.
pub fn authorize(
    server: &Server,
    caller: &Caller,
    verb: &str,
    rt: &ResourceType,
    sub: &str,
    ns: Option<&str>,
    name: Option<&str>,
) -> Result<(), ApiError> {
    let attrs = Attrs {
        verb: verb.into(),
        group: rt.group.clone(),
        resource: rt.resource.clone(),
        subresource: sub.into(),
        namespace: ns.map(String::from),
        name: name.map(String::from),
        path: None,
    };
    if allowed(server, caller, &attrs) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!("{} is forbidden", rt.resource)))
    }
}
