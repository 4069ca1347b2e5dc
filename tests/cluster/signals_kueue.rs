//! Kueue Workloads as internal demand: `sublet run` against the sandbox and the real control plane
//! (`SUBLET_TEST_CLUSTER`) with Kueue's kinds applied from a fixture; waiting Workloads in the pool's
//! ClusterQueues take lent nodes back, admitted ones do not.

use crate::support::cluster::*;
use crate::support::real::{Backend, clusters};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::{Value, json};
use sublet::api::{GpuLease, LeasePhase, TenantPool};
use sublet_sandbox::SandboxConfig;

fn kueue(client: &Client, kind: &str, plural: &str, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("kueue.x-k8s.io", "v1beta1", kind);
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk_with_plural(&gvk, plural))
}

async fn apply_kueue_crds(client: &Client, ns: &str) {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kueue-crds.yaml"))
        .expect("fixture");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let crd = CustomResourceDefinition::deserialize(doc).expect("a CRD");
        match crds.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            // Served already: an earlier test on the real control plane created it.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("CRD not created: {e}"),
        }
    }
    eventually(20, "Kueue kinds served", || async {
        let a = kueue(client, "Workload", "workloads", ns)
            .list(&ListParams::default())
            .await;
        let b = kueue(client, "LocalQueue", "localqueues", ns)
            .list(&ListParams::default())
            .await;
        (a.is_ok() && b.is_ok()).then_some(())
    })
    .await;
}

async fn create(api: &Api<DynamicObject>, body: Value) {
    let obj: DynamicObject = serde_json::from_value(body).unwrap();
    api.create(&PostParams::default(), &obj).await.expect("created");
}

fn workload(name: &str, queue: &str, count: u32, gpus: u32) -> Value {
    json!({
        "apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "Workload",
        "metadata": {"name": name},
        "spec": {"queueName": queue, "podSets": [{"name": "workers", "count": count, "template": {"spec": {
            "nodeSelector": {"nvidia.com/gpu.product": MODEL},
            "containers": [{"name": "w", "image": "trainer:1", "resources": {"requests": {"nvidia.com/gpu": gpus.to_string()}}}],
        }}}]},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_kueue_workloads_take_lent_nodes_back() {
    for backend in clusters() {
        waiting_workloads_take_lent_nodes_back(backend).await;
    }
}

async fn waiting_workloads_take_lent_nodes_back(backend: Backend) {
    let env = TestEnv::start(backend, SandboxConfig::default()).await;
    let c = env.client.clone();
    let ml = env.ml.as_str();
    apply_kueue_crds(&c, ml).await;
    env.gpu_node("gpu-1", 8).await;
    env.gpu_node("gpu-2", 8).await;
    let pool = env.name("a100");
    create_pool(
        &c,
        &pool,
        env.pool_spec(json!({
            "mode": "Enforce",
            "idle": {"forSeconds": 0},
            "reclaim": {"noticeSeconds": 3, "cooldownSeconds": 0},
            "demand": {"kueue": {"clusterQueues": ["gpu-cq"]}},
        })),
    )
    .await;
    let run = env.controller("sublet-0", false);
    eventually(20, "both nodes lent", || async {
        (lent(&c).await.len() == 2).then_some(())
    })
    .await;

    let queues = kueue(&c, "LocalQueue", "localqueues", ml);
    for (name, cq) in [("team-q", "gpu-cq"), ("batch-q", "other-cq")] {
        let body = json!({"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "LocalQueue",
            "metadata": {"name": name}, "spec": {"clusterQueue": cq}});
        create(&queues, body).await;
    }
    let workloads = kueue(&c, "Workload", "workloads", ml);
    // A Workload of another ClusterQueue, and an admitted one, ask sublet for nothing.
    create(&workloads, workload("batch", "batch-q", 2, 8)).await;
    create(&workloads, workload("running", "team-q", 2, 8)).await;
    let admitted = json!({"status": {"admission": {"clusterQueue": "gpu-cq", "podSetAssignments": []},
        "conditions": [{"type": "QuotaReserved", "status": "True", "reason": "QuotaReserved", "message": "",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    workloads
        .patch_status("running", &PatchParams::default(), &Patch::Merge(&admitted))
        .await
        .expect("admitted");
    // Two pods of 4 GPUs, waiting for quota in gpu-cq: one node comes back, the other stays lent.
    create(&workloads, workload("train", "team-q", 2, 4)).await;
    let back = eventually(20, "one node back for the waiting Workload", || async {
        let l = lent(&c).await;
        (l.len() == 1).then_some(l)
    })
    .await;
    let status = Api::<TenantPool>::all(c.clone())
        .get(&pool)
        .await
        .unwrap()
        .status
        .unwrap();
    let fresh = status.conditions.iter().find(|c| c.type_ == "SignalsFresh").unwrap();
    assert_eq!(fresh.status, "True", "{fresh:?}");
    assert_eq!(back.len(), 1);

    // Once admitted, the Workload waits no more and the node is lent again.
    workloads
        .patch_status("train", &PatchParams::default(), &Patch::Merge(&admitted))
        .await
        .expect("admitted");
    eventually(20, "the node lent again", || async {
        (lent(&c).await.len() == 2).then_some(())
    })
    .await;

    // A tenant leases one node; a Workload that needs both nodes takes the leased one back too.
    create_lease(&c, &env.acme, "job", json!({"pool": pool, "gpus": 8})).await;
    let leases: Api<GpuLease> = Api::namespaced(c.clone(), &env.acme);
    eventually(20, "the lease bound", || async {
        let s = leases.get("job").await.ok()?.status?;
        (s.phase == LeasePhase::Bound).then_some(())
    })
    .await;
    create(&workloads, workload("big", "team-q", 2, 8)).await;
    // Without tenant pods on it the leased node needs no notice period: the lease is released at once.
    eventually(20, "the lease reclaimed", || async {
        let s = leases.get("job").await.ok()?.status?;
        matches!(s.phase, LeasePhase::Reclaiming | LeasePhase::Released).then_some(())
    })
    .await;
    eventually(20, "both nodes internal", || async {
        lent(&c).await.is_empty().then_some(())
    })
    .await;
    run.stop().await;
}

/// On the sandbox only: the real control plane of this test binary serves Kueue's kinds once the test above
/// has applied them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_kueue_makes_signals_stale_and_reclaims_nothing() {
    // No Kueue kinds in this cluster: the source fails, lending stops, lent nodes stay lent.
    let env = env(SandboxConfig::default()).await;
    let c = env.client.clone();
    gpu_node(&c, "gpu-1", 8).await;
    create_pool(
        &c,
        "a100",
        json!({"mode": "Enforce", "idle": {"forSeconds": 0}, "reclaim": {"cooldownSeconds": 0}}),
    )
    .await;
    let run = controller(&c, "sublet-0", false);
    eventually(20, "the node lent", || async {
        (lent(&c).await.len() == 1).then_some(())
    })
    .await;
    let pools: Api<TenantPool> = Api::all(c.clone());
    let patch = json!({"spec": {"demand": {"kueue": {"clusterQueues": ["gpu-cq"]}}}});
    pools
        .patch("a100", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let (reason, message) = eventually(20, "SignalsFresh=False", || async {
        let status = pools.get("a100").await.ok()?.status?;
        let fresh = status.conditions.iter().find(|c| c.type_ == "SignalsFresh")?.clone();
        (fresh.status == "False").then_some((fresh.reason, fresh.message))
    })
    .await;
    gpu_node(&c, "gpu-2", 8).await;
    eventually(20, "gpu-2 in the pool status", || async {
        let status = pools.get("a100").await.ok()?.status?;
        status.nodes.iter().any(|n| n.name == "gpu-2").then_some(())
    })
    .await;
    assert_eq!(reason, "Stale");
    assert!(message.contains("Kueue demand"), "{message}");
    // The new idle node is not lent; the lent one is not taken back.
    assert_eq!(lent(&c).await, vec!["gpu-1".to_string()]);
    let pool = pools.get("a100").await.unwrap();
    let lending = pool
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Lending")
        .unwrap();
    assert_eq!(lending.status, "False");
    assert!(lending.message.contains("signals are not fresh"), "{}", lending.message);
    run.stop().await;
    env.sandbox.shutdown().await;
}
