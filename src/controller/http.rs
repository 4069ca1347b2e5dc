//! `/metrics`, `/livez` and `/readyz` on one small HTTP listener.
//!
//! Live while the process serves; ready once every cache has listed, so a rollout waits for a replica
//! that could take over with a full view.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::cache::Caches;
use super::metrics::Metrics;

/// Binds `addr` and serves until the process ends. Returns the bound address (for port 0).
pub async fn serve(addr: SocketAddr, metrics: Metrics, caches: Caches) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let state = Arc::new((metrics, caches));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(req, state.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(bound)
}

async fn answer(req: Request<Incoming>, state: Arc<(Metrics, Caches)>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (metrics, caches) = &*state;
    let (status, body, kind) = match req.uri().path() {
        "/metrics" => (StatusCode::OK, metrics.render(), "text/plain; version=0.0.4"),
        "/livez" => (StatusCode::OK, "ok\n".to_string(), "text/plain"),
        "/readyz" if caches.synced() => (StatusCode::OK, "ok\n".to_string(), "text/plain"),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "caches are not synced yet\n".to_string(),
            "text/plain",
        ),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_string(), "text/plain"),
    };
    let resp = Response::builder()
        .status(status)
        .header("content-type", kind)
        .body(Full::new(Bytes::from(body)))
        .expect("a static response is valid");
    Ok(resp)
}
