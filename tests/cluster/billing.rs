//! Billing against faults and restarts (`SUBLET_TEST_CLUSTER`): every second a lease held a node is billed
//! once, from the lease's record of when each node was bound and returned, whatever write failed; the
//! pool's revenue and lent GPU-hours are the sums of its leases' ledgers; a lease is known by its UID.

use std::time::Duration;

use crate::support::cluster::*;
use crate::support::real::{Backend, clusters};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use sublet::api::{GpuLease, GpuLeaseStatus, LeasePhase, TenantPool};
use sublet_sandbox::{FaultAction, FaultConfig, FaultRule, SandboxConfig};

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

fn leases(env: &TestEnv) -> Api<GpuLease> {
    Api::namespaced(env.client.clone(), &env.acme)
}

async fn status(env: &TestEnv, name: &str) -> Option<GpuLeaseStatus> {
    leases(env).get_opt(name).await.ok()??.status
}

/// A lease `name` of 8 GPUs bound to the one node, with the tenant's pod running there, its ledger written
/// at least once; returns the node.
async fn leased(env: &TestEnv, name: &str) -> String {
    create_lease(&env.client, &env.acme, name, json!({"pool": env.name(POOL), "gpus": 8})).await;
    let s = eventually_seen(30, "the lease bound and accounted", || async {
        match status(env, name).await {
            Some(s) if s.phase == LeasePhase::Bound && s.nodes.len() == 1 && s.gpu_seconds > 0 => Ok(s),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await;
    env.tenant_pod(&format!("{name}-worker"), 8, &s, &s.nodes[0]).await;
    s.nodes[0].clone()
}

/// Every lease status and pool status write fails (500) while these faults are set; reads go through.
fn status_writes_fail() -> FaultConfig {
    let rule = |resource: &str| FaultRule {
        verbs: vec!["patch".into()],
        resources: vec![resource.into()],
        share: 1.0,
        limit: None,
        action: FaultAction::InternalError,
    };
    FaultConfig {
        seed: 3,
        rules: vec![rule("gpuleases.sublet.dev"), rule("tenantpools.sublet.dev")],
    }
}

/// When sublet gave `node` back, as it stamped the node (whole seconds, as statuses are written).
async fn returned_at(env: &TestEnv, node: &str) -> Timestamp {
    returned_at_within(env, node, 30).await
}

/// The pool's revenue and lent GPU-hours once they equal `cost` and `gpu_seconds`.
async fn pool_matches(env: &TestEnv, gpu_seconds: i64, cost: f64) {
    let pools: Api<TenantPool> = Api::all(env.client.clone());
    eventually_seen(20, "the pool's totals to be the leases' sums", || async {
        let s = pools
            .get(&env.name(POOL))
            .await
            .map_err(|e| e.to_string())?
            .status
            .unwrap_or_default();
        let hours = gpu_seconds as f64 / 3600.0;
        match ((s.revenue - cost).abs() < 1e-9, (s.lent_gpu_hours - hours).abs() < 1e-9) {
            (true, true) => Ok(()),
            _ => Err(format!(
                "revenue {} lentGpuHours {} (want {cost} and {hours})",
                s.revenue, s.lent_gpu_hours
            )),
        }
    })
    .await;
}

/// A lease under notice; every status write fails from then until after its node is back; the controller
/// is stopped and another started with the faults gone. The lease is billed for every second its node
/// was held (the notice included) and the pool's revenue is the lease's cost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_status_write_and_a_restart_bill_the_notice_as_it_was() {
    for backend in clusters() {
        late_write_bills_the_past(backend, false).await;
    }
}

/// The same for a lease deleted while bound: its final account, kept in the pool's status after the lease
/// is gone, counts every second, and the pool's revenue is that account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_deleted_while_bound_is_billed_to_its_last_second_through_faults_and_a_restart() {
    for backend in clusters() {
        late_write_bills_the_past(backend, true).await;
    }
}

async fn late_write_bills_the_past(backend: Backend, delete: bool) {
    let env = TestEnv::start(backend, SandboxConfig::default()).await;
    env.gpu_node("gpu-1", 8).await;
    create_pool(&env.client, &env.name(POOL), env.pool_spec(spec())).await;
    let run = env.controller("sublet-0", false);
    let node = leased(&env, "job").await;
    let uid = leases(&env).get("job").await.unwrap().metadata.uid.unwrap();
    if delete {
        leases(&env).delete("job", &DeleteParams::default()).await.unwrap();
    } else {
        gpu_pod(&env.client, &env.ml, "train", 8, None, json!({})).await;
    }
    env.set_faults(status_writes_fail());
    let back = returned_at(&env, &node).await;
    // A few passes more fail to write, then the controller dies.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let failed = env.faults_fired();
    assert!(failed[0] >= 1, "lease status writes failed: {failed:?}");
    run.stop().await;
    env.set_faults(FaultConfig::default());

    let run = env.controller("sublet-1", false);
    let (gpu_seconds, cost, bound_at) = if delete {
        let pools: Api<TenantPool> = Api::all(env.client.clone());
        let record = eventually_seen(30, "the deleted lease's final account", || async {
            let s = pools.get(&env.name(POOL)).await.map_err(|e| e.to_string())?.status;
            let ended = s.map(|s| s.ended_leases).unwrap_or_default();
            ended
                .into_iter()
                .find(|e| e.uid == uid)
                .ok_or_else(|| "no record yet".to_string())
        })
        .await;
        eventually(20, "the lease gone", || async {
            leases(&env).get_opt("job").await.ok()?.is_none().then_some(())
        })
        .await;
        (record.gpu_seconds, record.cost, record.bound_at.unwrap().0)
    } else {
        let s = eventually_seen(30, "the lease released", || async {
            match status(&env, "job").await {
                Some(s) if s.phase == LeasePhase::Released => Ok(s),
                seen => Err(format!("{seen:?}")),
            }
        })
        .await;
        assert_eq!(s.holds.len(), 1, "{:?}", s.holds);
        assert_eq!(s.holds[0].node, node);
        assert_eq!(
            s.holds[0].returned_at.as_ref().map(|t| t.0),
            Some(back),
            "closed when the node went back"
        );
        (s.gpu_seconds, s.cost, s.bound_at.unwrap().0)
    };
    let held = back.duration_since(bound_at).as_secs();
    assert!(held >= NOTICE, "the node was held {held}s, the notice included");
    assert_eq!(gpu_seconds, 8 * held, "every second from binding to return, once");
    assert!((cost - gpu_seconds as f64 / 3600.0 * 3.6).abs() < 1e-9, "cost {cost}");
    pool_matches(&env, gpu_seconds, cost).await;
    run.stop().await;
}

/// A lease deleted without sublet's finalizer while its node is under notice, and created again under the
/// same name: the new lease (a new UID) is never born holding the earlier lease's node, is billed nothing
/// until it is bound itself, and is then bound from its own creation on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_created_again_under_its_name_is_a_new_lease() {
    for backend in clusters() {
        recreated_under_the_same_name(backend).await;
    }
}

async fn recreated_under_the_same_name(backend: Backend) {
    let env = TestEnv::start(backend, SandboxConfig::default()).await;
    env.gpu_node("gpu-1", 8).await;
    create_pool(&env.client, &env.name(POOL), env.pool_spec(spec())).await;
    let run = env.controller("sublet-0", false);
    let node = leased(&env, "job").await;
    // Gone without its record (a lease that never got the finalizer, as one created in Observe mode).
    let strip = json!({"metadata": {"finalizers": null}});
    leases(&env)
        .patch("job", &PatchParams::default(), &Patch::Merge(&strip))
        .await
        .unwrap();
    leases(&env).delete("job", &DeleteParams::default()).await.unwrap();
    let nodes: Api<Node> = Api::all(env.client.clone());
    eventually(20, "the earlier lease's node under notice", || async {
        (label(&nodes.get(&node).await.ok()?, "sublet.dev/state") == Some("reclaiming")).then_some(())
    })
    .await;
    let again = create_lease(
        &env.client,
        &env.acme,
        "job",
        json!({"pool": env.name(POOL), "gpus": 8}),
    )
    .await;
    let created = again.metadata.creation_timestamp.unwrap().0;
    let new_uid = again.metadata.uid.unwrap();
    // Until the earlier lease's node is back, the new lease holds nothing and costs nothing.
    loop {
        let n = nodes.get(&node).await.unwrap();
        let s = status(&env, "job").await.unwrap_or_default();
        assert!(
            matches!(s.phase, LeasePhase::Pending),
            "the new lease is {:?} while the earlier one's node is out: {s:?}",
            s.phase
        );
        assert!(
            s.bound_at.is_none() && s.holds.is_empty() && s.gpu_seconds == 0,
            "{s:?}"
        );
        if label(&n, "sublet.dev/state").is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then the node is lent again and bound to the new lease, from a time after it was created.
    let s = eventually_seen(30, "the new lease bound", || async {
        match status(&env, "job").await {
            Some(s) if s.phase == LeasePhase::Bound => Ok(s),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await;
    assert!(s.bound_at.unwrap().0 >= Timestamp::from_second(created.as_second()).unwrap());
    let n = nodes.get(&node).await.unwrap();
    let on_node = n
        .metadata
        .annotations
        .unwrap_or_default()
        .get("sublet.dev/lease-uid")
        .cloned();
    assert_eq!(
        on_node.as_deref(),
        Some(new_uid.as_str()),
        "the node names the new lease's UID"
    );
    run.stop().await;
}

/// Every node write fails for a second and a half while a node goes under notice, so each pass's notice
/// fails (and the deadline it would give moves on with the clock): the tenant's pod is told its deadline only
/// once the notice on its node is written, so it is told once, and the deadline it is told never moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_is_told_its_deadline_once_when_the_notice_write_fails() {
    for backend in clusters() {
        told_once(backend).await;
    }
}

async fn told_once(backend: Backend) {
    use futures::StreamExt as _;
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::{WatchStreamExt as _, watcher};
    let env = TestEnv::start(backend, SandboxConfig::default()).await;
    env.gpu_node("gpu-1", 8).await;
    create_pool(&env.client, &env.name(POOL), env.pool_spec(spec())).await;
    let run = env.controller("sublet-0", false);
    let node = leased(&env, "job").await;
    // Every deadline the tenant's pods are told, from a watch, so that none goes unseen.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.acme);
    let told = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let watching = {
        let told = told.clone();
        tokio::spawn(async move {
            let mut changes = watcher(pods, watcher::Config::default()).applied_objects().boxed();
            while let Some(Ok(pod)) = changes.next().await {
                let deadline = pod
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("sublet.dev/reclaim-deadline"))
                    .cloned();
                let mut told = told.lock().unwrap();
                if let Some(d) = deadline
                    && told.last() != Some(&d)
                {
                    told.push(d);
                }
            }
        })
    };
    let node_writes_fail = FaultRule {
        verbs: vec!["patch".into(), "update".into()],
        resources: vec!["nodes".into()],
        share: 1.0,
        limit: None,
        action: FaultAction::InternalError,
    };
    env.set_faults(FaultConfig {
        seed: 5,
        rules: vec![node_writes_fail],
    });
    gpu_pod(&env.client, &env.ml, "train", 8, None, json!({})).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(env.faults_fired()[0] >= 2, "the notice's writes failed");
    env.set_faults(FaultConfig::default());
    returned_at(&env, &node).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    watching.abort();
    let told = told.lock().unwrap().clone();
    assert_eq!(told.len(), 1, "the pod was told {told:?}");
    run.stop().await;
}

/// While the lease's finalizer cannot be written, its node is not bound to it: a lease holds a node only
/// once sublet's finalizer keeps it until its account is final, so that one deleted the moment it is bound
/// is still billed and recorded. Once writes go through, it is bound with the finalizer on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_bound_only_once_it_carries_the_finalizer() {
    for backend in clusters() {
        finalizer_first(backend).await;
    }
}

async fn finalizer_first(backend: Backend) {
    let env = TestEnv::start(backend, SandboxConfig::default()).await;
    let node = env.gpu_node("gpu-1", 8).await;
    create_pool(&env.client, &env.name(POOL), env.pool_spec(spec())).await;
    let mut lease_writes_fail = status_writes_fail();
    lease_writes_fail.rules.truncate(1);
    env.set_faults(lease_writes_fail);
    let run = env.controller("sublet-0", false);
    create_lease(
        &env.client,
        &env.acme,
        "job",
        json!({"pool": env.name(POOL), "gpus": 8}),
    )
    .await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    eventually(30, "the node lent", || async {
        let n = nodes.get(&node).await.ok()?;
        (label(&n, "sublet.dev/state").is_some()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(env.faults_fired()[0] >= 1, "the lease's writes failed");
    let n = nodes.get(&node).await.unwrap();
    assert_eq!(
        label(&n, "sublet.dev/lease"),
        None,
        "bound to a lease without its finalizer"
    );
    env.set_faults(FaultConfig::default());
    eventually_seen(30, "the lease bound with its finalizer", || async {
        let lease = leases(&env).get("job").await.map_err(|e| e.to_string())?;
        let n = nodes.get(&node).await.map_err(|e| e.to_string())?;
        let has = lease
            .metadata
            .finalizers
            .unwrap_or_default()
            .iter()
            .any(|f| f == "sublet.dev/bill-until-returned");
        match (has, label(&n, "sublet.dev/lease")) {
            (true, Some(_)) => Ok(()),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await;
    run.stop().await;
}
