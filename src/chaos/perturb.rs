//! The perturbations besides kills: API faults, nodes deleted and registered again, mode flips.
//!
//! ```text
//!   faults       the sandbox answers a share of writes (create, update, patch, delete) with 500, 409 or 429
//!                (reads and watches are left alone: the watcher reads through the same server)
//!   node-delete  every few seconds a node (a leased one when there is one) is deleted and, a moment
//!                later, registered again by its kubelet: its own labels and taint, nothing of sublet's
//!   node-not-ready  every few seconds a node's kubelet (a leased node's, when there is one) stops: the node
//!                goes NotReady for a few seconds, then its kubelet posts Ready again
//!   mode-flips   every few seconds the pool goes to Observe for a moment and back to Enforce
//! ```

use std::time::Duration;

use serde_json::json;
use sublet_sandbox::{DeleteOpts, FaultAction, FaultConfig, FaultRule, PatchKind};
use tokio::sync::watch;

use super::POOL;
use crate::api::keys::STATE_LABEL;
use crate::demo::nodes::{NodeSpec, create_node};
use crate::demo::{DemoApi, GROUP_LABEL, Rng};

/// The fault rules of a chaos run.
pub fn fault_rules(seed: u64) -> FaultConfig {
    let writes = || vec!["create".into(), "update".into(), "patch".into(), "delete".into()];
    let rule = |share: f64, action: FaultAction| FaultRule {
        verbs: writes(),
        resources: vec![],
        share,
        limit: None,
        action,
    };
    FaultConfig {
        seed,
        rules: vec![
            rule(0.03, FaultAction::InternalError),
            rule(0.02, FaultAction::Conflict),
            rule(0.01, FaultAction::TooManyRequests { retry_after_seconds: 1 }),
        ],
    }
}

/// Deletes nodes and registers them again until `stop`; answers how many.
pub async fn node_churn(api: DemoApi, nodes: Vec<NodeSpec>, seed: u64, mut stop: watch::Receiver<bool>) -> u64 {
    let mut rng = Rng::new(seed ^ 0x6e6f6465);
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let mut count = 0;
    loop {
        let wait = Duration::from_secs_f64(rng.range(6.0, 15.0));
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return count,
            _ = tokio::time::sleep(wait) => {}
        }
        let listed = api.list("v1", "nodes", None, GROUP_LABEL, "").await.unwrap_or_default();
        let Some(name) = leased_first(&listed, &mut rng, &names) else {
            continue;
        };
        let Some(spec) = nodes.iter().find(|n| n.name == name) else {
            continue;
        };
        let now = DeleteOpts {
            grace_period: Some(0),
            ..DeleteOpts::default()
        };
        if api.delete("v1", "nodes", None, &name, &now).await.is_err() {
            continue;
        }
        count += 1;
        tokio::time::sleep(Duration::from_secs_f64(rng.range(1.0, 4.0))).await;
        register(&api, spec).await;
    }
}

/// The node a perturbation hits: a leased one of `listed`, 7 times in 10 when there is one, else one of
/// `others`; None when both are empty.
fn leased_first(listed: &[serde_json::Value], rng: &mut Rng, others: &[String]) -> Option<String> {
    let leased: Vec<String> = listed
        .iter()
        .filter(|n| n["metadata"]["labels"][STATE_LABEL] == "leased")
        .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    if !leased.is_empty() && rng.range(0.0, 1.0) < 0.7 {
        Some(rng.pick(&leased).clone())
    } else {
        (!others.is_empty()).then(|| rng.pick(others).clone())
    }
}

/// Registers a node again, retrying until it is there.
pub async fn register(api: &DemoApi, spec: &NodeSpec) {
    for _ in 0..100 {
        if api.get("v1", "nodes", None, &spec.name).await.is_ok() || create_node(api, spec).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The label that stops the run's heartbeats for a node (its kubelet is down).
pub const KUBELET_DOWN_LABEL: &str = "chaos.sublet.dev/kubelet-down";

/// Stops a node's kubelet now and then until `stop`: NotReady for 2–6 s; answers how many times.
pub async fn not_ready(api: DemoApi, seed: u64, mut stop: watch::Receiver<bool>) -> u64 {
    let mut rng = Rng::new(seed ^ 0x7265_6164);
    let mut count = 0;
    loop {
        let wait = Duration::from_secs_f64(rng.range(6.0, 15.0));
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return count,
            _ = tokio::time::sleep(wait) => {}
        }
        let listed = api.list("v1", "nodes", None, GROUP_LABEL, "").await.unwrap_or_default();
        let names: Vec<String> = listed
            .iter()
            .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        let Some(name) = leased_first(&listed, &mut rng, &names) else {
            continue;
        };
        let down = json!({"metadata": {"labels": {KUBELET_DOWN_LABEL: "true"}}});
        if api
            .patch("v1", "nodes", None, &name, PatchKind::Merge, &down, None)
            .await
            .is_err()
        {
            continue;
        }
        let now = sublet_sandbox::meta::format_time(jiff::Timestamp::now());
        let status = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "NodeStatusUnknown",
            "message": "Kubelet stopped posting node status.", "lastTransitionTime": now}]}});
        let _ = api
            .patch("v1", "nodes", None, &name, PatchKind::Merge, &status, Some("status"))
            .await;
        count += 1;
        tokio::time::sleep(Duration::from_secs_f64(rng.range(2.0, 6.0))).await;
        kubelet_up(&api, &name).await;
    }
}

/// Starts a node's kubelet again: its heartbeats post Ready on their next round.
async fn kubelet_up(api: &DemoApi, name: &str) {
    let up = json!({"metadata": {"labels": {KUBELET_DOWN_LABEL: null}}});
    for _ in 0..50 {
        if api
            .patch("v1", "nodes", None, name, PatchKind::Merge, &up, None)
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts every stopped kubelet again.
pub async fn all_kubelets_up(api: &DemoApi) {
    for node in api
        .list("v1", "nodes", None, KUBELET_DOWN_LABEL, "")
        .await
        .unwrap_or_default()
    {
        if let Some(name) = node["metadata"]["name"].as_str() {
            kubelet_up(api, name).await;
        }
    }
}

/// Sets the pool's mode.
pub async fn set_mode(api: &DemoApi, mode: &str) -> bool {
    let patch = json!({"spec": {"mode": mode}});
    api.patch(
        "sublet.dev/v1alpha1",
        "tenantpools",
        None,
        POOL,
        PatchKind::Merge,
        &patch,
        None,
    )
    .await
    .is_ok()
}

/// Flips the pool to Observe for a moment, now and then, until `stop`; answers how many times. The moment
/// is up to the notice and 4 s more, so that some deadlines pass while the pool is in Observe.
pub async fn mode_flips(api: DemoApi, notice_seconds: i64, seed: u64, mut stop: watch::Receiver<bool>) -> u64 {
    let mut rng = Rng::new(seed ^ 0x6d6f6465);
    let mut count = 0;
    loop {
        let wait = Duration::from_secs_f64(rng.range(5.0, 15.0));
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return count,
            _ = tokio::time::sleep(wait) => {}
        }
        if set_mode(&api, "Observe").await {
            count += 1;
        }
        tokio::time::sleep(Duration::from_secs_f64(rng.range(1.0, notice_seconds as f64 + 4.0))).await;
        while !set_mode(&api, "Enforce").await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
