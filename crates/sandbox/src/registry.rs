//! The kinds the sandbox serves: a fixed table of built-in resources plus one entry per established CRD.
//!
//! Discovery reads the table to describe the API, the router to resolve `/apis/GROUP/VERSION/RESOURCE`, the
//! store keys objects by `ResourceType::key()`, and writes look up whether a kind has a status subresource.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use super::error::GroupResource;
use super::patch::MergeSchema;
use super::schema::CrdSchema;

/// What a CRD adds to a resource: per served version its schema and printer columns.
#[derive(Clone, Default)]
pub(crate) struct CustomInfo {
    /// The CRD's name (`tenantpools.sublet.dev`).
    pub crd_name: String,
    /// openAPIV3Schema per served version.
    pub schemas: BTreeMap<String, Value>,
    /// additionalPrinterColumns per served version.
    pub printer_columns: BTreeMap<String, Vec<Value>>,
    /// Compiled schemas (defaults, pruning, validation) per served version.
    pub compiled: BTreeMap<String, Arc<CrdSchema>>,
    /// Merge metadata (list types) per served version, for patches and server-side apply.
    pub merge: BTreeMap<String, MergeSchema>,
}

impl std::fmt::Debug for CustomInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomInfo")
            .field("crd_name", &self.crd_name)
            .finish_non_exhaustive()
    }
}

/// One resource the server serves.
#[derive(Clone, Debug)]
pub(crate) struct ResourceType {
    pub group: String,
    /// The storage version (and the preferred version in discovery).
    pub version: String,
    /// Every served version (the storage version first); objects convert between them by apiVersion alone.
    pub versions: Vec<String>,
    pub resource: String,
    pub kind: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Subresources: "status", "eviction", "binding", "token", "scale", "finalize".
    pub subresources: Vec<&'static str>,
    /// Virtual resources (reviews) only take `create` and are never stored.
    pub create_only: bool,
    pub custom: Option<Arc<CustomInfo>>,
}

impl ResourceType {
    /// The store key: `pods`, `apps/deployments`; events.k8s.io/v1 events share core events' storage.
    pub(crate) fn key(&self) -> String {
        if self.group == "events.k8s.io" && self.resource == "events" {
            return "events".into();
        }
        self.id()
    }

    /// The registry key: group and resource.
    pub(crate) fn id(&self) -> String {
        if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.group, self.resource)
        }
    }

    pub(crate) fn api_version(&self) -> String {
        api_version(&self.group, &self.version)
    }

    pub(crate) fn gr(&self) -> GroupResource {
        GroupResource::new(&self.group, &self.resource)
    }

    pub(crate) fn has_status(&self) -> bool {
        self.subresources.contains(&"status")
    }

    pub(crate) fn verbs(&self) -> Vec<&'static str> {
        if self.create_only {
            return vec!["create"];
        }
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

pub(crate) fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// Built-in resources: (group, version, resource, kind, namespaced, short names, categories, subresources).
type Builtin = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
);

const BUILTINS: &[Builtin] = &[
    (
        "",
        "v1",
        "namespaces",
        "Namespace",
        false,
        &["ns"],
        &[],
        &["status", "finalize"],
    ),
    ("", "v1", "nodes", "Node", false, &["no"], &[], &["status"]),
    (
        "",
        "v1",
        "pods",
        "Pod",
        true,
        &["po"],
        &["all"],
        &["status", "binding", "eviction", "ephemeralcontainers"],
    ),
    ("", "v1", "events", "Event", true, &["ev"], &[], &[]),
    (
        "",
        "v1",
        "serviceaccounts",
        "ServiceAccount",
        true,
        &["sa"],
        &[],
        &["token"],
    ),
    ("", "v1", "secrets", "Secret", true, &[], &[], &[]),
    ("", "v1", "configmaps", "ConfigMap", true, &["cm"], &[], &[]),
    ("", "v1", "services", "Service", true, &["svc"], &["all"], &["status"]),
    ("", "v1", "endpoints", "Endpoints", true, &["ep"], &[], &[]),
    (
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        true,
        &["pvc"],
        &[],
        &["status"],
    ),
    (
        "",
        "v1",
        "resourcequotas",
        "ResourceQuota",
        true,
        &["quota"],
        &[],
        &["status"],
    ),
    ("", "v1", "limitranges", "LimitRange", true, &["limits"], &[], &[]),
    (
        "apps",
        "v1",
        "deployments",
        "Deployment",
        true,
        &["deploy"],
        &["all"],
        &["status", "scale"],
    ),
    (
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        true,
        &["rs"],
        &["all"],
        &["status", "scale"],
    ),
    (
        "apps",
        "v1",
        "statefulsets",
        "StatefulSet",
        true,
        &["sts"],
        &["all"],
        &["status", "scale"],
    ),
    (
        "apps",
        "v1",
        "daemonsets",
        "DaemonSet",
        true,
        &["ds"],
        &["all"],
        &["status"],
    ),
    ("batch", "v1", "jobs", "Job", true, &[], &["all"], &["status"]),
    (
        "batch",
        "v1",
        "cronjobs",
        "CronJob",
        true,
        &["cj"],
        &["all"],
        &["status"],
    ),
    ("events.k8s.io", "v1", "events", "Event", true, &["ev"], &[], &[]),
    ("coordination.k8s.io", "v1", "leases", "Lease", true, &[], &[], &[]),
    (
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        true,
        &["pdb"],
        &[],
        &["status"],
    ),
    (
        "scheduling.k8s.io",
        "v1",
        "priorityclasses",
        "PriorityClass",
        false,
        &["pc"],
        &[],
        &[],
    ),
    (
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
        &["api-extensions"],
        &["status"],
    ),
    ("rbac.authorization.k8s.io", "v1", "roles", "Role", true, &[], &[], &[]),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "ClusterRole",
        false,
        &[],
        &[],
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "RoleBinding",
        true,
        &[],
        &[],
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
        &[],
        &[],
        &[],
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicies",
        "ValidatingAdmissionPolicy",
        false,
        &[],
        &["api-extensions"],
        &["status"],
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicybindings",
        "ValidatingAdmissionPolicyBinding",
        false,
        &[],
        &["api-extensions"],
        &[],
    ),
    (
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "NetworkPolicy",
        true,
        &["netpol"],
        &[],
        &[],
    ),
];

/// Resources that only answer `create` (reviews): (group, version, resource, kind, namespaced).
const VIRTUAL: &[(&str, &str, &str, &str, bool)] = &[
    (
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        false,
    ),
    (
        "authorization.k8s.io",
        "v1",
        "subjectaccessreviews",
        "SubjectAccessReview",
        false,
    ),
    (
        "authorization.k8s.io",
        "v1",
        "selfsubjectrulesreviews",
        "SelfSubjectRulesReview",
        false,
    ),
    ("authentication.k8s.io", "v1", "tokenreviews", "TokenReview", false),
    (
        "authentication.k8s.io",
        "v1",
        "selfsubjectreviews",
        "SelfSubjectReview",
        false,
    ),
];

/// The resources served now; CRDs come and go at run time.
#[derive(Debug)]
pub(crate) struct Registry {
    types: RwLock<BTreeMap<String, Arc<ResourceType>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    pub(crate) fn new() -> Registry {
        let mut types = BTreeMap::new();
        for &(group, version, resource, kind, namespaced, short, cats, subs) in BUILTINS {
            let rt = ResourceType {
                group: group.into(),
                version: version.into(),
                versions: vec![version.into()],
                resource: resource.into(),
                kind: kind.into(),
                singular: kind.to_lowercase(),
                namespaced,
                short_names: short.iter().map(|s| s.to_string()).collect(),
                categories: cats.iter().map(|s| s.to_string()).collect(),
                subresources: subs.to_vec(),
                create_only: false,
                custom: None,
            };
            types.insert(rt.id(), Arc::new(rt));
        }
        for &(group, version, resource, kind, namespaced) in VIRTUAL {
            let rt = ResourceType {
                group: group.into(),
                version: version.into(),
                versions: vec![version.into()],
                resource: resource.into(),
                kind: kind.into(),
                singular: kind.to_lowercase(),
                namespaced,
                short_names: vec![],
                categories: vec![],
                subresources: vec![],
                create_only: true,
                custom: None,
            };
            types.insert(rt.id(), Arc::new(rt));
        }
        Registry {
            types: RwLock::new(types),
        }
    }

    pub(crate) fn all(&self) -> Vec<Arc<ResourceType>> {
        self.types
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The resource at `/apis/GROUP/VERSION/RESOURCE` (or `/api/v1/RESOURCE`), if that version is served.
    pub(crate) fn resolve(&self, group: &str, version: &str, resource: &str) -> Option<Arc<ResourceType>> {
        let key = if group.is_empty() {
            resource.to_string()
        } else {
            format!("{group}/{resource}")
        };
        let types = self.types.read().unwrap_or_else(|e| e.into_inner());
        types
            .get(&key)
            .filter(|rt| rt.versions.iter().any(|v| v == version))
            .cloned()
    }

    pub(crate) fn by_key(&self, key: &str) -> Option<Arc<ResourceType>> {
        self.types.read().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }

    /// The resource of a kind in a group (for owner references and the in-process API).
    pub(crate) fn by_kind(&self, group: &str, kind: &str) -> Option<Arc<ResourceType>> {
        let types = self.types.read().unwrap_or_else(|e| e.into_inner());
        // events exist in two groups with the same kind; prefer the one in the asked group.
        types
            .values()
            .find(|rt| rt.group == group && rt.kind == kind && !rt.create_only)
            .cloned()
    }

    /// Serves (or re-serves with new schemas) the resource a CRD defines.
    pub(crate) fn install(&self, rt: ResourceType) {
        let mut types = self.types.write().unwrap_or_else(|e| e.into_inner());
        types.insert(rt.id(), Arc::new(rt));
    }

    pub(crate) fn remove(&self, key: &str) {
        self.types.write().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    /// Groups and their versions, core group first, in the order discovery lists them.
    pub(crate) fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for rt in self.all() {
            match groups.iter_mut().find(|(g, _)| *g == rt.group) {
                Some((_, versions)) => {
                    for v in &rt.versions {
                        if !versions.contains(v) {
                            versions.push(v.clone());
                        }
                    }
                }
                None => groups.push((rt.group.clone(), rt.versions.clone())),
            }
        }
        groups.sort_by_key(|(g, _)| (!g.is_empty(), g.contains('.') && !g.ends_with(".k8s.io"), g.clone()));
        groups
    }

    /// Resources served in one group version.
    pub(crate) fn in_group_version(&self, group: &str, version: &str) -> Vec<Arc<ResourceType>> {
        self.all()
            .into_iter()
            .filter(|rt| rt.group == group && rt.versions.iter().any(|v| v == version))
            .collect()
    }
}
