//! The tenant-isolation ValidatingAdmissionPolicy, evaluated by the sandbox and by the real kube-apiserver
//! (`SUBLET_TEST_CLUSTER`), against allowed and escaping pods.

use serde_json::{Value, json};
use sublet_sandbox::SandboxConfig;

use crate::support::real::clusters;
use crate::support::sandbox::TestCluster;
use super::{deploy_yaml, pod};

fn own_lease(acme: &str) -> Value {
    json!({
        "nodeSelector": {"sublet.dev/lease": format!("{acme}.job")},
        "tolerations": [
            {"key": "sublet.dev/lease", "operator": "Equal", "value": format!("{acme}.job"), "effect": "NoSchedule"},
            {"key": "nvidia.com/gpu", "operator": "Exists"},
        ],
    })
}

#[test]
fn the_admission_policy_admits_own_lease_pods_and_denies_escapes() {
    for backend in clusters() {
        let cluster = TestCluster::on(
            backend,
            SandboxConfig {
                rbac: true,
                ..Default::default()
            },
        );
        admits_own_lease_pods_and_denies_escapes(&cluster);
    }
}

fn admits_own_lease_pods_and_denies_escapes(cluster: &TestCluster) {
    cluster.ok_stdin(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        &deploy_yaml(),
    );
    let acme = cluster.namespace("acme");
    cluster.ok(&["label", "namespace", &acme, "sublet.dev/tenant=true"]);
    let ml = cluster.namespace("ml");
    let acme = acme.as_str();
    let ml = ml.as_str();

    // Allowed: a tenant pod with its own lease's selector and toleration (and other, non-sublet tolerations).
    cluster.ok_stdin(&["apply", "-n", acme, "-f", "-"], &pod("good", own_lease(acme)));
    // Allowed: internal pods that leave sublet's taints alone, placed by name or not.
    cluster.ok_stdin(
        &["apply", "-n", ml, "-f", "-"],
        &pod(
            "train",
            json!({"nodeName": "gpu-1", "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}),
        ),
    );
    // Allowed: infrastructure in exempt namespaces.
    cluster.ok_stdin(
        &["apply", "-n", "kube-system", "-f", "-"],
        &pod("exporter", json!({"tolerations": [{"operator": "Exists"}]})),
    );
    // Allowed: updates of a bound tenant pod (the scheduler's nodeName stays, the notice annotates it).
    cluster.ok_stdin(
        &[
            "create",
            "--raw",
            &format!("/api/v1/namespaces/{acme}/pods/good/binding"),
            "-f",
            "-",
        ],
        &serde_json::to_string(
            &json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "good"},
            "target": {"kind": "Node", "name": "gpu-1"}}),
        )
        .unwrap(),
    );
    let bound = cluster.ok(&["get", "pod", "good", "-n", acme, "-o", "jsonpath={.spec.nodeName}"]);
    assert_eq!(bound, "gpu-1");
    cluster.ok(&[
        "annotate",
        "pod",
        "good",
        "-n",
        acme,
        "sublet.dev/reclaim-deadline=2030-01-01T00:00:00Z",
    ]);

    let own_selector = json!({"sublet.dev/lease": format!("{acme}.job")});
    let other_message = format!(
        "tenant pods may tolerate only the sublet.dev/lease taint of a lease in their own namespace (operator Equal, value {acme}.LEASE"
    );
    let selector_message = format!(
        "tenant pods must select the nodes of their lease: spec.nodeSelector needs sublet.dev/lease: {acme}.LEASE"
    );
    let ml_message = format!("pods in namespace {ml} may not tolerate sublet.dev/ taints");
    let cases = [
        (
            acme,
            "other-tenant",
            json!({"nodeSelector": own_selector, "tolerations": [{"key": "sublet.dev/lease", "operator": "Equal", "value": "globex.job", "effect": "NoSchedule"}]}),
            other_message.as_str(),
        ),
        (
            acme,
            "any-lease",
            json!({"nodeSelector": own_selector, "tolerations": [{"key": "sublet.dev/lease", "operator": "Exists"}]}),
            "tolerate only the sublet.dev/lease taint of a lease in their own namespace",
        ),
        (
            acme,
            "lent-nodes",
            json!({"nodeSelector": own_selector, "tolerations": [{"key": "sublet.dev/lent", "operator": "Exists"}]}),
            "tolerate only the sublet.dev/lease taint",
        ),
        (
            acme,
            "under-notice",
            json!({"nodeSelector": own_selector, "tolerations": [{"key": "sublet.dev/reclaiming", "operator": "Equal", "value": format!("{acme}.job")}]}),
            "tolerate only the sublet.dev/lease taint",
        ),
        (
            acme,
            "everything",
            json!({"nodeSelector": own_selector, "tolerations": [{"operator": "Exists"}]}),
            "tenant pods may not tolerate every taint",
        ),
        (
            acme,
            "no-selector",
            json!({"tolerations": [{"key": "sublet.dev/lease", "operator": "Equal", "value": format!("{acme}.job")}]}),
            selector_message.as_str(),
        ),
        (
            acme,
            "prefix-trick",
            json!({"nodeSelector": {"sublet.dev/lease": format!("{acme}corp.job")}}),
            "tenant pods must select the nodes of their lease",
        ),
        (
            acme,
            "by-name",
            json!({"nodeName": "gpu-1", "nodeSelector": own_selector}),
            "tenant pods may not set spec.nodeName",
        ),
        (
            ml,
            "internal-on-lent",
            json!({"tolerations": [{"key": "sublet.dev/lent", "operator": "Exists", "effect": "NoSchedule"}]}),
            ml_message.as_str(),
        ),
        (
            "default",
            "internal-on-leased",
            json!({"tolerations": [{"key": "sublet.dev/lease", "operator": "Equal", "value": format!("{acme}.job")}]}),
            "pods in namespace default may not tolerate sublet.dev/ taints",
        ),
    ];
    for (ns, name, spec, message) in cases {
        let err = cluster.fails_stdin(&["apply", "-n", ns, "-f", "-"], &pod(name, spec));
        assert!(
            err.contains(&format!("pods \"{name}\" is forbidden: ValidatingAdmissionPolicy 'sublet-tenant-isolation' with binding 'sublet-tenant-isolation' denied request: ")),
            "{name}: {err}"
        );
        assert!(err.contains(message), "{name}: {err}");
    }
    // A pod admitted before its namespace became a tenant's: others may not change it, but sublet may still
    // annotate it with its notice.
    let late = cluster.namespace("late");
    let late = late.as_str();
    cluster.ok_stdin(&["apply", "-n", late, "-f", "-"], &pod("old", json!({})));
    cluster.ok(&["label", "namespace", late, "sublet.dev/tenant=true"]);
    let err = cluster.fails(&["annotate", "pod", "old", "-n", late, "team=x"]);
    assert!(
        err.contains("tenant pods must select the nodes of their lease"),
        "{err}"
    );
    cluster.ok(&[
        "annotate",
        "pod",
        "old",
        "-n",
        late,
        "sublet.dev/reclaim-deadline=2030-01-01T00:00:00Z",
        "--as=system:serviceaccount:sublet-system:sublet",
    ]);

    // An update that adds an escaping toleration to an admitted pod is denied too.
    let err = cluster.fails(&[
        "patch",
        "pod",
        "good",
        "-n",
        acme,
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/spec/tolerations/-","value":{"key":"sublet.dev/lease","operator":"Equal","value":"globex.job"}}]"#,
    ]);
    assert!(err.contains("tolerate only the sublet.dev/lease taint"), "{err}");
}
