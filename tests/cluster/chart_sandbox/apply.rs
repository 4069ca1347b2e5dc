//! The rendered chart applied server-side, and what its roles allow.

use std::path::Path;

use serde_json::{Value, json};
use sublet_sandbox::SandboxConfig;

use super::{deploy_yaml, pod};
use crate::support::sandbox::TestCluster;

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
        "validatingadmissionpolicy.admissionregistration.k8s.io/sublet-operator-bounds",
        "validatingadmissionpolicy.admissionregistration.k8s.io/sublet-node-marks",
        "validatingadmissionpolicy.admissionregistration.k8s.io/sublet-tenant-budgets",
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
        ("patch", "gpuleases.sublet.dev", "", "acme", "yes"),
        ("patch", "namespaces", "", "", "yes"),
        ("update", "gpuleases.sublet.dev", "", "acme", "no"),
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
    let out = std::process::Command::new(crate::support::tool("helm"))
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
