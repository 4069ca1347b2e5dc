//! Server-side apply and field ownership (`metadata.managedFields`), as the API server keeps them.
//!
//! ```text
//!   apply(live, config, manager)                      record_update(old, new, manager)
//!     entries ← live.metadata.managedFields             entries ← new's managedFields if the writer set
//!     merged  ← merge(live, config)                                them, else old's
//!     applier's set ← paths of config                   changed ← diff(old, new)
//!     pruned  ← merged − (applier's old set − every     every entry loses changed and removed paths;
//!               manager's set)                          the writer's Update entry gains changed paths
//!     changed ← diff(live, pruned)
//!     other managers' fields in changed → conflicts (unless force: they lose them)
//!   entries → sorted, empty ones dropped → metadata.managedFields
//! ```
//!
//! An entry is one (manager, operation, subresource). An Apply entry's `time` moves only when the apply
//! changed the object, an Update entry's when the write changed fields, so applying the same configuration
//! twice changes nothing. Fields the server sets itself (`metadata.name`, `uid`, `resourceVersion`, ...) are
//! never owned, as on the real server.
//!
//! Left to the caller, as the real server does them outside the field manager: checking that the applied
//! `apiVersion`/`kind` match the resource, resetting the fields a (sub)resource may not write (`status` on
//! the main resource of kinds with a status subresource, everything but `status` on `/status`) in the
//! configuration before `apply` and in the new object before `record_update`, and defaulting.

mod entries;
mod fieldset;
mod last_applied;
mod merge;

use serde_json::{Value, json};

use self::entries::{Entry, Operation, read_entries, write_entries};
use self::fieldset::{FieldSet, display_path, to_set};
use super::MergeSchema;

/// One field another manager owns with another value than the applied configuration.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Conflict {
    /// The other manager's name, e.g. "kubectl-client-side-apply".
    pub manager: String,
    /// The field as the server prints it, e.g. ".spec.replicas" or ".metadata.labels.foo".
    pub field: String,
    /// "Apply" or "Update": the other manager's operation.
    pub operation: String,
    /// The API version the other manager wrote with.
    pub api_version: String,
    /// The subresource the other manager wrote through, if any.
    pub subresource: Option<String>,
}

impl Conflict {
    /// The manager as the real server names it in messages: `"A"`, `"B" using v1`, `"C" with subresource "status"`.
    pub(crate) fn manager_description(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            s.push_str(&format!(" with subresource {sub:?}"));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApplyError {
    /// Answer 409 Conflict, reason "Conflict"; see [`ApplyError::status`].
    #[error("Apply failed with {} conflicts", .0.len())]
    Conflicts(Vec<Conflict>),
    /// The applied configuration cannot be applied (not an object, items without keys, managedFields set).
    #[error("{0}")]
    Invalid(String),
}

impl ApplyError {
    /// The message as the real server words it, e.g.
    /// `Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using v1: .metadata.labels.a`.
    pub(crate) fn status_message(&self) -> String {
        let conflicts = match self {
            ApplyError::Invalid(msg) => return msg.clone(),
            ApplyError::Conflicts(c) => c,
        };
        if let [one] = conflicts.as_slice() {
            return format!(
                "Apply failed with 1 conflict: conflict with {}: {}",
                one.manager_description(),
                one.field
            );
        }
        let mut lines = Vec::new();
        let mut last = None;
        for c in conflicts {
            let who = c.manager_description();
            if last.as_ref() != Some(&who) {
                lines.push(format!("conflicts with {who}:"));
                last = Some(who);
            }
            lines.push(format!("- {}", c.field));
        }
        format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
    }

    /// The `metav1.Status` body the real server answers: 409 Conflict with one `FieldManagerConflict` cause per
    /// field; 500 InternalError for a configuration the kind's schema cannot read (the real server passes
    /// that error through unclassified); 400 BadRequest for any other invalid configuration.
    pub(crate) fn status(&self) -> Value {
        let (code, reason, details) = match self {
            ApplyError::Conflicts(conflicts) => {
                let causes: Vec<Value> = conflicts
                    .iter()
                    .map(|c| {
                        json!({"reason": "FieldManagerConflict", "message": format!("conflict with {}", c.manager_description()),
                               "field": c.field})
                    })
                    .collect();
                (409, "Conflict", Some(json!({"causes": causes})))
            }
            ApplyError::Invalid(msg) if msg.starts_with(TYPED_PATCH_ERROR) => (500, "InternalError", None),
            ApplyError::Invalid(_) => (400, "BadRequest", None),
        };
        let mut status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": self.status_message(), "reason": reason, "code": code});
        if let Some(details) = details {
            status["details"] = details;
        }
        status
    }
}

/// How the real server starts the message of an applied configuration it cannot read with the kind's schema.
const TYPED_PATCH_ERROR: &str = "failed to create typed patch object";

/// An object as the server names it in such messages: `ns/name; group/version, Kind=Kind`.
fn describe(obj: &Value) -> String {
    let s = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let (group, version) = s("/apiVersion").rsplit_once('/').unwrap_or(("", s("/apiVersion")));
    format!(
        "{}/{}; {group}/{version}, Kind={}",
        s("/metadata/namespace"),
        s("/metadata/name"),
        s("/kind")
    )
}

/// The manager the real server names for fields of an object that had no managedFields before its first apply.
const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// Fields the server sets or that identify the object: nobody owns them.
fn strip_server_fields(set: &mut FieldSet) {
    set.children.remove("f:apiVersion");
    set.children.remove("f:kind");
    if let Some(meta) = set.children.get_mut("f:metadata") {
        meta.member = false;
        for f in [
            "name",
            "namespace",
            "creationTimestamp",
            "selfLink",
            "uid",
            "clusterName",
            "generation",
        ]
        .into_iter()
        .chain(["managedFields", "resourceVersion"])
        {
            meta.children.remove(&format!("f:{f}"));
        }
        if meta.is_empty() {
            set.children.remove("f:metadata");
        }
    }
}

fn owned_paths(value: &Value, schema: &MergeSchema) -> FieldSet {
    let mut set = to_set(value, schema.root());
    strip_server_fields(&mut set);
    set
}

fn without_managed_fields(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    v
}

fn api_version_of(v: &Value) -> String {
    v.get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

struct Changes {
    changed: FieldSet,
    removed: FieldSet,
    any: bool,
}

fn changes(old: &Value, new: &Value, schema: &MergeSchema) -> Changes {
    let mut d = fieldset::diff(old, new, schema.root());
    for set in [&mut d.added, &mut d.removed, &mut d.modified] {
        strip_server_fields(set);
    }
    let any = !d.is_empty();
    Changes {
        changed: d.modified.union(&d.added),
        removed: d.removed,
        any,
    }
}

/// Applies `config` (the applied configuration, already parsed from YAML/JSON) for `manager`.
/// `live` is the current object (None on create). Returns the new object with metadata.managedFields
/// updated (`now` is the RFC 3339 time for the entry). Fields the manager applied before and omits now are
/// removed if no other manager owns them; conflicts with other managers' fields of different value fail
/// unless `force`, which takes the fields over. `subresource` is e.g. Some("status").
///
/// For the manager `kubectl`, the client-side apply annotation counts as the real server counts it: fields
/// it recorded with their live values do not conflict, and an existing annotation is kept up to date.
pub(crate) fn apply(
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
    subresource: Option<&str>,
    schema: &MergeSchema,
    now: &str,
) -> Result<Value, ApplyError> {
    let applied = match apply_fields(live, config, manager, force, subresource, schema, now) {
        Err(ApplyError::Conflicts(conflicts)) if manager == last_applied::KUBECTL => {
            match last_applied::allowed_conflicts(live, config, schema) {
                Some(allowed) if conflicts.iter().all(|c| allowed.contains(&c.field)) => {
                    apply_fields(live, config, manager, true, subresource, schema, now)
                }
                Some(allowed) => Err(ApplyError::Conflicts(
                    conflicts.into_iter().filter(|c| !allowed.contains(&c.field)).collect(),
                )),
                None => Err(ApplyError::Conflicts(conflicts)),
            }
        }
        other => other,
    };
    let mut applied = applied?;
    if manager == last_applied::KUBECTL {
        last_applied::sync(&mut applied, config);
    }
    Ok(applied)
}

/// The field manager's apply: merge, prune, conflicts, managedFields.
fn apply_fields(
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
    subresource: Option<&str>,
    schema: &MergeSchema,
    now: &str,
) -> Result<Value, ApplyError> {
    let config = checked_config(config, schema)?;
    // The live managedFields ride along through merge and diff unchanged (nobody owns them) and are
    // rewritten at the end, which saves copying the object without them.
    let empty = merge::empty_object();
    let live_obj = live.unwrap_or(&empty);
    let mut entries = live_entries(live, schema, now);
    let idx = applier_entry(&mut entries, manager, subresource);
    let last_set = std::mem::replace(&mut entries[idx].set, owned_paths(&config, schema));
    entries[idx].api_version = api_version_of(&config);

    let mut result = merged_and_pruned(live_obj, &config, &last_set, &entries, schema);
    let ch = changes(live_obj, &result, schema);
    let conflicts = conflicting_fields(&entries, idx, &ch.changed);
    if !conflicts.is_empty() && !force {
        return Err(ApplyError::Conflicts(conflicts));
    }
    for (i, e) in entries.iter_mut().enumerate() {
        if i != idx {
            e.set.remove_all(&ch.changed);
            e.set.remove_all(&ch.removed);
        }
    }
    // As on the real server, the applier's time moves only when the object changed.
    if ch.any {
        entries[idx].time = Some(now.to_string());
    }
    write_entries(&mut result, entries);
    Ok(result)
}

/// The applied configuration as the server takes it: an object without managedFields, nulls dropped, every
/// key one the schema allows.
fn checked_config(config: &Value, schema: &MergeSchema) -> Result<Value, ApplyError> {
    if !config.is_object() {
        return Err(ApplyError::Invalid(
            "the applied configuration must be an object".into(),
        ));
    }
    if config.pointer("/metadata/managedFields").is_some_and(|v| !v.is_null()) {
        return Err(ApplyError::Invalid("metadata.managedFields must be nil".into()));
    }
    let config = merge::without_nulls(config);
    merge::check_keys(&config, schema.root(), &mut String::new())
        .map_err(|e| ApplyError::Invalid(format!("{TYPED_PATCH_ERROR} ({}): {e}", describe(&config))))?;
    Ok(config)
}

/// The live object's managedFields; an object that has none is owned as a whole by `before-first-apply`.
fn live_entries(live: Option<&Value>, schema: &MergeSchema, now: &str) -> Vec<Entry> {
    let mut entries = live.map(read_entries).unwrap_or_default();
    if let Some(live) = live.filter(|_| entries.is_empty()) {
        entries.push(Entry::new(
            BEFORE_FIRST_APPLY,
            Operation::Update,
            api_version_of(live),
            None,
            owned_paths(live, schema),
            Some(now),
        ));
    }
    entries
}

/// The index of `manager`'s apply entry for `subresource`, added empty when it has none.
fn applier_entry(entries: &mut Vec<Entry>, manager: &str, subresource: Option<&str>) -> usize {
    let key = (manager, Operation::Apply, subresource);
    match entries.iter().position(|e| e.is(key)) {
        Some(i) => i,
        None => {
            entries.push(Entry::new(
                manager,
                Operation::Apply,
                String::new(),
                subresource,
                FieldSet::default(),
                None,
            ));
            entries.len() - 1
        }
    }
}

/// `config` merged into the live object, without the fields the applier had set before (`last_set`) and
/// no manager owns now.
fn merged_and_pruned(
    live_obj: &Value,
    config: &Value,
    last_set: &FieldSet,
    entries: &[Entry],
    schema: &MergeSchema,
) -> Value {
    let mut result = merge::merge(live_obj, config, schema.root());
    let mut dropped = last_set.clone();
    for e in entries {
        dropped.remove_all(&e.set);
    }
    if !dropped.is_empty() {
        let keep: Vec<&FieldSet> = entries.iter().map(|e| &e.set).collect();
        merge::prune(&mut result, &dropped, &keep, schema.root());
    }
    result
}

/// The changed fields other managers own, grouped by manager as the real server prints them; a stable sort
/// keeps each manager's path order. (The server sorts by its manager identifier: name, operation, API
/// version, subresource.)
fn conflicting_fields(entries: &[Entry], applier: usize, changed: &FieldSet) -> Vec<Conflict> {
    let mut conflicts = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if i == applier {
            continue;
        }
        for path in e.set.intersection(changed).paths() {
            conflicts.push(Conflict {
                manager: e.manager.clone(),
                field: display_path(&path),
                operation: e.operation.as_str().to_string(),
                api_version: e.api_version.clone(),
                subresource: e.subresource.clone(),
            });
        }
    }
    let key = |c: &Conflict| {
        (
            c.manager.clone(),
            c.operation.clone(),
            c.api_version.clone(),
            c.subresource.clone(),
        )
    };
    conflicts.sort_by_key(key);
    conflicts
}

/// Records a non-apply write (create, update, any other patch) by `manager`: the fields that changed
/// between `old` and `new` become owned by `manager` with operation Update, and are removed from other
/// managers' sets. Returns `new` with metadata.managedFields updated.
///
/// As on the real server: managedFields the writer sent replace `old`'s unless they are absent or
/// undecodable, `[]` or `[{}]` clears them all, and writes through a subresource always keep `old`'s. An
/// existing object that has no managedFields is not tracked until its first apply. More than ten Update
/// entries are folded, oldest first, into one `ancient-changes` entry per API version.
pub(crate) fn record_update(
    old: Option<&Value>,
    new: &Value,
    manager: &str,
    subresource: Option<&str>,
    schema: &MergeSchema,
    now: &str,
) -> Value {
    let sent = new.pointer("/metadata/managedFields").and_then(Value::as_array);
    let through_subresource = subresource.is_some_and(|s| !s.is_empty());
    let reset = !through_subresource && sent.is_some_and(|a| a.is_empty() || (a.len() == 1 && a[0] == json!({})));
    let mut entries = if reset {
        Vec::new()
    } else {
        let from_request = if through_subresource {
            Vec::new()
        } else {
            read_entries(new)
        };
        match (from_request.is_empty(), old) {
            (false, _) => from_request,
            (true, Some(old)) => read_entries(old),
            (true, None) => Vec::new(),
        }
    };
    let mut result = without_managed_fields(new);
    if entries.is_empty() && old.is_some() {
        return result;
    }
    // managedFields differences show in the diff but are stripped with the other server-set fields.
    let empty = merge::empty_object();
    let ch = changes(old.unwrap_or(&empty), new, schema);
    for e in entries.iter_mut() {
        e.set.remove_all(&ch.changed);
        e.set.remove_all(&ch.removed);
    }
    if !ch.changed.is_empty() {
        let key = (manager, Operation::Update, subresource);
        let idx = match entries.iter().position(|e| e.is(key)) {
            Some(i) => i,
            None => {
                let entry = Entry::new(
                    manager,
                    Operation::Update,
                    String::new(),
                    subresource,
                    FieldSet::default(),
                    None,
                );
                entries.push(entry);
                entries.len() - 1
            }
        };
        let own = &mut entries[idx];
        own.set.union_with(&ch.changed);
        own.api_version = api_version_of(new);
        own.time = Some(now.to_string());
    }
    entries.retain(|e| !e.set.is_empty());
    cap_update_entries(&mut entries);
    write_entries(&mut result, entries);
    result
}

/// How many Update entries an object keeps before the oldest are folded together, as on the real server.
const MAX_UPDATE_ENTRIES: usize = 10;
const ANCIENT_CHANGES: &str = "ancient-changes";

/// Folds the oldest Update entries into one `ancient-changes` entry per API version until at most
/// [`MAX_UPDATE_ENTRIES`] remain. The first old entry of a version becomes the bucket only once a second
/// one joins it; the bucket keeps the time of the newest entry folded in.
fn cap_update_entries(entries: &mut Vec<Entry>) {
    let mut updaters: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].operation == Operation::Update)
        .collect();
    if updaters.len() <= MAX_UPDATE_ENTRIES {
        return;
    }
    updaters.sort_by(|&a, &b| {
        let (a, b) = (&entries[a], &entries[b]);
        (&a.time, &a.manager, &a.subresource).cmp(&(&b.time, &b.manager, &b.subresource))
    });
    let mut remaining = updaters.len();
    let mut first_of_version: Vec<(String, usize)> = Vec::new();
    let mut folded = vec![false; entries.len()];
    for &i in &updaters {
        if remaining <= MAX_UPDATE_ENTRIES {
            break;
        }
        let version = entries[i].api_version.clone();
        let Some(first) = first_of_version.iter().find(|(v, _)| *v == version).map(|&(_, f)| f) else {
            first_of_version.push((version, i));
            continue;
        };
        let bucket_key = (ANCIENT_CHANGES, Operation::Update, None);
        let existing =
            (0..entries.len()).find(|&b| !folded[b] && entries[b].is(bucket_key) && entries[b].api_version == version);
        let bucket = existing.unwrap_or_else(|| {
            let b = &mut entries[first];
            b.manager = ANCIENT_CHANGES.to_string();
            b.subresource = None;
            first
        });
        if bucket == i {
            continue;
        }
        let (set, time) = (entries[i].set.clone(), entries[i].time.clone());
        entries[bucket].set.union_with(&set);
        entries[bucket].time = time;
        folded[i] = true;
        remaining -= 1;
    }
    let mut i = 0;
    entries.retain(|_| {
        i += 1;
        !folded[i - 1]
    });
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
