//! Merge metadata: how each list and map of a kind merges.
//!
//! ```text
//!   builtin(group, kind) ── table of paths below ──┐
//!                                                  ├──▶ MergeSchema (a tree of Nodes) ──▶ strategic / managed
//!   from_openapi(CRD openAPIV3Schema) ── walk ─────┘
//! ```
//!
//! The real API server reads this from Go struct tags (`patchStrategy`, `patchMergeKey`) for strategic merge
//! and from `+listType`/`+listMapKey`/`+mapType` markers for server-side apply. For the kinds the sandbox
//! serves the two agree closely enough that one table serves both; where they differ (strategic merge
//! matches items by one key), the strategic code uses the first key of [`ListType::Map`].

use std::collections::BTreeMap;

use serde_json::Value;

/// How a list or map merges, from strategic-merge metadata (built-in kinds) or x-kubernetes-* extensions (CRDs).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ListType {
    /// Replaced whole; owned whole by one manager.
    Atomic,
    /// Scalar items, unique, merged by value.
    Set,
    /// Object items merged by the values of these key fields.
    Map(Vec<String>),
}

/// One node of the schema tree: what is known about the value at one path.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Node {
    fields: BTreeMap<String, Node>,
    /// Applies to every field of a map without a named entry (CRD `additionalProperties`).
    any_field: Option<Box<Node>>,
    items: Option<Box<Node>>,
    list: Option<ListType>,
    /// A map or struct replaced and owned whole (`x-kubernetes-map-type: atomic`).
    atomic: bool,
}

static DEFAULT_NODE: Node = Node {
    fields: BTreeMap::new(),
    any_field: None,
    items: None,
    list: None,
    atomic: false,
};

impl Node {
    pub(crate) fn field(&self, name: &str) -> &Node {
        self.fields
            .get(name)
            .or(self.any_field.as_deref())
            .unwrap_or(&DEFAULT_NODE)
    }

    pub(crate) fn item(&self) -> &Node {
        self.items.as_deref().unwrap_or(&DEFAULT_NODE)
    }

    /// Lists nobody described are atomic, as for the real server's deduced schema.
    pub(crate) fn list_type(&self) -> &ListType {
        static ATOMIC: ListType = ListType::Atomic;
        self.list.as_ref().unwrap_or(&ATOMIC)
    }

    pub(crate) fn is_atomic_map(&self) -> bool {
        self.atomic
    }

    fn at_path(&mut self, path: &str) -> &mut Node {
        let mut node = self;
        for segment in path.split('.') {
            let (name, lists) = match segment.find("[]") {
                Some(i) => (&segment[..i], segment[i..].matches("[]").count()),
                None => (segment, 0),
            };
            node = if name == "*" {
                node.any_field.get_or_insert_with(Box::default)
            } else {
                node.fields.entry(name.to_string()).or_default()
            };
            for _ in 0..lists {
                node = node.items.get_or_insert_with(Box::default);
            }
        }
        node
    }
}

/// Merge metadata of one kind: which lists are sets / maps keyed by which fields / atomic, which maps and
/// structs are atomic. Paths are field names from the object root; list items are written `[]`,
/// e.g. "spec.containers", "spec.containers[].ports", "metadata.ownerReferences".
#[derive(Clone, Debug, Default)]
pub struct MergeSchema {
    root: Node,
}

impl MergeSchema {
    pub(crate) fn root(&self) -> &Node {
        &self.root
    }

    /// Declares how the list at `path` merges (`*` stands for every field of a map).
    pub(crate) fn set_list(&mut self, path: &str, list: ListType) -> &mut Self {
        self.root.at_path(path).list = Some(list);
        self
    }

    /// Declares the map or struct at `path` atomic: replaced and owned whole.
    pub(crate) fn set_atomic_map(&mut self, path: &str) -> &mut Self {
        self.root.at_path(path).atomic = true;
        self
    }

    fn map(&mut self, path: &str, keys: &[&str]) -> &mut Self {
        self.set_list(path, ListType::Map(keys.iter().map(|k| k.to_string()).collect()))
    }

    fn with_metadata(mut self) -> Self {
        self.set_list("metadata.finalizers", ListType::Set)
            .map("metadata.ownerReferences", &["uid"])
            .set_atomic_map("metadata.ownerReferences[]")
            .set_list("metadata.managedFields", ListType::Atomic);
        self
    }

    /// The lists of a pod spec at `prefix` (Pod `spec`, a workload's `spec.template.spec`).
    fn pod_spec(&mut self, prefix: &str) -> &mut Self {
        for containers in ["containers", "initContainers", "ephemeralContainers"] {
            let c = format!("{prefix}.{containers}");
            self.map(&c, &["name"])
                .map(&format!("{c}[].ports"), &["containerPort", "protocol"])
                .map(&format!("{c}[].env"), &["name"])
                .map(&format!("{c}[].volumeMounts"), &["mountPath"])
                .map(&format!("{c}[].volumeDevices"), &["devicePath"]);
        }
        self.map(&format!("{prefix}.volumes"), &["name"])
            .map(&format!("{prefix}.imagePullSecrets"), &["name"])
            .map(&format!("{prefix}.hostAliases"), &["ip"])
            .map(
                &format!("{prefix}.topologySpreadConstraints"),
                &["topologyKey", "whenUnsatisfiable"],
            )
            .map(&format!("{prefix}.schedulingGates"), &["name"])
            .map(&format!("{prefix}.resourceClaims"), &["name"])
            .set_atomic_map(&format!("{prefix}.topologySpreadConstraints[].labelSelector"))
            .set_atomic_map(&format!(
                "{prefix}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
            ))
            .set_list(&format!("{prefix}.tolerations"), ListType::Atomic)
    }

    /// The merge metadata of a built-in kind (group "" for core), from the table below. Lists the table does
    /// not name are atomic, maps and structs are merged field by field.
    pub fn builtin(group: &str, kind: &str) -> MergeSchema {
        let mut s = MergeSchema::default().with_metadata();
        match (group, kind) {
            ("", "Pod") => {
                s.pod_spec("spec")
                    .map("status.conditions", &["type"])
                    .map("status.podIPs", &["ip"])
                    .map("status.hostIPs", &["ip"]);
            }
            ("", "PodTemplate") => {
                s.pod_spec("template.spec");
            }
            ("", "ReplicationController") => {
                s.pod_spec("spec.template.spec").map("status.conditions", &["type"]);
            }
            // Label selectors are atomic structs for server-side apply.
            ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") | ("batch", "Job") => {
                s.pod_spec("spec.template.spec")
                    .map("status.conditions", &["type"])
                    .set_atomic_map("spec.selector");
            }
            ("batch", "CronJob") => {
                s.pod_spec("spec.jobTemplate.spec.template.spec");
            }
            ("", "Node") => {
                s.set_list("spec.taints", ListType::Atomic)
                    .set_list("spec.podCIDRs", ListType::Set)
                    .map("status.conditions", &["type"])
                    .map("status.addresses", &["type"]);
            }
            ("", "Service") => {
                s.map("spec.ports", &["port", "protocol"])
                    .set_atomic_map("spec.selector")
                    .map("status.conditions", &["type"]);
            }
            ("", "Event") | ("events.k8s.io", "Event") => {
                s.set_atomic_map("involvedObject")
                    .set_atomic_map("regarding")
                    .set_atomic_map("related");
            }
            ("", "Namespace") => {
                s.map("status.conditions", &["type"]);
            }
            ("", "ServiceAccount") => {
                s.map("secrets", &["name"]);
            }
            ("policy", "PodDisruptionBudget") => {
                s.map("status.conditions", &["type"]).set_atomic_map("spec.selector");
            }
            ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy") => {
                s.set_list("spec.validations", ListType::Atomic)
                    .map("spec.matchConditions", &["name"])
                    .map("status.conditions", &["type"]);
            }
            // Atomic, as every list not named here: Role/ClusterRole rules, binding subjects, Namespace
            // spec.finalizers, container resizePolicy, and a CustomResourceDefinition's spec.versions and
            // status lists (the real server reports apply conflicts on `.spec.versions` as a whole). Lease,
            // Event, ConfigMap and Secret have no list that merges.
            _ => {}
        }
        s
    }

    /// The merge metadata of a custom resource, read from its CRD's openAPIV3Schema (x-kubernetes-list-type,
    /// x-kubernetes-list-map-keys, x-kubernetes-map-type); metadata as for built-ins.
    pub(crate) fn from_openapi(schema: &Value) -> MergeSchema {
        let mut root = node_from_openapi(schema, 0);
        // The server ignores what a CRD says about metadata and uses ObjectMeta's own metadata.
        root.fields.remove("metadata");
        MergeSchema { root }.with_metadata()
    }
}

/// Deep enough for any real CRD; stops a self-referencing or absurd schema from recursing without end.
const MAX_DEPTH: usize = 64;

fn node_from_openapi(schema: &Value, depth: usize) -> Node {
    let mut node = Node::default();
    if depth > MAX_DEPTH {
        return node;
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            node.fields.insert(name.clone(), node_from_openapi(sub, depth + 1));
        }
    }
    if let Some(sub) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        node.any_field = Some(Box::new(node_from_openapi(sub, depth + 1)));
    }
    if let Some(sub) = schema.get("items").filter(|v| v.is_object()) {
        node.items = Some(Box::new(node_from_openapi(sub, depth + 1)));
    }
    node.list = match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => Some(ListType::Set),
        Some("map") => {
            let keys = schema.get("x-kubernetes-list-map-keys").and_then(Value::as_array);
            let keys: Vec<String> = keys
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect();
            // A map list without keys is not valid in a CRD; treating it as atomic keeps merges well defined.
            if keys.is_empty() {
                Some(ListType::Atomic)
            } else {
                Some(ListType::Map(keys))
            }
        }
        Some(_) => Some(ListType::Atomic),
        None => None,
    };
    node.atomic = matches!(
        schema.get("x-kubernetes-map-type").and_then(Value::as_str),
        Some("atomic")
    );
    node
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn map(keys: &[&str]) -> ListType {
        ListType::Map(keys.iter().map(|k| k.to_string()).collect())
    }

    #[test]
    fn builtin_pod_lists() {
        let s = MergeSchema::builtin("", "Pod");
        let spec = s.root().field("spec");
        assert_eq!(spec.field("containers").list_type(), &map(&["name"]));
        assert_eq!(
            spec.field("containers").item().field("ports").list_type(),
            &map(&["containerPort", "protocol"])
        );
        assert_eq!(
            spec.field("containers").item().field("env").list_type(),
            &map(&["name"])
        );
        assert_eq!(
            spec.field("containers").item().field("volumeMounts").list_type(),
            &map(&["mountPath"])
        );
        assert_eq!(spec.field("tolerations").list_type(), &ListType::Atomic);
        assert_eq!(
            spec.field("containers").item().field("args").list_type(),
            &ListType::Atomic
        );
        assert_eq!(
            s.root().field("metadata").field("finalizers").list_type(),
            &ListType::Set
        );
        assert_eq!(
            s.root().field("metadata").field("ownerReferences").list_type(),
            &map(&["uid"])
        );
    }

    #[test]
    fn builtin_workloads_and_nodes() {
        let d = MergeSchema::builtin("apps", "Deployment");
        let tpl = d.root().field("spec").field("template").field("spec");
        assert_eq!(tpl.field("containers").list_type(), &map(&["name"]));
        let n = MergeSchema::builtin("", "Node");
        assert_eq!(n.root().field("spec").field("taints").list_type(), &ListType::Atomic);
        assert_eq!(
            n.root().field("status").field("conditions").list_type(),
            &map(&["type"])
        );
        let r = MergeSchema::builtin("rbac.authorization.k8s.io", "Role");
        assert_eq!(r.root().field("rules").list_type(), &ListType::Atomic);
        assert!(d.root().field("spec").field("selector").is_atomic_map());
        assert!(!tpl.field("nodeSelector").is_atomic_map());
        let crd = MergeSchema::builtin("apiextensions.k8s.io", "CustomResourceDefinition");
        assert_eq!(
            crd.root().field("spec").field("versions").list_type(),
            &ListType::Atomic
        );
        let sa = MergeSchema::builtin("", "ServiceAccount");
        assert_eq!(sa.root().field("secrets").list_type(), &map(&["name"]));
    }

    #[test]
    fn openapi_extensions() {
        let schema = json!({
            "type": "object",
            "properties": {
                "metadata": {"type": "object"},
                "spec": {"type": "object", "properties": {
                    "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                    "plain": {"type": "array", "items": {"type": "string"}},
                    "selector": {"type": "object", "x-kubernetes-map-type": "atomic"},
                    "byName": {"type": "object", "additionalProperties": {"type": "object", "properties": {
                        "ports": {"type": "array", "x-kubernetes-list-type": "map",
                                  "x-kubernetes-list-map-keys": ["port"], "items": {"type": "object"}}}}}
                }},
                "status": {"type": "object", "properties": {"conditions": {
                    "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
                    "items": {"type": "object"}}}}
            }
        });
        let s = MergeSchema::from_openapi(&schema);
        let spec = s.root().field("spec");
        assert_eq!(spec.field("tags").list_type(), &ListType::Set);
        assert_eq!(spec.field("plain").list_type(), &ListType::Atomic);
        assert!(spec.field("selector").is_atomic_map());
        assert!(!spec.field("byName").is_atomic_map());
        assert_eq!(
            spec.field("byName").field("anyKey").field("ports").list_type(),
            &map(&["port"])
        );
        assert_eq!(
            s.root().field("status").field("conditions").list_type(),
            &map(&["type"])
        );
        assert_eq!(
            s.root().field("metadata").field("finalizers").list_type(),
            &ListType::Set
        );
    }

    #[test]
    fn openapi_odd_input_is_tolerated() {
        let s = MergeSchema::from_openapi(&json!({"x-kubernetes-list-type": "map", "items": 3}));
        assert_eq!(s.root().list_type(), &ListType::Atomic);
        let s = MergeSchema::from_openapi(&json!("not a schema"));
        assert_eq!(s.root().field("spec").list_type(), &ListType::Atomic);
    }
}
