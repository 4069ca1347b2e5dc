//! `meta.k8s.io/v1` Table output (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`), as kubectl gets it
//! from a real API server.
//!
//! ```text
//!   built-in kind ──builtin.rs printer (Rust, like the server's printers.go)──▶ cells ─┐
//!   custom resource ──crd.rs: additionalPrinterColumns + JSONPath subset─────▶ cells ─┴─▶ table(): rows with
//!                                                        PartialObjectMetadata / object / null per IncludeObject
//! ```
//!
//! The server always emits every column (priority 1 included); kubectl hides priority > 0 unless `-o wide`.
//! The caller fills the list metadata (resourceVersion, continue).

mod builtin;
mod crd;
mod others;
mod pod;
mod workloads;

use serde_json::{Value, json};

pub use builtin::builtin_table;
pub use crd::crd_table;

/// One `TableColumnDefinition`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Column {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i32,
    /// The JSONPath a custom resource column reads; None for built-in columns, computed in Rust.
    pub json_path: Option<String>,
}

impl Column {
    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.type_,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

/// What each row carries in `object` (`?includeObject=`); kubectl asks for Metadata, the server's default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    #[default]
    Metadata,
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query parameter; None for an unknown value (the server answers 400).
    pub(crate) fn parse(s: &str) -> Option<IncludeObject> {
        match s {
            "None" => Some(IncludeObject::None),
            "" | "Metadata" => Some(IncludeObject::Metadata),
            "Object" => Some(IncludeObject::Object),
            _ => None,
        }
    }
}

/// A row's cells plus the row conditions the pod printer sets for finished pods.
pub(crate) struct Row {
    pub cells: Vec<Value>,
    pub conditions: Option<Value>,
}

impl From<Vec<Value>> for Row {
    fn from(cells: Vec<Value>) -> Row {
        Row {
            cells,
            conditions: None,
        }
    }
}

pub(crate) fn table(columns: &[Column], rows: Vec<(Row, &Value)>, include: IncludeObject) -> Value {
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|(row, obj)| {
            let mut out = json!({"cells": row.cells, "object": row_object(obj, include)});
            if let Some(conditions) = row.conditions {
                out["conditions"] = conditions;
            }
            out
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": ""},
        "columnDefinitions": columns.iter().map(Column::to_json).collect::<Vec<_>>(),
        "rows": rows,
    })
}

fn row_object(obj: &Value, include: IncludeObject) -> Value {
    match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Object => obj.clone(),
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
    }
}

/// The server's `duration.HumanDuration`: `45s`, `5m`, `5m30s`, `3h10m`, `2d3h`, `400d`, `3y12d`;
/// `<invalid>` when the time lies more than a second in the future.
pub(crate) fn human_duration(nanos: i128) -> String {
    const SEC: i128 = 1_000_000_000;
    let seconds = nanos / SEC;
    if seconds < -1 {
        return "<invalid>".into();
    } else if seconds < 0 {
        return "0s".into();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = nanos / (60 * SEC);
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = nanos / (3600 * SEC);
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    } else if hours < 48 {
        return format!("{hours}h");
    } else if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    } else if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// The age of an RFC 3339 time as the printers show it (`translateTimestampSince`): `<unknown>` when unset.
pub(crate) fn age(time: Option<&Value>, now: jiff::Timestamp) -> String {
    match time
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
    {
        Some(t) => human_duration(now.as_nanosecond() - t.as_nanosecond()),
        None => "<unknown>".into(),
    }
}

#[cfg(test)]
mod tests;
