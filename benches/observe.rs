//! Observing one pool from the controller's caches: 5,000 nodes (40,000 GPUs), 100,000 pods (40,000 of them
//! GPU pods, 8,000 a tenant's), 1,000 leases, the shapes `sublet run` keeps them in.
//!
//! `cargo bench --bench observe` prints the time to build the planner's snapshot from them, and that plus
//! the plan: the part of a pass between an internal pod showing up in the cache and the first API write.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::runtime::watcher::Event;
use serde_json::json;
use sublet::api::{GpuLease, TenantPool};
use sublet::controller::{CachedPod, IdleClocks, PodCache, PodWriter, World, observe};
use sublet::policy::{Signals, plan};

const NODES: usize = 5_000;
const INTERNAL: usize = 4_000;
const PODS: usize = 100_000;
const LEASES: usize = 1_000;
const TENANTS: usize = 50;

fn world() -> (TenantPool, World, PodCache) {
    let pool: TenantPool = serde_json::from_value(json!({
        "apiVersion": "sublet.dev/v1alpha1", "kind": "TenantPool", "metadata": {"name": "bench"},
        "spec": {"mode": "Enforce", "idle": {"forSeconds": 0}, "reclaim": {"noticeSeconds": 3600}}
    }))
    .unwrap();
    let mut nodes = Vec::new();
    let pods = PodCache::default();
    let mut writer = PodWriter::new(pods.clone());
    let mut count = 0;
    for i in 0..NODES {
        let name = format!("gpu-{i:05}");
        let leased = i >= INTERNAL;
        let lease = i.saturating_sub(INTERNAL);
        let key = format!("tenant-{}.lease-{lease}", lease % TENANTS);
        let labels = if leased {
            json!({"nvidia.com/gpu.product": "A100", "kubernetes.io/hostname": name, "sublet.dev/pool": "bench",
                   "sublet.dev/state": "leased", "sublet.dev/lease": key})
        } else {
            json!({"nvidia.com/gpu.product": "A100", "kubernetes.io/hostname": name})
        };
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels, "resourceVersion": (i + 1).to_string()},
            "spec": {"taints": if leased { json!([{"key": "sublet.dev/lease", "value": key, "effect": "NoExecute"}]) } else { json!([]) }},
            "status": {"allocatable": {"nvidia.com/gpu": "8", "cpu": "96"}, "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        nodes.push(Arc::new(node));
        let ns = if leased {
            format!("tenant-{}", lease % TENANTS)
        } else {
            "ml".into()
        };
        for k in 0..8 {
            let mut pod: CachedPod = serde_json::from_value(json!({
                "metadata": {"namespace": ns, "name": format!("p-{i}-{k}")},
                "spec": {"nodeName": name, "containers": [{"resources": {"requests": {"nvidia.com/gpu": "1"}}}]},
                "status": {"phase": "Running"}
            }))
            .unwrap();
            pod.trim();
            writer.event(Event::Apply(pod));
            count += 1;
        }
    }
    let mut j = 0;
    while count < PODS {
        let mut pod: CachedPod = serde_json::from_value(json!({
            "metadata": {"namespace": "ml", "name": format!("cpu-{j}")},
            "spec": {"nodeName": format!("gpu-{:05}", j % NODES), "containers": [{"resources": {"requests": {"cpu": "100m"}}}]},
            "status": {"phase": "Running"}
        }))
        .unwrap();
        pod.trim();
        writer.event(Event::Apply(pod));
        count += 1;
        j += 1;
    }
    let leases = (0..LEASES)
        .map(|l| {
            let lease: GpuLease = serde_json::from_value(json!({
                "apiVersion": "sublet.dev/v1alpha1", "kind": "GpuLease",
                "metadata": {"name": format!("lease-{l}"), "namespace": format!("tenant-{}", l % TENANTS)},
                "spec": {"pool": "bench", "gpus": 8}
            }))
            .unwrap();
            Arc::new(lease)
        })
        .collect();
    let namespaces = std::iter::once(json!({"metadata": {"name": "ml"}}))
        .chain(
            (0..TENANTS)
                .map(|t| json!({"metadata": {"name": format!("tenant-{t}"), "labels": {"sublet.dev/tenant": "true"}}})),
        )
        .map(|v| Arc::new(serde_json::from_value::<Namespace>(v).unwrap()))
        .collect();
    (
        pool,
        World {
            nodes,
            leases,
            namespaces,
        },
        pods,
    )
}

fn bench(c: &mut Criterion) {
    let (pool, world, pods) = world();
    let clocks = IdleClocks::default();
    let now = Timestamp::now();
    let observed = observe(&pool, &world, &pods.read(), &clocks, Signals::default(), now).unwrap();
    eprintln!(
        "snapshot: {} nodes, {} pods listed, {} leases",
        observed.snapshot.nodes.len(),
        observed.snapshot.pods.len(),
        observed.snapshot.leases.len()
    );
    c.bench_function("observe 5k nodes / 100k pods / 1k leases", |b| {
        b.iter(|| observe(&pool, black_box(&world), &pods.read(), &clocks, Signals::default(), now).unwrap())
    });
    c.bench_function("observe + plan 5k nodes / 100k pods / 1k leases", |b| {
        b.iter(|| {
            let o = observe(&pool, black_box(&world), &pods.read(), &clocks, Signals::default(), now).unwrap();
            plan(&o.snapshot)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
