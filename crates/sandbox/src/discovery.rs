//! Discovery documents: `/version`, `/api`, `/apis`, `/apis/GROUP`, `/apis/GROUP/VERSION`, in the legacy
//! form and, when the client asks for it, as aggregated discovery (`apidiscovery.k8s.io/v2`), which
//! kubectl 1.35 prefers: one request for all groups instead of one per group version.

use serde_json::{Value, json};

use super::registry::{Registry, ResourceType, api_version};

/// The media type of aggregated discovery v2.
pub(crate) const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether an Accept header asks for aggregated discovery v2.
pub(crate) fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let p: String = part.chars().filter(|c| !c.is_whitespace()).collect();
        p.contains("g=apidiscovery.k8s.io") && p.contains("v=v2;") && p.contains("as=APIGroupDiscoveryList")
            || p.contains("g=apidiscovery.k8s.io") && p.ends_with("v=v2") && p.contains("as=APIGroupDiscoveryList")
    })
}

pub(crate) fn version() -> Value {
    json!({
        "major": "1", "minor": "35",
        "emulationMajor": "1", "emulationMinor": "35",
        "minCompatibilityMajor": "1", "minCompatibilityMinor": "34",
        "gitVersion": "v1.35.0", "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2025-12-17T00:00:00Z", "goVersion": "go1.25.5", "compiler": "gc", "platform": "linux/amd64",
    })
}

/// `/api` legacy: the core group's versions.
pub(crate) fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_entry(group: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": api_version(group, v), "version": v}))
        .collect();
    json!({"name": group, "versions": versions, "preferredVersion": versions[0]})
}

/// `/apis` legacy.
pub(crate) fn group_list(registry: &Registry) -> Value {
    let groups: Vec<Value> = registry
        .groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| group_entry(&g, &vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/GROUP` legacy.
pub(crate) fn group(registry: &Registry, name: &str) -> Option<Value> {
    let (g, vs) = registry
        .groups()
        .into_iter()
        .find(|(g, _)| g == name && !g.is_empty())?;
    let mut entry = group_entry(&g, &vs);
    entry["kind"] = json!("APIGroup");
    entry["apiVersion"] = json!("v1");
    Some(entry)
}

/// (subresource, kind, group, version, verbs) of each subresource a resource has.
fn subresources(rt: &ResourceType) -> Vec<(&'static str, String, String, String, Vec<&'static str>)> {
    let own = |verbs: Vec<&'static str>| (rt.kind.clone(), rt.group.clone(), rt.version.clone(), verbs);
    rt.subresources
        .iter()
        .map(|&sub| {
            let (kind, group, version, verbs) = match sub {
                "status" | "ephemeralcontainers" => own(vec!["get", "patch", "update"]),
                "finalize" => own(vec!["update"]),
                "eviction" => ("Eviction".into(), "policy".into(), "v1".into(), vec!["create"]),
                "binding" => ("Binding".into(), String::new(), "v1".into(), vec!["create"]),
                "token" => (
                    "TokenRequest".into(),
                    "authentication.k8s.io".into(),
                    "v1".into(),
                    vec!["create"],
                ),
                "scale" => (
                    "Scale".into(),
                    "autoscaling".into(),
                    "v1".into(),
                    vec!["get", "patch", "update"],
                ),
                _ => own(vec!["get"]),
            };
            (sub, kind, group, version, verbs)
        })
        .collect()
}

/// `/api/v1` or `/apis/GROUP/VERSION` legacy.
pub(crate) fn resource_list(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let types = registry.in_group_version(group, version);
    if types.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for rt in &types {
        let mut entry = json!({
            "name": rt.resource, "singularName": rt.singular, "namespaced": rt.namespaced,
            "kind": rt.kind, "verbs": rt.verbs(),
        });
        if !rt.short_names.is_empty() {
            entry["shortNames"] = json!(rt.short_names);
        }
        if !rt.categories.is_empty() {
            entry["categories"] = json!(rt.categories);
        }
        resources.push(entry);
        for (sub, kind, sgroup, sversion, verbs) in subresources(rt) {
            let mut e = json!({
                "name": format!("{}/{sub}", rt.resource), "singularName": "", "namespaced": rt.namespaced,
                "kind": kind, "verbs": verbs,
            });
            if sgroup != rt.group || sversion != version {
                e["group"] = json!(sgroup);
                e["version"] = json!(sversion);
            }
            resources.push(e);
        }
    }
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": api_version(group, version), "resources": resources}),
    )
}

/// Aggregated discovery for the core group (`core == true`, answering `/api`) or all named groups (`/apis`).
pub(crate) fn aggregated(registry: &Registry, core: bool) -> Value {
    let mut items = Vec::new();
    for (group, versions) in registry.groups() {
        if group.is_empty() != core {
            continue;
        }
        let versions: Vec<Value> = versions
            .iter()
            .map(|version| {
                let resources: Vec<Value> = registry
                    .in_group_version(&group, version)
                    .iter()
                    .map(|rt| {
                        let mut entry = json!({
                            "resource": rt.resource,
                            "responseKind": {"group": group, "version": version, "kind": rt.kind},
                            "scope": if rt.namespaced { "Namespaced" } else { "Cluster" },
                            "singularResource": rt.singular,
                            "verbs": rt.verbs(),
                        });
                        if !rt.short_names.is_empty() {
                            entry["shortNames"] = json!(rt.short_names);
                        }
                        if !rt.categories.is_empty() {
                            entry["categories"] = json!(rt.categories);
                        }
                        let subs: Vec<Value> = subresources(rt)
                            .into_iter()
                            .map(|(sub, kind, sg, sv, verbs)| {
                                json!({"subresource": sub, "responseKind": {"group": sg, "version": sv, "kind": kind}, "verbs": verbs})
                            })
                            .collect();
                        if !subs.is_empty() {
                            entry["subresources"] = json!(subs);
                        }
                        entry
                    })
                    .collect();
                json!({"version": version, "resources": resources, "freshness": "Current"})
            })
            .collect();
        items.push(json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions}));
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_kubectl_accept_header() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert!(wants_aggregated(kubectl));
        assert!(!wants_aggregated("application/json, */*"));
    }

    #[test]
    fn pods_list_their_subresources() {
        let registry = Registry::new();
        let list = resource_list(&registry, "", "v1").unwrap();
        let names: Vec<&str> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"pods/eviction") && names.contains(&"nodes/status"));
        let agg = aggregated(&registry, false);
        assert!(
            agg["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["metadata"]["name"] == "policy")
        );
    }
}
