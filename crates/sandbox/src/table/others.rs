//! Printers for events, disruption budgets, services, role bindings and admission policies.

use serde_json::{Value, json};

use super::builtin::{NAME_DOC, age_col, col, created, int_at, list_at, name, name_col, or_none, str_at};
use super::{Column, Row, age};

pub(super) fn event_columns() -> Vec<Column> {
    vec![
        col(
            "Last Seen",
            "string",
            "The time at which the most recent occurrence of this event was recorded.",
            0,
        ),
        col(
            "Type",
            "string",
            "Type of this event (Normal, Warning), new types could be added in the future",
            0,
        ),
        col(
            "Reason",
            "string",
            "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
            0,
        ),
        col("Object", "string", "The object that this event is about.", 0),
        col(
            "Subobject",
            "string",
            "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement.",
            1,
        ),
        col(
            "Source",
            "string",
            "The component reporting this event. Should be a short machine understandable string.",
            1,
        ),
        col(
            "Message",
            "string",
            "A human-readable description of the status of this operation.",
            0,
        ),
        col(
            "First Seen",
            "string",
            "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
            1,
        ),
        col("Count", "string", "The number of times this event has occurred.", 1),
        Column {
            format: "name".into(),
            ..col("Name", "string", NAME_DOC, 1)
        },
    ]
}

/// Reads a core/v1 Event field, or its events.k8s.io/v1 name (the server prints both kinds alike).
fn event_field<'a>(v: &'a Value, core: &str, events: &str) -> Option<&'a Value> {
    let present = |ptr: &str| v.pointer(ptr).filter(|x| !x.is_null() && x.as_str() != Some(""));
    present(core).or_else(|| present(events))
}

pub(super) fn event_row(v: &Value, now: jiff::Timestamp) -> Row {
    let text = |core: &str, events: &str| event_field(v, core, events).and_then(Value::as_str).unwrap_or("");
    let first = match event_field(v, "/firstTimestamp", "/deprecatedFirstTimestamp") {
        Some(t) => age(Some(t), now),
        None => age(event_field(v, "/eventTime", "/eventTime"), now),
    };
    let mut last = match event_field(v, "/lastTimestamp", "/deprecatedLastTimestamp") {
        Some(t) => age(Some(t), now),
        None => first.clone(),
    };
    let mut count = event_field(v, "/count", "/deprecatedCount")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if let Some(series) = v.get("series").filter(|s| s.is_object()) {
        last = age(series.get("lastObservedTime"), now);
        count = int_at(series, "/count");
    } else if count == 0 {
        count = 1;
    }
    let kind = text("/involvedObject/kind", "/regarding/kind").to_lowercase();
    let target = match text("/involvedObject/name", "/regarding/name") {
        "" => kind,
        n => format!("{kind}/{n}"),
    };
    let component = match text("/source/component", "/deprecatedSource/component") {
        "" => text("/reportingComponent", "/reportingController"),
        c => c,
    };
    let instance = match text("/source/host", "/deprecatedSource/host") {
        "" => text("/reportingInstance", "/reportingInstance"),
        h => h,
    };
    let source = if instance.is_empty() {
        component.to_owned()
    } else {
        format!("{component}, {instance}")
    };
    vec![
        json!(last),
        json!(str_at(v, "/type")),
        json!(str_at(v, "/reason")),
        json!(target),
        json!(text("/involvedObject/fieldPath", "/regarding/fieldPath")),
        json!(source),
        json!(text("/message", "/note").trim()),
        json!(first),
        json!(count),
        name(v),
    ]
    .into()
}

pub(super) fn pdb_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Min Available",
            "string",
            "The minimum number of pods that must be available simultaneously. This can be either an integer or a string specifying a percentage, e.g. \"28%\".",
            0,
        ),
        col(
            "Max Unavailable",
            "string",
            "The maximum number of pods that may be unavailable simultaneously. This can be either an integer or a string specifying a percentage, e.g. \"28%\".",
            0,
        ),
        col(
            "Allowed Disruptions",
            "integer",
            "Calculated number of pods that may be disrupted at this time.",
            0,
        ),
        age_col(),
    ]
}

fn int_or_string(v: Option<&Value>) -> String {
    match v {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => "N/A".into(),
    }
}

pub(super) fn pdb_row(v: &Value, now: jiff::Timestamp) -> Row {
    vec![
        name(v),
        json!(int_or_string(v.pointer("/spec/minAvailable"))),
        json!(int_or_string(v.pointer("/spec/maxUnavailable"))),
        json!(int_at(v, "/status/disruptionsAllowed")),
        created(v, now),
    ]
    .into()
}

pub(super) fn service_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Type", "string", "The type of service.", 0),
        col("Cluster-IP", "string", "The cluster IP of the service.", 0),
        col("External-IP", "string", "The external IPs of the service.", 0),
        col("Port(s)", "string", "The ports of the service.", 0),
        age_col(),
        col(
            "Selector",
            "string",
            "Route service traffic to pods with label keys and values matching this selector.",
            1,
        ),
    ]
}

pub(super) fn service_row(v: &Value, now: jiff::Timestamp) -> Row {
    let ty = match str_at(v, "/spec/type") {
        "" => "ClusterIP",
        t => t,
    };
    let cluster_ip = list_at(v, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .unwrap_or_else(|| str_at(v, "/spec/clusterIP"));
    let external: Vec<&str> = list_at(v, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let external_ip = match ty {
        "ClusterIP" | "NodePort" => or_none(&external.join(",")),
        "LoadBalancer" => {
            let mut ips: Vec<&str> = list_at(v, "/status/loadBalancer/ingress")
                .iter()
                .map(|i| {
                    if str_at(i, "/ip").is_empty() {
                        str_at(i, "/hostname")
                    } else {
                        str_at(i, "/ip")
                    }
                })
                .filter(|s| !s.is_empty())
                .collect();
            ips.extend(&external);
            if ips.is_empty() {
                "<pending>".into()
            } else {
                ips.join(",")
            }
        }
        "ExternalName" => str_at(v, "/spec/externalName").to_owned(),
        _ => "<unknown>".into(),
    };
    let ports: Vec<String> = list_at(v, "/spec/ports")
        .iter()
        .map(|p| {
            let proto = match str_at(p, "/protocol") {
                "" => "TCP",
                x => x,
            };
            match int_at(p, "/nodePort") {
                0 => format!("{}/{proto}", int_at(p, "/port")),
                node_port => format!("{}:{node_port}/{proto}", int_at(p, "/port")),
            }
        })
        .collect();
    let selector: Vec<String> = v
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, val)| format!("{k}={}", val.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    vec![
        name(v),
        json!(ty),
        json!(or_none(cluster_ip)),
        json!(external_ip),
        json!(or_none(&ports.join(","))),
        created(v, now),
        json!(or_none(&selector.join(","))),
    ]
    .into()
}

pub(super) fn binding_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Role",
            "string",
            "Role references a Role or ClusterRole in the current namespace.",
            0,
        ),
        age_col(),
        col("Users", "string", "Users in the roleBinding", 1),
        col("Groups", "string", "Groups in the roleBinding", 1),
        col("ServiceAccounts", "string", "ServiceAccounts in the roleBinding", 1),
    ]
}

pub(super) fn binding_row(v: &Value, now: jiff::Timestamp) -> Row {
    let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
    for s in list_at(v, "/subjects") {
        match str_at(s, "/kind") {
            "User" => users.push(str_at(s, "/name").to_owned()),
            "Group" => groups.push(str_at(s, "/name").to_owned()),
            "ServiceAccount" => sas.push(format!("{}/{}", str_at(s, "/namespace"), str_at(s, "/name"))),
            _ => {}
        }
    }
    vec![
        name(v),
        json!(format!("{}/{}", str_at(v, "/roleRef/kind"), str_at(v, "/roleRef/name"))),
        created(v, now),
        json!(users.join(", ")),
        json!(groups.join(", ")),
        json!(sas.join(", ")),
    ]
    .into()
}

pub(super) fn policy_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "Validations",
            "integer",
            "Validations indicates the number of validation rules defined in this configuration",
            0,
        ),
        col(
            "ParamKind",
            "string",
            "ParamKind specifies the kind of resources used to parameterize this policy",
            0,
        ),
        age_col(),
    ]
}

pub(super) fn policy_row(v: &Value, now: jiff::Timestamp) -> Row {
    let param = match (
        str_at(v, "/spec/paramKind/apiVersion"),
        str_at(v, "/spec/paramKind/kind"),
    ) {
        ("", "") => "<unset>".to_owned(),
        (av, k) => format!("{av}/{k}"),
    };
    vec![
        name(v),
        json!(list_at(v, "/spec/validations").len()),
        json!(param),
        created(v, now),
    ]
    .into()
}

pub(super) fn policy_binding_columns() -> Vec<Column> {
    vec![
        name_col(),
        col(
            "PolicyName",
            "string",
            "PolicyName references a ValidatingAdmissionPolicy name which the ValidatingAdmissionPolicyBinding binds to",
            0,
        ),
        col(
            "ParamRef",
            "string",
            "ParamRef specifies the parameter resource used to configure the admission control policy",
            0,
        ),
        age_col(),
    ]
}

pub(super) fn policy_binding_row(v: &Value, now: jiff::Timestamp) -> Row {
    let param = match v.pointer("/spec/paramRef") {
        Some(p) if p.is_object() => match (str_at(p, "/namespace"), str_at(p, "/name")) {
            ("", n) => format!("*/{}", if n.is_empty() { "*" } else { n }),
            (ns, n) => format!("{ns}/{}", if n.is_empty() { "*" } else { n }),
        },
        _ => "<unset>".to_owned(),
    };
    vec![
        name(v),
        json!(str_at(v, "/spec/policyName")),
        json!(param),
        created(v, now),
    ]
    .into()
}
