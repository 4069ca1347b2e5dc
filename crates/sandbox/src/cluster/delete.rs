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

impl Cluster {
    /// Deletes an object: at once, or by setting deletionTimestamp when finalizers, a pod's grace period or a
    /// propagation policy keep it for a while. Answers the object as it is after the call.
    pub fn delete(
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
        let key = rt.key();
        loop {
            let live = self
                .store
                .get(&key, ns, name)
                .ok_or_else(|| ApiError::not_found(&rt.gr(), name))?;
            let old = live.value();
            if let Some(uid) = &opts.uid
                && *uid != *live.uid
            {
                return Err(precondition(rt, name, "UID", uid, &live.uid));
            }
            if let Some(rv) = &opts.resource_version
                && rv.parse::<u64>().ok() != Some(live.rv)
            {
                return Err(precondition(rt, name, "ResourceVersion", rv, &live.rv.to_string()));
            }
            admission::admit_policies(self, rt, "DELETE", ns, name, None, None, Some(&old), &ctx.caller)?;
            let mut fins = meta::finalizers(&old);
            match opts.propagation.as_deref() {
                Some("Foreground") if !fins.iter().any(|f| f == "foregroundDeletion") => {
                    fins.push("foregroundDeletion".into())
                }
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
            let now = jiff::Timestamp::now();
            let seconds = grace.unwrap_or(0);
            let shorter = already
                && m.get("deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .is_some_and(|g| seconds < g);
            if !already || shorter {
                let at = now + jiff::SignedDuration::from_secs(seconds);
                m.insert("deletionTimestamp".into(), json!(meta::format_time(at)));
                m.insert("deletionGracePeriodSeconds".into(), json!(seconds));
                if tracks_generation(rt) {
                    let generation = m.get("generation").and_then(Value::as_i64).unwrap_or(1);
                    m.insert("generation".into(), json!(generation + 1));
                }
            }
            builtin::on_delete_requested(rt, &mut new);
            if new == old {
                return Ok(old);
            }
            if opts.dry_run {
                return Ok(new);
            }
            if seconds == 0 && fins.is_empty() && !builtin::deletes_slowly(rt) {
                match self.remove(rt, ns, name, Some(live.rv)) {
                    Err(ApiError::Conflict { .. }) => continue,
                    other => return other,
                }
            }
            match self.store.write(
                &key,
                ns,
                name,
                Write::Update {
                    value: new,
                    expect_rv: Some(live.rv),
                },
            ) {
                Ok(stored) => {
                    let value = stored.value();
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
                Err(StoreError::Conflict) => continue,
                Err(StoreError::NotFound) => return Err(ApiError::not_found(&rt.gr(), name)),
                Err(e) => return Err(ApiError::Internal(format!("{e:?}"))),
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
