//! Printers for built-in kinds, computing cells as the server's `pkg/printers/internalversion` does.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::others::{
    binding_columns, binding_row, event_columns, event_row, pdb_columns, pdb_row, policy_binding_columns,
    policy_binding_row, policy_columns, policy_row, service_columns, service_row,
};
use super::workloads::{
    daemon_set_columns, daemon_set_row, deployment_columns, deployment_row, job_columns, job_row, replica_set_columns,
    replica_set_row, stateful_set_columns, stateful_set_row,
};
use super::{Column, IncludeObject, Row, age, table};

pub(super) const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some \
resources may allow a client to request the generation of an appropriate name automatically. Name is primarily \
intended for creation idempotence and configuration definition. Cannot be updated. More info: \
https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. \
It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. \
It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: \
https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

pub(super) fn col(name: &str, type_: &str, description: &str, priority: i32) -> Column {
    Column {
        name: name.into(),
        type_: type_.into(),
        format: if name == "Name" { "name".into() } else { String::new() },
        description: description.into(),
        priority,
        json_path: None,
    }
}

pub(super) fn name_col() -> Column {
    col("Name", "string", NAME_DOC, 0)
}

pub(super) fn age_col() -> Column {
    col("Age", "string", AGE_DOC, 0)
}

pub(super) fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

pub(super) fn int_at(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

pub(super) fn list_at<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub(super) fn or_none(s: &str) -> String {
    if s.is_empty() { "<none>".into() } else { s.into() }
}

pub(super) fn name(v: &Value) -> Value {
    json!(str_at(v, "/metadata/name"))
}

pub(super) fn created(v: &Value, now: jiff::Timestamp) -> Value {
    json!(age(v.pointer("/metadata/creationTimestamp"), now))
}

/// Computes one row's cells from an object and the current time.
type Printer = fn(&Value, jiff::Timestamp) -> Row;

/// Columns for a built-in kind as kubectl prints them on a real cluster, cells computed here.
/// Kinds without a printer of their own get NAME and AGE.
pub fn builtin_table(
    group: &str,
    kind: &str,
    objects: &[&Value],
    now: jiff::Timestamp,
    include_object: IncludeObject,
) -> Value {
    let (columns, printer) = printer(group, kind);
    let rows = objects.iter().map(|obj| (printer(obj, now), *obj)).collect();
    table(&columns, rows, include_object)
}

/// The columns and the row printer of a kind.
fn printer(group: &str, kind: &str) -> (Vec<Column>, Printer) {
    match (group, kind) {
        ("", "Node") => (node_columns(), node_row),
        ("", "Pod") => (super::pod::columns(), super::pod::row),
        ("", "Namespace") => (namespace_columns(), namespace_row),
        ("", "Event") | ("events.k8s.io", "Event") => (event_columns(), event_row),
        ("coordination.k8s.io", "Lease") => (lease_columns(), lease_row),
        ("policy", "PodDisruptionBudget") => (pdb_columns(), pdb_row),
        ("apps", "Deployment") => (deployment_columns(), deployment_row),
        ("apps", "ReplicaSet") => (replica_set_columns(), replica_set_row),
        ("apps", "DaemonSet") => (daemon_set_columns(), daemon_set_row),
        ("batch", "Job") => (job_columns(), job_row),
        ("apps", "StatefulSet") => (stateful_set_columns(), stateful_set_row),
        ("", "Service") => (service_columns(), service_row),
        ("", "ConfigMap") => (config_map_columns(), config_map_row),
        ("", "Secret") => (secret_columns(), secret_row),
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole")
        | ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            (vec![name_col(), col("Created At", "date", AGE_DOC, 0)], |v, _| {
                vec![name(v), created_at(v)].into()
            })
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => (binding_columns(), binding_row),
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy") => (policy_columns(), policy_row),
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding") => {
            (policy_binding_columns(), policy_binding_row)
        }
        _ => (vec![name_col(), age_col()], |v, now| {
            vec![name(v), created(v, now)].into()
        }),
    }
}

fn namespace_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Status", "string", "The status of the namespace", 0),
        age_col(),
    ]
}

fn namespace_row(v: &Value, now: jiff::Timestamp) -> Row {
    vec![name(v), json!(str_at(v, "/status/phase")), created(v, now)].into()
}

fn lease_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Holder", "string", "The holder of the lease", 0),
        age_col(),
    ]
}

fn lease_row(v: &Value, now: jiff::Timestamp) -> Row {
    vec![name(v), json!(str_at(v, "/spec/holderIdentity")), created(v, now)].into()
}

fn config_map_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Data", "string", "Number of data entries", 0),
        age_col(),
    ]
}

fn config_map_row(v: &Value, now: jiff::Timestamp) -> Row {
    vec![
        name(v),
        json!(entries(v, "/data") + entries(v, "/binaryData")),
        created(v, now),
    ]
    .into()
}

fn secret_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Type", "string", "The type of the secret", 0),
        col("Data", "string", "Number of data entries", 0),
        age_col(),
    ]
}

fn secret_row(v: &Value, now: jiff::Timestamp) -> Row {
    let ty = v.get("type").and_then(Value::as_str).unwrap_or("Opaque");
    vec![name(v), json!(ty), json!(entries(v, "/data")), created(v, now)].into()
}

fn entries(v: &Value, ptr: &str) -> usize {
    v.pointer(ptr).and_then(Value::as_object).map_or(0, |m| m.len())
}

/// A `date` cell as the default table convertor writes it: RFC 3339 in UTC, kubectl prints it as is.
fn created_at(v: &Value) -> Value {
    match str_at(v, "/metadata/creationTimestamp").parse::<jiff::Timestamp>() {
        Ok(t) => json!(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
        Err(_) => Value::Null,
    }
}

fn node_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Status", "string", "The status of the node", 0),
        col("Roles", "string", "The roles of the node", 0),
        age_col(),
        col("Version", "string", "Kubelet Version reported by the node.", 0),
        col(
            "Internal-IP",
            "string",
            "List of addresses reachable to the node. Queried from cloud provider, if available.",
            1,
        ),
        col(
            "External-IP",
            "string",
            "List of addresses reachable to the node. Queried from cloud provider, if available.",
            1,
        ),
        col(
            "OS-Image",
            "string",
            "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
            1,
        ),
        col(
            "Kernel-Version",
            "string",
            "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
            1,
        ),
        col(
            "Container-Runtime",
            "string",
            "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
            1,
        ),
    ]
}

fn node_row(v: &Value, now: jiff::Timestamp) -> Row {
    let mut status: Vec<String> = Vec::new();
    if let Some(ready) = list_at(v, "/status/conditions")
        .iter()
        .find(|c| str_at(c, "/type") == "Ready")
    {
        status.push(if str_at(ready, "/status") == "True" {
            "Ready".into()
        } else {
            "NotReady".into()
        });
    }
    if status.is_empty() {
        status.push("Unknown".into());
    }
    if v.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled".into());
    }
    let mut roles = BTreeSet::new();
    if let Some(labels) = v.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, val) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_owned());
                }
            } else if k == "kubernetes.io/role" && val.as_str().is_some_and(|s| !s.is_empty()) {
                roles.insert(val.as_str().unwrap_or_default().to_owned());
            }
        }
    }
    let roles = roles.into_iter().collect::<Vec<_>>().join(",");
    let address = |ty: &str| {
        list_at(v, "/status/addresses")
            .iter()
            .find(|a| str_at(a, "/type") == ty)
            .map_or("<none>".to_owned(), |a| str_at(a, "/address").to_owned())
    };
    let info = |field: &str| {
        let s = str_at(v, &format!("/status/nodeInfo/{field}"));
        if s.is_empty() {
            "<unknown>".to_owned()
        } else {
            s.to_owned()
        }
    };
    vec![
        name(v),
        json!(status.join(",")),
        json!(or_none(&roles)),
        created(v, now),
        json!(str_at(v, "/status/nodeInfo/kubeletVersion")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
    .into()
}
