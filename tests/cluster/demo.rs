//! `sublet demo` end to end: the real binary for a short run, the real kubectl against the kubeconfig it
//! writes while it runs, and the JSON summary it leaves.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn kubectl(kubeconfig: &Path, home: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(crate::support::tool("kubectl"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls kubectl until `pred` holds for its output, for at most `limit`.
fn kubectl_until(
    kubeconfig: &Path,
    home: &Path,
    args: &[&str],
    limit: Duration,
    pred: impl Fn(&str) -> bool,
) -> String {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < limit {
        if let Some(out) = kubectl(kubeconfig, home, args) {
            if pred(&out) {
                return out;
            }
            last = out;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!(
        "kubectl {} never showed what was expected; last output:\n{last}",
        args.join(" ")
    );
}

#[test]
fn a_short_demo_lends_binds_reclaims_with_notice_and_keeps_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("demo.kubeconfig");
    let json = dir.path().join("summary.json");
    let child = Command::new(env!("CARGO_BIN_EXE_sublet"))
        .args([
            "demo",
            "--duration",
            "30s",
            "--speed",
            "2600",
            "--nodes",
            "24",
            "--plain",
            "--json",
        ])
        .arg(&json)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sublet demo starts");

    // While it runs, kubectl sees the pool, the leases and the nodes' sublet states.
    let start = Instant::now();
    while !kubeconfig.exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "no kubeconfig written");
        std::thread::sleep(Duration::from_millis(100));
    }
    let home = dir.path();
    let pools = kubectl_until(
        &kubeconfig,
        home,
        &["get", "tenantpools"],
        Duration::from_secs(20),
        |o| o.contains("demo") && o.contains("Enforce"),
    );
    assert!(pools.contains("LENT") && pools.contains("LEASED"), "{pools}");
    let leases = kubectl_until(
        &kubeconfig,
        home,
        &["get", "gpuleases", "-A"],
        Duration::from_secs(20),
        |o| o.contains("Bound"),
    );
    assert!(leases.contains("job-") && leases.contains("PHASE"), "{leases}");
    let nodes = kubectl_until(
        &kubeconfig,
        home,
        &["get", "nodes", "-L", "sublet.dev/state"],
        Duration::from_secs(20),
        |o| o.contains("leased") || o.contains("lent"),
    );
    assert!(nodes.contains("h100-000") && nodes.contains("STATE"), "{nodes}");
    // The simulated kubelet's heartbeats: a Lease per node in kube-node-lease, held by the node.
    let heartbeats = kubectl_until(
        &kubeconfig,
        home,
        &[
            "get",
            "leases",
            "-n",
            "kube-node-lease",
            "-o",
            "custom-columns=NAME:.metadata.name,HOLDER:.spec.holderIdentity",
        ],
        Duration::from_secs(20),
        |o| o.contains("h100-000") && o.contains("a100-000"),
    );
    assert!(
        heartbeats
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["h100-000", "h100-000"]),
        "{heartbeats}"
    );

    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("kubectl get gpuleases -A"),
        "the intro says how to use kubectl"
    );
    assert!(stdout.contains("sublet demo summary"), "{stdout}");

    let s: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let n = |k: &str| s[k].as_f64().unwrap_or_else(|| panic!("{k} missing in {s}"));
    assert_eq!(n("nodes"), 24.0);
    assert!(n("lends") > 0.0, "lending: {s}");
    assert!(n("leases_bound") > 0.0 && n("binds") > 0.0, "binding: {s}");
    assert!(
        n("notices") >= 1.0 && n("pods_noticed") >= 1.0,
        "a reclaim with notice: {s}"
    );
    assert!(
        n("checkpoints") + n("evictions") >= 1.0,
        "tenant pods left after the notice: {s}"
    );
    assert!(n("returns") > 0.0, "nodes returned: {s}");
    assert!(n("harvested_gpu_hours") > 0.0 && n("revenue") > 0.0, "{s}");
    assert!(n("internal_pods") > 0.0);
    let signals = s["signals"].as_str().unwrap();
    assert!(
        signals.contains("Prometheus") && signals.contains("DCGM exporter"),
        "the summary says where utilization came from: {signals}"
    );
    assert!(s["internal_delay"]["definition"].as_str().unwrap().contains("Pending"));
    let inv = &s["invariants"];
    assert_eq!(inv["violations"], serde_json::json!([]), "{s}");
    assert_eq!(inv["missed_events"], 0);
    assert_eq!(inv["ok"], true);
    assert_eq!(inv["checked"].as_array().unwrap().len(), 3);
}

#[test]
fn bad_arguments_fail_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sublet"))
            .arg("demo")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = run(&["--duration", "soon"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a duration"));
    let out = run(&["--speed", "0", "--duration", "1s"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--speed"));
    let out = run(&["--trace", "/nonexistent/trace.csv", "--duration", "1s"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/trace.csv"));
}
