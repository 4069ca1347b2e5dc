//! The RBAC authorizer, evaluated against the Roles, ClusterRoles and bindings in the store.
//!
//! ```text
//!   user + attributes ──▶ ClusterRoleBindings naming the user ──▶ their ClusterRoles' rules ─┐
//!                     └─▶ RoleBindings in the request's namespace ──▶ Role or ClusterRole rules ─┴─▶ Allow if any
//!                                                                                                rule covers it
//! ```
//!
//! An aggregated ClusterRole (aggregationRule) grants the rules of the ClusterRoles it selects, as if the
//! aggregation controller had run. Members of `system:masters` are allowed everything, as the API server's
//! privileged-group authorizer does before RBAC. Non-resource URLs are granted by ClusterRoleBindings only.
//! A denial becomes the 403 Status the real server writes (`forbidden_status`). Writes of roles and bindings
//! are also checked for privilege escalation (`check_role_write`, `check_binding_write`, in escalation.rs).

mod escalation;

pub(crate) use escalation::{check_binding_write, check_role_write};

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject};
use serde_json::{Map, Value, json};

use super::selector::LabelSelector;

/// The authenticated user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    /// A service account as the token authenticator presents it: `system:serviceaccount:NS:NAME` in the groups
    /// `system:serviceaccounts`, `system:serviceaccounts:NS` and `system:authenticated`.
    pub fn service_account(namespace: &str, name: &str) -> UserInfo {
        UserInfo {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
        }
    }
}

/// What the request does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`; for non-resource
    /// requests the lower-cased HTTP method (`get`, `post`, ...).
    pub verb: String,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// Set for a non-resource request (`/healthz`, `/metrics`, `/version`).
    pub path: Option<String>,
}

/// The RBAC objects in the store.
#[derive(Clone, Debug, Default)]
pub(crate) struct RbacObjects {
    pub roles: Vec<Role>,
    pub cluster_roles: Vec<ClusterRole>,
    pub role_bindings: Vec<RoleBinding>,
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
}

impl RbacObjects {
    /// Reads the store's JSON objects; one that does not parse as its kind grants nothing, as a role the
    /// server could not decode would not.
    pub(crate) fn from_json(
        roles: &[Value],
        cluster_roles: &[Value],
        role_bindings: &[Value],
        cluster_role_bindings: &[Value],
    ) -> RbacObjects {
        fn parse<T: serde::de::DeserializeOwned>(objects: &[Value]) -> Vec<T> {
            objects
                .iter()
                .filter_map(|o| serde_json::from_value(o.clone()).ok())
                .collect()
        }
        RbacObjects {
            roles: parse(roles),
            cluster_roles: parse(cluster_roles),
            role_bindings: parse(role_bindings),
            cluster_role_bindings: parse(cluster_role_bindings),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    Allow,
    Deny,
}

pub(crate) fn authorize(objects: &RbacObjects, user: &UserInfo, attrs: &Attributes) -> Decision {
    if user.groups.iter().any(|g| g == "system:masters") {
        return Decision::Allow;
    }
    let allows = |rules: Option<&Vec<PolicyRule>>| rules.is_some_and(|r| r.iter().any(|rule| rule_allows(rule, attrs)));
    let cluster_role_allows = |name: &str| cluster_role_allows(objects, name, attrs, &mut Vec::new());

    for binding in &objects.cluster_role_bindings {
        if binding.role_ref.kind == "ClusterRole"
            && applies_to(binding.subjects.as_deref(), user, "")
            && cluster_role_allows(&binding.role_ref.name)
        {
            return Decision::Allow;
        }
    }
    let namespace = attrs
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty() && attrs.path.is_none());
    if let Some(ns) = namespace {
        for binding in objects
            .role_bindings
            .iter()
            .filter(|b| b.metadata.namespace.as_deref() == Some(ns))
        {
            if !applies_to(binding.subjects.as_deref(), user, ns) {
                continue;
            }
            let granted = match binding.role_ref.kind.as_str() {
                "Role" => objects
                    .roles
                    .iter()
                    .find(|r| {
                        r.metadata.namespace.as_deref() == Some(ns)
                            && r.metadata.name == Some(binding.role_ref.name.clone())
                    })
                    .is_some_and(|r| allows(r.rules.as_ref())),
                "ClusterRole" => cluster_role_allows(&binding.role_ref.name),
                _ => false,
            };
            if granted {
                return Decision::Allow;
            }
        }
    }
    Decision::Deny
}

/// Whether the named ClusterRole grants the request. An aggregated ClusterRole also grants what the roles its
/// aggregationRule selects grant, as if the aggregation controller had copied their rules into it.
fn cluster_role_allows<'a>(
    objects: &'a RbacObjects,
    name: &'a str,
    attrs: &Attributes,
    seen: &mut Vec<&'a str>,
) -> bool {
    if seen.contains(&name) {
        return false;
    }
    seen.push(name);
    let Some(role) = objects
        .cluster_roles
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(name))
    else {
        return false;
    };
    if role
        .rules
        .as_ref()
        .is_some_and(|r| r.iter().any(|rule| rule_allows(rule, attrs)))
    {
        return true;
    }
    aggregated(objects, role).into_iter().any(|other| {
        let other_name = other.metadata.name.as_deref().unwrap_or_default();
        cluster_role_allows(objects, other_name, attrs, seen)
    })
}

/// The other ClusterRoles an aggregated ClusterRole's selectors pick, in store order.
fn aggregated<'a>(objects: &'a RbacObjects, role: &ClusterRole) -> Vec<&'a ClusterRole> {
    let name = role.metadata.name.as_deref().unwrap_or_default();
    let selectors: Vec<LabelSelector> = role
        .aggregation_rule
        .as_ref()
        .and_then(|a| a.cluster_role_selectors.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|sel| LabelSelector::from_object(&serde_json::to_value(sel).ok()?))
        .collect();
    if selectors.is_empty() {
        return Vec::new();
    }
    objects
        .cluster_roles
        .iter()
        .filter(|other| {
            let labels = other.metadata.labels.as_ref();
            other.metadata.name.as_deref().unwrap_or_default() != name
                && selectors
                    .iter()
                    .any(|sel| sel.matches(|k| labels.and_then(|l| l.get(k)).map(String::as_str)))
        })
        .collect()
}

/// Whether a binding's subjects include the user; `binding_namespace` defaults a service account subject's
/// namespace, as the server does for RoleBindings.
fn applies_to(subjects: Option<&[Subject]>, user: &UserInfo, binding_namespace: &str) -> bool {
    subjects.unwrap_or_default().iter().any(|s| match s.kind.as_str() {
        "User" => s.name == user.name,
        "Group" => user.groups.contains(&s.name),
        "ServiceAccount" => {
            let ns = s
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_namespace);
            !ns.is_empty() && user.name == format!("system:serviceaccount:{ns}:{}", s.name)
        }
        _ => false,
    })
}

fn has(list: Option<&Vec<String>>, wanted: &str) -> bool {
    list.is_some_and(|l| l.iter().any(|x| x == "*" || x == wanted))
}

fn rule_allows(rule: &PolicyRule, attrs: &Attributes) -> bool {
    if !rule.verbs.iter().any(|v| v == "*" || *v == attrs.verb) {
        return false;
    }
    if let Some(path) = &attrs.path {
        return rule.non_resource_urls.as_ref().is_some_and(|urls| {
            urls.iter()
                .any(|u| u == "*" || u == path || u.strip_suffix('*').is_some_and(|prefix| path.starts_with(prefix)))
        });
    }
    if !has(rule.api_groups.as_ref(), &attrs.api_group) {
        return false;
    }
    let combined = if attrs.subresource.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}/{}", attrs.resource, attrs.subresource)
    };
    let resource_ok = rule.resources.as_ref().is_some_and(|rs| {
        rs.iter().any(|r| {
            r == "*"
                || *r == combined
                || (!attrs.subresource.is_empty() && r.strip_prefix("*/") == Some(attrs.subresource.as_str()))
        })
    });
    if !resource_ok {
        return false;
    }
    match rule.resource_names.as_ref().filter(|n| !n.is_empty()) {
        None => true,
        Some(names) => attrs.name.as_deref().is_some_and(|n| names.iter().any(|x| x == n)),
    }
}

/// The 403 `metav1.Status` the real server writes for a denied request.
pub fn forbidden_status(user: &UserInfo, attrs: &Attributes) -> Value {
    let username = &user.name;
    let verb = &attrs.verb;
    let name = attrs.name.as_deref().unwrap_or("");
    let mut details = Map::new();
    let message = if let Some(path) = &attrs.path {
        format!("forbidden: User {username:?} cannot {verb} path {path:?}")
    } else {
        let resource = if attrs.subresource.is_empty() {
            attrs.resource.clone()
        } else {
            format!("{}/{}", attrs.resource, attrs.subresource)
        };
        let group = &attrs.api_group;
        let reason = match attrs.namespace.as_deref().filter(|ns| !ns.is_empty()) {
            Some(ns) => {
                format!(
                    "User {username:?} cannot {verb} resource {resource:?} in API group {group:?} in the namespace {ns:?}"
                )
            }
            None => format!(
                "User {username:?} cannot {verb} resource {resource:?} in API group {group:?} at the cluster scope"
            ),
        };
        let qualified = if group.is_empty() {
            attrs.resource.clone()
        } else {
            format!("{}.{group}", attrs.resource)
        };
        if !name.is_empty() {
            details.insert("name".into(), json!(name));
        }
        if !group.is_empty() {
            details.insert("group".into(), json!(group));
        }
        details.insert("kind".into(), json!(attrs.resource));
        if name.is_empty() {
            format!("{qualified} is forbidden: {reason}")
        } else {
            format!("{qualified} {name:?} is forbidden: {reason}")
        }
    };
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "Forbidden",
        "details": details,
        "code": 403,
    })
}

#[cfg(test)]
mod tests;
