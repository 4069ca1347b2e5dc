//! The kubeconfig that points kubectl and kube-rs at a running sandbox.

use serde_json::json;

/// A kubeconfig with one cluster, one admin user (bearer token) and one context, namespace `default`.
pub fn render(url: &str, token: &str) -> String {
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sandbox", "cluster": {"server": url}}],
        "users": [{"name": "sandbox-admin", "user": {"token": token}}],
        "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox", "user": "sandbox-admin", "namespace": "default"}}],
        "current-context": "sandbox",
        "preferences": {},
    });
    serde_yaml_ng::to_string(&config).unwrap_or_default()
}
