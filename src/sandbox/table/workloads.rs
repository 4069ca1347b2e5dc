//! Printers for workload controllers: deployments and replica sets.

use serde_json::{Value, json};

use super::builtin::{age_col, col, created, int_at, list_at, name, name_col, or_none, str_at};
use super::{Column, Row};

pub(super) fn template_containers(v: &Value) -> (String, String) {
    let containers = list_at(v, "/spec/template/spec/containers");
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, "/image")).collect();
    (names.join(","), images.join(","))
}

/// `metav1.FormatLabelSelector`: `app=x,tier in (a,b),!gone`, `<none>` when empty.
pub(crate) fn format_selector(sel: Option<&Value>) -> String {
    let Some(sel) = sel.filter(|s| s.is_object()) else {
        return "<none>".into();
    };
    let mut parts: Vec<String> = Vec::new();
    if let Some(labels) = sel.get("matchLabels").and_then(Value::as_object) {
        parts.extend(
            labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())),
        );
    }
    for expr in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let key = str_at(expr, "/key");
        let mut values: Vec<&str> = list_at(expr, "/values").iter().filter_map(Value::as_str).collect();
        values.sort_unstable();
        parts.push(match str_at(expr, "/operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            op => format!("{key} {op} ({})", values.join(",")),
        });
    }
    or_none(&parts.join(","))
}

pub(super) fn deployment_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Ready", "string", "Number of the pod with ready state", 0),
        col(
            "Up-to-date",
            "string",
            "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            0,
        ),
        col(
            "Available",
            "string",
            "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            0,
        ),
        age_col(),
        col("Containers", "string", "Names of each container in the template.", 1),
        col(
            "Images",
            "string",
            "Images referenced by each container in the template.",
            1,
        ),
        col(
            "Selector",
            "string",
            "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
            1,
        ),
    ]
}

pub(super) fn deployment_row(v: &Value, now: jiff::Timestamp) -> Row {
    let desired = v.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
    let (containers, images) = template_containers(v);
    vec![
        name(v),
        json!(format!("{}/{desired}", int_at(v, "/status/readyReplicas"))),
        json!(int_at(v, "/status/updatedReplicas")),
        json!(int_at(v, "/status/availableReplicas")),
        created(v, now),
        json!(containers),
        json!(images),
        json!(format_selector(v.pointer("/spec/selector"))),
    ]
    .into()
}

pub(super) fn replica_set_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Desired", "integer", "Number of desired pods.", 0),
        col("Current", "integer", "Number of actual pods.", 0),
        col("Ready", "integer", "Number of pods ready.", 0),
        age_col(),
        col("Containers", "string", "Names of each container in the template.", 1),
        col(
            "Images",
            "string",
            "Images referenced by each container in the template.",
            1,
        ),
        col("Selector", "string", "Label selector for pods.", 1),
    ]
}

pub(super) fn replica_set_row(v: &Value, now: jiff::Timestamp) -> Row {
    let (containers, images) = template_containers(v);
    vec![
        name(v),
        json!(v.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)),
        json!(int_at(v, "/status/replicas")),
        json!(int_at(v, "/status/readyReplicas")),
        created(v, now),
        json!(containers),
        json!(images),
        json!(format_selector(v.pointer("/spec/selector"))),
    ]
    .into()
}
