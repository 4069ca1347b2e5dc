//! `sublet run` against the sandbox API server, through HTTP only: the whole life cycle, restart safety,
//! leader election, faults and Observe mode.

use std::time::Duration;

use crate::support::cluster::*;
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

async fn lease(client: &Client, name: &str) -> GpuLease {
    Api::<GpuLease>::namespaced(client.clone(), "acme")
        .get(name)
        .await
        .unwrap()
}

async fn lease_events(client: &Client, reason: &str) -> Vec<Event> {
    events_about(client, None, "GpuLease")
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

/// Waits for the lease to be bound and returns its node; a timeout shows the status last seen.
async fn bound_node(client: &Client, name: &str) -> String {
    eventually_seen(20, "the lease to be bound", || async {
        match lease(client, name).await.status {
            Some(s) if s.phase == LeasePhase::Bound && s.nodes.len() == 1 => Ok(s.nodes[0].clone()),
            status => Err(format!("{status:?}")),
        }
    })
    .await
}

/// A lease `acme/job` of 8 GPUs, bound, with the tenant's pod running on its node; returns the node.
async fn leased_worker(c: &Client) -> String {
    create_lease(c, "acme", "job", json!({"pool": POOL, "gpus": 8})).await;
    let leased = bound_node(c, "job").await;
    let s = lease(c, "job").await.status.unwrap();
    gpu_pod(
        c,
        "acme",
        "worker",
        8,
        Some(&leased),
        json!({"tolerations": s.tolerations}),
    )
    .await;
    leased
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn life_cycle_lend_bind_notice_evict_return() {
    let env = env(SandboxConfig::default()).await;
    let c = env.client.clone();
    gpu_node(&c, "gpu-1", 8).await;
    gpu_node(&c, "gpu-2", 8).await;
    create_pool(&c, POOL, enforce_spec(3)).await;
    let run = controller(&c, "sublet-0", false);

    // Idle nodes are lent: labels, the lent taint, the GPU taint left alone.
    for n in ["gpu-1", "gpu-2"] {
        eventually(20, "nodes lent", || async {
            let node = node(&c, n).await;
            (label(&node, "sublet.dev/state") == Some("lent")).then_some(node)
        })
        .await;
        let node = node(&c, n).await;
        assert_eq!(label(&node, "sublet.dev/pool"), Some(POOL));
        let keys = taint_keys(&node);
        assert!(
            keys.contains(&"sublet.dev/lent".to_string()) && keys.contains(&"nvidia.com/gpu".to_string()),
            "{keys:?}"
        );
    }

    // A lease binds to one node; its status tells the selector and toleration the pods must carry.
    create_lease(&c, "acme", "job", json!({"pool": POOL, "gpus": 8})).await;
    let leased = bound_node(&c, "job").await;
    let status = lease(&c, "job").await.status.unwrap();
    assert_eq!(
        status.node_selector.get("sublet.dev/lease").map(String::as_str),
        Some("acme.job")
    );
    assert_eq!(status.tolerations[0].key.as_deref(), Some("sublet.dev/lease"));
    assert_eq!(status.tolerations[0].value.as_deref(), Some("acme.job"));
    let n = node(&c, &leased).await;
    assert_eq!(label(&n, "sublet.dev/lease"), Some("acme.job"));
    assert!(taint_keys(&n).contains(&"sublet.dev/lease".to_string()));
    assert_eq!(lease_events(&c, "Bound").await.len(), 1);

    // The tenant's pod runs there.
    let tolerations = json!({"nodeSelector": status.node_selector, "tolerations": [status.tolerations[0], {"key": "nvidia.com/gpu", "operator": "Exists"}]});
    gpu_pod(&c, "acme", "worker", 8, Some(&leased), tolerations).await;

    // Internal demand: a pending 16-GPU pod needs both nodes. The free lent node comes back at once; the
    // leased one gets notice, on the lease, the node and the tenant's pod.
    let before_notice = Timestamp::now();
    gpu_pod(&c, "ml", "train", 16, None, json!({})).await;
    let deadline = eventually(20, "the notice", || async {
        let s = lease(&c, "job").await.status?;
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
    let pod: Pod = Api::namespaced(c.clone(), "acme").get("worker").await.unwrap();
    let annotated = pod
        .metadata
        .annotations
        .unwrap_or_default()
        .get("sublet.dev/reclaim-deadline")
        .cloned();
    assert_eq!(annotated.map(|a| a.parse::<Timestamp>().unwrap()), Some(deadline));
    let other = if leased == "gpu-1" { "gpu-2" } else { "gpu-1" };
    let o = node(&c, other).await;
    assert_eq!(
        label(&o, "sublet.dev/state"),
        None,
        "the unleased node came back at once"
    );
    assert!(!taint_keys(&o).iter().any(|k| k.starts_with("sublet.dev/")));
    let notices = lease_events(&c, "ReclaimNotice").await;
    assert_eq!(notices.len(), 1);
    assert!(notices[0].note.as_deref().unwrap_or("").contains(&leased));

    // Not before the deadline …
    let pods: Api<Pod> = Api::namespaced(c.clone(), "acme");
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
        (lease(&c, "job").await.status?.phase == LeasePhase::Released).then_some(())
    })
    .await;
    // The internal pod can now be scheduled on it: no taint of sublet's is in its way.
    env.sandbox
        .local()
        .bind("ml", "train", &leased)
        .expect("internal pod binds");
    // And the internal pod was never touched.
    let train: Pod = Api::namespaced(c.clone(), "ml").get("train").await.unwrap();
    assert!(train.metadata.deletion_timestamp.is_none());
    // The ledger billed the 8 GPUs from binding to return, to the second.
    let s = lease(&c, "job").await.status.unwrap();
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
    let env = env(SandboxConfig::default()).await;
    let c = env.client.clone();
    gpu_node(&c, "gpu-1", 8).await;
    create_pool(&c, POOL, enforce_spec(30)).await;
    let run = controller(&c, "sublet-0", false);
    let leased = leased_worker(&c).await;
    gpu_pod(&c, "ml", "train", 8, None, json!({})).await;
    let deadline = eventually(20, "the notice", || async {
        let s = lease(&c, "job").await.status?;
        (s.phase == LeasePhase::Reclaiming).then_some(s.notice_deadline?.0)
    })
    .await;
    run.stop().await;
    let before = lease(&c, "job").await.status.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let run = controller(&c, "sublet-1", false);
    // The restarted controller writes the ledger forward; wait for it to do so.
    let after = eventually(20, "the ledger written again", || async {
        let s = lease(&c, "job").await.status?;
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
    assert_eq!(lease_events(&c, "ReclaimNotice").await.len(), 1, "no second notice");
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
    let env = env(SandboxConfig::default()).await;
    let c = env.client.clone();
    gpu_node(&c, "gpu-1", 8).await;
    gpu_node(&c, "gpu-2", 8).await;
    let rv = |n: Node| n.metadata.resource_version.unwrap();
    let rv1 = rv(node(&c, "gpu-1").await);
    let rv2 = rv(node(&c, "gpu-2").await);
    create_pool(&c, POOL, json!({"mode": "Observe", "idle": {"forSeconds": 0}})).await;
    create_lease(&c, "acme", "job", json!({"pool": POOL, "gpus": 8})).await;
    let run = controller(&c, "sublet-0", false);
    let pools: Api<TenantPool> = Api::all(c.clone());
    let status = eventually(20, "the pool status", || async {
        let s = pools.get(POOL).await.unwrap().status?;
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
    assert_eq!(rv(node(&c, "gpu-1").await), rv1, "gpu-1 untouched");
    assert_eq!(rv(node(&c, "gpu-2").await), rv2, "gpu-2 untouched");
    let l = lease(&c, "job").await.status.unwrap();
    assert_eq!(l.phase, LeasePhase::Pending);
    assert!(l.reason.unwrap().contains("Observe"));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_pool_returns_every_node_and_leaves_no_taint() {
    let env = env(SandboxConfig::default()).await;
    let c = env.client.clone();
    gpu_node(&c, "gpu-1", 8).await;
    gpu_node(&c, "gpu-2", 8).await;
    create_pool(&c, POOL, enforce_spec(1)).await;
    let run = controller(&c, "sublet-0", false);
    leased_worker(&c).await;
    let pools: Api<TenantPool> = Api::all(c.clone());
    eventually(20, "the finalizer", || async {
        pools
            .get(POOL)
            .await
            .unwrap()
            .metadata
            .finalizers
            .filter(|f| f.contains(&"sublet.dev/return-nodes".to_string()))
    })
    .await;
    pools.delete(POOL, &DeleteParams::default()).await.unwrap();
    eventually(30, "the pool gone", || async {
        pools.get_opt(POOL).await.unwrap().is_none().then_some(())
    })
    .await;
    assert_eq!(
        lease_events(&c, "ReclaimNotice").await.len(),
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
    use sublet_sandbox::{FaultAction, FaultConfig, FaultRule};
    let env = env(SandboxConfig::default()).await;
    let c = env.client.clone();
    gpu_node(&c, "gpu-1", 8).await;
    gpu_node(&c, "gpu-2", 8).await;
    // Every watch of `resource`, the controller's included, delivers its events 1.5 s late; the others are
    // prompt.
    env.sandbox.set_faults(FaultConfig {
        seed: 1,
        rules: vec![FaultRule {
            verbs: vec!["watch".into()],
            resources: vec![resource.into()],
            share: 1.0,
            limit: None,
            action: FaultAction::LagWatch { ms: 1500 },
        }],
    });
    create_pool(&c, POOL, enforce_spec(1)).await;
    let run = controller(&c, "sublet-0", false);
    create_lease(&c, "acme", "job", json!({"pool": POOL, "gpus": 8})).await;
    let leased = bound_node(&c, "job").await;
    // Passes run every 200 ms; for the next 3 s (the watch catching up twice over) the lease stays
    // bound to the same node, and that node is the only one bound.
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        let s = lease(&c, "job").await.status.unwrap();
        assert_eq!(s.phase, LeasePhase::Bound, "{s:?}");
        assert_eq!(s.nodes, vec![leased.clone()]);
        let bound: Vec<String> = Api::<Node>::all(c.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|n| label(n, "sublet.dev/lease") == Some("acme.job"))
            .map(|n| n.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(bound, vec![leased.clone()]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(lease_events(&c, "Bound").await.len(), 1, "one Bound event");
    assert!(lease_events(&c, "Released").await.is_empty());
    assert!(env.sandbox.faults_fired()[0] >= 1, "the watch lagged");
    // The pool's revenue is the sum of what its leases were charged: no span of the ledger counted twice.
    let pools: Api<TenantPool> = Api::all(c.clone());
    eventually_seen(10, "pool revenue to match the lease's cost", || async {
        let revenue = pools.get(POOL).await.ok().and_then(|p| p.status).map(|s| s.revenue);
        let cost = lease(&c, "job").await.status.map(|s| s.cost);
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
    let env = env(SandboxConfig::default()).await;
    let c = env.client.clone();
    gpu_node(&c, "gpu-1", 8).await;
    create_pool(&c, POOL, enforce_spec(1)).await;
    let mut replicas = vec![
        ("a", Some(controller(&c, "a", true))),
        ("b", Some(controller(&c, "b", true))),
    ];
    let leader = eventually(20, "a leader", || async { holder(&c).await }).await;
    eventually(20, "gpu-1 lent", || async {
        (label(&node(&c, "gpu-1").await, "sublet.dev/state") == Some("lent")).then_some(())
    })
    .await;
    create_lease(&c, "acme", "first", json!({"pool": POOL, "gpus": 8})).await;
    bound_node(&c, "first").await;
    let bound = lease_events(&c, "Bound").await;
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
    gpu_node(&c, "gpu-2", 8).await;
    create_lease(&c, "acme", "second", json!({"pool": POOL, "gpus": 8})).await;
    bound_node(&c, "second").await;
    let bound = lease_events(&c, "Bound").await;
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
    let env = env(SandboxConfig::default()).await;
    let c = env.client.clone();
    for i in 1..=3 {
        gpu_node(&c, &format!("gpu-{i}"), 8).await;
    }
    create_pool(&c, POOL, enforce_spec(1)).await;
    let run = controller(&c, "sublet-0", false);
    leased_worker(&c).await;
    // From here on the controller's writes and watches meet faults (the test itself only reads).
    env.sandbox.set_faults(faults);
    // Demand for all three nodes: two come back at once, the leased one after its notice and eviction.
    env.sandbox
        .local()
        .create("v1", "pods", Some("ml"), json!({"metadata": {"name": "train"}, "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"nvidia.com/gpu": "24"}}}]}}))
        .expect("internal pod created");
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
        (lease(&c, "job").await.status?.phase == LeasePhase::Released).then_some(())
    })
    .await;
    // Events are best effort (an injected 500 may drop one), but a notice is never sent twice.
    let notices = lease_events(&c, "ReclaimNotice").await.len();
    assert!(notices <= 1, "{notices} notice events despite one notice");
    run.stop().await;
}
