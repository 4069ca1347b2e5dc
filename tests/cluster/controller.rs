//! `sublet run` against the sandbox API server and the real control plane (`SUBLET_TEST_CLUSTER`), through
//! HTTP only: the whole life cycle, restart safety, leader election, faults and Observe mode.

use std::time::Duration;

use crate::support::cluster::*;
use crate::support::real::{Backend, clusters};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client};
use serde_json::json;
use sublet::api::{GpuLease, LeasePhase, TenantPool};
use sublet_sandbox::SandboxConfig;

const POOL: &str = "a100";

fn enforce_spec(notice: i64) -> serde_json::Value {
    json!({
        "mode": "Enforce",
        "idle": {"forSeconds": 0},
        "reclaim": {"noticeSeconds": notice, "cooldownSeconds": 0},
        "pricing": {"defaultPerGpuHour": 3.6},
    })
}

async fn node(client: &Client, name: &str) -> Node {
    Api::<Node>::all(client.clone()).get(name).await.unwrap()
}

async fn lease(env: &TestEnv, name: &str) -> GpuLease {
    Api::<GpuLease>::namespaced(env.client.clone(), &env.acme)
        .get(name)
        .await
        .unwrap()
}

async fn lease_events(env: &TestEnv, reason: &str) -> Vec<Event> {
    events_about(&env.client, Some(&env.acme), "GpuLease")
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

/// The lease events of `reason` once at least `n` are there (events are written after the status they tell
/// of, so a test that has seen the status waits for them), or all there are after 10 s.
async fn recorded(env: &TestEnv, reason: &str, n: usize) -> Vec<Event> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let events = lease_events(env, reason).await;
        if events.len() >= n || tokio::time::Instant::now() >= deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the lease to be bound and returns its node; a timeout shows the status last seen.
async fn bound_node(env: &TestEnv, name: &str) -> String {
    eventually_seen(20, "the lease to be bound", || async {
        match lease(env, name).await.status {
            Some(s) if s.phase == LeasePhase::Bound && s.nodes.len() == 1 => Ok(s.nodes[0].clone()),
            status => Err(format!("{status:?}")),
        }
    })
    .await
}

/// A lease `acme/job` of 8 GPUs, bound, with the tenant's pod running on its node; returns the node.
async fn leased_worker(env: &TestEnv) -> String {
    let c = &env.client;
    create_lease(c, &env.acme, "job", json!({"pool": env.name(POOL), "gpus": 8})).await;
    let leased = bound_node(env, "job").await;
    let s = lease(env, "job").await.status.unwrap();
    env.tenant_pod("worker", 8, &s, &leased).await;
    leased
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn life_cycle_lend_bind_notice_evict_return() {
    for backend in clusters() {
        life_cycle(backend).await;
    }
}

async fn life_cycle(backend: Backend) {
    let env = TestEnv::start(backend, SandboxConfig::default()).await;
    let c = env.client.clone();
    let gpu_1 = env.gpu_node("gpu-1", 8).await;
    let gpu_2 = env.gpu_node("gpu-2", 8).await;
    let pool = env.name(POOL);
    create_pool(&c, &pool, env.pool_spec(enforce_spec(3))).await;
    let run = env.controller("sublet-0", false);
    let lease_key = format!("{}.job", env.acme);

    // Idle nodes are lent: labels, the lent taint, the GPU taint left alone.
    for n in [&gpu_1, &gpu_2] {
        eventually(20, "nodes lent", || async {
            let node = node(&c, n).await;
            (label(&node, "sublet.dev/state") == Some("lent")).then_some(node)
        })
        .await;
        let node = node(&c, n).await;
        assert_eq!(label(&node, "sublet.dev/pool"), Some(pool.as_str()));
        let keys = taint_keys(&node);
        assert!(
            keys.contains(&"sublet.dev/lent".to_string()) && keys.contains(&"nvidia.com/gpu".to_string()),
            "{keys:?}"
        );
    }

    // A lease binds to one node; its status tells the selector and toleration the pods must carry.
    create_lease(&c, &env.acme, "job", json!({"pool": pool, "gpus": 8})).await;
    let leased = bound_node(&env, "job").await;
    let status = lease(&env, "job").await.status.unwrap();
    assert_eq!(status.node_selector.get("sublet.dev/lease"), Some(&lease_key));
    assert_eq!(status.tolerations[0].key.as_deref(), Some("sublet.dev/lease"));
    assert_eq!(status.tolerations[0].value.as_ref(), Some(&lease_key));
    let n = node(&c, &leased).await;
    assert_eq!(label(&n, "sublet.dev/lease"), Some(lease_key.as_str()));
    assert!(taint_keys(&n).contains(&"sublet.dev/lease".to_string()));
    assert_eq!(recorded(&env, "Bound", 1).await.len(), 1);

    // The tenant's pod runs there: placed by the scheduler (kube-scheduler on the real control plane) by the
    // lease's node selector and toleration.
    let tolerations = json!({"nodeSelector": status.node_selector, "tolerations": [status.tolerations[0], {"key": "nvidia.com/gpu", "operator": "Exists"}]});
    let place = match backend {
        Backend::Sandbox => Some(leased.as_str()),
        Backend::Real => None,
    };
    gpu_pod(&c, &env.acme, "worker", 8, place, tolerations).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), &env.acme);
    eventually_seen(20, "the tenant's pod running on the leased node", || async {
        let p = pods.get("worker").await.unwrap();
        let on = p.spec.and_then(|s| s.node_name);
        let phase = p.status.and_then(|s| s.phase);
        match (on.as_deref(), phase.as_deref()) {
            (Some(n), Some("Running")) if n == leased => Ok(()),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await;

    // Internal demand: a pending 16-GPU pod needs both nodes. The free lent node comes back at once; the
    // leased one gets notice, on the lease, the node and the tenant's pod.
    let before_notice = Timestamp::now();
    gpu_pod(&c, &env.ml, "train", 16, None, json!({})).await;
    let deadline = eventually(20, "the notice", || async {
        let s = lease(&env, "job").await.status?;
        (s.phase == LeasePhase::Reclaiming).then_some(s.notice_deadline?.0)
    })
    .await;
    let secs = deadline.duration_since(before_notice).as_secs_f64();
    assert!(
        (2.0..=4.5).contains(&secs),
        "deadline {secs}s after the demand, notice is 3s"
    );
    let n = node(&c, &leased).await;
    assert_eq!(label(&n, "sublet.dev/state"), Some("reclaiming"));
    let pod: Pod = pods.get("worker").await.unwrap();
    let annotated = pod
        .metadata
        .annotations
        .unwrap_or_default()
        .get("sublet.dev/reclaim-deadline")
        .cloned();
    assert_eq!(annotated.map(|a| a.parse::<Timestamp>().unwrap()), Some(deadline));
    let other = if leased == gpu_1 { &gpu_2 } else { &gpu_1 };
    let o = node(&c, other).await;
    assert_eq!(
        label(&o, "sublet.dev/state"),
        None,
        "the unleased node came back at once"
    );
    assert!(!taint_keys(&o).iter().any(|k| k.starts_with("sublet.dev/")));
    let notices = recorded(&env, "ReclaimNotice", 1).await;
    assert_eq!(notices.len(), 1);
    assert!(notices[0].note.as_deref().unwrap_or("").contains(&leased));

    // Not before the deadline …
    assert!(Timestamp::now() < deadline);
    assert!(
        pods.get_opt("worker").await.unwrap().is_some(),
        "the pod runs until its deadline"
    );
    // … but at it, the tenant pod is evicted and the node goes back, clean.
    eventually(20, "the eviction", || async {
        pods.get_opt("worker").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(Timestamp::now() >= deadline, "evicted no earlier than the deadline");
    eventually(20, "the node back", || async {
        let n = node(&c, &leased).await;
        (label(&n, "sublet.dev/state").is_none()).then_some(())
    })
    .await;
    let n = node(&c, &leased).await;
    assert!(
        !taint_keys(&n).iter().any(|k| k.starts_with("sublet.dev/")),
        "{:?}",
        taint_keys(&n)
    );
    assert_eq!(taint_keys(&n), vec!["nvidia.com/gpu".to_string()]);
    assert!(
        n.metadata
            .annotations
            .unwrap_or_default()
            .contains_key("sublet.dev/returned-at")
    );
    eventually(20, "the lease released", || async {
        (lease(&env, "job").await.status?.phase == LeasePhase::Released).then_some(())
    })
    .await;
    // The internal pod can now be scheduled on it: no taint of sublet's is in its way.
    env.bind(&env.ml, "train", &leased).await;
    // And the internal pod was never touched.
    let train: Pod = Api::namespaced(c.clone(), &env.ml).get("train").await.unwrap();
    assert!(train.metadata.deletion_timestamp.is_none());
    // The ledger billed the 8 GPUs from binding to return, to the second.
    let s = lease(&env, "job").await.status.unwrap();
    let held = s
        .accounted_until
        .unwrap()
        .0
        .duration_since(s.bound_at.unwrap().0)
        .as_secs();
    assert_eq!(s.gpu_seconds, 8 * held);
    assert!((s.cost - s.gpu_seconds as f64 / 3600.0 * 3.6).abs() < 1e-6);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_the_deadline_sends_no_second_notice_and_the_ledger_runs_on() {
    for backend in clusters() {
        restart_keeps_the_deadline_sends_no_second_notice_and_the_ledger_runs_on_on(backend).await;
    }
}

async fn restart_keeps_the_deadline_sends_no_second_notice_and_the_ledger_runs_on_on(backend: Backend) {
    let env = TestEnv::start(backend, SandboxConfig::default()).await;
    let c = env.client.clone();
    env.gpu_node("gpu-1", 8).await;
    create_pool(&c, &env.name(POOL), env.pool_spec(enforce_spec(30))).await;
    let run = env.controller("sublet-0", false);
    let leased = leased_worker(&env).await;
    gpu_pod(&c, &env.ml, "train", 8, None, json!({})).await;
    let deadline = eventually(20, "the notice", || async {
        let s = lease(&env, "job").await.status?;
        (s.phase == LeasePhase::Reclaiming).then_some(s.notice_deadline?.0)
    })
    .await;
    run.stop().await;
    let before = lease(&env, "job").await.status.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let run = env.controller("sublet-1", false);
    // The restarted controller writes the ledger forward; wait for it to do so.
    let after = eventually(20, "the ledger written again", || async {
        let s = lease(&env, "job").await.status?;
        (s.accounted_until > before.accounted_until).then_some(s)
    })
    .await;
    assert_eq!(
        after.notice_deadline.map(|d| d.0),
        Some(deadline),
        "the deadline never moves"
    );
    assert_eq!(
        node(&c, &leased).await.metadata.annotations.unwrap()["sublet.dev/reclaim-deadline"],
        deadline.to_string()
    );
    assert_eq!(recorded(&env, "ReclaimNotice", 1).await.len(), 1, "no second notice");
    // Continuous to the second: every second from binding to accountedUntil billed once at 8 GPUs.
    let held = after
        .accounted_until
        .unwrap()
        .0
        .duration_since(after.bound_at.unwrap().0)
        .as_secs();
    assert_eq!(after.gpu_seconds, 8 * held);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_mode_writes_nothing_to_nodes_or_pods() {
    for backend in clusters() {
        observe_mode_writes_nothing_to_nodes_or_pods_on(backend).await;
    }
}

async fn observe_mode_writes_nothing_to_nodes_or_pods_on(backend: Backend) {
    let env = TestEnv::start(backend, SandboxConfig::default()).await;
    let c = env.client.clone();
    let gpu_1 = env.gpu_node("gpu-1", 8).await;
    let gpu_2 = env.gpu_node("gpu-2", 8).await;
    // On the sandbox nothing else writes nodes, so their resourceVersion stays; on the real control plane the
    // kubelet's heartbeats and the node lifecycle controller write them, so what sublet would write is compared:
    // labels, annotations and taints.
    let marks = |n: Node| match backend {
        Backend::Sandbox => json!(n.metadata.resource_version),
        Backend::Real => json!([n.metadata.labels, n.metadata.annotations, n.spec.and_then(|s| s.taints)]),
    };
    let rv1 = marks(node(&c, &gpu_1).await);
    let rv2 = marks(node(&c, &gpu_2).await);
    create_pool(
        &c,
        &env.name(POOL),
        env.pool_spec(json!({"mode": "Observe", "idle": {"forSeconds": 0}})),
    )
    .await;
    create_lease(&c, &env.acme, "job", json!({"pool": env.name(POOL), "gpus": 8})).await;
    let run = env.controller("sublet-0", false);
    let pools: Api<TenantPool> = Api::all(c.clone());
    let status = eventually(20, "the pool status", || async {
        let s = pools.get(&env.name(POOL)).await.unwrap().status?;
        (s.totals.nodes == 2).then_some(s)
    })
    .await;
    assert_eq!(status.totals.lendable_gpus, 16, "it would lend both nodes");
    assert_eq!(status.totals.lent_gpus, 0);
    let lending = status.conditions.iter().find(|c| c.type_ == "Lending").unwrap();
    assert_eq!(
        (lending.status.as_str(), lending.reason.as_str()),
        ("False", "ObserveMode")
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(marks(node(&c, &gpu_1).await), rv1, "gpu-1 untouched");
    assert_eq!(marks(node(&c, &gpu_2).await), rv2, "gpu-2 untouched");
    let l = lease(&env, "job").await.status.unwrap();
    assert_eq!(l.phase, LeasePhase::Pending);
    assert!(l.reason.unwrap().contains("Observe"));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_pool_returns_every_node_and_leaves_no_taint() {
    for backend in clusters() {
        deleting_the_pool_returns_every_node_and_leaves_no_taint_on(backend).await;
    }
}

async fn deleting_the_pool_returns_every_node_and_leaves_no_taint_on(backend: Backend) {
    let env = TestEnv::start(backend, SandboxConfig::default()).await;
    let c = env.client.clone();
    env.gpu_node("gpu-1", 8).await;
    env.gpu_node("gpu-2", 8).await;
    create_pool(&c, &env.name(POOL), env.pool_spec(enforce_spec(1))).await;
    let run = env.controller("sublet-0", false);
    leased_worker(&env).await;
    let pools: Api<TenantPool> = Api::all(c.clone());
    eventually(20, "the finalizer", || async {
        pools
            .get(&env.name(POOL))
            .await
            .unwrap()
            .metadata
            .finalizers
            .filter(|f| f.contains(&"sublet.dev/return-nodes".to_string()))
    })
    .await;
    pools.delete(&env.name(POOL), &DeleteParams::default()).await.unwrap();
    eventually(30, "the pool gone", || async {
        pools.get_opt(&env.name(POOL)).await.unwrap().is_none().then_some(())
    })
    .await;
    assert_eq!(
        recorded(&env, "ReclaimNotice", 1).await.len(),
        1,
        "the leased node went through the notice path"
    );
    for n in Api::<Node>::all(c.clone()).list(&ListParams::default()).await.unwrap() {
        let labels = n.metadata.labels.clone().unwrap_or_default();
        assert!(!labels.keys().any(|k| k.starts_with("sublet.dev/")), "{labels:?}");
        assert!(!taint_keys(&n).iter().any(|k| k.starts_with("sublet.dev/")));
    }
    run.stop().await;
}

/// Each kind has its own watch, so a lease's status can arrive before the node label that bound it (a pass
/// planning from that view would see a bound lease with no node and release it for good), or the node's
/// label before the lease's status (and the pass would account the same span of the ledger again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_node_watch_keeps_the_lease_bound() {
    one_binding_and_one_ledger_while_a_watch_lags("nodes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_lease_watch_counts_no_revenue_twice() {
    one_binding_and_one_ledger_while_a_watch_lags("gpuleases.sublet.dev").await;
}

async fn one_binding_and_one_ledger_while_a_watch_lags(resource: &str) {
    for backend in clusters() {
        one_binding_and_one_ledger_while_a_watch_lags_on(backend, resource).await;
    }
}

async fn one_binding_and_one_ledger_while_a_watch_lags_on(backend: Backend, resource: &str) {
    use sublet_sandbox::{FaultAction, FaultConfig, FaultRule};
    let env = TestEnv::start(backend, SandboxConfig::default()).await;
    let c = env.client.clone();
    env.gpu_node("gpu-1", 8).await;
    env.gpu_node("gpu-2", 8).await;
    // Every watch of `resource`, the controller's included, delivers its events 1.5 s late; the others are
    // prompt.
    env.set_faults(FaultConfig {
        seed: 1,
        rules: vec![FaultRule {
            verbs: vec!["watch".into()],
            resources: vec![resource.into()],
            share: 1.0,
            limit: None,
            action: FaultAction::LagWatch { ms: 1500 },
        }],
    });
    create_pool(&c, &env.name(POOL), env.pool_spec(enforce_spec(1))).await;
    let run = env.controller("sublet-0", false);
    create_lease(&c, &env.acme, "job", json!({"pool": env.name(POOL), "gpus": 8})).await;
    let leased = bound_node(&env, "job").await;
    // Passes run every 200 ms; for the next 3 s (the watch catching up twice over) the lease stays
    // bound to the same node, and that node is the only one bound.
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        let s = lease(&env, "job").await.status.unwrap();
        assert_eq!(s.phase, LeasePhase::Bound, "{s:?}");
        assert_eq!(s.nodes, vec![leased.clone()]);
        let bound: Vec<String> = Api::<Node>::all(c.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|n| label(n, "sublet.dev/lease") == Some(format!("{}.job", env.acme).as_str()))
            .map(|n| n.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(bound, vec![leased.clone()]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(lease_events(&env, "Bound").await.len(), 1, "one Bound event");
    assert!(lease_events(&env, "Released").await.is_empty());
    assert!(env.faults_fired()[0] >= 1, "the watch lagged");
    // The pool's revenue is the sum of what its leases were charged: no span of the ledger counted twice.
    let pools: Api<TenantPool> = Api::all(c.clone());
    eventually_seen(10, "pool revenue to match the lease's cost", || async {
        let revenue = pools
            .get(&env.name(POOL))
            .await
            .ok()
            .and_then(|p| p.status)
            .map(|s| s.revenue);
        let cost = lease(&env, "job").await.status.map(|s| s.cost);
        match (revenue, cost) {
            (Some(r), Some(c)) if c > 0.0 && (r - c).abs() < 1e-9 => Ok(()),
            seen => Err(format!("(revenue, cost) {seen:?}")),
        }
    })
    .await;
    run.stop().await;
}

async fn holder(client: &Client) -> Option<String> {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), "default");
    leases.get_opt("sublet-leader").await.ok()??.spec?.holder_identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_only_the_leader_writes_and_the_other_takes_over() {
    for backend in clusters() {
        two_replicas_only_the_leader_writes_and_the_other_takes_over_on(backend).await;
    }
}

async fn two_replicas_only_the_leader_writes_and_the_other_takes_over_on(backend: Backend) {
    let env = TestEnv::start(backend, SandboxConfig::default()).await;
    let c = env.client.clone();
    let gpu_1 = env.gpu_node("gpu-1", 8).await;
    create_pool(&c, &env.name(POOL), env.pool_spec(enforce_spec(1))).await;
    let mut replicas = vec![
        ("a", Some(env.controller("a", true))),
        ("b", Some(env.controller("b", true))),
    ];
    let leader = eventually(20, "a leader", || async { holder(&c).await }).await;
    eventually(20, "gpu-1 lent", || async {
        (label(&node(&c, &gpu_1).await, "sublet.dev/state") == Some("lent")).then_some(())
    })
    .await;
    create_lease(&c, &env.acme, "first", json!({"pool": env.name(POOL), "gpus": 8})).await;
    bound_node(&env, "first").await;
    let bound = recorded(&env, "Bound", 1).await;
    assert_eq!(bound.len(), 1);
    assert_eq!(
        bound[0].reporting_instance.as_deref(),
        Some(leader.as_str()),
        "the leader wrote it"
    );

    // The leader goes away; the other replica takes over within the lease duration and carries on.
    let (i, _) = replicas.iter().enumerate().find(|(_, (id, _))| *id == leader).unwrap();
    replicas[i].1.take().unwrap().stop().await;
    let other = if leader == "a" { "b" } else { "a" };
    eventually(20, "the other replica to lead", || async {
        (holder(&c).await.as_deref() == Some(other)).then_some(())
    })
    .await;
    env.gpu_node("gpu-2", 8).await;
    create_lease(&c, &env.acme, "second", json!({"pool": env.name(POOL), "gpus": 8})).await;
    bound_node(&env, "second").await;
    let bound = recorded(&env, "Bound", 2).await;
    let second = bound
        .iter()
        .find(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("second"))
        .unwrap();
    assert_eq!(second.reporting_instance.as_deref(), Some(other));
    for (_, r) in replicas {
        if let Some(r) = r {
            r.stop().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converges_through_conflicts_throttling_errors_and_cut_watches() {
    for backend in clusters() {
        converges_on(backend).await;
    }
}

async fn converges_on(backend: Backend) {
    use sublet_sandbox::{FaultAction, FaultConfig, FaultRule};
    let rule = |verbs: &[&str], resources: &[&str], share: f64, action: FaultAction| FaultRule {
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        resources: resources.iter().map(|s| s.to_string()).collect(),
        share,
        limit: None,
        action,
    };
    let faults = FaultConfig {
        seed: 7,
        rules: vec![
            rule(&["patch"], &["nodes"], 0.3, FaultAction::Conflict),
            rule(
                &["create"],
                &["pods"],
                0.3,
                FaultAction::TooManyRequests { retry_after_seconds: 1 },
            ),
            rule(&["patch", "create"], &[], 0.15, FaultAction::InternalError),
            rule(&["watch"], &[], 0.3, FaultAction::CutWatch),
        ],
    };
    let env = TestEnv::start(backend, SandboxConfig::default()).await;
    let c = env.client.clone();
    for i in 1..=3 {
        env.gpu_node(&format!("gpu-{i}"), 8).await;
    }
    create_pool(&c, &env.name(POOL), env.pool_spec(enforce_spec(1))).await;
    let run = env.controller("sublet-0", false);
    leased_worker(&env).await;
    // From here on the controller's writes and watches meet faults (the test itself only reads).
    env.set_faults(faults);
    // Demand for all three nodes: two come back at once, the leased one after its notice and eviction.
    // (On the sandbox the test writes in-process, past the faults; on the real server it does not go through
    // the proxy.)
    let train = json!({"metadata": {"name": "train"}, "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"nvidia.com/gpu": "24"}, "limits": {"nvidia.com/gpu": "24"}}}]}});
    match &env.sandbox {
        Some(sandbox) => {
            sandbox
                .local()
                .create("v1", "pods", Some(&env.ml), train)
                .expect("internal pod created");
        }
        None => {
            let pods: Api<Pod> = Api::namespaced(c.clone(), &env.ml);
            let pod = serde_json::from_value(train).unwrap();
            pods.create(&Default::default(), &pod)
                .await
                .expect("internal pod created");
        }
    }
    eventually(60, "every node back", || async {
        let nodes = Api::<Node>::all(c.clone()).list(&ListParams::default()).await.ok()?;
        nodes
            .items
            .iter()
            .all(|n| {
                label(n, "sublet.dev/state").is_none() && !taint_keys(n).iter().any(|k| k.starts_with("sublet.dev/"))
            })
            .then_some(())
    })
    .await;
    eventually(30, "the lease released", || async {
        (lease(&env, "job").await.status?.phase == LeasePhase::Released).then_some(())
    })
    .await;
    // Events are best effort (an injected 500 may drop one), but a notice is never sent twice.
    let notices = lease_events(&env, "ReclaimNotice").await.len();
    assert!(notices <= 1, "{notices} notice events despite one notice");
    run.stop().await;
}
