//! The pod printer: READY counts, the STATUS reason (init progress, waiting/terminated reasons,
//! Terminating), RESTARTS with the age of the last restart, and the wide columns.

use serde_json::{Value, json};

use super::builtin::{age_col, col, created, int_at, list_at, name, name_col, str_at};
use super::{Column, Row, age};

pub(super) fn columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Ready",
            "string",
            "The aggregate readiness state of this pod for accepting traffic.",
            0,
        ),
        col(
            "Status",
            "string",
            "The aggregate status of the containers in this pod.",
            0,
        ),
        col(
            "Restarts",
            "string",
            "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            0,
        ),
        age_col(),
        col("IP", "string", "The IP address assigned to the pod", 1),
        col("Node", "string", "The node the pod is scheduled on", 1),
        col("Nominated Node", "string", "The node the pod is nominated to run on", 1),
        col("Readiness Gates", "string", "The readiness gates of the pod", 1),
    ]
}

/// An init container that keeps running beside the app containers (a sidecar).
fn restartable(pod: &Value, name: &str) -> bool {
    list_at(pod, "/spec/initContainers")
        .iter()
        .any(|c| str_at(c, "/name") == name && str_at(c, "/restartPolicy") == "Always")
}

fn timestamp(v: Option<&Value>) -> Option<jiff::Timestamp> {
    v.and_then(Value::as_str).and_then(|s| s.parse().ok())
}

fn terminated_reason(t: &Value, prefix: &str) -> String {
    match str_at(t, "/reason") {
        "" if int_at(t, "/signal") != 0 => format!("{prefix}Signal:{}", int_at(t, "/signal")),
        "" => format!("{prefix}ExitCode:{}", int_at(t, "/exitCode")),
        r => format!("{prefix}{r}"),
    }
}

fn condition_true(pod: &Value, ty: &str) -> bool {
    list_at(pod, "/status/conditions")
        .iter()
        .any(|c| str_at(c, "/type") == ty && str_at(c, "/status") == "True")
}

pub(super) fn row(pod: &Value, now: jiff::Timestamp) -> Row {
    let total = list_at(pod, "/spec/containers").len()
        + list_at(pod, "/spec/initContainers")
            .iter()
            .filter(|c| str_at(c, "/restartPolicy") == "Always")
            .count();
    let phase = str_at(pod, "/status/phase");
    let mut tally = Tally {
        reason: match str_at(pod, "/status/reason") {
            "" => phase.to_owned(),
            r => r.to_owned(),
        },
        ..Tally::default()
    };
    if list_at(pod, "/status/conditions")
        .iter()
        .any(|c| str_at(c, "/type") == "PodScheduled" && str_at(c, "/reason") == "SchedulingGated")
    {
        tally.reason = "SchedulingGated".into();
    }
    let initializing = tally.init_containers(pod);
    if !initializing || condition_true(pod, "Initialized") {
        tally.containers(pod);
    }
    let Tally {
        ready,
        restarts,
        last_restart,
        mut reason,
        ..
    } = tally;

    let deleting = pod.pointer("/metadata/deletionTimestamp").is_some_and(|d| !d.is_null());
    if deleting && str_at(pod, "/status/reason") == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => {
            format!("{restarts} ({} ago)", age(Some(&json!(t.to_string())), now))
        }
        _ => restarts.to_string(),
    };

    let or_none = |s: &str| {
        if s.is_empty() {
            "<none>".to_owned()
        } else {
            s.to_owned()
        }
    };
    let ip = list_at(pod, "/status/podIPs")
        .first()
        .map(|p| str_at(p, "/ip"))
        .unwrap_or_else(|| str_at(pod, "/status/podIP"));
    let conditions = match phase {
        "Succeeded" => Some(json!([{"type": "Completed", "status": "True", "reason": "Succeeded",
            "message": "The pod has completed successfully."}])),
        "Failed" => {
            Some(json!([{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}]))
        }
        _ => None,
    };
    Row {
        cells: vec![
            name(pod),
            json!(format!("{ready}/{total}")),
            json!(reason),
            json!(restarts_cell),
            created(pod, now),
            json!(or_none(ip)),
            json!(or_none(str_at(pod, "/spec/nodeName"))),
            json!(or_none(str_at(pod, "/status/nominatedNodeName"))),
            json!(readiness_gates(pod)),
        ],
        conditions,
    }
}

/// READINESS GATES: how many of the pod's gates hold, `<none>` without gates.
fn readiness_gates(pod: &Value) -> String {
    let gates = list_at(pod, "/spec/readinessGates");
    if gates.is_empty() {
        return "<none>".to_owned();
    }
    let ok = gates
        .iter()
        .filter(|g| condition_true(pod, str_at(g, "/conditionType")))
        .count();
    format!("{ok}/{}", gates.len())
}

/// What a pod's container statuses add up to, in the order kubectl's printer reads them: READY, RESTARTS (and
/// when the last one was) and the STATUS reason.
#[derive(Default)]
struct Tally {
    ready: usize,
    restarts: i64,
    sidecar_restarts: i64,
    last_restart: Option<jiff::Timestamp>,
    last_sidecar_restart: Option<jiff::Timestamp>,
    reason: String,
}

impl Tally {
    /// Init containers, up to the first that has not finished; answers whether the pod is still initializing.
    fn init_containers(&mut self, pod: &Value) -> bool {
        let specs = list_at(pod, "/spec/initContainers").len();
        for (i, c) in list_at(pod, "/status/initContainerStatuses").iter().enumerate() {
            let count = int_at(c, "/restartCount");
            self.restarts += count;
            let finished = timestamp(c.pointer("/lastState/terminated/finishedAt"));
            self.last_restart = self.last_restart.max(finished);
            let sidecar = restartable(pod, str_at(c, "/name"));
            if sidecar {
                self.sidecar_restarts += count;
                self.last_sidecar_restart = self.last_sidecar_restart.max(finished);
            }
            let terminated = c.pointer("/state/terminated").filter(|t| t.is_object());
            let waiting_reason = str_at(c, "/state/waiting/reason");
            if terminated.is_some_and(|t| int_at(t, "/exitCode") == 0) {
                continue;
            }
            if sidecar && c.get("started").and_then(Value::as_bool) == Some(true) {
                if c.get("ready").and_then(Value::as_bool) == Some(true) {
                    self.ready += 1;
                }
                continue;
            }
            self.reason = if let Some(t) = terminated {
                terminated_reason(t, "Init:")
            } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
                format!("Init:{waiting_reason}")
            } else {
                format!("Init:{i}/{specs}")
            };
            return true;
        }
        false
    }

    /// The regular containers, last first; restarts count from the sidecars' on.
    fn containers(&mut self, pod: &Value) {
        self.restarts = self.sidecar_restarts;
        self.last_restart = self.last_sidecar_restart;
        let mut has_running = false;
        for c in list_at(pod, "/status/containerStatuses").iter().rev() {
            self.restarts += int_at(c, "/restartCount");
            self.last_restart = self
                .last_restart
                .max(timestamp(c.pointer("/lastState/terminated/finishedAt")));
            let terminated = c.pointer("/state/terminated").filter(|t| t.is_object());
            let waiting_reason = str_at(c, "/state/waiting/reason");
            if !waiting_reason.is_empty() {
                self.reason = waiting_reason.to_owned();
            } else if let Some(t) = terminated {
                self.reason = terminated_reason(t, "");
            } else if c.get("ready").and_then(Value::as_bool) == Some(true)
                && c.pointer("/state/running").is_some_and(Value::is_object)
            {
                has_running = true;
                self.ready += 1;
            }
        }
        if self.reason == "Completed" && has_running {
            self.reason = if condition_true(pod, "Ready") {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }
}
