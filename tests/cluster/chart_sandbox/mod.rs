//! The rendered chart (`deploy/sublet.yaml`) against the sandbox in RBAC mode and, where the test loops over
//! `clusters()`, the real kube-apiserver with its admission chain, with the real kubectl:
//!
//! ```text
//!   apply.rs      kubectl apply --server-side (default and every option), can-i for sublet and tenants
//!   admission.rs  the chart's ValidatingAdmissionPolicies against allowed and escaping requests (both clusters)
//!   rbac.rs       the controller (in process, and the binary with the Deployment's arguments) as the
//!                 chart's ServiceAccount, through its whole life cycle; unneeded writes refused
//!   hostile.rs    a hostile tenant's attacks on the controller running as that ServiceAccount: budgets, long
//!                 grace periods, deleted leases, forged node marks, weak Pod Security (both clusters)
//!   release.rs    helm against the sandbox refuses a second release next to a running one
//!   sandboxing.rs tenant Services, images and tokens, lease limits and keys, events and the NetworkPolicy, on
//!                 the sandbox and the real kube-apiserver
//! ```

mod admission;
mod apply;
mod helm;
mod hostile;
mod rbac;
mod release;
mod sandboxing;

use serde_json::{Value, json};

pub use crate::support::chart::deploy_yaml;

/// A pod with extra spec fields, as JSON for kubectl. It pulls its image and mounts no token, as the policy
/// wants tenant pods to.
pub fn pod(name: &str, spec: Value) -> String {
    let mut s = json!({"automountServiceAccountToken": false,
        "containers": [{"name": "c", "image": "trainer:1", "imagePullPolicy": "Always"}]});
    s.as_object_mut().unwrap().extend(spec.as_object().unwrap().clone());
    serde_json::to_string(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": s})).unwrap()
}
