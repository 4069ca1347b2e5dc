//! The real kubectl 1.35 against the sandbox API server: what kubectl does on a real cluster works here, with
//! the same output and errors.

use std::io::{BufRead as _, BufReader};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::sandbox::{TestCluster, eventually, repo};
use sublet_sandbox::{Caller, SandboxConfig};

const NODE: &str = r#"
apiVersion: v1
kind: Node
metadata:
  name: gpu-1
  labels:
    node.kubernetes.io/instance-type: p4d.24xlarge
spec:
  taints:
  - {key: nvidia.com/gpu, value: present, effect: NoSchedule}
status:
  conditions:
  - {type: Ready, status: "True"}
  nodeInfo:
    kubeletVersion: v1.35.0
"#;

fn pod(name: &str, grace: u32) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
  labels: {{app: web}}
spec:
  nodeName: gpu-1
  terminationGracePeriodSeconds: {grace}
  containers:
  - {{name: c, image: nginx}}
"#
    )
}

/// Two ready pods of app=web on gpu-1, and a PDB that needs both.
fn web_with_budget(cluster: &TestCluster) {
    cluster.ok_stdin(&["apply", "-f", "-"], NODE);
    for name in ["web-1", "web-2"] {
        cluster.ok_stdin(&["apply", "-f", "-"], &pod(name, 1));
        cluster.ok(&[
            "patch",
            "pod",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#,
        ]);
    }
    let pdb = "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web, namespace: default}\nspec:\n  minAvailable: 2\n  selector: {matchLabels: {app: web}}\n";
    cluster.ok_stdin(&["apply", "-f", "-"], pdb);
}

fn install_crds_and_examples(cluster: &TestCluster) {
    cluster.ok(&["create", "namespace", "tenant-acme"]);
    cluster.ok(&["apply", "-f", &repo("crds")]);
    let out = cluster.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/tenantpools.sublet.dev",
        "crd/gpuleases.sublet.dev",
        "--timeout=20s",
    ]);
    assert!(
        out.contains("customresourcedefinition.apiextensions.k8s.io/tenantpools.sublet.dev condition met"),
        "{out}"
    );
    cluster.ok(&["apply", "-f", &repo("examples")]);
}

#[test]
fn crds_examples_and_printer_columns() {
    let cluster = TestCluster::start();
    install_crds_and_examples(&cluster);
    cluster.ok_stdin(&["apply", "-f", "-"], NODE);
    cluster.ok_stdin(&["apply", "-f", "-"], &pod("web-1", 1));

    let pools = cluster.ok(&["get", "tenantpools"]);
    let mut lines = pools.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header[0], "NAME");
    assert_eq!(header[1..], crate::support::POOL_COLUMNS);
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&row[..2], ["a100", "Observe"]);

    let leases = cluster.ok(&["get", "gpuleases", "-A"]);
    let mut lines = leases.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&header[..5], ["NAMESPACE", "NAME", "POOL", "GPUS", "MODEL"]);
    assert!(header.contains(&"REASON"), "{header:?}");
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], ["tenant-acme", "finetune", "a100", "16"]);

    // Short names and categories come from the CRD.
    let by_short = cluster.ok(&["get", "tp", "-o", "name"]);
    assert_eq!(by_short.trim(), "tenantpool.sublet.dev/a100");

    let nodes = cluster.ok(&["get", "nodes"]);
    let lines: Vec<Vec<&str>> = nodes.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[0], ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]);
    assert_eq!(
        [lines[1][0], lines[1][1], lines[1][2], lines[1][4]],
        ["gpu-1", "Ready", "<none>", "v1.35.0"]
    );

    let pods = cluster.ok(&["get", "pods", "-o", "wide"]);
    let lines: Vec<Vec<&str>> = pods.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(&lines[0][..5], ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert!(lines[0].contains(&"NODE"));
    assert_eq!(&lines[1][..3], ["web-1", "0/1", "Pending"]);
    assert!(lines[1].contains(&"gpu-1"));
}

#[test]
fn explain_reads_the_schemas_of_custom_and_built_in_kinds() {
    let cluster = TestCluster::start();
    install_crds_and_examples(&cluster);
    let spec = cluster.ok(&["explain", "tenantpool.spec"]);
    for part in [
        "GROUP:      sublet.dev",
        "KIND:       TenantPool",
        "VERSION:    v1alpha1",
        "FIELD: spec <Object>",
        "idle\t<Object>",
        "When a node counts as idle.",
    ] {
        assert!(spec.contains(part), "{part:?} not in\n{spec}");
    }
    let field = cluster.ok(&["explain", "tp.spec.reclaim.noticeSeconds"]);
    assert!(field.contains("FIELD: noticeSeconds <integer>"), "{field}");
    let meta = cluster.ok(&["explain", "gpulease.metadata.labels"]);
    assert!(meta.contains("FIELD: labels <map[string]string>"), "{meta}");
    let pod = cluster.ok(&["explain", "pods.spec.containers.resources"]);
    assert!(
        pod.contains("KIND:       Pod") && pod.contains("FIELD: resources <ResourceRequirements>"),
        "{pod}"
    );
    let lease = cluster.ok(&["explain", "leases.spec", "--api-version=coordination.k8s.io/v1"]);
    assert!(lease.contains("holderIdentity"), "{lease}");
    let err = cluster.fails(&["explain", "tenantpool.spec.nonsense"]);
    assert!(err.contains("nonsense"), "{err}");
}

#[test]
fn invalid_tenant_pool_is_rejected_with_the_cel_message_and_unknown_fields_strictly() {
    let cluster = TestCluster::start();
    install_crds_and_examples(&cluster);
    let err = cluster.fails(&[
        "patch",
        "tenantpool",
        "a100",
        "--type=merge",
        "-p",
        r#"{"spec":{"maxLentPercent":120}}"#,
    ]);
    assert!(err.contains("maxLentPercent must be between 0 and 100"), "{err}");
    assert!(err.contains(r#"The TenantPool "a100" is invalid"#), "{err}");

    let example = std::fs::read_to_string(repo("examples/tenantpool.yaml")).unwrap();
    let bad = example
        .replace("name: a100", "name: bad")
        .replace("mode: Observe", "mode: Observe\n  bogus: 1");
    let err = cluster.fails_stdin(&["apply", "-f", "-"], &bad);
    assert!(
        err.contains(r#"strict decoding error: unknown field "spec.bogus""#),
        "{err}"
    );
    // With fieldValidation=Warn the object is stored, pruned, and kubectl prints the server's warning.
    let out = cluster.run_with_input(&["apply", "--validate=warn", "-f", "-"], &bad);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(r#"Warning: unknown field "spec.bogus""#), "{stderr}");
    assert_eq!(
        cluster.ok(&["get", "tenantpool", "bad", "-o", "jsonpath={.spec.bogus}"]),
        ""
    );
    // Strategic merge patches do not apply to custom resources.
    let err = cluster.fails(&["patch", "tenantpool", "a100", "-p", r#"{"spec":{"maxLentPercent":20}}"#]);
    assert!(
        err.contains("application/strategic-merge-patch+json is not supported"),
        "{err}"
    );
}

#[test]
fn get_watch_sees_a_change() {
    let cluster = TestCluster::start();
    install_crds_and_examples(&cluster);
    let mut child = cluster
        .command(&[
            "get",
            "tenantpools",
            "-w",
            "-o",
            "custom-columns=NAME:.metadata.name,TEAM:.metadata.labels.team",
        ])
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first: Vec<String> = (0..2)
        .map(|_| rx.recv_timeout(Duration::from_secs(20)).unwrap())
        .collect();
    assert!(first[1].starts_with("a100"), "{first:?}");
    cluster.ok(&["label", "tenantpool", "a100", "team=ml"]);
    let changed = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let cells: Vec<&str> = changed.split_whitespace().collect();
    assert_eq!(cells, ["a100", "ml"]);
}

#[test]
fn patches_labels_annotations_taints_and_cordon() {
    let cluster = TestCluster::start();
    cluster.ok_stdin(&["apply", "-f", "-"], NODE);
    cluster.ok_stdin(&["apply", "-f", "-"], &pod("web-1", 1));
    let jsonpath =
        |kind: &str, name: &str, path: &str| cluster.ok(&["get", kind, name, "-o", &format!("jsonpath={path}")]);

    cluster.ok(&[
        "patch",
        "node",
        "gpu-1",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"merge":"1"}}}"#,
    ]);
    cluster.ok(&[
        "patch",
        "node",
        "gpu-1",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/metadata/labels/json","value":"2"}]"#,
    ]);
    let err = cluster.fails(&["patch", "node", "gpu-1", "--type=json", "-p", r#"[{"op":"test","path":"/metadata/labels/json","value":"3"},{"op":"add","path":"/metadata/labels/never","value":"x"}]"#]);
    assert!(
        err.contains("the server rejected our request due to an error in our request"),
        "{err}"
    );
    cluster.ok(&[
        "patch",
        "node",
        "gpu-1",
        "-p",
        r#"{"metadata":{"labels":{"strategic":"3"}}}"#,
    ]);
    cluster.ok(&[
        "patch",
        "pod",
        "web-1",
        "-p",
        r#"{"spec":{"containers":[{"name":"c","image":"nginx:2"}]}}"#,
    ]);
    assert_eq!(jsonpath("pod", "web-1", "{.spec.containers[0].image}"), "nginx:2");
    cluster.ok(&["label", "node", "gpu-1", "team=ml"]);
    cluster.ok(&["annotate", "node", "gpu-1", "sublet.dev/note=hello"]);
    let labels = jsonpath("node", "gpu-1", "{.metadata.labels}");
    let labels: serde_json::Value = serde_json::from_str(&labels).unwrap();
    for (k, v) in [("merge", "1"), ("json", "2"), ("strategic", "3"), ("team", "ml")] {
        assert_eq!(labels[k], v, "{labels}");
    }
    assert!(labels.get("never").is_none());
    assert_eq!(
        jsonpath("node", "gpu-1", "{.metadata.annotations.sublet\\.dev/note}"),
        "hello"
    );

    cluster.ok(&["taint", "node", "gpu-1", "sublet.dev/lent=true:NoSchedule"]);
    let taints = jsonpath("node", "gpu-1", "{.spec.taints[*].key}");
    assert_eq!(taints, "sublet.dev/lent nvidia.com/gpu");
    cluster.ok(&["taint", "node", "gpu-1", "sublet.dev/lent-"]);
    assert_eq!(jsonpath("node", "gpu-1", "{.spec.taints[*].key}"), "nvidia.com/gpu");

    cluster.ok(&["cordon", "gpu-1"]);
    assert_eq!(jsonpath("node", "gpu-1", "{.spec.unschedulable}"), "true");
    let status = cluster.ok(&["get", "node", "gpu-1", "--no-headers"]);
    assert!(status.contains("Ready,SchedulingDisabled"), "{status}");
    cluster.ok(&["uncordon", "gpu-1"]);
    assert_eq!(jsonpath("node", "gpu-1", "{.spec.unschedulable}"), "");
    // A pod's node cannot change once set.
    let err = cluster.fails(&[
        "patch",
        "pod",
        "web-1",
        "--type=merge",
        "-p",
        r#"{"spec":{"nodeName":"gpu-2"}}"#,
    ]);
    assert!(err.contains(r#"The Pod "web-1" is invalid"#), "{err}");
}

#[test]
fn drain_goes_through_evictions_and_waits_for_the_budget() {
    let cluster = TestCluster::start();
    web_with_budget(&cluster);
    let pdb = cluster.ok(&["get", "pdb", "web", "--no-headers"]);
    let cells: Vec<&str> = pdb.split_whitespace().collect();
    assert_eq!(&cells[..4], ["web", "2", "N/A", "0"], "{pdb}");

    let err = cluster.fails(&["drain", "gpu-1", "--force", "--timeout=3s"]);
    assert!(
        err.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{err}"
    );
    assert_eq!(cluster.ok(&["get", "pods", "-o", "name"]).lines().count(), 2);

    cluster.ok(&[
        "patch",
        "pdb",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"minAvailable":1}}"#,
    ]);
    eventually(Duration::from_secs(10), "the PDB allows one disruption", || {
        cluster.ok(&["get", "pdb", "web", "-o", "jsonpath={.status.disruptionsAllowed}"]) == "1"
    });
    // One pod may go, the other stays: drain evicts one and keeps retrying the other until it times out.
    let err = cluster.fails(&["drain", "gpu-1", "--force", "--timeout=4s"]);
    assert!(err.contains("global timeout reached"), "{err}");
    eventually(Duration::from_secs(10), "one pod evicted", || {
        cluster.ok(&["get", "pods", "-o", "name"]).lines().count() == 1
    });

    cluster.ok(&[
        "patch",
        "pdb",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"minAvailable":0}}"#,
    ]);
    let out = cluster.ok(&["drain", "gpu-1", "--force", "--timeout=30s"]);
    assert!(out.contains("node/gpu-1 drained"), "{out}");
    assert_eq!(cluster.ok(&["get", "pods", "-o", "name"]), "");
    assert_eq!(
        cluster.ok(&["get", "node", "gpu-1", "-o", "jsonpath={.spec.unschedulable}"]),
        "true"
    );
}

#[test]
fn delete_waits_for_finalizers() {
    let cluster = TestCluster::start();
    cluster.ok(&["create", "configmap", "held", "--from-literal=a=b"]);
    cluster.ok(&[
        "patch",
        "configmap",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["sublet.dev/hold"]}}"#,
    ]);
    cluster.ok(&["delete", "configmap", "held", "--wait=false"]);
    let meta = cluster.ok(&[
        "get",
        "configmap",
        "held",
        "-o",
        "jsonpath={.metadata.deletionTimestamp} {.metadata.finalizers}",
    ]);
    let (stamp, finalizers) = meta.split_once(' ').unwrap();
    assert!(stamp.ends_with('Z'), "{meta}");
    assert_eq!(finalizers, r#"["sublet.dev/hold"]"#);
    // No new finalizers once deleting.
    let err = cluster.fails(&[
        "patch",
        "configmap",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["sublet.dev/hold","x/y"]}}"#,
    ]);
    assert!(
        err.contains("no new finalizers can be added if the object is being deleted"),
        "{err}"
    );
    cluster.ok(&[
        "patch",
        "configmap",
        "held",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    let err = cluster.fails(&["get", "configmap", "held"]);
    assert!(err.contains(r#"configmaps "held" not found"#), "{err}");
}

#[test]
fn deleting_a_namespace_deletes_its_objects() {
    let cluster = TestCluster::start();
    install_crds_and_examples(&cluster);
    cluster.ok(&["create", "configmap", "c1", "-n", "tenant-acme"]);
    cluster.ok(&["delete", "namespace", "tenant-acme", "--timeout=20s"]);
    let err = cluster.fails(&["get", "namespace", "tenant-acme"]);
    assert!(err.contains(r#"namespaces "tenant-acme" not found"#), "{err}");
    assert_eq!(cluster.ok(&["get", "gpuleases", "-A", "-o", "name"]), "");
}

#[test]
fn server_side_apply_keeps_other_managers_fields_and_conflicts() {
    let cluster = TestCluster::start();
    // Created, not client-side applied: kubectl would otherwise hand the client-side apply's fields to the
    // first server-side applier (its managedFields upgrade), as on a real cluster.
    cluster.ok_stdin(&["create", "-f", "-"], NODE);
    let alpha = "apiVersion: v1\nkind: Node\nmetadata:\n  name: gpu-1\n  labels: {owner-a: '1', shared: a}\n";
    let beta = "apiVersion: v1\nkind: Node\nmetadata:\n  name: gpu-1\n  labels: {owner-b: '1', shared: b}\n";
    cluster.ok_stdin(&["apply", "--server-side", "--field-manager=alpha", "-f", "-"], alpha);
    let err = cluster.fails_stdin(&["apply", "--server-side", "--field-manager=beta", "-f", "-"], beta);
    assert!(
        err.contains(r#"Apply failed with 1 conflict: conflict with "alpha": .metadata.labels.shared"#),
        "{err}"
    );
    cluster.ok_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=beta",
            "--force-conflicts",
            "-f",
            "-",
        ],
        beta,
    );
    let labels: serde_json::Value =
        serde_json::from_str(&cluster.ok(&["get", "node", "gpu-1", "-o", "jsonpath={.metadata.labels}"])).unwrap();
    assert_eq!(labels["owner-a"], "1");
    assert_eq!(labels["owner-b"], "1");
    assert_eq!(labels["shared"], "b");
    assert_eq!(labels["node.kubernetes.io/instance-type"], "p4d.24xlarge");
    // Applying labels leaves the taints, which another manager wrote, alone.
    assert_eq!(
        cluster.ok(&["get", "node", "gpu-1", "-o", "jsonpath={.spec.taints[*].key}"]),
        "nvidia.com/gpu"
    );
    let managers = cluster.ok(&[
        "get",
        "node",
        "gpu-1",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    for m in ["alpha", "beta", "kubectl-create"] {
        assert!(managers.split_whitespace().any(|x| x == m), "{managers}");
    }
}

#[test]
fn token_and_can_i_under_rbac() {
    let mut config = SandboxConfig {
        rbac: true,
        ..Default::default()
    };
    config.tokens.insert(
        "viewer-token".into(),
        Caller {
            name: "viewer".into(),
            groups: vec!["system:authenticated".into()],
        },
    );
    let cluster = TestCluster::with(config);
    cluster.ok(&["create", "serviceaccount", "bot"]);
    cluster.ok(&[
        "create",
        "role",
        "pod-reader",
        "--verb=get,list,watch",
        "--resource=pods",
    ]);
    cluster.ok(&[
        "create",
        "rolebinding",
        "bot-reads",
        "--role=pod-reader",
        "--serviceaccount=default:bot",
    ]);
    let bot = "--as=system:serviceaccount:default:bot";
    assert_eq!(cluster.ok(&["auth", "can-i", "list", "pods", bot]).trim(), "yes");
    let out = cluster.run(&["auth", "can-i", "delete", "pods", bot]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
    assert_eq!(cluster.ok(&["auth", "can-i", "delete", "nodes"]).trim(), "yes");
    cluster.ok(&["get", "pods", bot]);
    let err = cluster.fails(&["delete", "pod", "x", bot]);
    assert!(
        err.contains(r#"pods "x" is forbidden: User "system:serviceaccount:default:bot" cannot delete resource "pods" in API group "" in the namespace "default""#),
        "{err}"
    );
    let token = cluster.ok(&["create", "token", "bot"]);
    assert!(!token.trim().is_empty());
    // The token authenticates as the service account (kubectl sends no token over plain HTTP; curl-like clients do).
    let url = cluster.handle().url();
    let status = cluster
        .runtime
        .block_on(raw_get(&format!("{url}/api/v1/nodes"), token.trim()));
    assert_eq!(status, 403);
    let ok = cluster
        .runtime
        .block_on(raw_get(&format!("{url}/api/v1/namespaces/default/pods"), token.trim()));
    assert_eq!(ok, 200);
    let unknown = cluster
        .runtime
        .block_on(raw_get(&format!("{url}/api/v1/namespaces/default/pods"), "nope"));
    assert_eq!(unknown, 401);
}

/// A GET with a bearer token over a raw TCP connection; answers the HTTP status code.
async fn raw_get(url: &str, token: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request =
        format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn validating_admission_policy_denies_with_its_message() {
    let cluster = TestCluster::start();
    let policy = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: no-bad-label}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE", "UPDATE"]
      resources: ["configmaps"]
  validations:
  - expression: "!has(object.metadata.labels) || !('bad' in object.metadata.labels)"
    message: the bad label is not allowed
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: no-bad-label-binding}
spec:
  policyName: no-bad-label
  validationActions: [Deny]
"#;
    cluster.ok_stdin(&["apply", "-f", "-"], policy);
    cluster.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: good}\n",
    );
    let err = cluster.fails(&["label", "configmap", "good", "bad=yes"]);
    assert!(
        // As the Kubernetes documentation shows a denial without a reason: 422 Invalid.
        err.contains(r#"The configmaps "good" is invalid: : ValidatingAdmissionPolicy 'no-bad-label' with binding 'no-bad-label-binding' denied request: the bad label is not allowed"#),
        "{err}"
    );
    cluster.ok(&["label", "configmap", "good", "fine=yes"]);
}

#[test]
fn helm_installs_upgrades_and_uninstalls_a_chart() {
    let cluster = TestCluster::start();
    let chart = cluster.dir.path().join("chart");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(chart.join("Chart.yaml"), "apiVersion: v2\nname: demo\nversion: 0.1.0\n").unwrap();
    let templates = r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: demo}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: demo}
spec:
  replicas: {{ .Values.replicas | default 1 }}
  selector: {matchLabels: {app: demo}}
  template:
    metadata: {labels: {app: demo}}
    spec:
      serviceAccountName: demo
      containers: [{name: c, image: nginx}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: demo}
rules: [{apiGroups: [""], resources: [nodes], verbs: [get, list, patch]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: demo}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: demo}
subjects: [{kind: ServiceAccount, name: demo, namespace: default}]
"#;
    std::fs::write(chart.join("templates/all.yaml"), templates).unwrap();
    let helm = |args: &[&str]| {
        let out = std::process::Command::new(crate::support::tool("helm"))
            .args(args)
            .env("KUBECONFIG", &cluster.kubeconfig)
            .env("HOME", cluster.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "helm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let chart = chart.display().to_string();
    assert!(helm(&["install", "demo", &chart]).contains("STATUS: deployed"));
    helm(&["upgrade", "demo", &chart, "--set", "replicas=3"]);
    assert_eq!(
        cluster.ok(&["get", "deployment", "demo", "-o", "jsonpath={.spec.replicas}"]),
        "3"
    );
    assert!(helm(&["list"]).contains("demo"));
    cluster.ok(&["scale", "deployment", "demo", "--replicas=2"]);
    assert_eq!(
        cluster.ok(&["get", "deployment", "demo", "-o", "jsonpath={.spec.replicas}"]),
        "2"
    );
    helm(&["uninstall", "demo"]);
    let err = cluster.fails(&["get", "clusterrole", "demo"]);
    assert!(
        err.contains(r#"clusterroles.rbac.authorization.k8s.io "demo" not found"#),
        "{err}"
    );
}

#[test]
fn server_side_apply_takes_over_a_client_side_apply() {
    let cluster = TestCluster::start();
    cluster.ok_stdin(&["apply", "-f", "-"], NODE);
    let alpha = "apiVersion: v1\nkind: Node\nmetadata:\n  name: gpu-1\n  labels: {owner-a: '1'}\n";
    cluster.ok_stdin(&["apply", "--server-side", "--field-manager=alpha", "-f", "-"], alpha);
    // kubectl moved the client-side apply's fields to alpha, whose configuration no longer has the
    // instance-type label: it goes, as on a real cluster.
    let labels: serde_json::Value =
        serde_json::from_str(&cluster.ok(&["get", "node", "gpu-1", "-o", "jsonpath={.metadata.labels}"])).unwrap();
    assert_eq!(labels, serde_json::json!({"owner-a": "1"}));
    let managers = cluster.ok(&[
        "get",
        "node",
        "gpu-1",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert!(!managers.contains("kubectl-client-side-apply"), "{managers}");
}

#[test]
fn get_watch_prints_table_rows_for_changes() {
    let cluster = TestCluster::start();
    cluster.ok_stdin(&["apply", "-f", "-"], NODE);
    cluster.ok_stdin(&["apply", "-f", "-"], &pod("web-1", 1));
    let mut child = cluster.command(&["get", "pods", "-w"]).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let header = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    let first = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(
        &first.split_whitespace().collect::<Vec<_>>()[..3],
        ["web-1", "0/1", "Pending"]
    );
    cluster.ok(&[
        "patch",
        "pod",
        "web-1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running"}}"#,
    ]);
    let changed = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    cluster.ok(&["delete", "pod", "web-1", "--wait=false"]);
    let terminating = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        &changed.split_whitespace().collect::<Vec<_>>()[..3],
        ["web-1", "0/1", "Running"]
    );
    assert_eq!(
        &terminating.split_whitespace().collect::<Vec<_>>()[..3],
        ["web-1", "0/1", "Terminating"]
    );
}
