//! RBAC's escalation prevention: a user may write a Role or ClusterRole only with rules they hold
//! themselves (or with the `escalate` verb), and bind a role only if they hold its rules (or have `bind`
//! on it). The 403 is worded as the server's `ConfirmNoEscalation`.
//!
//! ```text
//!   user ──bindings (cluster-wide, and in the namespace)──▶ rules held
//!   new role / bound role rules ──split into single group/resource/verb/name atoms──▶ each covered by a held
//!   rule? ──no──▶ compacted missing rules in the message
//! ```

use std::collections::BTreeSet;

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use serde_json::{Map, Value};

use super::{Attributes, Decision, RbacObjects, UserInfo, aggregated, applies_to, authorize};

const GROUP: &str = "rbac.authorization.k8s.io";

/// Checks a create or update of a Role (`namespace` Some) or ClusterRole (`namespace` None) given as JSON.
pub(crate) fn check_role_write(
    objects: &RbacObjects,
    user: &UserInfo,
    role: &Value,
    namespace: Option<&str>,
) -> Result<(), Value> {
    let resource = if namespace.is_some() { "roles" } else { "clusterroles" };
    let name = role
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let escalate = Attributes {
        verb: "escalate".into(),
        api_group: GROUP.into(),
        resource: resource.into(),
        namespace: namespace.map(str::to_owned),
        name: Some(name.to_owned()),
        ..Attributes::default()
    };
    if authorize(objects, user, &escalate) == Decision::Allow {
        return Ok(());
    }
    let rules: Vec<PolicyRule> =
        serde_json::from_value(role.get("rules").cloned().unwrap_or(Value::Array(vec![]))).unwrap_or_default();
    confirm_no_escalation(objects, user, &rules, namespace, resource, name)
}

/// Checks a create or update of a RoleBinding (`namespace` Some) or ClusterRoleBinding (`namespace` None).
pub(crate) fn check_binding_write(
    objects: &RbacObjects,
    user: &UserInfo,
    binding: &Value,
    namespace: Option<&str>,
) -> Result<(), Value> {
    let resource = if namespace.is_some() {
        "rolebindings"
    } else {
        "clusterrolebindings"
    };
    let name = binding
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let role_kind = binding
        .pointer("/roleRef/kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let role_name = binding
        .pointer("/roleRef/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let role_resource = if role_kind == "Role" { "roles" } else { "clusterroles" };
    let bind = Attributes {
        verb: "bind".into(),
        api_group: GROUP.into(),
        resource: role_resource.into(),
        namespace: if role_kind == "Role" {
            namespace.map(str::to_owned)
        } else {
            None
        },
        name: Some(role_name.to_owned()),
        ..Attributes::default()
    };
    let bind_in_namespace = Attributes {
        namespace: namespace.map(str::to_owned),
        ..bind.clone()
    };
    if authorize(objects, user, &bind) == Decision::Allow
        || authorize(objects, user, &bind_in_namespace) == Decision::Allow
    {
        return Ok(());
    }
    let rules = match role_kind {
        "Role" => objects
            .roles
            .iter()
            .find(|r: &&Role| {
                r.metadata.namespace.as_deref() == namespace && r.metadata.name.as_deref() == Some(role_name)
            })
            .map(|r| r.rules.clone().unwrap_or_default()),
        _ => objects
            .cluster_roles
            .iter()
            .any(|r| r.metadata.name.as_deref() == Some(role_name))
            .then(|| cluster_role_rules(objects, role_name, &mut Vec::new())),
    };
    // The server resolves the referenced role first: a missing one is a 404.
    let Some(rules) = rules else {
        return Err(serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("{role_resource}.{GROUP} {role_name:?} not found"),
            "reason": "NotFound", "details": {"name": role_name, "group": GROUP, "kind": role_resource}, "code": 404,
        }));
    };
    confirm_no_escalation(objects, user, &rules, namespace, resource, name)
}

fn confirm_no_escalation(
    objects: &RbacObjects,
    user: &UserInfo,
    rules: &[PolicyRule],
    namespace: Option<&str>,
    resource: &str,
    name: &str,
) -> Result<(), Value> {
    if user.groups.iter().any(|g| g == "system:masters") {
        return Ok(());
    }
    let held = held_rules(objects, user, namespace);
    let missing: Vec<PolicyRule> = rules
        .iter()
        .flat_map(atoms)
        .filter(|atom| !held.iter().any(|h| covers(h, atom)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let descriptions: BTreeSet<String> = compact(missing).iter().map(compact_string).collect();
    let groups: Vec<String> = user.groups.iter().map(|g| format!("{g:?}")).collect();
    let reason = format!(
        "user {:?} (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
        user.name,
        groups.join(" "),
        descriptions.into_iter().collect::<Vec<_>>().join("\n")
    );
    let mut details = Map::new();
    details.insert("name".into(), Value::from(name));
    details.insert("group".into(), Value::from(GROUP));
    details.insert("kind".into(), Value::from(resource));
    Err(serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("{resource}.{GROUP} {name:?} is forbidden: {reason}"),
        "reason": "Forbidden", "details": details, "code": 403,
    }))
}

/// The rules the user holds cluster-wide, plus those bound in `namespace`.
fn held_rules(objects: &RbacObjects, user: &UserInfo, namespace: Option<&str>) -> Vec<PolicyRule> {
    let mut held = Vec::new();
    for b in &objects.cluster_role_bindings {
        if b.role_ref.kind == "ClusterRole" && applies_to(b.subjects.as_deref(), user, "") {
            held.extend(cluster_role_rules(objects, &b.role_ref.name, &mut Vec::new()));
        }
    }
    let Some(ns) = namespace else { return held };
    for b in objects
        .role_bindings
        .iter()
        .filter(|b| b.metadata.namespace.as_deref() == Some(ns))
    {
        if !applies_to(b.subjects.as_deref(), user, ns) {
            continue;
        }
        match b.role_ref.kind.as_str() {
            "Role" => held.extend(
                objects
                    .roles
                    .iter()
                    .filter(|r| {
                        r.metadata.namespace.as_deref() == Some(ns)
                            && r.metadata.name.as_deref() == Some(&b.role_ref.name)
                    })
                    .flat_map(|r| r.rules.clone().unwrap_or_default()),
            ),
            "ClusterRole" => held.extend(cluster_role_rules(objects, &b.role_ref.name, &mut Vec::new())),
            _ => {}
        }
    }
    held
}

/// A ClusterRole's rules, with those of the roles its aggregationRule selects.
fn cluster_role_rules<'a>(objects: &'a RbacObjects, name: &'a str, seen: &mut Vec<&'a str>) -> Vec<PolicyRule> {
    if seen.contains(&name) {
        return Vec::new();
    }
    seen.push(name);
    let Some(role) = objects
        .cluster_roles
        .iter()
        .find(|r: &&ClusterRole| r.metadata.name.as_deref() == Some(name))
    else {
        return Vec::new();
    };
    let mut rules = role.rules.clone().unwrap_or_default();
    for other in aggregated(objects, role) {
        let other_name = other.metadata.name.as_deref().unwrap_or_default();
        rules.extend(cluster_role_rules(objects, other_name, seen));
    }
    rules
}

fn list(v: &Option<Vec<String>>) -> &[String] {
    v.as_deref().unwrap_or_default()
}

/// Splits a rule into rules of one group, resource, verb and (if any) resource name or URL.
fn atoms(rule: &PolicyRule) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    let one = |s: &String| Some(vec![s.clone()]);
    for verb in &rule.verbs {
        for url in list(&rule.non_resource_urls) {
            out.push(PolicyRule {
                verbs: vec![verb.clone()],
                non_resource_urls: one(url),
                ..PolicyRule::default()
            });
        }
        for group in list(&rule.api_groups) {
            for resource in list(&rule.resources) {
                let base = PolicyRule {
                    verbs: vec![verb.clone()],
                    api_groups: one(group),
                    resources: one(resource),
                    ..PolicyRule::default()
                };
                if list(&rule.resource_names).is_empty() {
                    out.push(base);
                } else {
                    for n in list(&rule.resource_names) {
                        out.push(PolicyRule {
                            resource_names: one(n),
                            ..base.clone()
                        });
                    }
                }
            }
        }
    }
    out
}

/// Whether a held rule covers a single-valued rule; a wildcard is only covered by a wildcard.
fn covers(owner: &PolicyRule, atom: &PolicyRule) -> bool {
    let has = |l: &[String], x: &str| l.iter().any(|o| o == "*" || o == x);
    let verb = &atom.verbs[0];
    if !has(&owner.verbs, verb) {
        return false;
    }
    if let Some(url) = list(&atom.non_resource_urls).first() {
        return list(&owner.non_resource_urls)
            .iter()
            .any(|o| o == "*" || o == url || o.strip_suffix('*').is_some_and(|p| url.starts_with(p)));
    }
    let (Some(group), Some(resource)) = (list(&atom.api_groups).first(), list(&atom.resources).first()) else {
        return false;
    };
    let resource_ok = list(&owner.resources).iter().any(|o| {
        o == "*"
            || o == resource
            || o.strip_prefix("*/")
                .is_some_and(|sub| resource.split_once('/').is_some_and(|(_, s)| s == sub))
    });
    let names_ok = list(&owner.resource_names).is_empty()
        || list(&atom.resource_names)
            .first()
            .is_some_and(|n| list(&owner.resource_names).contains(n));
    has(list(&owner.api_groups), group) && resource_ok && names_ok
}

/// Merges single-resource atoms that differ only in verb, as the server's `CompactRules`.
fn compact(atoms: Vec<PolicyRule>) -> Vec<PolicyRule> {
    let mut out: Vec<PolicyRule> = Vec::new();
    for atom in atoms {
        let simple = atom.resource_names.is_none() && atom.non_resource_urls.is_none();
        let same = out.iter_mut().find(|r| {
            simple && r.resource_names.is_none() && r.api_groups == atom.api_groups && r.resources == atom.resources
        });
        match same {
            Some(r) => {
                if !r.verbs.contains(&atom.verbs[0]) {
                    r.verbs.push(atom.verbs[0].clone());
                }
            }
            None => out.push(atom),
        }
    }
    out
}

/// `rbacv1helpers.CompactString`: `{APIGroups:[""], Resources:["pods"], Verbs:["get" "list"]}`.
fn compact_string(r: &PolicyRule) -> String {
    let quoted = |l: &[String]| format!("[{}]", l.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(" "));
    let mut parts = Vec::new();
    for (label, values) in [
        ("APIGroups", list(&r.api_groups)),
        ("Resources", list(&r.resources)),
        ("NonResourceURLs", list(&r.non_resource_urls)),
        ("ResourceNames", list(&r.resource_names)),
        ("Verbs", r.verbs.as_slice()),
    ] {
        if !values.is_empty() {
            parts.push(format!("{label}:{}", quoted(values)));
        }
    }
    format!("{{{}}}", parts.join(", "))
}
