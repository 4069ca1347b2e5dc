//! The types of the cluster API: callers, write contexts, options and results.

use std::sync::Arc;

use crate::selector::{FieldSelector, LabelSelector};
use crate::store::Stored;

/// Who makes a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub groups: Vec<String>,
}

impl Caller {
    /// The sandbox's administrator: in `system:masters`, which RBAC never denies.
    pub fn admin() -> Caller {
        Caller {
            name: "sandbox-admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        }
    }

    pub fn service_account(ns: &str, name: &str) -> Caller {
        Caller {
            name: format!("system:serviceaccount:{ns}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ],
        }
    }
}

/// The parts of a write request beyond the object.
#[derive(Clone, Debug)]
pub(crate) struct WriteCtx {
    pub caller: Caller,
    /// The field manager recorded in managedFields.
    pub manager: String,
    pub dry_run: bool,
    /// `fieldValidation=Strict`: unknown fields of custom resources fail the request.
    pub strict: bool,
    /// `fieldValidation=Warn` (the default): unknown fields become `Warning` headers of the answer.
    pub warn: bool,
    /// Warnings collected while the request runs, for the `Warning` headers.
    pub warnings: Arc<std::sync::Mutex<Vec<String>>>,
}

impl WriteCtx {
    pub(crate) fn warn(&self, message: String) {
        self.warnings.lock().unwrap_or_else(|e| e.into_inner()).push(message);
    }
}

impl WriteCtx {
    pub(crate) fn new(manager: &str) -> WriteCtx {
        WriteCtx {
            caller: Caller::admin(),
            manager: manager.to_string(),
            dry_run: false,
            strict: false,
            warn: false,
            warnings: Arc::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    Json,
    Merge,
    Strategic,
    Apply { force: bool },
}

#[derive(Clone, Debug, Default)]
pub struct DeleteOpts {
    pub grace_period: Option<i64>,
    /// Background (default), Foreground or Orphan.
    pub propagation: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct ListOpts {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
}

pub(crate) struct ListResult {
    pub items: Vec<Arc<Stored>>,
    pub rv: u64,
    pub continue_token: Option<String>,
}

/// Work for the controllers that the write path hands over instead of waiting for it.
#[derive(Debug)]
pub(crate) enum Kick {
    /// A bound pod got a deletionTimestamp: remove it when its grace period ends.
    PodGrace {
        ns: String,
        name: String,
        uid: String,
        seconds: i64,
    },
}

#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// Leave the removal of gracefully deleted pods to an external kubelet simulation.
    pub external_kubelet: bool,
    /// RBAC is on: writes of roles and bindings are checked for privilege escalation.
    pub rbac: bool,
}
