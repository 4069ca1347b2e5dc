//! `TenantPool`: which nodes may be lent, when, to whom and at what price.
// kube's `printcolumn(...)` attributes repeat `type_ = ...`, which clippy mistakes for duplicates.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::Condition;
pub use crate::policy::NodeState;

/// A pool of GPU nodes that sublet may lend to tenants while internal work leaves them idle.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sublet.dev",
    version = "v1alpha1",
    kind = "TenantPool",
    plural = "tenantpools",
    singular = "tenantpool",
    shortname = "tp",
    category = "sublet",
    doc = "A pool of GPU nodes that sublet may lend to tenants while internal work leaves them idle.",
    status = "TenantPoolStatus",
    cel,
    printcolumn(
        name = "Mode",
        type_ = "string",
        json_path = ".spec.mode",
        description = "Observe or Enforce"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.ready",
        description = "Whether the last pass ran (False with an invalid spec)"
    ),
    printcolumn(
        name = "Lending",
        type_ = "string",
        json_path = ".status.lending",
        description = "Yes, or why not (ObserveMode, Blocked, InvalidSpec)"
    ),
    printcolumn(
        name = "Nodes",
        type_ = "integer",
        json_path = ".status.totals.nodes",
        description = "Member nodes"
    ),
    printcolumn(
        name = "GPUs",
        type_ = "integer",
        json_path = ".status.totals.gpus",
        description = "GPUs on member nodes"
    ),
    printcolumn(
        name = "Lendable",
        type_ = "integer",
        json_path = ".status.totals.lendableGpus",
        description = "Idle GPUs beyond demand and reserve it would lend now (in Observe mode too)"
    ),
    printcolumn(
        name = "Lent",
        type_ = "integer",
        json_path = ".status.totals.lentGpus",
        description = "GPUs lent and not yet leased"
    ),
    printcolumn(
        name = "Leased",
        type_ = "integer",
        json_path = ".status.totals.leasedGpus",
        description = "GPUs bound to leases"
    ),
    printcolumn(
        name = "Reclaiming",
        type_ = "integer",
        json_path = ".status.totals.reclaimingGpus",
        description = "GPUs under reclaim notice"
    ),
    printcolumn(
        name = "Scrubbing",
        type_ = "integer",
        json_path = ".status.totals.scrubbingNodes",
        description = "Nodes held out between holders until their scrub completes (-o wide)",
        priority = "1"
    ),
    printcolumn(
        name = "ScrubFailed",
        type_ = "integer",
        json_path = ".status.totals.scrubFailedNodes",
        description = "Scrubbing nodes whose scrub failed: out of use until their Job is deleted (-o wide)",
        priority = "1"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct TenantPoolSpec {
    /// Which nodes belong to the pool. An empty selector selects every node that offers `gpuResourceName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,

    /// The extended resource that counts a node's GPUs.
    #[serde(default = "default_gpu_resource")]
    #[x_kube(validation = Rule::new("self.size() > 0").message("gpuResourceName must not be empty"))]
    pub gpu_resource_name: String,

    /// GPU models that may be lent, as they appear in `gpuModelLabel`. Empty allows every model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub gpu_models: Vec<String>,

    /// The node label that names a node's GPU model.
    #[serde(default = "default_gpu_model_label")]
    #[x_kube(validation = Rule::new("self.size() > 0").message("gpuModelLabel must not be empty"))]
    pub gpu_model_label: String,

    /// A node label that groups nodes for internal demand (a team's quota, a node group). When unset,
    /// internal demand is matched to nodes by GPU model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_group_label: Option<String>,

    /// When a node counts as idle.
    #[serde(default)]
    pub idle: IdleRule,

    /// GPUs kept back from lending for internal bursts.
    #[serde(default)]
    pub reserve: Reserve,

    /// How nodes are taken back.
    #[serde(default)]
    pub reclaim: ReclaimPolicy,

    /// At most this share of the pool's GPUs is out of internal use at once.
    #[serde(default = "default_max_lent_percent")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 100").message("maxLentPercent must be between 0 and 100"))]
    pub max_lent_percent: i32,

    /// Weekly time ranges in which new nodes may be lent. Empty means always. Nodes already leased stay
    /// leased outside the windows; they are only not lent anew.
    /// At most 64, so that the API server's estimate of the CEL rules' cost stays within its budget.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    #[schemars(length(max = 64))]
    pub windows: Vec<LendingWindow>,

    /// The IANA time zone the windows are read in, for example `Europe/Berlin`.
    #[serde(default = "default_time_zone")]
    #[x_kube(validation = Rule::new("self.size() > 0").message("timeZone must not be empty (use UTC for none)"))]
    pub time_zone: String,

    /// What tenants pay.
    #[serde(default)]
    pub pricing: Pricing,

    /// Namespaces whose pods are tenant pods and whose GpuLeases this pool serves. When unset, namespaces
    /// labelled `sublet.dev/tenant: "true"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_namespace_selector: Option<LabelSelector>,

    /// Where internal demand is read from.
    #[serde(default)]
    pub demand: DemandSources,

    /// Where GPU utilization is read from. When unset, a node is idle when it runs no internal GPU pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization: Option<UtilizationSource>,

    /// `Observe` decides and reports but changes no node or pod; `Enforce` acts.
    #[serde(default)]
    pub mode: Mode,

    /// A scrub every node passes after a tenant held it, before it is lent again or goes back to internal
    /// use. Unset: nodes go straight back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrub: Option<super::scrub::ScrubSpec>,
}

/// Whether the pool acts on its decisions.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum Mode {
    /// Decide and report only.
    #[default]
    Observe,
    /// Lend, bind, notify, evict and return for real.
    Enforce,
}

/// When a node counts as idle.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IdleRule {
    /// A node is idle while the mean utilization of its GPUs stays at or under this percent.
    #[serde(default = "default_idle_percent")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 100").message("maxUtilizationPercent must be between 0 and 100"))]
    pub max_utilization_percent: i32,
    /// A node is idle once its utilization has stayed under `maxUtilizationPercent` for this many seconds.
    #[serde(default = "default_idle_seconds")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 604800").message("forSeconds must be between 0 and 604800 (one week)"))]
    pub for_seconds: i64,
}

impl Default for IdleRule {
    fn default() -> Self {
        Self {
            max_utilization_percent: default_idle_percent(),
            for_seconds: default_idle_seconds(),
        }
    }
}

/// GPUs kept back for internal bursts: the largest of the fixed count, the percent and the learned value.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Reserve {
    /// A fixed number of GPUs never lent.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0").message("reserve.gpus must not be negative"))]
    pub gpus: i32,
    /// A share of the pool's GPUs never lent.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 100").message("reserve.percent must be between 0 and 100"))]
    pub percent: i32,
    /// Reserves learned from the history of internal demand: the burst within one notice, optionally the
    /// hourly peak ahead, and reclaim ahead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learned: Option<LearnedReserve>,
}

/// Reserves sized from the history of internal demand, which sublet exports
/// (`sublet_internal_demand_gpus{pool,class}`) and reads back from Prometheus. Until the history covers what
/// they need, or while Prometheus cannot answer, every free GPU is kept (`ReserveLearned=False` says why).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LearnedReserve {
    /// Whether the learned reserve is used.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The quantile of past hourly peaks of internal demand (for the same hour of the week) to keep free;
    /// unset: no peak reserve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0 && self <= 1.0").message("quantile must be greater than 0 and at most 1"))]
    pub quantile: Option<f64>,
    /// The quantile of past rises of internal demand within one notice (at the same hour of the week) to keep
    /// free: the burst the notice cannot cover.
    #[serde(default = "default_burst_quantile")]
    #[x_kube(validation = Rule::new("self > 0.0 && self <= 1.0").message("burstQuantile must be greater than 0 and at most 1"))]
    pub burst_quantile: f64,
    /// Give notice ahead while a class's demand rises faster than what is free and coming back covers.
    #[serde(default = "default_true")]
    pub reclaim_ahead: bool,
    /// How many days of history to learn from.
    #[serde(default = "default_history_days")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 90").message("historyDays must be between 1 and 90"))]
    pub history_days: i32,
    /// The Prometheus server that scrapes sublet's metrics; defaults to the utilization source's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("prometheusUrl must be an http:// or https:// URL"))]
    pub prometheus_url: Option<String>,
}

impl Default for LearnedReserve {
    fn default() -> Self {
        Self {
            enabled: true,
            quantile: None,
            burst_quantile: default_burst_quantile(),
            reclaim_ahead: true,
            history_days: default_history_days(),
            prometheus_url: None,
        }
    }
}

/// How nodes are taken back from tenants.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReclaimPolicy {
    /// Seconds between the notice and the eviction of tenant pods.
    #[serde(default = "default_notice_seconds")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 86400").message("noticeSeconds must be between 0 and 86400 (one day)"))]
    pub notice_seconds: i64,
    /// At most this many nodes under notice at once. Unset means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("maxConcurrent must be at least 1"))]
    pub max_concurrent: Option<i32>,
    /// A lease younger than this is reclaimed only when no older lease covers the demand.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0").message("minLeaseSeconds must not be negative"))]
    pub min_lease_seconds: i64,
    /// Seconds a returned node serves internal work before it may be lent again.
    #[serde(default = "default_cooldown_seconds")]
    #[x_kube(validation = Rule::new("self >= 0").message("cooldownSeconds must not be negative"))]
    pub cooldown_seconds: i64,
    /// The most grace a tenant pod gets when it is evicted at the deadline, whatever its own
    /// `terminationGracePeriodSeconds` says; a pod still there once the deadline plus this has passed is
    /// deleted with this grace, PodDisruptionBudgets notwithstanding.
    #[serde(default = "default_max_grace_seconds")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 600").message("maxGraceSeconds must be between 0 and 600 (ten minutes)"))]
    pub max_grace_seconds: i64,
}

impl Default for ReclaimPolicy {
    fn default() -> Self {
        Self {
            notice_seconds: default_notice_seconds(),
            max_concurrent: None,
            min_lease_seconds: 0,
            cooldown_seconds: default_cooldown_seconds(),
            max_grace_seconds: default_max_grace_seconds(),
        }
    }
}

/// A day of the week.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, schemars::JsonSchema)]
pub enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

/// A weekly time range in the pool's time zone, for example Monday to Friday 20:00–24:00.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.end > self.start").message("a window's end must be after its start; split a window that crosses midnight in two"))]
pub struct LendingWindow {
    /// The days the range applies to. Empty means every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[schemars(length(max = 7))]
    pub days: Vec<Weekday>,
    /// Start, `HH:MM`, inclusive.
    #[x_kube(validation = Rule::new("self.matches('^([01][0-9]|2[0-3]):[0-5][0-9]$')").message("start must be a time of day as HH:MM, 00:00 to 23:59"))]
    #[schemars(length(max = 5))]
    pub start: String,
    /// End, `HH:MM`, exclusive; `24:00` is the end of the day.
    #[x_kube(validation = Rule::new("self.matches('^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$')").message("end must be a time of day as HH:MM, 00:01 to 24:00"))]
    #[schemars(length(max = 5))]
    pub end: String,
}

/// What tenants pay, per GPU-hour.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Pricing {
    /// Price per GPU-hour by GPU model; models not listed pay `defaultPerGpuHour`. At most 256 models, so that
    /// the API server's estimate of the CEL rule's cost stays within its budget.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("self.all(m, self[m] >= 0.0)").message("prices must not be negative"))]
    #[schemars(extend("maxProperties" = 256))]
    pub per_gpu_hour: BTreeMap<String, f64>,
    /// Price per GPU-hour for models without a price of their own.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0.0").message("defaultPerGpuHour must not be negative"))]
    pub default_per_gpu_hour: f64,
    /// No GPU-hour is sold for less; a lease whose cap is under the price or the floor waits.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0.0").message("floorPerGpuHour must not be negative"))]
    pub floor_per_gpu_hour: f64,
    /// The currency the prices are in, for display.
    #[serde(default = "default_currency")]
    pub currency: String,
}

impl Default for Pricing {
    fn default() -> Self {
        Self {
            per_gpu_hour: BTreeMap::new(),
            default_per_gpu_hour: 0.0,
            floor_per_gpu_hour: 0.0,
            currency: default_currency(),
        }
    }
}

/// Where internal demand comes from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DemandSources {
    /// Pending pods outside tenant namespaces that request the pool's GPU resource.
    #[serde(default)]
    pub pending_pods: PendingPodsDemand,
    /// Kueue Workloads waiting for quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kueue: Option<KueueDemand>,
    /// A PromQL query that returns pending GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promql: Option<PromqlDemand>,
}

/// Pending GPU pods as internal demand.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PendingPodsDemand {
    /// Whether pending pods count as demand.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for PendingPodsDemand {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// Kueue Workloads as internal demand.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KueueDemand {
    /// The ClusterQueues whose waiting Workloads count.
    #[x_kube(validation = Rule::new("self.size() > 0").message("kueue.clusterQueues must name at least one ClusterQueue"))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub cluster_queues: Vec<String>,
}

/// A PromQL query as internal demand.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PromqlDemand {
    /// The Prometheus server; defaults to the utilization source's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("prometheusUrl must be an http:// or https:// URL"))]
    pub prometheus_url: Option<String>,
    /// The query; each series is pending GPUs, keyed by the label named in `classLabel` when set.
    #[x_kube(validation = Rule::new("self.size() > 0").message("promql.query must not be empty"))]
    pub query: String,
    /// The series label that names the GPU model or node group the demand is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_label: Option<String>,
}

/// Where GPU utilization comes from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UtilizationSource {
    /// The Prometheus server that scrapes the DCGM exporter.
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("prometheusUrl must be an http:// or https:// URL"))]
    pub prometheus_url: String,
    /// The query, one series per node; by default the mean of `DCGM_FI_DEV_GPU_UTIL` per node over the idle window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The series label that names the node (the DCGM exporter writes `Hostname`).
    #[serde(default = "default_node_label")]
    pub node_label: String,
    /// Samples older than this count as missing.
    #[serde(default = "default_stale_seconds")]
    #[x_kube(validation = Rule::new("self >= 1").message("staleSeconds must be at least 1"))]
    pub stale_seconds: i64,
}

/// What the pool observed and did.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantPoolStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The pool's member nodes and their state: those out of internal use first, then the rest, each by
    /// name; at most 500 are listed (the totals count them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub nodes: Vec<MemberNode>,
    /// Counts over the member nodes.
    #[serde(default)]
    pub totals: PoolTotals,
    /// GPU-hours that were idle beyond the reserve and could have been lent, since the pool was created.
    #[serde(default)]
    pub harvestable_gpu_hours: f64,
    /// GPU-hours bound to leases, since the pool was created.
    #[serde(default)]
    pub lent_gpu_hours: f64,
    /// Revenue from leases, in the pool's currency, since the pool was created.
    #[serde(default)]
    pub revenue: f64,
    /// Until when the GPU-hour totals are accounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounted_until: Option<Time>,
    /// The GPUs kept from lending per class (GPU model or node group), and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["class".into()]))]
    pub reserve: Vec<ClassReserve>,
    /// Ready, SignalsFresh, ReserveLearned and the like.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The final account of the most recent leases that ended by deletion (at most 100, newest last): a
    /// deleted lease is kept by sublet's finalizer until its last node is back, and its record stays here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub ended_leases: Vec<EndedLease>,
    /// Totals over every lease that ended by deletion since the pool was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_totals: Option<EndedTotals>,
    /// The `Ready` condition's status, for `kubectl get` (`True`, `False`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// `Yes` while the pool lends, else why not: the `Lending` condition's reason (`ObserveMode`, `Blocked`),
    /// or `InvalidSpec`; for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lending: Option<String>,
    /// The last spec sublet could use. While the spec as written is invalid (a `timeZone` the schema cannot
    /// check), sublet lends and binds nothing new and carries out everything else under this one: notices,
    /// deadlines, returns, the pool's deletion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "opaque_object")]
    pub last_valid_spec: Option<Box<TenantPoolSpec>>,
}

/// An object the API server keeps as it is (sublet's own copy of a spec, validated when it was the spec).
fn opaque_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

impl TenantPoolStatus {
    /// Sets `ready` and `lending` from the conditions, so that `kubectl get` shows a broken or idle pool as such.
    pub fn summarize(&mut self) {
        let find = |t: &str| self.conditions.iter().find(|c| c.type_ == t);
        let ready = find("Ready");
        let invalid = ready.is_some_and(|c| c.reason == "InvalidSpec");
        self.ready = ready.map(|c| c.status.clone());
        self.lending = if invalid {
            Some("InvalidSpec".into())
        } else {
            find("Lending").map(|c| {
                if c.status == super::ConditionStatus::True.as_str() {
                    "Yes".to_string()
                } else {
                    c.reason.clone()
                }
            })
        };
    }
}

/// A deleted lease's final account.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndedLease {
    pub namespace: String,
    pub name: String,
    /// The lease object's UID (a lease of the same name created later is another lease).
    pub uid: String,
    /// GPU-seconds billed, from binding to the return of its last node.
    pub gpu_seconds: i64,
    /// What it cost, in the pool's currency.
    pub cost: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_at: Option<Time>,
    /// When sublet let the lease go (its last node back, its ledger final).
    pub ended_at: Time,
}

/// Sums over the leases that ended by deletion.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndedTotals {
    pub leases: i64,
    pub gpu_seconds: i64,
    pub cost: f64,
}

/// The reserve of one class.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClassReserve {
    /// The GPU model or node group (empty for nodes without the label).
    pub class: String,
    /// GPUs kept from lending.
    pub gpus: i32,
    /// How the reserve was sized.
    pub reason: String,
}

/// Counts over a pool's member nodes. GPU counts are by state and do not overlap.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolTotals {
    /// Member nodes.
    pub nodes: i32,
    /// GPUs on member nodes.
    pub gpus: i32,
    /// GPUs on internal nodes that could be lent now.
    pub lendable_gpus: i32,
    /// GPUs lent and not bound to a lease.
    pub lent_gpus: i32,
    /// GPUs bound to a lease and not under notice.
    pub leased_gpus: i32,
    /// GPUs under reclaim notice.
    pub reclaiming_gpus: i32,
    /// Nodes held out between holders until their scrub completes, failed ones included.
    #[serde(default)]
    pub scrubbing_nodes: i32,
    /// Scrubbing nodes whose scrub failed or timed out: out of use until their Job is deleted.
    #[serde(default)]
    pub scrub_failed_nodes: i32,
}

/// One member node in the pool status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberNode {
    pub name: String,
    pub state: NodeState,
    /// The lease (`NAMESPACE.NAME`) the node is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    pub gpus: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// When the node entered its state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// Why the node is, or is not, lendable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn default_gpu_resource() -> String {
    "nvidia.com/gpu".into()
}
fn default_gpu_model_label() -> String {
    "nvidia.com/gpu.product".into()
}
fn default_idle_percent() -> i32 {
    5
}
fn default_idle_seconds() -> i64 {
    900
}
fn default_max_lent_percent() -> i32 {
    100
}
fn default_time_zone() -> String {
    "UTC".into()
}
fn default_true() -> bool {
    true
}
fn default_burst_quantile() -> f64 {
    crate::policy::LearnedPolicy::DEFAULT_BURST_QUANTILE
}
fn default_history_days() -> i32 {
    14
}
fn default_notice_seconds() -> i64 {
    120
}
fn default_cooldown_seconds() -> i64 {
    300
}
fn default_max_grace_seconds() -> i64 {
    30
}
fn default_currency() -> String {
    "USD".into()
}
fn default_node_label() -> String {
    "Hostname".into()
}
fn default_stale_seconds() -> i64 {
    120
}
