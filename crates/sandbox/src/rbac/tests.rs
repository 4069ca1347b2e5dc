use serde_json::{Value, json};

use super::*;

fn parse<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("valid RBAC object")
}

fn role(ns: &str, name: &str, rules: Value) -> Role {
    parse(json!({"metadata": {"name": name, "namespace": ns}, "rules": rules}))
}

fn cluster_role(name: &str, rules: Value) -> ClusterRole {
    parse(json!({"metadata": {"name": name}, "rules": rules}))
}

fn role_binding(ns: &str, name: &str, kind: &str, role: &str, subjects: Value) -> RoleBinding {
    parse(json!({"metadata": {"name": name, "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role}, "subjects": subjects}))
}

fn cluster_binding(name: &str, role: &str, subjects: Value) -> ClusterRoleBinding {
    parse(json!({"metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}, "subjects": subjects}))
}

fn req(verb: &str, group: &str, resource: &str, ns: Option<&str>, name: Option<&str>) -> Attributes {
    Attributes {
        verb: verb.into(),
        api_group: group.into(),
        resource: resource.into(),
        namespace: ns.map(str::to_owned),
        name: name.map(str::to_owned),
        ..Attributes::default()
    }
}

fn user(name: &str, groups: &[&str]) -> UserInfo {
    UserInfo {
        name: name.into(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

/// sublet's controller account with a cluster-wide grant, a tenant with a namespaced grant of a ClusterRole,
/// and a namespaced Role.
fn objects() -> RbacObjects {
    RbacObjects {
        roles: vec![role(
            "tenant-a",
            "lease-reader",
            json!([
            {"apiGroups": ["sublet.dev"], "resources": ["gpuleases"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["quota"], "verbs": ["get", "update"]}]),
        )],
        cluster_roles: vec![
            cluster_role(
                "sublet",
                json!([
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "patch"]},
                {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
                {"apiGroups": ["sublet.dev"], "resources": ["*/status"], "verbs": ["patch"]},
                {"nonResourceURLs": ["/metrics", "/debug/*"], "verbs": ["get"]}]),
            ),
            cluster_role(
                "edit",
                json!([{"apiGroups": ["", "apps"], "resources": ["*"], "verbs": ["*"]}]),
            ),
            cluster_role(
                "viewer",
                json!([{"apiGroups": ["*"], "resources": ["pods"], "verbs": ["get"]}]),
            ),
        ],
        role_bindings: vec![
            role_binding(
                "tenant-a",
                "edit",
                "ClusterRole",
                "edit",
                json!([{"kind": "Group", "name": "tenant-a-devs"}]),
            ),
            role_binding(
                "tenant-a",
                "leases",
                "Role",
                "lease-reader",
                json!([{"kind": "ServiceAccount", "name": "runner"}, {"kind": "User", "name": "carol"}]),
            ),
        ],
        cluster_role_bindings: vec![
            cluster_binding(
                "sublet",
                "sublet",
                json!([{"kind": "ServiceAccount", "name": "sublet", "namespace": "sublet-system"}]),
            ),
            cluster_binding(
                "viewers",
                "viewer",
                json!([{"kind": "Group", "name": "system:authenticated"}]),
            ),
        ],
    }
}

#[test]
fn cluster_role_bound_by_a_role_binding_grants_in_that_namespace_only() {
    let dev = user("alice", &["tenant-a-devs", "system:authenticated"]);
    let o = objects();
    assert_eq!(
        authorize(&o, &dev, &req("delete", "", "pods", Some("tenant-a"), Some("x"))),
        Decision::Allow
    );
    assert_eq!(
        authorize(&o, &dev, &req("create", "apps", "deployments", Some("tenant-a"), None)),
        Decision::Allow
    );
    assert_eq!(
        authorize(&o, &dev, &req("delete", "", "pods", Some("tenant-b"), Some("x"))),
        Decision::Deny
    );
    assert_eq!(
        authorize(&o, &dev, &req("list", "", "pods", None, None)),
        Decision::Deny,
        "no cluster-wide grant"
    );
    assert_eq!(
        authorize(&o, &dev, &req("get", "sublet.dev", "gpuleases", Some("tenant-a"), None)),
        Decision::Deny
    );
}

#[test]
fn roles_resource_names_and_service_account_subjects() {
    let o = objects();
    let runner = UserInfo::service_account("tenant-a", "runner");
    assert_eq!(
        runner.groups,
        [
            "system:serviceaccounts",
            "system:serviceaccounts:tenant-a",
            "system:authenticated"
        ]
    );
    assert_eq!(
        authorize(
            &o,
            &runner,
            &req("watch", "sublet.dev", "gpuleases", Some("tenant-a"), None)
        ),
        Decision::Allow
    );
    assert_eq!(
        authorize(
            &o,
            &runner,
            &req("delete", "sublet.dev", "gpuleases", Some("tenant-a"), Some("l"))
        ),
        Decision::Deny
    );
    let other_ns = UserInfo::service_account("tenant-b", "runner");
    assert_eq!(
        authorize(
            &o,
            &other_ns,
            &req("list", "sublet.dev", "gpuleases", Some("tenant-a"), None)
        ),
        Decision::Deny
    );

    let carol = user("carol", &[]);
    assert_eq!(
        authorize(
            &o,
            &carol,
            &req("update", "", "configmaps", Some("tenant-a"), Some("quota"))
        ),
        Decision::Allow
    );
    assert_eq!(
        authorize(
            &o,
            &carol,
            &req("update", "", "configmaps", Some("tenant-a"), Some("other"))
        ),
        Decision::Deny
    );
    assert_eq!(
        authorize(&o, &carol, &req("get", "", "configmaps", Some("tenant-a"), None)),
        Decision::Deny,
        "resourceNames need a name"
    );
}

#[test]
fn subresources_wildcards_and_groups() {
    let o = objects();
    let sublet = UserInfo::service_account("sublet-system", "sublet");
    let evict = Attributes {
        subresource: "eviction".into(),
        ..req("create", "", "pods", Some("tenant-a"), Some("p"))
    };
    assert_eq!(authorize(&o, &sublet, &evict), Decision::Allow);
    assert_eq!(
        authorize(&o, &sublet, &req("create", "", "pods", Some("tenant-a"), None)),
        Decision::Deny,
        "pods/eviction is not pods"
    );
    let status = Attributes {
        subresource: "status".into(),
        ..req("patch", "sublet.dev", "tenantpools", None, Some("a100"))
    };
    assert_eq!(
        authorize(&o, &sublet, &status),
        Decision::Allow,
        "*/status covers every resource's status"
    );
    assert_eq!(
        authorize(
            &o,
            &sublet,
            &req("patch", "sublet.dev", "tenantpools", None, Some("a100"))
        ),
        Decision::Deny
    );
    assert_eq!(
        authorize(&o, &sublet, &req("patch", "", "nodes", None, Some("gpu-1"))),
        Decision::Allow
    );
    assert_eq!(
        authorize(&o, &sublet, &req("delete", "", "nodes", None, Some("gpu-1"))),
        Decision::Deny
    );

    let dev = user("alice", &["tenant-a-devs"]);
    let log = Attributes {
        subresource: "log".into(),
        ..req("get", "", "pods", Some("tenant-a"), Some("p"))
    };
    assert_eq!(
        authorize(&o, &dev, &log),
        Decision::Allow,
        "resources * covers subresources"
    );

    let anyone = user("dave", &["system:authenticated"]);
    assert_eq!(
        authorize(&o, &anyone, &req("get", "metrics.k8s.io", "pods", Some("x"), Some("p"))),
        Decision::Allow,
        "apiGroups *"
    );
    assert_eq!(
        authorize(&o, &user("eve", &[]), &req("get", "", "pods", Some("x"), Some("p"))),
        Decision::Deny
    );
    assert_eq!(
        authorize(
            &o,
            &user("root", &["system:masters"]),
            &req("delete", "", "nodes", None, Some("n"))
        ),
        Decision::Allow
    );
}

#[test]
fn non_resource_urls_with_trailing_wildcard() {
    let o = objects();
    let sublet = UserInfo::service_account("sublet-system", "sublet");
    let path = |p: &str, verb: &str| Attributes {
        verb: verb.into(),
        path: Some(p.into()),
        ..Attributes::default()
    };
    assert_eq!(authorize(&o, &sublet, &path("/metrics", "get")), Decision::Allow);
    assert_eq!(
        authorize(&o, &sublet, &path("/debug/pprof/heap", "get")),
        Decision::Allow
    );
    assert_eq!(authorize(&o, &sublet, &path("/metrics/extra", "get")), Decision::Deny);
    assert_eq!(authorize(&o, &sublet, &path("/metrics", "post")), Decision::Deny);
    assert_eq!(
        authorize(&o, &user("alice", &["tenant-a-devs"]), &path("/metrics", "get")),
        Decision::Deny
    );
}

#[test]
fn forbidden_status_words_as_the_real_server() {
    let sa = UserInfo::service_account("ns", "sa");
    let status = forbidden_status(&sa, &req("delete", "", "pods", Some("ns"), Some("x")));
    assert_eq!(
        status["message"],
        "pods \"x\" is forbidden: User \"system:serviceaccount:ns:sa\" cannot delete resource \"pods\" in API group \"\" in the namespace \"ns\""
    );
    assert_eq!(status["code"], 403);
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(status["details"], json!({"name": "x", "kind": "pods"}));

    let list = forbidden_status(&sa, &req("list", "sublet.dev", "tenantpools", None, None));
    assert_eq!(
        list["message"],
        "tenantpools.sublet.dev is forbidden: User \"system:serviceaccount:ns:sa\" cannot list resource \"tenantpools\" in API group \"sublet.dev\" at the cluster scope"
    );
    assert_eq!(list["details"], json!({"group": "sublet.dev", "kind": "tenantpools"}));

    let evict = Attributes {
        subresource: "eviction".into(),
        ..req("create", "", "pods", Some("t"), Some("p"))
    };
    assert_eq!(
        forbidden_status(&sa, &evict)["message"],
        "pods \"p\" is forbidden: User \"system:serviceaccount:ns:sa\" cannot create resource \"pods/eviction\" in API group \"\" in the namespace \"t\""
    );
    let path = Attributes {
        verb: "get".into(),
        path: Some("/metrics".into()),
        ..Attributes::default()
    };
    assert_eq!(
        forbidden_status(&sa, &path)["message"],
        "forbidden: User \"system:serviceaccount:ns:sa\" cannot get path \"/metrics\""
    );
}

#[test]
fn objects_read_from_json_and_malformed_ones_grant_nothing() {
    let objects = RbacObjects::from_json(
        &[],
        &[
            json!({"metadata": {"name": "reader"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]}),
            json!({"metadata": {"name": "broken"}, "rules": "not a list"}),
        ],
        &[],
        &[
            json!({"metadata": {"name": "b"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "reader"},
                 "subjects": [{"kind": "User", "name": "alice"}]}),
        ],
    );
    assert_eq!(objects.cluster_roles.len(), 1);
    assert_eq!(
        authorize(&objects, &user("alice", &[]), &req("list", "", "pods", None, None)),
        Decision::Allow
    );
    assert_eq!(
        authorize(&objects, &user("bob", &[]), &req("list", "", "pods", None, None)),
        Decision::Deny
    );
}

#[test]
fn aggregated_cluster_roles_grant_what_they_select() {
    let mut o = objects();
    o.cluster_roles.push(parse(json!({"metadata": {"name": "tenant-edit"},
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"sublet.dev/aggregate-to-tenant-edit": "true"}}]},
        "rules": []})));
    o.cluster_roles
        .push(parse(json!({"metadata": {"name": "gpulease-editor",
            "labels": {"sublet.dev/aggregate-to-tenant-edit": "true", "sublet.dev/aggregate-to-loop": "true"}},
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"sublet.dev/aggregate-to-loop": "true"}}]},
        "rules": [{"apiGroups": ["sublet.dev"], "resources": ["gpuleases"], "verbs": ["create", "delete"]}]})));
    o.role_bindings.push(role_binding(
        "tenant-a",
        "bob-edit",
        "ClusterRole",
        "tenant-edit",
        json!([{"kind": "User", "name": "bob"}]),
    ));
    let bob = user("bob", &[]);
    assert_eq!(
        authorize(
            &o,
            &bob,
            &req("create", "sublet.dev", "gpuleases", Some("tenant-a"), None)
        ),
        Decision::Allow
    );
    assert_eq!(
        authorize(
            &o,
            &bob,
            &req("update", "sublet.dev", "gpuleases", Some("tenant-a"), Some("l"))
        ),
        Decision::Deny
    );
    assert_eq!(
        authorize(
            &o,
            &bob,
            &req("create", "sublet.dev", "gpuleases", Some("tenant-b"), None)
        ),
        Decision::Deny
    );
}

#[test]
fn roles_may_only_grant_rules_their_writer_holds() {
    let o = objects();
    let alice = user("alice", &["tenant-a-devs"]);
    let role = |rules: Value| json!({"metadata": {"name": "grab", "namespace": "tenant-a"}, "rules": rules});
    let pods = role(json!([{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}]));
    assert_eq!(check_role_write(&o, &alice, &pods, Some("tenant-a")), Ok(()));
    let leases = role(
        json!([{"apiGroups": ["sublet.dev"], "resources": ["gpuleases"], "verbs": ["get", "delete"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]),
    );
    let status = check_role_write(&o, &alice, &leases, Some("tenant-a")).expect_err("escalation");
    assert_eq!(
        status["message"],
        "roles.rbac.authorization.k8s.io \"grab\" is forbidden: user \"alice\" (groups=[\"tenant-a-devs\"]) is attempting \
         to grant RBAC permissions not currently held:\n{APIGroups:[\"sublet.dev\"], Resources:[\"gpuleases\"], Verbs:[\"get\" \"delete\"]}"
    );
    assert_eq!(status["code"], 403);
    assert!(
        check_role_write(&o, &alice, &pods, Some("tenant-b")).is_err(),
        "held in tenant-a only"
    );
    assert!(
        check_role_write(&o, &alice, &pods, None).is_err(),
        "a ClusterRole needs cluster-wide rules"
    );
    assert_eq!(
        check_role_write(&o, &user("root", &["system:masters"]), &leases, Some("tenant-a")),
        Ok(())
    );

    let mut with_escalate = o.clone();
    with_escalate.cluster_roles.push(cluster_role(
        "escalator",
        json!([{"apiGroups": ["rbac.authorization.k8s.io"],
        "resources": ["roles"], "verbs": ["escalate"]}]),
    ));
    with_escalate.role_bindings.push(role_binding(
        "tenant-a",
        "esc",
        "ClusterRole",
        "escalator",
        json!([{"kind": "User", "name": "alice"}]),
    ));
    assert_eq!(
        check_role_write(&with_escalate, &alice, &leases, Some("tenant-a")),
        Ok(())
    );
}

#[test]
fn bindings_need_the_bound_rules_or_the_bind_verb() {
    let o = objects();
    let alice = user("alice", &["tenant-a-devs"]);
    let binding = |kind: &str, role: &str| {
        json!({"metadata": {"name": "b", "namespace": "tenant-a"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
        "subjects": [{"kind": "User", "name": "mallory"}]})
    };
    assert_eq!(
        check_binding_write(&o, &alice, &binding("ClusterRole", "edit"), Some("tenant-a")),
        Ok(())
    );
    let status =
        check_binding_write(&o, &alice, &binding("ClusterRole", "sublet"), Some("tenant-a")).expect_err("escalation");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("rolebindings.rbac.authorization.k8s.io \"b\" is forbidden: user \"alice\""),
        "{message}"
    );
    assert!(
        message.ends_with(
            "is attempting to grant RBAC permissions not currently held:\n\
             {APIGroups:[\"sublet.dev\"], Resources:[\"*/status\"], Verbs:[\"patch\"]}\n\
             {NonResourceURLs:[\"/debug/*\"], Verbs:[\"get\"]}\n{NonResourceURLs:[\"/metrics\"], Verbs:[\"get\"]}"
        ),
        "nodes and pods/eviction are covered by edit's wildcard in tenant-a; the rest is not: {message}"
    );

    let mut with_bind = o.clone();
    with_bind.cluster_roles.push(cluster_role(
        "binder",
        json!([{"apiGroups": ["rbac.authorization.k8s.io"],
        "resources": ["clusterroles"], "resourceNames": ["sublet"], "verbs": ["bind"]}]),
    ));
    with_bind.cluster_role_bindings.push(cluster_binding(
        "binder",
        "binder",
        json!([{"kind": "User", "name": "alice"}]),
    ));
    assert_eq!(
        check_binding_write(&with_bind, &alice, &binding("ClusterRole", "sublet"), Some("tenant-a")),
        Ok(())
    );
    let missing = check_binding_write(&with_bind, &alice, &binding("ClusterRole", "missing"), Some("tenant-a"));
    let status = missing.expect_err("the role is resolved first");
    assert_eq!(
        status["message"],
        "clusterroles.rbac.authorization.k8s.io \"missing\" not found"
    );
    assert_eq!(status["code"], 404);
}
