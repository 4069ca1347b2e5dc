//! The API verbs over the store: what create, update, patch, delete, get and list mean for any kind, on the
//! [`Cluster`] that holds the store, the registry and the controllers' queue.
//!
//! ```text
//!  HTTP handler / in-process API
//!     └▶ Cluster::{create, update, patch, delete}
//!          ├▶ metadata (uid, timestamps, generation, finalizers, status subresource split)
//!          ├▶ builtin hooks (pods, namespaces, CRDs, PDBs)         builtin/
//!          ├▶ custom resource schema: default, prune, validate      admission → schema
//!          ├▶ managedFields, patches, server-side apply            pipeline → patch
//!          ├▶ ValidatingAdmissionPolicies                          admission → vap
//!          └▶ Store::write (optimistic: a concurrent write makes us recompute, a stale client rv is a 409)
//!  Controllers (builtin/controllers.rs) follow the store's events for what the real control plane does
//!  asynchronously: garbage collection, namespace and CRD cleanup, pod grace periods, PDB status.
//! ```

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::admission;
use super::authorization;
use super::builtin;
use super::convert;
use super::error::{ApiError, GroupResource};
use super::meta::{self, Ids};
use super::pipeline;
use super::registry::{Registry, ResourceType};
use super::selector::selectable_fields;
use super::store::{Store, StoreError, Stored, Write};

mod delete;
mod list;
mod system;
mod types;

pub use types::{Caller, DeleteOpts, PatchKind};
pub(crate) use types::{Kick, ListOpts, ListResult, Settings, WriteCtx};

pub(crate) struct Cluster {
    pub store: Store,
    pub registry: Registry,
    pub ids: Ids,
    pub settings: Settings,
    kicks: mpsc::UnboundedSender<Kick>,
    /// Held from an eviction's budget check to its delete, so that concurrent evictions (kubectl drain
    /// evicts in parallel) cannot both spend the last allowed disruption; the real server gets the same from
    /// its resourceVersion precondition on the PDB's status.
    pub(crate) evictions: std::sync::Mutex<()>,
}

impl Cluster {
    /// Every stored object of one resource (by its store key), for the checks that read a whole kind
    /// (RBAC objects, admission policies and their bindings, namespaces).
    pub(crate) fn values(&self, key: &str) -> Vec<Value> {
        self.store
            .list(key, None, None, None, |_| true)
            .items
            .iter()
            .map(|s| s.value())
            .collect()
    }

    pub(crate) fn new(settings: Settings, history: usize) -> (Arc<Cluster>, mpsc::UnboundedReceiver<Kick>) {
        let (kicks, rx) = mpsc::unbounded_channel();
        let cluster = Cluster {
            store: Store::new(history),
            registry: Registry::new(),
            ids: Ids::default(),
            settings,
            kicks,
            evictions: std::sync::Mutex::new(()),
        };
        (Arc::new(cluster), rx)
    }

    pub(crate) fn kick(&self, kick: Kick) {
        // The controllers run as long as the server; a closed channel only happens at shutdown.
        let _ = self.kicks.send(kick);
    }

    pub(crate) fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.live(rt, ns, name).map(|s| convert::from_stored(rt, s.value()))
    }

    /// The stored object as it is now; 404 when there is none.
    fn live(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Arc<Stored>, ApiError> {
        self.store
            .get(&rt.key(), ns, name)
            .ok_or_else(|| ApiError::not_found(&rt.gr(), name))
    }

    /// Creates an object (`ns` for namespaced kinds).
    pub(crate) fn create(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        obj: Value,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        if let Some(core) = self.storage_of(rt) {
            let created = self.create_with(&core, ns, convert::to_stored(rt, obj), ctx, false)?;
            return Ok(convert::from_stored(rt, created));
        }
        self.create_with(rt, ns, obj, ctx, false)
    }

    /// The resource whose storage a view (events.k8s.io/v1 events) shares.
    fn storage_of(&self, rt: &ResourceType) -> Option<Arc<ResourceType>> {
        if convert::is_view(rt) {
            self.registry.by_key(&rt.key())
        } else {
            None
        }
    }

    fn create_with(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        mut obj: Value,
        ctx: &WriteCtx,
        managed_done: bool,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::BadRequest(
                "the body of the request must be a JSON object".into(),
            ));
        }
        let ns = self.place(rt, ns, &mut obj)?;
        let name = self.name_for_create(rt, &mut obj)?;
        if rt.namespaced {
            self.check_namespace_open(rt, &ns, &name)?;
        }
        let m = meta::metadata(&mut obj);
        if m.get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|rv| !rv.is_empty())
        {
            return Err(ApiError::BadRequest(
                "resourceVersion should not be set on objects to be created".into(),
            ));
        }
        m.insert("uid".into(), json!(self.ids.uid()));
        m.insert("creationTimestamp".into(), json!(meta::now()));
        for key in ["deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
            m.remove(key);
        }
        if !managed_done {
            m.remove("managedFields");
        }
        if tracks_generation(rt) {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
        if rt.custom.is_some()
            && rt.has_status()
            && let Some(o) = obj.as_object_mut()
        {
            o.remove("status");
        }
        builtin::prepare_create(self, rt, &mut obj)?;
        admission::admit_custom(rt, &mut obj, None, ctx)?;
        authorization::check_escalation(self, rt, &obj, &ctx.caller)?;
        if !managed_done {
            obj = pipeline::record_update(rt, None, &obj, &ctx.manager, None);
        }
        admission::admit_policies(self, rt, "CREATE", &ns, &name, None, Some(&obj), None, &ctx.caller)?;
        if ctx.dry_run {
            return Ok(obj);
        }
        let stored = self
            .store
            .write(&rt.key(), &ns, &name, Write::Create(obj))
            .map_err(|e| match e {
                StoreError::Exists => ApiError::AlreadyExists {
                    gr: rt.gr(),
                    name: name.clone(),
                },
                _ => ApiError::Internal(format!("{e:?}")),
            })?;
        let value = stored.value();
        builtin::after_write(self, rt, &value);
        Ok(value)
    }

    /// Replaces an object (or its status with `sub = Some("status")`).
    pub(crate) fn update(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        body: Value,
        sub: Option<&str>,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        if !body.is_object() {
            return Err(ApiError::BadRequest(
                "the body of the request must be a JSON object".into(),
            ));
        }
        if meta::str_at(&body, &["metadata", "name"]).is_some_and(|n| n != name) {
            return Err(name_mismatch(&body, name));
        }
        // Custom resources take no unconditional update, as on the real server.
        if rt.custom.is_some() && meta::str_at(&body, &["metadata", "resourceVersion"]).is_none_or(str::is_empty) {
            return Err(ApiError::invalid(
                &rt.kind,
                &rt.group,
                name,
                "metadata.resourceVersion",
                "FieldValueInvalid",
                "Invalid value: 0x0: must be specified for an update",
            ));
        }
        if let Some(core) = self.storage_of(rt) {
            let stored = convert::to_stored(rt, body);
            let updated = self.modify(&core, ns, name, sub, ctx, |_old| Ok((stored.clone(), false)))?;
            return Ok(convert::from_stored(rt, updated));
        }
        self.modify(rt, ns, name, sub, ctx, |_old| Ok((body.clone(), false)))
    }

    /// Patches an object; server-side apply creates it when absent.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn patch(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        kind: PatchKind,
        patch: &Value,
        sub: Option<&str>,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        if let Some(core) = self.storage_of(rt) {
            // The patch is in the view's form: apply it there, store the core form.
            let updated = self.modify(&core, ns, name, sub, ctx, |old| {
                let old_view = convert::from_stored(rt, old.clone());
                let (new_view, managed) = match kind {
                    PatchKind::Apply { force } => (
                        pipeline::apply(rt, Some(&old_view), patch, &ctx.manager, force, sub)?,
                        true,
                    ),
                    other => (pipeline::patch(rt, other, &old_view, patch)?, false),
                };
                Ok((convert::to_stored(rt, new_view), managed))
            })?;
            return Ok(convert::from_stored(rt, updated));
        }
        if kind == PatchKind::Strategic && rt.custom.is_some() {
            return Err(ApiError::UnsupportedMediaType(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/apply-patch+cbor".into(),
            ));
        }
        if let PatchKind::Apply { force } = kind
            && self.store.get(&rt.key(), ns, name).is_none()
            && sub.is_none()
        {
            let mut config = patch.clone();
            if meta::str_at(&config, &["metadata", "name"]).is_some_and(|n| n != name) {
                return Err(name_mismatch(&config, name));
            }
            meta::metadata(&mut config).insert("name".into(), json!(name));
            let created = pipeline::apply(rt, None, &config, &ctx.manager, force, None)?;
            let ns_arg = rt.namespaced.then_some(ns);
            return match self.create_with(rt, ns_arg, created, ctx, true) {
                Err(ApiError::AlreadyExists { .. }) => self.patch(rt, ns, name, kind, patch, sub, ctx),
                other => other,
            };
        }
        self.modify(rt, ns, name, sub, ctx, |old| match kind {
            PatchKind::Apply { force } => Ok((pipeline::apply(rt, Some(old), patch, &ctx.manager, force, sub)?, true)),
            other => Ok((pipeline::patch(rt, other, old, patch)?, false)),
        })
    }

    /// Read, change, write; a concurrent write makes `make` run again on the new object.
    fn modify(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        sub: Option<&str>,
        ctx: &WriteCtx,
        make: impl Fn(&Value) -> Result<(Value, bool), ApiError>,
    ) -> Result<Value, ApiError> {
        loop {
            let live = self.live(rt, ns, name)?;
            let old = live.value();
            let (mut new, managed_done) = make(&old)?;
            if let Some(rv) = meta::str_at(&new, &["metadata", "resourceVersion"]).filter(|rv| !rv.is_empty())
                && rv.parse::<u64>().ok() != Some(live.rv)
            {
                return Err(ApiError::stale(&rt.gr(), name));
            }
            self.finish_update(rt, ns, name, sub, &old, &mut new, ctx, managed_done)?;
            if meta::without_bookkeeping(&new) == meta::without_bookkeeping(&old) {
                return Ok(old);
            }
            if ctx.dry_run {
                return Ok(new);
            }
            let remove = builtin::removable(rt, &new);
            match self.update_or_remove(rt, ns, name, new, live.rv, remove) {
                Some(result) => return result,
                None => continue,
            }
        }
    }

    /// Stores `new` over the object at revision `rv`, or takes the object out of the store when `remove`.
    /// None when the object changed since `rv`: the caller reads it again and retries.
    fn update_or_remove(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        new: Value,
        rv: u64,
        remove: bool,
    ) -> Option<Result<Value, ApiError>> {
        if remove {
            return match self.remove(rt, ns, name, Some(rv)) {
                Err(ApiError::Conflict { .. }) => None,
                other => Some(other),
            };
        }
        let write = Write::Update {
            value: new,
            expect_rv: Some(rv),
        };
        match self.store.write(&rt.key(), ns, name, write) {
            Ok(stored) => {
                let value = stored.value();
                builtin::after_write(self, rt, &value);
                Some(Ok(value))
            }
            Err(StoreError::Conflict) => None,
            Err(StoreError::NotFound) => Some(Err(ApiError::not_found(&rt.gr(), name))),
            Err(e) => Some(Err(ApiError::Internal(format!("{e:?}")))),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_update(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        sub: Option<&str>,
        old: &Value,
        new: &mut Value,
        ctx: &WriteCtx,
        managed_done: bool,
    ) -> Result<(), ApiError> {
        if meta::str_at(new, &["metadata", "name"]).is_some_and(|n| n != name) {
            return Err(name_mismatch(new, name));
        }
        let url_ns = rt.namespaced.then_some(ns);
        self.place(rt, url_ns, new)?;
        meta::metadata(new).insert("name".into(), json!(name));
        if rt.has_status() {
            split_status(sub, old, new);
        }
        let old_meta = &old["metadata"];
        let m = meta::metadata(new);
        for key in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            match old_meta.get(key) {
                Some(v) => m.insert(key.into(), v.clone()),
                None => m.remove(key),
            };
        }
        m.remove("resourceVersion");
        if meta::is_deleting(old) {
            no_new_finalizers(rt, name, old, new)?;
        }
        if tracks_generation(rt) {
            let generation = old_meta["generation"].as_i64().unwrap_or(1);
            let bumped = if meta::spec_part(new) != meta::spec_part(old) {
                generation + 1
            } else {
                generation
            };
            meta::metadata(new).insert("generation".into(), json!(bumped));
        }
        builtin::validate_update(self, rt, old, new)?;
        admission::admit_custom(rt, new, Some(old), ctx)?;
        authorization::check_escalation(self, rt, new, &ctx.caller)?;
        if !managed_done {
            *new = pipeline::record_update(rt, Some(old), new, &ctx.manager, sub);
        }
        admission::node_restriction(rt, name, old, new, &ctx.caller)?;
        admission::admit_policies(self, rt, "UPDATE", ns, name, sub, Some(new), Some(old), &ctx.caller)
    }

    /// Sets apiVersion, kind and namespace; answers the namespace ("" for cluster-scoped kinds).
    fn place(&self, rt: &ResourceType, ns: Option<&str>, obj: &mut Value) -> Result<String, ApiError> {
        check_shape(rt, obj)?;
        let version = obj["apiVersion"]
            .as_str()
            .and_then(|av| av.rsplit('/').next())
            .map(String::from);
        let version = version
            .filter(|v| rt.versions.contains(v))
            .unwrap_or_else(|| rt.version.clone());
        obj["apiVersion"] = json!(super::registry::api_version(&rt.group, &version));
        obj["kind"] = json!(rt.kind);
        let m = meta::metadata(obj);
        if !rt.namespaced {
            m.remove("namespace");
            return Ok(String::new());
        }
        let url_ns = ns.unwrap_or("");
        match m.get("namespace").and_then(Value::as_str) {
            Some(obj_ns) if !obj_ns.is_empty() && obj_ns != url_ns => Err(ApiError::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request".into(),
            )),
            _ => {
                m.insert("namespace".into(), json!(url_ns));
                Ok(url_ns.to_string())
            }
        }
    }

    fn name_for_create(&self, rt: &ResourceType, obj: &mut Value) -> Result<String, ApiError> {
        let m = meta::metadata(obj);
        let mut name = m.get("name").and_then(Value::as_str).unwrap_or("").to_string();
        if name.is_empty()
            && let Some(prefix) = m.get("generateName").and_then(Value::as_str)
        {
            name = format!("{prefix}{}", self.ids.suffix());
            m.insert("name".into(), json!(name));
        }
        if name.is_empty() {
            return Err(ApiError::invalid(
                &rt.kind,
                &rt.group,
                "",
                "metadata.name",
                "FieldValueRequired",
                "Required value: name or generateName is required",
            ));
        }
        let ok = name.len() <= 253
            && name.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            })
            || (rt.resource.starts_with("cluster") || rt.resource == "roles" || rt.resource == "rolebindings")
                && !name.contains('/');
        if !ok {
            return Err(ApiError::invalid(
                &rt.kind,
                &rt.group,
                &name,
                "metadata.name",
                "FieldValueInvalid",
                &format!(
                    "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                ),
            ));
        }
        Ok(name)
    }

    fn check_namespace_open(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<(), ApiError> {
        let Some(namespace) = self.store.get("namespaces", "", ns) else {
            return Err(ApiError::not_found(&GroupResource::new("", "namespaces"), ns));
        };
        if meta::is_deleting(&namespace.value()) {
            let message = format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                rt.gr()
            );
            let mut details = json!({
                "name": name, "kind": rt.resource,
                "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}],
            });
            if !rt.group.is_empty() {
                details["group"] = json!(rt.group);
            }
            return Err(ApiError::Status(super::error::status_body(
                403,
                "Forbidden",
                &message,
                Some(details),
            )));
        }
        Ok(())
    }

    /// The selectable fields of a resource, for parsing field selectors.
    pub(crate) fn field_labels(rt: &ResourceType) -> &'static [&'static str] {
        selectable_fields(&rt.key())
    }
}

/// Whether metadata.generation is kept: custom resources and the built-in kinds whose controllers report an
/// observedGeneration (nodes, namespaces, config maps have none on a real server).
fn tracks_generation(rt: &ResourceType) -> bool {
    rt.custom.is_some()
        || matches!(
            rt.key().as_str(),
            "pods"
                | "policy/poddisruptionbudgets"
                | "apiextensions.k8s.io/customresourcedefinitions"
                | "admissionregistration.k8s.io/validatingadmissionpolicies"
        )
        || rt.group == "apps"
        || rt.group == "batch"
}

/// Built-in kinds decode into typed structs on a real server: a `metadata`, `spec` or `status` that is not an
/// object fails to decode (400), and the hooks can rely on their shape.
fn check_shape(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    for key in ["metadata", "spec", "status"] {
        let found = match obj.get(key) {
            None | Some(Value::Null) | Some(Value::Object(_)) => continue,
            Some(Value::String(_)) => "string",
            Some(Value::Number(_)) => "number",
            Some(Value::Bool(_)) => "bool",
            Some(Value::Array(_)) => "array",
        };
        if rt.custom.is_some() && key != "metadata" {
            continue;
        }
        let field = format!("{}{}", key[..1].to_uppercase(), &key[1..]);
        let (kind, version) = (&rt.kind, &rt.version);
        let type_name = if key == "metadata" {
            "v1.ObjectMeta".to_string()
        } else {
            format!("{version}.{kind}{field}")
        };
        return Err(ApiError::BadRequest(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: json: cannot unmarshal {found} into Go struct field {kind}.{key} of type {type_name}"
        )));
    }
    Ok(())
}

fn name_mismatch(obj: &Value, url_name: &str) -> ApiError {
    let body_name = meta::str_at(obj, &["metadata", "name"]).unwrap_or("");
    ApiError::BadRequest(format!(
        "the name of the object ({body_name}) does not match the name on the URL ({url_name})"
    ))
}

/// The status subresource split: a write of the object keeps the stored status, a write of `status` changes
/// nothing else (but managedFields).
fn split_status(sub: Option<&str>, old: &Value, new: &mut Value) {
    let take_status = |to: &mut Value, from: &Value| match from.get("status") {
        Some(status) => to["status"] = status.clone(),
        None => {
            if let Some(o) = to.as_object_mut() {
                o.remove("status");
            }
        }
    };
    match sub {
        None => take_status(new, old),
        // A pod's ephemeral containers are written through a subresource of their own.
        Some("ephemeralcontainers") => {
            let mut merged = old.clone();
            match new["spec"].get("ephemeralContainers") {
                Some(added) => merged["spec"]["ephemeralContainers"] = added.clone(),
                None => {
                    if let Some(o) = merged["spec"].as_object_mut() {
                        o.remove("ephemeralContainers");
                    }
                }
            }
            if let Some(mf) = new["metadata"].get("managedFields") {
                merged["metadata"]["managedFields"] = mf.clone();
            }
            *new = merged;
        }
        Some("status") => {
            let mut merged = old.clone();
            take_status(&mut merged, new);
            if let Some(mf) = new["metadata"].get("managedFields") {
                merged["metadata"]["managedFields"] = mf.clone();
            }
            *new = merged;
        }
        Some(_) => {}
    }
}

/// An object being deleted takes no new finalizers.
fn no_new_finalizers(rt: &ResourceType, name: &str, old: &Value, new: &Value) -> Result<(), ApiError> {
    let before = meta::finalizers(old);
    let added: Vec<String> = meta::finalizers(new)
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    if added.is_empty() {
        return Ok(());
    }
    let list = added.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>().join(", ");
    Err(ApiError::invalid(
        &rt.kind,
        &rt.group,
        name,
        "metadata.finalizers",
        "FieldValueForbidden",
        &format!(
            "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{list}}}"
        ),
    ))
}

fn precondition(rt: &ResourceType, name: &str, what: &str, want: &str, have: &str) -> ApiError {
    ApiError::Conflict {
        gr: rt.gr(),
        name: name.to_string(),
        reason: format!("Precondition failed: {what} in precondition: {want}, {what} in object meta: {have}"),
    }
}
