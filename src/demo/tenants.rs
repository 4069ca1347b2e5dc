//! Tenants: each leases whole nodes through a `GpuLease`, runs one pod per bound node with the selector and
//! tolerations the lease status names, and comes back later.
//!
//! ```text
//!   Idle ──(after a while)──▶ create GpuLease ─▶ Waiting ──(Bound)──▶ Working: keep one pod per bound node
//!     ▲                                   │(too long)                │ (job done, or lease Released)
//!     └───────────── delete the lease ◀───┴──────────────────────────┘
//! ```
//! Tenant pods carry `demo.sublet.dev/checkpoint-seconds`: the kubelet ends them that long after the
//! reclaim annotation appears (they save their work and exit). The last tenant is careless: its pods carry
//! none and wait to be evicted at the deadline.

use serde_json::{Value, json};
use tokio::sync::watch;

use super::api::DemoApi;
use super::{CHECKPOINT_ANNOTATION, GPU_RESOURCE, RUN_ANNOTATION, Rng, SimClock};
use sublet_sandbox::DeleteOpts;

const NAMES: [&str; 6] = ["acme", "globex", "initech", "umbrella", "hooli", "stark"];

/// The namespace of tenant `i`.
pub fn namespace(i: usize) -> String {
    match NAMES.get(i) {
        Some(n) => n.to_string(),
        None => format!("tenant-{i}"),
    }
}

pub struct Tenant {
    pub namespace: String,
    /// Whether its pods checkpoint on notice (the careless one's are evicted).
    pub checkpoints: bool,
    rng: Rng,
}

impl Tenant {
    pub fn new(index: usize, seed: u64) -> Self {
        Tenant {
            namespace: namespace(index),
            checkpoints: index != 2,
            rng: Rng::new(seed.wrapping_add(97 * index as u64 + 5)),
        }
    }
}

enum State {
    Idle { until: f64 },
    Waiting { lease: String, since: f64 },
    Working { lease: String, job_end: f64 },
}

const API: &str = "sublet.dev/v1alpha1";

/// Runs one tenant until `stop`.
pub async fn run(api: DemoApi, mut tenant: Tenant, clock: SimClock, mut stop: watch::Receiver<bool>) {
    let mut state = State::Idle {
        until: tenant.rng.range(0.2, 2.0) * 3600.0,
    };
    let mut count = 0u32;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = clock.sim_elapsed();
        state = step(&api, &mut tenant, state, now, &mut count).await;
    }
}

async fn step(api: &DemoApi, t: &mut Tenant, state: State, now: f64, count: &mut u32) -> State {
    let ns = t.namespace.clone();
    match state {
        State::Idle { until } if now >= until => {
            *count += 1;
            let name = format!("job-{count}");
            let gpus = *t.rng.pick(&[16, 24, 32, 32, 48]);
            let lease = json!({"apiVersion": API, "kind": "GpuLease", "metadata": {"name": name},
                "spec": {"pool": super::POOL, "gpus": gpus}});
            match api.create(API, "gpuleases", Some(&ns), lease).await {
                Ok(_) => State::Waiting {
                    lease: name,
                    since: now,
                },
                Err(_) => State::Idle { until: now + 1800.0 },
            }
        }
        State::Waiting { lease, since } => {
            let status = api
                .get(API, "gpuleases", Some(&ns), &lease)
                .await
                .map(|l| l["status"].clone());
            match status {
                Ok(s) if s["phase"] == "Bound" => State::Working {
                    lease,
                    job_end: now + t.rng.range(6.0, 14.0) * 3600.0,
                },
                // Nothing to lend for a long while: give up and try again later.
                Ok(_) if now - since > 4.0 * 3600.0 => give_up(api, t, &lease, now).await,
                Ok(_) => State::Waiting { lease, since },
                Err(_) => State::Idle { until: now + 1800.0 },
            }
        }
        State::Working { lease, job_end } => {
            let Ok(obj) = api.get(API, "gpuleases", Some(&ns), &lease).await else {
                return State::Idle { until: now + 1800.0 };
            };
            let status = &obj["status"];
            let pods = api
                .list("v1", "pods", Some(&ns), &format!("demo.sublet.dev/lease={lease}"), "")
                .await
                .unwrap_or_default();
            let alive: Vec<&Value> = pods
                .iter()
                .filter(|p| !super::nodes::finished(p) && !p["metadata"]["deletionTimestamp"].is_string())
                .collect();
            let phase = status["phase"].as_str().unwrap_or("");
            if matches!(phase, "Released" | "Expired") || (now >= job_end && alive.is_empty()) {
                return give_up(api, t, &lease, now).await;
            }
            let nodes = status["nodeCount"].as_u64().unwrap_or(0) as usize;
            if phase == "Bound" && now < job_end && alive.len() < nodes {
                // Fresh pods (or pods resumed from their checkpoint) for the nodes the lease holds.
                let per_node = status["gpus"].as_u64().unwrap_or(0) / nodes.max(1) as u64;
                for _ in alive.len()..nodes {
                    *count += 1;
                    let pod = tenant_pod(
                        &format!("{lease}-w{count}"),
                        &lease,
                        status,
                        per_node.max(1),
                        job_end - now,
                        t.checkpoints,
                    );
                    let _ = api.create("v1", "pods", Some(&ns), pod).await;
                }
            }
            State::Working { lease, job_end }
        }
        idle => idle,
    }
}

/// Deletes the lease and rests for a few simulated hours.
async fn give_up(api: &DemoApi, t: &mut Tenant, lease: &str, now: f64) -> State {
    let _ = api
        .delete(API, "gpuleases", Some(&t.namespace), lease, &DeleteOpts::default())
        .await;
    State::Idle {
        until: now + t.rng.range(1.0, 4.0) * 3600.0,
    }
}

pub(crate) fn tenant_pod(
    name: &str,
    lease: &str,
    status: &Value,
    gpus: u64,
    run_seconds: f64,
    checkpoints: bool,
) -> Value {
    let mut tolerations: Vec<Value> = status["tolerations"].as_array().cloned().unwrap_or_default();
    tolerations.push(json!({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}));
    let mut annotations = json!({RUN_ANNOTATION: format!("{:.0}", run_seconds.max(60.0))});
    if checkpoints {
        annotations[CHECKPOINT_ANNOTATION] = json!("600");
    }
    let n = gpus.to_string();
    json!({
        "metadata": {"name": name, "labels": {"demo.sublet.dev/lease": lease}, "annotations": annotations},
        "spec": {
            "nodeSelector": status["nodeSelector"].clone(),
            "tolerations": tolerations,
            "terminationGracePeriodSeconds": 1,
            // The `restricted` Pod Security level sublet has tenant namespaces enforce.
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            // Tenant pods pull their images and mount no ServiceAccount token (the chart's admission policy).
            "automountServiceAccountToken": false,
            "containers": [{"name": "job", "image": "tenant/finetune:1", "imagePullPolicy": "Always",
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
                "resources": {"requests": {GPU_RESOURCE: n}, "limits": {GPU_RESOURCE: n}}}],
        },
    })
}
