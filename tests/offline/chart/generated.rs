//! Generated copies and cross-checks: the chart's crds/ and deploy/, the dashboard and the Dockerfile.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::{chart, exported_series_in, find, one, parse, render};

#[test]
fn the_dashboard_shows_what_the_issue_asks_with_metrics_the_controller_exports() {
    let text = std::fs::read_to_string(chart().join("dashboards/sublet.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let titles: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for wanted in [
        "GPUs by state",
        "Reclaim latency",
        "Notices and evictions",
        "GPU-hours by tenant",
        "Revenue by tenant",
        "Internal GPUs waiting",
        "Signal freshness",
        "Reconcile duration",
        "Leader per release",
    ] {
        assert!(titles.contains(&wanted), "{wanted} missing from {titles:?}");
    }
    assert!(exported_series_in(&text) >= 10);
    // A ServiceMonitor's `namespace` is the operator's: per-tenant panels group by `tenant_namespace`, and money
    // keeps its currency.
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            if expr.contains("sublet_lease_") {
                assert!(expr.contains("by (tenant_namespace"), "{expr}");
            }
            if expr.contains("revenue") || expr.contains("cost") {
                assert!(expr.contains("currency)"), "{expr}");
            }
            assert!(
                expr.contains("namespace=~\"$namespace\""),
                "every query is filtered by release: {expr}"
            );
        }
    }
}

#[test]
fn the_readme_lists_every_metric_the_controller_exports() {
    let m = sublet::controller::Metrics::new();
    m.pool_seen("p", &["kube"]);
    m.lease_accounted("p", "acme", "job", "EUR", 1.0, 1.0);
    m.lease_phases("p", &[]);
    m.internal_pending("p", &[("any".to_string(), 1)].into());
    m.pool_accounted("p", "EUR", 1.0, 1.0, 1.0);
    m.gpus.with_label_values(&["p", "lent"]).set(1);
    m.signal_sample_timestamp
        .with_label_values(&["p", "utilization"])
        .set(1.0);
    m.pool_notice.with_label_values(&["p"]).set(1);
    m.reclaim_latency.with_label_values(&["p"]).observe(1.0);
    m.reconcile_duration.with_label_values(&["p"]).observe(1.0);
    m.reconcile_failures.with_label_values(&["p", "kube"]).inc();
    let text = m.render();
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = &readme[readme.find("## Metrics and alerts\n").unwrap()..readme.find("### Runbook").unwrap()];
    let mut names = 0;
    for line in text.lines() {
        let Some(name) = line.strip_prefix("# TYPE ").and_then(|l| l.split(' ').next()) else {
            continue;
        };
        let listed = if name.starts_with("process_") {
            "`process_*`".to_string()
        } else {
            format!("`{name}`")
        };
        assert!(
            section.contains(&listed),
            "{name} is exported but not in the README's metrics section"
        );
        names += 1;
    }
    assert!(names >= 20, "{text}");
    assert!(exported_series_in(section) >= 18);
}

#[test]
fn the_charts_crds_are_the_generated_ones() {
    let dir = chart().join("crds");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = sublet::crd::all().iter().map(sublet::crd::file_name).collect();
    expected.sort();
    assert_eq!(names, expected, "charts/sublet/crds holds exactly sublet's CRDs");
    for crd in sublet::crd::all() {
        let name = sublet::crd::file_name(&crd);
        let checked_in = std::fs::read_to_string(dir.join(&name)).unwrap();
        assert!(
            checked_in == sublet::crd::to_yaml(&crd),
            "charts/sublet/crds/{name} is stale; run scripts/generate"
        );
    }
}

#[test]
fn deploy_is_the_chart_rendered_with_default_values() {
    let out = tempfile::tempdir().unwrap();
    let generated = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/generate"))
        .arg(out.path())
        .env("SUBLET_BIN", env!("CARGO_BIN_EXE_sublet"))
        .env("SUBLET_HELM", crate::support::tool("helm"))
        .env("HELM_CACHE_HOME", out.path().join(".helm"))
        .env("HELM_CONFIG_HOME", out.path().join(".helm"))
        .env("HELM_DATA_HOME", out.path().join(".helm"))
        .output()
        .expect("scripts/generate runs");
    assert!(
        generated.status.success(),
        "scripts/generate: {}",
        String::from_utf8_lossy(&generated.stderr)
    );
    for path in [
        "deploy/sublet.yaml",
        "crds/tenantpools.sublet.dev.yaml",
        "crds/gpuleases.sublet.dev.yaml",
        "charts/sublet/crds/tenantpools.sublet.dev.yaml",
        "charts/sublet/crds/gpuleases.sublet.dev.yaml",
    ] {
        let fresh = std::fs::read_to_string(out.path().join(path)).unwrap();
        let checked_in = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
        assert!(fresh == checked_in, "{path} is stale; run scripts/generate");
    }
    let objects = parse(&std::fs::read_to_string(out.path().join("deploy/sublet.yaml")).unwrap());
    assert_eq!(find(&objects, "Namespace")[0]["metadata"]["name"], "sublet-system");
    assert_eq!(find(&objects, "CustomResourceDefinition").len(), 2);
    one(&objects, "Deployment");
}

/// The Dockerfile builds the image the chart runs: the binary as the entrypoint, the uid the chart's
/// securityContext names, a builder new enough for the crate, a distroless runtime, and no `demo` feature (so
/// no sandbox API server) in the binary.
#[test]
fn the_dockerfile_matches_the_chart() {
    let dockerfile = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile")).unwrap();
    let values: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart().join("values.yaml")).unwrap()).unwrap();
    assert!(dockerfile.contains(values["image"]["repository"].as_str().unwrap()));
    let froms: Vec<&str> = dockerfile.lines().filter_map(|l| l.strip_prefix("FROM ")).collect();
    assert_eq!(froms.len(), 2, "multi-stage: {froms:?}");
    let builder = froms[0]
        .strip_prefix("rust:")
        .and_then(|r| r.split(['-', ' ']).next())
        .unwrap();
    let minor = |v: &str| v.split('.').nth(1).unwrap().parse::<u32>().unwrap();
    assert!(
        minor(builder) >= minor(env!("CARGO_PKG_RUST_VERSION")),
        "rust:{builder} is older than rust-version"
    );
    assert!(
        froms[1].starts_with("gcr.io/distroless/") && froms[1].ends_with(":nonroot"),
        "{}",
        froms[1]
    );
    let objects = render(&[]);
    let pod = &one(&objects, "Deployment")["spec"]["template"]["spec"];
    let uid = pod["securityContext"]["runAsUser"].as_i64().unwrap();
    assert!(dockerfile.contains(&format!("USER {uid}:{uid}")), "USER is not {uid}");
    assert!(dockerfile.contains(&format!("EXPOSE {}", values["metricsPort"])));
    assert!(dockerfile.contains(r#"ENTRYPOINT ["/usr/local/bin/sublet"]"#));
    let builds: Vec<&str> = dockerfile.lines().filter(|l| l.contains("cargo build")).collect();
    assert!(!builds.is_empty(), "no cargo build in the Dockerfile");
    for build in builds {
        assert!(
            build.contains("-p sublet") && build.contains("--no-default-features"),
            "the image's build must leave out the demo: {build}"
        );
    }
    assert_eq!(
        pod["containers"][0]["args"][0], "run",
        "the chart passes the subcommand"
    );
}
