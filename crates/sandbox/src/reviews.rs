//! Requests answered, not stored: TokenRequest (`serviceaccounts/NAME/token`), SelfSubjectAccessReview
//! (`kubectl auth can-i`), SubjectAccessReview, SelfSubjectReview (`kubectl auth whoami`), TokenReview.

use serde_json::{Value, json};

use super::auth::user_info;
use super::authorization;
use super::error::{ApiError, GroupResource};
use super::meta;
use super::rbac::Attributes;
use super::registry::ResourceType;
use super::server::Server;
use super::verbs::Caller;

pub(crate) fn handle(server: &Server, rt: &ResourceType, caller: &Caller, body: Value) -> Result<Value, ApiError> {
    let mut answer = body.clone();
    answer["apiVersion"] = json!(rt.api_version());
    answer["kind"] = json!(rt.kind);
    if !answer["metadata"].is_object() {
        answer["metadata"] = json!({});
    }
    answer["metadata"]["creationTimestamp"] = Value::Null;
    match rt.resource.as_str() {
        "selfsubjectaccessreviews" => {
            let (allowed, reason) = check(server, caller, &body["spec"]);
            answer["status"] = json!({"allowed": allowed, "reason": reason});
        }
        "subjectaccessreviews" => {
            let spec = &body["spec"];
            let subject = Caller {
                name: spec["user"].as_str().unwrap_or("").to_string(),
                groups: spec["groups"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|g| g.as_str().map(String::from)).collect())
                    .unwrap_or_default(),
            };
            let (allowed, reason) = check(server, &subject, spec);
            answer["status"] = json!({"allowed": allowed, "reason": reason});
        }
        "selfsubjectreviews" => answer["status"] = json!({"userInfo": user_info(caller)}),
        "selfsubjectrulesreviews" => {
            answer["status"] = json!({"resourceRules": [], "nonResourceRules": [], "incomplete": true, "evaluationError": "rules reviews are not supported by the sandbox"});
        }
        "tokenreviews" => {
            let token = body["spec"]["token"].as_str().unwrap_or("");
            answer["status"] = match server.auth.lookup(token) {
                Some(c) => {
                    json!({"authenticated": true, "user": user_info(&c), "audiences": body["spec"]["audiences"]})
                }
                None => json!({"authenticated": false, "error": "invalid bearer token"}),
            };
        }
        _ => return Err(ApiError::MethodNotAllowed),
    }
    Ok(answer)
}

/// Evaluates a review spec's resourceAttributes or nonResourceAttributes for `subject`.
fn check(server: &Server, subject: &Caller, spec: &Value) -> (bool, String) {
    if !server.auth.rbac {
        return (true, String::new());
    }
    let r = &spec["resourceAttributes"];
    let n = &spec["nonResourceAttributes"];
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let attrs = if r.is_object() {
        Attributes {
            verb: s(&r["verb"]),
            api_group: s(&r["group"]),
            resource: s(&r["resource"]),
            subresource: s(&r["subresource"]),
            namespace: r["namespace"].as_str().filter(|x| !x.is_empty()).map(String::from),
            name: r["name"].as_str().filter(|x| !x.is_empty()).map(String::from),
            path: None,
        }
    } else {
        Attributes {
            verb: s(&n["verb"]),
            path: Some(s(&n["path"])),
            ..Default::default()
        }
    };
    let allowed = authorization::allowed(server, subject, &attrs);
    (allowed, if allowed { "RBAC: allowed".into() } else { String::new() })
}

/// `POST serviceaccounts/NAME/token`: a token that authenticates as the service account.
pub(crate) fn token_request(server: &Server, ns: &str, name: &str, body: &Value) -> Result<Value, ApiError> {
    if server.cluster.store.get("serviceaccounts", ns, name).is_none() {
        return Err(ApiError::not_found(&GroupResource::new("", "serviceaccounts"), name));
    }
    let seconds = body["spec"]["expirationSeconds"].as_i64().unwrap_or(3600).max(600);
    let token = server
        .auth
        .issue(Caller::service_account(ns, name), &server.cluster.ids);
    let expires = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(seconds);
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
        "spec": {"audiences": body["spec"]["audiences"].as_array().cloned().unwrap_or_default(), "expirationSeconds": seconds, "boundObjectRef": body["spec"]["boundObjectRef"]},
        "status": {"token": token, "expirationTimestamp": meta::format_time(expires)},
    }))
}
