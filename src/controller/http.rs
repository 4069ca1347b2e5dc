//! `/metrics`, `/livez` and `/readyz` on one small HTTP listener.
//!
//! Live while the process serves; ready once every cache has listed, so a rollout waits for a replica
//! that could take over with a full view.
//!
//! With `Config::metrics_auth`, `/metrics` (which names every tenant's leases and costs) answers only a
//! caller the API server vouches for, as kube-rbac-proxy would: the bearer token goes to a TokenReview (401
//! when missing or not authenticated), its user to a SubjectAccessReview for `get` on the non-resource URL
//! `/metrics` (403 when not allowed). An answer is kept for 30 s per token. `/livez` and `/readyz` stay open
//! for the kubelet's probes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

use super::cache::Caches;
use super::metrics::Metrics;

/// How long a token's answer is kept.
const AUTH_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// Who may read `/metrics`: None lets everyone.
pub struct Guard {
    client: Client,
    seen: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, StatusCode)>>,
}

impl Guard {
    pub fn new(client: Client) -> Guard {
        Guard {
            client,
            seen: Default::default(),
        }
    }

    /// OK, UNAUTHORIZED or FORBIDDEN for the request's bearer token.
    async fn check(&self, req: &Request<Incoming>) -> StatusCode {
        let token = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return StatusCode::UNAUTHORIZED;
        };
        if let Some((at, status)) = self.seen.lock().expect("auth cache lock").get(token)
            && at.elapsed() < AUTH_TTL
        {
            return *status;
        }
        let status = self.review(token).await;
        if status != StatusCode::SERVICE_UNAVAILABLE {
            let mut seen = self.seen.lock().expect("auth cache lock");
            seen.retain(|_, (at, _)| at.elapsed() < AUTH_TTL);
            seen.insert(token.to_string(), (std::time::Instant::now(), status));
        }
        status
    }

    async fn review(&self, token: &str) -> StatusCode {
        let review: TokenReview = serde_json::from_value(json!({"spec": {"token": token}})).expect("a valid review");
        let reviewed = match Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
        {
            Ok(r) => r,
            Err(err) => {
                tracing::warn!(%err, "TokenReview for /metrics failed");
                return StatusCode::SERVICE_UNAVAILABLE;
            }
        };
        let Some(status) = reviewed.status.filter(|s| s.authenticated == Some(true)) else {
            return StatusCode::UNAUTHORIZED;
        };
        let user = status.user.unwrap_or_default();
        let access: SubjectAccessReview = serde_json::from_value(json!({"spec": {
            "user": user.username, "groups": user.groups, "uid": user.uid, "extra": user.extra,
            "nonResourceAttributes": {"path": "/metrics", "verb": "get"},
        }}))
        .expect("a valid review");
        match Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &access)
            .await
        {
            Ok(r) if r.status.as_ref().is_some_and(|s| s.allowed) => StatusCode::OK,
            Ok(_) => StatusCode::FORBIDDEN,
            Err(err) => {
                tracing::warn!(%err, "SubjectAccessReview for /metrics failed");
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}

/// Binds `addr` and serves until the process ends. Returns the bound address (for port 0).
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    caches: Caches,
    guard: Option<Guard>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let state = Arc::new((metrics, caches, guard));
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

type State = (Metrics, Caches, Option<Guard>);

async fn answer(req: Request<Incoming>, state: Arc<State>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (metrics, caches, guard) = &*state;
    let allowed = match (req.uri().path(), guard) {
        ("/metrics", Some(guard)) => guard.check(&req).await,
        _ => StatusCode::OK,
    };
    let (status, body, kind) = match req.uri().path() {
        "/metrics" if allowed == StatusCode::UNAUTHORIZED => (
            allowed,
            "a bearer token the API server authenticates is needed\n".to_string(),
            "text/plain",
        ),
        "/metrics" if allowed == StatusCode::FORBIDDEN => (
            allowed,
            "get on the non-resource URL /metrics is not allowed (bind the ClusterRole sublet-metrics-reader)\n"
                .to_string(),
            "text/plain",
        ),
        "/metrics" if allowed != StatusCode::OK => (
            allowed,
            "the API server did not answer the review\n".to_string(),
            "text/plain",
        ),
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
    let mut resp = Response::builder().status(status).header("content-type", kind);
    if status == StatusCode::UNAUTHORIZED {
        resp = resp.header(http::header::WWW_AUTHENTICATE, "Bearer");
    }
    let resp = resp
        .body(Full::new(Bytes::from(body)))
        .expect("a static response is valid");
    Ok(resp)
}
