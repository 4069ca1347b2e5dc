//! Deletion: immediate, or through deletionTimestamp while finalizers, a pod's grace period or a
//! propagation policy hold the object; and the final removal from the store.

use serde_json::{Value, json};

use super::{Cluster, Kick, tracks_generation};
use crate::builtin;
use crate::error::ApiError;
use crate::meta;
use crate::registry::ResourceType;
use crate::store::{StoreError, Write};

use super::{DeleteOpts, WriteCtx, precondition};
use crate::admission;
use crate::convert;

/// The delete's preconditions on the live object's UID and resourceVersion.
fn preconditions(rt: &ResourceType, name: &str, opts: &DeleteOpts, uid: &str, rv: u64) -> Result<(), ApiError> {
    if let Some(want) = &opts.uid
        && want != uid
    {
        return Err(precondition(rt, name, "UID", want, uid));
    }
    if let Some(want) = &opts.resource_version
        && want.parse::<u64>().ok() != Some(rv)
    {
        return Err(precondition(rt, name, "ResourceVersion", want, &rv.to_string()));
    }
    Ok(())
}

/// Adds the finalizer a propagation policy holds the object with (Foreground, Orphan); refuses an unknown one.
fn add_propagation_finalizer(fins: &mut Vec<String>, propagation: Option<&str>) -> Result<(), ApiError> {
    match propagation {
        Some("Foreground") if !fins.iter().any(|f| f == "foregroundDeletion") => fins.push("foregroundDeletion".into()),
        Some("Orphan") if !fins.iter().any(|f| f == "orphan") => fins.push("orphan".into()),
        Some("Foreground" | "Orphan" | "Background") | None => {}
        Some(other) => {
            return Err(ApiError::invalid(
                "DeleteOptions",
                "",
                "",
                "propagationPolicy",
                "FieldValueNotSupported",
                &format!(
                    "Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                ),
            ));
        }
    }
    Ok(())
}

/// Sets deletionTimestamp `seconds` from now on the first delete, or on a later one that shortens the grace
/// period; a kind that tracks its generation moves it on.
fn mark_deleting(rt: &ResourceType, m: &mut serde_json::Map<String, Value>, seconds: i64, already: bool) {
    let shorter = already
        && m.get("deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .is_some_and(|g| seconds < g);
    if !already || shorter {
        let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(seconds);
        m.insert("deletionTimestamp".into(), json!(meta::format_time(at)));
        m.insert("deletionGracePeriodSeconds".into(), json!(seconds));
        if tracks_generation(rt) {
            let generation = m.get("generation").and_then(Value::as_i64).unwrap_or(1);
            m.insert("generation".into(), json!(generation + 1));
        }
    }
}

impl Cluster {
    /// Deletes an object: at once, or by setting deletionTimestamp when finalizers, a pod's grace period or a
    /// propagation policy keep it for a while. Answers the object as it is after the call.
    pub(crate) fn delete(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        if let Some(core) = self.storage_of(rt) {
            return self
                .delete(&core, ns, name, opts, ctx)
                .map(|v| convert::from_stored(rt, v));
        }
        loop {
            let live = self.live(rt, ns, name)?;
            let old = live.value();
            preconditions(rt, name, opts, live.uid.as_ref(), live.rv)?;
            admission::admit_policies(self, rt, "DELETE", ns, name, None, None, Some(&old), &ctx.caller)?;
            let mut fins = meta::finalizers(&old);
            add_propagation_finalizer(&mut fins, opts.propagation.as_deref())?;
            let grace = builtin::grace_period(rt, &old, opts.grace_period);
            let already = meta::is_deleting(&old);
            if fins.is_empty() && grace.is_none() && !builtin::deletes_slowly(rt) {
                if opts.dry_run {
                    return Ok(old);
                }
                match self.remove(rt, ns, name, Some(live.rv)) {
                    Err(ApiError::Conflict { .. }) => continue,
                    other => return other,
                }
            }
            let mut new = old.clone();
            let m = meta::metadata(&mut new);
            m.insert("finalizers".into(), json!(fins));
            if fins.is_empty() {
                m.remove("finalizers");
            }
            let seconds = grace.unwrap_or(0);
            mark_deleting(rt, m, seconds, already);
            builtin::on_delete_requested(rt, &mut new);
            if new == old {
                return Ok(old);
            }
            if opts.dry_run {
                return Ok(new);
            }
            let remove = seconds == 0 && fins.is_empty() && !builtin::deletes_slowly(rt);
            match self.update_or_remove(rt, ns, name, new, live.rv, remove) {
                Some(Ok(value)) => {
                    if let Some(seconds) = grace.filter(|s| *s > 0) {
                        self.kick(Kick::PodGrace {
                            ns: ns.into(),
                            name: name.into(),
                            uid: live.uid.to_string(),
                            seconds,
                        });
                    }
                    return Ok(value);
                }
                Some(Err(e)) => return Err(e),
                None => continue,
            }
        }
    }

    /// Takes an object out of the store for good.
    pub(crate) fn remove(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        expect_rv: Option<u64>,
    ) -> Result<Value, ApiError> {
        // A CRD's resource stops being served before the CRD itself goes, so that nobody finds the CRD gone
        // while its resource still answers (kube-apiserver, too, stops serving it first).
        let crd = (rt.key() == "apiextensions.k8s.io/customresourcedefinitions")
            .then(|| self.get(rt, ns, name).ok())
            .flatten();
        if let Some(obj) = &crd {
            builtin::crd::uninstall(self, obj);
        }
        match self.store.write(
            &rt.key(),
            ns,
            name,
            Write::Delete {
                expect_rv,
                expect_uid: None,
            },
        ) {
            Ok(stored) => {
                let value = stored.value();
                if crd.is_none() {
                    builtin::after_remove(self, rt, &value);
                }
                Ok(value)
            }
            Err(e) => {
                if let Some(obj) = &crd {
                    builtin::crd::install(self, obj);
                }
                match e {
                    StoreError::Conflict => Err(ApiError::stale(&rt.gr(), name)),
                    _ => Err(ApiError::not_found(&rt.gr(), name)),
                }
            }
        }
    }
}
