//! Utilization and PromQL demand through the real Prometheus server (Debian's `prometheus`), scraping the
//! sandbox's DCGM exporter every second: busy nodes are not lent, idle ones are; Prometheus stopped blocks
//! lending without reclaiming, and its return clears the condition. The learned reserve reads its demand
//! history from a real TSDB, backfilled with `promtool tsdb create-blocks-from openmetrics`.
//!
//! Each test starts its own Prometheus on a free loopback port with a temporary TSDB and kills it at the end.
//! Without a `prometheus` binary the tests are skipped, except in CI (`CI=true`), where they fail.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::cluster::*;
use kube::Api;
use serde_json::json;
use sublet::api::TenantPool;
use sublet::signals::prometheus::Prometheus;
use sublet_sandbox::SandboxConfig;
use sublet_sandbox::dcgm::{DcgmConfig, DcgmExporter};

/// The prometheus binary: `SUBLET_PROMETHEUS`, then PATH, then /usr/bin/prometheus.
fn prometheus_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SUBLET_PROMETHEUS") {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("prometheus"))
            .find(|p| p.is_file())
    });
    let found = on_path.or_else(|| Some(PathBuf::from("/usr/bin/prometheus")).filter(|p| p.is_file()));
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "prometheus is missing: run scripts/install-test-tools (or set SUBLET_PROMETHEUS)"
        );
        eprintln!("skipped: no prometheus binary (run scripts/install-test-tools)");
    }
    found
}

/// A Prometheus server of this test, scraping one target every second.
struct PromServer {
    binary: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl PromServer {
    fn start(binary: PathBuf, target: std::net::SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: dcgm\n    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        Self::launch(binary, dir)
    }

    /// Starts the server on a free port with the configuration and storage in `dir`.
    fn launch(binary: PathBuf, dir: tempfile::TempDir) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self {
            binary,
            dir,
            port,
            child: None,
        };
        server.resume();
        server
    }

    /// A server with no scrape target whose TSDB holds `openmetrics` (backfilled with promtool).
    fn backfilled(binary: PathBuf, openmetrics: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("prometheus.yml"), "global:\n  scrape_interval: 15s\n").unwrap();
        let input = dir.path().join("history.om");
        std::fs::write(&input, openmetrics).unwrap();
        let promtool = binary.with_file_name("promtool");
        let out = Command::new(&promtool)
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&input)
            .arg(dir.path().join("data"))
            .output()
            .unwrap_or_else(|e| panic!("{} runs: {e}", promtool.display()));
        assert!(
            out.status.success(),
            "promtool: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self::launch(binary, dir)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the process on the same port and storage as before.
    fn resume(&mut self) {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("prometheus.log"))
            .unwrap();
        let child = Command::new(&self.binary)
            .arg(format!("--config.file={}", d.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", d.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for PromServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until Prometheus answers and has scraped `series` DCGM utilization series.
async fn scraped(prom: &mut PromServer, series: usize) {
    let client = Prometheus::new(&prom.url(), Duration::from_secs(2)).unwrap();
    for _ in 0..600 {
        if let Some(Ok(Some(status))) = prom.child.as_mut().map(|c| c.try_wait()) {
            panic!("Prometheus exited ({status}); its log:\n{}", prom.log());
        }
        if let Ok(v) = client.query("DCGM_FI_DEV_GPU_UTIL", None).await
            && v.len() == series
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("Prometheus did not scrape {series} series; its log:\n{}", prom.log());
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

async fn condition(pools: &Api<TenantPool>, type_: &str) -> Option<(String, String)> {
    let status = pools.get("a100").await.ok()?.status?;
    let c = status.conditions.into_iter().find(|c| c.type_ == type_)?;
    Some((c.status, c.message))
}

async fn node_reason(pools: &Api<TenantPool>, node: &str) -> Option<String> {
    let status = pools.get("a100").await.ok()?.status?;
    status.nodes.into_iter().find(|n| n.name == node)?.reason
}

async fn exporter(env: &Env) -> DcgmExporter {
    env.sandbox
        .start_dcgm_exporter(DcgmConfig::default())
        .await
        .expect("exporter starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utilization_gates_lending_and_a_stopped_prometheus_blocks_it() {
    let Some(binary) = prometheus_binary() else { return };
    let env = env(SandboxConfig::default()).await;
    let c = env.client.clone();
    gpu_node(&c, "gpu-1", 2).await;
    gpu_node(&c, "gpu-2", 2).await;
    let dcgm = exporter(&env).await;
    dcgm.set_node_utilization("gpu-1", 80.0);
    dcgm.set_node_utilization("gpu-2", 0.0);
    let mut prom = PromServer::start(binary, dcgm.address());
    scraped(&mut prom, 4).await;

    // The client's range query against the real server: one series per node, points in the window.
    let client = Prometheus::new(&prom.url(), Duration::from_secs(2)).unwrap();
    let now = jiff::Timestamp::now();
    let range = client
        .query_range(
            "avg by (Hostname) (DCGM_FI_DEV_GPU_UTIL)",
            now - jiff::SignedDuration::from_secs(5),
            now,
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    let busy = range.iter().find(|s| s.labels["Hostname"] == "gpu-1").unwrap();
    assert!(busy.points.iter().all(|(_, v)| *v == 80.0), "{busy:?}");
    let err = client.query("avg by (", None).await.unwrap_err();
    assert!(err.to_string().contains("bad_data"), "{err}");

    create_pool(
        &c,
        "a100",
        json!({
            "mode": "Enforce",
            "idle": {"forSeconds": 3, "maxUtilizationPercent": 5},
            "reclaim": {"noticeSeconds": 3, "cooldownSeconds": 0},
            "utilization": {"prometheusUrl": prom.url(), "staleSeconds": 30},
        }),
    )
    .await;
    let run = controller(&c, "sublet-0", false);
    let pools: Api<TenantPool> = Api::all(c.clone());

    // gpu-2 is idle and lent; gpu-1, busy at 80%, is not, and the status says why.
    eventually(30, "gpu-2 lent", || async {
        (lent(&c).await == names(&["gpu-2"])).then_some(())
    })
    .await;
    let why = eventually(30, "gpu-1's reason", || async {
        node_reason(&pools, "gpu-1").await.filter(|r| r.contains("utilization"))
    })
    .await;
    assert!(why.contains("80% is above 5%"), "{why}");
    assert_eq!(lent(&c).await, names(&["gpu-2"]));
    assert_eq!(condition(&pools, "SignalsFresh").await.unwrap().0, "True");

    // Idle for the window, gpu-1 is lent too.
    dcgm.set_node_utilization("gpu-1", 0.0);
    eventually(30, "gpu-1 lent once idle", || async {
        (lent(&c).await == names(&["gpu-1", "gpu-2"])).then_some(())
    })
    .await;

    // Prometheus stops: the condition says so, a new idle node is not lent, lent nodes stay lent.
    prom.stop();
    let (_, message) = eventually(30, "SignalsFresh=False", || async {
        condition(&pools, "SignalsFresh").await.filter(|c| c.0 == "False")
    })
    .await;
    assert!(message.contains("unreachable"), "{message}");
    gpu_node(&c, "gpu-3", 2).await;
    let why = eventually(30, "gpu-3 in the status", || async {
        node_reason(&pools, "gpu-3").await
    })
    .await;
    assert!(why.contains("no fresh utilization"), "{why}");
    assert_eq!(lent(&c).await, names(&["gpu-1", "gpu-2"]));
    let (lending, message) = condition(&pools, "Lending").await.unwrap();
    assert_eq!(lending, "False");
    assert!(message.contains("signals are not fresh"), "{message}");

    // Prometheus is back: the condition clears and the idle gpu-3 is lent.
    prom.resume();
    eventually(60, "SignalsFresh=True again", || async {
        condition(&pools, "SignalsFresh").await.filter(|c| c.0 == "True")
    })
    .await;
    eventually(60, "gpu-3 lent", || async {
        (lent(&c).await == names(&["gpu-1", "gpu-2", "gpu-3"])).then_some(())
    })
    .await;
    run.stop().await;
    dcgm.shutdown().await;
    env.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowercase_hostname_and_a_stopped_exporter() {
    let Some(binary) = prometheus_binary() else { return };
    let env = env(SandboxConfig::default()).await;
    let c = env.client.clone();
    gpu_node(&c, "gpu-1", 1).await;
    let dcgm = env
        .sandbox
        .start_dcgm_exporter(DcgmConfig {
            lowercase_hostname: true,
            ..DcgmConfig::default()
        })
        .await
        .unwrap();
    let mut prom = PromServer::start(binary, dcgm.address());
    scraped(&mut prom, 1).await;
    create_pool(
        &c,
        "a100",
        json!({
            "mode": "Enforce",
            "idle": {"forSeconds": 2},
            "reclaim": {"cooldownSeconds": 0},
            "utilization": {"prometheusUrl": prom.url(), "staleSeconds": 30},
        }),
    )
    .await;
    let run = controller(&c, "sublet-0", false);
    let pools: Api<TenantPool> = Api::all(c.clone());
    // The pool names `Hostname` (the default); the exporter writes `hostname`: the node is still read.
    eventually(30, "gpu-1 lent", || async {
        (lent(&c).await == names(&["gpu-1"])).then_some(())
    })
    .await;
    // The freshness the controller exports (sublet_signal_sample_timestamp_seconds): the newest DCGM sample,
    // a moment ago.
    let pool = pools.get("a100").await.unwrap();
    let readings = sublet::signals::Sources::new(c.clone())
        .fetch(&pool, jiff::Timestamp::now())
        .await;
    let newest = readings
        .newest
        .iter()
        .find(|(source, _)| *source == "utilization")
        .map(|(_, at)| *at)
        .expect("a utilization sample time");
    let age = jiff::Timestamp::now().duration_since(newest).as_secs();
    assert!((0..=30).contains(&age), "newest sample {age}s old");
    // The exporter goes away: Prometheus marks its series stale, no node has a fresh sample.
    dcgm.shutdown().await;
    let (_, message) = eventually(30, "SignalsFresh=False", || async {
        condition(&pools, "SignalsFresh").await.filter(|c| c.0 == "False")
    })
    .await;
    assert!(message.contains("no DCGM sample newer than 30s"), "{message}");
    assert_eq!(
        lent(&c).await,
        names(&["gpu-1"]),
        "a missing signal alone reclaims nothing"
    );
    run.stop().await;
    env.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promql_demand_takes_a_lent_node_back() {
    let Some(binary) = prometheus_binary() else { return };
    let env = env(SandboxConfig::default()).await;
    let c = env.client.clone();
    gpu_node(&c, "gpu-1", 8).await;
    gpu_node(&c, "gpu-2", 8).await;
    let dcgm = exporter(&env).await;
    dcgm.set_gauge("internal_queue_pending_gpus", &[("model", MODEL)], 0.0);
    let mut prom = PromServer::start(binary, dcgm.address());
    scraped(&mut prom, 16).await;
    create_pool(
        &c,
        "a100",
        json!({
            "mode": "Enforce",
            "idle": {"forSeconds": 0},
            "reclaim": {"noticeSeconds": 3, "cooldownSeconds": 0},
            "demand": {"promql": {
                "prometheusUrl": prom.url(),
                "query": "sum by (model) (internal_queue_pending_gpus)",
                "classLabel": "model",
            }},
        }),
    )
    .await;
    let run = controller(&c, "sublet-0", false);
    eventually(30, "both nodes lent", || async {
        (lent(&c).await.len() == 2).then_some(())
    })
    .await;
    // The internal queue asks for 8 GPUs of the pool's model: one node comes back, one stays lent.
    dcgm.set_gauge("internal_queue_pending_gpus", &[("model", MODEL)], 8.0);
    eventually(30, "one node back", || async {
        (lent(&c).await.len() == 1).then_some(())
    })
    .await;
    // Demand for a model the pool does not hold is not the pool's to meet.
    dcgm.set_gauge("internal_queue_pending_gpus", &[("model", MODEL)], 0.0);
    dcgm.set_gauge("internal_queue_pending_gpus", &[("model", "NVIDIA-H100")], 16.0);
    eventually(30, "both lent again", || async {
        (lent(&c).await.len() == 2).then_some(())
    })
    .await;
    let pools: Api<TenantPool> = Api::all(c.clone());
    assert_eq!(condition(&pools, "SignalsFresh").await.unwrap().0, "True");
    run.stop().await;
    drop(prom);
    dcgm.shutdown().await;
    env.sandbox.shutdown().await;
}

/// Two days of sublet's demand series for pool `gpu`, one sample a minute up to a minute ago: a sawtooth
/// climbing 4 GPUs a minute (0, 4, 8, 12, 0, …), so that within a 120 s notice demand rose by up to 8.
fn sawtooth_history(now: jiff::Timestamp) -> String {
    let end = now.as_second() / 60 * 60 - 60;
    let mut out =
        String::from("# HELP sublet_internal_demand_gpus Internal demand\n# TYPE sublet_internal_demand_gpus gauge\n");
    for m in (0..2 * 1440).rev() {
        let t = end - m * 60;
        let v = 4 * ((t / 60) % 4);
        out.push_str(&format!(
            "sublet_internal_demand_gpus{{pool=\"gpu\",class=\"{MODEL}\"}} {v} {t}\n"
        ));
    }
    out.push_str("# EOF\n");
    out
}

async fn reserve_of(pools: &Api<TenantPool>) -> Option<(i32, String)> {
    let status = pools.get("gpu").await.ok()?.status?;
    let r = status.reserve.into_iter().find(|r| r.class == MODEL)?;
    Some((r.gpus, r.reason))
}

async fn learned_condition(pools: &Api<TenantPool>) -> Option<(String, String)> {
    let status = pools.get("gpu").await.ok()?.status?;
    let c = status.conditions.into_iter().find(|c| c.type_ == "ReserveLearned")?;
    Some((c.status, c.message))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learned_reserve_reads_its_history_from_prometheus_and_holds_everything_without_it() {
    let binary = prometheus_binary().expect("prometheus is missing: run scripts/install-test-tools");
    let now = jiff::Timestamp::now();
    let mut prom = PromServer::backfilled(binary, &sawtooth_history(now));
    let env = env(SandboxConfig::default()).await;
    let c = env.client.clone();
    for n in ["gpu-1", "gpu-2", "gpu-3"] {
        gpu_node(&c, n, 8).await;
    }
    // The history the controller will read, straight from the server: the series is there.
    let client = Prometheus::new(&prom.url(), Duration::from_secs(2)).unwrap();
    eventually(30, "the backfilled series", || async {
        let q = "count_over_time(sublet_internal_demand_gpus[1d])";
        client.query(q, None).await.ok().filter(|v| v.len() == 1).map(|_| ())
    })
    .await;
    create_pool(
        &c,
        "gpu",
        json!({
            "mode": "Enforce",
            "idle": {"forSeconds": 0},
            "reclaim": {"noticeSeconds": 120, "cooldownSeconds": 0},
            "reserve": {"learned": {"prometheusUrl": prom.url(), "historyDays": 3}},
        }),
    )
    .await;
    let pools: Api<TenantPool> = Api::all(c.clone());
    let run = controller(&c, "sublet-0", false);

    // The burst reserve is the rise within the notice the history saw: 8 GPUs, one node kept, two lent.
    let (gpus, why) = eventually(60, "the learned reserve", || async {
        reserve_of(&pools).await.filter(|r| r.1.contains("burst"))
    })
    .await;
    assert_eq!(gpus, 8, "{why}");
    assert!(why.contains("burst 8"), "{why}");
    assert_eq!(learned_condition(&pools).await.unwrap().0, "True");
    eventually(30, "two nodes lent", || async {
        (lent(&c).await.len() == 2).then_some(())
    })
    .await;

    // A restarted controller reads the same history and keeps the same reserve (the status is cleared
    // first, so what it shows is the new controller's).
    run.stop().await;
    pools
        .patch_status(
            "gpu",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {"reserve": null, "conditions": null}})),
        )
        .await
        .unwrap();
    assert_eq!(reserve_of(&pools).await, None);
    let run = controller(&c, "sublet-1", false);
    let again = eventually(60, "the reserve after a restart", || async { reserve_of(&pools).await }).await;
    assert_eq!(again, (gpus, why.clone()));
    assert_eq!(lent(&c).await.len(), 2);

    // Prometheus stops: the pool says why, holds every free GPU (a new idle node is not lent) and takes
    // nothing back.
    prom.stop();
    let (status, message) = eventually(120, "ReserveLearned=False", || async {
        learned_condition(&pools).await.filter(|c| c.0 == "False")
    })
    .await;
    assert_eq!(status, "False");
    assert!(message.contains("cannot answer"), "{message}");
    gpu_node(&c, "gpu-4", 8).await;
    let (held, why) = eventually(30, "gpu-4 held", || async {
        reserve_of(&pools).await.filter(|r| r.0 == 16)
    })
    .await;
    assert!(why.contains("every free GPU held"), "{held}: {why}");
    assert_eq!(lent(&c).await.len(), 2, "a missing history takes nothing back");
    run.stop().await;
    env.sandbox.shutdown().await;
}
