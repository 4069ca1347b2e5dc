//! A fault-injecting reverse proxy in front of a real API server: the same 409/429/500, delays, cut and
//! lagging watches the sandbox's `--faults` gives, so the fault tests run against the real server too.
//!
//! ```text
//!   client (plain HTTP, 127.0.0.1) ─▶ proxy: Faults::decide(verb, group, resource)
//!        ├─ conflict / tooManyRequests / internalError ─▶ a Status answered by the proxy
//!        ├─ cutWatch ─▶ one ERROR event (410 Expired), then the watch ends
//!        └─ delay / lagWatch / none ─▶ kube::Client::send (TLS, the admin identity) ─▶ kube-apiserver
//!                                        lagWatch: every chunk of the answer held back `ms`, in order
//! ```
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use serde_json::json;
use sublet_sandbox::{FaultAction, FaultConfig, Faults};
use tokio::net::TcpListener;

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

pub struct FaultProxy {
    pub addr: SocketAddr,
    pub faults: Arc<Faults>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Serves on a free loopback port until dropped, forwarding through `upstream`.
    pub async fn start(upstream: kube::Client, config: FaultConfig) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy listens");
        let addr = listener.local_addr().expect("address");
        let faults = Arc::new(Faults::new(config));
        let shared = faults.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (upstream, faults) = (upstream.clone(), shared.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let (upstream, faults) = (upstream.clone(), faults.clone());
                        async move { Ok::<_, Infallible>(handle(&upstream, &faults, req).await) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        FaultProxy { addr, faults, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client that goes through the proxy (no credentials: the proxy adds the upstream's).
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().expect("proxy url"));
        kube::Client::try_from(config).expect("proxy client")
    }
}

/// (verb, group, plural resource) of an API request, as the sandbox decides faults on them.
pub fn classify(method: &Method, path: &str, query: &str) -> Option<(&'static str, String, String)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => (group.to_string(), rest),
        _ => return None,
    };
    let rest = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let (resource, name, sub) = (rest.first()?, rest.get(1), rest.get(2));
    let watching = query.split('&').any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match (method, name, sub) {
        (&Method::GET, None, _) if watching => "watch",
        (&Method::GET, None, _) => "list",
        (&Method::GET, Some(_), _) => "get",
        (&Method::POST, _, _) => "create",
        (&Method::PUT, _, _) => "update",
        (&Method::PATCH, _, _) => "patch",
        (&Method::DELETE, Some(_), _) => "delete",
        (&Method::DELETE, None, _) => "deletecollection",
        _ => return None,
    };
    Some((verb, group, resource.to_string()))
}

fn status(code: StatusCode, reason: &str, message: &str) -> serde_json::Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()})
}

fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn answer(code: StatusCode, value: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(full(value.to_string()))
        .expect("a valid response")
}

async fn handle(upstream: &kube::Client, faults: &Faults, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let decided =
        classify(req.method(), &path, &query).and_then(|(verb, group, res)| faults.decide(verb, &group, &res));
    let mut lag = None;
    match decided {
        None => {}
        Some(FaultAction::Conflict) => {
            let msg = "the object has been modified; please apply your changes to the latest version and try again";
            return answer(StatusCode::CONFLICT, &status(StatusCode::CONFLICT, "Conflict", msg));
        }
        Some(FaultAction::TooManyRequests { retry_after_seconds }) => {
            let mut r = answer(
                StatusCode::TOO_MANY_REQUESTS,
                &status(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequests",
                    "Too many requests, please try again later.",
                ),
            );
            r.headers_mut().insert("retry-after", retry_after_seconds.into());
            return r;
        }
        Some(FaultAction::InternalError) => {
            let s = status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "injected fault");
            return answer(StatusCode::INTERNAL_SERVER_ERROR, &s);
        }
        Some(FaultAction::Delay { ms }) => tokio::time::sleep(Duration::from_millis(ms)).await,
        Some(FaultAction::CutWatch) => {
            let expired = status(
                StatusCode::GONE,
                "Expired",
                "too old resource version (cut by the fault proxy)",
            );
            let event = json!({"type": "ERROR", "object": expired});
            return answer(StatusCode::OK, &event);
        }
        Some(FaultAction::LagWatch { ms }) => lag = Some(Duration::from_millis(ms)),
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = body.collect().await.map(|b| b.to_bytes()) else {
        return answer(
            StatusCode::BAD_REQUEST,
            &status(StatusCode::BAD_REQUEST, "BadRequest", "unreadable body"),
        );
    };
    let mut forward = Request::builder()
        .method(parts.method)
        .uri(match parts.uri.path_and_query() {
            Some(pq) => pq.as_str().to_string(),
            None => "/".into(),
        });
    for (k, v) in &parts.headers {
        if k != http::header::HOST && k != http::header::AUTHORIZATION {
            forward = forward.header(k, v);
        }
    }
    let Ok(forward) = forward.body(kube::client::Body::from(bytes.to_vec())) else {
        return answer(
            StatusCode::BAD_REQUEST,
            &status(StatusCode::BAD_REQUEST, "BadRequest", "bad request"),
        );
    };
    let response = match upstream.send(forward).await {
        Ok(r) => r,
        Err(e) => {
            let s = status(StatusCode::BAD_GATEWAY, "InternalError", &format!("upstream: {e}"));
            return answer(StatusCode::BAD_GATEWAY, &s);
        }
    };
    let (parts, body) = response.into_parts();
    let body: Body = match lag {
        None => body.map_err(std::io::Error::other).boxed_unsync(),
        Some(lag) => lagged(body, lag),
    };
    Response::from_parts(parts, body)
}

/// The body's chunks, each delivered `lag` after it arrived, in order.
fn lagged(mut body: kube::client::Body, lag: Duration) -> Body {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Bytes)>();
    tokio::spawn(async move {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Ok(data) = frame.into_data()
                && tx.send((tokio::time::Instant::now() + lag, data)).is_err()
            {
                break;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let (due, data) = rx.recv().await?;
        tokio::time::sleep_until(due).await;
        Some((Ok::<_, std::io::Error>(Frame::data(data)), rx))
    });
    StreamBody::new(stream).boxed_unsync()
}
