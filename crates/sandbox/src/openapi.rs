//! OpenAPI v3, as much as kubectl reads: the root (`/openapi/v3`) naming one document per group version, and
//! per group version the PATCH operation of each resource with its query parameters. kubectl checks there
//! that the server takes `fieldValidation`, and then leaves validation to the server instead of downloading
//! schemas to validate on the client. Schemas of kinds are not served (`kubectl explain` does not work).

use serde_json::{Value, json};

use super::registry::Registry;

const PARAMS: [&str; 4] = ["dryRun", "fieldManager", "fieldValidation", "force"];

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The document of one group version (`api/v1`, `apis/GROUP/VERSION`), if served.
pub(crate) fn group_version(registry: &Registry, path: &str) -> Option<Value> {
    let (group, version) = match path.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => (String::new(), v.to_string()),
        ["apis", g, v] => (g.to_string(), v.to_string()),
        _ => return None,
    };
    let types = registry.in_group_version(&group, &version);
    if types.is_empty() {
        return None;
    }
    let parameters: Vec<Value> = PARAMS
        .iter()
        .map(
            |p| json!({"name": p, "in": "query", "description": "", "schema": {"type": "string", "uniqueItems": true}}),
        )
        .collect();
    let mut paths = serde_json::Map::new();
    for rt in types.iter().filter(|rt| !rt.create_only) {
        let prefix = format!("/{}", gv_path(&group, &version));
        let path = if rt.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", rt.resource)
        } else {
            format!("{prefix}/{}/{{name}}", rt.resource)
        };
        let gvk = json!({"group": group, "version": version, "kind": rt.kind});
        paths.insert(
            path,
            json!({
                "patch": {"operationId": format!("patch{}", rt.kind), "parameters": parameters, "x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk, "responses": {"200": {"description": "OK"}}},
                "put": {"operationId": format!("replace{}", rt.kind), "parameters": parameters[..3], "x-kubernetes-action": "put", "x-kubernetes-group-version-kind": gvk, "responses": {"200": {"description": "OK"}}},
            }),
        );
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.35.0"}, "paths": paths, "components": {"schemas": {}}}),
    )
}

/// `/openapi/v3`: where each group version's document is, with a hash that changes with its content.
pub(crate) fn root(registry: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    for (group, versions) in registry.groups() {
        for version in versions {
            let path = gv_path(&group, &version);
            let hash = group_version(registry, &path)
                .map(|doc| fnv(doc.to_string().as_bytes()))
                .unwrap_or(0);
            paths.insert(
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash:016X}")}),
            );
        }
    }
    json!({"paths": paths})
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
