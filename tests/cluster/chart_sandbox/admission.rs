//! The tenant-isolation ValidatingAdmissionPolicy, evaluated by the sandbox, against allowed and escaping pods.

use serde_json::{Value, json};
use sublet_sandbox::SandboxConfig;

use super::{deploy_yaml, pod};
use crate::support::sandbox::TestCluster;

fn own_lease() -> Value {
    json!({
        "nodeSelector": {"sublet.dev/lease": "acme.job"},
        "tolerations": [
            {"key": "sublet.dev/lease", "operator": "Equal", "value": "acme.job", "effect": "NoSchedule"},
            {"key": "nvidia.com/gpu", "operator": "Exists"},
        ],
    })
}

/// `spec` with the selector and toleration of the tenant's own lease.
fn with_lease(spec: Value) -> Value {
    let mut s = own_lease();
    s.as_object_mut().unwrap().extend(spec.as_object().unwrap().clone());
    s
}

/// The rendered chart applied to an RBAC sandbox, with namespaces `acme` (a tenant) and `ml`.
fn installed() -> TestCluster {
    let cluster = TestCluster::with(SandboxConfig {
        rbac: true,
        ..Default::default()
    });
    cluster.ok_stdin(&["apply", "--server-side", "-f", "-"], &deploy_yaml());
    cluster.ok(&["create", "namespace", "acme"]);
    cluster.ok(&["label", "namespace", "acme", "sublet.dev/tenant=true"]);
    cluster.ok(&["create", "namespace", "ml"]);
    cluster
}

#[test]
fn the_admission_policy_admits_own_lease_pods_and_denies_escapes() {
    let cluster = installed();

    // Allowed: a tenant pod with its own lease's selector and toleration (and other, non-sublet tolerations).
    cluster.ok_stdin(&["apply", "-n", "acme", "-f", "-"], &pod("good", own_lease()));
    // Allowed: internal pods that leave sublet's taints alone and let the scheduler place them.
    cluster.ok_stdin(
        &["apply", "-n", "ml", "-f", "-"],
        &pod(
            "train",
            json!({"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}),
        ),
    );
    // Allowed: a node agent named in admission.allowedServiceAccounts (kube-proxy by default) tolerates
    // everything and may be placed by name.
    cluster.ok_stdin(
        &["apply", "-n", "kube-system", "-f", "-"],
        &pod(
            "kube-proxy-x",
            json!({"serviceAccountName": "kube-proxy", "nodeName": "gpu-1", "tolerations": [{"operator": "Exists"}]}),
        ),
    );
    // Allowed: updates of a bound tenant pod (the scheduler's nodeName stays, the notice annotates it).
    cluster.ok_stdin(
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/acme/pods/good/binding",
            "-f",
            "-",
        ],
        &serde_json::to_string(
            &json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "good"},
            "target": {"kind": "Node", "name": "gpu-1"}}),
        )
        .unwrap(),
    );
    let bound = cluster.ok(&["get", "pod", "good", "-n", "acme", "-o", "jsonpath={.spec.nodeName}"]);
    assert_eq!(bound, "gpu-1");
    cluster.ok(&[
        "annotate",
        "pod",
        "good",
        "-n",
        "acme",
        "sublet.dev/reclaim-deadline=2030-01-01T00:00:00Z",
    ]);

    let own_selector = json!({"sublet.dev/lease": "acme.job"});
    let cases = [
        (
            "acme",
            "other-tenant",
            json!({"nodeSelector": own_selector, "tolerations": [{"key": "sublet.dev/lease", "operator": "Equal", "value": "globex.job", "effect": "NoSchedule"}]}),
            "tenant pods may tolerate only the sublet.dev/lease taint of a lease in their own namespace (operator Equal, value acme.LEASE",
        ),
        (
            "acme",
            "any-lease",
            json!({"nodeSelector": own_selector, "tolerations": [{"key": "sublet.dev/lease", "operator": "Exists"}]}),
            "tolerate only the sublet.dev/lease taint of a lease in their own namespace",
        ),
        (
            "acme",
            "lent-nodes",
            json!({"nodeSelector": own_selector, "tolerations": [{"key": "sublet.dev/lent", "operator": "Exists"}]}),
            "tolerate only the sublet.dev/lease taint",
        ),
        (
            "acme",
            "under-notice",
            json!({"nodeSelector": own_selector, "tolerations": [{"key": "sublet.dev/reclaiming", "operator": "Equal", "value": "acme.job"}]}),
            "tolerate only the sublet.dev/lease taint",
        ),
        (
            "acme",
            "everything",
            json!({"nodeSelector": own_selector, "tolerations": [{"operator": "Exists"}]}),
            "tenant pods may not tolerate every taint",
        ),
        (
            "acme",
            "no-selector",
            json!({"tolerations": [{"key": "sublet.dev/lease", "operator": "Equal", "value": "acme.job"}]}),
            "tenant pods must select the nodes of their lease: spec.nodeSelector needs sublet.dev/lease: acme.LEASE",
        ),
        (
            "acme",
            "prefix-trick",
            json!({"nodeSelector": {"sublet.dev/lease": "acmecorp.job"}}),
            "tenant pods must select the nodes of their lease",
        ),
        (
            "acme",
            "by-name",
            json!({"nodeName": "gpu-1", "nodeSelector": own_selector}),
            "tenant pods may not set spec.nodeName",
        ),
        (
            "ml",
            "internal-on-lent",
            json!({"tolerations": [{"key": "sublet.dev/lent", "operator": "Exists", "effect": "NoSchedule"}]}),
            "pods in namespace ml may not tolerate sublet.dev/ taints",
        ),
        (
            "default",
            "internal-on-leased",
            json!({"tolerations": [{"key": "sublet.dev/lease", "operator": "Equal", "value": "acme.job"}]}),
            "pods in namespace default may not tolerate sublet.dev/ taints",
        ),
        // Attack 6: internal pods past the taints onto lent or leased nodes, kube-system included.
        (
            "ml",
            "wildcard",
            json!({"nodeSelector": {"sublet.dev/lease": "acme.job"}, "tolerations": [{"operator": "Exists"}]}),
            "pods in namespace ml may not tolerate every taint",
        ),
        (
            "kube-system",
            "exporter",
            json!({"tolerations": [{"operator": "Exists", "effect": "NoExecute"}]}),
            "pods in namespace kube-system may not tolerate every taint",
        ),
        (
            "ml",
            "by-name",
            json!({"nodeName": "gpu-1"}),
            "pods in namespace ml may not set spec.nodeName",
        ),
        // Attack 5: a tenant pod that would own its node.
        (
            "acme",
            "privileged",
            with_lease(json!({"containers": [{"name": "c", "image": "x", "securityContext": {"privileged": true}}]})),
            "tenant pods may not run privileged containers",
        ),
        (
            "acme",
            "host-pid",
            with_lease(json!({"hostPID": true})),
            "tenant pods may not share the node's network, process or IPC namespace",
        ),
        (
            "acme",
            "host-network",
            with_lease(json!({"hostNetwork": true})),
            "tenant pods may not share the node's network, process or IPC namespace",
        ),
        (
            "acme",
            "host-path",
            with_lease(json!({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]})),
            "tenant pods may not mount hostPath volumes",
        ),
        (
            "acme",
            "host-port",
            with_lease(
                json!({"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 22, "hostPort": 22}]}]}),
            ),
            "tenant pods may not bind host ports",
        ),
        (
            "acme",
            "sys-admin",
            with_lease(json!({"initContainers": [{"name": "i", "image": "x",
                "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]})),
            "tenant pods may not add Linux capabilities",
        ),
        (
            "acme",
            "debug",
            with_lease(json!({"ephemeralContainers": [{"name": "d", "image": "x"}]})),
            "tenant pods may not run ephemeral containers",
        ),
        // Attacks 1 and 3: what would keep a node past its deadline.
        (
            "acme",
            "long-grace",
            with_lease(json!({"terminationGracePeriodSeconds": 315360000})),
            "tenant pods may not ask for a terminationGracePeriodSeconds above 30",
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
    cluster.ok(&["create", "namespace", "late"]);
    cluster.ok_stdin(&["apply", "-n", "late", "-f", "-"], &pod("old", json!({})));
    cluster.ok(&["label", "namespace", "late", "sublet.dev/tenant=true"]);
    let err = cluster.fails(&["annotate", "pod", "old", "-n", "late", "team=x"]);
    assert!(
        err.contains("tenant pods must select the nodes of their lease"),
        "{err}"
    );
    cluster.ok(&[
        "annotate",
        "pod",
        "old",
        "-n",
        "late",
        "sublet.dev/reclaim-deadline=2030-01-01T00:00:00Z",
        "--as=system:serviceaccount:sublet-system:sublet",
    ]);

    // An update that adds an escaping toleration to an admitted pod is denied too.
    let err = cluster.fails(&[
        "patch",
        "pod",
        "good",
        "-n",
        "acme",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/spec/tolerations/-","value":{"key":"sublet.dev/lease","operator":"Equal","value":"globex.job"}}]"#,
    ]);
    assert!(err.contains("tolerate only the sublet.dev/lease taint"), "{err}");
}

#[test]
fn tenants_get_no_budgets_or_finalizers_and_internal_pods_no_wildcard_by_update() {
    let cluster = installed();

    // Attack 1: a PodDisruptionBudget in a tenant namespace (elsewhere budgets are the platform's business).
    let pdb = |ns: &str| {
        serde_json::to_string(&json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "keep", "namespace": ns},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "x"}}}}))
        .unwrap()
    };
    let err = cluster.fails_stdin(&["apply", "-f", "-"], &pdb("acme"));
    assert!(
        err.contains("tenant namespaces may not hold PodDisruptionBudgets"),
        "{err}"
    );
    cluster.ok_stdin(&["apply", "-f", "-"], &pdb("ml"));

    // A finalizer on a tenant pod would keep it, and its node, past the deadline; the Job controller's is fine.
    let with_finalizer = |name: &str, finalizer: &str| {
        let mut p: Value = serde_json::from_str(&pod(name, own_lease())).unwrap();
        p["metadata"]["finalizers"] = json!([finalizer]);
        serde_json::to_string(&p).unwrap()
    };
    let err = cluster.fails_stdin(
        &["apply", "-n", "acme", "-f", "-"],
        &with_finalizer("held", "example.com/keep"),
    );
    assert!(err.contains("tenant pods may not carry finalizers"), "{err}");
    cluster.ok_stdin(
        &["apply", "-n", "acme", "-f", "-"],
        &with_finalizer("job-pod", "batch.kubernetes.io/job-tracking"),
    );

    // Attack 6: a wildcard toleration added to an admitted internal pod by an update.
    cluster.ok_stdin(&["apply", "-n", "ml", "-f", "-"], &pod("train", json!({})));
    let err = cluster.fails(&[
        "patch",
        "pod",
        "train",
        "-n",
        "ml",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/spec/tolerations","value":[{"operator":"Exists"}]}]"#,
    ]);
    assert!(err.contains("may not tolerate every taint"), "{err}");
}

#[test]
fn sublets_own_writes_are_bounded_and_kubelets_cannot_write_its_marks() {
    let cluster = installed();
    cluster.ok_stdin(&["apply", "-n", "acme", "-f", "-"], &pod("good", own_lease()));
    cluster.ok_stdin(&["apply", "-n", "ml", "-f", "-"], &pod("train", json!({})));
    let node = r#"{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-1", "labels": {"team": "ml"}},
        "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]}}"#;
    cluster.ok_stdin(&["apply", "-f", "-"], node);

    // Attack 7: what sublet's ServiceAccount may do through its RBAC, the policy narrows to its own marks.
    let sa = "--as=system:serviceaccount:sublet-system:sublet";
    let bounded = |args: &[&str], message: &str| {
        let mut all = args.to_vec();
        all.push(sa);
        let err = cluster.fails(&all);
        assert!(
            err.contains("ValidatingAdmissionPolicy 'sublet-operator-bounds'") && err.contains(message),
            "{args:?}: {err}"
        );
    };
    cluster.ok(&[
        "annotate",
        "pod",
        "good",
        "-n",
        "acme",
        "sublet.dev/reclaim-deadline=2030-01-01T00:00:00Z",
        sa,
    ]);
    bounded(
        &["annotate", "pod", "good", "-n", "acme", "team=x"],
        "sublet may change only the sublet.dev/ annotations of a pod",
    );
    bounded(
        &[
            "patch",
            "pod",
            "train",
            "-n",
            "ml",
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/spec/tolerations","value":[{"key":"sublet.dev/lease","operator":"Equal","value":"acme.job"}]}]"#,
        ],
        "sublet may change only the sublet.dev/ annotations of a pod",
    );
    bounded(
        &["delete", "pod", "train", "-n", "ml", "--wait=false"],
        "sublet may evict or delete only tenant pods",
    );
    cluster.ok(&["label", "node", "gpu-1", "sublet.dev/state=lent", sa]);
    cluster.ok(&["taint", "node", "gpu-1", "sublet.dev/lent=p:NoExecute", sa]);
    bounded(
        &["label", "node", "gpu-1", "team=other", "--overwrite"],
        "sublet may change only the sublet.dev/ labels, annotations and taints of a node",
    );
    bounded(
        &["taint", "node", "gpu-1", "nvidia.com/gpu-"],
        "sublet may change only the sublet.dev/ labels, annotations and taints of a node",
    );
    // Namespaces through kube-rs as sublet (kubectl reads a namespace before it patches, and sublet may not).
    let patch_as_sublet = |name: &str, labels: Value| -> Result<(), String> {
        cluster.runtime.block_on(async {
            let mut config = cluster.handle().client_config().await.unwrap();
            config.auth_info.impersonate = Some("system:serviceaccount:sublet-system:sublet".into());
            let client = kube::Client::try_from(config).unwrap();
            let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
            let patch = json!({"metadata": {"labels": labels}});
            api.patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
        })
    };
    let psa = json!({"pod-security.kubernetes.io/enforce": "restricted"});
    patch_as_sublet("acme", psa.clone()).expect("sublet labels a tenant namespace for Pod Security");
    for (ns, labels) in [("ml", psa), ("acme", json!({"sublet.dev/tenant": null}))] {
        let err = patch_as_sublet(ns, labels).unwrap_err();
        assert!(
            err.contains("sublet may change only the Pod Security labels of a tenant namespace"),
            "{ns}: {err}"
        );
    }

    // Attacks 5 and 8: a kubelet (a tenant who is root on its node has its credentials) may not rewrite
    // sublet's marks, but may still change its own.
    fn as_kubelet<'a>(args: &[&'a str]) -> Vec<&'a str> {
        let mut all = args.to_vec();
        all.extend([
            "--as=system:node:gpu-1",
            "--as-group=system:nodes",
            "--as-group=system:masters",
        ]);
        all
    }
    for args in [
        vec![
            "annotate",
            "node",
            "gpu-1",
            "sublet.dev/reclaim-deadline=2099-01-01T00:00:00Z",
        ],
        vec!["label", "node", "gpu-1", "sublet.dev/state-"],
        vec!["taint", "node", "gpu-1", "sublet.dev/lent-"],
    ] {
        let err = cluster.fails(&as_kubelet(&args));
        assert!(
            err.contains("nodes may not change sublet.dev/ labels, annotations or taints"),
            "{args:?}: {err}"
        );
    }
    cluster.ok(&as_kubelet(&["label", "node", "gpu-1", "topology.example.com/rack=r1"]));
}
