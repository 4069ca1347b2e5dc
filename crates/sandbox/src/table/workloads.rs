//! Printers for workload controllers: deployments, replica sets, daemon sets, stateful sets and jobs.

use serde_json::{Value, json};

use super::builtin::{age_col, col, created, int_at, list_at, name, name_col, or_none, str_at};
use super::{Column, Row, human_duration};

fn template_containers(v: &Value) -> (String, String) {
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

pub(super) fn stateful_set_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Ready", "string", "Number of the pod with ready state", 0),
        age_col(),
        col("Containers", "string", "Names of each container in the template.", 1),
        col(
            "Images",
            "string",
            "Images referenced by each container in the template.",
            1,
        ),
    ]
}

pub(super) fn stateful_set_row(v: &Value, now: jiff::Timestamp) -> Row {
    let (containers, images) = template_containers(v);
    let desired = v.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
    vec![
        name(v),
        json!(format!("{}/{desired}", int_at(v, "/status/readyReplicas"))),
        created(v, now),
        json!(containers),
        json!(images),
    ]
    .into()
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

/// The wide columns every workload with a pod template shows last.
fn template_columns() -> [Column; 3] {
    [
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

pub(super) fn replica_set_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Desired", "integer", "Number of desired pods.", 0),
        col("Current", "integer", "Number of actual pods.", 0),
        col("Ready", "integer", "Number of pods ready.", 0),
        age_col(),
    ]
    .into_iter()
    .chain(template_columns())
    .collect()
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

pub(super) fn daemon_set_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Desired", "integer", "The desired number of daemon pods.", 0),
        col(
            "Current",
            "integer",
            "The number of nodes running at least one daemon pod.",
            0,
        ),
        col(
            "Ready",
            "integer",
            "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready.",
            0,
        ),
        col(
            "Up-to-date",
            "integer",
            "The total number of nodes that are running updated daemon pod",
            0,
        ),
        col(
            "Available",
            "integer",
            "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available.",
            0,
        ),
        col(
            "Node Selector",
            "string",
            "NodeSelector is a selector which must be true for the pod to fit on a node.",
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
            "A label query over pods that are managed by the daemon set.",
            1,
        ),
    ]
}

/// `labels.FormatLabels`: `k=v,k2=v2` sorted by key, `<none>` when empty.
fn format_labels(map: Option<&Value>) -> String {
    let pairs: Vec<String> = map
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    or_none(&pairs.join(","))
}

pub(super) fn daemon_set_row(v: &Value, now: jiff::Timestamp) -> Row {
    let (containers, images) = template_containers(v);
    vec![
        name(v),
        json!(int_at(v, "/status/desiredNumberScheduled")),
        json!(int_at(v, "/status/currentNumberScheduled")),
        json!(int_at(v, "/status/numberReady")),
        json!(int_at(v, "/status/updatedNumberScheduled")),
        json!(int_at(v, "/status/numberAvailable")),
        json!(format_labels(v.pointer("/spec/template/spec/nodeSelector"))),
        created(v, now),
        json!(containers),
        json!(images),
        json!(format_selector(v.pointer("/spec/selector"))),
    ]
    .into()
}

pub(super) fn job_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Status", "string", "Status of the job.", 0),
        col("Completions", "string", "The completion status of the job.", 0),
        col("Duration", "string", "Time required to complete the job.", 0),
        age_col(),
    ]
    .into_iter()
    .chain(template_columns())
    .collect()
}

pub(super) fn job_row(v: &Value, now: jiff::Timestamp) -> Row {
    let has = |ty: &str| {
        list_at(v, "/status/conditions")
            .iter()
            .any(|c| str_at(c, "/type") == ty && str_at(c, "/status") == "True")
    };
    let deleting = v.pointer("/metadata/deletionTimestamp").is_some_and(|d| !d.is_null());
    let status = if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if deleting {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    };
    let succeeded = int_at(v, "/status/succeeded");
    let completions = match (
        v.pointer("/spec/completions").and_then(Value::as_i64),
        v.pointer("/spec/parallelism").and_then(Value::as_i64),
    ) {
        (Some(c), _) => format!("{succeeded}/{c}"),
        (None, Some(p)) if p > 1 => format!("{succeeded}/1 of {p}"),
        _ => format!("{succeeded}/1"),
    };
    let time = |ptr: &str| {
        v.pointer(ptr)
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<jiff::Timestamp>().ok())
    };
    let duration = match (time("/status/startTime"), time("/status/completionTime")) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(now.as_nanosecond() - start.as_nanosecond()),
        (Some(start), Some(end)) => human_duration(end.as_nanosecond() - start.as_nanosecond()),
    };
    let (containers, images) = template_containers(v);
    vec![
        name(v),
        json!(status),
        json!(completions),
        json!(duration),
        created(v, now),
        json!(containers),
        json!(images),
        json!(format_selector(v.pointer("/spec/selector"))),
    ]
    .into()
}
