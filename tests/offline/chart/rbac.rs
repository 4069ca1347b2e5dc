//! The ClusterRoles: least privilege, and a comment on every rule.

use super::{chart, find, grants, render};

#[test]
fn the_cluster_role_is_least_privilege() {
    let objects = render(&[]);
    let role = find(&objects, "ClusterRole")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "sublet")
        .expect("the controller's role");
    let controller = grants(role);
    for (g, r, v) in &controller {
        assert!(g != "*" && r != "*" && v != "*", "wildcard in {g}/{r} {v}");
        assert!(
            !(r == "nodes" && ["create", "update", "delete"].contains(&v.as_str())),
            "nodes {v}"
        );
        assert!(!["secrets", "configmaps"].contains(&r.as_str()), "{r} is granted");
    }
    // Patching a lease (for sublet's finalizer) and a namespace (for its Pod Security label) are granted, and
    // the operator-bounds policy holds those writes to exactly that.
    let policy = find(&objects, "ValidatingAdmissionPolicy")
        .into_iter()
        .find(|p| p["metadata"]["name"] == "sublet-operator-bounds")
        .expect("the policy that bounds sublet's own writes");
    let validations = serde_json::to_string(&policy["spec"]["validations"]).unwrap();
    for bound in [
        "variables.resource != 'gpuleases' || (variables.spec == variables.oldSpec",
        "sublet may change only the Pod Security labels of a tenant namespace",
        "sublet may change only the sublet.dev/ annotations of a pod",
        "sublet may change only the sublet.dev/ labels, annotations and taints of a node",
    ] {
        assert!(validations.contains(bound), "{bound}: {validations}");
    }
    let has = |g: &str, r: &str, v: &str| controller.iter().any(|x| x.0 == g && x.1 == r && x.2 == v);
    assert!(has("", "pods/eviction", "create"));
    assert!(has("sublet.dev", "gpuleases/status", "patch"));
    assert!(!has("kueue.x-k8s.io", "workloads", "list"), "Kueue is off by default");

    // Every rule carries a comment that says why (in the template source).
    for template in ["templates/rbac.yaml", "templates/tenant-role.yaml"] {
        let source = std::fs::read_to_string(chart().join(template)).unwrap();
        let lines: Vec<&str> = source.lines().collect();
        let mut rules = 0;
        for (i, line) in lines.iter().enumerate() {
            if line.trim_start().starts_with("- apiGroups:") {
                rules += 1;
                let above = lines[..i]
                    .iter()
                    .rev()
                    .find(|l| !l.trim_start().starts_with("{{"))
                    .unwrap();
                assert!(
                    above.trim_start().starts_with('#'),
                    "{template}: the rule at line {} has no comment",
                    i + 1
                );
            }
        }
        assert!(rules >= 2, "{template}: {rules} rules");
    }

    // The tenants' role: leases in their namespace, never their status or anything of sublet's.
    let tenant = find(&objects, "ClusterRole")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "sublet-tenant")
        .expect("the tenant role");
    let tenant = grants(tenant);
    assert!(tenant.contains(&("sublet.dev".into(), "gpuleases".into(), "create".into())));
    assert!(
        tenant
            .iter()
            .all(|(_, r, v)| r != "gpuleases/status" && r != "tenantpools" && v != "patch" && v != "update"),
        "{tenant:?}"
    );
}
