//! A pool through a typo and leases it cannot serve (`SUBLET_TEST_CLUSTER`): an invalid spec stops new
//! lending only; a lease larger than its pool, or naming a pool that does not exist, says why.

use std::time::Duration;

use crate::support::cluster::*;
use crate::support::real::{Backend, clusters};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;
use sublet::api::{Condition, GpuLease, LeasePhase, TenantPool, TenantPoolStatus};
use sublet_sandbox::SandboxConfig;

const POOL: &str = "a100";

fn spec(notice: i64) -> serde_json::Value {
    json!({
        "mode": "Enforce",
        "idle": {"forSeconds": 0},
        "reclaim": {"noticeSeconds": notice, "cooldownSeconds": 0},
        "pricing": {"defaultPerGpuHour": 3.6},
    })
}

async fn pool_status(env: &TestEnv) -> TenantPoolStatus {
    Api::<TenantPool>::all(env.client.clone())
        .get(&env.name(POOL))
        .await
        .unwrap()
        .status
        .unwrap_or_default()
}

fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// The events about `kind` objects named `name` with `reason`.
async fn events(env: &TestEnv, ns: Option<&str>, kind: &str, name: &str, reason: &str) -> usize {
    events_about(&env.client, ns, kind)
        .await
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .count()
}

async fn sublet_nodes(env: &TestEnv) -> Vec<String> {
    let prefix = env.name("gpu-");
    Api::<Node>::all(env.client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|n| n.metadata.name.as_deref().is_some_and(|m| m.starts_with(&prefix)))
        .filter(|n| label(n, "sublet.dev/state").is_some())
        .map(|n| n.metadata.name.clone().unwrap())
        .collect()
}

/// A pool lending two nodes, one leased, gets a time zone the schema cannot check together with a notice of
/// ten minutes. Its status keeps every figure and says what is wrong; nothing new is lent or bound; internal
/// demand still takes both nodes back, the leased one at the deadline of the last valid spec's notice; and
/// the pool can be deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_spec_stops_new_lending_only() {
    for backend in clusters() {
        invalid_spec(backend).await;
    }
}

async fn invalid_spec(backend: Backend) {
    let env = TestEnv::start(backend, SandboxConfig::default()).await;
    let c = env.client.clone();
    env.gpu_node("gpu-1", 8).await;
    env.gpu_node("gpu-2", 8).await;
    let pool = env.name(POOL);
    create_pool(&c, &pool, env.pool_spec(spec(4))).await;
    let run = env.controller("sublet-0", false);
    create_lease(&c, &env.acme, "job", json!({"pool": pool, "gpus": 8})).await;
    let s = eventually_seen(30, "the lease bound", || async {
        match lease_status(&env, "job").await {
            Some(s) if s.phase == LeasePhase::Bound && s.gpu_seconds > 0 => Ok(s),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await;
    let leased = s.nodes[0].clone();
    env.tenant_pod("worker", 8, &s, &leased).await;
    let before = eventually_seen(20, "the pool's figures", || async {
        let s = pool_status(&env).await;
        match (s.revenue > 0.0, s.totals.nodes, s.last_valid_spec.is_some()) {
            (true, 2, true) => Ok(s),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await;

    let typo = json!({"spec": {"timeZone": "Europe/Berlinn", "reclaim": {"noticeSeconds": 600}}});
    Api::<TenantPool>::all(c.clone())
        .patch(&pool, &PatchParams::default(), &Patch::Merge(&typo))
        .await
        .unwrap();
    let broken = eventually_seen(20, "the pool to say its spec is invalid", || async {
        let s = pool_status(&env).await;
        match condition(&s.conditions, "Ready") {
            Some(r) if r.reason == "InvalidSpec" => Ok(s),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await;
    let ready = condition(&broken.conditions, "Ready").unwrap();
    assert_eq!(ready.status, "False");
    assert!(ready.message.contains("Europe/Berlinn"), "{}", ready.message);
    assert_eq!(broken.lending.as_deref(), Some("InvalidSpec"));
    assert_eq!(broken.totals.nodes, 2, "the figures stay: {broken:?}");
    assert_eq!(broken.nodes.len(), 2);
    assert!(broken.revenue >= before.revenue && broken.accounted_until.is_some());
    assert_eq!(
        broken.last_valid_spec, before.last_valid_spec,
        "the last valid spec is kept"
    );
    eventually(20, "the InvalidSpec event", || async {
        (events(&env, None, "TenantPool", &pool, "InvalidSpec").await >= 1).then_some(())
    })
    .await;

    // Nothing new is bound.
    create_lease(&c, &env.acme, "second", json!({"pool": pool, "gpus": 8})).await;
    eventually_seen(20, "the new lease to say why it waits", || async {
        match lease_status(&env, "second").await {
            Some(s) if s.reason.as_deref().is_some_and(|r| r.contains("Europe/Berlinn")) => Ok(()),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await;

    // Internal demand takes both nodes back: the idle one at once, the leased one at the deadline of a notice
    // of 4 s (the last valid spec's), not 600.
    let asked = Timestamp::now();
    for name in ["train-1", "train-2"] {
        gpu_pod(&c, &env.ml, name, 8, None, json!({})).await;
    }
    let deadline = eventually_seen(20, "the notice", || async {
        match lease_status(&env, "job").await {
            Some(s) if s.phase == LeasePhase::Reclaiming => Ok(s.notice_deadline.unwrap().0),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await;
    assert!(
        deadline.duration_since(asked).as_secs() <= 10,
        "the notice of the last valid spec: deadline {deadline}, asked at {asked}"
    );
    eventually_seen(30, "both nodes back", || async {
        match sublet_nodes(&env).await {
            out if out.is_empty() => Ok(()),
            out => Err(format!("still out: {out:?}")),
        }
    })
    .await;
    assert!(Timestamp::now() >= deadline, "not before the deadline");
    // The internal work goes; the nodes are idle, and nothing is lent again while the spec is invalid.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(c.clone(), &env.ml);
    for name in ["train-1", "train-2"] {
        pods.delete(name, &DeleteParams::default()).await.unwrap();
    }
    eventually(30, "the internal pods gone", || async {
        pods.list(&ListParams::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sublet_nodes(&env).await, Vec::<String>::new(), "nothing new is lent");
    assert_eq!(lease_status(&env, "second").await.unwrap().phase, LeasePhase::Pending);

    // The pool can be deleted.
    Api::<TenantPool>::all(c.clone())
        .delete(&pool, &DeleteParams::default())
        .await
        .unwrap();
    eventually(30, "the pool gone", || async {
        Api::<TenantPool>::all(c.clone())
            .get_opt(&pool)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    run.stop().await;
}

/// A lease asking for more GPUs than its pool has in all, and one naming a pool that does not exist, each say
/// why in a condition and a Warning event; once the missing pool exists, the lease says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_too_large_or_of_a_missing_pool_says_why() {
    for backend in clusters() {
        leases_that_cannot_be_served(backend).await;
    }
}

async fn leases_that_cannot_be_served(backend: Backend) {
    let env = TestEnv::start(backend, SandboxConfig::default()).await;
    let c = env.client.clone();
    env.gpu_node("gpu-1", 8).await;
    let pool = env.name(POOL);
    create_pool(&c, &pool, env.pool_spec(spec(4))).await;
    let run = env.controller("sublet-0", false);

    create_lease(&c, &env.acme, "huge", json!({"pool": pool, "gpus": 64})).await;
    let s = eventually_seen(20, "Unschedulable", || async {
        let s = lease_status(&env, "huge").await.unwrap_or_default();
        match condition(&s.conditions, "Unschedulable") {
            Some(u) if u.status == "True" => Ok(s),
            _ => Err(format!("{s:?}")),
        }
    })
    .await;
    let u = condition(&s.conditions, "Unschedulable").unwrap();
    assert!(
        u.message.contains("asks for 64 GPUs and the pool has 8 in all"),
        "{}",
        u.message
    );
    assert_eq!(s.phase, LeasePhase::Pending);
    eventually(20, "the Unschedulable event", || async {
        (events(&env, Some(&env.acme), "GpuLease", "huge", "Unschedulable").await == 1).then_some(())
    })
    .await;

    let missing = env.name("nowhere");
    create_lease(&c, &env.acme, "lost", json!({"pool": missing, "gpus": 8})).await;
    let s = eventually_seen(20, "PoolNotFound", || async {
        let s = lease_status(&env, "lost").await.unwrap_or_default();
        match condition(&s.conditions, "PoolNotFound") {
            Some(p) if p.status == "True" => Ok(s),
            _ => Err(format!("{s:?}")),
        }
    })
    .await;
    assert_eq!(s.phase, LeasePhase::Pending);
    assert!(
        s.reason
            .as_deref()
            .unwrap()
            .contains(&format!("TenantPool {missing} does not exist")),
        "{s:?}"
    );
    eventually(20, "the PoolNotFound event", || async {
        (events(&env, Some(&env.acme), "GpuLease", "lost", "PoolNotFound").await == 1).then_some(())
    })
    .await;

    // The pool appears (selecting no node): the lease is served by it and no longer says it is missing.
    create_pool(
        &c,
        &missing,
        json!({"mode": "Enforce", "nodeSelector": {"matchLabels": {"sublet.test/none": "none"}}}),
    )
    .await;
    eventually_seen(20, "PoolNotFound turned False", || async {
        let s = lease_status(&env, "lost").await.unwrap_or_default();
        match condition(&s.conditions, "PoolNotFound") {
            Some(p) if p.status == "False" => Ok(()),
            _ => Err(format!("{s:?}")),
        }
    })
    .await;
    let pools: Api<TenantPool> = Api::all(c.clone());
    pools.delete(&missing, &DeleteParams::default()).await.unwrap();
    eventually(20, "the second pool gone", || async {
        pools.get_opt(&missing).await.ok()?.is_none().then_some(())
    })
    .await;
    run.stop().await;
}

/// Nodes that leave the pool's selection while out: a lent one goes back at once; a leased one stays with its
/// lease to the lease's end, then leaves the pool; neither is lent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_no_longer_selected_goes_back_when_its_lease_lets_it() {
    for backend in clusters() {
        unselected(backend).await;
    }
}

async fn unselected(backend: Backend) {
    let env = TestEnv::start(backend, SandboxConfig::default()).await;
    let c = env.client.clone();
    let nodes: Api<Node> = Api::all(c.clone());
    let mark = |value: serde_json::Value| json!({"metadata": {"labels": {"sublet.test/pool": value}}});
    let mut names = Vec::new();
    for base in ["gpu-1", "gpu-2"] {
        let name = env.gpu_node(base, 8).await;
        nodes
            .patch(&name, &PatchParams::default(), &Patch::Merge(&mark(json!("a"))))
            .await
            .unwrap();
        names.push(name);
    }
    let pool = env.name(POOL);
    let mut pool_spec = env.pool_spec(spec(4));
    match pool_spec.get_mut("nodeSelector") {
        Some(sel) => sel["matchLabels"]["sublet.test/pool"] = json!("a"),
        None => pool_spec["nodeSelector"] = json!({"matchLabels": {"sublet.test/pool": "a"}}),
    }
    create_pool(&c, &pool, pool_spec).await;
    let run = env.controller("sublet-0", false);
    create_lease(&c, &env.acme, "job", json!({"pool": pool, "gpus": 8})).await;
    let s = eventually_seen(30, "the lease bound", || async {
        match lease_status(&env, "job").await {
            Some(s) if s.phase == LeasePhase::Bound => Ok(s),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await;
    let leased = s.nodes[0].clone();
    env.tenant_pod("worker", 8, &s, &leased).await;
    eventually_seen(20, "both nodes out", || async {
        match sublet_nodes(&env).await {
            out if out.len() == 2 => Ok(()),
            out => Err(format!("{out:?}")),
        }
    })
    .await;

    for name in &names {
        nodes
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&mark(serde_json::Value::Null)),
            )
            .await
            .unwrap();
    }
    // The lent node goes back at once; the leased one stays with its lease.
    eventually_seen(20, "the lent node back", || async {
        match sublet_nodes(&env).await {
            out if out == [leased.clone()] => Ok(()),
            out => Err(format!("{out:?}")),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sublet_nodes(&env).await, vec![leased.clone()]);
    let s = lease_status(&env, "job").await.unwrap();
    assert_eq!((s.phase, s.nodes.clone()), (LeasePhase::Bound, vec![leased.clone()]));

    // The lease ends: its node goes back through notice and leaves the pool; nothing is lent again.
    Api::<GpuLease>::namespaced(c.clone(), &env.acme)
        .delete("job", &DeleteParams::default())
        .await
        .unwrap();
    eventually_seen(30, "the leased node back", || async {
        match sublet_nodes(&env).await {
            out if out.is_empty() => Ok(()),
            out => Err(format!("{out:?}")),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sublet_nodes(&env).await,
        Vec::<String>::new(),
        "no longer selected: never lent again"
    );
    let members = pool_status(&env).await.totals.nodes;
    assert_eq!(members, 0, "both left the pool");
    run.stop().await;
}
