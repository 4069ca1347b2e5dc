//! `GpuLease`: a tenant's request for GPUs from a pool, and what it was given.
// kube's `printcolumn(...)` attributes repeat `type_ = ...`, which clippy mistakes for duplicates.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::Condition;
pub use crate::policy::LeasePhase;

/// A tenant's lease of whole GPU nodes from a TenantPool, created in the tenant's namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sublet.dev",
    version = "v1alpha1",
    kind = "GpuLease",
    plural = "gpuleases",
    singular = "gpulease",
    shortname = "gl",
    category = "sublet",
    namespaced,
    doc = "A tenant's lease of whole GPU nodes from a TenantPool, created in the tenant's namespace.",
    status = "GpuLeaseStatus",
    cel,
    printcolumn(
        name = "Pool",
        type_ = "string",
        json_path = ".spec.pool",
        description = "The TenantPool the lease draws from"
    ),
    printcolumn(
        name = "GPUs",
        type_ = "integer",
        json_path = ".spec.gpus",
        description = "GPUs asked for"
    ),
    printcolumn(
        name = "Model",
        type_ = "string",
        json_path = ".spec.gpuModel",
        description = "The GPU model asked for (any when empty)"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Bound, Reclaiming, Released or Expired"
    ),
    printcolumn(
        name = "Nodes",
        type_ = "integer",
        json_path = ".status.nodeCount",
        description = "Nodes bound"
    ),
    printcolumn(
        name = "Deadline",
        type_ = "string",
        json_path = ".status.noticeDeadline",
        description = "When reclaimed nodes are taken back"
    ),
    printcolumn(
        name = "Cost",
        type_ = "string",
        json_path = ".status.costText",
        description = "Cost so far, rounded to cents, in the pool's currency"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.reason",
        description = "Why the lease is in its phase"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.gpuModel) == has(oldSelf.gpuModel) && (!has(self.gpuModel) || self.gpuModel == oldSelf.gpuModel)").message("gpuModel is immutable; create a new lease instead"))]
pub struct GpuLeaseSpec {
    /// The TenantPool to lease from.
    #[x_kube(validation = Rule::new("self.size() > 0").message("pool must not be empty"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("pool is immutable; create a new lease instead"))]
    pub pool: String,
    /// GPUs wanted; whole nodes are bound, as few as cover this count.
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100000").message("gpus must be between 1 and 100000"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("gpus is immutable; create a new lease instead"))]
    pub gpus: i32,
    /// The GPU model wanted, as in the pool's `gpuModelLabel`. Any model when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_model: Option<String>,
    /// The lease ends this many seconds after it is bound. Open-ended when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 60").message("durationSeconds must be at least 60"))]
    pub duration_seconds: Option<i64>,
    /// The most the tenant pays per GPU-hour; the lease waits while the pool's price is higher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0.0").message("maxPricePerGpuHour must not be negative"))]
    pub max_price_per_gpu_hour: Option<f64>,
}

/// What a lease was given and what it has cost.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GpuLeaseStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub phase: LeasePhase,
    /// Why the lease is in its phase, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The nodes bound to the lease.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub nodes: Vec<String>,
    /// How many nodes are bound.
    #[serde(default)]
    pub node_count: i32,
    /// GPUs on the bound nodes.
    #[serde(default)]
    pub gpus: i32,
    /// The node selector the tenant's pods must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// The tolerations the tenant's pods must carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub tolerations: Vec<Toleration>,
    /// When the first node was bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_at: Option<Time>,
    /// When nodes under notice are taken back; once given it never moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice_deadline: Option<Time>,
    /// For each node of the lease under notice, the deadline sublet gave. This is the record sublet trusts:
    /// a node's own `sublet.dev/reclaim-deadline` annotation is only its copy, put right when it differs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["node".into()]))]
    pub notices: Vec<NodeNotice>,
    /// sublet's record of every node the lease has held: when it was bound and when it went back. The ledger
    /// is accrued from these spans, never from what the lease holds at the moment of a write, so a status
    /// write that fails, or a controller that dies, bills the past as it was once a later pass writes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["node".into()]))]
    pub holds: Vec<NodeHold>,
    /// The price per GPU-hour the lease pays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_gpu_hour: Option<f64>,
    /// GPU-seconds used, up to `accountedUntil`.
    #[serde(default)]
    pub gpu_seconds: i64,
    /// Cost up to `accountedUntil`, in the pool's currency.
    #[serde(default)]
    pub cost: f64,
    /// `cost` rounded to cents, with the currency (`12.34 EUR`), for `kubectl get`; `cost` is the exact figure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_text: Option<String>,
    /// The ledger is complete up to this time; a restarted controller continues from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounted_until: Option<Time>,
    /// Bound, Reclaiming and the like.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// A notice given on one node of a lease.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeNotice {
    pub node: String,
    /// When the node goes back; it never moves.
    pub deadline: Time,
}

/// One node a lease held, from its binding to its return (whole seconds).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeHold {
    pub node: String,
    /// GPUs on the node while the lease held it.
    pub gpus: i32,
    /// When sublet bound the node to the lease.
    pub bound_at: Time,
    /// When the node went back; unset while the lease holds it. For a node lost from the cluster, when
    /// sublet first saw it gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub returned_at: Option<Time>,
    /// The node left the cluster (deleted, or registered again as a new node) while the lease held it: its
    /// share of the lease ended at `returnedAt`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lost: bool,
    /// Changes in the GPUs the tenant could use on the node while held, in time order: from `at` on it bills
    /// `gpus` (0 while the node is not Ready, fewer than `gpus` above when its allocatable GPUs shrank).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usable: Vec<UsableChange>,
}

/// From `at` on, the tenant could use `gpus` of a held node's GPUs, for the reason given.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsableChange {
    pub at: Time,
    pub gpus: i32,
    /// `NotReady`, `Shrunk` or `Healthy`.
    pub reason: String,
}

/// A cost for people: rounded to cents, with its currency (`status.costText`).
pub fn cost_text(cost: f64, currency: &str) -> String {
    // `+ 0.0` turns a -0 into 0, which would print "-0.00".
    format!("{:.2} {currency}", cost.max(0.0) + 0.0)
}

#[cfg(test)]
mod cost_tests {
    #[test]
    fn a_cost_reads_in_cents() {
        assert_eq!(super::cost_text(0.022222222222222223, "EUR"), "0.02 EUR");
        assert_eq!(super::cost_text(12.346, "USD"), "12.35 USD");
        assert_eq!(super::cost_text(-0.0, "USD"), "0.00 USD");
    }
}
