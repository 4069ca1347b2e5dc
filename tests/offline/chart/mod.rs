//! The Helm chart with the real helm:
//!
//! ```text
//!   values.rs     lint, the values schema, rendering with default, other and off values, NOTES, kubeVersion
//!   rbac.rs       the ClusterRoles hold least privilege, each rule commented
//!   alerts.rs     promtool parses every alert the chart renders
//!   options.rs    Kueue access, extraArgs/extraEnv/commonLabels, ServiceMonitor labels, CRDs as templates,
//!                 two writers refused
//!   generated.rs  the chart's crds/ and deploy/ equal their sources; the dashboard, the rules and the
//!                 Dockerfile agree with the controller and the chart
//! ```

mod alerts;
mod generated;
mod options;
mod rbac;
mod values;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

pub fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/sublet")
}

pub fn helm(args: &[&str]) -> std::process::Output {
    let home = tempfile::tempdir().unwrap();
    Command::new(crate::support::tool("helm"))
        .args(args)
        // helm keeps caches and plugins under these; each run gets its own.
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .output()
        .expect("helm runs")
}

/// `helm template` of release `sublet` in `sublet-system` with `--set` pairs.
pub fn template(sets: &[&str]) -> std::process::Output {
    let chart = chart();
    let mut args = vec![
        "template",
        "sublet",
        chart.to_str().unwrap(),
        "--namespace",
        "sublet-system",
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    helm(&args)
}

/// The arguments of the controller container of a rendered Deployment.
pub fn container_args(deployment: &Value) -> Vec<&str> {
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

/// `helm template` with `--set` pairs; answers every rendered object.
pub fn render(sets: &[&str]) -> Vec<Value> {
    let out = template(sets);
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse(&String::from_utf8(out.stdout).unwrap())
}

pub fn parse(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("valid YAML"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

pub fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

pub fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = find(objects, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

/// The chart's version fields.
pub fn chart_yaml() -> Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).unwrap()).unwrap()
}

/// Every rule of a ClusterRole, as (group, resource, verb) triples.
pub fn grants(role: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for rule in role["rules"].as_array().unwrap() {
        for g in rule["apiGroups"].as_array().unwrap() {
            for r in rule["resources"].as_array().unwrap() {
                for v in rule["verbs"].as_array().unwrap() {
                    out.push((
                        g.as_str().unwrap().to_string(),
                        r.as_str().unwrap().to_string(),
                        v.as_str().unwrap().to_string(),
                    ));
                }
            }
        }
    }
    out
}

/// Checks that every `sublet_*` series named in `text` is one the controller registers (metrics.rs names them
/// without the prefix); answers how many were checked.
pub fn exported_series_in(text: &str) -> usize {
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/controller/metrics.rs")).unwrap();
    let re = regex::Regex::new(r"sublet_([a-z_]+)").unwrap();
    let mut checked = 0;
    for m in re.captures_iter(text) {
        let name = &m[1];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        assert!(
            source.contains(&format!("\"{base}\"")),
            "sublet_{name} is queried, but the controller does not export it"
        );
        checked += 1;
    }
    checked
}
