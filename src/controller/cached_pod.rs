//! The compact form of a pod that the controller caches.
//!
//! A `k8s_openapi` Pod spends well over a kilobyte on fields that are almost always empty; at 100,000 pods
//! that is most of the controller's heap. The watcher decodes pods straight into this type instead, which
//! keeps only what the planner reads: where the pod runs, the extended resources it asks for, its node
//! selector, grace period, phase, deletion and sublet's annotation.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::api::pod_gpus::{container_gpus, pod_gpus};

/// A pod, as the controller caches it.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct CachedPod {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: CachedPodSpec,
    #[serde(default)]
    pub status: CachedPodStatus,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedPodSpec {
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub termination_grace_period_seconds: Option<i64>,
    #[serde(default)]
    pub containers: Vec<CachedContainer>,
    #[serde(default)]
    pub init_containers: Vec<CachedContainer>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct CachedContainer {
    #[serde(default)]
    pub resources: CachedResources,
}

/// Requests and limits; only extended resources (`vendor/name`) are kept.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct CachedResources {
    #[serde(default)]
    pub requests: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct CachedPodStatus {
    #[serde(default)]
    pub phase: Option<String>,
}

impl kube::Resource for CachedPod {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Pod".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "pods".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl CachedPod {
    /// Drops what the planner never reads, as the pod arrives.
    pub fn trim(&mut self) {
        let meta = &mut self.metadata;
        meta.managed_fields = None;
        meta.labels = None;
        meta.owner_references = None;
        meta.generate_name = None;
        meta.uid = None;
        meta.finalizers = None;
        if let Some(a) = &mut meta.annotations {
            a.retain(|k, _| k.starts_with("sublet.dev/"));
            if a.is_empty() {
                meta.annotations = None;
            }
        }
        for c in self
            .spec
            .containers
            .iter_mut()
            .chain(self.spec.init_containers.iter_mut())
        {
            c.resources.requests.retain(|k, _| k.contains('/'));
            c.resources.limits.retain(|k, _| k.contains('/'));
        }
        self.spec
            .containers
            .retain(|c| !c.resources.requests.is_empty() || !c.resources.limits.is_empty());
        self.spec
            .init_containers
            .retain(|c| !c.resources.requests.is_empty() || !c.resources.limits.is_empty());
        self.spec.containers.shrink_to_fit();
        self.spec.init_containers.shrink_to_fit();
    }

    /// GPUs the pod asks for: the larger of its containers' sum and its largest init container, as the
    /// scheduler counts them; requests, or limits when a container sets no request.
    pub fn gpus(&self, resource: &str) -> u32 {
        let of = |c: &CachedContainer| {
            let r = &c.resources;
            container_gpus(
                r.requests.get(resource).map(String::as_str),
                r.limits.get(resource).map(String::as_str),
            )
        };
        pod_gpus(
            self.spec.containers.iter().map(of),
            self.spec.init_containers.iter().map(of),
        )
    }

    /// Every extended resource the pod asks for, with the count [`CachedPod::gpus`] gives it (zeros left out).
    pub fn extended(&self) -> Vec<(String, u32)> {
        let mut names: Vec<&String> = self
            .spec
            .containers
            .iter()
            .chain(&self.spec.init_containers)
            .flat_map(|c| c.resources.requests.keys().chain(c.resources.limits.keys()))
            .collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|n| (n.clone(), self.gpus(n)))
            .filter(|(_, count)| *count > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_a_full_pod_and_keeps_what_the_planner_reads() {
        let mut pod: CachedPod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ml", "labels": {"a": "b"}, "uid": "u",
                         "annotations": {"sublet.dev/reclaim-deadline": "2026-01-01T00:00:00Z", "big": "x"},
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"nodeName": "n1", "nodeSelector": {"nvidia.com/gpu.product": "A100"},
                     "terminationGracePeriodSeconds": 45, "tolerations": [{"operator": "Exists"}],
                     "containers": [{"name": "c", "image": "huge/image:tag", "env": [{"name": "X", "value": "1"}],
                                     "resources": {"requests": {"cpu": "1", "nvidia.com/gpu": "2"}}},
                                    {"name": "d", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "1"}}},
                                    {"name": "e", "image": "x"}],
                     "initContainers": [{"name": "i", "image": "x", "resources": {"requests": {"nvidia.com/gpu": "4"}}}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}], "podIP": "10.0.0.1"}
        }))
        .unwrap();
        pod.trim();
        assert_eq!(
            pod.gpus("nvidia.com/gpu"),
            4,
            "the init container's 4 beat the sum of 3"
        );
        assert_eq!(pod.gpus("amd.com/gpu"), 0);
        assert_eq!(pod.spec.node_name.as_deref(), Some("n1"));
        assert_eq!(pod.spec.termination_grace_period_seconds, Some(45));
        assert_eq!(
            pod.spec.containers.len(),
            2,
            "containers without extended resources are dropped"
        );
        assert_eq!(pod.status.phase.as_deref(), Some("Running"));
        assert_eq!(pod.metadata.annotations.as_ref().unwrap().len(), 1);
        assert!(pod.metadata.managed_fields.is_none() && pod.metadata.labels.is_none());
    }
}
