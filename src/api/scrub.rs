//! `TenantPool.spec.scrub`: the Job a node passes between holders (see [`crate::policy::scrub`]).

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// The scrub: a batch/v1 Job sublet runs on a node after a tenant held it (prune the image cache, wipe local
/// scratch, reset the GPUs), in sublet's own namespace, pinned to the node. The node goes to its next holder,
/// or back to internal use, only once the Job completes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScrubSpec {
    /// The Job's pod template (a core/v1 PodTemplateSpec). sublet sets `spec.nodeName`, adds tolerations for
    /// its own taints, sets `restartPolicy: Never` when unset, and labels the pod; the rest is the template's.
    #[schemars(schema_with = "pod_template")]
    pub template: serde_json::Value,
    /// A scrub not complete this many seconds after its Job was created has failed (also the Job's
    /// `activeDeadlineSeconds`). It adds to the longest time internal work waits for a node.
    #[serde(default = "default_timeout_seconds")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 86400").message("scrub.timeoutSeconds must be between 1 and 86400 (one day)"))]
    pub timeout_seconds: i64,
    /// Pod failures the Job retries before it fails (the Job's `backoffLimit`).
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 10").message("scrub.backoffLimit must be between 0 and 10"))]
    pub backoff_limit: i32,
}

fn default_timeout_seconds() -> i64 {
    600
}

/// A pod template, kept as written (the API server's own Job validation checks it when sublet creates the
/// Job); it must have a `spec` with at least one container.
fn pod_template(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "required": ["spec"],
        "properties": {
            "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "spec": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
                "required": ["containers"],
                "properties": {
                    "containers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                    }
                }
            }
        }
    })
}
