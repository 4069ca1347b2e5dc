//! Authentication: bearer tokens to callers. The admin token (written into the kubeconfig) is
//! `sandbox-admin` in `system:masters`; TokenRequest adds service-account tokens; tests may pass a static map.

use std::collections::HashMap;
use std::sync::RwLock;

use serde_json::json;

use super::error::{ApiError, status_body};
use super::meta::Ids;
use super::verbs::Caller;

pub(crate) struct Auth {
    pub rbac: bool,
    pub admin_token: String,
    tokens: RwLock<HashMap<String, Caller>>,
}

impl Auth {
    pub(crate) fn new(rbac: bool, ids: &Ids, extra: HashMap<String, Caller>) -> Auth {
        let admin_token = format!("sandbox-admin-{}", ids.uid().replace('-', ""));
        let mut tokens = extra;
        tokens.insert(admin_token.clone(), Caller::admin());
        Auth {
            rbac,
            admin_token,
            tokens: RwLock::new(tokens),
        }
    }

    /// The caller an `Authorization` header names.
    ///
    /// kubectl (client-go) sends no bearer token over plain HTTP, so a request without credentials acts as
    /// the admin, as the kube-apiserver's old loopback insecure port did; impersonation (`kubectl --as`) then
    /// picks the identity RBAC checks. An unknown token is 401 when RBAC is on.
    pub(crate) fn authenticate(&self, header: Option<&str>) -> Result<Caller, ApiError> {
        let token = header.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim);
        let known = token.and_then(|t| self.tokens.read().unwrap_or_else(|e| e.into_inner()).get(t).cloned());
        match (token, known) {
            (_, Some(caller)) => Ok(caller),
            (None, None) => Ok(Caller::admin()),
            (Some(_), None) if !self.rbac => Ok(Caller::admin()),
            (Some(_), None) => Err(ApiError::Status(status_body(401, "Unauthorized", "Unauthorized", None))),
        }
    }

    /// Issues a new token for a caller (TokenRequest).
    pub(crate) fn issue(&self, caller: Caller, ids: &Ids) -> String {
        let token = format!("sandbox-token-{}", ids.uid().replace('-', ""));
        self.tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.clone(), caller);
        token
    }

    /// The caller a token names, for TokenReview.
    pub(crate) fn lookup(&self, token: &str) -> Option<Caller> {
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }
}

/// The `status.userInfo` of reviews.
pub(crate) fn user_info(caller: &Caller) -> serde_json::Value {
    json!({"username": caller.name, "groups": caller.groups})
}

/// The identity `Impersonate-User` / `Impersonate-Group` headers ask for, if any.
pub(crate) fn impersonated(user: Option<&str>, groups: Vec<String>) -> Option<Caller> {
    let user = user.filter(|u| !u.is_empty())?;
    if let Some(rest) = user.strip_prefix("system:serviceaccount:")
        && let Some((ns, name)) = rest.split_once(':')
    {
        let mut caller = Caller::service_account(ns, name);
        caller.groups.extend(
            groups
                .into_iter()
                .filter(|g| !caller.groups.contains(g))
                .collect::<Vec<_>>(),
        );
        return Some(caller);
    }
    let mut groups = groups;
    if !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".into());
    }
    Some(Caller {
        name: user.to_string(),
        groups,
    })
}
