//! A hostile tenant against the controller running as the chart's ServiceAccount (the chart applied in RBAC
//! mode, every write of sublet's held by the chart's RBAC and admission policies). Each test is one or more
//! of the attacks of issue 15: a tenant who wants to keep the node it rents past its deadline, use it
//! unbilled, or make sublet believe what its node says.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use sublet::api::{GpuLease, GpuLeaseStatus, LeasePhase, TenantPool};
use sublet_sandbox::{FaultAction, FaultConfig, FaultRule, SandboxHandle};

use super::rbac::{installed, kubectl, rbac_sandbox, replica_config};
use crate::support::cluster::{
    create_lease, create_pool, events_about, eventually_seen, gpu_node, gpu_pod, label, taint_keys,
};

struct World {
    sandbox: SandboxHandle,
    dir: tempfile::TempDir,
    admin: Client,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl World {
    /// The chart installed, namespaces `acme` (a tenant) and `ml`, `nodes` GPU nodes of 8 GPUs, the pool
    /// `a100` in Enforce mode with `reclaim` merged into its spec, and the controller as the chart's
    /// ServiceAccount. With `tenant_admission` false the tenant-facing policies are unbound, to show that the
    /// controller alone holds (a platform that runs them in Warn mode, or a pod admitted before them).
    async fn start(nodes: &[&str], reclaim: Value, tenant_admission: bool) -> World {
        let (sandbox, dir) = rbac_sandbox().await;
        let (admin, sa) = installed(&sandbox, dir.path()).await;
        if !tenant_admission {
            let kubeconfig = dir.path().join("admin.kubeconfig");
            let args = [
                "delete",
                "validatingadmissionpolicybinding",
                "sublet-tenant-isolation",
                "sublet-tenant-budgets",
            ];
            kubectl(&kubeconfig, dir.path(), &args, None).await;
        }
        for n in nodes {
            gpu_node(&admin, n, 8).await;
        }
        let mut reclaim_spec = json!({"noticeSeconds": 2, "cooldownSeconds": 0});
        reclaim_spec
            .as_object_mut()
            .unwrap()
            .extend(reclaim.as_object().unwrap().clone());
        create_pool(
            &admin,
            "a100",
            json!({"mode": "Enforce", "idle": {"forSeconds": 0}, "reclaim": reclaim_spec,
                   "pricing": {"defaultPerGpuHour": 3.6}}),
        )
        .await;
        let config = replica_config("sublet-0");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(sublet::controller::run(sa, config, async move {
            let _ = stopped.await;
        }));
        World {
            sandbox,
            dir,
            admin,
            stop,
            task,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        self.sandbox.shutdown().await;
        drop(self.dir);
    }

    /// Waits until the lease is bound to `nodes` nodes; its status then.
    async fn bound(&self, ns: &str, name: &str, nodes: usize) -> GpuLeaseStatus {
        let leases: Api<GpuLease> = Api::namespaced(self.admin.clone(), ns);
        eventually_seen(30, &format!("{ns}/{name} bound to {nodes} nodes"), || async {
            let lease = leases.get(name).await.map_err(|e| e.to_string())?;
            let status = lease.status.ok_or("no status")?;
            if status.phase == LeasePhase::Bound && status.nodes.len() == nodes {
                Ok(status)
            } else {
                Err(format!("{:?} on {:?}: {:?}", status.phase, status.nodes, status.reason))
            }
        })
        .await
    }

    /// A running, ready tenant pod on `node`, carrying what the lease status says, with `extra` spec fields
    /// and `labels`; placed by the scheduler (a binding), as the policy requires.
    async fn tenant_pod(&self, name: &str, node: &str, status: &GpuLeaseStatus, labels: Value, extra: Value) {
        self.tenant_pod_of(name, 8, node, status, labels, extra).await
    }

    /// As `tenant_pod`, asking for `gpus` GPUs.
    async fn tenant_pod_of(
        &self,
        name: &str,
        gpus: u32,
        node: &str,
        status: &GpuLeaseStatus,
        labels: Value,
        extra: Value,
    ) {
        let mut spec = json!({"nodeSelector": status.node_selector,
            "tolerations": [status.tolerations[0], {"key": "nvidia.com/gpu", "operator": "Exists"}]});
        spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let pods: Api<Pod> = Api::namespaced(self.admin.clone(), "acme");
        gpu_pod(&self.admin, "acme", name, gpus, None, spec).await;
        pods.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": labels}})),
        )
        .await
        .unwrap();
        self.sandbox.local().bind("acme", name, node).expect("tenant pod binds");
        let ready = json!({"status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}]}});
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(ready))
            .await
            .unwrap();
    }

    /// Internal GPU demand the free nodes cannot meet: notice on leased nodes. Answers the deadline.
    async fn internal_demand(&self, gpus: u32, lease: &str) -> Timestamp {
        gpu_pod(&self.admin, "ml", "train", gpus, None, json!({})).await;
        let leases: Api<GpuLease> = Api::namespaced(self.admin.clone(), "acme");
        eventually_seen(30, "the notice", || async {
            let status = leases
                .get(lease)
                .await
                .map_err(|e| e.to_string())?
                .status
                .ok_or("no status")?;
            match (status.phase, status.notice_deadline) {
                (LeasePhase::Reclaiming, Some(d)) => Ok(d.0),
                (phase, _) => Err(format!("{phase:?}")),
            }
        })
        .await
    }

    /// Waits until `node` is back in internal use: none of sublet's labels or taints.
    async fn back(&self, node: &str, secs: u64) {
        let nodes: Api<Node> = Api::all(self.admin.clone());
        eventually_seen(secs, &format!("{node} back in internal use"), || async {
            let n = nodes.get(node).await.map_err(|e| e.to_string())?;
            let ours: Vec<String> = taint_keys(&n)
                .into_iter()
                .filter(|k| k.starts_with("sublet.dev/"))
                .collect();
            match (label(&n, "sublet.dev/state"), ours.is_empty()) {
                (None, true) => Ok(()),
                (state, _) => Err(format!("state {state:?}, taints {ours:?}")),
            }
        })
        .await
    }

    /// The reasons of the events in `ns` about `kind` objects.
    async fn event_reasons(&self, ns: &str, kind: &str) -> Vec<String> {
        events_about(&self.admin, Some(ns), kind)
            .await
            .into_iter()
            .filter_map(|e| e.reason)
            .collect()
    }
}

/// Waits until the tenant pod is gone; fails if it went before `deadline` (the notice is honoured).
async fn gone_after(admin: &Client, name: &str, deadline: Timestamp, secs: u64) {
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "acme");
    eventually_seen(secs, &format!("acme/{name} gone"), || async {
        match pods.get_opt(name).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(p) => Err(format!(
                "still there, deleting since {:?}",
                p.metadata.deletion_timestamp.map(|t| t.0)
            )),
        }
    })
    .await;
    assert!(
        Timestamp::now() >= deadline,
        "{name} went before its deadline {deadline}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_a_long_grace_or_a_self_deletion_cannot_keep_nodes_past_the_deadline() {
    // Attacks 1 and 3, with the tenant-facing admission off: the controller alone must hold.
    let w = World::start(&["gpu-1", "gpu-2", "gpu-3"], json!({"maxGraceSeconds": 2}), false).await;
    create_lease(&w.admin, "acme", "job", json!({"pool": "a100", "gpus": 24})).await;
    let status = w.bound("acme", "job", 3).await;
    let nodes = status.nodes.clone();
    // A budget that never allows a disruption, over a ready pod.
    w.tenant_pod("guarded", &nodes[0], &status, json!({"app": "guarded"}), json!({}))
        .await;
    let pdb = serde_json::from_value(json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "keep", "namespace": "acme"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}}}))
    .unwrap();
    let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> = Api::namespaced(w.admin.clone(), "acme");
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();
    // A process that ignores SIGTERM with a grace period of ten years.
    let years = json!({"terminationGracePeriodSeconds": 315_360_000});
    w.tenant_pod("immortal", &nodes[1], &status, json!({}), years.clone())
        .await;
    // The same, deleted by the tenant itself with that grace before any notice: terminating for years.
    w.tenant_pod("self-deleted", &nodes[2], &status, json!({}), years).await;
    let pods: Api<Pod> = Api::namespaced(w.admin.clone(), "acme");
    pods.delete("self-deleted", &DeleteParams::default().grace_period(315_360_000))
        .await
        .unwrap();

    let deadline = w.internal_demand(24, "job").await;
    // Gone by the deadline plus twice the cap (eviction or deletion with the capped grace), and a few passes.
    for pod in ["guarded", "immortal", "self-deleted"] {
        gone_after(&w.admin, pod, deadline, 30).await;
    }
    for node in &nodes {
        w.back(node, 20).await;
    }
    let reasons = w.event_reasons("acme", "GpuLease").await;
    assert!(reasons.iter().any(|r| r == "Evicted"), "{reasons:?}");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_and_hanging_evictions_do_not_hold_up_other_nodes() {
    // Attack 2: a node whose evictions a budget refuses, and then the API leaves hanging, while another
    // tenant's lease waits to be bound on a node of another model.
    let w = World::start(
        &["gpu-1", "gpu-2", "gpu-3", "gpu-4"],
        json!({"maxGraceSeconds": 600}),
        false,
    )
    .await;
    let nodes: Api<Node> = Api::all(w.admin.clone());
    nodes
        .patch(
            "gpu-4",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}}})),
        )
        .await
        .unwrap();
    create_lease(
        &w.admin,
        "acme",
        "hog",
        json!({"pool": "a100", "gpus": 24, "gpuModel": crate::support::cluster::MODEL}),
    )
    .await;
    let status = w.bound("acme", "hog", 3).await;
    // Three two-GPU pods on each of the three nodes, all under one budget that allows no disruption.
    for (i, node) in status.nodes.iter().enumerate() {
        for j in 0..3 {
            let name = format!("guarded-{i}-{j}");
            w.tenant_pod_of(&name, 2, node, &status, json!({"app": "guarded"}), json!({}))
                .await;
        }
    }
    let pdb = serde_json::from_value(json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "keep", "namespace": "acme"},
        "spec": {"minAvailable": 9, "selector": {"matchLabels": {"app": "guarded"}}}}))
    .unwrap();
    let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> = Api::namespaced(w.admin.clone(), "acme");
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();
    let selector = json!({"nodeSelector": {"nvidia.com/gpu.product": crate::support::cluster::MODEL}});
    gpu_pod(&w.admin, "ml", "train", 24, None, selector).await;
    let leases: Api<GpuLease> = Api::namespaced(w.admin.clone(), "acme");
    let deadline = eventually_seen(30, "the notice", || async {
        let status = leases
            .get("hog")
            .await
            .map_err(|e| e.to_string())?
            .status
            .ok_or("no status")?;
        status.notice_deadline.map(|d| d.0).ok_or(format!("{:?}", status.phase))
    })
    .await;
    eventually_seen(20, "the deadline passed", || async {
        if Timestamp::now() > deadline.checked_add(jiff::SignedDuration::from_secs(1)).unwrap() {
            Ok(())
        } else {
            Err("not yet".to_string())
        }
    })
    .await;
    // Every eviction now gets 429 from the budget; from here on creates (evictions among them) also hang
    // for a minute. A lease on the free node of the other model binds all the same, in a pass or two: the
    // nine evictions run beside it and beside each other, and give up after a few seconds (before, a pass
    // ran them one after another at ten seconds each, with the client's own retries of each 429 on top).
    w.sandbox.set_faults(FaultConfig {
        seed: 1,
        rules: vec![FaultRule {
            verbs: vec!["create".into()],
            resources: vec!["pods".into()],
            share: 1.0,
            limit: None,
            action: FaultAction::Delay { ms: 60_000 },
        }],
    });
    create_lease(
        &w.admin,
        "acme",
        "second",
        json!({"pool": "a100", "gpus": 8, "gpuModel": "NVIDIA-H100-80GB-HBM3"}),
    )
    .await;
    eventually_seen(15, "the second lease bound while evictions hang", || async {
        let status = leases
            .get("second")
            .await
            .map_err(|e| e.to_string())?
            .status
            .ok_or("no status")?;
        if status.phase == LeasePhase::Bound {
            Ok(())
        } else {
            Err(format!("{:?}: {:?}", status.phase, status.reason))
        }
    })
    .await;
    // The guarded pods are still there (the cap is ten minutes): nothing was deleted early.
    let pods: Api<Pod> = Api::namespaced(w.admin.clone(), "acme");
    for i in 0..3 {
        for j in 0..3 {
            assert!(pods.get_opt(&format!("guarded-{i}-{j}")).await.unwrap().is_some());
        }
    }
    w.sandbox.set_faults(FaultConfig::default());
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_lease_is_billed_until_its_node_is_back_and_its_record_kept() {
    // Attack 4: the tenant deletes its lease and keeps its pod on the node with a long grace period.
    let w = World::start(&["gpu-1"], json!({"maxGraceSeconds": 2}), false).await;
    let lease = create_lease(&w.admin, "acme", "job", json!({"pool": "a100", "gpus": 8})).await;
    let uid = lease.metadata.uid.clone().unwrap();
    let status = w.bound("acme", "job", 1).await;
    let bound_at = status.bound_at.clone().unwrap().0;
    w.tenant_pod(
        "worker",
        &status.nodes[0],
        &status,
        json!({}),
        json!({"terminationGracePeriodSeconds": 315_360_000}),
    )
    .await;
    let leases: Api<GpuLease> = Api::namespaced(w.admin.clone(), "acme");
    eventually_seen(20, "sublet's finalizer on the lease", || async {
        let l = leases.get("job").await.map_err(|e| e.to_string())?;
        let finalizers = l.metadata.finalizers.unwrap_or_default();
        if finalizers.iter().any(|f| f == "sublet.dev/bill-until-returned") {
            Ok(())
        } else {
            Err(format!("{finalizers:?}"))
        }
    })
    .await;
    leases.delete("job", &DeleteParams::default()).await.unwrap();
    // The lease stays while its node is out, under notice, and is billed.
    let deadline = eventually_seen(20, "the notice on the deleted lease", || async {
        let l = leases.get("job").await.map_err(|e| e.to_string())?;
        let status = l.status.ok_or("no status")?;
        match (l.metadata.deletion_timestamp, status.phase, status.notice_deadline) {
            (Some(_), LeasePhase::Reclaiming, Some(d)) => Ok(d.0),
            (deleting, phase, _) => Err(format!("deleting {deleting:?}, {phase:?}")),
        }
    })
    .await;
    gone_after(&w.admin, "worker", deadline, 30).await;
    w.back(&status.nodes[0], 20).await;
    eventually_seen(20, "the lease gone", || async {
        match leases.get_opt("job").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(l) => Err(format!("{:?}", l.status.map(|s| (s.phase, s.gpu_seconds)))),
        }
    })
    .await;
    // Its record: in the pool's status, by UID, billed at least to the deadline; and in an event.
    let pools: Api<TenantPool> = Api::all(w.admin.clone());
    let pool_status = pools.get("a100").await.unwrap().status.unwrap();
    let record = pool_status
        .ended_leases
        .iter()
        .find(|e| e.uid == uid)
        .unwrap_or_else(|| panic!("no record of the lease: {:?}", pool_status.ended_leases));
    let held = deadline.duration_since(bound_at).as_secs();
    assert!(
        record.gpu_seconds >= 8 * held,
        "billed {} GPU-seconds for {held} s on 8 GPUs",
        record.gpu_seconds
    );
    assert!((record.cost - record.gpu_seconds as f64 / 3600.0 * 3.6).abs() < 1e-6);
    let totals = pool_status.ended_totals.unwrap();
    assert_eq!((totals.leases, totals.gpu_seconds), (1, record.gpu_seconds));
    let reasons = w.event_reasons("acme", "GpuLease").await;
    assert!(reasons.iter().any(|r| r == "Ended"), "{reasons:?}");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_node_marks_are_put_right_and_never_believed() {
    // Attacks 5 (second half) and 8, written as an admin (a kubelet is kept off sublet's marks by the
    // node-marks policy; sublet must not depend on it).
    let w = World::start(
        &["gpu-1", "gpu-2"],
        json!({"noticeSeconds": 4, "maxGraceSeconds": 2}),
        true,
    )
    .await;
    let nodes: Api<Node> = Api::all(w.admin.clone());
    create_lease(&w.admin, "acme", "job", json!({"pool": "a100", "gpus": 8})).await;
    let status = w.bound("acme", "job", 1).await;
    let leased = status.nodes[0].clone();
    let lent = if leased == "gpu-1" { "gpu-2" } else { "gpu-1" };
    let sublet_taints = |n: &Node| -> Vec<(String, String)> {
        n.spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.key.starts_with("sublet.dev/"))
            .map(|t| (t.key, t.effect))
            .collect()
    };
    // A leased node keeps every other pod off with a NoExecute taint (a lent one with NoSchedule).
    let n = nodes.get(&leased).await.unwrap();
    assert_eq!(
        sublet_taints(&n),
        [("sublet.dev/lease".to_string(), "NoExecute".to_string())]
    );
    // Attack 8: the taints removed by someone else come back.
    for node in [leased.as_str(), lent] {
        let n = nodes.get(node).await.unwrap();
        let foreign: Vec<_> = n
            .spec
            .unwrap()
            .taints
            .unwrap_or_default()
            .into_iter()
            .filter(|t| !t.key.starts_with("sublet.dev/"))
            .collect();
        nodes
            .patch(
                node,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"taints": foreign}})),
            )
            .await
            .unwrap();
    }
    for (node, key, effect) in [
        (leased.as_str(), "sublet.dev/lease", "NoExecute"),
        (lent, "sublet.dev/lent", "NoSchedule"),
    ] {
        eventually_seen(10, &format!("the {key} taint back on {node}"), || async {
            let n = nodes.get(node).await.map_err(|e| e.to_string())?;
            let taints = sublet_taints(&n);
            if taints == [(key.to_string(), effect.to_string())] {
                Ok(())
            } else {
                Err(format!("{taints:?}"))
            }
        })
        .await;
    }
    let reasons = w.event_reasons("default", "Node").await;
    assert!(reasons.iter().any(|r| r == "MarksRepaired"), "{reasons:?}");

    // Attack 5: the deadline rewritten on the node does not move it.
    w.tenant_pod("worker", &leased, &status, json!({}), json!({})).await;
    let deadline = w.internal_demand(16, "job").await;
    nodes
        .patch(
            &leased,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"sublet.dev/reclaim-deadline": "2099-01-01T00:00:00Z"}}}),
            ),
        )
        .await
        .unwrap();
    gone_after(&w.admin, "worker", deadline, 30).await;
    w.back(&leased, 20).await;

    // The tenant namespace was labelled for Pod Security restricted.
    let namespaces: Api<Namespace> = Api::all(w.admin.clone());
    let acme = namespaces.get("acme").await.unwrap();
    assert_eq!(
        acme.metadata
            .labels
            .unwrap()
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted")
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_lease_is_bound_in_a_namespace_with_weaker_pod_security() {
    let w = World::start(&["gpu-1"], json!({}), true).await;
    let namespaces: Api<Namespace> = Api::all(w.admin.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": "globex", "labels": {
        "sublet.dev/tenant": "true", "pod-security.kubernetes.io/enforce": "privileged"}}}))
    .unwrap();
    namespaces.create(&PostParams::default(), &ns).await.unwrap();
    create_lease(&w.admin, "globex", "job", json!({"pool": "a100", "gpus": 8})).await;
    let leases: Api<GpuLease> = Api::namespaced(w.admin.clone(), "globex");
    eventually_seen(20, "the lease told why it waits", || async {
        let status = leases
            .get("job")
            .await
            .map_err(|e| e.to_string())?
            .status
            .ok_or("no status")?;
        let reason = status.reason.unwrap_or_default();
        if status.phase == LeasePhase::Pending && reason.contains("enforces Pod Security 'privileged'") {
            Ok(())
        } else {
            Err(format!("{:?}: {reason}", status.phase))
        }
    })
    .await;
    // sublet leaves a level someone chose alone.
    let globex = namespaces.get("globex").await.unwrap();
    assert_eq!(
        globex.metadata.labels.unwrap()["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    w.stop().await;
}
