//! The rendered chart (`deploy/sublet.yaml`) applied with the real kubectl (`--server-side`) to the sandbox in
//! RBAC mode; its ValidatingAdmissionPolicy against allowed and escaping pods; and the controller running as
//! the chart's ServiceAccount, with exactly the chart's RBAC, through its whole life cycle.

mod support;

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use sublet::api::{GpuLease, LeasePhase, TenantPool};
use sublet::sandbox::{Sandbox, SandboxConfig, SandboxHandle};
use support::cluster::{create_lease, create_pool, eventually, gpu_node, gpu_pod, label, taint_keys};
use support::sandbox::TestCluster;

fn deploy_yaml() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/sublet.yaml")).unwrap()
}

/// A pod in `namespace` with extra spec fields, as YAML for kubectl.
fn pod(name: &str, spec: Value) -> String {
    let mut s = json!({"containers": [{"name": "c", "image": "trainer:1"}]});
    s.as_object_mut().unwrap().extend(spec.as_object().unwrap().clone());
    serde_json::to_string(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": s})).unwrap()
}

fn own_lease() -> Value {
    json!({
        "nodeSelector": {"sublet.dev/lease": "acme.job"},
        "tolerations": [
            {"key": "sublet.dev/lease", "operator": "Equal", "value": "acme.job", "effect": "NoSchedule"},
            {"key": "nvidia.com/gpu", "operator": "Exists"},
        ],
    })
}

#[test]
fn the_rendered_chart_applies_server_side_and_again_without_conflict() {
    let cluster = TestCluster::with(SandboxConfig {
        rbac: true,
        ..Default::default()
    });
    let yaml = deploy_yaml();
    let out = cluster.ok_stdin(&["apply", "--server-side", "-f", "-"], &yaml);
    for object in [
        "namespace/sublet-system",
        "customresourcedefinition.apiextensions.k8s.io/tenantpools.sublet.dev",
        "deployment.apps/sublet",
        "clusterrole.rbac.authorization.k8s.io/sublet",
        "role.rbac.authorization.k8s.io/sublet-leader-election",
        "validatingadmissionpolicy.admissionregistration.k8s.io/sublet-tenant-isolation",
        "validatingadmissionpolicybinding.admissionregistration.k8s.io/sublet-tenant-isolation",
        "poddisruptionbudget.policy/sublet",
        "service/sublet-metrics",
        "serviceaccount/sublet",
    ] {
        assert!(out.contains(&format!("{object} serverside-applied")), "{object}: {out}");
    }
    // A second apply (an upgrade with the same manifests) changes nothing and conflicts with nothing.
    cluster.ok_stdin(&["apply", "--server-side", "-f", "-"], &yaml);
    let replicas = cluster.ok(&[
        "get",
        "deployment",
        "sublet",
        "-n",
        "sublet-system",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(replicas, "2");
    // The CRDs serve: kubectl finds the kinds by short name.
    cluster.ok(&["get", "tp"]);
    cluster.ok(&["get", "gl", "-A"]);
    // The ServiceAccount may do what the controller needs, and not more.
    let sa = "--as=system:serviceaccount:sublet-system:sublet";
    for (verb, resource, subresource, ns, want) in [
        ("patch", "nodes", "", "", "yes"),
        ("create", "pods", "eviction", "acme", "yes"),
        ("delete", "pods", "", "acme", "yes"),
        ("patch", "tenantpools.sublet.dev", "status", "", "yes"),
        ("patch", "gpuleases.sublet.dev", "status", "acme", "yes"),
        ("create", "events.events.k8s.io", "", "acme", "yes"),
        ("create", "leases.coordination.k8s.io", "", "sublet-system", "yes"),
        ("delete", "nodes", "", "", "no"),
        ("create", "pods", "", "ml", "no"),
        ("patch", "gpuleases.sublet.dev", "", "acme", "no"),
        ("get", "secrets", "", "sublet-system", "no"),
        ("create", "tenantpools.sublet.dev", "", "", "no"),
        ("create", "leases.coordination.k8s.io", "", "kube-system", "no"),
    ] {
        let sub = format!("--subresource={subresource}");
        let mut args = vec!["auth", "can-i", verb, resource, sa];
        if !subresource.is_empty() {
            args.push(&sub);
        }
        if !ns.is_empty() {
            args.extend(["-n", ns]);
        }
        let out = cluster.run(&args);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            want,
            "can-i {verb} {resource} {subresource} in {ns:?}"
        );
    }

    // A tenant bound to the chart's tenant role in its namespace leases nodes there and nowhere else.
    cluster.ok(&["create", "namespace", "acme"]);
    cluster.ok(&["label", "namespace", "acme", "sublet.dev/tenant=true"]);
    cluster.ok(&[
        "create",
        "rolebinding",
        "gpu-leases",
        "-n",
        "acme",
        "--clusterrole=sublet-tenant",
        "--user=alice",
    ]);
    let lease = r#"{"apiVersion": "sublet.dev/v1alpha1", "kind": "GpuLease", "metadata": {"name": "job"},
        "spec": {"pool": "a100", "gpus": 8}}"#;
    cluster.ok_stdin(&["create", "-n", "acme", "-f", "-", "--as=alice"], lease);
    cluster.ok(&["get", "gpuleases", "-n", "acme", "--as=alice"]);
    let err = cluster.fails_stdin(&["create", "-n", "default", "-f", "-", "--as=alice"], lease);
    assert!(err.contains("forbidden"), "{err}");
    let err = cluster.fails(&[
        "patch",
        "gpulease",
        "job",
        "-n",
        "acme",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Bound"}}"#,
        "--as=alice",
    ]);
    assert!(err.contains("forbidden"), "{err}");
    cluster.ok(&["delete", "gpulease", "job", "-n", "acme", "--as=alice"]);
}

#[test]
fn the_admission_policy_admits_own_lease_pods_and_denies_escapes() {
    let cluster = TestCluster::with(SandboxConfig {
        rbac: true,
        ..Default::default()
    });
    cluster.ok_stdin(&["apply", "--server-side", "-f", "-"], &deploy_yaml());
    cluster.ok(&["create", "namespace", "acme"]);
    cluster.ok(&["label", "namespace", "acme", "sublet.dev/tenant=true"]);
    cluster.ok(&["create", "namespace", "ml"]);

    // Allowed: a tenant pod with its own lease's selector and toleration (and other, non-sublet tolerations).
    cluster.ok_stdin(&["apply", "-n", "acme", "-f", "-"], &pod("good", own_lease()));
    // Allowed: internal pods that leave sublet's taints alone, placed by name or not.
    cluster.ok_stdin(
        &["apply", "-n", "ml", "-f", "-"],
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

/// `kubectl` with the sandbox's admin kubeconfig, off the async runtime.
async fn kubectl(kubeconfig: &Path, home: &Path, args: &[&str], stdin: Option<&str>) -> String {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new(support::tool("kubectl"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default().as_bytes()).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Installs the rendered chart, then answers a client that authenticates as the chart's ServiceAccount with a
/// token from TokenRequest, as the kubelet would project it into the pod.
async fn install(sandbox: &SandboxHandle, dir: &Path) -> Client {
    let kubeconfig = dir.join("admin.kubeconfig");
    sandbox.write_kubeconfig(&kubeconfig).unwrap();
    kubectl(
        &kubeconfig,
        dir,
        &["apply", "--server-side", "-f", "-"],
        Some(&deploy_yaml()),
    )
    .await;
    let token = kubectl(
        &kubeconfig,
        dir,
        &["create", "token", "sublet", "-n", "sublet-system"],
        None,
    )
    .await;
    let sa_kubeconfig = dir.join("sublet.kubeconfig");
    std::fs::write(
        &sa_kubeconfig,
        sublet::sandbox::kubeconfig::render(&sandbox.url(), token.trim()),
    )
    .unwrap();
    sublet::controller::client(&sublet::controller::Connect {
        kubeconfig: Some(sa_kubeconfig),
    })
    .await
    .expect("a client for the ServiceAccount")
}

fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{what}: {status:?}"),
        other => panic!("{what} was not refused: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_runs_its_life_cycle_with_exactly_the_charts_rbac() {
    let sandbox = Sandbox::start(SandboxConfig {
        rbac: true,
        ..Default::default()
    })
    .await
    .expect("sandbox starts");
    let dir = tempfile::tempdir().unwrap();
    let sa = install(&sandbox, dir.path()).await;
    let admin = sandbox.client().await.unwrap();

    let namespaces: Api<Namespace> = Api::all(admin.clone());
    for (name, labels) in [("acme", json!({"sublet.dev/tenant": "true"})), ("ml", json!({}))] {
        let ns = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
        namespaces.create(&PostParams::default(), &ns).await.unwrap();
    }
    gpu_node(&admin, "gpu-1", 8).await;
    gpu_node(&admin, "gpu-2", 8).await;
    create_pool(
        &admin,
        "a100",
        json!({"mode": "Enforce", "idle": {"forSeconds": 0}, "reclaim": {"noticeSeconds": 3, "cooldownSeconds": 0},
               "pricing": {"defaultPerGpuHour": 3.6}}),
    )
    .await;

    // Two replicas as the chart runs them: leader election on the chart's Lease in the release namespace.
    let mut replicas = Vec::new();
    for identity in ["sublet-0", "sublet-1"] {
        let config = sublet::controller::Config {
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
            leader_election: true,
            lease_namespace: "sublet-system".into(),
            lease_name: "sublet-leader".into(),
            identity: identity.into(),
            lease_duration: 3,
            tick: Duration::from_millis(200),
            ledger_interval: Duration::from_secs(1),
            ..sublet::controller::Config::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(sublet::controller::run(sa.clone(), config, async move {
            let _ = stopped.await;
        }));
        replicas.push((stop, task));
    }

    let nodes: Api<Node> = Api::all(admin.clone());
    for n in ["gpu-1", "gpu-2"] {
        eventually(30, "nodes lent", || async {
            let node = nodes.get(n).await.unwrap();
            (label(&node, "sublet.dev/state") == Some("lent")).then_some(())
        })
        .await;
    }
    let leases: Api<Lease> = Api::namespaced(admin.clone(), "sublet-system");
    let holder = leases.get("sublet-leader").await.unwrap().spec.unwrap().holder_identity;
    assert!(matches!(holder.as_deref(), Some("sublet-0" | "sublet-1")), "{holder:?}");

    // A tenant's lease binds; its pod, admitted by the policy, is placed by the scheduler (a binding).
    create_lease(&admin, "acme", "job", json!({"pool": "a100", "gpus": 8})).await;
    let gpuleases: Api<GpuLease> = Api::namespaced(admin.clone(), "acme");
    let leased = eventually(20, "the lease bound", || async {
        let s = gpuleases.get("job").await.unwrap().status?;
        (s.phase == LeasePhase::Bound && s.nodes.len() == 1).then(|| s.nodes[0].clone())
    })
    .await;
    let status = gpuleases.get("job").await.unwrap().status.unwrap();
    let carry = json!({"nodeSelector": status.node_selector,
        "tolerations": [status.tolerations[0], {"key": "nvidia.com/gpu", "operator": "Exists"}]});
    gpu_pod(&admin, "acme", "worker", 8, None, carry).await;
    sandbox
        .local()
        .bind("acme", "worker", &leased)
        .expect("tenant pod binds");
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "acme");
    pods.patch_status(
        "worker",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await
    .unwrap();

    // Internal demand: notice on the lease and the pod, eviction at the deadline, the node back clean.
    gpu_pod(&admin, "ml", "train", 16, None, json!({})).await;
    let deadline = eventually(20, "the notice", || async {
        let s = gpuleases.get("job").await.unwrap().status?;
        (s.phase == LeasePhase::Reclaiming).then_some(s.notice_deadline?.0)
    })
    .await;
    eventually(10, "the pod annotated", || async {
        let p = pods.get("worker").await.unwrap();
        p.metadata
            .annotations
            .unwrap_or_default()
            .contains_key("sublet.dev/reclaim-deadline")
            .then_some(())
    })
    .await;
    eventually(20, "the eviction", || async {
        pods.get_opt("worker").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(Timestamp::now() >= deadline);
    eventually(20, "the node back", || async {
        let n = nodes.get(&leased).await.unwrap();
        (label(&n, "sublet.dev/state").is_none() && !taint_keys(&n).iter().any(|k| k.starts_with("sublet.dev/")))
            .then_some(())
    })
    .await;
    eventually(20, "the lease released", || async {
        (gpuleases.get("job").await.unwrap().status?.phase == LeasePhase::Released).then_some(())
    })
    .await;
    let events: Api<Event> = Api::namespaced(admin.clone(), "acme");
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    for reason in ["Bound", "ReclaimNotice", "Evicted"] {
        assert!(reasons.iter().any(|r| r == reason), "no {reason} event: {reasons:?}");
    }
    let pools: Api<TenantPool> = Api::all(admin.clone());
    let pool_status = pools.get("a100").await.unwrap().status.expect("pool status written");
    assert_eq!(pool_status.totals.nodes, 2);

    // Writes the controller does not need are refused.
    let as_sa_nodes: Api<Node> = Api::all(sa.clone());
    forbidden(
        as_sa_nodes.delete("gpu-1", &DeleteParams::default()).await,
        "deleting a node",
    );
    let as_sa_pods: Api<Pod> = Api::namespaced(sa.clone(), "ml");
    let intruder = serde_json::from_value(
        json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}),
    )
    .unwrap();
    forbidden(
        as_sa_pods.create(&PostParams::default(), &intruder).await,
        "creating a pod",
    );
    let as_sa_leases: Api<GpuLease> = Api::namespaced(sa.clone(), "acme");
    forbidden(
        as_sa_leases
            .patch(
                "job",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"gpus": 16}})),
            )
            .await,
        "changing a tenant's lease",
    );
    let as_sa_pools: Api<TenantPool> = Api::all(sa.clone());
    forbidden(
        as_sa_pools.delete("a100", &DeleteParams::default()).await,
        "deleting a pool",
    );
    let secrets: Api<Secret> = Api::namespaced(sa.clone(), "sublet-system");
    forbidden(secrets.list(&ListParams::default()).await, "reading secrets");
    let other_lease: Api<Lease> = Api::namespaced(sa.clone(), "sublet-system");
    forbidden(
        other_lease
            .patch(
                "someone-elses-lock",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"holderIdentity": "sublet-0"}})),
            )
            .await,
        "taking another component's Lease",
    );

    // Deleting the pool: its finalizer is the controller's to remove, and it does.
    pools.delete("a100", &DeleteParams::default()).await.unwrap();
    eventually(20, "the pool gone", || async {
        pools.get_opt("a100").await.unwrap().is_none().then_some(())
    })
    .await;

    for (stop, task) in replicas {
        let _ = stop.send(());
        let result = tokio::time::timeout(Duration::from_secs(10), task).await;
        assert!(
            matches!(result, Ok(Ok(Ok(())))),
            "the controller stopped cleanly: {result:?}"
        );
    }
    sandbox.shutdown().await;
}

/// A stand-in for prometheus-operator's or Kueue's CRD of `kind` (the schema keeps whatever it is given).
fn stand_in_crd(group: &str, kind: &str, plural: &str) -> String {
    serde_json::to_string(&json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "listKind": format!("{kind}List")},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
        },
    }))
    .unwrap()
}

#[test]
fn the_chart_with_every_option_on_applies_server_side() {
    let cluster = TestCluster::with(SandboxConfig {
        rbac: true,
        ..Default::default()
    });
    for (group, kind, plural) in [
        ("monitoring.coreos.com", "ServiceMonitor", "servicemonitors"),
        ("monitoring.coreos.com", "PrometheusRule", "prometheusrules"),
        ("kueue.x-k8s.io", "Workload", "workloads"),
    ] {
        cluster.ok_stdin(
            &["apply", "--server-side", "-f", "-"],
            &stand_in_crd(group, kind, plural),
        );
    }
    cluster.ok(&["create", "namespace", "sublet-system"]);
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/sublet");
    let helm_home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(support::tool("helm"))
        .args([
            "template",
            "sublet",
            chart.to_str().unwrap(),
            "--namespace",
            "sublet-system",
        ])
        .args([
            "--include-crds",
            "--set",
            "serviceMonitor.enabled=true,prometheusRule.enabled=true",
        ])
        .args(["--set", "dashboard.enabled=true,kueue.enabled=true,replicaCount=3"])
        .args(["--set", "admission.validationActions={Warn,Audit}"])
        .env("HELM_CACHE_HOME", helm_home.path())
        .env("HELM_CONFIG_HOME", helm_home.path())
        .env("HELM_DATA_HOME", helm_home.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml = String::from_utf8(out.stdout).unwrap();
    let applied = cluster.ok_stdin(&["apply", "--server-side", "-f", "-"], &yaml);
    for object in [
        "servicemonitor.monitoring.coreos.com/sublet",
        "prometheusrule.monitoring.coreos.com/sublet",
        "configmap/sublet-dashboard",
        "deployment.apps/sublet",
    ] {
        assert!(
            applied.contains(&format!("{object} serverside-applied")),
            "{object}: {applied}"
        );
    }
    let dashboard = cluster.ok(&[
        "get",
        "configmap",
        "sublet-dashboard",
        "-n",
        "sublet-system",
        "-o",
        "jsonpath={.data.sublet\\.json}",
    ]);
    let dashboard: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "sublet-overview");
    // The controller may read Kueue Workloads now.
    let out = cluster.run(&[
        "auth",
        "can-i",
        "watch",
        "workloads.kueue.x-k8s.io",
        "--as=system:serviceaccount:sublet-system:sublet",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "yes",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // With Warn and Audit the policy reports and does not deny: an escaping pod is admitted.
    cluster.ok(&["create", "namespace", "ml"]);
    let out = cluster.run_with_input(
        &["apply", "-n", "ml", "-f", "-"],
        &pod(
            "escape",
            json!({"tolerations": [{"key": "sublet.dev/lent", "operator": "Exists"}]}),
        ),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The HTTP status of a GET, or None while nothing listens.
async fn http_status(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_with_the_charts_arguments_as_its_service_account() {
    let sandbox = Sandbox::start(SandboxConfig {
        rbac: true,
        ..Default::default()
    })
    .await
    .expect("sandbox starts");
    let dir = tempfile::tempdir().unwrap();
    install(&sandbox, dir.path()).await;
    let admin = sandbox.client().await.unwrap();

    // The container's arguments and environment, exactly as deploy/sublet.yaml has them, but for the port.
    let objects: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&deploy_yaml())
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .collect();
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_str().unwrap();
            if a.starts_with("--metrics-addr=") {
                format!("--metrics-addr={addr}")
            } else {
                a.to_string()
            }
        })
        .collect();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sublet"));
    command
        .args(&args)
        .env_clear()
        .env("KUBECONFIG", dir.path().join("sublet.kubeconfig"))
        .kill_on_drop(true);
    for var in container["env"].as_array().unwrap() {
        let name = var["name"].as_str().unwrap();
        let value = match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.namespace") => "sublet-system".to_string(),
            Some("metadata.name") => "sublet-5d8f7-x2x9q".to_string(),
            Some(other) => panic!("the chart reads {other}, which this test does not provide"),
            None => var["value"].as_str().unwrap().to_string(),
        };
        command.env(name, value);
    }
    let mut child = command.spawn().expect("sublet runs");

    eventually(30, "the replica ready", || async {
        (http_status(addr, "/readyz").await == Some(200)).then_some(())
    })
    .await;
    assert_eq!(http_status(addr, "/livez").await, Some(200));
    let leases: Api<Lease> = Api::namespaced(admin.clone(), "sublet-system");
    eventually(30, "the leader lease held by the pod", || async {
        let lease = leases.get_opt("sublet-leader").await.unwrap()?;
        (lease.spec?.holder_identity.as_deref() == Some("sublet-5d8f7-x2x9q")).then_some(())
    })
    .await;

    // It acts as a leader: a new pool in Observe mode gets its finalizer and its status.
    gpu_node(&admin, "gpu-1", 8).await;
    create_pool(&admin, "a100", json!({"idle": {"forSeconds": 0}})).await;
    let pools: Api<TenantPool> = Api::all(admin.clone());
    eventually(30, "the pool's status", || async {
        let pool = pools.get("a100").await.unwrap();
        let status = pool.status?;
        let observing = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Lending" && c.reason == "ObserveMode");
        (observing && pool.metadata.finalizers.is_some_and(|f| !f.is_empty())).then_some(())
    })
    .await;
    let metrics = http_status(addr, "/metrics").await;
    assert_eq!(metrics, Some(200));
    assert!(child.try_wait().unwrap().is_none(), "sublet is still running");
    child.kill().await.unwrap();
    sandbox.shutdown().await;
}
