//! The simulated GPU nodes: their groups, a small scheduler and a kubelet, acting through [`DemoApi`].
//!
//! ```text
//!   every 50 ms:  list nodes + pods ─▶ kubelet: finish graceful deletions at their deadline, start bound pods,
//!                                        end pods whose work (or checkpoint after a notice) is done,
//!                                        remove finished pods
//!                                   ─▶ scheduler (sandbox only): bind pending pods, oldest first, to the
//!                                        fullest node that is Ready, schedulable, tolerated, selected and has
//!                                        the GPUs free; on a real cluster kube-scheduler binds them
//! ```
//! The sandbox runs with `external_kubelet`, so a deleted running pod stays (with its deletionTimestamp) until
//! this kubelet removes it at the end of its grace period, as a real kubelet would; a real API server does the
//! same. The kubelet tends only the demo's nodes (those with the `demo.sublet.dev/group` label).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::api::DemoApi;
use super::{CHECKPOINT_ANNOTATION, DemoError, GPU_RESOURCE, GROUP_LABEL, MODEL_LABEL, RUN_ANNOTATION, Rng, SimClock};
use crate::api::keys::DEADLINE_ANNOTATION;
use sublet_sandbox::{DeleteOpts, PatchKind};

/// A group of identical GPU nodes; internal demand is per group.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeGroup {
    /// The group's name: node names start with it and the `demo.sublet.dev/group` label carries it.
    pub name: String,
    pub count: u32,
    pub gpus_per_node: u32,
    /// The GPU model, as the `nvidia.com/gpu.product` label.
    pub model: String,
}

/// One node to create.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSpec {
    pub name: String,
    pub group: String,
    pub gpus: u32,
    pub model: String,
}

pub const DEFAULT_MODELS: [&str; 2] = ["NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB"];

/// `nodes` split over the default models, three quarters to the first.
pub fn default_groups(nodes: u32, gpus_per_node: u32) -> Vec<NodeGroup> {
    let models: Vec<String> = DEFAULT_MODELS.iter().map(|s| s.to_string()).collect();
    groups_for(nodes, gpus_per_node, &models, &[3, 1])
}

/// `nodes` split over `models` by `weights` (equal when the weights do not match the models).
pub fn groups_for(nodes: u32, gpus_per_node: u32, models: &[String], weights: &[u32]) -> Vec<NodeGroup> {
    let weights: Vec<u32> = if weights.len() == models.len() {
        weights.to_vec()
    } else {
        vec![1; models.len()]
    };
    let total: u32 = weights.iter().sum::<u32>().max(1);
    let mut left = nodes;
    models
        .iter()
        .zip(&weights)
        .enumerate()
        .map(|(i, (model, w))| {
            let count = if i + 1 == models.len() { left } else { nodes * w / total };
            left -= count;
            NodeGroup {
                name: short_name(model),
                count,
                gpus_per_node,
                model: model.clone(),
            }
        })
        .collect()
}

/// `NVIDIA-H100-80GB-HBM3` → `h100`: the model's first word with a digit, lower-cased.
fn short_name(model: &str) -> String {
    let word = model
        .split(['-', '_', ' '])
        .find(|w| w.chars().any(|c| c.is_ascii_digit()))
        .unwrap_or(model);
    let s: String = word
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    if s.is_empty() { "gpu".into() } else { s }
}

/// Reads node groups from a YAML file: a list of `{name, count, gpusPerNode, model}`.
pub fn load_groups(path: &std::path::Path) -> Result<Vec<NodeGroup>, DemoError> {
    let err = |message: String| DemoError::Input {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let groups: Vec<NodeGroup> = serde_yaml_ng::from_str(&text).map_err(|e| err(e.to_string()))?;
    validate_groups(&groups).map_err(err)?;
    Ok(groups)
}

pub fn validate_groups(groups: &[NodeGroup]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for g in groups {
        let ok = !g.name.is_empty()
            && g.name.len() <= 40
            && g.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return Err(format!(
                "group name `{}` must be 1-40 lower-case letters, digits or dashes",
                g.name
            ));
        }
        if !seen.insert(&g.name) {
            return Err(format!("group `{}` is named twice", g.name));
        }
        if g.gpus_per_node == 0 || g.gpus_per_node > 64 {
            return Err(format!("group `{}`: gpusPerNode must be 1 to 64", g.name));
        }
        if g.count > 10_000 {
            return Err(format!("group `{}`: at most 10000 nodes", g.name));
        }
        if g.model.is_empty() || g.model.len() > 63 {
            return Err(format!("group `{}`: model must be 1-63 characters", g.name));
        }
    }
    Ok(())
}

pub fn node_specs(groups: &[NodeGroup]) -> Vec<NodeSpec> {
    groups
        .iter()
        .flat_map(|g| {
            (0..g.count).map(move |i| NodeSpec {
                name: format!("{}-{:03}", g.name, i),
                group: g.name.clone(),
                gpus: g.gpus_per_node,
                model: g.model.clone(),
            })
        })
        .collect()
}

/// Creates the nodes, Ready, with the GPU taint the NVIDIA operator puts on GPU nodes.
pub async fn create_nodes(api: &DemoApi, groups: &[NodeGroup]) -> Result<(), DemoError> {
    validate_groups(groups).map_err(DemoError::Setup)?;
    for n in node_specs(groups) {
        create_node(api, &n).await?;
    }
    Ok(())
}

/// Creates one node, Ready, as its kubelet registers it: its own labels and the GPU taint, nothing of sublet's.
pub async fn create_node(api: &DemoApi, n: &NodeSpec) -> Result<(), DemoError> {
    let gpus = n.gpus.to_string();
    api.create(
        "v1",
        "nodes",
        None,
        json!({
            "metadata": {"name": n.name, "labels": {
                MODEL_LABEL: n.model, GROUP_LABEL: n.group, "kubernetes.io/hostname": n.name,
            }},
            "spec": {"taints": [{"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}]},
        }),
    )
    .await?;
    let status = json!({"status": {
        "capacity": {GPU_RESOURCE: gpus, "cpu": "128", "memory": "1Ti", "pods": "110"},
        "allocatable": {GPU_RESOURCE: gpus, "cpu": "128", "memory": "1Ti", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}],
    }});
    api.patch("v1", "nodes", None, &n.name, PatchKind::Merge, &status, Some("status"))
        .await?;
    Ok(())
}

/// GPUs a pod asks for (requests, else limits, summed over containers).
pub fn pod_gpus(pod: &Value) -> u32 {
    let Some(containers) = pod["spec"]["containers"].as_array() else {
        return 0;
    };
    containers
        .iter()
        .map(|c| {
            let r = &c["resources"];
            let q = r["requests"][GPU_RESOURCE]
                .as_str()
                .or_else(|| r["limits"][GPU_RESOURCE].as_str());
            q.and_then(|q| q.parse::<u32>().ok()).unwrap_or(0)
        })
        .sum()
}

pub fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("Pending")
}

pub fn finished(pod: &Value) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

fn node_of(pod: &Value) -> Option<&str> {
    pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty())
}

fn owned_by_job(pod: &Value) -> bool {
    pod["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| r["kind"] == "Job"))
}

fn deleting(obj: &Value) -> bool {
    obj["metadata"]["deletionTimestamp"].is_string()
}

fn annotation_f64(pod: &Value, key: &str) -> Option<f64> {
    pod["metadata"]["annotations"][key]
        .as_str()
        .and_then(|s| s.parse().ok())
}

/// Whether `tolerations` tolerate a NoSchedule/NoExecute `taint`.
pub fn tolerates(tolerations: &[Value], taint: &Value) -> bool {
    let effect = taint["effect"].as_str().unwrap_or("");
    if effect == "PreferNoSchedule" {
        return true;
    }
    let key = taint["key"].as_str().unwrap_or("");
    let value = taint["value"].as_str().unwrap_or("");
    tolerations.iter().any(|t| {
        let t_effect = t["effect"].as_str().unwrap_or("");
        if !t_effect.is_empty() && t_effect != effect {
            return false;
        }
        let t_key = t["key"].as_str().unwrap_or("");
        match t["operator"].as_str().unwrap_or("Equal") {
            "Exists" => t_key.is_empty() || t_key == key,
            _ => t_key == key && t["value"].as_str().unwrap_or("") == value,
        }
    })
}

/// Whether the scheduler may put `pod` on `node`, ignoring free GPUs.
pub fn fits(pod: &Value, node: &Value) -> bool {
    let ready = node["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
    if !ready || node["spec"]["unschedulable"].as_bool().unwrap_or(false) {
        return false;
    }
    let empty = Vec::new();
    let tolerations = pod["spec"]["tolerations"].as_array().unwrap_or(&empty);
    let taints = node["spec"]["taints"].as_array().unwrap_or(&empty);
    if !taints.iter().all(|t| tolerates(tolerations, t)) {
        return false;
    }
    let labels = &node["metadata"]["labels"];
    pod["spec"]["nodeSelector"]
        .as_object()
        .is_none_or(|sel| sel.iter().all(|(k, v)| labels[k] == *v))
}

fn node_gpus(node: &Value) -> u32 {
    node["status"]["allocatable"][GPU_RESOURCE]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// What the kubelet remembers between passes: when each pod started and when it saw the notice.
struct Memory {
    rng: Rng,
    started: HashMap<String, Instant>,
    noticed: HashMap<String, Instant>,
}

/// Runs the kubelet, and on the sandbox the scheduler, until `stop`.
pub async fn run(api: DemoApi, clock: SimClock, loads: super::prom::Loads, mut stop: watch::Receiver<bool>) {
    let mut memory = Memory {
        rng: Rng::new(0x5eed),
        started: HashMap::new(),
        noticed: HashMap::new(),
    };
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = pass(&api, &clock, &mut memory, &loads).await {
            tracing::debug!(error = %e, "kubelet pass failed; retrying");
        }
    }
}

fn uid(pod: &Value) -> String {
    pod["metadata"]["uid"].as_str().unwrap_or("").to_string()
}

fn key(pod: &Value) -> (String, String) {
    (
        pod["metadata"]["namespace"].as_str().unwrap_or("").to_string(),
        pod["metadata"]["name"].as_str().unwrap_or("").to_string(),
    )
}

async fn remove(api: &DemoApi, pod: &Value) {
    let (ns, name) = key(pod);
    let opts = DeleteOpts {
        grace_period: Some(0),
        uid: Some(uid(pod)),
        ..DeleteOpts::default()
    };
    let _ = api.delete("v1", "pods", Some(&ns), &name, &opts).await;
}

async fn set_phase(api: &DemoApi, pod: &Value, phase: &str, reason: &str) {
    let (ns, name) = key(pod);
    let now = sublet_sandbox::meta::format_time(jiff::Timestamp::now());
    let mut status = json!({"phase": phase, "reason": reason});
    if phase == "Running" {
        status["startTime"] = json!(now);
        status["conditions"] = json!([{"type": "Ready", "status": "True", "lastTransitionTime": now}]);
    } else {
        status["conditions"] = json!([{"type": "Ready", "status": "False", "lastTransitionTime": now}]);
    }
    let _ = api
        .patch(
            "v1",
            "pods",
            Some(&ns),
            &name,
            PatchKind::Merge,
            &json!({"status": status}),
            Some("status"),
        )
        .await;
}

/// One pass of the kubelets over the demo's nodes: finished and deleted pods go, bound pods are admitted and
/// run their course, utilization follows the load, and (in process) pending pods are scheduled.
async fn pass(
    api: &DemoApi,
    clock: &SimClock,
    memory: &mut Memory,
    loads: &super::prom::Loads,
) -> Result<(), DemoError> {
    let nodes = api.list("v1", "nodes", None, GROUP_LABEL, "").await?;
    let pods = api.list("v1", "pods", None, "", "").await?;
    let ours: std::collections::HashSet<&str> = nodes.iter().filter_map(|n| n["metadata"]["name"].as_str()).collect();
    let now = jiff::Timestamp::now();
    let mut used: HashMap<String, u32> = HashMap::new();
    let mut busy: HashMap<String, u32> = HashMap::new();
    let mut pending = Vec::new();
    let mut alive = std::collections::HashSet::new();
    for pod in &pods {
        let id = uid(pod);
        alive.insert(id.clone());
        let Some(node) = node_of(pod) else {
            if !deleting(pod) && !finished(pod) {
                pending.push(pod);
            }
            continue;
        };
        if !ours.contains(node) {
            continue;
        }
        if finished(pod) {
            // The workload's part: its finished pods go. A Job's stay, for its controller to count; they go
            // with the Job.
            if !owned_by_job(pod) {
                remove(api, pod).await;
            }
            continue;
        }
        *used.entry(node.to_string()).or_default() += pod_gpus(pod);
        if deleting(pod) {
            let at = pod["metadata"]["deletionTimestamp"]
                .as_str()
                .and_then(|s| s.parse::<jiff::Timestamp>().ok());
            if at.is_none_or(|at| at <= now) {
                remove(api, pod).await;
            }
            continue;
        }
        match phase(pod) {
            "Pending" => admit(api, pod, &nodes, node, memory, id).await,
            "Running" => {
                *busy.entry(node.to_string()).or_default() += pod_gpus(pod);
                live(api, clock, memory, pod, id).await;
            }
            _ => {}
        }
    }
    follow_load(loads, &nodes, &busy);
    memory.started.retain(|k, _| alive.contains(k));
    memory.noticed.retain(|k, _| alive.contains(k));
    if !api.is_remote() {
        schedule(api, &nodes, &mut used, pending, &mut memory.rng).await;
    }
    Ok(())
}

/// A kubelet's admission: a pod whose node selector the node no longer matches (it was bound from a scheduler's
/// view the node has since left) fails instead of starting.
async fn admit(api: &DemoApi, pod: &Value, nodes: &[Value], node: &str, memory: &mut Memory, id: String) {
    let node_labels = nodes
        .iter()
        .find(|n| n["metadata"]["name"] == node)
        .map(|n| &n["metadata"]["labels"]);
    let selected = pod["spec"]["nodeSelector"]
        .as_object()
        .is_none_or(|sel| sel.iter().all(|(k, v)| node_labels.is_some_and(|l| l[k] == *v)));
    if selected {
        memory.started.insert(id, Instant::now());
        set_phase(api, pod, "Running", "Started").await;
    } else {
        set_phase(api, pod, "Failed", "NodeAffinity").await;
    }
}

/// A running pod's life: it ends when its run time is up, or, under notice, once it has checkpointed.
async fn live(api: &DemoApi, clock: &SimClock, memory: &mut Memory, pod: &Value, id: String) {
    let started = *memory.started.entry(id.clone()).or_insert_with(Instant::now);
    // A pod with a simulated run time in real seconds (a scrub Job's) exits with its exit code.
    if let Some(run) = annotation_f64(pod, super::kubelet::RUN_SECONDS)
        && started.elapsed().as_secs_f64() >= run
    {
        let code = annotation_f64(pod, super::kubelet::EXIT_CODE).unwrap_or(0.0);
        let (phase, reason) = if code == 0.0 {
            ("Succeeded", "Completed")
        } else {
            ("Failed", "Error")
        };
        set_phase(api, pod, phase, reason).await;
        return;
    }
    if let Some(run) = annotation_f64(pod, RUN_ANNOTATION)
        && started.elapsed() >= clock.wall(run)
    {
        set_phase(api, pod, "Succeeded", "Completed").await;
        return;
    }
    let notice = pod["metadata"]["annotations"][DEADLINE_ANNOTATION].is_string();
    if let (true, Some(checkpoint)) = (notice, annotation_f64(pod, CHECKPOINT_ANNOTATION)) {
        let seen = *memory.noticed.entry(id).or_insert_with(Instant::now);
        if seen.elapsed() >= clock.wall(checkpoint) {
            set_phase(api, pod, "Succeeded", "Checkpointed").await;
        }
    }
}

/// Utilization follows the load: a busy GPU runs near 93 %, an idle one at 0.
fn follow_load(loads: &super::prom::Loads, nodes: &[Value], busy: &HashMap<String, u32>) {
    let mut load = loads.lock().expect("loads");
    load.clear();
    for n in nodes {
        let name = n["metadata"]["name"].as_str().unwrap_or("").to_string();
        let total = node_gpus(n).max(1);
        let running = busy.get(&name).copied().unwrap_or(0).min(total);
        load.insert(name, 93.0 * f64::from(running) / f64::from(total));
    }
}

/// Binds pending pods, oldest first, each to the fullest node it fits, which keeps whole nodes free to lend.
async fn schedule(
    api: &DemoApi,
    nodes: &[Value],
    used: &mut HashMap<String, u32>,
    mut pending: Vec<&Value>,
    rng: &mut Rng,
) {
    pending.sort_by(|a, b| {
        let t = |p: &Value| p["metadata"]["creationTimestamp"].as_str().unwrap_or("").to_string();
        t(a).cmp(&t(b)).then_with(|| key(a).cmp(&key(b)))
    });
    let by_name: BTreeMap<&str, &Value> = nodes
        .iter()
        .filter_map(|n| Some((n["metadata"]["name"].as_str()?, n)))
        .collect();
    for pod in pending {
        let want = pod_gpus(pod);
        let free = |name: &str, node: &Value| node_gpus(node).saturating_sub(used.get(name).copied().unwrap_or(0));
        let fitting: Vec<(&str, u32)> = by_name
            .iter()
            .map(|(name, node)| (*name, free(name, node), *node))
            .filter(|(_, f, node)| *f >= want && fits(pod, node))
            .map(|(name, f, _)| (name, f))
            .collect();
        // Among the fullest that fit, a random one, as kube-scheduler picks among equal scores.
        let Some(least) = fitting.iter().map(|(_, f)| *f).min() else {
            continue;
        };
        let best: Vec<&str> = fitting.iter().filter(|(_, f)| *f == least).map(|(n, _)| *n).collect();
        let name = *rng.pick(&best);
        // The controller may have tainted the node since the list: look again right before binding.
        match api.get("v1", "nodes", None, name).await {
            Ok(fresh) if fits(pod, &fresh) => {}
            _ => continue,
        }
        let (ns, pod_name) = key(pod);
        if api.bind(&ns, &pod_name, name).await.is_ok() {
            *used.entry(name.to_string()).or_default() += want;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_groups_split_nodes_over_models() {
        let g = default_groups(64, 8);
        assert_eq!(g.len(), 2);
        assert_eq!((g[0].name.as_str(), g[0].count), ("h100", 48));
        assert_eq!((g[1].name.as_str(), g[1].count), ("a100", 16));
        assert_eq!(node_specs(&g).len(), 64);
        assert_eq!(node_specs(&g)[0].name, "h100-000");
        let odd = groups_for(5, 4, &["A".into(), "B".into(), "C".into()], &[]);
        assert_eq!(odd.iter().map(|g| g.count).sum::<u32>(), 5);
    }

    #[test]
    fn groups_with_bad_fields_are_refused() {
        let g = |name: &str, gpus| NodeGroup {
            name: name.into(),
            count: 1,
            gpus_per_node: gpus,
            model: "M".into(),
        };
        assert!(validate_groups(&[g("ok-1", 8)]).is_ok());
        assert!(validate_groups(&[g("Bad", 8)]).is_err());
        assert!(validate_groups(&[g("a", 0)]).is_err());
        assert!(validate_groups(&[g("a", 8), g("a", 8)]).is_err());
    }

    #[test]
    fn scheduling_honours_taints_selectors_and_readiness() {
        let node = json!({"metadata": {"labels": {"g": "h100"}}, "spec": {"taints": [
            {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
            {"key": "sublet.dev/lease", "value": "acme.job", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let gpu = json!({"key": "nvidia.com/gpu", "operator": "Exists"});
        let lease =
            json!({"key": "sublet.dev/lease", "operator": "Equal", "value": "acme.job", "effect": "NoSchedule"});
        let other = json!({"key": "sublet.dev/lease", "operator": "Equal", "value": "beta.job"});
        let pod = |tols: Vec<Value>, sel: Value| json!({"spec": {"tolerations": tols, "nodeSelector": sel}});
        assert!(fits(
            &pod(vec![gpu.clone(), lease.clone()], json!({"g": "h100"})),
            &node
        ));
        assert!(!fits(&pod(vec![gpu.clone()], json!({})), &node));
        assert!(!fits(&pod(vec![gpu.clone(), other], json!({})), &node));
        assert!(!fits(
            &pod(vec![gpu.clone(), lease.clone()], json!({"g": "a100"})),
            &node
        ));
        let mut not_ready = node.clone();
        not_ready["status"]["conditions"][0]["status"] = json!("False");
        assert!(!fits(&pod(vec![gpu, lease], json!({})), &not_ready));
    }

    #[test]
    fn gpu_requests_are_read_from_requests_or_limits() {
        let pod = json!({"spec": {"containers": [
            {"resources": {"requests": {"nvidia.com/gpu": "4"}}},
            {"resources": {"limits": {"nvidia.com/gpu": "2"}}},
            {"resources": {}}]}});
        assert_eq!(pod_gpus(&pod), 6);
        assert_eq!(pod_gpus(&json!({})), 0);
    }
}
