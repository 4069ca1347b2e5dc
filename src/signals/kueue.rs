//! Internal demand from Kueue: Workloads waiting for quota in the ClusterQueues a pool names.
//!
//! ```text
//!   LocalQueues (kueue.x-k8s.io/v1beta1) ──▶ (namespace, name) → ClusterQueue
//!   Workloads   (kueue.x-k8s.io/v1beta1) ──▶ waiting? queue in the named ClusterQueues?
//!                                          ──▶ per pod set: count × GPUs per pod, keyed by class
//! ```
//! Read through the dynamic API, so sublet needs no Kueue crate and runs on clusters without Kueue as long
//! as no pool names ClusterQueues. A Workload waits while it has no `status.admission` and its
//! `QuotaReserved` condition is not True; finished and deactivated Workloads wait for nothing.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Api, Client};
use serde::Deserialize;

use crate::api::pod_gpus::{container_gpus, pod_gpus};

pub const GROUP: &str = "kueue.x-k8s.io";
pub const VERSION: &str = "v1beta1";

#[derive(Debug, thiserror::Error)]
pub enum KueueError {
    #[error("cannot list Kueue {what}: {source}")]
    List {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("listing Kueue {0} did not finish in time")]
    Timeout(&'static str),
}

/// The parts of a Workload that say what it waits for.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    #[serde(default)]
    pub metadata: kube::api::ObjectMeta,
    #[serde(default)]
    pub spec: WorkloadSpec,
    #[serde(default)]
    pub status: Option<WorkloadStatus>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpec {
    #[serde(default)]
    pub queue_name: Option<String>,
    #[serde(default)]
    pub pod_sets: Vec<PodSet>,
    /// A deactivated Workload (`active: false`) is not admitted while it stays so.
    #[serde(default)]
    pub active: Option<bool>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodSet {
    #[serde(default)]
    pub name: String,
    #[serde(default = "one")]
    pub count: i32,
    #[serde(default)]
    pub template: PodTemplateSpec,
}

fn one() -> i32 {
    1
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    #[serde(default)]
    pub admission: Option<serde_json::Value>,
    #[serde(default)]
    pub conditions: Vec<WorkloadCondition>,
}

#[derive(Deserialize, Debug, Default)]
pub struct WorkloadCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
}

impl Workload {
    fn condition(&self, type_: &str) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == type_ && c.status == "True"))
    }

    /// Waiting for quota: not admitted, no quota reserved, not finished, not deactivated.
    pub fn waiting(&self) -> bool {
        let admitted = self.status.as_ref().is_some_and(|s| s.admission.is_some());
        !admitted && !self.condition("QuotaReserved") && !self.condition("Finished") && self.spec.active != Some(false)
    }

    /// GPUs asked for, per class: each pod set's count times the GPUs one of its pods requests. The class is
    /// the value the pod template's nodeSelector gives the first of `class_keys` it sets (a node group or
    /// GPU model label), None when it sets none.
    pub fn gpus(&self, resource: &str, class_keys: &[&str]) -> Vec<(Option<String>, u32)> {
        self.spec
            .pod_sets
            .iter()
            .filter_map(|set| {
                // The same count as for a running pod.
                let per_pod = set.template.spec.as_ref().map_or(0, |spec| {
                    let of = |c: &Container| {
                        let r = c.resources.as_ref();
                        container_gpus(
                            quantity(r.and_then(|r| r.requests.as_ref()), resource),
                            quantity(r.and_then(|r| r.limits.as_ref()), resource),
                        )
                    };
                    pod_gpus(
                        spec.containers.iter().map(of),
                        spec.init_containers.iter().flatten().map(of),
                    )
                });
                let total = per_pod.saturating_mul(set.count.max(0) as u32);
                let class = set
                    .template
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_selector.as_ref())
                    .and_then(|sel| class_keys.iter().find_map(|k| sel.get(*k).cloned()));
                (total > 0).then_some((class, total))
            })
            .collect()
    }
}

/// One resource's quantity in a container's requests or limits, as text.
fn quantity<'a>(map: Option<&'a BTreeMap<String, Quantity>>, resource: &str) -> Option<&'a str> {
    map?.get(resource).map(|q| q.0.as_str())
}

/// The GPU demand of the waiting Workloads whose LocalQueue points at one of `cluster_queues`.
pub fn demand(
    workloads: &[Workload],
    local_queues: &HashMap<(String, String), String>,
    cluster_queues: &[String],
    resource: &str,
    class_keys: &[&str],
) -> BTreeMap<Option<String>, u32> {
    let mut out = BTreeMap::new();
    for w in workloads.iter().filter(|w| w.waiting()) {
        let ns = w.metadata.namespace.clone().unwrap_or_default();
        let Some(queue) = &w.spec.queue_name else { continue };
        let Some(cq) = local_queues.get(&(ns, queue.clone())) else {
            continue;
        };
        if !cluster_queues.contains(cq) {
            continue;
        }
        for (class, gpus) in w.gpus(resource, class_keys) {
            let e: &mut u32 = out.entry(class).or_default();
            *e = e.saturating_add(gpus);
        }
    }
    out
}

fn api(client: &Client, kind: &str, plural: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(GROUP, VERSION, kind);
    Api::all_with(client.clone(), &ApiResource::from_gvk_with_plural(&gvk, plural))
}

async fn list(
    client: &Client,
    kind: &'static str,
    plural: &str,
    timeout: Duration,
) -> Result<Vec<serde_json::Value>, KueueError> {
    let api = api(client, kind, plural);
    let params = ListParams::default();
    let list = tokio::time::timeout(timeout, api.list(&params))
        .await
        .map_err(|_| KueueError::Timeout(kind))?
        .map_err(|source| KueueError::List { what: kind, source })?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|o| serde_json::to_value(o).ok())
        .collect())
}

/// Reads the LocalQueues and Workloads, each list within `timeout`, and sums the waiting demand.
pub async fn fetch(
    client: &Client,
    cluster_queues: &[String],
    resource: &str,
    class_keys: &[&str],
    timeout: Duration,
) -> Result<BTreeMap<Option<String>, u32>, KueueError> {
    let (queues, workloads) = tokio::join!(
        list(client, "LocalQueue", "localqueues", timeout),
        list(client, "Workload", "workloads", timeout)
    );
    let local_queues: HashMap<(String, String), String> = queues?
        .into_iter()
        .filter_map(|q| {
            let ns = q.pointer("/metadata/namespace")?.as_str()?.to_string();
            let name = q.pointer("/metadata/name")?.as_str()?.to_string();
            let cq = q.pointer("/spec/clusterQueue")?.as_str()?.to_string();
            Some(((ns, name), cq))
        })
        .collect();
    // A Workload that does not parse (a future field of an unexpected type) is skipped, not fatal.
    let workloads: Vec<Workload> = workloads?
        .into_iter()
        .filter_map(|w| serde_json::from_value(w).ok())
        .collect();
    Ok(demand(&workloads, &local_queues, cluster_queues, resource, class_keys))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn workload(ns: &str, queue: &str, sets: serde_json::Value, status: serde_json::Value) -> Workload {
        serde_json::from_value(json!({
            "metadata": {"name": "w", "namespace": ns},
            "spec": {"queueName": queue, "podSets": sets},
            "status": status,
        }))
        .unwrap()
    }

    fn set(count: i32, gpus: u32, model: Option<&str>) -> serde_json::Value {
        let mut spec =
            json!({"containers": [{"name": "c", "resources": {"requests": {"nvidia.com/gpu": gpus.to_string()}}}]});
        if let Some(m) = model {
            spec["nodeSelector"] = json!({"nvidia.com/gpu.product": m});
        }
        json!({"name": "main", "count": count, "template": {"spec": spec}})
    }

    const KEYS: &[&str] = &["nvidia.com/gpu.product"];

    #[test]
    fn pod_sets_count_times_gpus_per_pod_by_class() {
        let w = workload(
            "ml",
            "q",
            json!([set(4, 2, Some("A100")), set(1, 1, None), set(3, 0, None)]),
            json!({}),
        );
        assert_eq!(
            w.gpus("nvidia.com/gpu", KEYS),
            vec![(Some("A100".to_string()), 8), (None, 1)]
        );
    }

    #[test]
    fn admitted_or_quota_reserved_workloads_do_not_wait() {
        let waiting = workload("ml", "q", json!([set(1, 8, None)]), json!({}));
        assert!(waiting.waiting());
        let pending = workload(
            "ml",
            "q",
            json!([set(1, 8, None)]),
            json!({"conditions": [{"type": "QuotaReserved", "status": "False", "reason": "Pending"}]}),
        );
        assert!(pending.waiting());
        let reserved = workload(
            "ml",
            "q",
            json!([set(1, 8, None)]),
            json!({"conditions": [{"type": "QuotaReserved", "status": "True"}]}),
        );
        assert!(!reserved.waiting());
        let admitted = workload(
            "ml",
            "q",
            json!([set(1, 8, None)]),
            json!({"admission": {"clusterQueue": "gpu"}}),
        );
        assert!(!admitted.waiting());
        let finished = workload(
            "ml",
            "q",
            json!([set(1, 8, None)]),
            json!({"conditions": [{"type": "Finished", "status": "True"}]}),
        );
        assert!(!finished.waiting());
        let mut inactive = workload("ml", "q", json!([set(1, 8, None)]), json!({}));
        inactive.spec.active = Some(false);
        assert!(!inactive.waiting());
    }

    #[test]
    fn only_named_cluster_queues_count() {
        let queues: HashMap<(String, String), String> = [
            (("ml".to_string(), "q".to_string()), "gpu".to_string()),
            (("ml".to_string(), "cpu".to_string()), "cpu-only".to_string()),
        ]
        .into();
        let ws = vec![
            workload("ml", "q", json!([set(2, 4, Some("A100"))]), json!({})),
            workload("ml", "q", json!([set(1, 8, None)]), json!({})),
            workload("ml", "cpu", json!([set(1, 8, None)]), json!({})),
            workload("ml", "unknown", json!([set(1, 8, None)]), json!({})),
            workload("other", "q", json!([set(1, 8, None)]), json!({})),
            workload(
                "ml",
                "q",
                json!([set(1, 8, None)]),
                json!({"admission": {"clusterQueue": "gpu"}}),
            ),
        ];
        let d = demand(&ws, &queues, &["gpu".to_string()], "nvidia.com/gpu", KEYS);
        assert_eq!(d, [(Some("A100".to_string()), 8), (None, 8)].into());
    }

    #[test]
    fn odd_counts_do_not_panic() {
        let w = workload(
            "ml",
            "q",
            json!([set(-3, 8, None), set(i32::MAX, u32::MAX, None)]),
            json!({}),
        );
        assert_eq!(w.gpus("nvidia.com/gpu", KEYS), vec![(None, u32::MAX)]);
    }
}
