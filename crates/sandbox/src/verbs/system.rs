//! Writes by the control plane itself: controllers' updates, pod bindings, namespace finalization.

use serde_json::{Value, json};

use super::Cluster;
use crate::builtin;
use crate::error::ApiError;
use crate::meta;
use crate::store::{StoreError, Write};

use crate::error::GroupResource;

impl Cluster {
    /// A write by the control plane itself (controllers, bindings): no user validation or admission, retried
    /// until it lands. `change` answers None to leave the object as it is.
    pub(crate) fn system_update(
        &self,
        key: &str,
        ns: &str,
        name: &str,
        change: impl Fn(&Value) -> Option<Value>,
    ) -> Option<Value> {
        let rt = self.registry.by_key(key)?;
        loop {
            let live = self.store.get(key, ns, name)?;
            let old = live.value();
            let mut new = change(&old)?;
            let remove = builtin::removable(&rt, &new);
            if meta::finalizers(&new).is_empty()
                && let Some(m) = new["metadata"].as_object_mut()
            {
                m.remove("finalizers");
            }
            match self.update_or_remove(&rt, ns, name, new, live.rv, remove) {
                Some(result) => return result.ok(),
                None => continue,
            }
        }
    }

    /// `POST pods/NAME/binding`: sets the pod's node, once.
    pub(crate) fn bind(&self, ns: &str, name: &str, binding: &Value) -> Result<Value, ApiError> {
        let rt = self.registry.by_key("pods").ok_or(ApiError::NoRoute)?;
        loop {
            let live = self.live(&rt, ns, name)?;
            let new = builtin::pods::bind(&live.value(), binding)?;
            match self.store.write(
                "pods",
                ns,
                name,
                Write::Update {
                    value: new,
                    expect_rv: Some(live.rv),
                },
            ) {
                Ok(stored) => return Ok(stored.value()),
                Err(StoreError::Conflict) => continue,
                Err(_) => return Err(ApiError::not_found(&rt.gr(), name)),
            }
        }
    }

    /// `PUT namespaces/NAME/finalize`: replaces the namespace's spec.finalizers.
    pub(crate) fn finalize_namespace(&self, name: &str, body: &Value) -> Result<Value, ApiError> {
        let finalizers = body["spec"]["finalizers"].clone();
        let result = self.system_update("namespaces", "", name, |ns| {
            let mut ns = ns.clone();
            ns["spec"]["finalizers"] = if finalizers.is_array() {
                finalizers.clone()
            } else {
                json!([])
            };
            Some(ns)
        });
        result.ok_or_else(|| ApiError::not_found(&GroupResource::new("", "namespaces"), name))
    }
}
