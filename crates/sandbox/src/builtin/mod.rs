//! What built-in kinds add to the generic write path, dispatched by resource.
//!
//! `Cluster` calls these hooks at fixed points of every write: `prepare_create` before admission,
//! `validate_update` on updates, `after_write`/`after_remove` once the store has the change. What the real
//! control plane does later (cleanup, grace periods, PDB status) runs in `controllers`.

pub(crate) mod controllers;
pub(crate) mod crd;
pub(crate) mod jobs;
pub(crate) mod pdb;
pub(crate) mod pods;

use serde_json::{Value, json};

use super::error::ApiError;
use super::registry::ResourceType;
use super::verbs::Cluster;

pub(crate) fn prepare_create(cluster: &Cluster, rt: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
    match rt.key().as_str() {
        "pods" => pods::prepare_create(obj),
        "namespaces" => {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
            Ok(())
        }
        "apiextensions.k8s.io/customresourcedefinitions" => crd::prepare(cluster, obj, None),
        "policy/poddisruptionbudgets" => {
            obj["status"] = pdb::compute_status(cluster, obj);
            Ok(())
        }
        _ => Ok(()),
    }
}

pub(crate) fn validate_update(
    cluster: &Cluster,
    rt: &ResourceType,
    old: &Value,
    new: &mut Value,
) -> Result<(), ApiError> {
    match rt.key().as_str() {
        "pods" => pods::validate_update(old, new),
        "namespaces" => {
            // Spec finalizers only change through /finalize; the phase is the server's.
            new["spec"] = old["spec"].clone();
            if super::meta::is_deleting(old) {
                new["status"]["phase"] = json!("Terminating");
            }
            Ok(())
        }
        "apiextensions.k8s.io/customresourcedefinitions" => crd::prepare(cluster, new, Some(old)),
        _ => Ok(()),
    }
}

pub(crate) fn after_write(cluster: &Cluster, rt: &ResourceType, obj: &Value) {
    if rt.key() == "apiextensions.k8s.io/customresourcedefinitions" && !super::meta::is_deleting(obj) {
        crd::install(cluster, obj);
    }
}

pub(crate) fn after_remove(cluster: &Cluster, rt: &ResourceType, obj: &Value) {
    if rt.key() == "apiextensions.k8s.io/customresourcedefinitions" {
        crd::uninstall(cluster, obj);
    }
}

/// The grace period a delete of this object gets, None for immediate removal.
pub(crate) fn grace_period(rt: &ResourceType, obj: &Value, asked: Option<i64>) -> Option<i64> {
    if rt.key() != "pods" {
        return None;
    }
    pods::grace_period(obj, asked)
}

/// Kinds whose delete always goes through a terminating phase handled by a controller.
pub(crate) fn deletes_slowly(rt: &ResourceType) -> bool {
    rt.key() == "namespaces"
}

pub(crate) fn on_delete_requested(rt: &ResourceType, obj: &mut Value) {
    if rt.key() == "namespaces" {
        obj["status"]["phase"] = json!("Terminating");
    }
}

/// Whether a write of `obj` takes it out of the store instead: it is being deleted, no finalizer holds it,
/// and its kind lets it go at once (a pod once its grace period is over; never a namespace, whose controller
/// removes it).
pub(crate) fn removable(rt: &ResourceType, obj: &Value) -> bool {
    let may_go_now = match rt.key().as_str() {
        "pods" => pods::grace_over(obj),
        "namespaces" => false,
        _ => true,
    };
    super::meta::is_deleting(obj) && super::meta::finalizers(obj).is_empty() && may_go_now
}
