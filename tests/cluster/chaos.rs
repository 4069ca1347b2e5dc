//! `sublet chaos` for a few cycles with a fixed seed: the real binary spawns itself as the controller against
//! its embedded sandbox, kills it, fails its writes, churns leases, takes nodes NotReady and flips the pool's
//! mode, and its independent watch finds every promise kept.
//!
//! Every perturbation is on: kills, faults, lease-churn, node-delete (a tenant pod left on a node deleted and
//! registered again is a breach, evicted at once and without notice), node-not-ready (a NotReady node bills
//! nothing while it cannot serve) and mode-flips.
//!
//! The run's reclaim latency (internal demand seen → node back, p99 against the notice + 2 s) is a figure of
//! speed: this test asserts it was measured, and leaves its bound to `sublet chaos` run by hand (exit 3 on a
//! slow p99), as a shared CI machine under the rest of the suite is no place to time it. Every other check
//! must pass.

use std::process::Command;

use serde_json::Value;

fn chaos(args: &[&str]) -> (std::process::Output, Option<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_sublet"))
        .arg("chaos")
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("sublet chaos runs");
    let report = std::fs::read_to_string(&json)
        .ok()
        .map(|t| serde_json::from_str(&t).expect("the report is JSON"));
    (out, report)
}

#[test]
fn a_short_chaos_run_keeps_every_promise_under_every_perturbation() {
    let (out, report) = chaos(&[
        "--cycles",
        "24",
        "--parallel",
        "6",
        "--seed",
        "7",
        "--perturb",
        "kills,faults,lease-churn,node-delete,node-not-ready,mode-flips",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let report =
        report.unwrap_or_else(|| panic!("no report; output:\n{text}\n{}", String::from_utf8_lossy(&out.stderr)));
    let broken: Vec<&serde_json::Value> = report["violations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["check"] != LATENCY_CHECK)
        .collect();
    assert!(broken.is_empty(), "violations:\n{text}\n{broken:#?}");
    assert_eq!(report["cycleCounts"]["completed"], 24, "{text}");
    assert!(report["kills"]["total"].as_u64().unwrap() > 0, "{text}");
    assert!(report["faultsInjected"].as_u64().unwrap() > 0, "{text}");
    assert!(report["controllerStarts"].as_u64().unwrap() > 1, "{text}");
    assert!(report["nodesNotReady"].as_u64().unwrap() > 0, "{text}");
    assert!(report["nodesDeleted"].as_u64().unwrap() > 0, "{text}");
    assert!(report["modeFlips"].as_u64().unwrap() > 0, "{text}");
    // Every check ran, and the ones about the cycles ran once per cycle or more.
    for check in [
        "rule 1",
        "rule 2",
        "notice deadline never moves",
        "one notice per hold",
        "pod deadline never moves",
        "ledger equals its holds",
        "billed equals observed holds",
        "each hold recorded as seen",
        "deleted lease has a final record",
        "pool ended totals equal the ended leases",
        "pool revenue equals the leases' cost",
        "no node left marked after the pool's deletion",
        "no tenant pod outlives its leases",
        "every cycle completes",
    ] {
        let c = &report["checks"][check];
        assert!(
            c["checked"].as_u64().unwrap_or(0) > 0,
            "{check} was never checked: {text}"
        );
        assert_eq!(c["failed"], 0, "{check}: {text}");
    }
    assert!(
        report["checks"]["ledger equals its holds"]["checked"].as_u64().unwrap() >= 20,
        "{text}"
    );
    let latency = &report["reclaimLatency"];
    assert!(latency["samples"].as_u64().unwrap() > 0, "{text}");
    assert!(report["checks"][LATENCY_CHECK]["checked"] == 1, "{text}");
}

/// The one check of speed in the report (see the module's note).
const LATENCY_CHECK: &str = "reclaim latency p99 within notice + 2 s";

#[test]
fn chaos_refuses_nonsense() {
    for (args, said) in [
        (vec!["--perturb", "none,kills"], "cannot be combined"),
        (vec!["--perturb", "earthquakes"], "invalid value"),
        (vec!["--cycles", "0"], "--cycles"),
    ] {
        let (out, report) = chaos(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && report.is_none(), "{args:?} ran");
        assert!(err.contains(said), "{args:?}: {err}");
    }
}
