//! Resources served in two forms from one storage: `events.k8s.io/v1` Events are core `v1` Events on a real
//! server, so an event a controller records through either API shows in both (`kubectl get events` reads
//! core v1, kube-rs' recorder writes events.k8s.io/v1). Objects are stored in the core form; requests and
//! answers in the other form convert at the edges of `Cluster` and in watch and list encoding.

use serde_json::{Map, Value, json};

use super::registry::ResourceType;

/// Field pairs: (events.k8s.io/v1 name, core/v1 name).
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("related", "related"),
    ("reason", "reason"),
    ("note", "message"),
    ("type", "type"),
    ("action", "action"),
    ("eventTime", "eventTime"),
    ("series", "series"),
    ("reportingController", "reportingComponent"),
    ("reportingInstance", "reportingInstance"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("deprecatedSource", "source"),
];

/// Whether a resource is a view of another's storage.
pub(crate) fn is_view(rt: &ResourceType) -> bool {
    rt.group == "events.k8s.io"
}

fn rename(obj: &Value, api_version: &str, to_core: bool) -> Value {
    let Some(map) = obj.as_object() else { return obj.clone() };
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!("Event"));
    if let Some(m) = map.get("metadata") {
        out.insert("metadata".into(), m.clone());
    }
    for (v1, core) in EVENT_FIELDS {
        let (from, to) = if to_core { (v1, core) } else { (core, v1) };
        if let Some(v) = map.get(*from) {
            out.insert((*to).to_string(), v.clone());
        }
    }
    Value::Object(out)
}

/// The stored (core) form of an object written through `rt`.
pub(crate) fn to_stored(rt: &ResourceType, obj: Value) -> Value {
    if is_view(rt) { rename(&obj, "v1", true) } else { obj }
}

/// The form `rt` answers of a stored object.
pub(crate) fn from_stored(rt: &ResourceType, obj: Value) -> Value {
    if is_view(rt) {
        rename(&obj, &rt.api_version(), false)
    } else {
        obj
    }
}

/// A field selector of the view in the stored form's field names.
pub(crate) fn field_selector(rt: &ResourceType, text: &str) -> String {
    if !is_view(rt) {
        return text.to_string();
    }
    text.split(',')
        .map(|req| {
            let mut req = req.to_string();
            for (v1, core) in EVENT_FIELDS {
                if let Some(rest) = req.strip_prefix(&format!("{v1}.")) {
                    req = format!("{core}.{rest}");
                } else if let Some(rest) = req.strip_prefix(v1).filter(|r| r.starts_with(['=', '!'])) {
                    req = format!("{core}{rest}");
                }
            }
            req
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    #[test]
    fn events_round_trip_between_forms() {
        let registry = Registry::new();
        let v1 = registry.resolve("events.k8s.io", "v1", "events").unwrap();
        let event = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "Node", "name": "n1"}, "note": "lent", "reason": "Lent", "type": "Normal",
            "reportingController": "sublet", "eventTime": "2026-01-01T00:00:00.000000Z", "action": "Lend"});
        let core = to_stored(&v1, event.clone());
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "n1");
        assert_eq!(core["message"], "lent");
        assert_eq!(core["reportingComponent"], "sublet");
        assert_eq!(from_stored(&v1, core), event);
        assert_eq!(
            field_selector(&v1, "regarding.name=n1,reason=Lent"),
            "involvedObject.name=n1,reason=Lent"
        );
    }
}
