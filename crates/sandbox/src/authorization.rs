//! Authorization: RBAC decisions for resource and non-resource requests, impersonation, and RBAC's
//! escalation prevention on writes of roles and bindings (`rbac`, over the cluster's stored RBAC objects).

use serde_json::Value;

use super::error::ApiError;
use super::meta;
use super::rbac::{self, Attributes, Decision, RbacObjects, UserInfo};
use super::registry::ResourceType;
use super::server::Server;
use super::verbs::{Caller, Cluster};

/// The identity RBAC and admission policies see for a caller.
pub(crate) fn user_info(caller: &Caller) -> UserInfo {
    UserInfo {
        name: caller.name.clone(),
        groups: caller.groups.clone(),
    }
}

fn rbac_objects(cluster: &Cluster) -> RbacObjects {
    RbacObjects::from_json(
        &cluster.values("rbac.authorization.k8s.io/roles"),
        &cluster.values("rbac.authorization.k8s.io/clusterroles"),
        &cluster.values("rbac.authorization.k8s.io/rolebindings"),
        &cluster.values("rbac.authorization.k8s.io/clusterrolebindings"),
    )
}

/// RBAC's escalation prevention on writes of roles and bindings (when RBAC is on).
pub(crate) fn check_escalation(
    cluster: &Cluster,
    rt: &ResourceType,
    obj: &Value,
    caller: &Caller,
) -> Result<(), ApiError> {
    if !cluster.settings.rbac || rt.group != "rbac.authorization.k8s.io" {
        return Ok(());
    }
    let ns = meta::str_at(obj, &["metadata", "namespace"]);
    let objects = rbac_objects(cluster);
    let user = user_info(caller);
    let result = match rt.resource.as_str() {
        "roles" | "clusterroles" => rbac::check_role_write(&objects, &user, obj, ns),
        "rolebindings" | "clusterrolebindings" => rbac::check_binding_write(&objects, &user, obj, ns),
        _ => Ok(()),
    };
    result.map_err(ApiError::Status)
}

/// Whether RBAC lets `caller` do what `attrs` say (always, without --rbac).
pub(crate) fn allowed(server: &Server, caller: &Caller, attrs: &Attributes) -> bool {
    !server.auth.rbac || rbac::authorize(&rbac_objects(&server.cluster), &user_info(caller), attrs) == Decision::Allow
}

/// 403 unless RBAC allows the resource request.
pub(crate) fn authorize(
    server: &Server,
    caller: &Caller,
    verb: &str,
    rt: &ResourceType,
    sub: &str,
    ns: Option<&str>,
    name: Option<&str>,
) -> Result<(), ApiError> {
    let attrs = Attributes {
        verb: verb.into(),
        api_group: rt.group.clone(),
        resource: rt.resource.clone(),
        subresource: sub.into(),
        namespace: ns.map(String::from),
        name: name.map(String::from),
        path: None,
    };
    check(server, caller, &attrs)
}

/// 403 unless RBAC allows a non-resource request (discovery, /version, /openapi).
pub(crate) fn authorize_path(server: &Server, caller: &Caller, method: &str, path: &str) -> Result<(), ApiError> {
    let attrs = Attributes {
        verb: method.to_lowercase(),
        path: Some(path.to_string()),
        ..Default::default()
    };
    check(server, caller, &attrs)
}

fn check(server: &Server, caller: &Caller, attrs: &Attributes) -> Result<(), ApiError> {
    if allowed(server, caller, attrs) {
        Ok(())
    } else {
        Err(ApiError::Status(rbac::forbidden_status(&user_info(caller), attrs)))
    }
}

/// 403 unless `caller` may impersonate `target` (verb `impersonate` on users, groups or serviceaccounts).
pub(crate) fn authorize_impersonation(server: &Server, caller: &Caller, target: &Caller) -> Result<(), ApiError> {
    let attrs = match target
        .name
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    {
        Some((ns, name)) => Attributes {
            verb: "impersonate".into(),
            resource: "serviceaccounts".into(),
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..Default::default()
        },
        None => Attributes {
            verb: "impersonate".into(),
            resource: "users".into(),
            name: Some(target.name.clone()),
            ..Default::default()
        },
    };
    check(server, caller, &attrs)
}
