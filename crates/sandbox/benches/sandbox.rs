//! Scale of the sandbox API server: loads 5,000 nodes and 100,000 pods through the in-process API, prints the
//! resident memory after the load, then changes pods at 50 per second and prints how long each change takes to
//! reach a kube-rs watch over HTTP (p50, p99, max), and how long a full list of the pods takes.
//!
//! Run: `cargo bench --bench sandbox` (SANDBOX_BENCH_PODS / SANDBOX_BENCH_NODES / SANDBOX_BENCH_SECONDS
//! change the sizes). Under `cargo test --all-targets` (no `--bench` argument) it runs a small smoke load.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use serde_json::json;
use sublet_sandbox::{LocalApi, PatchKind, Sandbox, SandboxConfig};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn node(i: usize) -> serde_json::Value {
    json!({
        "metadata": {"name": format!("gpu-{i:05}"), "labels": {"node.kubernetes.io/instance-type": "p4d.24xlarge", "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}},
        "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
        "status": {"capacity": {"cpu": "96", "memory": "1152Gi", "nvidia.com/gpu": "8"}, "allocatable": {"cpu": "95", "memory": "1100Gi", "nvidia.com/gpu": "8"},
                   "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}], "nodeInfo": {"kubeletVersion": "v1.35.0"}},
    })
}

fn pod(i: usize, nodes: usize) -> serde_json::Value {
    json!({
        "metadata": {"name": format!("job-{i:06}"), "labels": {"app": "train", "team": format!("team-{}", i % 20)}},
        "spec": {"nodeName": format!("gpu-{:05}", i % nodes), "containers": [{"name": "main", "image": "registry.example/train:1.0",
                 "resources": {"requests": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}}]},
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// How much the bench loads and for how long it changes pods.
#[derive(Clone, Copy)]
struct Sizes {
    nodes: usize,
    pods: usize,
    namespaces: usize,
    seconds: usize,
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes = Sizes {
        nodes: env("SANDBOX_BENCH_NODES", if full { 5_000 } else { 50 }),
        pods: env("SANDBOX_BENCH_PODS", if full { 100_000 } else { 500 }),
        namespaces: 100,
        seconds: env("SANDBOX_BENCH_SECONDS", if full { 5 } else { 1 }),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let rss_start = rss_mib();
        let handle = Sandbox::start(SandboxConfig::default()).await.unwrap();
        let local = handle.local().as_manager("bench");
        load(&local, sizes).await;
        let rss_loaded = rss_mib();
        println!(
            "RSS: {rss_start:.0} MiB at start, {rss_loaded:.0} MiB after the load ({:.2} KiB per object)",
            (rss_loaded - rss_start) * 1024.0 / (sizes.nodes + sizes.pods) as f64
        );

        let client = handle.client().await.unwrap();
        let all: Api<Pod> = Api::all(client);
        let rv = full_list(&all).await;
        let changes = 50 * sizes.seconds;
        let mut lat = watch_latencies(&all, &rv, &local, changes, sizes).await;
        lat.sort();
        println!(
            "watch delivery of {} of {changes} changes at 50/s: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            lat.len(),
            percentile(&lat, 0.5).as_secs_f64() * 1000.0,
            percentile(&lat, 0.99).as_secs_f64() * 1000.0,
            lat.last().copied().unwrap_or_default().as_secs_f64() * 1000.0
        );
        println!("RSS at the end: {:.0} MiB", rss_mib());
        handle.shutdown().await;
    });
}

/// Creates the namespaces, nodes and pods through the in-process API, prints the rate, and gives the
/// controllers time to catch up with the burst.
async fn load(local: &LocalApi, sizes: Sizes) {
    let Sizes {
        nodes,
        pods,
        namespaces,
        ..
    } = sizes;
    let started = Instant::now();
    for n in 0..namespaces {
        local
            .create(
                "v1",
                "namespaces",
                None,
                json!({"metadata": {"name": format!("ns-{n:03}")}}),
            )
            .unwrap();
    }
    for i in 0..nodes {
        local.create("v1", "nodes", None, node(i)).unwrap();
    }
    for i in 0..pods {
        let ns = format!("ns-{:03}", i % namespaces);
        local.create("v1", "pods", Some(&ns), pod(i, nodes)).unwrap();
    }
    let load = started.elapsed();
    // Let the controllers catch up with the burst before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "loaded {nodes} nodes and {pods} pods in {:.1}s ({:.0} objects/s)",
        load.as_secs_f64(),
        (nodes + pods) as f64 / load.as_secs_f64()
    );
}

/// Lists every pod over HTTP, prints how long it took, and returns the list's resourceVersion.
async fn full_list(all: &Api<Pod>) -> String {
    let listed = Instant::now();
    let list = all.list(&ListParams::default()).await.unwrap();
    println!(
        "full list of {} pods over HTTP with kube-rs: {:.0} ms",
        list.items.len(),
        listed.elapsed().as_secs_f64() * 1000.0
    );
    list.metadata.resource_version.clone().unwrap()
}

/// Watches the pods from `rv` over HTTP while `changes` pods get a new `seq` label, one every 20 ms; returns
/// how long each change took to arrive (changes not seen half a second after the last are left out).
async fn watch_latencies(all: &Api<Pod>, rv: &str, local: &LocalApi, changes: usize, sizes: Sizes) -> Vec<Duration> {
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let mut stream = all.watch(&WatchParams::default(), rv).await.unwrap().boxed();
    let (sent_r, lat_r) = (sent.clone(), latencies.clone());
    let reader = tokio::spawn(async move {
        while let Ok(Some(event)) = stream.try_next().await {
            if let WatchEvent::Modified(p) = event {
                let at = Instant::now();
                let seq = p
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("seq").cloned())
                    .unwrap_or_default();
                if let Some(t) = sent_r.lock().unwrap().remove(&seq) {
                    lat_r.lock().unwrap().push(at - t);
                }
            }
        }
    });
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    for k in 0..changes {
        ticker.tick().await;
        let i = (k * 397) % sizes.pods;
        let ns = format!("ns-{:03}", i % sizes.namespaces);
        let seq = k.to_string();
        sent.lock().unwrap().insert(seq.clone(), Instant::now());
        let patch = json!({"metadata": {"labels": {"seq": seq}}});
        local
            .patch(
                "v1",
                "pods",
                Some(&ns),
                &format!("job-{i:06}"),
                PatchKind::Merge,
                &patch,
                None,
            )
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    reader.abort();
    latencies.lock().unwrap().clone()
}
