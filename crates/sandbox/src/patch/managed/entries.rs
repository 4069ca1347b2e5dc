//! `metadata.managedFields` entries: read from and written back to an object.
//!
//! Entries the server could not have written (unknown fieldsType, undecodable fieldsV1) are dropped on
//! read, as the real server resets managed fields it cannot decode rather than failing the write.

use serde_json::{Map, Value};

use super::fieldset::FieldSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Operation {
    Apply,
    Update,
}

impl Operation {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Entry {
    pub(crate) manager: String,
    pub(crate) operation: Operation,
    pub(crate) api_version: String,
    pub(crate) subresource: Option<String>,
    pub(crate) time: Option<String>,
    pub(crate) set: FieldSet,
}

impl Entry {
    pub(crate) fn new(
        manager: &str,
        operation: Operation,
        api_version: String,
        subresource: Option<&str>,
        set: FieldSet,
        time: Option<&str>,
    ) -> Entry {
        Entry {
            manager: manager.to_string(),
            operation,
            api_version,
            subresource: subresource.filter(|s| !s.is_empty()).map(String::from),
            time: time.map(String::from),
            set,
        }
    }

    /// Whether this is the entry of (manager, operation, subresource): one entry per such triple.
    pub(crate) fn is(&self, (manager, operation, subresource): (&str, Operation, Option<&str>)) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource.filter(|s| !s.is_empty())
    }

    fn from_json(v: &Value) -> Option<Entry> {
        let s = |k: &str| v.get(k).and_then(Value::as_str);
        let operation = match s("operation")? {
            "Apply" => Operation::Apply,
            "Update" => Operation::Update,
            _ => return None,
        };
        if s("fieldsType").is_some_and(|t| t != "FieldsV1") {
            return None;
        }
        let set = match v.get("fieldsV1") {
            Some(f) => FieldSet::from_fields_v1(f).ok()?,
            None => FieldSet::default(),
        };
        Some(Entry::new(
            s("manager").unwrap_or_default(),
            operation,
            s("apiVersion").unwrap_or_default().to_string(),
            s("subresource"),
            set,
            s("time"),
        ))
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), self.manager.clone().into());
        m.insert("operation".into(), self.operation.as_str().into());
        m.insert("apiVersion".into(), self.api_version.clone().into());
        if let Some(t) = &self.time {
            m.insert("time".into(), t.clone().into());
        }
        m.insert("fieldsType".into(), "FieldsV1".into());
        m.insert("fieldsV1".into(), self.set.to_fields_v1());
        if let Some(sub) = &self.subresource {
            m.insert("subresource".into(), sub.clone().into());
        }
        Value::Object(m)
    }
}

/// The entries of `obj`; entries of one (manager, operation, subresource) are merged into one.
pub(crate) fn read_entries(obj: &Value) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    let raw = obj.pointer("/metadata/managedFields").and_then(Value::as_array);
    for e in raw.into_iter().flatten().filter_map(Entry::from_json) {
        let key = (e.manager.as_str(), e.operation, e.subresource.as_deref());
        match out.iter_mut().find(|o| o.is(key)) {
            Some(o) => {
                o.set.union_with(&e.set);
                if e.time > o.time {
                    o.time = e.time;
                    o.api_version = e.api_version;
                }
            }
            None => out.push(e),
        }
    }
    out
}

/// Writes `entries` into `obj.metadata.managedFields` in the server's order (operation, time, manager,
/// apiVersion, subresource), without empty ones; removes the field when none is left.
pub(crate) fn write_entries(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.set.is_empty());
    entries.sort_by(|a, b| {
        (a.operation, &a.time, &a.manager, &a.api_version, &a.subresource).cmp(&(
            b.operation,
            &b.time,
            &b.manager,
            &b.api_version,
            &b.subresource,
        ))
    });
    let Some(obj) = obj.as_object_mut() else { return };
    let meta = obj.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    let Some(meta) = meta.as_object_mut() else { return };
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert(
            "managedFields".into(),
            Value::Array(entries.iter().map(Entry::to_json).collect()),
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn entries_round_trip_merge_and_sort() {
        let mut obj = json!({"metadata": {"name": "n", "managedFields": [
            {"manager": "b", "operation": "Update", "apiVersion": "v1", "time": "2026-01-01T00:00:02Z",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:x": {}}}},
            {"manager": "a", "operation": "Apply", "apiVersion": "v1", "time": "2026-01-01T00:00:03Z",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {"f:a": {}}}}},
            {"manager": "b", "operation": "Update", "apiVersion": "v1", "time": "2026-01-01T00:00:01Z",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:y": {}}}},
            {"manager": "k", "operation": "Update", "apiVersion": "v1", "subresource": "status",
             "fieldsType": "FieldsV1", "fieldsV1": {}},
            {"manager": "bad", "operation": "Update", "fieldsType": "FieldsV2", "fieldsV1": {}},
        ]}});
        let entries = read_entries(&obj);
        assert_eq!(entries.len(), 3);
        write_entries(&mut obj, entries);
        assert_eq!(
            obj["metadata"]["managedFields"],
            json!([
                {"manager": "a", "operation": "Apply", "apiVersion": "v1", "time": "2026-01-01T00:00:03Z",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {"f:a": {}}}}},
                {"manager": "b", "operation": "Update", "apiVersion": "v1", "time": "2026-01-01T00:00:02Z",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:x": {}, "f:y": {}}}},
            ])
        );
        write_entries(&mut obj, Vec::new());
        assert_eq!(obj, json!({"metadata": {"name": "n"}}));
    }
}
