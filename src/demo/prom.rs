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
