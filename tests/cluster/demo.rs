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

#[test]
fn a_short_demo_lends_binds_reclaims_with_notice_and_keeps_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("demo.kubeconfig");
    let json = dir.path().join("summary.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sublet"))
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
