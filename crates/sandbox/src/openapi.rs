//! OpenAPI v3, as much as kubectl reads: the root (`/openapi/v3`) naming one document per group version, and
//! per group version the PATCH operation of each resource with its query parameters, and the schema of each
//! kind. kubectl checks the parameters to see that the server takes `fieldValidation` (and then leaves
//! validation to the server); `kubectl explain` finds a kind's schema by its `x-kubernetes-group-version-kind`.
//!
//! ```text
//!   custom resources ──CRD openAPIV3Schema per served version──▶ components.schemas["dev.sublet.v1alpha1.TenantPool"]
//!   built-ins ─────────k8s-openapi's schemas (schemars)────────▶ components.schemas["io.k8s.api.core.v1.Pod"], ...
//!                                                                   + every schema they refer to ($ref)
//! ```
//!
//! No PATCH operation names a request body, so kubectl never takes a kind here for strategic merge patches.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use k8s_openapi::api;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

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
    let mut schemas = builtin_schemas(&group, &version).cloned().unwrap_or_default();
    for rt in &types {
        let Some(schema) = rt.custom.as_ref().and_then(|c| c.schemas.get(&version)) else {
            continue;
        };
        let mut schema = schema.clone();
        if let Some(obj) = schema.as_object_mut() {
            obj.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": group, "version": version, "kind": rt.kind}]),
            );
            // As the API server publishes a custom resource: its metadata is the ObjectMeta every kind has.
            if let Some(props) = obj.get_mut("properties").and_then(Value::as_object_mut) {
                props.insert("metadata".into(), json!({
                    "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
                    "allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}],
                }));
            }
        }
        schemas.extend(object_meta().clone());
        schemas.insert(custom_schema_name(&group, &version, &rt.kind), schema);
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.35.0"}, "paths": paths, "components": {"schemas": schemas}}),
    )
}

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// A custom kind's schema name, as the API server names it: the group reversed, the version, the kind
/// (`dev.sublet.v1alpha1.TenantPool`).
fn custom_schema_name(group: &str, version: &str, kind: &str) -> String {
    let mut parts: Vec<&str> = group.split('.').collect();
    parts.reverse();
    format!("{}.{version}.{kind}", parts.join("."))
}

fn generator() -> SchemaGenerator {
    SchemaSettings::openapi3()
        .with(|s| s.meta_schema = None)
        .into_generator()
}

/// ObjectMeta and the schemas it refers to.
fn object_meta() -> &'static Map<String, Value> {
    static META: OnceLock<Map<String, Value>> = OnceLock::new();
    META.get_or_init(|| {
        let mut generator = generator();
        generator.subschema_for::<ObjectMeta>();
        generator.take_definitions(true)
    })
}

/// Per built-in group version: the schemas of its kinds (each with its `x-kubernetes-group-version-kind`)
/// and of everything they refer to. Built once, on first use.
fn builtin_schemas(group: &str, version: &str) -> Option<&'static Map<String, Value>> {
    static ALL: OnceLock<BTreeMap<(String, String), Map<String, Value>>> = OnceLock::new();
    ALL.get_or_init(|| {
        /// Per group version: the generator that collects the schemas, and each kind's schema name.
        type Collecting = (SchemaGenerator, Vec<(String, &'static str)>);
        let mut by_gv: BTreeMap<(String, String), Collecting> = BTreeMap::new();
        macro_rules! kinds {
            ($($group:literal $version:literal $kind:literal => $ty:ty),* $(,)?) => {$(
                let (g, names) = by_gv
                    .entry(($group.to_string(), $version.to_string()))
                    .or_insert_with(|| (generator(), Vec::new()));
                let reference = g.subschema_for::<$ty>();
                let name = reference
                    .get("$ref")
                    .and_then(Value::as_str)
                    .and_then(|r| r.rsplit('/').next())
                    .expect("a built-in kind is a named schema")
                    .to_string();
                names.push((name, $kind));
            )*};
        }
        kinds! {
            "" "v1" "Namespace" => api::core::v1::Namespace,
            "" "v1" "Node" => api::core::v1::Node,
            "" "v1" "Pod" => api::core::v1::Pod,
            "" "v1" "Event" => api::core::v1::Event,
            "" "v1" "ServiceAccount" => api::core::v1::ServiceAccount,
            "" "v1" "Secret" => api::core::v1::Secret,
            "" "v1" "ConfigMap" => api::core::v1::ConfigMap,
            "" "v1" "Service" => api::core::v1::Service,
            "" "v1" "Endpoints" => api::core::v1::Endpoints,
            "" "v1" "PersistentVolumeClaim" => api::core::v1::PersistentVolumeClaim,
            "" "v1" "ResourceQuota" => api::core::v1::ResourceQuota,
            "" "v1" "LimitRange" => api::core::v1::LimitRange,
            "apps" "v1" "Deployment" => api::apps::v1::Deployment,
            "apps" "v1" "ReplicaSet" => api::apps::v1::ReplicaSet,
            "apps" "v1" "StatefulSet" => api::apps::v1::StatefulSet,
            "apps" "v1" "DaemonSet" => api::apps::v1::DaemonSet,
            "batch" "v1" "Job" => api::batch::v1::Job,
            "batch" "v1" "CronJob" => api::batch::v1::CronJob,
            "events.k8s.io" "v1" "Event" => api::events::v1::Event,
            "coordination.k8s.io" "v1" "Lease" => api::coordination::v1::Lease,
            "policy" "v1" "PodDisruptionBudget" => api::policy::v1::PodDisruptionBudget,
            "scheduling.k8s.io" "v1" "PriorityClass" => api::scheduling::v1::PriorityClass,
            "apiextensions.k8s.io" "v1" "CustomResourceDefinition" =>
                k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
            "rbac.authorization.k8s.io" "v1" "Role" => api::rbac::v1::Role,
            "rbac.authorization.k8s.io" "v1" "ClusterRole" => api::rbac::v1::ClusterRole,
            "rbac.authorization.k8s.io" "v1" "RoleBinding" => api::rbac::v1::RoleBinding,
            "rbac.authorization.k8s.io" "v1" "ClusterRoleBinding" => api::rbac::v1::ClusterRoleBinding,
            "admissionregistration.k8s.io" "v1" "ValidatingAdmissionPolicy" =>
                api::admissionregistration::v1::ValidatingAdmissionPolicy,
            "admissionregistration.k8s.io" "v1" "ValidatingAdmissionPolicyBinding" =>
                api::admissionregistration::v1::ValidatingAdmissionPolicyBinding,
            "networking.k8s.io" "v1" "NetworkPolicy" => api::networking::v1::NetworkPolicy,
            "authorization.k8s.io" "v1" "SelfSubjectAccessReview" => api::authorization::v1::SelfSubjectAccessReview,
            "authorization.k8s.io" "v1" "SubjectAccessReview" => api::authorization::v1::SubjectAccessReview,
            "authorization.k8s.io" "v1" "SelfSubjectRulesReview" => api::authorization::v1::SelfSubjectRulesReview,
            "authentication.k8s.io" "v1" "TokenReview" => api::authentication::v1::TokenReview,
            "authentication.k8s.io" "v1" "SelfSubjectReview" => api::authentication::v1::SelfSubjectReview,
        }
        by_gv
            .into_iter()
            .map(|((group, version), (mut generator, names))| {
                let mut schemas = generator.take_definitions(true);
                for (name, kind) in names {
                    if let Some(obj) = schemas.get_mut(&name).and_then(Value::as_object_mut) {
                        obj.insert(
                            "x-kubernetes-group-version-kind".into(),
                            json!([{"group": group, "version": version, "kind": kind}]),
                        );
                    }
                }
                ((group, version), schemas)
            })
            .collect()
    })
    .get(&(group.to_string(), version.to_string()))
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
