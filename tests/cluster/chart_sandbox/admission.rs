//! The tenant-isolation ValidatingAdmissionPolicy, evaluated by the sandbox and by the real kube-apiserver with
//! its whole admission chain (`SUBLET_TEST_CLUSTER`), against allowed and escaping pods.

use serde_json::{Value, json};

use super::pod;
use crate::support::chart::{self, Installed};
use crate::support::real::{Backend, clusters};

const SUBLET: &str = "system:serviceaccount:sublet-system:sublet";

fn own_lease(acme: &str) -> Value {
    json!({
        "nodeSelector": {"sublet.dev/lease": format!("{acme}.job")},
        "tolerations": [
            {"key": "sublet.dev/lease", "operator": "Equal", "value": format!("{acme}.job"), "effect": "NoSchedule"},
            {"key": "nvidia.com/gpu", "operator": "Exists"},
        ],
    })
}

/// `spec` with the selector and toleration of the tenant's own lease.
fn with_lease(acme: &str, spec: Value) -> Value {
    let mut s = own_lease(acme);
    s.as_object_mut().unwrap().extend(spec.as_object().unwrap().clone());
    s
}

/// The rendered chart installed on `backend`, once the tenant-isolation policy is in force.
fn installed(backend: Backend) -> Installed {
    let installed = chart::install(backend);
    installed.cluster.denied_eventually(
        &["create", "-n", &installed.ml, "-f", "-"],
        &pod("probe", json!({"tolerations": [{"operator": "Exists"}]})),
        "ValidatingAdmissionPolicy 'sublet-tenant-isolation'",
    );
    installed
}

#[test]
fn the_admission_policy_admits_own_lease_pods_and_denies_escapes() {
    for backend in clusters() {
        admits_own_lease_pods_and_denies_escapes(backend);
    }
}

fn admits_own_lease_pods_and_denies_escapes(backend: Backend) {
    let Installed { cluster, acme, ml } = installed(backend);
    let (acme, ml) = (acme.as_str(), ml.as_str());
    // A node name no node has: placing a pod by name is what the policy judges, not where it lands.
    let node = cluster.name("gpu-1");

    // Allowed: a tenant pod with its own lease's selector and toleration (and other, non-sublet tolerations).
    cluster.ok_stdin(&["apply", "-n", acme, "-f", "-"], &pod("good", own_lease(acme)));
    // Allowed: internal pods that leave sublet's taints alone and let the scheduler place them.
    cluster.ok_stdin(
        &["apply", "-n", ml, "-f", "-"],
        &pod(
            "train",
            json!({"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}),
        ),
    );
    // Allowed: a node agent named in admission.allowedServiceAccounts (kube-proxy by default) tolerates
    // everything and may be placed by name. (kube-apiserver admits a pod only as a ServiceAccount that exists.)
    cluster.ok_stdin(
        &["apply", "-f", "-"],
        r#"{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "kube-proxy", "namespace": "kube-system"}}"#,
    );
    let agent = cluster.name("kube-proxy-x");
    cluster.ok_stdin(
        &["apply", "-n", "kube-system", "-f", "-"],
        &pod(
            &agent,
            json!({"serviceAccountName": "kube-proxy", "nodeName": node, "tolerations": [{"operator": "Exists"}]}),
        ),
    );
    // kube-system outlives the test on the real control plane; the pod's node has no kubelet to finish it.
    cluster.ok(&[
        "delete",
        "pod",
        &agent,
        "-n",
        "kube-system",
        "--grace-period=0",
        "--force",
    ]);
    // Allowed: a pool's scrub pod, as the chart's scrub ServiceAccount in the release namespace, pinned to its
    // node and tolerating sublet's taints; the same pod as any other ServiceAccount there is denied.
    let scrub = json!({"serviceAccountName": "sublet-scrub", "nodeName": node, "tolerations": [
        {"key": "sublet.dev/lent", "operator": "Exists"}, {"key": "sublet.dev/lease", "operator": "Exists"}]});
    let scrubber = cluster.name("scrub-x");
    cluster.ok_stdin(
        &["apply", "-n", "sublet-system", "-f", "-"],
        &pod(&scrubber, scrub.clone()),
    );
    cluster.ok(&[
        "delete",
        "pod",
        &scrubber,
        "-n",
        "sublet-system",
        "--grace-period=0",
        "--force",
    ]);
    let mut impostor = scrub;
    impostor["serviceAccountName"] = json!("default");
    let name = cluster.name("not-scrub");
    let err = cluster.fails_stdin(&["apply", "-n", "sublet-system", "-f", "-"], &pod(&name, impostor));
    assert!(
        err.contains("ValidatingAdmissionPolicy 'sublet-tenant-isolation'"),
        "{err}"
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
            "target": {"kind": "Node", "name": node}}),
        )
        .unwrap(),
    );
    let bound = cluster.ok(&["get", "pod", "good", "-n", acme, "-o", "jsonpath={.spec.nodeName}"]);
    assert_eq!(bound, node);
    cluster.ok(&[
        "annotate",
        "pod",
        "good",
        "-n",
        acme,
        "sublet.dev/reclaim-deadline=2030-01-01T00:00:00Z",
    ]);

    let own_selector = json!({"sublet.dev/lease": format!("{acme}.job")});
    let other_tenant = format!(
        "tenant pods may tolerate only the sublet.dev/lease taint of a lease in their own namespace (operator Equal, value {acme}.LEASE"
    );
    let no_selector = format!(
        "tenant pods must select the nodes of their lease: spec.nodeSelector needs sublet.dev/lease: {acme}.LEASE"
    );
    let ml_sublet = format!("pods in namespace {ml} may not tolerate sublet.dev/ taints");
    let ml_wildcard = format!("pods in namespace {ml} may not tolerate every taint");
    let ml_by_name = format!("pods in namespace {ml} may not set spec.nodeName");
    let cases = [
        (
            acme,
            "other-tenant",
            json!({"nodeSelector": own_selector, "tolerations": [{"key": "sublet.dev/lease", "operator": "Equal", "value": "globex.job", "effect": "NoSchedule"}]}),
            other_tenant.as_str(),
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
            no_selector.as_str(),
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
            json!({"nodeName": node, "nodeSelector": own_selector}),
            "tenant pods may not set spec.nodeName",
        ),
        (
            ml,
            "internal-on-lent",
            json!({"tolerations": [{"key": "sublet.dev/lent", "operator": "Exists", "effect": "NoSchedule"}]}),
            ml_sublet.as_str(),
        ),
        (
            "default",
            "internal-on-leased",
            json!({"tolerations": [{"key": "sublet.dev/lease", "operator": "Equal", "value": format!("{acme}.job")}]}),
            "pods in namespace default may not tolerate sublet.dev/ taints",
        ),
        // Attack 6: internal pods past the taints onto lent or leased nodes, kube-system included.
        (
            ml,
            "wildcard",
            json!({"nodeSelector": own_selector, "tolerations": [{"operator": "Exists"}]}),
            ml_wildcard.as_str(),
        ),
        (
            "kube-system",
            "exporter",
            json!({"tolerations": [{"operator": "Exists", "effect": "NoExecute"}]}),
            "pods in namespace kube-system may not tolerate every taint",
        ),
        (ml, "by-name", json!({"nodeName": node}), ml_by_name.as_str()),
        // Attack 5: a tenant pod that would own its node.
        (
            acme,
            "privileged",
            with_lease(
                acme,
                json!({"containers": [{"name": "c", "image": "x", "securityContext": {"privileged": true}}]}),
            ),
            "tenant pods may not run privileged containers",
        ),
        (
            acme,
            "host-pid",
            with_lease(acme, json!({"hostPID": true})),
            "tenant pods may not share the node's network, process or IPC namespace",
        ),
        (
            acme,
            "host-network",
            with_lease(acme, json!({"hostNetwork": true})),
            "tenant pods may not share the node's network, process or IPC namespace",
        ),
        (
            acme,
            "host-path",
            with_lease(acme, json!({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]})),
            "tenant pods may not mount hostPath volumes",
        ),
        (
            acme,
            "host-port",
            with_lease(
                acme,
                json!({"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 22, "hostPort": 22}]}]}),
            ),
            "tenant pods may not bind host ports",
        ),
        (
            acme,
            "sys-admin",
            with_lease(
                acme,
                json!({"initContainers": [{"name": "i", "image": "x",
                "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]}),
            ),
            "tenant pods may not add Linux capabilities",
        ),
        // Attacks 1 and 3: what would keep a node past its deadline.
        (
            acme,
            "long-grace",
            with_lease(acme, json!({"terminationGracePeriodSeconds": 315360000})),
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

    // Attack 5: an ephemeral container added to a running tenant pod (`kubectl debug` writes the
    // ephemeralcontainers subresource; the restricted profile, so that no other rule answers first).
    let err = cluster.fails(&[
        "debug",
        "good",
        "-n",
        acme,
        "--image=busybox",
        "--profile=restricted",
        "--attach=false",
    ]);
    assert!(
        err.contains("pods \"good\" is forbidden: ValidatingAdmissionPolicy 'sublet-tenant-isolation'")
            && err.contains("tenant pods may not run ephemeral containers"),
        "{err}"
    );
    // A pod cannot be created with one.
    let err = cluster.fails_stdin(
        &["create", "-n", acme, "-f", "-"],
        &pod(
            "debug",
            with_lease(acme, json!({"ephemeralContainers": [{"name": "d", "image": "x"}]})),
        ),
    );
    assert!(
        err.contains("The Pod \"debug\" is invalid: spec.ephemeralContainers: Forbidden: cannot be set on create"),
        "{err}"
    );

    // A pod admitted before its namespace became a tenant's: others may not change it, but sublet may still
    // annotate it with its notice.
    let late = cluster.namespace("late");
    let late = late.as_str();
    cluster.ok_stdin(&["apply", "-n", late, "-f", "-"], &pod("old", json!({})));
    cluster.ok(&["label", "namespace", late, "sublet.dev/tenant=true"]);
    cluster.denied_eventually(
        &["annotate", "pod", "old", "-n", late, "team=x"],
        "",
        "tenant pods must select the nodes of their lease",
    );
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
        &format!("--as={SUBLET}"),
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

#[test]
fn tenants_get_no_budgets_or_finalizers_and_internal_pods_no_wildcard_by_update() {
    for backend in clusters() {
        no_budgets_or_finalizers_and_no_wildcard_by_update(backend);
    }
}

fn no_budgets_or_finalizers_and_no_wildcard_by_update(backend: Backend) {
    let Installed { cluster, acme, ml } = installed(backend);
    let (acme, ml) = (acme.as_str(), ml.as_str());

    // Attack 1: a PodDisruptionBudget in a tenant namespace (elsewhere budgets are the platform's business).
    let pdb = |ns: &str| {
        serde_json::to_string(&json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "keep", "namespace": ns},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "x"}}}}))
        .unwrap()
    };
    let budgets = "tenant namespaces may not hold PodDisruptionBudgets";
    cluster.denied_eventually(&["create", "-f", "-"], &pdb(acme), budgets);
    let err = cluster.fails_stdin(&["apply", "-f", "-"], &pdb(acme));
    assert!(err.contains(budgets), "{err}");
    cluster.ok_stdin(&["apply", "-f", "-"], &pdb(ml));

    // A finalizer on a tenant pod would keep it, and its node, past the deadline; the Job controller's is fine.
    let with_finalizer = |name: &str, finalizer: &str| {
        let mut p: Value = serde_json::from_str(&pod(name, own_lease(acme))).unwrap();
        p["metadata"]["finalizers"] = json!([finalizer]);
        serde_json::to_string(&p).unwrap()
    };
    let err = cluster.fails_stdin(
        &["apply", "-n", acme, "-f", "-"],
        &with_finalizer("held", "example.com/keep"),
    );
    assert!(err.contains("tenant pods may not carry finalizers"), "{err}");
    cluster.ok_stdin(
        &["apply", "-n", acme, "-f", "-"],
        &with_finalizer("job-pod", "batch.kubernetes.io/job-tracking"),
    );
    // (The namespace goes after the test on the real control plane; the pod must not hold it up.)
    cluster.ok(&[
        "patch",
        "pod",
        "job-pod",
        "-n",
        acme,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);

    // Attack 6: a wildcard toleration added to an admitted internal pod by an update (tolerations may only be
    // added to a pod, never changed).
    cluster.ok_stdin(
        &["apply", "-n", ml, "-f", "-"],
        &pod(
            "train",
            json!({"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}),
        ),
    );
    let err = cluster.fails(&[
        "patch",
        "pod",
        "train",
        "-n",
        ml,
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/spec/tolerations/-","value":{"operator":"Exists"}}]"#,
    ]);
    assert!(err.contains("may not tolerate every taint"), "{err}");
}

#[test]
fn sublets_own_writes_are_bounded_and_kubelets_cannot_write_its_marks() {
    for backend in clusters() {
        own_writes_bounded_and_kubelets_kept_off_marks(backend);
    }
}

fn own_writes_bounded_and_kubelets_kept_off_marks(backend: Backend) {
    let Installed { cluster, acme, ml } = installed(backend);
    let (acme, ml) = (acme.as_str(), ml.as_str());
    cluster.ok_stdin(&["apply", "-n", acme, "-f", "-"], &pod("good", own_lease(acme)));
    cluster.ok_stdin(&["apply", "-n", ml, "-f", "-"], &pod("train", json!({})));
    let node = cluster.name("gpu-1");
    let manifest = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node, "labels": {"team": "ml", crate::support::real::OWNED: "true"}},
        "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]}});
    cluster.ok_stdin(&["apply", "-f", "-"], &manifest.to_string());
    let node = node.as_str();

    // Attack 7: what sublet's ServiceAccount may do through its RBAC, the policy narrows to its own marks.
    let sa = format!("--as={SUBLET}");
    let sa = sa.as_str();
    let bounded = |args: &[&str], message: &str| {
        let mut all = args.to_vec();
        all.push(sa);
        let err = cluster.fails(&all);
        assert!(
            err.contains("ValidatingAdmissionPolicy 'sublet-operator-bounds'") && err.contains(message),
            "{args:?}: {err}"
        );
    };
    cluster.denied_eventually(
        &["annotate", "pod", "good", "-n", acme, "team=x", sa],
        "",
        "ValidatingAdmissionPolicy 'sublet-operator-bounds'",
    );
    cluster.ok(&[
        "annotate",
        "pod",
        "good",
        "-n",
        acme,
        "sublet.dev/reclaim-deadline=2030-01-01T00:00:00Z",
        sa,
    ]);
    bounded(
        &["annotate", "pod", "good", "-n", acme, "team=x"],
        "sublet may change only the sublet.dev/ annotations of a pod",
    );
    bounded(
        &[
            "patch",
            "pod",
            "train",
            "-n",
            ml,
            "--type=json",
            "-p",
            &format!(
                r#"[{{"op":"add","path":"/spec/tolerations","value":[{{"key":"sublet.dev/lease","operator":"Equal","value":"{acme}.job"}}]}}]"#
            ),
        ],
        "sublet may change only the sublet.dev/ annotations of a pod",
    );
    bounded(
        &["delete", "pod", "train", "-n", ml, "--wait=false"],
        "sublet may evict or delete only tenant pods",
    );
    cluster.ok(&["label", "node", node, "sublet.dev/state=lent", sa]);
    cluster.ok(&["taint", "node", node, "sublet.dev/lent=p:NoExecute", sa]);
    bounded(
        &["label", "node", node, "team=other", "--overwrite"],
        "sublet may change only the sublet.dev/ labels, annotations and taints of a node",
    );
    bounded(
        &["taint", "node", node, "nvidia.com/gpu-"],
        "sublet may change only the sublet.dev/ labels, annotations and taints of a node",
    );
    // Namespaces through kube-rs as sublet (kubectl reads a namespace before it patches, and sublet may not).
    let patch_as_sublet = |name: &str, labels: Value| -> Result<(), String> {
        let mut config = cluster.client_config();
        config.auth_info.impersonate = Some(SUBLET.into());
        cluster.runtime.block_on(async {
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
    patch_as_sublet(acme, psa.clone()).expect("sublet labels a tenant namespace for Pod Security");
    for (ns, labels) in [(ml, psa), (acme, json!({"sublet.dev/tenant": null}))] {
        let err = patch_as_sublet(ns, labels).unwrap_err();
        assert!(
            err.contains("sublet may change only the Pod Security labels of a tenant namespace"),
            "{ns}: {err}"
        );
    }

    // Attacks 5 and 8: a kubelet (a tenant who is root on its node has its credentials) may not rewrite
    // sublet's marks, but may still change its own.
    let kubelet = format!("--as=system:node:{node}");
    let as_kubelet = |args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend([
            kubelet.clone(),
            "--as-group=system:nodes".into(),
            "--as-group=system:masters".into(),
        ]);
        all
    };
    let marks = "nodes may not change sublet.dev/ labels, annotations or taints";
    let probe = as_kubelet(&["annotate", "node", node, "sublet.dev/probe=x"]);
    cluster.denied_eventually(&probe.iter().map(String::as_str).collect::<Vec<_>>(), "", marks);
    // A kubelet changes no taint at all: kube-apiserver's NodeRestriction admission refuses that before any
    // policy is asked.
    let taints = format!("node \"{node}\" is not allowed to modify taints");
    for (args, message) in [
        (
            vec![
                "annotate",
                "node",
                node,
                "sublet.dev/reclaim-deadline=2099-01-01T00:00:00Z",
            ],
            marks,
        ),
        (vec!["label", "node", node, "sublet.dev/state-"], marks),
        (vec!["taint", "node", node, "sublet.dev/lent-"], taints.as_str()),
    ] {
        let all = as_kubelet(&args);
        let err = cluster.fails(&all.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(err.contains(message), "{args:?}: {err}");
    }
    let all = as_kubelet(&["label", "node", node, "topology.example.com/rack=r1"]);
    cluster.ok(&all.iter().map(String::as_str).collect::<Vec<_>>());
}
