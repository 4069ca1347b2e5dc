//! Scrubbing between holders, on the sandbox and the real control plane (`SUBLET_TEST_CLUSTER`): a node its
//! tenant left runs the pool's scrub Job before the next lease gets it and before it goes back to internal
//! work; a failed scrub keeps it out and says why until its Job is deleted; a restart mid-scrub makes no
//! second Job. The Job's pod runs on the simulated kubelet (the sandbox's Job controller or
//! kube-controller-manager's), for the seconds its `kubelet.simulated/run-seconds` annotation says.

use std::time::Duration;

use crate::support::cluster::*;
use crate::support::real::{Backend, clusters};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use sublet::api::{GpuLease, LeasePhase, TenantPool};
use sublet_sandbox::SandboxConfig;
use tokio::sync::watch;

const POOL: &str = "scrubbed";
/// Where the test controller keeps its Jobs (its `lease_namespace`): the chart's namespace, and they run as the
/// chart's scrub ServiceAccount. On the real control plane other tests install the chart's tenant-isolation
/// policy, which admits a pod that sets `spec.nodeName` and tolerates sublet's taints only as a ServiceAccount
/// it names: as the chart's scrub Jobs run.
const JOB_NAMESPACE: &str = "sublet-system";
const SCRUB_ACCOUNT: &str = "sublet-scrub";

/// An Enforce pool with a scrub whose pod runs `run` seconds and exits with `code`.
fn spec(run: u32, code: i32) -> serde_json::Value {
    json!({
        "mode": "Enforce",
        "idle": {"forSeconds": 0},
        "reclaim": {"noticeSeconds": 2, "cooldownSeconds": 0},
        "pricing": {"defaultPerGpuHour": 3.6},
        "scrub": {
            "timeoutSeconds": 120,
            "template": {
                "metadata": {"annotations": {
                    "kubelet.simulated/run-seconds": run.to_string(),
                    "kubelet.simulated/exit-code": code.to_string(),
                }},
                "spec": {
                    "serviceAccountName": SCRUB_ACCOUNT,
                    "containers": [{"name": "scrub", "image": "registry.example/scrub:1",
                                    "command": ["sh", "-c", "crictl rmi --prune; rm -rf /scratch/*; nvidia-smi -r"]}],
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                },
            },
        },
    })
}

/// A simulated kubelet for the sandbox's nodes (the real control plane has one for every node already).
fn kubelet(env: &TestEnv) -> Option<watch::Sender<bool>> {
    env.sandbox.as_ref()?;
    let (tx, rx) = watch::channel(false);
    let config = sublet::demo::kubelet::KubeletConfig {
        period: Duration::from_millis(100),
        ..Default::default()
    };
    tokio::spawn(sublet::demo::kubelet::run(env.client.clone(), config, rx));
    Some(tx)
}

async fn node(client: &Client, name: &str) -> Node {
    Api::<Node>::all(client.clone()).get(name).await.unwrap()
}

fn annotation<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.annotations().get(key).map(String::as_str)
}

/// The pool's scrub Jobs for `node`.
async fn jobs_for(client: &Client, pool: &str, node: &str) -> Vec<Job> {
    Api::<Job>::namespaced(client.clone(), JOB_NAMESPACE)
        .list(&ListParams::default().labels(&format!("sublet.dev/pool={pool},sublet.dev/scrub-node={node}")))
        .await
        .unwrap()
        .items
}

fn condition(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

async fn lease_phase(env: &TestEnv, name: &str) -> Option<LeasePhase> {
    let l = Api::<GpuLease>::namespaced(env.client.clone(), &env.acme)
        .get(name)
        .await
        .ok()?;
    l.status.map(|s| s.phase)
}

/// Waits until `lease` holds the pool's one node; answers it.
async fn bound(env: &TestEnv, lease: &str) -> String {
    eventually_seen(30, "the lease to be bound", || async {
        let l = Api::<GpuLease>::namespaced(env.client.clone(), &env.acme)
            .get(lease)
            .await
            .map_err(|e| e.to_string())?;
        match l.status {
            Some(s) if s.phase == LeasePhase::Bound && s.nodes.len() == 1 => Ok(s.nodes[0].clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// Waits for the node's scrub-failed annotation; answers it.
async fn failure_on(c: &Client, gpu: &str) -> String {
    eventually_seen(60, "the failure recorded on the node", || async {
        let n = node(c, gpu).await;
        match annotation(&n, "sublet.dev/scrub-failed") {
            Some(why) => Ok(why.to_string()),
            None => Err(format!("state {:?}", label(&n, "sublet.dev/state"))),
        }
    })
    .await
}

/// Waits for the node to be scrubbing with its Job created; answers the Job.
async fn scrubbing(env: &TestEnv, pool: &str, name: &str) -> Job {
    eventually_seen(30, "the node to scrub", || async {
        let n = node(&env.client, name).await;
        let jobs = jobs_for(&env.client, pool, name).await;
        match (label(&n, "sublet.dev/state"), jobs.as_slice()) {
            (Some("scrubbing"), [job]) => Ok(job.clone()),
            (state, jobs) => Err(format!("state {state:?}, {} jobs", jobs.len())),
        }
    })
    .await
}

/// A test's world: its cluster, a kubelet for the sandbox, one 8-GPU node, a pool of `pool_spec`, the
/// controller, and a lease `first` that held the node and was deleted, so that the node scrubs.
struct Left {
    env: TestEnv,
    c: Client,
    gpu: String,
    pool: String,
    run: Running,
    /// Keeps the sandbox's kubelet running: it stops when this is dropped, so every test binds it by name.
    kubelet: Option<watch::Sender<bool>>,
}

/// The chart's namespace and scrub ServiceAccount, as the chart makes them (several tests may make them).
async fn scrub_account(c: &Client) {
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": JOB_NAMESPACE}});
    let account = json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": SCRUB_ACCOUNT, "namespace": JOB_NAMESPACE}, "automountServiceAccountToken": false});
    let pp = PostParams::default();
    let made = Api::<k8s_openapi::api::core::v1::Namespace>::all(c.clone())
        .create(&pp, &serde_json::from_value(namespace).unwrap())
        .await;
    assert!(made.is_ok() || is_conflict(&made), "{made:?}");
    let made = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(c.clone(), JOB_NAMESPACE)
        .create(&pp, &serde_json::from_value(account).unwrap())
        .await;
    assert!(made.is_ok() || is_conflict(&made), "{made:?}");
}

fn is_conflict<T>(r: &Result<T, kube::Error>) -> bool {
    matches!(r, Err(kube::Error::Api(s)) if s.code == 409)
}

async fn left_by_a_tenant(backend: Backend, pool_spec: serde_json::Value) -> Left {
    let env = TestEnv::start(backend, SandboxConfig::default()).await;
    let kubelet = kubelet(&env);
    let c = env.client.clone();
    let gpu = env.gpu_node("gpu-1", 8).await;
    let pool = env.name(POOL);
    create_pool(&c, &pool, env.pool_spec(pool_spec)).await;
    scrub_account(&c).await;
    let run = env.controller_in("sublet-0", false, JOB_NAMESPACE);
    create_lease(&c, &env.acme, "first", json!({"pool": pool, "gpus": 8})).await;
    assert_eq!(bound(&env, "first").await, gpu);
    Api::<GpuLease>::namespaced(c.clone(), &env.acme)
        .delete("first", &DeleteParams::default())
        .await
        .unwrap();
    Left {
        env,
        c,
        gpu,
        pool,
        run,
        kubelet,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_scrubbed_before_the_next_lease_and_before_internal_work() {
    for backend in clusters() {
        before_the_next_holder(backend).await;
    }
}

async fn before_the_next_holder(backend: Backend) {
    // A lease holds the node, then ends; the next lease waits while the node scrubs.
    let Left {
        env,
        c,
        gpu,
        pool,
        run: _run,
        kubelet: _kubelet,
    } = left_by_a_tenant(backend, spec(2, 0)).await;
    create_lease(&c, &env.acme, "next", json!({"pool": pool, "gpus": 8})).await;
    let job = scrubbing(&env, &pool, &gpu).await;

    // The Job: pinned to the node, tolerating sublet's taints, owned by the pool, its timeout as deadline.
    let spec = job.spec.as_ref().unwrap();
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.node_name.as_deref(), Some(gpu.as_str()));
    let tolerated: Vec<&str> = pod
        .tolerations
        .iter()
        .flatten()
        .filter_map(|t| t.key.as_deref())
        .collect();
    for key in ["sublet.dev/lent", "sublet.dev/lease", "sublet.dev/reclaiming"] {
        assert!(tolerated.contains(&key), "{tolerated:?}");
    }
    assert_eq!(spec.active_deadline_seconds, Some(120));
    let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("TenantPool", pool.as_str())
    );
    let n = node(&c, &gpu).await;
    assert_eq!(annotation(&n, "sublet.dev/scrub-job"), Some(job.name_any().as_str()));
    assert_eq!(label(&n, "sublet.dev/lease"), None, "no holder while scrubbing");
    assert_eq!(
        taint_keys(&n)
            .iter()
            .filter(|k| k.starts_with("sublet.dev/"))
            .collect::<Vec<_>>(),
        ["sublet.dev/lent"]
    );

    // Until the Job completes, the next lease stays pending; it binds the node only once the scrub is done.
    let mut last_scrubbing = jiff::Timestamp::now();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let state = label(&node(&c, &gpu).await, "sublet.dev/state").map(str::to_string);
        let jobs = jobs_for(&c, &pool, &gpu).await;
        let phase = lease_phase(&env, "next").await;
        if state.as_deref() == Some("scrubbing") {
            last_scrubbing = jiff::Timestamp::now();
            assert_ne!(phase, Some(LeasePhase::Bound), "bound while the node scrubs");
        }
        if phase == Some(LeasePhase::Bound) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "the next lease never bound: node {state:?}, lease {phase:?}, {} jobs",
            jobs.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let next = Api::<GpuLease>::namespaced(c.clone(), &env.acme)
        .get("next")
        .await
        .unwrap();
    let bound_at = next.status.unwrap().holds[0].bound_at.0;
    assert!(
        bound_at.as_second() >= last_scrubbing.as_second() - 1,
        "bound at {bound_at}, scrubbing until {last_scrubbing}"
    );
    // The finished Job is deleted once its node is back.
    eventually(30, "the finished scrub job deleted", || async {
        jobs_for(&c, &pool, &gpu).await.is_empty().then_some(())
    })
    .await;

    // Internal demand takes the node back from the next lease: scrubbed again, then internal, unmarked.
    gpu_pod(&c, &env.ml, "train", 8, None, json!({})).await;
    let second = scrubbing(&env, &pool, &gpu).await;
    assert_ne!(second.name_any(), job.name_any(), "another holding, another Job");
    eventually_seen(60, "the node back in internal use after its scrub", || async {
        let n = node(&c, &gpu).await;
        let ours: Vec<String> = taint_keys(&n)
            .into_iter()
            .filter(|k| k.starts_with("sublet.dev/"))
            .collect();
        match (label(&n, "sublet.dev/state"), ours.is_empty()) {
            (None, true) => Ok(()),
            (state, _) => Err(format!("state {state:?}, taints {ours:?}")),
        }
    })
    .await;
    let pool_status = Api::<TenantPool>::all(c.clone())
        .get(&pool)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(pool_status.totals.scrub_failed_nodes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_scrub_keeps_the_node_out_until_its_job_is_deleted() {
    for backend in clusters() {
        failed_scrub(backend).await;
    }
}

async fn failed_scrub(backend: Backend) {
    let Left {
        env,
        c,
        gpu,
        pool,
        run: _run,
        kubelet: _kubelet,
    } = left_by_a_tenant(backend, spec(1, 3)).await;
    create_lease(&c, &env.acme, "next", json!({"pool": pool, "gpus": 8})).await;
    let job = scrubbing(&env, &pool, &gpu).await;

    // The scrub fails: the node stays out, and the node, the pool status and a Warning event say why.
    let why = failure_on(&c, &gpu).await;
    assert!(
        why.contains(&job.name_any()) && why.contains("BackoffLimitExceeded"),
        "{why}"
    );
    assert!(why.contains("delete job"), "{why}");
    let status = eventually_seen(20, "the pool status to count the failure", || async {
        let s = Api::<TenantPool>::all(c.clone())
            .get(&pool)
            .await
            .unwrap()
            .status
            .unwrap();
        match s.totals.scrub_failed_nodes {
            1 => Ok(s),
            n => Err(format!("{n} failed")),
        }
    })
    .await;
    assert_eq!(status.totals.scrubbing_nodes, 1);
    let member = status.nodes.iter().find(|m| m.name == gpu).unwrap();
    assert!(
        member.reason.as_deref().unwrap().starts_with("scrub failed"),
        "{member:?}"
    );
    let events = eventually(20, "a ScrubFailed event on the node", || async {
        let e: Vec<_> = events_about(&c, None, "Node")
            .await
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("ScrubFailed"))
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(gpu.as_str()))
            .collect();
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert_eq!(events[0].type_.as_deref(), Some("Warning"));
    let failed = jobs_for(&c, &pool, &gpu).await;
    assert!(failed.len() == 1 && condition(&failed[0], "Failed"), "{failed:?}");
    // It stays so: not lent, not returned, the next lease pending.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(label(&node(&c, &gpu).await, "sublet.dev/state"), Some("scrubbing"));
    assert_eq!(lease_phase(&env, "next").await, Some(LeasePhase::Pending));

    // The documented release: fix the scrub, delete the Job; sublet scrubs again and the node moves on.
    let fixed = json!({"spec": {"scrub": {"template": spec(1, 0)["scrub"]["template"].clone()}}});
    let pools = Api::<TenantPool>::all(c.clone());
    let generation = pools
        .patch(&pool, &PatchParams::default(), &Patch::Merge(&fixed))
        .await
        .unwrap()
        .metadata
        .generation;
    // As an operator would: the Job is deleted once sublet has seen the fixed template, or it may scrub again
    // with the one that fails.
    eventually_seen(30, "the fixed pool observed", || async {
        let seen = pools.get(&pool).await.map_err(|e| e.to_string())?;
        let observed = seen.status.and_then(|s| s.observed_generation);
        if observed >= generation {
            Ok(())
        } else {
            Err(format!("observedGeneration {observed:?}"))
        }
    })
    .await;
    Api::<Job>::namespaced(c.clone(), JOB_NAMESPACE)
        .delete(&job.name_any(), &DeleteParams::background())
        .await
        .unwrap();
    bound(&env, "next").await;
    let n = node(&c, &gpu).await;
    assert_eq!(annotation(&n, "sublet.dev/scrub-failed"), None);
    assert_eq!(annotation(&n, "sublet.dev/scrub-job"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_scrub_makes_no_second_job() {
    for backend in clusters() {
        restart_mid_scrub(backend).await;
    }
}

async fn restart_mid_scrub(backend: Backend) {
    let Left {
        env,
        c,
        gpu,
        pool,
        run,
        kubelet: _kubelet,
    } = left_by_a_tenant(backend, spec(6, 0)).await;
    let job = scrubbing(&env, &pool, &gpu).await;
    run.stop().await;
    let _again = env.controller_in("sublet-1", false, JOB_NAMESPACE);
    // The new controller reads the Job back and waits for it: the same Job, never a second.
    let uid = job.uid();
    eventually_seen(60, "the node back after the one scrub", || async {
        let jobs = jobs_for(&c, &pool, &gpu).await;
        assert!(
            jobs.len() <= 1 && jobs.iter().all(|j| j.uid() == uid),
            "a second job: {jobs:?}"
        );
        match label(&node(&c, &gpu).await, "sublet.dev/state") {
            Some("scrubbing") => {
                let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(c.clone(), JOB_NAMESPACE)
                    .list(&ListParams::default())
                    .await
                    .unwrap();
                let phases: Vec<_> = pods
                    .items
                    .iter()
                    .map(|p| (p.name_any(), p.status.as_ref().and_then(|s| s.phase.clone())))
                    .collect();
                Err(format!("scrubbing, pods {phases:?}"))
            }
            other => Ok(other.map(str::to_string)),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrub_past_its_timeout_fails_and_keeps_the_node_out() {
    for backend in clusters() {
        timed_out(backend).await;
    }
}

async fn timed_out(backend: Backend) {
    let mut s = spec(3600, 0);
    s["scrub"]["timeoutSeconds"] = json!(2);
    let Left {
        env,
        c,
        gpu,
        pool,
        run: _run,
        kubelet: _kubelet,
    } = left_by_a_tenant(backend, s).await;
    scrubbing(&env, &pool, &gpu).await;
    // The Job controller ends the Job at its activeDeadlineSeconds (sublet's own clock would too): the node
    // stays scrubbing and says so.
    let why = failure_on(&c, &gpu).await;
    assert!(
        why.contains("DeadlineExceeded") || why.contains("timeoutSeconds (2s)"),
        "{why}"
    );
    assert_eq!(label(&node(&c, &gpu).await, "sublet.dev/state"), Some("scrubbing"));
}
