//! HTTP: the listener, request parsing, routing and response encoding.
//!
//! ```text
//!   TCP ─▶ hyper http1 ─▶ handle(): authenticate ─▶ route ─▶ discovery | faults endpoint | resources::handle
//!                                                          └▶ authorize (RBAC) ─▶ fault injection ─▶ Cluster
//! ```
//! Every answer is JSON; every failure a `metav1.Status` from `ApiError`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::auth::Auth;
use super::authorization;
use super::discovery;
use super::error::ApiError;
use super::faults::{FaultConfig, Faults};
use super::openapi;
use super::resources;
use super::verbs::{Caller, Cluster};

pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// What every request handler shares.
pub(crate) struct Server {
    pub cluster: Arc<Cluster>,
    pub auth: Auth,
    pub faults: Faults,
    pub address: SocketAddr,
    pub bookmark_interval: Duration,
}

/// One parsed request.
pub(crate) struct Request {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub caller: Caller,
    /// Warnings for the answer's `Warning` headers, filled while the request runs.
    pub warnings: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Request {
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub(crate) fn header(&self, name: header::HeaderName) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

const MAX_BODY: usize = 16 << 20;

/// Serves until `stop` turns true.
pub(crate) async fn serve(server: Arc<Server>, listener: TcpListener, stop: watch::Receiver<bool>) {
    let mut stop_accepting = stop.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let server = server.clone();
                let mut conn_stop = stop.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(handle(server, req).await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = conn_stop.wait_for(|s| *s) => {}
                    }
                });
            }
            _ = stop_accepting.wait_for(|s| *s) => return,
        }
    }
}

async fn handle(server: Arc<Server>, req: hyper::Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let response = match read(&server, req).await {
        Ok(request) => {
            let warnings = request.warnings.clone();
            let mut response = match route(&server, request).await {
                Ok(response) => response,
                Err(err) => error_response(&err),
            };
            for warning in warnings.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
                let text = format!("299 - \"{}\"", warning.replace('"', "\\\""));
                if let Ok(value) = header::HeaderValue::from_str(&text) {
                    response.headers_mut().append(header::WARNING, value);
                }
            }
            response
        }
        Err(err) => error_response(&err),
    };
    tracing::debug!(%method, uri = %uri, status = response.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
    response
}

async fn read(server: &Server, req: hyper::Request<Incoming>) -> Result<Request, ApiError> {
    let (parts, body) = req.into_parts();
    let mut caller = server
        .auth
        .authenticate(parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()))?;
    let as_user = parts.headers.get("impersonate-user").and_then(|v| v.to_str().ok());
    let as_groups: Vec<String> = parts
        .headers
        .get_all("impersonate-group")
        .iter()
        .filter_map(|v| v.to_str().ok().map(String::from))
        .collect();
    if let Some(target) = super::auth::impersonated(as_user, as_groups) {
        authorization::authorize_impersonation(server, &caller, &target)?;
        caller = target;
    }
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    let body = match limited.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Err(ApiError::Status(super::error::status_body(
                413,
                "RequestEntityTooLarge",
                "Request entity too large: limit is 16777216",
                None,
            )));
        }
    };
    let query = parts
        .uri
        .query()
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    Ok(Request {
        method: parts.method,
        path: parts.uri.path().trim_end_matches('/').to_string(),
        query,
        headers: parts.headers,
        body,
        caller,
        warnings: Arc::default(),
    })
}

async fn route(server: &Arc<Server>, req: Request) -> Result<Response<Body>, ApiError> {
    let segments: Vec<String> = req
        .path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let accept = req.header(header::ACCEPT).to_string();
    let registry = &server.cluster.registry;
    let resource_request = matches!(segs.as_slice(), ["api", "v1", _, ..] | ["apis", _, _, _, ..]);
    if !resource_request && segs.first() != Some(&"sandbox") {
        let path = if req.path.is_empty() { "/" } else { req.path.as_str() };
        authorization::authorize_path(server, &req.caller, req.method.as_str(), path)?;
    }
    match segs.as_slice() {
        ["version"] => Ok(json(StatusCode::OK, &discovery::version())),
        ["healthz" | "livez" | "readyz"] => Ok(text(StatusCode::OK, "ok")),
        ["api"] if discovery::wants_aggregated(&accept) => Ok(typed(
            StatusCode::OK,
            &discovery::aggregated(registry, true),
            discovery::AGGREGATED,
        )),
        ["api"] => Ok(json(
            StatusCode::OK,
            &discovery::core_versions(&server.address.to_string()),
        )),
        ["apis"] if discovery::wants_aggregated(&accept) => Ok(typed(
            StatusCode::OK,
            &discovery::aggregated(registry, false),
            discovery::AGGREGATED,
        )),
        ["apis"] => Ok(json(StatusCode::OK, &discovery::group_list(registry))),
        ["api", "v1"] => discovery::resource_list(registry, "", "v1")
            .map(|v| json(StatusCode::OK, &v))
            .ok_or(ApiError::NoRoute),
        ["apis", group] => discovery::group(registry, group)
            .map(|v| json(StatusCode::OK, &v))
            .ok_or(ApiError::NoRoute),
        ["apis", group, version] => discovery::resource_list(registry, group, version)
            .map(|v| json(StatusCode::OK, &v))
            .ok_or(ApiError::NoRoute),
        ["openapi", "v3"] => Ok(json(StatusCode::OK, &openapi::root(registry))),
        ["openapi", "v3", rest @ ..] => openapi::group_version(registry, &rest.join("/"))
            .map(|v| json(StatusCode::OK, &v))
            .ok_or(ApiError::NoRoute),
        ["sandbox", "faults"] => faults_endpoint(server, &req),
        ["api", "v1", rest @ ..] => resources::handle(server, &req, "", "v1", rest).await,
        ["apis", group, version, rest @ ..] => resources::handle(server, &req, group, version, rest).await,
        _ => Err(ApiError::NoRoute),
    }
}

fn faults_endpoint(server: &Server, req: &Request) -> Result<Response<Body>, ApiError> {
    if !req.caller.groups.iter().any(|g| g == "system:masters") {
        return Err(ApiError::Forbidden("only the sandbox admin may change faults".into()));
    }
    match req.method {
        Method::GET => {}
        Method::PUT | Method::POST => {
            let config: FaultConfig = serde_yaml_ng::from_slice(&req.body)
                .map_err(|e| ApiError::BadRequest(format!("invalid fault configuration: {e}")))?;
            server.faults.set(config);
        }
        _ => return Err(ApiError::MethodNotAllowed),
    }
    Ok(json(
        StatusCode::OK,
        &serde_json::to_value(server.faults.config()).unwrap_or(Value::Null),
    ))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

pub(crate) fn json(code: StatusCode, value: &Value) -> Response<Body> {
    typed(code, value, "application/json")
}

pub(crate) fn typed(code: StatusCode, value: &Value, content_type: &str) -> Response<Body> {
    bytes_response(
        code,
        Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
        content_type,
    )
}

pub(crate) fn bytes_response(code: StatusCode, body: Bytes, content_type: &str) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = code;
    if let Ok(ct) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    response
}

fn text(code: StatusCode, body: &'static str) -> Response<Body> {
    bytes_response(code, Bytes::from_static(body.as_bytes()), "text/plain; charset=utf-8")
}

pub(crate) fn error_response(err: &ApiError) -> Response<Body> {
    let code = StatusCode::from_u16(err.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json(code, &err.status());
    if let Some(seconds) = err.retry_after() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
    }
    response
}

/// A streaming response (watch) from a channel of frames.
pub(crate) fn stream_response(rx: tokio::sync::mpsc::Receiver<Bytes>, content_type: &str) -> Response<Body> {
    let stream = tokio_stream_from(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    if let Ok(ct) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache, private"),
    );
    response
}

fn tokio_stream_from(rx: tokio::sync::mpsc::Receiver<Bytes>) -> impl futures::Stream<Item = Bytes> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
}
