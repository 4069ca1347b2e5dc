//! Mode changes while nodes are out, and pools selecting the same nodes (`SUBLET_TEST_CLUSTER`).
//!
//! Observe lends and binds nothing new, but carries out what is out: notices already given, evictions at the
//! deadline, returns, lease ends; switching modes never moves a deadline or gives a second notice. Two pools
//! selecting the same nodes: the older pool keeps them, both say so, the newer one's leases say why they wait,
//! and bind once the older pool is gone.

use crate::support::cluster::*;
use crate::support::real::{Backend, clusters};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;
use sublet::api::{Condition, GpuLeaseStatus, LeasePhase, TenantPool, TenantPoolStatus};
use sublet_sandbox::SandboxConfig;

const POOL: &str = "a100";
/// The shortest lease the schema allows.
const LEASE_SECONDS: i64 = 60;

fn spec(notice: i64) -> serde_json::Value {
    json!({
        "mode": "Enforce",
        "idle": {"forSeconds": 0},
        "reclaim": {"noticeSeconds": notice, "cooldownSeconds": 0},
        "pricing": {"defaultPerGpuHour": 3.6},
    })
}

async fn pool(env: &TestEnv, name: &str) -> Option<TenantPool> {
    Api::<TenantPool>::all(env.client.clone()).get_opt(name).await.ok()?
}

fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Sets the pool's mode and waits for a pass to have seen it (the status's observedGeneration).
async fn set_mode(env: &TestEnv, name: &str, mode: &str) {
    let patch = json!({"spec": {"mode": mode}});
    let patched = Api::<TenantPool>::all(env.client.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let generation = patched.metadata.generation;
    eventually_seen(20, "a pass in the new mode", || async {
        let s = pool(env, name).await.and_then(|p| p.status).unwrap_or_default();
        let lending = condition(&s.conditions, "Lending").map(|c| c.reason.clone());
        let observing = lending.as_deref() == Some("ObserveMode");
        match (s.observed_generation == generation, observing == (mode == "Observe")) {
            (true, true) => Ok(()),
            seen => Err(format!("{seen:?} {lending:?}")),
        }
    })
    .await;
}

/// The events with `reason` about the lease `name`.
async fn lease_events(env: &TestEnv, name: &str, reason: &str) -> usize {
    events_about(&env.client, Some(&env.acme), "GpuLease")
        .await
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .count()
}

/// The Warning events with `reason` about the pool `name`.
async fn pool_events(env: &TestEnv, name: &str, reason: &str) -> usize {
    events_about(&env.client, None, "TenantPool")
        .await
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reason) && e.type_.as_deref() == Some("Warning"))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .count()
}

/// A lease `name` of 8 GPUs bound, its ledger written once, with the tenant's pod running on its node.
async fn leased(env: &TestEnv, name: &str, extra: serde_json::Value) -> GpuLeaseStatus {
    let mut spec = json!({"pool": env.name(POOL), "gpus": 8});
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    create_lease(&env.client, &env.acme, name, spec).await;
    let s = eventually_seen(30, "the lease bound and accounted", || async {
        match lease_status(env, name).await {
            Some(s) if s.phase == LeasePhase::Bound && s.nodes.len() == 1 && s.gpu_seconds > 0 => Ok(s),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await;
    env.tenant_pod(&format!("{name}-worker"), 8, &s, &s.nodes[0]).await;
    s
}

/// A pool in Enforce with `nodes` nodes of 8 GPUs and the given notice, its controller running, and a lease
/// `job` (with `extra` in its spec) bound with its tenant's pod running.
async fn pool_with_a_lease(
    backend: Backend,
    nodes: usize,
    notice: i64,
    extra: serde_json::Value,
) -> (TestEnv, Running, GpuLeaseStatus) {
    let env = TestEnv::start(backend, SandboxConfig::default()).await;
    for i in 1..=nodes {
        env.gpu_node(&format!("gpu-{i}"), 8).await;
    }
    create_pool(&env.client, &env.name(POOL), env.pool_spec(spec(notice))).await;
    let run = env.controller("sublet-0", false);
    let s = leased(&env, "job", extra).await;
    (env, run, s)
}

/// The lease under notice: its deadline.
async fn under_notice(env: &TestEnv, name: &str) -> Timestamp {
    eventually_seen(2 * LEASE_SECONDS as u64, "the notice", || async {
        match lease_status(env, name).await {
            Some(s) if s.phase == LeasePhase::Reclaiming => Ok(s.notice_deadline.unwrap().0),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await
}

/// When sublet gave `node` back, as it stamped the node (whole seconds, as statuses are written).
async fn returned_at(env: &TestEnv, node: &str) -> Timestamp {
    returned_at_within(env, node, 40).await
}

/// The lease once it ended with `phase`: its ledger is every second from binding to `back`, once.
async fn billed_to_return(env: &TestEnv, name: &str, phase: LeasePhase, back: Timestamp) -> GpuLeaseStatus {
    let s = eventually_seen(30, "the lease ended and accounted to the return", || async {
        match lease_status(env, name).await {
            Some(s) if s.phase == phase && s.accounted_until.as_ref().is_some_and(|a| a.0 >= back) => Ok(s),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await;
    assert_eq!(s.holds.len(), 1, "{:?}", s.holds);
    assert_eq!(
        s.holds[0].returned_at.as_ref().map(|t| t.0),
        Some(back),
        "the hold closed when the node went back"
    );
    let held = back.duration_since(s.bound_at.as_ref().unwrap().0).as_secs();
    assert_eq!(s.gpu_seconds, 8 * held, "billed from binding to return, not past it");
    s
}

/// The names of this test's nodes that carry any sublet state.
async fn marked_nodes(env: &TestEnv) -> Vec<String> {
    let prefix = env.name("gpu-");
    Api::<Node>::all(env.client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|n| n.metadata.name.as_deref().is_some_and(|m| m.starts_with(&prefix)))
        .filter(|n| label(n, "sublet.dev/state").is_some() || label(n, "sublet.dev/pool").is_some())
        .map(|n| n.metadata.name.clone().unwrap())
        .collect()
}

/// Enforce → Observe during a notice: the tenant's pod is evicted at the deadline given (not before, not
/// never), the node comes back for the internal work that waits, the lease is billed to the return and no
/// further. Once nothing is out, Observe writes nothing: a new lease waits, saying why, and no node is lent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_carries_out_a_notice_given_in_enforce() {
    for backend in clusters() {
        observe_during_a_notice(backend).await;
    }
}

async fn observe_during_a_notice(backend: Backend) {
    let (env, run, s) = pool_with_a_lease(backend, 2, 4, json!({})).await;
    let (c, name, node) = (env.client.clone(), env.name(POOL), s.nodes[0].clone());
    for pod in ["train-1", "train-2"] {
        gpu_pod(&c, &env.ml, pod, 8, None, json!({})).await;
    }
    let deadline = under_notice(&env, "job").await;
    set_mode(&env, &name, "Observe").await;
    if let Some(s) = lease_status(&env, "job")
        .await
        .filter(|s| s.phase == LeasePhase::Reclaiming)
    {
        assert_eq!(
            s.notice_deadline.map(|t| t.0),
            Some(deadline),
            "the deadline never moved"
        );
        let cond = condition(&s.conditions, "Reclaiming").expect("the Reclaiming condition");
        assert_eq!(cond.status, "True", "{cond:?}");
    }
    let back = returned_at(&env, &node).await;
    assert!(back >= deadline, "back at {back}, not before the deadline {deadline}");
    let pods: Api<Pod> = Api::namespaced(c.clone(), &env.acme);
    assert!(
        pods.get_opt("job-worker").await.unwrap().is_none(),
        "the tenant's pod was evicted"
    );
    billed_to_return(&env, "job", LeasePhase::Released, back).await;
    assert_eq!(lease_events(&env, "job", "ReclaimNotice").await, 1, "one notice");
    assert!(
        marked_nodes(&env).await.is_empty(),
        "both nodes back: {:?}",
        marked_nodes(&env).await
    );

    // Nothing is out: Observe lends and binds nothing, and says what it would lend.
    let ml: Api<Pod> = Api::namespaced(c.clone(), &env.ml);
    for pod in ["train-1", "train-2"] {
        ml.delete(pod, &DeleteParams::default()).await.unwrap();
    }
    create_lease(&c, &env.acme, "second", json!({"pool": name, "gpus": 8})).await;
    let status: TenantPoolStatus = eventually_seen(30, "the pool would lend both nodes", || async {
        let s = pool(&env, &name).await.and_then(|p| p.status).unwrap_or_default();
        match s.totals.lendable_gpus {
            16 => Ok(s),
            seen => Err(format!("lendable {seen}")),
        }
    })
    .await;
    let lending = condition(&status.conditions, "Lending").unwrap();
    assert_eq!(
        (lending.status.as_str(), lending.reason.as_str()),
        ("False", "ObserveMode")
    );
    eventually_seen(20, "the new lease says why it waits", || async {
        match lease_status(&env, "second").await {
            Some(s) if s.reason.as_deref().is_some_and(|r| r.contains("Observe mode")) => Ok(s),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await;
    assert!(marked_nodes(&env).await.is_empty(), "nothing new lent");
    assert_eq!(lease_status(&env, "second").await.unwrap().phase, LeasePhase::Pending);
    run.stop().await;
}

/// Enforce → Observe, a notice given in Observe for internal demand, then Observe → Enforce → Observe within
/// that notice: one notice, one deadline, carried out at that deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_flips_within_a_notice_keep_one_notice_and_its_deadline() {
    for backend in clusters() {
        flips_within_a_notice(backend).await;
    }
}

async fn flips_within_a_notice(backend: Backend) {
    let (env, run, s) = pool_with_a_lease(backend, 1, 8, json!({})).await;
    let (c, name, node) = (env.client.clone(), env.name(POOL), s.nodes[0].clone());
    set_mode(&env, &name, "Observe").await;
    // Internal work arrives while the pool observes: the node out is still taken back, with notice.
    gpu_pod(&c, &env.ml, "train", 8, None, json!({})).await;
    let deadline = under_notice(&env, "job").await;
    let annotated = || async {
        let pods: Api<Pod> = Api::namespaced(c.clone(), &env.acme);
        let p = pods.get("job-worker").await.ok()?;
        let a = p.metadata.annotations?.get("sublet.dev/reclaim-deadline")?.clone();
        a.parse::<Timestamp>().ok()
    };
    assert_eq!(eventually(20, "the pod told the deadline", annotated).await, deadline);
    for mode in ["Enforce", "Observe"] {
        set_mode(&env, &name, mode).await;
        let s = lease_status(&env, "job").await.unwrap();
        assert_eq!(s.phase, LeasePhase::Reclaiming, "still under the same notice in {mode}");
        assert_eq!(
            s.notice_deadline.map(|t| t.0),
            Some(deadline),
            "deadline unchanged in {mode}"
        );
        if let Some(on_pod) = annotated().await {
            assert_eq!(on_pod, deadline, "the pod's deadline unchanged in {mode}");
        }
    }
    let back = returned_at(&env, &node).await;
    assert!(back >= deadline, "back at {back}, not before the deadline {deadline}");
    billed_to_return(&env, "job", LeasePhase::Released, back).await;
    assert_eq!(lease_events(&env, "job", "ReclaimNotice").await, 1, "one notice");
    run.stop().await;
}

/// A lease of 60 s (the shortest a lease may be) bound in Enforce ends while the pool observes: it gets its notice with its end as the
/// deadline, its pod is evicted then, its node comes back, and it is billed to the return, not beyond.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_ending_in_observe_ends_and_is_billed_to_its_return() {
    for backend in clusters() {
        lease_ends_in_observe(backend).await;
    }
}

async fn lease_ends_in_observe(backend: Backend) {
    let (env, run, s) = pool_with_a_lease(backend, 1, 4, json!({"durationSeconds": LEASE_SECONDS})).await;
    let (name, node) = (env.name(POOL), s.nodes[0].clone());
    let end = s
        .bound_at
        .as_ref()
        .unwrap()
        .0
        .checked_add(jiff::SignedDuration::from_secs(LEASE_SECONDS))
        .unwrap();
    set_mode(&env, &name, "Observe").await;
    let deadline = under_notice(&env, "job").await;
    assert_eq!(deadline, end, "the lease's end is its deadline");
    let back = returned_at_within(&env, &node, 2 * LEASE_SECONDS as u64).await;
    assert!(back >= end, "back at {back}, not before the lease's end {end}");
    billed_to_return(&env, "job", LeasePhase::Expired, back).await;
    assert!(marked_nodes(&env).await.is_empty());
    run.stop().await;
}

/// Two pools select the same two nodes. The older (created first, though its name sorts last) keeps both; each
/// pool has the Overlapping condition naming the other with the node count, and a Warning event; the newer
/// pool's lease waits and says the older pool holds the GPUs. A restart changes nothing. Once the older pool
/// is deleted its nodes come back, the newer pool takes them and binds its lease; an even older pool whose
/// selection then comes to match them leaves them with the pool holding them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_selecting_the_same_nodes_are_told_and_the_older_keeps_them() {
    for backend in clusters() {
        overlapping_pools(backend).await;
    }
}

async fn overlapping_pools(backend: Backend) {
    let env = TestEnv::start(backend, SandboxConfig::default()).await;
    let c = env.client.clone();
    env.gpu_node("gpu-1", 8).await;
    env.gpu_node("gpu-2", 8).await;
    let (older, newer) = (env.name("zeta"), env.name("alpha"));
    // The oldest pool of all selects none of these nodes until the end.
    let oldest = env.name("first");
    let mut none = spec(4);
    none["gpuModels"] = json!(["none"]);
    create_pool(&c, &oldest, env.pool_spec(none)).await;
    create_pool(&c, &older, env.pool_spec(spec(4))).await;
    // creationTimestamp counts whole seconds: the newer pool is created in a later second.
    let created = |p: Option<TenantPool>| p.and_then(|p| p.metadata.creation_timestamp).map(|t| t.0);
    let first = created(pool(&env, &older).await).unwrap();
    eventually(5, "the next second", || async {
        (Timestamp::now().as_second() > first.as_second()).then_some(())
    })
    .await;
    create_pool(&c, &newer, env.pool_spec(spec(4))).await;
    create_lease(&c, &env.acme, "job", json!({"pool": newer, "gpus": 8})).await;
    let mut run = env.controller("sublet-0", false);

    let contested = |name: String, keeps: u32| {
        let env = &env;
        async move {
            eventually_seen(30, "the Overlapping condition", || async {
                let s = pool(env, &name).await.and_then(|p| p.status).unwrap_or_default();
                match condition(&s.conditions, "Overlapping") {
                    Some(o) if o.status == "True" && s.totals.nodes == keeps as i32 => Ok(o.clone()),
                    seen => Err(format!("{seen:?} nodes {}", s.totals.nodes)),
                }
            })
            .await
        }
    };
    for round in ["first run", "after a restart"] {
        let o = contested(older.clone(), 2).await;
        assert_eq!(o.reason, "NodesContested");
        assert!(
            o.message
                .contains(&format!("pool {newer} selects 2 of the same nodes: this pool keeps 2")),
            "{round}: {}",
            o.message
        );
        let n = contested(newer.clone(), 0).await;
        assert!(
            n.message
                .contains(&format!("pool {older} selects 2 of the same nodes: this pool keeps 0")),
            "{round}: {}",
            n.message
        );
        let s = eventually_seen(20, "the lease says why it waits", || async {
            match lease_status(&env, "job").await {
                Some(s)
                    if s.reason
                        .as_deref()
                        .is_some_and(|r| r.contains(&format!("pool {older}"))) =>
                {
                    Ok(s)
                }
                seen => Err(format!("{seen:?}")),
            }
        })
        .await;
        assert_eq!(s.phase, LeasePhase::Pending, "{round}");
        assert!(s.reason.as_deref().unwrap().contains("the pool has 0 in all"), "{s:?}");
        assert!(
            condition(&s.conditions, "Unschedulable").is_none_or(|u| u.status != "True"),
            "not unschedulable: another pool holds the nodes: {s:?}"
        );
        // Every node sublet marked is the older pool's.
        let nodes: Api<Node> = Api::all(c.clone());
        for n in nodes.list(&ListParams::default()).await.unwrap().items {
            if n.metadata
                .name
                .as_deref()
                .is_some_and(|m| m.starts_with(&env.name("gpu-")))
            {
                let owner = label(&n, "sublet.dev/pool");
                assert!(
                    owner.is_none_or(|o| o == older),
                    "{round}: {:?} marked for {owner:?}",
                    n.metadata.name
                );
            }
        }
        run.stop().await;
        run = env.controller("sublet-1", false);
    }
    for p in [&older, &newer] {
        eventually(20, "an Overlapping event on each pool", || async {
            (pool_events(&env, p, "Overlapping").await == 1).then_some(())
        })
        .await;
    }

    Api::<TenantPool>::all(c.clone())
        .delete(&older, &DeleteParams::default())
        .await
        .unwrap();
    let s = eventually_seen(40, "the lease bound once the older pool is gone", || async {
        match lease_status(&env, "job").await {
            Some(s) if s.phase == LeasePhase::Bound => Ok(s),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await;
    assert_eq!(s.nodes.len(), 1);
    eventually_seen(20, "no overlap left", || async {
        let s = pool(&env, &newer).await.and_then(|p| p.status).unwrap_or_default();
        match (condition(&s.conditions, "Overlapping"), s.totals.nodes) {
            (Some(o), 2) if o.status == "False" => Ok(()),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await;
    assert!(pool(&env, &older).await.is_none(), "the older pool is gone");

    // The oldest pool's selection comes to match both nodes, both out with the newer pool (one leased, one
    // lent): they stay with the pool that holds them, and the lease stays bound.
    let all_models = json!({"spec": {"gpuModels": null}});
    Api::<TenantPool>::all(c.clone())
        .patch(&oldest, &PatchParams::default(), &Patch::Merge(&all_models))
        .await
        .unwrap();
    let o = contested(newer.clone(), 2).await;
    assert!(
        o.message
            .contains(&format!("pool {oldest} selects 2 of the same nodes: this pool keeps 2")),
        "{}",
        o.message
    );
    let f = contested(oldest.clone(), 0).await;
    assert!(f.message.contains("this pool keeps 0"), "{}", f.message);
    let after = lease_status(&env, "job").await.unwrap();
    assert_eq!(
        (after.phase, &after.nodes),
        (LeasePhase::Bound, &s.nodes),
        "the lease keeps its node"
    );
    let nodes: Api<Node> = Api::all(c.clone());
    for n in nodes.list(&ListParams::default()).await.unwrap().items {
        if n.metadata
            .name
            .as_deref()
            .is_some_and(|m| m.starts_with(&env.name("gpu-")))
        {
            assert_eq!(
                label(&n, "sublet.dev/pool"),
                Some(newer.as_str()),
                "{:?}",
                n.metadata.name
            );
        }
    }
    run.stop().await;
}
