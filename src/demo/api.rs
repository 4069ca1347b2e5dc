//! The API the demo's simulated actors (workload, tenants, kubelet, scheduler, checker) write through: the
//! sandbox in process, or a real API server over HTTP (`sublet demo --cluster`).
//!
//! ```text
//!   DemoApi::Local(LocalApi)     ─▶ the sandbox's write path, no HTTP
//!   DemoApi::Remote { client }   ─▶ /api/v1/..., /apis/GROUP/VERSION/... with the same verbs and field manager
//! ```
//! Both take the same arguments as `LocalApi` (`api_version`, plural `resource`, namespace, name) and answer
//! plain JSON, so the actors do not know which server they act on.

use http::{Method, Request};
use serde_json::Value;
use sublet_sandbox::{DeleteOpts, LocalApi, PatchKind};

/// A refused or failed call: the HTTP status code (0 when none came back) and the server's message.
#[derive(Debug, thiserror::Error)]
#[error("{message} ({code})")]
pub struct CallError {
    pub code: u16,
    pub message: String,
}

impl From<sublet_sandbox::ApiError> for CallError {
    fn from(e: sublet_sandbox::ApiError) -> Self {
        CallError {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

impl From<kube::Error> for CallError {
    fn from(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) => CallError {
                code: s.code,
                message: s.message,
            },
            other => CallError {
                code: 0,
                message: other.to_string(),
            },
        }
    }
}

/// Where the demo's actors act.
#[derive(Clone)]
pub enum DemoApi {
    Local(LocalApi),
    Remote { client: kube::Client, manager: String },
}

impl From<LocalApi> for DemoApi {
    fn from(local: LocalApi) -> Self {
        DemoApi::Local(local)
    }
}

/// `/api/v1` or `/apis/GROUP/VERSION`, then the namespace, the resource and the name when given.
fn path(api_version: &str, resource: &str, ns: Option<&str>, name: Option<&str>) -> String {
    let mut p = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    if let Some(ns) = ns {
        p.push_str(&format!("/namespaces/{ns}"));
    }
    p.push('/');
    p.push_str(resource);
    if let Some(name) = name {
        p.push('/');
        p.push_str(name);
    }
    p
}

fn query(pairs: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        q.append_pair(k, v);
    }
    let q = q.finish();
    if q.is_empty() { q } else { format!("?{q}") }
}

impl DemoApi {
    /// The same API writing under another field manager.
    pub fn as_manager(&self, manager: &str) -> DemoApi {
        match self {
            DemoApi::Local(l) => DemoApi::Local(l.as_manager(manager)),
            DemoApi::Remote { client, .. } => DemoApi::Remote {
                client: client.clone(),
                manager: manager.to_string(),
            },
        }
    }

    /// Whether this is a real API server (kube-scheduler binds pods there, not the demo).
    pub fn is_remote(&self) -> bool {
        matches!(self, DemoApi::Remote { .. })
    }

    async fn call(
        client: &kube::Client,
        method: Method,
        uri: String,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Value, CallError> {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::CONTENT_TYPE, content_type)
            .body(body)
            .map_err(|e| CallError {
                code: 0,
                message: e.to_string(),
            })?;
        Ok(client.request::<Value>(request).await?)
    }

    pub async fn get(
        &self,
        api_version: &str,
        resource: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, CallError> {
        match self {
            DemoApi::Local(l) => Ok(l.get(api_version, resource, ns, name)?),
            DemoApi::Remote { client, .. } => {
                let uri = path(api_version, resource, ns, Some(name));
                Self::call(client, Method::GET, uri, "application/json", Vec::new()).await
            }
        }
    }

    /// Lists with label and field selectors ("" for none); `ns` None lists every namespace.
    pub async fn list(
        &self,
        api_version: &str,
        resource: &str,
        ns: Option<&str>,
        labels: &str,
        fields: &str,
    ) -> Result<Vec<Value>, CallError> {
        match self {
            DemoApi::Local(l) => Ok(l.list(api_version, resource, ns, labels, fields)?),
            DemoApi::Remote { client, .. } => {
                let uri = path(api_version, resource, ns, None)
                    + &query(&[("labelSelector", labels), ("fieldSelector", fields)]);
                let list = Self::call(client, Method::GET, uri, "application/json", Vec::new()).await?;
                Ok(match list {
                    Value::Object(mut m) => match m.remove("items") {
                        Some(Value::Array(items)) => items,
                        _ => Vec::new(),
                    },
                    _ => Vec::new(),
                })
            }
        }
    }

    pub async fn create(
        &self,
        api_version: &str,
        resource: &str,
        ns: Option<&str>,
        obj: Value,
    ) -> Result<Value, CallError> {
        match self {
            DemoApi::Local(l) => Ok(l.create(api_version, resource, ns, obj)?),
            DemoApi::Remote { client, manager } => {
                let uri = path(api_version, resource, ns, None) + &query(&[("fieldManager", manager)]);
                let body = serde_json::to_vec(&obj).expect("JSON encodes");
                Self::call(client, Method::POST, uri, "application/json", body).await
            }
        }
    }

    /// Patches an object; `sub` is `Some("status")` for the status subresource.
    #[allow(clippy::too_many_arguments)]
    pub async fn patch(
        &self,
        api_version: &str,
        resource: &str,
        ns: Option<&str>,
        name: &str,
        kind: PatchKind,
        patch: &Value,
        sub: Option<&str>,
    ) -> Result<Value, CallError> {
        match self {
            DemoApi::Local(l) => Ok(l.patch(api_version, resource, ns, name, kind, patch, sub)?),
            DemoApi::Remote { client, manager } => {
                let mut uri = path(api_version, resource, ns, Some(name));
                if let Some(sub) = sub {
                    uri = format!("{uri}/{sub}");
                }
                let (content_type, force) = match kind {
                    PatchKind::Json => ("application/json-patch+json", ""),
                    PatchKind::Merge => ("application/merge-patch+json", ""),
                    PatchKind::Strategic => ("application/strategic-merge-patch+json", ""),
                    PatchKind::Apply { force } => ("application/apply-patch+yaml", if force { "true" } else { "" }),
                };
                uri += &query(&[("fieldManager", manager), ("force", force)]);
                let body = serde_json::to_vec(patch).expect("JSON encodes");
                Self::call(client, Method::PATCH, uri, content_type, body).await
            }
        }
    }

    pub async fn delete(
        &self,
        api_version: &str,
        resource: &str,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Value, CallError> {
        match self {
            DemoApi::Local(l) => Ok(l.delete(api_version, resource, ns, name, opts)?),
            DemoApi::Remote { client, .. } => {
                let mut body = serde_json::json!({"kind": "DeleteOptions", "apiVersion": "v1"});
                if let Some(g) = opts.grace_period {
                    body["gracePeriodSeconds"] = g.into();
                }
                if let Some(p) = &opts.propagation {
                    body["propagationPolicy"] = p.clone().into();
                }
                if opts.uid.is_some() || opts.resource_version.is_some() {
                    body["preconditions"] =
                        serde_json::json!({"uid": opts.uid, "resourceVersion": opts.resource_version});
                }
                let uri = path(api_version, resource, ns, Some(name));
                let body = serde_json::to_vec(&body).expect("JSON encodes");
                Self::call(client, Method::DELETE, uri, "application/json", body).await
            }
        }
    }

    /// Binds a pod to a node, as a scheduler does (the demo's own scheduler, on the sandbox only).
    pub async fn bind(&self, ns: &str, name: &str, node: &str) -> Result<Value, CallError> {
        match self {
            DemoApi::Local(l) => Ok(l.bind(ns, name, node)?),
            DemoApi::Remote { client, manager } => {
                let binding = serde_json::json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
                let uri = format!("{}/binding", path("v1", "pods", Some(ns), Some(name)))
                    + &query(&[("fieldManager", manager)]);
                let body = serde_json::to_vec(&binding).expect("JSON encodes");
                Self::call(client, Method::POST, uri, "application/json", body).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_api_layout() {
        assert_eq!(
            path("v1", "pods", Some("ml"), Some("p")),
            "/api/v1/namespaces/ml/pods/p"
        );
        assert_eq!(path("v1", "nodes", None, None), "/api/v1/nodes");
        assert_eq!(
            path("sublet.dev/v1alpha1", "gpuleases", Some("acme"), None),
            "/apis/sublet.dev/v1alpha1/namespaces/acme/gpuleases"
        );
        assert_eq!(
            query(&[("labelSelector", "a=b,c"), ("fieldSelector", "")]),
            "?labelSelector=a%3Db%2Cc"
        );
        assert_eq!(query(&[("force", "")]), "");
    }
}
