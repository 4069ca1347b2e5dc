//! The request pipeline's own steps through the pure modules: a patch or server-side apply turns the live
//! object and the request into the new object, managedFields records who wrote what (`patch`), and reads
//! that ask for a Table get one (`table`).

use serde_json::{Value, json};

use super::error::{ApiError, status_body};
use super::meta;
use super::patch::managed::{self, ApplyError};
use super::patch::{self, MergeSchema, PatchError};
use super::registry::ResourceType;
use super::table::{self, IncludeObject};
use super::verbs::PatchKind;

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
