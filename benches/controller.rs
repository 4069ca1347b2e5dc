//! The controller at scale, as a separate process against the sandbox: 5,000 nodes (40,000 GPUs), 100,000
//! pods, 1,000 leases.
//!
//! `cargo bench --bench controller` prints the controller's resident memory after its caches synced,
//! divided by the objects cached, and the time from an internal GPU pod appearing to the reclaim notice
//! being written on a node (p50, p99, max over `SUBLET_BENCH_SAMPLES`, default 100).

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use sublet_sandbox::{Sandbox, SandboxConfig};

const NODES: usize = 5_000;
const INTERNAL: usize = 4_000;
const LEASES: usize = 1_000;
const PODS: usize = 100_000;
const TENANTS: usize = 50;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn main() {
    // `cargo bench` passes --bench; under `cargo test --all-targets` the benchmark does not run.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("the controller benchmark runs under `cargo bench --bench controller`");
        return;
    }
    let samples: usize = std::env::var("SUBLET_BENCH_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let sandbox = Sandbox::start(SandboxConfig::default()).await.expect("sandbox");
        let api = sandbox.local();
        let load = Instant::now();
        for crd in sublet::crd::all() {
            api.create("apiextensions.k8s.io/v1", "customresourcedefinitions", None, serde_json::to_value(&crd).unwrap()).unwrap();
        }
        api.create("v1", "namespaces", None, json!({"metadata": {"name": "ml"}})).unwrap();
        for t in 0..TENANTS {
            api.create("v1", "namespaces", None, json!({"metadata": {"name": format!("tenant-{t}"), "labels": {"sublet.dev/tenant": "true"}}})).unwrap();
        }
        api.create("sublet.dev/v1alpha1", "tenantpools", None, json!({
            "apiVersion": "sublet.dev/v1alpha1", "kind": "TenantPool", "metadata": {"name": "bench"},
            "spec": {"mode": "Enforce", "idle": {"forSeconds": 0}, "reclaim": {"noticeSeconds": 3600}, "pricing": {"defaultPerGpuHour": 2.0}}
        })).unwrap();
        let mut pods = 0;
        let bound_at = jiff::Timestamp::now().checked_sub(jiff::SignedDuration::from_hours(1)).unwrap().to_string();
        for i in 0..NODES {
            let name = format!("gpu-{i:05}");
            let leased = i >= INTERNAL;
            let lease = i - INTERNAL.min(i);
            let key = format!("tenant-{}.lease-{lease}", lease % TENANTS);
            let (labels, taints) = if leased {
                (json!({"nvidia.com/gpu.product": "A100", "sublet.dev/pool": "bench", "sublet.dev/state": "leased", "sublet.dev/lease": key}),
                 json!([{"key": "sublet.dev/lease", "value": key, "effect": "NoExecute"}]))
            } else {
                (json!({"nvidia.com/gpu.product": "A100"}), json!([]))
            };
            // A bound node carries the time sublet bound it, from which its lease's ledger runs.
            let annotations = if leased { json!({"sublet.dev/since": bound_at}) } else { json!({}) };
            api.create("v1", "nodes", None, json!({
                "metadata": {"name": name, "labels": labels, "annotations": annotations},
                "spec": {"taints": taints},
                "status": {"allocatable": {"nvidia.com/gpu": "8", "cpu": "96"}, "capacity": {"nvidia.com/gpu": "8", "cpu": "96"},
                           "conditions": [{"type": "Ready", "status": "True"}]}
            })).unwrap();
            let (ns, gpu_pods) = if leased { (format!("tenant-{}", lease % TENANTS), 8) } else { ("ml".to_string(), 8) };
            for k in 0..gpu_pods {
                api.create("v1", "pods", Some(&ns), json!({
                    "metadata": {"name": format!("p-{i}-{k}")},
                    "spec": {"nodeName": name, "containers": [{"name": "c", "image": "trainer", "resources": {"requests": {"nvidia.com/gpu": "1"}}}]}
                })).unwrap();
                pods += 1;
            }
        }
        // The rest are CPU pods (system and service pods), cached by the controller but not planned over.
        let mut j = 0;
        while pods < PODS {
            api.create("v1", "pods", Some("ml"), json!({
                "metadata": {"name": format!("cpu-{j}")},
                "spec": {"nodeName": format!("gpu-{:05}", j % NODES), "containers": [{"name": "c", "image": "svc", "resources": {"requests": {"cpu": "100m"}}}]}
            })).unwrap();
            pods += 1;
            j += 1;
        }
        for l in 0..LEASES {
            let ns = format!("tenant-{}", l % TENANTS);
            api.create("sublet.dev/v1alpha1", "gpuleases", Some(&ns), json!({
                "apiVersion": "sublet.dev/v1alpha1", "kind": "GpuLease", "metadata": {"name": format!("lease-{l}")},
                "spec": {"pool": "bench", "gpus": 8}
            })).unwrap();
        }
        eprintln!("loaded {NODES} nodes, {pods} pods, {LEASES} leases in {:.1}s", load.elapsed().as_secs_f64());
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        sandbox.write_kubeconfig(&kubeconfig).unwrap();
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sublet"))
            .args(["run", "--leader-elect=false", "--tick", "5", "--metrics-addr", &format!("127.0.0.1:{port}")])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .env("SUBLET_LOG", std::env::var("SUBLET_BENCH_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .spawn()
            .expect("sublet run starts");
        let started = Instant::now();
        loop {
            let ready = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
                && reqwest_free_get(port, "/readyz").await.is_some_and(|s| s == 200);
            if ready {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(300), "controller never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let synced = started.elapsed();
        // Let the first passes settle (lease statuses written), then measure memory.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let rss = rss_kib(child.id());
        let objects = NODES + PODS + LEASES + 1 + TENANTS + 1;
        println!("controller synced {objects} objects in {:.1}s; RSS {:.1} MiB = {:.2} KiB per cached object", synced.as_secs_f64(), rss as f64 / 1024.0, rss as f64 / objects as f64);

        let mut events = api.events();
        let mut seen: HashSet<String> = HashSet::new();
        let mut latencies = Vec::with_capacity(samples);
        for i in 0..samples {
            while events.try_recv().is_ok() {}
            let t0 = Instant::now();
            api.create("v1", "pods", Some("ml"), json!({
                "metadata": {"name": format!("burst-{i}")},
                "spec": {"containers": [{"name": "c", "image": "trainer", "resources": {"requests": {"nvidia.com/gpu": "8"}}}]}
            })).unwrap();
            loop {
                let ev = tokio::time::timeout(Duration::from_secs(30), events.recv()).await.expect("a notice within 30 s").expect("events");
                let v = ev.obj.value();
                if v["kind"] != "Node" || v["metadata"]["labels"]["sublet.dev/state"] != "reclaiming" {
                    continue;
                }
                let name = v["metadata"]["name"].as_str().unwrap_or("").to_string();
                if seen.insert(name) {
                    latencies.push(t0.elapsed().as_secs_f64() * 1000.0);
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        latencies.sort_by(f64::total_cmp);
        println!(
            "internal GPU pod → notice written, {} samples: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            latencies.len(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or(0.0)
        );
        println!("controller RSS at the end: {:.1} MiB", rss_kib(child.id()) as f64 / 1024.0);
        if let Some(text) = http_get(port, "/metrics").await {
            let value = |name: &str| {
                text.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
            };
            let (sum, count) = (value("sublet_reconcile_duration_seconds_sum"), value("sublet_reconcile_duration_seconds_count"));
            println!("passes: {count:.0}, mean {:.1} ms", if count > 0.0 { sum / count * 1000.0 } else { 0.0 });
            let writes: Vec<&str> = text.lines().filter(|l| l.starts_with("sublet_api_writes_total")).collect();
            println!("API writes: {}", writes.join("; "));
        }
        let _ = child.kill();
        let _ = child.wait();
        sandbox.shutdown().await;
    });
}

/// A minimal HTTP/1.1 GET returning the body.
async fn http_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    Some(text.split_once("\r\n\r\n")?.1.to_string())
}

/// A minimal HTTP/1.1 GET returning the status code.
async fn reqwest_free_get(port: u16, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace().nth(1)?.parse().ok()
}
