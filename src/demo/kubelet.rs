//! A simulated kubelet for nodes that have no real one, over any API server (the sandbox or a real one).
//!
//! ```text
//!   every `period`:  nodes (matching the selector) ─▶ renew each node's Lease in kube-node-lease
//!                                                 ─▶ keep its Ready condition True (a fresh heartbeat each minute)
//!                    pods bound to those nodes    ─▶ Pending → Running and Ready (when `start_pods`)
//!                                                 ─▶ Running → Succeeded or Failed once a pod's simulated run
//!                                                    time is over ([`RUN_SECONDS`], [`EXIT_CODE`])
//!                                                 ─▶ deleted ones removed once their grace period is over
//! ```
//! On a real control plane the node lifecycle controller marks a node whose Lease goes stale `Unknown`,
//! taints it unreachable and evicts its pods; the scheduler binds pods but nobody starts them. This loop does
//! both halves of a kubelet's visible work, so simulated GPU nodes behave like real ones.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::watch;

/// Pod annotation: seconds the simulated containers run before they exit; without it they run until deleted.
/// A pod that runs to completion (a Job's) says how long it would take on a real node.
pub const RUN_SECONDS: &str = "kubelet.simulated/run-seconds";
/// Pod annotation: the exit code of the simulated containers (default 0): 0 ends the pod `Succeeded`, any
/// other `Failed`.
pub const EXIT_CODE: &str = "kubelet.simulated/exit-code";

/// The namespace node Leases live in.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// How long a node Lease holds, as a real kubelet sets it.
pub const LEASE_SECONDS: i32 = 40;
/// How often the Ready condition's heartbeat is refreshed even when nothing changed.
const STATUS_EVERY: Duration = Duration::from_secs(60);

/// What the simulated kubelet does.
#[derive(Clone, Debug)]
pub struct KubeletConfig {
    /// Label selector of the nodes it runs (empty: every node).
    pub node_selector: String,
    /// How often it looks at nodes and pods; Leases are renewed at most every `renew` (a real kubelet: 10 s).
    pub period: Duration,
    pub renew: Duration,
    /// Start pods bound to its nodes and remove deleted ones at the end of their grace period.
    pub start_pods: bool,
}

impl Default for KubeletConfig {
    fn default() -> Self {
        Self {
            node_selector: String::new(),
            period: Duration::from_millis(200),
            renew: Duration::from_secs(10),
            start_pods: true,
        }
    }
}

/// Why a pass failed (the loop logs it and tries again next period).
#[derive(Debug, thiserror::Error)]
#[error("simulated kubelet: {0}")]
pub struct KubeletError(#[from] kube::Error);

/// What the kubelet remembers between passes: when it last renewed each Lease and posted each status.
#[derive(Default)]
pub struct Kubelet {
    renewed: BTreeMap<String, std::time::Instant>,
    posted: BTreeMap<String, std::time::Instant>,
}

/// Runs the kubelet until `stop` turns true.
pub async fn run(client: Client, config: KubeletConfig, mut stop: watch::Receiver<bool>) {
    let mut kubelet = Kubelet::default();
    let mut tick = tokio::time::interval(config.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = kubelet.pass(&client, &config).await {
            tracing::debug!(error = %e, "simulated kubelet pass failed; retrying");
        }
    }
}

impl Kubelet {
    /// One pass: heartbeats for every node due, then the pods.
    pub async fn pass(&mut self, client: &Client, config: &KubeletConfig) -> Result<(), KubeletError> {
        let nodes: Api<Node> = Api::all(client.clone());
        let list = nodes.list(&ListParams::default().labels(&config.node_selector)).await?;
        let names: BTreeSet<String> = list.items.iter().map(|n| n.name_any()).collect();
        self.renewed.retain(|n, _| names.contains(n));
        self.posted.retain(|n, _| names.contains(n));
        for node in &list.items {
            self.heartbeat(client, node, config.renew).await?;
        }
        if config.start_pods {
            tend_pods(client, &names).await?;
        }
        Ok(())
    }

    async fn heartbeat(&mut self, client: &Client, node: &Node, renew: Duration) -> Result<(), KubeletError> {
        let name = node.name_any();
        let due = |at: Option<&std::time::Instant>, every: Duration| at.is_none_or(|t| t.elapsed() >= every);
        if due(self.renewed.get(&name), renew) {
            renew_lease(client, node).await?;
            self.renewed.insert(name.clone(), std::time::Instant::now());
        }
        if !ready(node) || due(self.posted.get(&name), STATUS_EVERY) {
            post_ready(client, node).await?;
            self.posted.insert(name, std::time::Instant::now());
        }
        Ok(())
    }
}

/// Whether the node's Ready condition is True.
pub fn ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn micro_time(t: Timestamp) -> String {
    // MicroTime: RFC 3339 with exactly six fractional digits.
    t.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
}

fn time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Creates or renews the node's Lease, owned by the node as a kubelet's is.
async fn renew_lease(client: &Client, node: &Node) -> Result<(), KubeletError> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE);
    let name = node.name_any();
    let now = micro_time(Timestamp::now());
    let renew = json!({"spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now}});
    match leases
        .patch(&name, &PatchParams::default(), &Patch::Merge(&renew))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let owner =
                json!([{"apiVersion": "v1", "kind": "Node", "name": name, "uid": node.uid().unwrap_or_default()}]);
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": NODE_LEASE_NAMESPACE, "ownerReferences": owner},
                "spec": renew["spec"],
            }))
            .expect("a valid Lease");
            match leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(()),
                // Another pass created it in between: renewed next period.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Sets the Ready condition True with a fresh heartbeat (strategic merge: other conditions stay).
async fn post_ready(client: &Client, node: &Node) -> Result<(), KubeletError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let now = time(Timestamp::now());
    let mut condition = json!({"type": "Ready", "status": "True", "reason": "KubeletReady",
        "message": "kubelet is posting ready status", "lastHeartbeatTime": now});
    if !ready(node) {
        condition["lastTransitionTime"] = json!(now);
    }
    let patch = json!({"status": {"conditions": [condition]}});
    nodes
        .patch_status(&node.name_any(), &PatchParams::default(), &Patch::Strategic(&patch))
        .await?;
    Ok(())
}

/// Starts the pods bound to `nodes` and removes deleted ones whose grace period is over.
async fn tend_pods(client: &Client, nodes: &BTreeSet<String>) -> Result<(), KubeletError> {
    let all: Api<Pod> = Api::all(client.clone());
    let now = Timestamp::now();
    for pod in all.list(&ListParams::default()).await? {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            continue;
        };
        if !nodes.contains(node) {
            continue;
        }
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Pending");
        if let Some(at) = pod.metadata.deletion_timestamp.as_ref() {
            if at.0 <= now {
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: pod.uid(),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                match api.delete(&pod.name_any(), &dp).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            continue;
        }
        let ended = (phase == "Running").then(|| exited_status(&pod, now)).flatten();
        if let Some(status) = ended {
            let patch = json!({ "status": status });
            match api
                .patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            continue;
        }
        if phase == "Pending" {
            let patch = json!({"status": running_status(&pod, now)});
            match api
                .patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// The status a kubelet reports once the containers of a running `pod` with a simulated run time
/// ([`RUN_SECONDS`]) have exited; None while they still run (or run for good).
pub fn exited_status(pod: &Pod, now: Timestamp) -> Option<Value> {
    let annotations = pod.metadata.annotations.as_ref()?;
    let secs: i64 = annotations.get(RUN_SECONDS)?.trim().parse().ok()?;
    let started = pod.status.as_ref()?.start_time.as_ref()?.0;
    if now.as_second() < started.as_second() + secs {
        return None;
    }
    let code: i32 = annotations
        .get(EXIT_CODE)
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or(0);
    let at = time(now);
    let reason = if code == 0 { "Completed" } else { "Error" };
    let state =
        json!({"terminated": {"exitCode": code, "reason": reason, "startedAt": time(started), "finishedAt": at}});
    let containers = container_statuses(pod, false, &state);
    let condition = |t: &str, s: &str| json!({"type": t, "status": s, "lastTransitionTime": at});
    Some(json!({
        "phase": if code == 0 { "Succeeded" } else { "Failed" },
        "conditions": [condition("PodScheduled", "True"), condition("Initialized", "True"),
                       condition("ContainersReady", "False"), condition("Ready", "False")],
        "containerStatuses": containers,
    }))
}

/// Every container of `pod` in `state`, ready and started or neither.
fn container_statuses(pod: &Pod, running: bool, state: &Value) -> Vec<Value> {
    pod.spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            json!({"name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
                "ready": running, "started": running, "restartCount": 0, "state": state})
        })
        .collect()
}

/// The status a kubelet reports once every container of `pod` runs and is ready.
pub fn running_status(pod: &Pod, now: Timestamp) -> Value {
    let now = time(now);
    let containers = container_statuses(pod, true, &json!({"running": {"startedAt": now}}));
    let condition = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
    json!({
        "phase": "Running",
        "startTime": now,
        "hostIP": "127.0.0.1",
        "conditions": [condition("PodScheduled"), condition("Initialized"), condition("ContainersReady"), condition("Ready")],
        "containerStatuses": containers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_with_a_simulated_run_time_exits_with_its_code_once_it_is_over() {
        let started: Timestamp = "2026-01-05T10:00:00Z".parse().unwrap();
        let pod = |annotations: Value| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": "p", "annotations": annotations},
                "spec": {"containers": [{"name": "c", "image": "x"}]},
                "status": {"phase": "Running", "startTime": "2026-01-05T10:00:00Z"},
            }))
            .unwrap()
        };
        let at = |s: i64| started.checked_add(jiff::SignedDuration::from_secs(s)).unwrap();
        let failing = pod(json!({RUN_SECONDS: "5", EXIT_CODE: "2"}));
        assert_eq!(exited_status(&failing, at(4)), None);
        let s = exited_status(&failing, at(5)).unwrap();
        assert_eq!(s["phase"], "Failed");
        assert_eq!(s["containerStatuses"][0]["state"]["terminated"]["exitCode"], 2);
        let s = exited_status(&pod(json!({RUN_SECONDS: "1"})), at(1)).unwrap();
        assert_eq!(s["phase"], "Succeeded");
        assert_eq!(
            exited_status(&pod(json!({})), at(3600)),
            None,
            "no run time: runs for good"
        );
    }

    #[test]
    fn times_are_written_as_the_api_reads_them() {
        let t: Timestamp = "2026-01-05T10:11:12.345678901Z".parse().unwrap();
        assert_eq!(micro_time(t), "2026-01-05T10:11:12.345678Z");
        assert_eq!(time(t), "2026-01-05T10:11:12Z");
    }

    #[test]
    fn a_running_status_reports_every_container_ready() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "image": "i:1"}, {"name": "b", "image": "i:2"}]}}))
        .unwrap();
        let s = running_status(&pod, "2026-01-05T10:11:12Z".parse().unwrap());
        assert_eq!(s["phase"], "Running");
        let names: Vec<&str> = s["containerStatuses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert!(
            s["containerStatuses"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["ready"] == true)
        );
        let ready = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True");
        // Odd objects do not panic: a pod without a spec starts with no containers.
        let bare: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}})).unwrap();
        assert_eq!(
            running_status(&bare, Timestamp::UNIX_EPOCH)["containerStatuses"],
            json!([])
        );
    }
}
