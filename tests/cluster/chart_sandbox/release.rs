//! A second release: helm, talking to a cluster where sublet already runs, refuses to install another
//! controller next to it (the chart's `lookup`), and lets the same release through.

use std::process::Command;

use super::deploy_yaml;
use crate::support::sandbox::TestCluster;

/// `helm template --dry-run=server` against the sandbox: helm's `lookup` sees the cluster, as on install.
fn helm_against(cluster: &TestCluster, release: &str, namespace: &str, sets: &[&str]) -> std::process::Output {
    let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/sublet");
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(crate::support::tool("helm"));
    cmd.args(["template", release, chart.to_str().unwrap(), "--namespace", namespace])
        .arg("--dry-run=server")
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"));
    for s in sets {
        cmd.args(["--set", s]);
    }
    cmd.output().expect("helm runs")
}

#[test]
fn a_second_release_is_refused_while_the_first_passes() {
    let cluster = TestCluster::start();
    // Nothing installed yet: the first release renders.
    let first = helm_against(&cluster, "sublet", "sublet-system", &[]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));

    cluster.ok_stdin(&["apply", "--server-side", "-f", "-"], &deploy_yaml());
    let second = helm_against(&cluster, "gpu-lender", "team-b", &[]);
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "a second release rendered");
    assert!(
        err.contains("another sublet controller runs as Deployment sublet-system/sublet (release \"sublet\")"),
        "{err}"
    );
    // The same name in another namespace is another release too.
    let elsewhere = helm_against(&cluster, "sublet", "team-b", &[]);
    assert!(
        !elsewhere.status.success(),
        "the same name in another namespace rendered"
    );

    // The running release itself passes the check (helm may still refuse to adopt objects that kubectl, not
    // helm, created here); the check can be turned off on purpose.
    for (release, namespace, sets) in [
        ("sublet", "sublet-system", &[][..]),
        ("gpu-lender", "team-b", &["refuseSecondRelease=false"][..]),
    ] {
        let out = helm_against(&cluster, release, namespace, sets);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("another sublet controller"),
            "{release} in {namespace}: {err}"
        );
    }
}
