//! `helm install` and `helm uninstall` of the chart, on the sandbox and on the real kube-apiserver.

use serde_json::Value;
use sublet_sandbox::SandboxConfig;

use crate::support::real::{Backend, clusters};
use crate::support::sandbox::TestCluster;

fn helm(cluster: &TestCluster, args: &[&str]) -> String {
    let out = std::process::Command::new(crate::support::tool("helm"))
        .args(args)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("HOME", cluster.dir.path())
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "helm {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn helm_installs_and_uninstalls_the_chart() {
    for backend in clusters() {
        let cluster = TestCluster::on(
            backend,
            SandboxConfig {
                rbac: true,
                ..Default::default()
            },
        );
        let release = cluster.name("chart");
        let ns = cluster.name("sublet-system");
        let chart = crate::support::sandbox::repo("charts/sublet");
        helm(
            &cluster,
            &["install", &release, &chart, "-n", &ns, "--create-namespace"],
        );
        let listed = helm(&cluster, &["list", "-n", &ns, "-o", "json"]);
        let listed: Value = serde_json::from_str(&listed).unwrap();
        assert_eq!(listed[0]["status"], "deployed", "{listed}");
        let fullname = format!("{release}-sublet");
        cluster.ok(&["get", "deployment", &fullname, "-n", &ns]);
        cluster.ok(&["get", "serviceaccount", &fullname, "-n", &ns]);
        cluster.ok(&["get", "clusterrole", &fullname]);
        let policy = format!("{fullname}-tenant-isolation");
        cluster.ok(&["get", "validatingadmissionpolicybinding", &policy]);
        if backend == Backend::Real {
            // The real server type-checks the policy's CEL against the Pod schema and reports any warning.
            crate::support::sandbox::eventually(std::time::Duration::from_secs(30), "the policy checked", || {
                let status = cluster.ok(&["get", "validatingadmissionpolicy", &policy, "-o", "jsonpath={.status}"]);
                let status: Value = serde_json::from_str(&status).unwrap_or(Value::Null);
                status["observedGeneration"].as_i64().is_some()
                    && status["typeChecking"]["expressionWarnings"]
                        .as_array()
                        .is_none_or(|w| w.is_empty())
                    && !status["typeChecking"].is_null()
            });
        }
        helm(&cluster, &["uninstall", &release, "-n", &ns, "--wait"]);
        let gone = cluster.run(&["get", "clusterrole", &fullname]);
        assert!(
            !gone.status.success(),
            "the chart's ClusterRole outlived helm uninstall"
        );
        let _ = cluster.run(&["delete", "namespace", &ns, "--wait=false"]);
    }
}
