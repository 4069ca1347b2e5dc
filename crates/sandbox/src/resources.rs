//! Requests on resources: `/api/v1/...` and `/apis/GROUP/VERSION/...` paths, parsed into a resource, a verb
//! and options, checked (RBAC, injected faults), and carried out on the `Cluster`.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{Method, Response, StatusCode, header};
use serde_json::{Value, json};

use super::authorization;
use super::convert;
use super::error::ApiError;
use super::faults::FaultAction;
use super::pipeline;
use super::registry::ResourceType;
use super::reviews;
use super::selector::{FieldSelector, LabelSelector};
use super::server::{Body, Request, Server, bytes_response, json as json_response, stream_response};
use super::table::IncludeObject;
use super::verbs::{Cluster, DeleteOpts, ListOpts, PatchKind, WriteCtx};
use super::watch::{self, WatchParams};

/// The resource, namespace, name and subresource a path names.
pub(crate) struct Target<'a> {
    pub rt: Arc<ResourceType>,
    pub ns: Option<&'a str>,
    pub name: Option<&'a str>,
    pub sub: Option<&'a str>,
}

fn parse_target<'a>(cluster: &Cluster, group: &str, version: &str, rest: &[&'a str]) -> Result<Target<'a>, ApiError> {
    let namespace_sub = group.is_empty() && rest.len() == 3 && matches!(rest[2], "status" | "finalize");
    let (ns, res, name, sub) = if rest.first() == Some(&"namespaces") && rest.len() >= 3 && !namespace_sub {
        (Some(rest[1]), rest[2], rest.get(3).copied(), rest.get(4).copied())
    } else {
        (
            None,
            *rest.first().ok_or(ApiError::NoRoute)?,
            rest.get(1).copied(),
            rest.get(2).copied(),
        )
    };
    if rest.len() > 5 || (ns.is_none() && rest.len() > 3) {
        return Err(ApiError::NoRoute);
    }
    let rt = cluster.registry.resolve(group, version, res).ok_or(ApiError::NoRoute)?;
    if (ns.is_some() && !rt.namespaced) || (rt.namespaced && ns.is_none() && name.is_some()) {
        return Err(ApiError::NoRoute);
    }
    if let Some(sub) = sub
        && !rt.subresources.contains(&sub)
    {
        return Err(ApiError::NoRoute);
    }
    Ok(Target { rt, ns, name, sub })
}

fn verb_of(req: &Request, t: &Target) -> Result<&'static str, ApiError> {
    let watching = matches!(req.param("watch"), Some("true" | "1"));
    Ok(match (&req.method, t.name, t.sub) {
        (&Method::GET, None, _) if watching => "watch",
        (&Method::GET, None, _) => "list",
        (&Method::GET, Some(_), Some("eviction" | "binding" | "token")) => return Err(ApiError::MethodNotAllowed),
        (&Method::GET, Some(_), _) => "get",
        (&Method::POST, None, _) => "create",
        (&Method::POST, Some(_), Some("eviction" | "binding" | "token")) => "create",
        (&Method::PUT, Some(_), Some("status" | "finalize" | "scale" | "ephemeralcontainers") | None) => "update",
        (&Method::PATCH, Some(_), Some("status" | "scale" | "ephemeralcontainers") | None) => "patch",
        (&Method::DELETE, Some(_), None) => "delete",
        (&Method::DELETE, None, None) => "deletecollection",
        _ => return Err(ApiError::MethodNotAllowed),
    })
}

/// Routes a request for a resource (`/api/v1/...`, `/apis/GROUP/VERSION/...`) to its verb.
pub(crate) async fn handle(
    server: &Arc<Server>,
    req: &Request,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Response<Body>, ApiError> {
    let cluster = &server.cluster;
    let t = parse_target(cluster, group, version, rest)?;
    if t.rt.create_only {
        return review(server, req, &t);
    }
    let verb = verb_of(req, &t)?;
    authorization::authorize(server, &req.caller, verb, &t.rt, t.sub.unwrap_or(""), t.ns, t.name)?;
    let watch_fault = injected_fault(server, verb, &t).await?;
    let ns = t.ns.unwrap_or("");
    let rt = &t.rt;
    if t.sub == Some("scale") {
        return scale(cluster, req, &t, verb);
    }
    match verb {
        "list" => list(cluster, req, &t),
        "watch" => start_watch(server, req, &t, watch_fault.cut, watch_fault.lag),
        "get" => get(cluster, req, &t),
        "create" => create(server, req, &t),
        "update" => {
            let body = parse_body(req)?;
            let ctx = write_ctx(req)?;
            let name = t.name.unwrap_or("");
            if t.sub == Some("finalize") {
                return Ok(json_response(StatusCode::OK, &cluster.finalize_namespace(name, &body)?));
            }
            Ok(json_response(
                StatusCode::OK,
                &cluster.update(rt, ns, name, body, t.sub, &ctx)?,
            ))
        }
        "patch" => patch(cluster, req, &t),
        "delete" => {
            let opts = delete_opts(req)?;
            let ctx = write_ctx(req)?;
            let name = t.name.unwrap_or("");
            Ok(json_response(
                StatusCode::OK,
                &cluster.delete(rt, ns, name, &opts, &ctx)?,
            ))
        }
        "deletecollection" => delete_collection(cluster, req, &t),
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// A create-only review resource (TokenReview, SubjectAccessReview and the like): answered, never stored.
fn review(server: &Arc<Server>, req: &Request, t: &Target) -> Result<Response<Body>, ApiError> {
    if req.method != Method::POST || t.name.is_some() {
        return Err(ApiError::MethodNotAllowed);
    }
    authorization::authorize(server, &req.caller, "create", &t.rt, "", t.ns, None)?;
    let body = parse_body(req)?;
    let answer = reviews::handle(server, &t.rt, &req.caller, body)?;
    Ok(json_response(StatusCode::CREATED, &answer))
}

/// What an injected fault does to a watch.
#[derive(Default)]
struct WatchFault {
    cut: bool,
    lag: Option<Duration>,
}

/// Applies the fault rule that matches the request, if any: an error to answer, a delay, or a watch fault.
async fn injected_fault(server: &Server, verb: &str, t: &Target<'_>) -> Result<WatchFault, ApiError> {
    let mut fault = WatchFault::default();
    match server.faults.decide(verb, &t.rt.group, &t.rt.resource) {
        None => {}
        Some(FaultAction::Conflict) => return Err(ApiError::stale(&t.rt.gr(), t.name.unwrap_or(""))),
        Some(FaultAction::TooManyRequests { retry_after_seconds }) => {
            return Err(ApiError::TooManyRequests {
                message: "Too many requests, please try again later.".into(),
                retry_after: retry_after_seconds,
            });
        }
        Some(FaultAction::InternalError) => return Err(ApiError::Internal("injected fault".into())),
        Some(FaultAction::Delay { ms }) => tokio::time::sleep(Duration::from_millis(ms)).await,
        Some(FaultAction::CutWatch) => fault.cut = true,
        Some(FaultAction::LagWatch { ms }) => fault.lag = Some(Duration::from_millis(ms)),
    }
    Ok(fault)
}

fn get(cluster: &Cluster, req: &Request, t: &Target) -> Result<Response<Body>, ApiError> {
    let obj = cluster.get(&t.rt, t.ns.unwrap_or(""), t.name.unwrap_or(""))?;
    match table_mode(req)? {
        Some(include) => {
            let mut table = pipeline::table(&t.rt, &[&obj], include);
            table["metadata"] = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
            Ok(json_response(StatusCode::OK, &table))
        }
        None => Ok(json_response(StatusCode::OK, &obj)),
    }
}

/// `POST` of an object, or of a pod's eviction, binding or a service account's token.
fn create(server: &Arc<Server>, req: &Request, t: &Target) -> Result<Response<Body>, ApiError> {
    let cluster = &server.cluster;
    let ns = t.ns.unwrap_or("");
    let body = parse_body(req)?;
    let ctx = write_ctx(req)?;
    match (t.name, t.sub) {
        (None, _) => Ok(json_response(
            StatusCode::CREATED,
            &cluster.create(&t.rt, t.ns, body, &ctx)?,
        )),
        (Some(name), Some("eviction")) => {
            let status = super::builtin::pdb::evict(cluster, ns, name, &body, &ctx)?;
            Ok(json_response(StatusCode::CREATED, &status))
        }
        (Some(name), Some("binding")) => {
            cluster.bind(ns, name, &body)?;
            let ok = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
            Ok(json_response(StatusCode::CREATED, &ok))
        }
        (Some(name), Some("token")) => Ok(json_response(
            StatusCode::CREATED,
            &reviews::token_request(server, ns, name, &body)?,
        )),
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// The patch kind a request's Content-Type names.
fn patch_kind(req: &Request, rt: &ResourceType) -> Result<PatchKind, ApiError> {
    let content_type = req.header(header::CONTENT_TYPE).split(';').next().unwrap_or("").trim();
    match content_type {
        "application/json-patch+json" => Ok(PatchKind::Json),
        "application/merge-patch+json" => Ok(PatchKind::Merge),
        "application/strategic-merge-patch+json" => Ok(PatchKind::Strategic),
        "application/apply-patch+yaml" => Ok(PatchKind::Apply {
            force: req.param("force") == Some("true"),
        }),
        _ => Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml{}",
            if rt.custom.is_none() {
                ", application/strategic-merge-patch+json"
            } else {
                ""
            },
        ))),
    }
}

fn patch(cluster: &Cluster, req: &Request, t: &Target) -> Result<Response<Body>, ApiError> {
    let (rt, ns, name) = (&t.rt, t.ns.unwrap_or(""), t.name.unwrap_or(""));
    let ctx = write_ctx(req)?;
    let kind = patch_kind(req, rt)?;
    if let PatchKind::Apply { .. } = kind
        && req.param("fieldManager").is_none_or(str::is_empty)
    {
        return Err(ApiError::invalid(
            "PatchOptions",
            "meta.k8s.io",
            "",
            "fieldManager",
            "FieldValueRequired",
            "Required value: is required for apply patch",
        ));
    }
    let patch = parse_body(req)?;
    let existed = cluster.store.get(&rt.key(), ns, name).is_some();
    let obj = cluster.patch(rt, ns, name, kind, &patch, t.sub, &ctx)?;
    let code = if existed { StatusCode::OK } else { StatusCode::CREATED };
    Ok(json_response(code, &obj))
}

fn delete_collection(cluster: &Cluster, req: &Request, t: &Target) -> Result<Response<Body>, ApiError> {
    let rt = &t.rt;
    let opts = delete_opts(req)?;
    let ctx = write_ctx(req)?;
    let listed = cluster.list(rt, t.ns, &list_opts(req, rt)?)?;
    let mut deleted = Vec::new();
    for s in listed.items {
        match cluster.delete(rt, &s.namespace, &s.name, &opts, &ctx) {
            Ok(v) => deleted.push(v),
            Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let list =
        json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": {}, "items": deleted});
    Ok(json_response(StatusCode::OK, &list))
}

fn parse_body(req: &Request) -> Result<Value, ApiError> {
    if req.body.is_empty() {
        return Err(ApiError::BadRequest("the body of the request was empty".into()));
    }
    let content_type = req.header(header::CONTENT_TYPE);
    if content_type.contains("protobuf") {
        return super::protobuf::to_json(&req.body).map_err(ApiError::UnsupportedMediaType);
    }
    if content_type.contains("cbor") {
        // client-go falls back to JSON after a 415 to a CBOR body.
        return Err(ApiError::UnsupportedMediaType(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf".into(),
        ));
    }
    let parsed: Result<Value, String> = if content_type.contains("yaml") {
        serde_yaml_ng::from_slice(&req.body).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice(&req.body).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| ApiError::BadRequest(format!("the body of the request could not be decoded: {e}")))
}

fn write_ctx(req: &Request) -> Result<WriteCtx, ApiError> {
    let manager = match req.param("fieldManager").filter(|m| !m.is_empty()) {
        Some(m) => m.to_string(),
        // As the real server: the User-Agent up to its first '/'.
        None => req
            .header(header::USER_AGENT)
            .split('/')
            .next()
            .unwrap_or("")
            .chars()
            .take(128)
            .collect(),
    };
    let dry_run = match req.param("dryRun") {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => return Err(ApiError::BadRequest(format!("unsupported dry run value: {other}"))),
    };
    let (strict, warn) = match req.param("fieldValidation") {
        None | Some("") | Some("Warn") => (false, true),
        Some("Ignore") => (false, false),
        Some("Strict") => (true, false),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "fieldValidation invalid value: {other}. Must be one of \"Ignore\", \"Warn\", or \"Strict\""
            )));
        }
    };
    Ok(WriteCtx {
        caller: req.caller.clone(),
        manager,
        dry_run,
        strict,
        warn,
        warnings: req.warnings.clone(),
    })
}

fn delete_opts(req: &Request) -> Result<DeleteOpts, ApiError> {
    let body: Value = if req.body.is_empty() {
        json!({})
    } else {
        parse_body(req)?
    };
    let grace = req
        .param("gracePeriodSeconds")
        .map(|g| {
            g.parse::<i64>()
                .map_err(|_| ApiError::BadRequest(format!("invalid gracePeriodSeconds: {g}")))
        })
        .transpose()?
        .or_else(|| body["gracePeriodSeconds"].as_i64());
    let propagation = req
        .param("propagationPolicy")
        .map(String::from)
        .or_else(|| body["propagationPolicy"].as_str().map(String::from))
        .or_else(|| {
            match body["orphanDependents"]
                .as_bool()
                .or(req.param("orphanDependents").map(|o| o == "true"))
            {
                Some(true) => Some("Orphan".into()),
                _ => None,
            }
        });
    Ok(DeleteOpts {
        grace_period: grace,
        propagation,
        uid: body["preconditions"]["uid"].as_str().map(String::from),
        resource_version: body["preconditions"]["resourceVersion"].as_str().map(String::from),
        dry_run: req.param("dryRun") == Some("All") || body["dryRun"].as_array().is_some_and(|a| !a.is_empty()),
    })
}

fn list_opts(req: &Request, rt: &ResourceType) -> Result<ListOpts, ApiError> {
    let limit = req
        .param("limit")
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.parse::<usize>()
                .map_err(|_| ApiError::BadRequest(format!("invalid limit: {l}")))
        })
        .transpose()?;
    Ok(ListOpts {
        labels: LabelSelector::parse(req.param("labelSelector").unwrap_or(""))?,
        fields: FieldSelector::parse(
            &convert::field_selector(rt, req.param("fieldSelector").unwrap_or("")),
            Cluster::field_labels(rt),
        )?,
        limit,
        continue_token: req.param("continue").filter(|c| !c.is_empty()).map(String::from),
        resource_version: req.param("resourceVersion").map(String::from),
        resource_version_match: req
            .param("resourceVersionMatch")
            .filter(|m| !m.is_empty())
            .map(String::from),
    })
}

/// The Table form the Accept header asks for, if any; an `includeObject` the server does not know is a bad
/// request, as it is for the real one.
fn table_mode(req: &Request) -> Result<Option<IncludeObject>, ApiError> {
    let accept = req.header(header::ACCEPT);
    let first = accept.split(',').next().unwrap_or("");
    if !first.contains("as=Table") {
        return Ok(None);
    }
    let value = req.param("includeObject").unwrap_or_default();
    IncludeObject::parse(value).map(Some).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "includeObject: Invalid value: \"{value}\": must be 'Metadata', 'Object', 'None', or empty"
        ))
    })
}

fn list(cluster: &Cluster, req: &Request, t: &Target) -> Result<Response<Body>, ApiError> {
    let rt = &t.rt;
    let opts = list_opts(req, rt)?;
    let result = cluster.list(rt, t.ns, &opts)?;
    let mut meta = json!({"resourceVersion": result.rv.to_string()});
    if let Some(token) = &result.continue_token {
        meta["continue"] = json!(token);
    }
    if let Some(include) = table_mode(req)? {
        let values: Vec<Value> = result
            .items
            .iter()
            .map(|s| convert::from_stored(rt, s.value()))
            .collect();
        let refs: Vec<&Value> = values.iter().collect();
        let mut table = pipeline::table(rt, &refs, include);
        table["metadata"] = meta;
        return Ok(json_response(StatusCode::OK, &table));
    }
    let head =
        json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": meta}).to_string();
    let size: usize = result.items.iter().map(|s| s.json.len() + 1).sum();
    let mut body = BytesMut::with_capacity(head.len() + size + 16);
    body.put_slice(&head.as_bytes()[..head.len() - 1]);
    body.put_slice(b",\"items\":[");
    for (i, item) in result.items.iter().enumerate() {
        if i > 0 {
            body.put_u8(b',');
        }
        if convert::is_view(rt) {
            body.put_slice(convert::from_stored(rt, item.value()).to_string().as_bytes());
        } else {
            body.put_slice(&item.json);
        }
    }
    body.put_slice(b"]}");
    Ok(bytes_response(StatusCode::OK, body.freeze(), "application/json"))
}

fn start_watch(
    server: &Arc<Server>,
    req: &Request,
    t: &Target,
    cut: bool,
    lag: Option<Duration>,
) -> Result<Response<Body>, ApiError> {
    let rt = t.rt.clone();
    let opts = list_opts(req, &rt)?;
    let rv = watch::parse_rv(req.param("resourceVersion")).map_err(ApiError::BadRequest)?;
    let send_initial_events = req.param("sendInitialEvents") == Some("true");
    let bookmarks = req.param("allowWatchBookmarks") == Some("true");
    if send_initial_events && (!bookmarks || req.param("resourceVersionMatch") != Some("NotOlderThan")) {
        return Err(ApiError::invalid(
            "ListOptions",
            "meta.k8s.io",
            "",
            "sendInitialEvents",
            "FieldValueForbidden",
            "Forbidden: sendInitialEvents is allowed only with allowWatchBookmarks=true and resourceVersionMatch=NotOlderThan",
        ));
    }
    let timeout = req
        .param("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs);
    let params = WatchParams {
        ns: t.ns.map(String::from),
        labels: opts.labels,
        fields: opts.fields,
        rv,
        send_initial_events,
        bookmarks,
        bookmark_interval: server.bookmark_interval,
        timeout,
        cut,
        lag,
    };
    let encoder = match table_mode(req)? {
        None if convert::is_view(&rt) => {
            let rt = rt.clone();
            Arc::new(move |s: &super::store::Stored, _first: bool| {
                Bytes::from(convert::from_stored(&rt, s.value()).to_string())
            }) as watch::Encoder
        }
        None => watch::raw_encoder(),
        Some(include) => {
            let rt = rt.clone();
            Arc::new(move |s: &super::store::Stored, first: bool| {
                let obj = convert::from_stored(&rt, s.value());
                let mut table = pipeline::table(&rt, &[&obj], include);
                table["metadata"] = json!({"resourceVersion": s.rv.to_string()});
                if !first {
                    table["columnDefinitions"] = json!([]);
                }
                Bytes::from(table.to_string())
            }) as watch::Encoder
        }
    };
    let rx = watch::start(server.cluster.clone(), rt, params, encoder);
    Ok(stream_response(rx, "application/json"))
}

/// The autoscaling/v1 Scale view of a workload.
fn scale_of(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    let selector = obj["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
                     "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"]},
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

/// `deployments/NAME/scale` and the like: reads and writes spec.replicas through a Scale.
fn scale(cluster: &Cluster, req: &Request, t: &Target, verb: &str) -> Result<Response<Body>, ApiError> {
    let (rt, ns, name) = (&t.rt, t.ns.unwrap_or(""), t.name.unwrap_or(""));
    let current = scale_of(&cluster.get(rt, ns, name)?);
    let wanted = match verb {
        "get" => return Ok(json_response(StatusCode::OK, &current)),
        "update" => parse_body(req)?,
        "patch" => {
            let kind = match req.header(header::CONTENT_TYPE).split(';').next().unwrap_or("").trim() {
                "application/json-patch+json" => PatchKind::Json,
                "application/strategic-merge-patch+json" => PatchKind::Strategic,
                _ => PatchKind::Merge,
            };
            pipeline::patch(rt, kind, &current, &parse_body(req)?)?
        }
        _ => return Err(ApiError::MethodNotAllowed),
    };
    let replicas = wanted["spec"]["replicas"].as_i64().ok_or_else(|| {
        ApiError::invalid(
            "Scale",
            "autoscaling",
            name,
            "spec.replicas",
            "FieldValueRequired",
            "Required value",
        )
    })?;
    if replicas < 0 {
        return Err(ApiError::invalid(
            "Scale",
            "autoscaling",
            name,
            "spec.replicas",
            "FieldValueInvalid",
            &format!("Invalid value: {replicas}: must be greater than or equal to 0"),
        ));
    }
    let mut change = json!({"spec": {"replicas": replicas}});
    if let Some(rv) = wanted["metadata"]["resourceVersion"]
        .as_str()
        .filter(|rv| *rv != current["metadata"]["resourceVersion"])
    {
        change["metadata"] = json!({"resourceVersion": rv});
    }
    let updated = cluster.patch(rt, ns, name, PatchKind::Merge, &change, None, &write_ctx(req)?)?;
    Ok(json_response(StatusCode::OK, &scale_of(&updated)))
}
