//! The chart's alerts as Prometheus loads them: `promtool check rules` (Debian's `prometheus` package) parses
//! every expression and template.

use std::path::PathBuf;
use std::process::Command;

use super::{one, render};

/// Debian's promtool: `SUBLET_PROMTOOL`, then /usr/bin/promtool; a missing one fails the test.
fn promtool() -> PathBuf {
    let path = std::env::var_os("SUBLET_PROMTOOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/promtool"));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/install-test-tools (or set SUBLET_PROMTOOL)",
        path.display()
    );
    path
}

#[test]
fn prometheus_accepts_every_alert_the_chart_renders() {
    let objects = render(&["prometheusRule.enabled=true"]);
    let rule = one(&objects, "PrometheusRule");
    let groups = serde_json::json!({"groups": rule["spec"]["groups"]});
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yaml");
    std::fs::write(&file, serde_yaml_ng::to_string(&groups).unwrap()).unwrap();
    let out = Command::new(promtool())
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    let alerts = rule["spec"]["groups"][0]["rules"].as_array().unwrap().len();
    assert!(text.contains(&format!("SUCCESS: {alerts} rules found")), "{text}");
}
