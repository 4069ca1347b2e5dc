//! `sublet demo` end to end: the real binary for a short run, the real kubectl against the kubeconfig it
//! writes while it runs, and the JSON summary it leaves; then the same on the real control plane
//! (`sublet demo --cluster`), where kube-scheduler places the internal and the tenant pods.

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

/// A plain HTTP GET of `url` (`http://HOST:PORT/PATH`): the status line, headers and body.
fn http_get(url: &str) -> String {
    use std::io::{Read as _, Write as _};
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_once('/').unwrap();
    // The controller may still be binding when the intro is printed.
    let start = Instant::now();
    let mut stream = loop {
        match std::net::TcpStream::connect(host) {
            Ok(stream) => break stream,
            Err(e) if start.elapsed() > Duration::from_secs(10) => panic!("{url} does not answer: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// `sublet demo` for 30 s on 24 nodes, its summary as JSON to `json`, with `flag` naming `kubeconfig`.
fn short_demo(json: &Path, flag: &str, kubeconfig: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_sublet"))
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
        .arg(json)
        .arg(flag)
        .arg(kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sublet demo starts")
}

#[test]
fn a_short_demo_lends_binds_reclaims_with_notice_and_keeps_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("demo.kubeconfig");
    let json = dir.path().join("summary.json");
    let mut child = short_demo(&json, "--kubeconfig", &kubeconfig);

    // The intro names the controller's metrics URL; stdout is read as it comes and kept for the end.
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    let stdout_reader = {
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut all = String::new();
            for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
                let _ = lines_tx.send(line.clone());
                all.push_str(&line);
                all.push('\n');
            }
            all
        })
    };
    let metrics_url = loop {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the intro names the controller's metrics");
        if let Some(rest) = line.strip_prefix("Controller metrics at ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let metrics = http_get(&metrics_url);
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("sublet_build_info"), "{metrics}");

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

    // kubectl explain reads the pool's schema from the demo's API server.
    let explain = kubectl(&kubeconfig, home, &["explain", "tenantpool.spec.reclaim"]).expect("kubectl explain works");
    assert!(
        explain.contains("KIND:       TenantPool") && explain.contains("noticeSeconds"),
        "{explain}"
    );

    let out = child.wait_with_output().unwrap();
    let stdout = stdout_reader.join().unwrap();
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
    check_summary(&json, &stdout);
}

/// What a short demo of 24 nodes must show in its JSON summary: lending, binding, a reclaim with notice,
/// nodes back, and rules 1–3 kept at every change with none missed.
fn check_summary(json: &Path, stdout: &str) {
    let s: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
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
    assert_eq!(s["clocks"]["wall_clock"][0], "wall_seconds", "{s}");
    // The last log line before the summary is drawn from the state the summary was made of.
    let last = stdout
        .lines()
        .take_while(|l| !l.contains("sublet demo summary"))
        .filter(|l| l.starts_with("t="))
        .last()
        .expect("log lines");
    let field = |name: &str| {
        last.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} not in {last}"))
            .to_string()
    };
    for key in ["notices", "evictions", "checkpoints", "leases_bound"] {
        assert_eq!(field(key).parse::<f64>().unwrap(), n(key), "{key}: {last} against {s}");
    }
    assert_eq!(
        field("harvested"),
        format!("{:.1}GPU-h", n("harvested_gpu_hours")),
        "{last} against {s}"
    );
    let inv = &s["invariants"];
    assert_eq!(inv["violations"], serde_json::json!([]), "{s}");
    assert_eq!(inv["missed_events"], 0);
    assert_eq!(inv["ok"], true);
    assert_eq!(inv["checked"].as_array().unwrap().len(), 3);
}

/// `sublet demo --cluster` on the real control plane (`SUBLET_TEST_CLUSTER=real` or `both`): the real
/// kube-scheduler places internal and tenant pods by the taints, tolerations and node selectors sublet and the
/// leases give them, kube-apiserver's admission (Pod Security `restricted` in tenant namespaces) admits them,
/// the node lifecycle and taint eviction controllers run, and the demo's checker holds rules 1–3 on the real
/// server's watches. At the end the demo removes its nodes, namespaces and pool.
#[test]
fn a_short_demo_on_the_real_control_plane_keeps_the_rules_with_kube_scheduler_placing_pods() {
    use crate::support::real::{Backend, clusters, turn};
    if !clusters().contains(&Backend::Real) {
        eprintln!("SUBLET_TEST_CLUSTER leaves out the real control plane: nothing to do");
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // This test's turn on the shared control plane, with what earlier tests left swept away.
    let (turn, _client) = runtime.block_on(turn());
    let kubeconfig = crate::support::real::real().kubeconfig.clone();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("summary.json");
    let home = dir.path();
    let child = short_demo(&json, "--cluster", &kubeconfig);

    // kube-scheduler, not the demo, binds the pods: its Scheduled events name tenant and internal pods.
    let scheduled = |ns: &'static str| {
        move |o: &str| {
            o.lines()
                .any(|l| l.contains(&format!("Successfully assigned {ns}/")) && l.contains("default-scheduler"))
        }
    };
    let events = [
        "get",
        "events",
        "-A",
        "--field-selector",
        "reason=Scheduled",
        "-o",
        "custom-columns=MESSAGE:.message,FROM:.reportingComponent",
    ];
    let internal = kubectl_until(&kubeconfig, home, &events, Duration::from_secs(60), scheduled("ml"));
    assert!(
        internal.contains("to h100-") || internal.contains("to a100-"),
        "{internal}"
    );
    kubectl_until(&kubeconfig, home, &events, Duration::from_secs(60), |o| {
        ["acme", "globex", "initech"].iter().any(|ns| scheduled(ns)(o))
    });
    // A tenant pod runs on a node bound to its own namespace's lease, placed there by the lease's selector
    // and toleration of the NoExecute lease taint.
    let placed = kubectl_until(
        &kubeconfig,
        home,
        &[
            "get",
            "pods",
            "-A",
            "-l",
            "demo.sublet.dev/lease",
            "--field-selector",
            "status.phase=Running",
            "-o",
            "custom-columns=NS:.metadata.namespace,NODE:.spec.nodeName,SELECTOR:.spec.nodeSelector",
        ],
        Duration::from_secs(60),
        |o| o.lines().count() > 1,
    );
    assert!(placed.contains("sublet.dev/lease"), "{placed}");
    // The simulated kubelet keeps the demo's nodes Ready on the real node lifecycle controller.
    let nodes = kubectl(&kubeconfig, home, &["get", "nodes", "-l", "demo.sublet.dev/group"]).unwrap_or_default();
    assert!(nodes.contains("h100-000") && !nodes.contains("NotReady"), "{nodes}");

    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("sublet demo summary"), "{stdout}");
    check_summary(&json, &stdout);
    // What the demo created is gone; sublet's CRDs stay.
    let left = kubectl(
        &kubeconfig,
        home,
        &["get", "nodes", "-l", "demo.sublet.dev/group", "-o", "name"],
    );
    assert_eq!(left.as_deref(), Some(""), "the demo's nodes are gone");
    let namespaces = kubectl(&kubeconfig, home, &["get", "namespaces", "-o", "name"]).unwrap();
    assert!(!namespaces.contains("namespace/ml\n"), "{namespaces}");
    let pools = kubectl(&kubeconfig, home, &["get", "tenantpools", "-o", "name"]).unwrap();
    assert_eq!(pools, "", "the demo's pool is gone");
    drop(turn);
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
    let out = run(&["--cluster", "/nonexistent/kubeconfig", "--duration", "1s"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/kubeconfig"));
    let out = run(&["--cluster", "/nonexistent/kubeconfig", "--kubeconfig", "k"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
}
