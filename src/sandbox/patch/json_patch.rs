//! JSON patch (RFC 6902) over JSON pointers (RFC 6901).
//!
//! The operations run in order on one copy of the document; the first failure aborts the whole patch, so
//! a failed `test` leaves the stored object untouched. Error texts follow the Go library the API server
//! uses (`doc is missing path`, `testing value ... failed`).

use serde_json::Value;

use super::{PatchError, json_equal};

/// Applies an RFC 6902 patch (an array of operations) to `doc`.
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Array(ops) = patch else {
        return Err(PatchError::Malformed(
            "json patch must be an array of operations".into(),
        ));
    };
    let mut doc = doc.clone();
    for op in ops {
        apply_op(&mut doc, op)?;
    }
    Ok(doc)
}

fn str_field<'a>(op: &'a Value, name: &str) -> Result<&'a str, PatchError> {
    match op.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(PatchError::Malformed(format!(
            "json patch operation field {name:?} must be a string"
        ))),
        None => Err(PatchError::Malformed(format!(
            "json patch operation {op} lacks {name:?}"
        ))),
    }
}

fn value_field(op: &Value) -> Result<&Value, PatchError> {
    op.get("value")
        .ok_or_else(|| PatchError::Malformed(format!("json patch operation {op} lacks \"value\"")))
}

fn apply_op(doc: &mut Value, op: &Value) -> Result<(), PatchError> {
    if !op.is_object() {
        return Err(PatchError::Malformed(format!(
            "json patch operation {op} is not an object"
        )));
    }
    let kind = str_field(op, "op")?;
    let path = str_field(op, "path")?;
    let tokens = parse_pointer(path)?;
    match kind {
        "add" => add(doc, &tokens, value_field(op)?.clone())
            .map_err(|e| PatchError::Failed(format!("add operation does not apply: {e}"))),
        "remove" => remove(doc, &tokens)
            .map(drop)
            .map_err(|e| PatchError::Failed(format!("remove operation does not apply: {e}"))),
        "replace" => {
            let value = value_field(op)?.clone();
            let target = get_mut(doc, &tokens)
                .ok_or_else(|| PatchError::Failed(format!("replace operation does not apply: {}", missing(path))))?;
            *target = value;
            Ok(())
        }
        "move" => {
            let from = str_field(op, "from")?;
            let from_tokens = parse_pointer(from)?;
            if from_tokens.len() < tokens.len() && tokens.starts_with(&from_tokens) {
                return Err(PatchError::Failed(format!(
                    "move operation cannot move {from:?} into its child {path:?}"
                )));
            }
            let value = remove(doc, &from_tokens)
                .map_err(|e| PatchError::Failed(format!("move operation does not apply: {e}")))?;
            add(doc, &tokens, value).map_err(|e| PatchError::Failed(format!("move operation does not apply: {e}")))
        }
        "copy" => {
            let from = str_field(op, "from")?;
            let value = get(doc, &parse_pointer(from)?)
                .cloned()
                .ok_or_else(|| PatchError::Failed(format!("copy operation does not apply: {}", missing(from))))?;
            add(doc, &tokens, value).map_err(|e| PatchError::Failed(format!("copy operation does not apply: {e}")))
        }
        "test" => {
            let want = value_field(op)?;
            match get(doc, &tokens) {
                Some(have) if json_equal(have, want) => Ok(()),
                _ => Err(PatchError::Failed(format!("testing value {path} failed: test failed"))),
            }
        }
        other => Err(PatchError::Malformed(format!("Unexpected kind: {other}"))),
    }
}

fn missing(path: &str) -> String {
    format!("doc is missing path: {path:?}: missing value")
}

/// Splits an RFC 6901 pointer into unescaped reference tokens.
pub(crate) fn parse_pointer(pointer: &str) -> Result<Vec<String>, PatchError> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(PatchError::Malformed(format!(
            "JSON pointer {pointer:?} must start with \"/\""
        )));
    };
    rest.split('/')
        .map(|token| {
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => out.push('~'),
                    Some('1') => out.push('/'),
                    _ => {
                        return Err(PatchError::Malformed(format!(
                            "JSON pointer {pointer:?} has a bad ~ escape"
                        )));
                    }
                }
            }
            Ok(out)
        })
        .collect()
}

/// An array index token: digits without leading zeros (RFC 6901 section 4).
fn index(token: &str) -> Option<usize> {
    if token.is_empty() || (token.len() > 1 && token.starts_with('0')) || !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse().ok()
}

fn get<'a>(doc: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    tokens.iter().try_fold(doc, |v, t| match v {
        Value::Object(m) => m.get(t),
        Value::Array(a) => index(t).and_then(|i| a.get(i)),
        _ => None,
    })
}

fn get_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    tokens.iter().try_fold(doc, |v, t| match v {
        Value::Object(m) => m.get_mut(t),
        Value::Array(a) => index(t).and_then(|i| a.get_mut(i)),
        _ => None,
    })
}

fn pointer_of(tokens: &[String]) -> String {
    tokens
        .iter()
        .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
        .collect()
}

fn add(doc: &mut Value, tokens: &[String], value: Value) -> Result<(), String> {
    let Some((last, parent)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    let missing_path = || missing(&pointer_of(tokens));
    match get_mut(doc, parent).ok_or_else(missing_path)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let i = if last == "-" {
                a.len()
            } else {
                index(last).ok_or_else(missing_path)?
            };
            if i > a.len() {
                return Err(format!("index {i} out of bounds for {:?}", pointer_of(parent)));
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err(missing_path()),
    }
}

fn remove(doc: &mut Value, tokens: &[String]) -> Result<Value, String> {
    let missing_path = || missing(&pointer_of(tokens));
    let Some((last, parent)) = tokens.split_last() else {
        return Ok(std::mem::take(doc));
    };
    match get_mut(doc, parent).ok_or_else(missing_path)? {
        Value::Object(m) => m.remove(last).ok_or_else(missing_path),
        Value::Array(a) => match index(last) {
            Some(i) if i < a.len() => Ok(a.remove(i)),
            _ => Err(missing_path()),
        },
        _ => Err(missing_path()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ok(doc: Value, patch: Value) -> Value {
        json_patch(&doc, &patch).unwrap_or_else(|e| panic!("{patch}: {e}"))
    }

    #[test]
    fn every_operation() {
        let doc = json!({"foo": "bar", "list": [1, 2], "obj": {"a": 1}});
        let cases = [
            (
                json!([{"op":"add","path":"/baz","value":"qux"}]),
                json!({"foo":"bar","list":[1,2],"obj":{"a":1},"baz":"qux"}),
            ),
            (
                json!([{"op":"add","path":"/list/1","value":9}]),
                json!({"foo":"bar","list":[1,9,2],"obj":{"a":1}}),
            ),
            (
                json!([{"op":"add","path":"/list/-","value":3}]),
                json!({"foo":"bar","list":[1,2,3],"obj":{"a":1}}),
            ),
            (
                json!([{"op":"remove","path":"/list/0"}]),
                json!({"foo":"bar","list":[2],"obj":{"a":1}}),
            ),
            (
                json!([{"op":"replace","path":"/foo","value":{"x":1}}]),
                json!({"foo":{"x":1},"list":[1,2],"obj":{"a":1}}),
            ),
            (
                json!([{"op":"move","from":"/obj/a","path":"/b"}]),
                json!({"foo":"bar","list":[1,2],"obj":{},"b":1}),
            ),
            (
                json!([{"op":"copy","from":"/list","path":"/obj/l"}]),
                json!({"foo":"bar","list":[1,2],"obj":{"a":1,"l":[1,2]}}),
            ),
            (
                json!([{"op":"test","path":"/obj","value":{"a":1.0}},{"op":"remove","path":"/foo"}]),
                json!({"list":[1,2],"obj":{"a":1}}),
            ),
            (json!([{"op":"add","path":"","value":[]}]), json!([])),
        ];
        for (patch, want) in cases {
            assert_eq!(ok(doc.clone(), patch.clone()), want, "{patch}");
        }
    }

    #[test]
    fn pointer_escapes() {
        let doc = json!({"metadata": {"labels": {"sublet.dev/state": "lent", "a~b": "x"}}});
        let patch = json!([
            {"op": "test", "path": "/metadata/labels/sublet.dev~1state", "value": "lent"},
            {"op": "replace", "path": "/metadata/labels/sublet.dev~1state", "value": "leased"},
            {"op": "remove", "path": "/metadata/labels/a~0b"},
        ]);
        assert_eq!(
            ok(doc, patch),
            json!({"metadata": {"labels": {"sublet.dev/state": "leased"}}})
        );
        assert_eq!(parse_pointer("/a~01").unwrap(), vec!["a~1"]);
        assert!(parse_pointer("/a~2").is_err());
        assert!(parse_pointer("a").is_err());
    }

    #[test]
    fn failures_leave_a_clear_error() {
        let doc = json!({"a": {"b": 1}, "l": [1]});
        let failed = [
            (
                json!([{"op":"test","path":"/a/b","value":2}]),
                "testing value /a/b failed: test failed",
            ),
            (
                json!([{"op":"remove","path":"/x"}]),
                "remove operation does not apply: doc is missing path: \"/x\": missing value",
            ),
            (
                json!([{"op":"replace","path":"/a/x","value":1}]),
                "replace operation does not apply: doc is missing path: \"/a/x\": missing value",
            ),
            (
                json!([{"op":"add","path":"/x/y","value":1}]),
                "add operation does not apply: doc is missing path: \"/x/y\": missing value",
            ),
            (
                json!([{"op":"add","path":"/l/5","value":1}]),
                "add operation does not apply: index 5 out of bounds for \"/l\"",
            ),
            (
                json!([{"op":"remove","path":"/l/-"}]),
                "remove operation does not apply: doc is missing path: \"/l/-\": missing value",
            ),
            (
                json!([{"op":"move","from":"/a","path":"/a/c"}]),
                "move operation cannot move \"/a\" into its child \"/a/c\"",
            ),
            (
                json!([{"op":"test","path":"/l/01","value":1}]),
                "testing value /l/01 failed: test failed",
            ),
        ];
        for (patch, want) in failed {
            match json_patch(&doc, &patch) {
                Err(PatchError::Failed(msg)) => assert_eq!(msg, want),
                other => panic!("{patch}: {other:?}"),
            }
        }
        let malformed = [
            json!({"op": "add"}),
            json!([{"op":"frob","path":"/a"}]),
            json!([{"path":"/a"}]),
            json!([{"op":"add","path":"/a"}]),
            json!([7]),
        ];
        for patch in malformed {
            assert!(
                matches!(json_patch(&doc, &patch), Err(PatchError::Malformed(_))),
                "{patch}"
            );
        }
    }
}
