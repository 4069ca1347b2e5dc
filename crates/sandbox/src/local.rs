//! The in-process API for simulated cluster actors (scheduler, kubelet, metrics exporter): the same write
//! path as HTTP requests (admission, resourceVersion, events, managedFields) without HTTP or authorization.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

use super::error::ApiError;
use super::registry::ResourceType;
use super::selector::{FieldSelector, LabelSelector};
use super::store::Event;
use super::verbs::{Cluster, DeleteOpts, ListOpts, PatchKind, WriteCtx};

#[derive(Clone)]
pub struct LocalApi {
    cluster: Arc<Cluster>,
    ctx: WriteCtx,
}

impl LocalApi {
    pub(crate) fn new(cluster: Arc<Cluster>, manager: &str) -> LocalApi {
        LocalApi {
            cluster,
            ctx: WriteCtx::new(manager),
        }
    }

    /// The same API writing under another field manager.
    pub fn as_manager(&self, manager: &str) -> LocalApi {
        LocalApi {
            cluster: self.cluster.clone(),
            ctx: WriteCtx::new(manager),
        }
    }

    /// The resource at `api_version` (`v1`, `policy/v1`) named `resource` (plural).
    pub(crate) fn resource(&self, api_version: &str, resource: &str) -> Result<Arc<ResourceType>, ApiError> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        self.cluster
            .registry
            .resolve(group, version, resource)
            .ok_or(ApiError::NoRoute)
    }

    pub fn get(&self, api_version: &str, resource: &str, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        let rt = self.resource(api_version, resource)?;
        self.cluster.get(&rt, ns.unwrap_or(""), name)
    }

    /// Lists with label and field selectors ("" for none).
    pub fn list(
        &self,
        api_version: &str,
        resource: &str,
        ns: Option<&str>,
        labels: &str,
        fields: &str,
    ) -> Result<Vec<Value>, ApiError> {
        let rt = self.resource(api_version, resource)?;
        let opts = ListOpts {
            labels: LabelSelector::parse(labels)?,
            fields: FieldSelector::parse(&super::convert::field_selector(&rt, fields), Cluster::field_labels(&rt))?,
            ..Default::default()
        };
        Ok(self
            .cluster
            .list(&rt, ns, &opts)?
            .items
            .iter()
            .map(|s| s.value())
            .collect())
    }

    pub fn create(&self, api_version: &str, resource: &str, ns: Option<&str>, obj: Value) -> Result<Value, ApiError> {
        let rt = self.resource(api_version, resource)?;
        self.cluster.create(&rt, ns, obj, &self.ctx)
    }

    /// Replaces an object; `sub` is `Some("status")` for the status subresource.
    pub fn update(
        &self,
        api_version: &str,
        resource: &str,
        ns: Option<&str>,
        obj: Value,
        sub: Option<&str>,
    ) -> Result<Value, ApiError> {
        let rt = self.resource(api_version, resource)?;
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        self.cluster.update(&rt, ns.unwrap_or(""), &name, obj, sub, &self.ctx)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        api_version: &str,
        resource: &str,
        ns: Option<&str>,
        name: &str,
        kind: PatchKind,
        patch: &Value,
        sub: Option<&str>,
    ) -> Result<Value, ApiError> {
        let rt = self.resource(api_version, resource)?;
        self.cluster
            .patch(&rt, ns.unwrap_or(""), name, kind, patch, sub, &self.ctx)
    }

    pub fn delete(
        &self,
        api_version: &str,
        resource: &str,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Value, ApiError> {
        let rt = self.resource(api_version, resource)?;
        self.cluster.delete(&rt, ns.unwrap_or(""), name, opts, &self.ctx)
    }

    /// Binds a pod to a node, as the scheduler does.
    pub fn bind(&self, ns: &str, name: &str, node: &str) -> Result<Value, ApiError> {
        let binding = serde_json::json!({"target": {"kind": "Node", "name": node}});
        self.cluster.bind(ns, name, &binding)
    }

    /// Every change from now on, of every kind (simulated actors filter by `event.res`: `pods`, `nodes`, ...).
    pub fn events(&self) -> broadcast::Receiver<Arc<Event>> {
        match self.cluster.store.subscribe(None) {
            Ok((_, rx)) => rx,
            Err(_) => unreachable!("subscribing without a resourceVersion never fails"),
        }
    }

    /// The resourceVersion of the latest change.
    pub fn resource_version(&self) -> u64 {
        self.cluster.store.current_rv()
    }
}
