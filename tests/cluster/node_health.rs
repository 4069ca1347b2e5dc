//! Leased nodes that are lost, not Ready or shrinking (`SUBLET_TEST_CLUSTER`): a lost node ends its share of
//! the lease at the loss, with `NodeLost`, and a tenant pod left on the node registered again under its name is
//! a breach, evicted at once; a node that is not Ready bills nothing from then and goes back first under
//! internal demand; a node whose GPUs shrink bills what it has, and at none under internal demand its lease
//! is reclaimed. Every bill is checked to the second against the times the lease's holds record, across a
//! restart of the controller.

use crate::support::cluster::*;
use crate::support::real::{Backend, clusters};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::DeleteParams;
use serde_json::json;
use sublet::api::{Condition, GpuLease, GpuLeaseStatus, LeasePhase, NodeHold};
use sublet_sandbox::SandboxConfig;

const POOL: &str = "a100";
const NOTICE: i64 = 4;

fn spec() -> serde_json::Value {
    json!({
        "mode": "Enforce",
        "idle": {"forSeconds": 0},
        "reclaim": {"noticeSeconds": NOTICE, "cooldownSeconds": 0},
        "pricing": {"defaultPerGpuHour": 3.6},
    })
}

async fn status(env: &TestEnv, name: &str) -> Option<GpuLeaseStatus> {
    Api::<GpuLease>::namespaced(env.client.clone(), &env.acme)
        .get_opt(name)
        .await
        .ok()??
        .status
}

fn condition<'a>(s: &'a GpuLeaseStatus, type_: &str) -> Option<&'a Condition> {
    s.conditions.iter().find(|c| c.type_ == type_)
}

fn hold<'a>(s: &'a GpuLeaseStatus, node: &str) -> &'a NodeHold {
    s.holds.iter().find(|h| h.node == node).expect("a hold of the node")
}

/// Now, in whole seconds, as statuses are written.
fn second() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap()
}

fn secs(from: Timestamp, to: Timestamp) -> i64 {
    to.duration_since(from).as_secs()
}

/// A lease `job` of `gpus` bound to every node of the test, with a tenant pod `worker-I` on each; its status
/// with `nodes` in the order of the pods (kube-scheduler picks on the real control plane).
async fn leased(env: &TestEnv, gpus: u32, nodes: usize) -> GpuLeaseStatus {
    create_lease(
        &env.client,
        &env.acme,
        "job",
        json!({"pool": env.name(POOL), "gpus": gpus}),
    )
    .await;
    let s = eventually_seen(30, "the lease bound and accounted", || async {
        match status(env, "job").await {
            Some(s) if s.phase == LeasePhase::Bound && s.nodes.len() == nodes && s.gpu_seconds > 0 => Ok(s),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await;
    let mut s = s;
    if env.backend == Backend::Sandbox {
        for (i, node) in s.nodes.iter().enumerate() {
            env.tenant_pod(&format!("worker-{i}"), 8, &s, node).await;
        }
        return s;
    }
    let mut placed = Vec::new();
    for i in 0..nodes {
        placed.push(env.tenant_pod_placed(&format!("worker-{i}"), 8, &s).await);
    }
    let mut sorted = placed.clone();
    sorted.sort();
    let mut bound = s.nodes.clone();
    bound.sort();
    assert_eq!(sorted, bound, "one tenant pod on each node of the lease");
    s.nodes = placed;
    s
}

/// The lease once it has ended, its ledger final.
async fn ended(env: &TestEnv) -> GpuLeaseStatus {
    eventually_seen(60, "the lease ended", || async {
        match status(env, "job").await {
            Some(s) if s.phase == LeasePhase::Released && s.holds.iter().all(|h| h.returned_at.is_some()) => {
                let last = s.holds.iter().filter_map(|h| h.returned_at.as_ref()).map(|t| t.0).max();
                match s.accounted_until.as_ref().map(|t| t.0) == last {
                    true => Ok(s),
                    false => Err(format!("not accounted to the end yet: {s:?}")),
                }
            }
            seen => Err(format!("{seen:?}")),
        }
    })
    .await
}

/// A lease of two nodes loses one (deleted from the cluster): its share ends at the loss with `NodeLost`,
/// the lease stays Bound with the other. The node registers again under its name: a new internal node, and
/// the tenant's pod still bound to that name is a breach, evicted at once with a Warning event. Losing the
/// second node ends the lease, saying why; each node is billed to its loss, to the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_node_ends_its_share_and_a_pod_on_its_namesake_is_evicted() {
    for backend in clusters() {
        lost_node(backend).await;
    }
}

async fn lost_node(backend: Backend) {
    let env = TestEnv::start(backend, SandboxConfig::default()).await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    env.gpu_node("gpu-1", 8).await;
    env.gpu_node("gpu-2", 8).await;
    create_pool(&env.client, &env.name(POOL), env.pool_spec(spec())).await;
    let run = env.controller("sublet-0", false);
    let s = leased(&env, 16, 2).await;
    let (gone, kept) = (s.nodes[0].clone(), s.nodes[1].clone());
    // `leased` put worker-0 on the first node, worker-1 on the second.
    let (pod_on_gone, other) = ("worker-0", "worker-1");

    let before = second();
    nodes.delete(&gone, &DeleteParams::default()).await.unwrap();
    let s = eventually_seen(30, "the lost node's share ended", || async {
        match status(&env, "job").await {
            Some(s) if s.holds.iter().any(|h| h.node == gone && h.lost) => Ok(s),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await;
    let seen_by = second();
    let lost = hold(&s, &gone).returned_at.clone().unwrap().0;
    assert!(
        before <= lost && lost <= seen_by,
        "lost at {lost}, deleted at {before}, seen by {seen_by}"
    );
    assert_eq!(s.phase, LeasePhase::Bound, "the lease keeps its other node: {s:?}");
    assert_eq!(s.nodes, std::slice::from_ref(&kept));
    let c = condition(&s, "NodeLost").expect("a NodeLost condition");
    assert_eq!(c.status, "True");
    assert!(c.message.contains(&gone), "{}", c.message);
    // A restarted controller reads the loss back from the hold and bills the same.
    run.stop().await;
    let run = env.controller("sublet-1", false);

    // The node registers again: a new node, not the lease's; the tenant's pod bound to its name is evicted.
    env.gpu_node(gone.strip_prefix(&env.name("")).unwrap(), 8).await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.acme);
    eventually(30, "the tenant pod on the node registered again evicted", || async {
        let p = pods.get_opt(pod_on_gone).await.ok()?;
        p.is_none_or(|p| p.metadata.deletion_timestamp.is_some()).then_some(())
    })
    .await;
    eventually(30, "a Breach event on the pod", || async {
        events_about(&env.client, Some(&env.acme), "Pod")
            .await
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("Breach")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod_on_gone)
                    && e.type_.as_deref() == Some("Warning")
            })
            .then_some(())
    })
    .await;
    let node = nodes.get(&gone).await.unwrap();
    assert_eq!(
        label(&node, "sublet.dev/lease"),
        None,
        "the new node is not the lease's"
    );
    let s = status(&env, "job").await.unwrap();
    assert_eq!(s.nodes, std::slice::from_ref(&kept));
    assert!(hold(&s, &gone).returned_at.is_some(), "the lost hold stays closed");
    // The other pod, on the lease's own node, is left alone.
    assert!(pods.get(other).await.unwrap().metadata.deletion_timestamp.is_none());

    // The last node is lost too: the lease ends and says why.
    let before = second();
    nodes.delete(&kept, &DeleteParams::default()).await.unwrap();
    let s = ended(&env).await;
    let lost_too = hold(&s, &kept).returned_at.clone().unwrap().0;
    assert!(before <= lost_too && lost_too <= second());
    assert!(hold(&s, &kept).lost);
    assert!(
        s.reason
            .as_deref()
            .is_some_and(|r| r.contains(&kept) && r.contains("left the cluster")),
        "{:?} (lost {gone} first, then {kept}): {:?}",
        s.reason,
        s.holds
    );
    eventually(30, "a Released event saying why", || async {
        events_about(&env.client, Some(&env.acme), "GpuLease")
            .await
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("Released")
                    && e.note.as_deref().is_some_and(|n| n.contains("left the cluster"))
            })
            .then_some(())
    })
    .await;
    let billed: i64 = [&gone, &kept]
        .iter()
        .map(|n| {
            let h = hold(&s, n);
            8 * secs(h.bound_at.0, h.returned_at.as_ref().unwrap().0)
        })
        .sum();
    assert_eq!(s.gpu_seconds, billed, "each node to its loss, to the second: {s:?}");
    run.stop().await;
}

/// A lease of two nodes; one stops heartbeating and turns not Ready (on the real control plane, by the node
/// lifecycle controller): the lease says so in `NodesDegraded` and bills that node nothing from then. Internal
/// demand for 8 GPUs then gives the not-Ready node notice first, and the Ready one too (the not-Ready one
/// serves nothing once back). The bill, to the second: the not-Ready node until it went not Ready, the other
/// until it went back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_is_not_ready_bills_nothing_and_goes_back_first() {
    for backend in clusters() {
        not_ready(backend).await;
    }
}

async fn not_ready(backend: Backend) {
    let env = TestEnv::start(backend, SandboxConfig::default()).await;
    env.gpu_node("gpu-1", 8).await;
    env.gpu_node("gpu-2", 8).await;
    create_pool(&env.client, &env.name(POOL), env.pool_spec(spec())).await;
    let run = env.controller("sublet-0", false);
    let s = leased(&env, 16, 2).await;
    let (sick, well) = (s.nodes[0].clone(), s.nodes[1].clone());

    let before = second();
    env.stop_kubelet(&sick).await;
    let s = eventually_seen(120, "the lease to say its node is not Ready", || async {
        match status(&env, "job").await {
            Some(s) if hold(&s, &sick).usable.last().is_some_and(|c| c.reason == "NotReady") => Ok(s),
            seen => Err(format!("{:?}", seen.map(|s| (s.holds, s.conditions)))),
        }
    })
    .await;
    let seen_by = second();
    let change = hold(&s, &sick).usable.last().unwrap().clone();
    assert_eq!(change.gpus, 0);
    assert!(before <= change.at.0 && change.at.0 <= seen_by, "{change:?}");
    let c = condition(&s, "NodesDegraded").expect("a NodesDegraded condition");
    assert_eq!(c.status, "True");
    assert!(
        c.message.contains(&sick) && c.message.contains("not Ready"),
        "{}",
        c.message
    );
    assert_eq!(s.phase, LeasePhase::Bound);
    assert!(hold(&s, &well).usable.is_empty(), "the Ready node is billed in full");
    // A restarted controller reads the change back from the hold: no second change, the same bill.
    run.stop().await;
    let run = env.controller("sublet-1", false);

    // Internal demand for one node's worth: the node that cannot serve gets notice first.
    gpu_pod(&env.client, &env.ml, "train", 8, None, json!({})).await;
    eventually(30, "a notice for the node that is not Ready", || async {
        events_about(&env.client, Some(&env.acme), "GpuLease")
            .await
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("ReclaimNotice")
                    && e.related.as_ref().and_then(|r| r.name.as_deref()) == Some(sick.as_str())
            })
            .then_some(())
    })
    .await;
    let s = ended(&env).await;
    let (h_sick, h_well) = (hold(&s, &sick), hold(&s, &well));
    assert_eq!(
        h_sick.usable,
        std::slice::from_ref(&change),
        "one change, as first recorded"
    );
    assert!(!h_sick.lost && !h_well.lost);
    let billed =
        8 * secs(h_sick.bound_at.0, change.at.0) + 8 * secs(h_well.bound_at.0, h_well.returned_at.as_ref().unwrap().0);
    assert_eq!(
        s.gpu_seconds, billed,
        "nothing for the node while it was not Ready: {s:?}"
    );
    env.start_kubelet(&sick).await;
    run.stop().await;
}

/// A leased node's GPUs drop 8 → 4 → 0: each step is recorded in the lease's hold and billed from then, and
/// `NodesDegraded` says so; with no internal demand the lease stays. Then 16 GPUs of internal work wait: a
/// lease at no usable GPU is reclaimed rather than left Bound. The bill, to the second: 8 GPUs to the first
/// drop, 4 to the second, none after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shrinking_node_bills_what_it_has_and_at_none_is_reclaimed_under_demand() {
    for backend in clusters() {
        shrinking(backend).await;
    }
}

async fn shrinking(backend: Backend) {
    let env = TestEnv::start(backend, SandboxConfig::default()).await;
    env.gpu_node("gpu-1", 8).await;
    create_pool(&env.client, &env.name(POOL), env.pool_spec(spec())).await;
    let run = env.controller("sublet-0", false);
    let s = leased(&env, 8, 1).await;
    let node = s.nodes[0].clone();
    let mut changes = Vec::new();
    for gpus in [4, 0] {
        let before = second();
        env.set_gpus(&node, gpus).await;
        let s = eventually_seen(30, "the drop recorded", || async {
            match status(&env, "job").await {
                Some(s) if hold(&s, &node).usable.last().is_some_and(|c| c.gpus == gpus as i32) => Ok(s),
                seen => Err(format!("{:?}", seen.map(|s| s.holds))),
            }
        })
        .await;
        let c = hold(&s, &node).usable.last().unwrap().clone();
        assert_eq!(c.reason, "Shrunk");
        assert!(before <= c.at.0 && c.at.0 <= second(), "{c:?}");
        let d = condition(&s, "NodesDegraded").expect("NodesDegraded");
        assert!(d.message.contains(&format!("{gpus} of its 8 GPUs")), "{}", d.message);
        assert_eq!(s.phase, LeasePhase::Bound, "no internal demand: the lease stays");
        changes.push(c.at.0);
    }
    gpu_pod(&env.client, &env.ml, "train-1", 8, None, json!({})).await;
    gpu_pod(&env.client, &env.ml, "train-2", 8, None, json!({})).await;
    let s = ended(&env).await;
    let h = hold(&s, &node);
    assert_eq!(h.usable.len(), 2, "{h:?}");
    let billed = 8 * secs(h.bound_at.0, changes[0]) + 4 * secs(changes[0], changes[1]);
    assert_eq!(s.gpu_seconds, billed, "8, then 4, then nothing: {s:?}");
    run.stop().await;
}
