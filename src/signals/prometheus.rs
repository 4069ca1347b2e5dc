//! A small client for Prometheus' HTTP query API (`/api/v1/query` and `/api/v1/query_range`).
//!
//! ```text
//!   query(expr) ──GET /api/v1/query?query=…&time=…──▶ Prometheus ──JSON──▶ parse() ──▶ Vec<Sample>
//!   query_range(expr, start, end, step) ──GET /api/v1/query_range──▶ … ──▶ Vec<Series>
//! ```
//! Built on hyper-util's pooled client (rustls for `https://`), every request under a timeout. Answers are
//! parsed by pure functions so that the odd ones (errors, NaN, scalars where a vector was asked for) are
//! tested without a server.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jiff::Timestamp;
use serde::Deserialize;

/// Why a query gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum PromError {
    #[error("invalid Prometheus URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot set up TLS for {url}: {reason}")]
    Tls { url: String, reason: String },
    #[error("Prometheus at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("Prometheus at {url} did not answer within {secs:.1}s")]
    Timeout { url: String, secs: f64 },
    #[error("Prometheus answered HTTP {status}: {message}")]
    Http { status: u16, message: String },
    #[error("Prometheus refused the query ({kind}): {message}")]
    Query { kind: String, message: String },
    #[error("Prometheus sent an answer that is not its query API's JSON: {0}")]
    Decode(String),
    #[error("the query returned a {got}, not a {want}")]
    ResultType { want: &'static str, got: String },
}

impl PromError {
    /// A fixed label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Url { .. } => "url",
            Self::Tls { .. } => "tls",
            Self::Unreachable { .. } => "unreachable",
            Self::Timeout { .. } => "timeout",
            Self::Http { .. } => "http",
            Self::Query { .. } => "query",
            Self::Decode(_) => "decode",
            Self::ResultType { .. } => "result_type",
        }
    }
}

/// One sample of an instant vector (or a scalar, with no labels).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    /// The evaluation time Prometheus reports; for `timestamp(…)` queries the value holds the sample time.
    pub at: Timestamp,
    /// May be NaN or infinite: Prometheus sends those as strings, and so do we keep them.
    pub value: f64,
}

/// One series of a range query.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(Timestamp, f64)>,
}

/// What `/api/v1/query` and `/api/v1/query_range` answered.
#[derive(Clone, Debug, PartialEq)]
pub enum QueryData {
    Vector(Vec<Sample>),
    Matrix(Vec<Series>),
    Scalar(Sample),
    String(String),
}

/// The JSON envelope: `{"status": "success"|"error", "data": …, "errorType": …, "error": …}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<RawData>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawData {
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct RawVectorItem {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

#[derive(Deserialize)]
struct RawMatrixItem {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

fn timestamp(secs: f64) -> Result<Timestamp, PromError> {
    let ms = (secs * 1000.0).round();
    if !ms.is_finite() {
        return Err(PromError::Decode(format!("sample time {secs} is not a number")));
    }
    Timestamp::from_millisecond(ms as i64).map_err(|e| PromError::Decode(format!("sample time {secs}: {e}")))
}

/// Prometheus writes sample values as strings: decimals, `NaN`, `+Inf`, `-Inf`.
fn value(s: &str) -> Result<f64, PromError> {
    match s {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s
            .parse::<f64>()
            .map_err(|_| PromError::Decode(format!("sample value {s:?} is not a number"))),
    }
}

/// Parses a query API answer; `status` is the HTTP status it came with.
pub fn parse(status: u16, body: &[u8]) -> Result<QueryData, PromError> {
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(e) => {
            if !(200..300).contains(&status) {
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_string();
                return Err(PromError::Http { status, message: text });
            }
            return Err(PromError::Decode(e.to_string()));
        }
    };
    if envelope.status != "success" {
        return Err(PromError::Query {
            kind: envelope.error_type.unwrap_or_else(|| format!("HTTP {status}")),
            message: envelope.error.unwrap_or_else(|| "no message".into()),
        });
    }
    let data = envelope
        .data
        .ok_or_else(|| PromError::Decode("a successful answer without data".into()))?;
    let bad = |e: serde_json::Error| PromError::Decode(format!("{} result: {e}", data.result_type));
    match data.result_type.as_str() {
        "vector" => {
            let items: Vec<RawVectorItem> = serde_json::from_value(data.result.clone()).map_err(bad)?;
            let samples = items
                .into_iter()
                .map(|i| {
                    Ok(Sample {
                        labels: i.metric,
                        at: timestamp(i.value.0)?,
                        value: value(&i.value.1)?,
                    })
                })
                .collect::<Result<_, PromError>>()?;
            Ok(QueryData::Vector(samples))
        }
        "matrix" => {
            let items: Vec<RawMatrixItem> = serde_json::from_value(data.result.clone()).map_err(bad)?;
            let series = items
                .into_iter()
                .map(|i| {
                    let points = i
                        .values
                        .iter()
                        .map(|(t, v)| Ok((timestamp(*t)?, value(v)?)))
                        .collect::<Result<_, PromError>>()?;
                    Ok(Series {
                        labels: i.metric,
                        points,
                    })
                })
                .collect::<Result<_, PromError>>()?;
            Ok(QueryData::Matrix(series))
        }
        "scalar" => {
            let (t, v): (f64, String) = serde_json::from_value(data.result.clone()).map_err(bad)?;
            Ok(QueryData::Scalar(Sample {
                labels: BTreeMap::new(),
                at: timestamp(t)?,
                value: value(&v)?,
            }))
        }
        "string" => {
            let (_, v): (f64, String) = serde_json::from_value(data.result.clone()).map_err(bad)?;
            Ok(QueryData::String(v))
        }
        other => Err(PromError::Decode(format!("unknown result type {other:?}"))),
    }
}

impl QueryData {
    /// The samples of an instant query; a scalar counts as one sample without labels.
    pub fn into_vector(self) -> Result<Vec<Sample>, PromError> {
        match self {
            Self::Vector(v) => Ok(v),
            Self::Scalar(s) => Ok(vec![s]),
            other => Err(PromError::ResultType {
                want: "vector",
                got: other.kind().into(),
            }),
        }
    }

    pub fn into_matrix(self) -> Result<Vec<Series>, PromError> {
        match self {
            Self::Matrix(m) => Ok(m),
            other => Err(PromError::ResultType {
                want: "matrix",
                got: other.kind().into(),
            }),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Vector(_) => "vector",
            Self::Matrix(_) => "matrix",
            Self::Scalar(_) => "scalar",
            Self::String(_) => "string",
        }
    }
}

/// Answers larger than this are refused rather than buffered.
const MAX_ANSWER: usize = 32 << 20;

/// A Prometheus server.
#[derive(Clone)]
pub struct Prometheus {
    base: String,
    timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl std::fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prometheus").field("base", &self.base).finish()
    }
}

impl Prometheus {
    /// A client for the server at `url` (`http://host:9090`, or with a path prefix); each request gives up
    /// after `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, PromError> {
        let base = url.trim_end_matches('/').to_string();
        let uri: Uri = base.parse().map_err(|e: http::uri::InvalidUri| PromError::Url {
            url: url.into(),
            reason: e.to_string(),
        })?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(PromError::Url {
                url: url.into(),
                reason: "expected http://HOST[:PORT] or https://…".into(),
            });
        }
        let tls = |reason: std::io::Error| PromError::Tls {
            url: url.into(),
            reason: reason.to_string(),
        };
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        // Plain http needs no trust roots; a machine without any must still reach an http:// Prometheus.
        let builder = if uri.scheme_str() == Some("https") {
            builder
                .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
                .map_err(tls)?
        } else {
            builder.with_tls_config(
                rustls::ClientConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| tls(std::io::Error::other(e)))?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            )
        };
        let connector = builder.https_or_http().enable_http1().build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self { base, timeout, client })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// An instant query evaluated at `at` (the server's now when None).
    pub async fn query(&self, expr: &str, at: Option<Timestamp>) -> Result<Vec<Sample>, PromError> {
        let mut params = vec![("query", expr.to_string())];
        if let Some(t) = at {
            params.push(("time", seconds(t)));
        }
        self.get("/api/v1/query", &params).await?.into_vector()
    }

    /// A range query from `start` to `end` every `step`.
    pub async fn query_range(
        &self,
        expr: &str,
        start: Timestamp,
        end: Timestamp,
        step: Duration,
    ) -> Result<Vec<Series>, PromError> {
        let params = [
            ("query", expr.to_string()),
            ("start", seconds(start)),
            ("end", seconds(end)),
            ("step", format!("{:.3}", step.as_secs_f64().max(0.001))),
        ];
        self.get("/api/v1/query_range", &params).await?.into_matrix()
    }

    async fn get(&self, path: &str, params: &[(&str, String)]) -> Result<QueryData, PromError> {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        let url = format!("{}{path}?{query}", self.base);
        let request = Request::get(url.as_str())
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| PromError::Url {
                url: self.base.clone(),
                reason: e.to_string(),
            })?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| PromError::Unreachable {
                url: self.base.clone(),
                reason: error_chain(&e),
            })?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| PromError::Unreachable {
                    url: self.base.clone(),
                    reason: format!("reading the answer: {e}"),
                })?
                .to_bytes();
            Ok::<_, PromError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| PromError::Timeout {
                url: self.base.clone(),
                secs: self.timeout.as_secs_f64(),
            })??;
        if status == StatusCode::NOT_FOUND {
            return Err(PromError::Http {
                status: 404,
                message: format!("{path} not found: is {} a Prometheus server?", self.base),
            });
        }
        parse(status.as_u16(), &body)
    }
}

/// Seconds since the epoch with milliseconds, as Prometheus takes times.
fn seconds(t: Timestamp) -> String {
    format!("{:.3}", t.as_millisecond() as f64 / 1000.0)
}

/// The innermost causes of a client error, which say what happened ("Connection refused").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> QueryData {
        parse(200, body.as_bytes()).unwrap()
    }

    #[test]
    fn vector_with_labels_times_and_values() {
        let data = ok(r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"Hostname":"gpu-1","gpu":"0"},"value":[1764000000.123,"81.5"]},
            {"metric":{"Hostname":"gpu-2"},"value":[1764000000,"0"]}]}}"#);
        let v = data.into_vector().unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].labels["Hostname"], "gpu-1");
        assert_eq!(v[0].value, 81.5);
        assert_eq!(v[0].at, Timestamp::from_millisecond(1_764_000_000_123).unwrap());
        assert_eq!(v[1].value, 0.0);
    }

    #[test]
    fn nan_and_infinities_are_values_not_errors() {
        let v = ok(r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{},"value":[1,"NaN"]},{"metric":{},"value":[1,"+Inf"]},{"metric":{},"value":[1,"-Inf"]}]}}"#)
        .into_vector()
        .unwrap();
        assert!(v[0].value.is_nan());
        assert_eq!(v[1].value, f64::INFINITY);
        assert_eq!(v[2].value, f64::NEG_INFINITY);
    }

    #[test]
    fn matrix_points_in_order() {
        let m = ok(r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"Hostname":"a"},"values":[[10,"1"],[11,"2"],[12,"NaN"]]}]}}"#)
        .into_matrix()
        .unwrap();
        assert_eq!(m[0].labels["Hostname"], "a");
        let secs: Vec<i64> = m[0].points.iter().map(|p| p.0.as_second()).collect();
        assert_eq!(secs, vec![10, 11, 12]);
        assert_eq!(m[0].points[1].1, 2.0);
        assert!(m[0].points[2].1.is_nan());
    }

    #[test]
    fn scalar_is_one_sample_and_string_is_no_vector() {
        let v = ok(r#"{"status":"success","data":{"resultType":"scalar","result":[5,"3"]}}"#)
            .into_vector()
            .unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].value, 3.0);
        let err = ok(r#"{"status":"success","data":{"resultType":"string","result":[5,"x"]}}"#)
            .into_vector()
            .unwrap_err();
        assert!(matches!(err, PromError::ResultType { want: "vector", .. }), "{err}");
        let err = ok(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#)
            .into_matrix()
            .unwrap_err();
        assert!(err.to_string().contains("not a matrix"), "{err}");
    }

    #[test]
    fn query_errors_carry_type_and_message() {
        let err = parse(
            400,
            br#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected <EOF>"}"#,
        )
        .unwrap_err();
        match &err {
            PromError::Query { kind, message } => {
                assert_eq!(kind, "bad_data");
                assert!(message.contains("parse error"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(err.metric_label(), "query");
    }

    #[test]
    fn non_json_answers_are_clear_errors() {
        let err = parse(502, b"<html>Bad Gateway</html>").unwrap_err();
        assert!(matches!(err, PromError::Http { status: 502, .. }), "{err}");
        let err = parse(200, b"DCGM_FI_DEV_GPU_UTIL 1").unwrap_err();
        assert!(matches!(err, PromError::Decode(_)), "{err}");
        let err = parse(
            200,
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"abc"]}]}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("\"abc\""), "{err}");
        let err = parse(200, br#"{"status":"success"}"#).unwrap_err();
        assert!(matches!(err, PromError::Decode(_)), "{err}");
    }

    #[test]
    fn urls_are_checked() {
        assert!(Prometheus::new("http://127.0.0.1:9090/", Duration::from_secs(1)).is_ok());
        assert!(matches!(
            Prometheus::new("ftp://x", Duration::from_secs(1)),
            Err(PromError::Url { .. })
        ));
        assert!(matches!(
            Prometheus::new("not a url", Duration::from_secs(1)),
            Err(PromError::Url { .. })
        ));
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_with_the_cause() {
        // Bind and drop to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let p = Prometheus::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2)).unwrap();
        let err = p.query("up", None).await.unwrap_err();
        assert!(matches!(err, PromError::Unreachable { .. }), "{err}");
        assert!(err.to_string().to_lowercase().contains("refused"), "{err}");
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        // Accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                open.push(s);
            }
        });
        let p = Prometheus::new(&format!("http://{addr}"), Duration::from_millis(300)).unwrap();
        let err = p.query("up", None).await.unwrap_err();
        assert!(matches!(err, PromError::Timeout { .. }), "{err}");
        assert_eq!(err.metric_label(), "timeout");
        hold.abort();
    }
}
