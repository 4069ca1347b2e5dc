//! The controller's /metrics scraped by the real Prometheus (Debian's `prometheus`) the way a
//! ServiceMonitor has it scraped: the target's `namespace`, `pod` and `service` labels put on every series,
//! without honorLabels. A lease's series keep their tenant's namespace, the dashboard's per-tenant panels
//! answer one series per tenant, counters are there at zero, and a lease's series go when it ends. The demand
//! by class the controller exports comes back, minute by minute, as the history a learned reserve reads.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::cluster::*;
use kube::Api;
use kube::api::DeleteParams;
use serde_json::{Value, json};
use sublet::api::GpuLease;
use sublet::signals::prometheus::{Prometheus, Sample};
use sublet_sandbox::SandboxConfig;

/// Debian's prometheus: `SUBLET_PROMETHEUS`, then /usr/bin/prometheus; a missing one fails the test.
fn prometheus_binary() -> PathBuf {
    let path = std::env::var_os("SUBLET_PROMETHEUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus"));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/install-test-tools (or set SUBLET_PROMETHEUS)",
        path.display()
    );
    path
}

/// What prometheus-operator generates for the chart's ServiceMonitor, reduced to the relabelling that
/// matters here: the target labels `namespace`, `pod`, `service`, `job` and `endpoint`; honor_labels false.
fn service_monitor_config(target: std::net::SocketAddr) -> String {
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
         scrape_configs:\n\
         - job_name: serviceMonitor/sublet-system/sublet/0\n\
         \x20 honor_labels: false\n\
         \x20 static_configs:\n\
         \x20   - targets: ['{target}']\n\
         \x20 relabel_configs:\n\
         \x20   - {{target_label: namespace, replacement: sublet-system}}\n\
         \x20   - {{target_label: pod, replacement: sublet-5d9c7-abcde}}\n\
         \x20   - {{target_label: service, replacement: sublet}}\n\
         \x20   - {{target_label: endpoint, replacement: metrics}}\n\
         \x20   - {{target_label: job, replacement: sublet}}\n"
    )
}

struct PromServer {
    dir: tempfile::TempDir,
    url: String,
    child: Child,
}

impl PromServer {
    fn start(target: std::net::SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("prometheus.yml"), service_monitor_config(target)).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(prometheus_binary())
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        Self {
            dir,
            url: format!("http://127.0.0.1:{port}"),
            child,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for PromServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The expression of a dashboard panel, with its variables set to "every pool" and a 1m rate window.
fn dashboard_expr(title: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("charts/sublet/dashboards/sublet.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let panel = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == title)
        .unwrap_or_else(|| panic!("no panel {title}"));
    panel["targets"][0]["expr"]
        .as_str()
        .unwrap()
        .replace("$pool", ".*")
        .replace("$namespace", ".*")
        .replace("$__rate_interval", "1m")
}

async fn query(prom: &Prometheus, q: &str) -> Result<Vec<Sample>, String> {
    prom.query(q, None).await.map_err(|e| format!("{q}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_monitor_scrape_keeps_tenants_apart_and_drops_ended_leases() {
    let env = env(SandboxConfig::default()).await;
    let c = env.client.clone();
    gpu_node(&c, "gpu-1", 8).await;
    gpu_node(&c, "gpu-2", 8).await;
    create_pool(
        &c,
        "a100",
        json!({
            "mode": "Enforce",
            "idle": {"forSeconds": 0},
            "reclaim": {"noticeSeconds": 1, "cooldownSeconds": 0},
            "pricing": {"defaultPerGpuHour": 3.6, "currency": "EUR"},
        }),
    )
    .await;
    let metrics_addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = sublet::controller::Config {
        metrics_addr,
        leader_election: false,
        identity: "sublet-0".into(),
        tick: Duration::from_millis(200),
        ledger_interval: Duration::from_secs(1),
        ..sublet::controller::Config::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sublet::controller::run(c.clone(), config, async move {
        let _ = stopped.await;
    }));
    let server = PromServer::start(metrics_addr);
    let prom = Prometheus::new(&server.url, Duration::from_secs(2)).unwrap();

    create_lease(&c, "acme", "job", json!({"pool": "a100", "gpus": 8})).await;
    let lease_series = r#"sublet_lease_gpu_seconds_total{lease="job"}"#;
    let series = eventually_seen(60, "the lease's series in Prometheus", || async {
        let found = query(&prom, &format!("{lease_series} > 0")).await?;
        if found.len() == 1 {
            Ok(found[0].clone())
        } else {
            Err(format!("{found:?}; Prometheus log: {}", server.log()))
        }
    })
    .await;
    let labels = &series.labels;
    assert_eq!(
        labels.get("tenant_namespace").map(String::as_str),
        Some("acme"),
        "{labels:?}"
    );
    assert_eq!(
        labels.get("namespace").map(String::as_str),
        Some("sublet-system"),
        "{labels:?}"
    );
    assert_eq!(
        labels.get("pod").map(String::as_str),
        Some("sublet-5d9c7-abcde"),
        "{labels:?}"
    );
    assert!(!labels.contains_key("exported_namespace"), "{labels:?}");

    // The dashboard's per-tenant panels answer per tenant, not one series of the operator's namespace.
    for (title, want_currency) in [("GPU-hours by tenant", false), ("Revenue by tenant", true)] {
        let expr = dashboard_expr(title);
        let found = eventually_seen(20, title, || async {
            let found = query(&prom, &expr).await?;
            if found.len() == 1 {
                Ok(found)
            } else {
                Err(format!("{expr}: {found:?}"))
            }
        })
        .await;
        assert_eq!(
            found[0].labels.get("tenant_namespace").map(String::as_str),
            Some("acme"),
            "{expr}: {found:?}"
        );
        if want_currency {
            assert_eq!(
                found[0].labels.get("currency").map(String::as_str),
                Some("EUR"),
                "{expr}: {found:?}"
            );
        }
    }

    // Counters are there before their first event; the conventions' fixed series too.
    for (q, want) in [
        (r#"sublet_evictions_total{pool="a100",outcome="deleted"}"#, Some(0.0)),
        (
            r#"sublet_reconcile_failures_total{pool="a100",error="invalid_spec"}"#,
            Some(0.0),
        ),
        (r#"sublet_notices_total{pool="a100"}"#, Some(0.0)),
        (r#"sublet_leases{pool="a100",phase="Bound"}"#, Some(1.0)),
        ("sublet_build_info", Some(1.0)),
        ("sublet_leader", Some(1.0)),
        ("process_start_time_seconds > 0", None),
        ("process_resident_memory_bytes > 0", None),
    ] {
        let found = query(&prom, q).await.unwrap();
        assert_eq!(found.len(), 1, "{q}: {found:?}");
        if let Some(v) = want {
            assert_eq!(found[0].value, v, "{q}");
        }
    }

    // The lease ends: its series leave /metrics, and Prometheus marks them stale.
    Api::<GpuLease>::namespaced(c.clone(), "acme")
        .delete("job", &DeleteParams::default())
        .await
        .unwrap();
    eventually_seen(60, "the lease's series to go", || async {
        let found = query(&prom, r#"{__name__=~"sublet_lease_.*", lease="job"}"#).await?;
        if found.is_empty() {
            Ok(())
        } else {
            Err(format!("{found:?}"))
        }
    })
    .await;
    let pool_revenue = query(&prom, r#"sublet_pool_revenue_total{pool="a100",currency="EUR"}"#)
        .await
        .unwrap();
    assert!(
        pool_revenue.len() == 1 && pool_revenue[0].value > 0.0,
        "the pool keeps the revenue: {pool_revenue:?}"
    );

    // Internal work waiting shows as pending internal GPUs (no scheduler runs in the sandbox: it stays pending).
    gpu_pod(&c, "ml", "train", 8, None, json!({})).await;
    eventually_seen(30, "pending internal GPUs", || async {
        let found = query(&prom, r#"sum(sublet_internal_pending_gpus{pool="a100"})"#).await?;
        if found.first().is_some_and(|s| s.value == 8.0) {
            Ok(())
        } else {
            Err(format!("{found:?}"))
        }
    })
    .await;

    // The demand and capacity the controller exports by pool and class are the history a learned reserve
    // reads back: through the ServiceMonitor's scrape (its extra target labels included), the pool's range
    // query gives the class's demand of each minute once the minute is over.
    let capacity = query(
        &prom,
        &format!(r#"sublet_pool_capacity_gpus{{pool="a100",class="{MODEL}"}}"#),
    )
    .await
    .unwrap();
    assert!(capacity.len() == 1 && capacity[0].value == 16.0, "{capacity:?}");
    let pending_since = jiff::Timestamp::now();
    let histories = sublet::signals::history::Histories::default();
    let history = eventually_seen(150, "a minute of demand read back", || async {
        let now = jiff::Timestamp::now();
        let history = histories.read("a100", &prom, 1, now).await?;
        // The last whole minute, once scrapes of the waiting pod fall in it.
        let minute = jiff::Timestamp::from_second(now.as_second() / 60 * 60 - 60).unwrap();
        match history.at(MODEL, minute) {
            Some(8) if minute.as_second() + 60 > pending_since.as_second() + 2 => Ok(history),
            got => Err(format!(
                "{got:?} at {minute}; classes {:?}",
                history.classes().collect::<Vec<_>>()
            )),
        }
    })
    .await;
    assert_eq!(history.classes().collect::<Vec<_>>(), vec![MODEL]);

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}
