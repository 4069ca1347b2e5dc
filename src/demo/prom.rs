//! The demo's Prometheus-compatible query path when no Prometheus server is installed: the GPU utilization
//! the exporter would publish, answered directly on `/api/v1/query`.
//!
//! ```text
//!   kubelet ─▶ per-node load (GPU busy %) ─▶ Loads ─▶ GET /api/v1/query?query=…DCGM_FI_DEV_GPU_UTIL…
//!                                                     ─▶ {"resultType":"vector", one sample per node}
//! ```
//! Only what sublet's utilization source asks is understood: a query over `DCGM_FI_DEV_GPU_UTIL` answers each
//! node's mean GPU utilization now (so a window average is the current value), a query over `timestamp(...)`
//! answers the time of the sample (now), and any other query an empty vector, as a Prometheus without such
//! series would. Range queries answer an empty matrix. This is not PromQL; it stands in for the real
//! server only in the demo, and the demo says so.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// Mean GPU utilization (percent) per node, as the kubelet last computed it.
pub type Loads = Arc<Mutex<BTreeMap<String, f64>>>;

/// The answer to `query` at `now` (Unix seconds).
pub fn answer(query: &str, loads: &BTreeMap<String, f64>, now: f64) -> Value {
    let series = |value: &dyn Fn(f64) -> f64| -> Vec<Value> {
        loads
            .iter()
            .map(|(node, util)| json!({"metric": {"Hostname": node}, "value": [now, format!("{}", value(*util))]}))
            .collect()
    };
    let result = if query.contains("timestamp(") {
        series(&|_| now)
    } else if query.contains("DCGM_FI_DEV_GPU_UTIL") {
        series(&|u| u)
    } else {
        Vec::new()
    };
    json!({"status": "success", "data": {"resultType": "vector", "result": result}})
}

fn respond(path: &str, raw_query: Option<&str>, loads: &Loads) -> Response<Full<Bytes>> {
    let params: BTreeMap<String, String> = form_urlencoded::parse(raw_query.unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let now = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
    let (status, body) = match path {
        "/api/v1/query" => match params.get("query") {
            Some(q) => (StatusCode::OK, answer(q, &loads.lock().expect("loads"), now)),
            None => (
                StatusCode::BAD_REQUEST,
                json!({"status": "error", "errorType": "bad_data", "error": "query is missing"}),
            ),
        },
        "/api/v1/query_range" => (
            StatusCode::OK,
            json!({"status": "success", "data": {"resultType": "matrix", "result": []}}),
        ),
        _ => (StatusCode::NOT_FOUND, json!({"status": "error", "error": "not found"})),
    };
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// Serves the query path on `listen` until the task is aborted; answers the bound address.
pub async fn serve(listen: SocketAddr, loads: Loads) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let loads = loads.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let r = respond(req.uri().path(), req.uri().query(), &loads);
                    async move { Ok::<_, Infallible>(r) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((address, task))
}

/// A Prometheus server the demo started, scraping the DCGM exporter every second; stopped when dropped.
pub struct Prometheus {
    pub url: String,
    pub binary: std::path::PathBuf,
    _child: tokio::process::Child,
    dir: std::path::PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The installed Prometheus binary, if any: `$SUBLET_PROMETHEUS`, `prometheus` on the PATH, `/usr/bin/prometheus`.
pub fn find_prometheus() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("SUBLET_PROMETHEUS") {
        return Some(p.into());
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("prometheus"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let p = std::path::PathBuf::from("/usr/bin/prometheus");
        p.is_file().then_some(p)
    })
}

/// Starts `binary` scraping `target` and waits (up to 15 s) until it is ready; None if it does not come up.
pub async fn start_prometheus(binary: std::path::PathBuf, target: SocketAddr) -> Option<Prometheus> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let dir = std::env::temp_dir().join(format!("sublet-demo-prometheus-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: dcgm\n    static_configs:\n      - targets: ['{target}']\n"
    );
    std::fs::write(dir.join("prometheus.yml"), config).ok()?;
    let log = std::fs::File::create(dir.join("prometheus.log")).ok()?;
    let child = tokio::process::Command::new(&binary)
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    let prom = Prometheus {
        url: format!("http://127.0.0.1:{port}"),
        binary,
        _child: child,
        dir,
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        if ready(port).await {
            return Some(prom);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    tracing::warn!(binary = %prom.binary.display(), "Prometheus did not become ready; reading the exporter directly");
    None
}

async fn ready(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if s.write_all(b"GET /-/ready HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf).await, Ok(n) if n >= 12 && buf[9..12] == *b"200")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utilization_and_freshness_queries_answer_per_node() {
        let loads: BTreeMap<String, f64> = [("a".to_string(), 0.0), ("b".to_string(), 93.5)].into();
        let v = answer(
            "avg by (Hostname, hostname) (avg_over_time(DCGM_FI_DEV_GPU_UTIL[2s]))",
            &loads,
            100.0,
        );
        let r = v["data"]["result"].as_array().unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1]["metric"]["Hostname"], "b");
        assert_eq!(r[1]["value"][1], "93.5");
        let f = answer("max by (Hostname) (timestamp(DCGM_FI_DEV_GPU_UTIL))", &loads, 100.0);
        assert_eq!(f["data"]["result"][0]["value"][1], "100");
        let other = answer("sum(kueue_pending_workloads)", &loads, 100.0);
        assert_eq!(other["data"]["result"], json!([]));
    }
}
