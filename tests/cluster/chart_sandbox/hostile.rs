//! A hostile tenant against the controller running as the chart's ServiceAccount (the chart applied, every
//! write of sublet's held by the chart's RBAC and admission policies), on the sandbox in RBAC mode and on the
//! real kube-apiserver with its whole admission chain, kube-scheduler placing the tenant's pods
//! (`SUBLET_TEST_CLUSTER`). Each test is one or more of the attacks of issue 15: a tenant who wants to keep
//! the node it rents past its deadline, use it unbilled, or make sublet believe what its node says.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use sublet::api::{GpuLease, GpuLeaseStatus, LeasePhase, TenantPool};
use sublet_sandbox::{FaultAction, FaultConfig, FaultRule};

use super::deploy_yaml;
use super::rbac::{install_on, kubectl, replica_config};
use crate::support::cluster::{
    TestEnv, create_lease, create_pool, events_about, eventually_seen, gpu_pod, label, taint_keys,
};
use crate::support::fault_proxy::FaultProxy;
use crate::support::real::{Backend, clusters};

/// The tenant-facing policies a test may unbind.
const TENANT_BINDINGS: [&str; 2] = ["sublet-tenant-isolation", "sublet-tenant-budgets"];

struct World {
    env: TestEnv,
    dir: tempfile::TempDir,
    admin: Client,
    /// The tenant and the internal namespace.
    acme: String,
    ml: String,
    pool: String,
    /// The nodes, in the order their base names were given.
    nodes: Vec<String>,
    tenant_admission: bool,
    /// On the real control plane, the proxy the controller reaches kube-apiserver through, as the chart's
    /// ServiceAccount (faults are injected there).
    proxy: Option<FaultProxy>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl World {
    /// The chart installed, a tenant and an internal namespace, GPU nodes of 8 GPUs (`bases`), the pool `a100`
    /// in Enforce mode with `reclaim` merged into its spec, and the controller as the chart's ServiceAccount.
    /// With `tenant_admission` false the tenant-facing policies are unbound, to show that the controller alone
    /// holds (a platform that runs them in Warn mode, or a pod admitted before them).
    async fn start(backend: Backend, bases: &[&str], reclaim: Value, tenant_admission: bool) -> World {
        let env = TestEnv::with_rbac(backend).await;
        let dir = tempfile::tempdir().unwrap();
        let sa = install_on(&env, dir.path()).await;
        let admin = env.client.clone();
        let (acme, ml) = (env.acme.clone(), env.ml.clone());
        if !tenant_admission {
            let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(admin.clone());
            for b in TENANT_BINDINGS {
                bindings.delete(b, &DeleteParams::default()).await.unwrap();
            }
            // kube-apiserver stops enforcing a policy once its informer has seen the binding go.
            let pdbs: Api<PodDisruptionBudget> = Api::namespaced(admin.clone(), &acme);
            let probe = serde_json::from_value(json!({"metadata": {"name": "probe"},
                "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "probe"}}}}))
            .unwrap();
            let dry = PostParams {
                dry_run: true,
                ..PostParams::default()
            };
            eventually_seen(30, "the tenant policies unbound", || async {
                pdbs.create(&dry, &probe).await.map(|_| ()).map_err(|e| e.to_string())
            })
            .await;
        }
        let mut nodes = Vec::new();
        for b in bases {
            nodes.push(env.gpu_node(b, 8).await);
        }
        let mut reclaim_spec = json!({"noticeSeconds": 2, "cooldownSeconds": 0});
        reclaim_spec
            .as_object_mut()
            .unwrap()
            .extend(reclaim.as_object().unwrap().clone());
        let pool = env.name("a100");
        create_pool(
            &admin,
            &pool,
            env.pool_spec(
                json!({"mode": "Enforce", "idle": {"forSeconds": 0}, "reclaim": reclaim_spec,
                   "pricing": {"defaultPerGpuHour": 3.6}}),
            ),
        )
        .await;
        let (proxy, client) = match backend {
            Backend::Sandbox => (None, sa),
            Backend::Real => {
                let proxy = FaultProxy::start(sa, FaultConfig::default()).await;
                let client = proxy.client();
                (Some(proxy), client)
            }
        };
        let config = replica_config("sublet-0");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(sublet::controller::run(client, config, async move {
            let _ = stopped.await;
        }));
        World {
            env,
            dir,
            admin,
            acme,
            ml,
            pool,
            nodes,
            tenant_admission,
            proxy,
            stop,
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        match self.env.sandbox.take() {
            Some(sandbox) => sandbox.shutdown().await,
            // The real control plane outlives the test: the unbound policies are bound again.
            None if !self.tenant_admission => {
                let kubeconfig = crate::support::real::real().kubeconfig.clone();
                let args = ["apply", "--server-side", "--force-conflicts", "-f", "-"];
                kubectl(&kubeconfig, self.dir.path(), &args, Some(&deploy_yaml())).await;
            }
            None => {}
        }
        drop(self.dir);
    }

    /// Faults in what the controller sends (the sandbox's own, or the proxy's before kube-apiserver).
    fn set_faults(&self, faults: FaultConfig) {
        match &self.proxy {
            Some(p) => p.faults.set(faults),
            None => self.env.set_faults(faults),
        }
    }

    /// Waits until the lease is bound to `nodes` nodes; its status then.
    async fn bound(&self, name: &str, nodes: usize) -> GpuLeaseStatus {
        let leases: Api<GpuLease> = Api::namespaced(self.admin.clone(), &self.acme);
        eventually_seen(30, &format!("{name} bound to {nodes} nodes"), || async {
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
    /// and `labels`.
    async fn tenant_pod(&self, name: &str, node: &str, status: &GpuLeaseStatus, labels: Value, extra: Value) {
        self.tenant_pod_of(name, 8, node, status, labels, extra).await
    }

    /// As `tenant_pod`, asking for `gpus` GPUs. The pod selects `node` by its host name besides the lease's
    /// selector, and is placed by a scheduler, as the policy requires: kube-scheduler (and the simulated
    /// kubelet starts it) on the real control plane, the test's binding on the sandbox.
    async fn tenant_pod_of(
        &self,
        name: &str,
        gpus: u32,
        node: &str,
        status: &GpuLeaseStatus,
        labels: Value,
        extra: Value,
    ) {
        let mut selector = status.node_selector.clone();
        selector.insert("kubernetes.io/hostname".into(), node.into());
        let mut spec = json!({"nodeSelector": selector,
            "tolerations": [status.tolerations[0], {"key": "nvidia.com/gpu", "operator": "Exists"}]});
        spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let pods: Api<Pod> = Api::namespaced(self.admin.clone(), &self.acme);
        gpu_pod(&self.admin, &self.acme, name, gpus, None, spec).await;
        pods.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": labels}})),
        )
        .await
        .unwrap();
        if self.env.sandbox.is_some() {
            self.env.bind(&self.acme, name, node).await;
            let ready = json!({"status": {"phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}]}});
            pods.patch_status(name, &PatchParams::default(), &Patch::Merge(ready))
                .await
                .unwrap();
        }
        eventually_seen(30, &format!("{name} running and ready on {node}"), || async {
            let p = pods.get(name).await.map_err(|e| e.to_string())?;
            let on = p.spec.as_ref().and_then(|s| s.node_name.clone());
            let status = p.status.unwrap_or_default();
            let ready = status
                .conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            match (on.as_deref(), status.phase.as_deref(), ready) {
                (Some(n), Some("Running"), true) if n == node => Ok(()),
                seen => Err(format!("{seen:?}")),
            }
        })
        .await;
    }

    /// Internal GPU demand the free nodes cannot meet: notice on leased nodes. Answers the deadline.
    async fn internal_demand(&self, gpus: u32, lease: &str) -> Timestamp {
        gpu_pod(&self.admin, &self.ml, "train", gpus, None, json!({})).await;
        let leases: Api<GpuLease> = Api::namespaced(self.admin.clone(), &self.acme);
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

    /// Waits for an event with `reason` in the tenant namespace about a GpuLease (a kube-apiserver writes an
    /// event a moment after what it tells of).
    async fn lease_event(&self, reason: &str) {
        eventually_seen(10, &format!("a {reason} event about a lease"), || async {
            let reasons: Vec<String> = events_about(&self.admin, Some(&self.acme), "GpuLease")
                .await
                .into_iter()
                .filter_map(|e| e.reason)
                .collect();
            match reasons.iter().any(|r| r == reason) {
                true => Ok(()),
                false => Err(format!("{reasons:?}")),
            }
        })
        .await
    }

    /// Waits until the tenant pod is gone; fails if it went before `deadline` (the notice is honoured).
    async fn gone_after(&self, name: &str, deadline: Timestamp, secs: u64) {
        let pods: Api<Pod> = Api::namespaced(self.admin.clone(), &self.acme);
        eventually_seen(secs, &format!("{name} gone"), || async {
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_a_long_grace_or_a_self_deletion_cannot_keep_nodes_past_the_deadline() {
    for backend in clusters() {
        budget_long_grace_or_self_deletion(backend).await;
    }
}

async fn budget_long_grace_or_self_deletion(backend: Backend) {
    // Attacks 1 and 3, with the tenant-facing admission off: the controller alone must hold.
    let w = World::start(
        backend,
        &["gpu-1", "gpu-2", "gpu-3"],
        json!({"maxGraceSeconds": 2}),
        false,
    )
    .await;
    create_lease(&w.admin, &w.acme, "job", json!({"pool": w.pool, "gpus": 24})).await;
    let status = w.bound("job", 3).await;
    let nodes = status.nodes.clone();
    // A budget that never allows a disruption, over a ready pod.
    w.tenant_pod("guarded", &nodes[0], &status, json!({"app": "guarded"}), json!({}))
        .await;
    let pdb = serde_json::from_value(json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "keep"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}}}))
    .unwrap();
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(w.admin.clone(), &w.acme);
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();
    // A process that ignores SIGTERM with a grace period of ten years.
    let years = json!({"terminationGracePeriodSeconds": 315_360_000});
    w.tenant_pod("immortal", &nodes[1], &status, json!({}), years.clone())
        .await;
    // The same, deleted by the tenant itself with that grace before any notice: terminating for years.
    w.tenant_pod("self-deleted", &nodes[2], &status, json!({}), years).await;
    let pods: Api<Pod> = Api::namespaced(w.admin.clone(), &w.acme);
    pods.delete("self-deleted", &DeleteParams::default().grace_period(315_360_000))
        .await
        .unwrap();

    let deadline = w.internal_demand(24, "job").await;
    // Gone by the deadline plus twice the cap (eviction or deletion with the capped grace), and a few passes.
    for pod in ["guarded", "immortal", "self-deleted"] {
        w.gone_after(pod, deadline, 30).await;
    }
    for node in &nodes {
        w.back(node, 20).await;
    }
    w.lease_event("Evicted").await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_and_hanging_evictions_do_not_hold_up_other_nodes() {
    for backend in clusters() {
        blocked_and_hanging_evictions(backend).await;
    }
}

async fn blocked_and_hanging_evictions(backend: Backend) {
    // Attack 2: a node whose evictions a budget refuses, and then the API leaves hanging, while another
    // tenant's lease waits to be bound on a node of another model.
    let w = World::start(
        backend,
        &["gpu-1", "gpu-2", "gpu-3", "gpu-4"],
        json!({"maxGraceSeconds": 600}),
        false,
    )
    .await;
    let h100 = w.nodes[3].clone();
    let nodes: Api<Node> = Api::all(w.admin.clone());
    nodes
        .patch(
            &h100,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}}})),
        )
        .await
        .unwrap();
    create_lease(
        &w.admin,
        &w.acme,
        "hog",
        json!({"pool": w.pool, "gpus": 24, "gpuModel": crate::support::cluster::MODEL}),
    )
    .await;
    let status = w.bound("hog", 3).await;
    // Three two-GPU pods on each of the three nodes, all under one budget that allows no disruption.
    for (i, node) in status.nodes.iter().enumerate() {
        for j in 0..3 {
            let name = format!("guarded-{i}-{j}");
            w.tenant_pod_of(&name, 2, node, &status, json!({"app": "guarded"}), json!({}))
                .await;
        }
    }
    let pdb = serde_json::from_value(json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "keep"},
        "spec": {"minAvailable": 9, "selector": {"matchLabels": {"app": "guarded"}}}}))
    .unwrap();
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(w.admin.clone(), &w.acme);
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();
    let selector = json!({"nodeSelector": {"nvidia.com/gpu.product": crate::support::cluster::MODEL}});
    gpu_pod(&w.admin, &w.ml, "train", 24, None, selector).await;
    let leases: Api<GpuLease> = Api::namespaced(w.admin.clone(), &w.acme);
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
    w.set_faults(FaultConfig {
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
        &w.acme,
        "second",
        json!({"pool": w.pool, "gpus": 8, "gpuModel": "NVIDIA-H100-80GB-HBM3"}),
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
    let pods: Api<Pod> = Api::namespaced(w.admin.clone(), &w.acme);
    for i in 0..3 {
        for j in 0..3 {
            let pod = pods.get_opt(&format!("guarded-{i}-{j}")).await.unwrap();
            assert!(pod.is_some_and(|p| p.metadata.deletion_timestamp.is_none()));
        }
    }
    w.set_faults(FaultConfig::default());
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_lease_is_billed_until_its_node_is_back_and_its_record_kept() {
    for backend in clusters() {
        deleted_lease_billed_until_back(backend).await;
    }
}

async fn deleted_lease_billed_until_back(backend: Backend) {
    // Attack 4: the tenant deletes its lease and keeps its pod on the node with a long grace period.
    let w = World::start(backend, &["gpu-1"], json!({"maxGraceSeconds": 2}), false).await;
    let lease = create_lease(&w.admin, &w.acme, "job", json!({"pool": w.pool, "gpus": 8})).await;
    let uid = lease.metadata.uid.clone().unwrap();
    let status = w.bound("job", 1).await;
    let bound_at = status.bound_at.clone().unwrap().0;
    w.tenant_pod(
        "worker",
        &status.nodes[0],
        &status,
        json!({}),
        json!({"terminationGracePeriodSeconds": 315_360_000}),
    )
    .await;
    let leases: Api<GpuLease> = Api::namespaced(w.admin.clone(), &w.acme);
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
    w.gone_after("worker", deadline, 30).await;
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
    let pool_status = pools.get(&w.pool).await.unwrap().status.unwrap();
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
    w.lease_event("Ended").await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_node_marks_are_put_right_and_never_believed() {
    for backend in clusters() {
        forged_node_marks(backend).await;
    }
}

async fn forged_node_marks(backend: Backend) {
    // Attacks 5 (second half) and 8, written as an admin (a kubelet is kept off sublet's marks by the
    // node-marks policy; sublet must not depend on it).
    let w = World::start(
        backend,
        &["gpu-1", "gpu-2"],
        json!({"noticeSeconds": 4, "maxGraceSeconds": 2}),
        true,
    )
    .await;
    let nodes: Api<Node> = Api::all(w.admin.clone());
    create_lease(&w.admin, &w.acme, "job", json!({"pool": w.pool, "gpus": 8})).await;
    let status = w.bound("job", 1).await;
    let leased = status.nodes[0].clone();
    let lent = w.nodes.iter().find(|n| **n != leased).unwrap().clone();
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
    for node in [&leased, &lent] {
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
        (lent.as_str(), "sublet.dev/lent", "NoSchedule"),
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
    // (Events about nodes are in `default`, which other tests on the real control plane share: ours only. A
    // kube-apiserver writes an event a moment after what it tells of.)
    eventually_seen(10, "a MarksRepaired event about our nodes", || async {
        let repaired: Vec<String> = events_about(&w.admin, Some("default"), "Node")
            .await
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("MarksRepaired"))
            .filter_map(|e| e.regarding.and_then(|r| r.name))
            .collect();
        match repaired.iter().any(|n| w.nodes.contains(n)) {
            true => Ok(()),
            false => Err(format!("{repaired:?}")),
        }
    })
    .await;

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
    w.gone_after("worker", deadline, 30).await;
    w.back(&leased, 20).await;

    // The tenant namespace was labelled for Pod Security restricted.
    let namespaces: Api<Namespace> = Api::all(w.admin.clone());
    let acme = namespaces.get(&w.acme).await.unwrap();
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
    for backend in clusters() {
        weaker_pod_security(backend).await;
    }
}

async fn weaker_pod_security(backend: Backend) {
    let w = World::start(backend, &["gpu-1"], json!({}), true).await;
    let namespaces: Api<Namespace> = Api::all(w.admin.clone());
    let globex = w.env.name("globex");
    let ns = serde_json::from_value(json!({"metadata": {"name": globex, "labels": {
        crate::support::real::OWNED: "true",
        "sublet.dev/tenant": "true", "pod-security.kubernetes.io/enforce": "privileged"}}}))
    .unwrap();
    namespaces.create(&PostParams::default(), &ns).await.unwrap();
    create_lease(&w.admin, &globex, "job", json!({"pool": w.pool, "gpus": 8})).await;
    let leases: Api<GpuLease> = Api::namespaced(w.admin.clone(), &globex);
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
    let labels = namespaces.get(&globex).await.unwrap().metadata.labels.unwrap();
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "privileged");
    w.stop().await;
}
