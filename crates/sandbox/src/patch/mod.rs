//! The four ways a write changes a stored object, as the Kubernetes API server does them. Pure: objects are
//! `serde_json::Value` in their wire form; no I/O.
//!
//! ```text
//!   PATCH application/json-patch+json        ──▶ json_patch(live, ops)             ──▶ new object
//!   PATCH application/merge-patch+json       ──▶ merge_patch(live, patch)          ──▶ new object
//!   PATCH application/strategic-merge-patch  ──▶ strategic_merge_patch(live, patch, schema)
//!   PATCH application/apply-patch+yaml       ──▶ managed::apply(live, config, manager, ...)  (owns fields)
//!   any write that is not an apply           ──▶ managed::record_update(old, new, manager, ...)
//!                                                   └─ both keep metadata.managedFields
//! ```
//!
//! [`MergeSchema`] says how lists and maps merge: from a table for built-in kinds, from a CRD's schema
//! extensions for custom resources. The real server refuses strategic merge patches of custom resources
//! (415 Unsupported Media Type); that check is the caller's.
//!
//! JSON, merge and strategic merge patches are checked against `kubectl patch --local`, which runs the same
//! Go libraries as the API server (tests/offline/patch_kubectl.rs).

mod json_patch;
pub(crate) mod managed;
mod merge_patch;
mod schema;
mod strategic;

pub use json_patch::json_patch;
pub use merge_patch::merge_patch;
pub use schema::MergeSchema;
pub use strategic::strategic_merge_patch;

/// Why a patch could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The patch document is malformed (HTTP 400 BadRequest in the caller; or 422 for semantic errors as the
    /// real server).
    #[error("{0}")]
    Malformed(String),
    /// A JSON patch `test` failed or a path does not exist (the real server answers 422 Invalid / 500).
    #[error("{0}")]
    Failed(String),
}

/// JSON equality as RFC 6902 defines it for `test`: numbers compare by value (`1` equals `1.0`).
pub(crate) fn json_equal(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
            (Some(x), Some(y), _, _) => x == y,
            (_, _, Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equal(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
#[cfg(test)]
mod props;
