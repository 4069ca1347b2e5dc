//! What the API server does to a custom resource body before it stores it.
//!
//! ```text
//!   openAPIV3Schema ──CrdSchema::new──▶ Node tree (types, value validations, compiled CEL rules)
//!   request body ──unknown_fields─────▶ paths for fieldValidation=Strict/Warn
//!                ──default_and_prune──▶ (prune.rs) nulls of non-nullable fields dropped, defaults set on absent
//!                                       fields, unknown fields pruned (root apiVersion/kind/metadata kept)
//!                ──validate(old)─────▶ (check.rs) schema checks, list-type duplicates
//!                                       (rules.rs) CEL rules, unless a blocking schema error ──▶ FieldCauses
//!   FieldCauses ──invalid_status──────▶ the 422 metav1.Status body
//! ```
//!
//! On update, values equal to the old ones are not re-validated (ratcheting, on by default since 1.30).
//!
//! Field paths and messages follow the real server's `field.Error` wording, so kubectl prints the same text.

mod check;
mod node;
mod prune;
mod rules;

use serde_json::{Map, Value, json};

use node::{Node, Ty};

/// One failed check, as a `metav1.StatusCause`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldCause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`, `FieldValueTypeInvalid`, ...
    pub reason: String,
    /// The field path from the object root, e.g. `spec.idle.maxUtilizationPercent`; `<nil>` for the root.
    pub field: String,
    /// The error body without the field, e.g. `Invalid value: "integer": must be between 0 and 100`.
    pub message: String,
}

impl FieldCause {
    fn new(reason: &str, field: &str, message: String) -> FieldCause {
        let field = if field.is_empty() {
            "<nil>".to_owned()
        } else {
            field.to_owned()
        };
        FieldCause {
            reason: reason.to_owned(),
            field,
            message,
        }
    }

    /// `field: message`, as one entry of the server's aggregated error.
    pub(crate) fn to_line(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

/// A CRD version's schema, compiled once and applied to many objects.
pub struct CrdSchema {
    root: Node,
}

impl CrdSchema {
    /// Compiles a CRD version's openAPIV3Schema; Err with a clear message if it is not structural or a CEL rule
    /// does not compile.
    pub fn new(open_api_v3_schema: &Value) -> Result<CrdSchema, String> {
        let root = Node::compile(open_api_v3_schema, "openAPIV3Schema")?;
        if root.ty != Some(Ty::Object) {
            return Err("openAPIV3Schema.type: Unsupported value: must be object at the root".to_owned());
        }
        Ok(CrdSchema { root })
    }

    /// Applies `default`s and prunes unknown fields (except under x-kubernetes-preserve-unknown-fields, and
    /// metadata which the server handles), as the API server does on create/update/read.
    pub fn default_and_prune(&self, obj: &mut Value) {
        prune::default_and_prune(&self.root, obj, true);
    }

    /// The fields `default_and_prune` would drop, as the server names them for `fieldValidation=Strict`
    /// (400 `strict decoding error: unknown field "spec.bogus"`) and `Warn` (a warning per field); sorted.
    /// Call it before `default_and_prune`.
    pub(crate) fn unknown_fields(&self, obj: &Value) -> Vec<String> {
        let mut found = Vec::new();
        prune::unknown_fields(&self.root, obj, "", true, &mut found);
        found.sort();
        found
    }

    /// Validates the structural rules, the list-type invariants, then the CEL rules (transition rules only
    /// when `old` is given), in the server's order. On update (`old` given) values equal to the old ones are
    /// not re-validated (ratcheting). Returns every failure (empty = valid).
    pub fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldCause> {
        let mut causes = Vec::new();
        check::check(&self.root, obj, old, "", true, &mut causes);
        // Duplicates already stored do not block an update; new ones are reported only when the old
        // object had none.
        let old_list_errors = old.map(|o| {
            let mut errs = Vec::new();
            check::list_errors(&self.root, o, "", true, &mut errs);
            errs
        });
        if old_list_errors.is_none_or(|e| e.is_empty()) {
            check::list_errors(&self.root, obj, "", true, &mut causes);
        }
        // The rules are written for the schema's shape: with a type, enum, required or size error, they
        // are not run at all.
        const BLOCKING: [&str; 5] = [
            "FieldValueNotSupported",
            "FieldValueRequired",
            "FieldValueTooLong",
            "FieldValueTooMany",
            "FieldValueTypeInvalid",
        ];
        if causes.iter().any(|c| BLOCKING.contains(&c.reason.as_str())) {
            causes.push(FieldCause::new(
                "FieldValueInvalid",
                "",
                "Invalid value: \"null\": some validation rules were not checked because the object was invalid; \
                 correct the existing errors to complete validation"
                    .to_owned(),
            ));
        } else {
            causes.extend(rules::evaluate(&self.root, obj, old));
        }
        causes
    }
}

/// Formats a JSON value as the server's `field.Error` prints a bad value (Go's `%v`/`%q`/`%#v`).
pub(crate) fn go_value(v: &Value) -> String {
    match v {
        Value::Null => "\"null\"".to_owned(),
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n
            .as_f64()
            .filter(|_| n.is_f64())
            .map(go_float)
            .unwrap_or_else(|| n.to_string()),
        Value::Bool(b) => b.to_string(),
        Value::Array(a) => format!(
            "[]interface {{}}{{{}}}",
            a.iter().map(go_value).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(m) => format!(
            "map[string]interface {{}}{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{k:?}:{}", go_value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A float as Go's `%v` prints it: `2`, `0.5`, `1e+21`.
pub(crate) fn go_float(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e21 {
        format!("{f:.0}")
    } else {
        f.to_string()
    }
}

/// The `metav1.Status` body of a 422 Invalid, formatted as the real server does for kind/name/causes.
pub fn invalid_status(group: &str, kind: &str, name: &str, causes: &[FieldCause]) -> Value {
    let qualified = if group.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}.{group}")
    };
    // The server aggregates the error list, dropping repeated lines.
    let mut lines: Vec<String> = Vec::new();
    for cause in causes {
        let line = cause.to_line();
        if !lines.contains(&line) {
            lines.push(line);
        }
    }
    let errors = match lines.len() {
        0 => String::new(),
        1 => lines.remove(0),
        _ => format!("[{}]", lines.join(", ")),
    };
    let mut details = Map::new();
    details.insert("name".into(), json!(name));
    if !group.is_empty() {
        details.insert("group".into(), json!(group));
    }
    details.insert("kind".into(), json!(kind));
    details.insert(
        "causes".into(),
        causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect(),
    );
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("{qualified} {name:?} is invalid: {errors}"),
        "reason": "Invalid",
        "details": details,
        "code": 422,
    })
}

#[cfg(test)]
mod tests;
