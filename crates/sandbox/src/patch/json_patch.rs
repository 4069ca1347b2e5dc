//! JSON patch (RFC 6902) with the API server's exact behaviour.
//!
//! The operations run in order on one copy of the document; the first failure aborts the whole patch, so
//! a failed `test` leaves the stored object untouched. The API server uses the Go library
//! `evanphx/json-patch` (v4), which differs from the RFC in ways clients can observe; they are kept here, and
//! the error texts are its texts (checked against `kubectl patch --local`, which uses the same library):
//!
//! - `replace` of a missing object key adds it; `copy` from a missing object key copies `null`;
//! - `test` of a missing object key against `null` succeeds;
//! - array indexes are parsed like Go's `strconv.Atoi` (leading zeros, signs) and negative ones count from
//!   the end; an operation without `value` uses `null`.

use serde_json::Value;

use super::{PatchError, json_equal};

/// Applies an RFC 6902 patch (an array of operations) to `doc`.
///
/// `Malformed` is what the server rejects while decoding the patch (400 Bad Request): not an array of
/// objects. Everything else fails while applying it (`Failed`, the server's 422), including an unknown `op`
/// or a `path` that is not a string.
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Array(ops) = patch else {
        return Err(PatchError::Malformed(format!(
            "json: cannot unmarshal {} into Go value of type jsonpatch.Patch",
            json_kind(patch)
        )));
    };
    if let Some(op) = ops.iter().find(|op| !op.is_object()) {
        return Err(PatchError::Malformed(format!(
            "json: cannot unmarshal {} into Go value of type jsonpatch.Operation",
            json_kind(op)
        )));
    }
    let mut doc = doc.clone();
    for fields in ops.iter().filter_map(Value::as_object) {
        let text = |name: &str| fields.get(name).and_then(Value::as_str);
        let kind = text("op").unwrap_or("unknown");
        let (path, from) = (text("path"), text("from"));
        let value = fields.get("value").cloned().unwrap_or(Value::Null);
        let missing_field = |field: &str| {
            let detail = if field == "from" {
                "operation, missing from field: missing value"
            } else {
                "missing value"
            };
            failed(format!("{kind} operation failed to decode {field}: {detail}"))
        };
        match kind {
            "add" => add(&mut doc, path.ok_or_else(|| missing_field("path"))?, value),
            "remove" => remove(&mut doc, path.ok_or_else(|| missing_field("path"))?),
            "replace" => replace(&mut doc, path.ok_or_else(|| missing_field("path"))?, value),
            "move" => move_op(
                &mut doc,
                from.ok_or_else(|| missing_field("from"))?,
                path.ok_or_else(|| missing_field("path"))?,
            ),
            "copy" => copy(
                &mut doc,
                from.ok_or_else(|| missing_field("from"))?,
                path.ok_or_else(|| missing_field("path"))?,
            ),
            "test" => test(&mut doc, path.ok_or_else(|| missing_field("path"))?, &value),
            other => Err(failed(format!("Unexpected kind: {other}"))),
        }?;
    }
    Ok(doc)
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn failed(msg: String) -> PatchError {
    PatchError::Failed(msg)
}

/// Unescapes one reference token as the library does (`~1` then `~0`; other `~` sequences stay).
fn decode_token(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// The container (object or array) holding the last token of `path`, and that token. None when the path has
/// no `/` or a token on the way does not exist or is not a container.
fn find_container<'a>(doc: &'a mut Value, path: &str) -> Option<(&'a mut Value, String)> {
    let mut parts = path.split('/');
    parts.next()?;
    let mut parts: Vec<&str> = parts.collect();
    let key = decode_token(parts.pop()?);
    let mut cur = doc;
    for part in parts {
        let token = decode_token(part);
        cur = match cur {
            Value::Object(m) => m.get_mut(&token)?,
            Value::Array(a) => {
                let i = array_index(&token, a.len()).ok()?;
                a.get_mut(i)?
            }
            _ => return None,
        };
    }
    matches!(cur, Value::Object(_) | Value::Array(_)).then_some((cur, key))
}

/// An index into an array of `len` items, as the library reads it for get, replace and remove.
fn array_index(token: &str, len: usize) -> Result<usize, String> {
    let i: i64 = token
        .parse()
        .map_err(|_| format!("strconv.Atoi: parsing {token:?}: invalid syntax"))?;
    let len = len as i64;
    let idx = if i < 0 { i + len } else { i };
    if i < -len || idx >= len {
        return Err(format!("Unable to access invalid index: {i}: invalid index referenced"));
    }
    Ok(idx as usize)
}

/// Reads `key` of a container: Ok(None) for a missing object key, Err for a bad array index.
fn get<'a>(container: &'a Value, key: &str) -> Result<Option<&'a Value>, String> {
    match container {
        Value::Object(m) => Ok(m.get(key)),
        Value::Array(a) => array_index(key, a.len()).map(|i| a.get(i)),
        _ => Ok(None),
    }
}

fn insert(container: &mut Value, key: &str, value: Value) -> Result<(), String> {
    match container {
        Value::Object(m) => {
            m.insert(key.to_string(), value);
            Ok(())
        }
        Value::Array(a) => {
            if key == "-" {
                a.push(value);
                return Ok(());
            }
            let i: i64 = key
                .parse()
                .map_err(|_| format!("value was not a proper array index: '{key}'"))?;
            let size = a.len() as i64 + 1;
            let idx = if i < 0 { i + size } else { i };
            if i >= size || i < -size {
                return Err(format!("Unable to access invalid index: {i}: invalid index referenced"));
            }
            a.insert(idx as usize, value);
            Ok(())
        }
        _ => Err("not a container".into()),
    }
}

fn take(container: &mut Value, key: &str) -> Result<Value, String> {
    match container {
        Value::Object(m) => m
            .remove(key)
            .ok_or_else(|| format!("Unable to remove nonexistent key: {key}: missing value")),
        Value::Array(a) => array_index(key, a.len()).map(|i| a.remove(i)),
        _ => Err("not a container".into()),
    }
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), PatchError> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (con, key) = find_container(doc, path).ok_or_else(|| {
        failed(format!(
            "add operation does not apply: doc is missing path: {path:?}: missing value"
        ))
    })?;
    insert(con, &key, value).map_err(|e| failed(format!("error in add for path: '{path}': {e}")))
}

fn remove(doc: &mut Value, path: &str) -> Result<(), PatchError> {
    let (con, key) = find_container(doc, path).ok_or_else(|| {
        failed(format!(
            "remove operation does not apply: doc is missing path: {path:?}: missing value"
        ))
    })?;
    take(con, &key)
        .map(drop)
        .map_err(|e| failed(format!("error in remove for path: '{path}': {e}")))
}

fn replace(doc: &mut Value, path: &str, value: Value) -> Result<(), PatchError> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (con, key) = find_container(doc, path).ok_or_else(|| {
        failed(format!(
            "replace operation does not apply: doc is missing path: {path}: missing value"
        ))
    })?;
    match con {
        Value::Object(m) => {
            m.insert(key, value);
            Ok(())
        }
        Value::Array(a) => {
            let i = array_index(&key, a.len())
                .map_err(|_| failed(format!("Object to be patched is missing field ({path}: missing value)")))?;
            a[i] = value;
            Ok(())
        }
        _ => unreachable!("find_container returns containers only"),
    }
}

fn move_op(doc: &mut Value, from: &str, path: &str) -> Result<(), PatchError> {
    let (con, key) = find_container(doc, from).ok_or_else(|| {
        failed(format!(
            "move operation does not apply: doc is missing from path: {from}: missing value"
        ))
    })?;
    let value = take(con, &key).map_err(|e| failed(format!("error in move for path: '{key}': {e}")))?;
    let (con, key) = find_container(doc, path).ok_or_else(|| {
        failed(format!(
            "move operation does not apply: doc is missing destination path: {path}: missing value"
        ))
    })?;
    insert(con, &key, value).map_err(|e| failed(format!("error in move for path: '{path}': {e}")))
}

fn copy(doc: &mut Value, from: &str, path: &str) -> Result<(), PatchError> {
    let (con, key) = find_container(doc, from).ok_or_else(|| {
        failed(format!(
            "copy operation does not apply: doc is missing from path: {from}: missing value"
        ))
    })?;
    let value = get(con, &key)
        .map_err(|e| failed(format!("error in copy for from: '{from}': {e}")))?
        .cloned()
        .unwrap_or(Value::Null);
    let (con, key) = find_container(doc, path).ok_or_else(|| {
        failed(format!(
            "copy operation does not apply: doc is missing destination path: {path}: missing value"
        ))
    })?;
    insert(con, &key, value).map_err(|e| failed(format!("error while adding value during copy: {e}")))
}

fn test(doc: &mut Value, path: &str, want: &Value) -> Result<(), PatchError> {
    let test_failed = || failed(format!("testing value {path} failed: test failed"));
    if path.is_empty() {
        return if json_equal(doc, want) {
            Ok(())
        } else {
            Err(test_failed())
        };
    }
    let (con, key) = find_container(doc, path).ok_or_else(|| {
        failed(format!(
            "test operation does not apply: is missing path: {path}: missing value"
        ))
    })?;
    match get(con, &key).map_err(|e| failed(format!("error in test for path: '{path}': {e}")))? {
        None if want.is_null() => Ok(()),
        Some(have) if json_equal(have, want) => Ok(()),
        _ => Err(test_failed()),
    }
}

#[cfg(test)]
mod tests;
