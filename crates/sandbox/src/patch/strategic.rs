//! Strategic merge patch, as the API server applies `application/strategic-merge-patch+json` to built-in kinds.
//!
//! ```text
//!   merge_map(original, patch, schema node)
//!     $patch: replace | delete                the map is replaced / emptied
//!     $retainKeys: [..]                       original keys not listed are dropped
//!     $deleteFromPrimitiveList/F: [..]        values removed from the set list F
//!     F: null                                 F deleted
//!     F: {..} / [..] / scalar                 merge_map / merge_list / replace
//!     $setElementOrder/F: [..]                F reordered after the merge
//!   merge_list(original, patch, schema node)
//!     Atomic: replaced   Set: union   Map(keys): items matched by the first key (the Go patchMergeKey);
//!     `{"$patch": "delete", key: v}` items are removed first, then the others merged or added;
//!     `{"$patch": "replace"}` replaces the list. The patch's items come out in the patch's order, each of the
//!     server's other items just before the first patch item the server had after it.
//! ```
//!
//! Results are checked against `kubectl patch --local` (tests/offline/patch_kubectl.rs), which runs the Go library
//! the API server uses. Content the patch adds is stored as the server stores it after decoding into the
//! kind's Go structs: without `null` fields and `$` keys. Matching indexes each list once, so a patch costs
//! time linear in the list lengths.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::PatchError;
use super::schema::{ListType, MergeSchema, Node};

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";

/// Applies a strategic merge patch to `doc`, merging lists and maps as `schema` says.
pub fn strategic_merge_patch(doc: &Value, patch: &Value, schema: &MergeSchema) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::Malformed(
            "a strategic merge patch must be a JSON object".into(),
        ));
    };
    let mut out = match doc {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    merge_map(&mut out, patch, schema.root())?;
    Ok(Value::Object(out))
}

fn merge_map(original: &mut Map<String, Value>, patch: &Map<String, Value>, node: &Node) -> Result<(), PatchError> {
    match patch.get(DIRECTIVE) {
        None => {}
        Some(Value::String(d)) if d == "replace" => {
            if let Value::Object(replaced) = sanitized(&Value::Object(patch.clone())) {
                *original = replaced;
            }
            return Ok(());
        }
        Some(Value::String(d)) if d == "delete" => {
            original.clear();
            return Ok(());
        }
        Some(other) => {
            return Err(PatchError::Malformed(format!(
                "unknown patch type: {other} in map: {}",
                Value::Object(patch.clone())
            )));
        }
    }
    // Maps atomic for server-side apply (label selectors, ...) still merge here: the Go struct tags that
    // drive strategic merge have no atomic maps.
    if let Some(keys) = patch.get(RETAIN_KEYS) {
        let keys: HashSet<&str> = keys
            .as_array()
            .ok_or_else(|| PatchError::Malformed(format!("{RETAIN_KEYS} must be a list of field names")))?
            .iter()
            .map(|k| {
                k.as_str()
                    .ok_or_else(|| PatchError::Malformed(format!("{RETAIN_KEYS} holds non-string {k}")))
            })
            .collect::<Result<_, _>>()?;
        // The Go implementation rejects a patch that sets a field its own $retainKeys would drop.
        if patch.keys().any(|k| !k.starts_with('$') && !keys.contains(k.as_str())) {
            return Err(PatchError::Malformed("invalid patch format of retainKeys".into()));
        }
        original.retain(|k, _| keys.contains(k.as_str()));
    }
    for (key, values) in patch {
        if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            let values = values
                .as_array()
                .ok_or_else(|| PatchError::Malformed(format!("{key} must be a list")))?;
            if let Some(Value::Array(list)) = original.get_mut(field) {
                let gone: HashSet<String> = values.iter().map(Value::to_string).collect();
                list.retain(|v| !gone.contains(&v.to_string()));
            }
        }
    }
    // The server's order of each list the patch orders, taken before the merge changes it.
    let mut server_orders = Vec::new();
    for (key, order) in patch {
        if let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER) {
            let order = order
                .as_array()
                .ok_or_else(|| PatchError::Malformed(format!("{key} must be a list")))?;
            let list_type = node.field(field).list_type();
            let server: HashMap<String, usize> = match original.get(field) {
                Some(Value::Array(list)) => ranks(list, list_type),
                _ => HashMap::new(),
            };
            server_orders.push((field, order, list_type, server));
        }
    }
    merge_fields(original, patch, node)?;
    for (field, order, list_type, server) in server_orders {
        if let Some(Value::Array(list)) = original.get_mut(field) {
            reorder(list, order, list_type, &server);
        }
    }
    Ok(())
}

/// Merges the plain (non-directive) fields of `patch` into `original`.
fn merge_fields(original: &mut Map<String, Value>, patch: &Map<String, Value>, node: &Node) -> Result<(), PatchError> {
    for (key, value) in patch {
        // Directives were handled by the caller. Other `$` keys are no field of any built-in kind: the real
        // server's typed decoding drops them, so they are dropped here.
        if key.starts_with('$') {
            continue;
        }
        if value.is_null() {
            original.remove(key);
            continue;
        }
        let child = node.field(key);
        match (original.get_mut(key), value) {
            (Some(Value::Object(o)), Value::Object(p)) => merge_map(o, p, child)?,
            (Some(Value::Array(o)), Value::Array(p)) => merge_list(o, p, child)?,
            // A map with a `$patch` directive where there is no map to apply it to is dropped by the Go library.
            (_, Value::Object(p)) if p.contains_key(DIRECTIVE) => {
                original.remove(key);
            }
            _ => {
                original.insert(key.clone(), fresh(value, child)?);
            }
        }
    }
    Ok(())
}

/// A patch value where the original has none: a map is merged into an empty one, so nested directives
/// apply; a list is taken as the Go implementation takes it (`removeDirectives`): items with a `$patch`
/// directive dropped, the others as sent, two items with the same merge key both kept.
fn fresh(value: &Value, node: &Node) -> Result<Value, PatchError> {
    Ok(match value {
        Value::Object(p) => {
            let mut m = Map::new();
            merge_map(&mut m, p, node)?;
            Value::Object(m)
        }
        Value::Array(_) => without_directives(value).unwrap_or(Value::Array(Vec::new())),
        other => other.clone(),
    })
}

/// `value` without the maps that carry a `$patch` directive (`None` when it is one), and, as the server's
/// typed decoding stores it, without other `$` keys and null fields.
fn without_directives(value: &Value) -> Option<Value> {
    match value {
        Value::Object(m) if m.contains_key(DIRECTIVE) => None,
        Value::Object(m) => Some(Value::Object(
            m.iter()
                .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
                .filter_map(|(k, v)| Some((k.clone(), without_directives(v)?)))
                .collect(),
        )),
        Value::Array(a) => Some(Value::Array(a.iter().filter_map(without_directives).collect())),
        other => Some(other.clone()),
    }
}

/// A patch value taken as it is (nothing to merge it with), as the server stores it: the Go library copies
/// it with its directives, and decoding into the kind's Go structs then drops `$` keys and null fields.
fn sanitized(value: &Value) -> Value {
    match value {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
                .map(|(k, v)| (k.clone(), sanitized(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(sanitized).collect()),
        other => other.clone(),
    }
}

fn directive_of(item: &Value) -> Option<&Value> {
    item.as_object().and_then(|m| m.get(DIRECTIVE))
}

fn merge_list(original: &mut Vec<Value>, patch: &[Value], node: &Node) -> Result<(), PatchError> {
    let replace = patch
        .iter()
        .any(|i| directive_of(i).and_then(Value::as_str) == Some("replace"));
    let list_type = node.list_type();
    if replace || *list_type == ListType::Atomic {
        // Taken as sent, as the Go implementation does for lists it does not merge.
        *original = patch
            .iter()
            .filter(|i| directive_of(i).is_none())
            .map(sanitized)
            .collect();
        return Ok(());
    }
    let mut server = ranks(original, list_type);
    match list_type {
        ListType::Atomic => unreachable!("handled above"),
        ListType::Set => merge_set(original, patch),
        ListType::Map(keys) => {
            let key = keys.first().map(String::as_str).unwrap_or("name");
            // Deletions first, then merges, as the Go implementation does.
            let (deleted, merges) = deletions_and_merges(patch, key)?;
            if !deleted.is_empty() {
                original.retain(|v| v.get(key).is_none_or(|k| !deleted.contains(&k.to_string())));
                // The Go implementation orders by the server's list as it is after the deletions: an item
                // deleted and sent again is new to it, and comes before the items only the server has.
                server = ranks(original, list_type);
            }
            merge_by_key(original, merges, key, node.item())?;
        }
    }
    // The patch's items come out in the patch's order, as the Go implementation orders every merged list.
    let order: Vec<Value> = patch.iter().filter(|i| directive_of(i).is_none()).cloned().collect();
    reorder(original, &order, list_type, &server);
    Ok(())
}

/// Adds the patch's items a set list does not hold yet.
fn merge_set(original: &mut Vec<Value>, patch: &[Value]) {
    let mut seen: HashSet<String> = original.iter().map(Value::to_string).collect();
    for item in patch {
        if seen.insert(item.to_string()) {
            original.push(sanitized(item));
        }
    }
}

/// A map-list patch item to merge: its merge key's value, the item, its fields.
type Merge<'a> = (String, &'a Value, &'a Map<String, Value>);

/// Sorts a map-list patch into the merge keys its `$patch: delete` items name and the items to merge; an
/// item that is no object, lacks the merge key or carries another directive is refused.
fn deletions_and_merges<'a>(patch: &'a [Value], key: &str) -> Result<(HashSet<String>, Vec<Merge<'a>>), PatchError> {
    let mut deleted = HashSet::new();
    let mut merges = Vec::with_capacity(patch.len());
    for item in patch {
        let Value::Object(fields) = item else {
            return Err(PatchError::Malformed(format!(
                "list item {item} must be an object: the list merges by {key}"
            )));
        };
        let Some(k) = fields.get(key).map(Value::to_string) else {
            return Err(PatchError::Malformed(format!(
                "map: {item} does not contain declared merge key: {key}"
            )));
        };
        match fields.get(DIRECTIVE).map(|d| (d, d.as_str())) {
            None => merges.push((k, item, fields)),
            Some((_, Some("delete"))) => {
                deleted.insert(k);
            }
            Some((_, Some("merge"))) => {
                return Err(PatchError::Malformed(
                    "merging lists cannot yet be specified in the patch".into(),
                ));
            }
            Some((d, _)) => {
                return Err(PatchError::Malformed(format!(
                    "unknown patch type: {d} in list item: {item}"
                )));
            }
        }
    }
    Ok((deleted, merges))
}

/// Merges each patch item into the item with the same merge key, or appends it when there is none.
fn merge_by_key(
    original: &mut Vec<Value>,
    merges: Vec<Merge<'_>>,
    key: &str,
    item_node: &Node,
) -> Result<(), PatchError> {
    let mut index: HashMap<String, usize> = original
        .iter()
        .enumerate()
        .filter_map(|(i, v)| Some((v.get(key)?.to_string(), i)))
        .collect();
    for (k, item, fields) in merges {
        match index.get(&k) {
            Some(&i) => match &mut original[i] {
                Value::Object(o) => merge_map(o, fields, item_node)?,
                other => *other = sanitized(item),
            },
            None => {
                index.insert(k, original.len());
                original.push(sanitized(item));
            }
        }
    }
    Ok(())
}

/// The identity of a list item for ordering: its value in a set, its first key in a map list.
fn order_key(v: &Value, list_type: &ListType) -> Option<String> {
    match list_type {
        ListType::Atomic => None,
        ListType::Set => Some(v.to_string()),
        ListType::Map(keys) => v.get(keys.first()?).map(Value::to_string),
    }
}

fn ranks(list: &[Value], list_type: &ListType) -> HashMap<String, usize> {
    list.iter()
        .enumerate()
        .filter_map(|(i, v)| Some((order_key(v, list_type)?, i)))
        .collect()
}

/// Orders `list` as the Go implementation does: the items `order` names in that order, with the items only
/// the server has (in the server's order) placed before the first named item the server had after them.
fn reorder(list: &mut Vec<Value>, order: &[Value], list_type: &ListType, server: &HashMap<String, usize>) {
    if *list_type == ListType::Atomic {
        return;
    }
    let rank = ranks(order, list_type);
    let keyed = |v: Value| (order_key(&v, list_type), v);
    let (mut named, mut server_only): (Vec<_>, Vec<_>) = std::mem::take(list)
        .into_iter()
        .map(keyed)
        .partition(|(k, _)| k.as_ref().is_some_and(|k| rank.contains_key(k)));
    let position = |k: &Option<String>, ranks: &HashMap<String, usize>| k.as_ref().and_then(|k| ranks.get(k).copied());
    named.sort_by_key(|(k, _)| position(k, &rank));
    server_only.sort_by_key(|(k, _)| position(k, server).unwrap_or(usize::MAX));
    let (mut left, mut right) = (server_only.into_iter().peekable(), named.into_iter().peekable());
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
            (Some((l, _)), Some((r, _))) => match (position(l, server), position(r, server)) {
                (Some(l), Some(r)) => l < r,
                _ => false,
            },
        };
        let next = if take_left { left.next() } else { right.next() };
        list.extend(next.map(|(_, v)| v));
    }
}

#[cfg(test)]
mod tests;
