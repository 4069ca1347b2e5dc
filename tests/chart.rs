//! The Helm chart with the real helm: lint, rendering with default and other values, the values schema, and
//! the generated copies (the chart's `crds/`, `deploy/`) kept equal to their sources.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/sublet")
}

fn helm(args: &[&str]) -> std::process::Output {
    let home = tempfile::tempdir().unwrap();
    Command::new(support::tool("helm"))
        .args(args)
        // helm keeps caches and plugins under these; each run gets its own.
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .output()
        .expect("helm runs")
}

/// `helm template` with `--set` pairs; answers every rendered object.
fn render(sets: &[&str]) -> Vec<Value> {
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
    let out = helm(&args);
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse(&String::from_utf8(out.stdout).unwrap())
}

fn parse(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("valid YAML"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = find(objects, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

/// The chart's version fields.
fn chart_yaml() -> Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).unwrap()).unwrap()
}

#[test]
fn lint_strict_passes() {
    let out = helm(&["lint", "--strict", chart().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "helm lint --strict: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_schema_rejects_bad_values() {
    let chart = chart();
    for (set, needle) in [
        ("logFormat=xml", "logFormat"),
        ("admission.validationActions={Block}", "validationActions"),
        ("admission.validationActions={Deny,Warn}", "validationActions"),
        ("leaderElection.leaseDurationSeconds=1", "leaseDurationSeconds"),
        ("replicaCount=-1", "replicaCount"),
        ("unknownKey=1", "unknownKey"),
        ("image.digest=latest", "digest"),
    ] {
        let out = helm(&["lint", "--strict", chart.to_str().unwrap(), "--set", set]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "helm lint accepted {set}: {text}");
        assert!(text.contains(needle), "{set}: {text}");
    }
}

#[test]
fn default_values_render_a_hardened_two_replica_deployment() {
    let objects = render(&[]);
    let app_version = chart_yaml()["appVersion"].as_str().unwrap().to_string();
    assert_eq!(
        app_version,
        env!("CARGO_PKG_VERSION"),
        "the chart's appVersion is the crate's version"
    );
    let deploy = one(&objects, "Deployment");
    assert_eq!(deploy["metadata"]["namespace"], "sublet-system");
    assert_eq!(deploy["spec"]["replicas"], 2);
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "sublet");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    let c = &pod["containers"][0];
    assert_eq!(
        c["image"].as_str().unwrap(),
        format!("ghcr.io/sublet-dev/sublet:{app_version}")
    );
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/livez");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(c["resources"]["requests"]["memory"].is_string());
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "run");
    assert!(args.contains(&"--leader-elect=true"), "{args:?}");
    assert!(args.contains(&"--metrics-addr=0.0.0.0:8080"), "{args:?}");
    let env: Vec<&str> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(env.contains(&"POD_NAMESPACE") && env.contains(&"POD_NAME"), "{env:?}");

    // The arguments are ones `sublet run` accepts.
    let cli = std::iter::once("sublet").chain(args.iter().copied());
    <sublet::cli::Cli as clap::Parser>::try_parse_from(cli).expect("the chart's arguments parse");

    assert_eq!(
        find(&objects, "ClusterRole").len(),
        2,
        "the controller's and the tenants'"
    );
    for kind in [
        "ServiceAccount",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "PodDisruptionBudget",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ] {
        one(&objects, kind);
    }
    assert!(find(&objects, "ServiceMonitor").is_empty());
    assert!(find(&objects, "PrometheusRule").is_empty());
    assert!(find(&objects, "ConfigMap").is_empty());
    assert!(
        find(&objects, "CustomResourceDefinition").is_empty(),
        "CRDs come from crds/, not templates"
    );
    let role = one(&objects, "Role");
    assert_eq!(role["metadata"]["namespace"], "sublet-system");
    assert_eq!(role["rules"][1]["resourceNames"][0], "sublet-leader");
    let binding = one(&objects, "ValidatingAdmissionPolicyBinding");
    assert_eq!(binding["spec"]["validationActions"], serde_json::json!(["Deny"]));
    assert_eq!(binding["spec"]["policyName"], "sublet-tenant-isolation");
}

/// Every rule of the ClusterRole, as (group, resource, verb) triples.
fn grants(role: &Value) -> Vec<(String, String, String)> {
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

#[test]
fn the_cluster_role_is_least_privilege() {
    let objects = render(&[]);
    let role = find(&objects, "ClusterRole")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "sublet")
        .expect("the controller's role");
    let controller = grants(role);
    for (g, r, v) in &controller {
        assert!(g != "*" && r != "*" && v != "*", "wildcard in {g}/{r} {v}");
        assert!(
            !(r == "nodes" && ["create", "update", "delete"].contains(&v.as_str())),
            "nodes {v}"
        );
        assert!(!["secrets", "configmaps"].contains(&r.as_str()), "{r} is granted");
        assert!(!(r == "gpuleases" && v == "patch"), "a lease's spec is the tenant's");
    }
    let has = |g: &str, r: &str, v: &str| controller.iter().any(|x| x.0 == g && x.1 == r && x.2 == v);
    assert!(has("", "pods/eviction", "create"));
    assert!(has("sublet.dev", "gpuleases/status", "patch"));
    assert!(!has("kueue.x-k8s.io", "workloads", "list"), "Kueue is off by default");

    // Every rule carries a comment that says why (in the template source).
    for template in ["templates/rbac.yaml", "templates/tenant-role.yaml"] {
        let source = std::fs::read_to_string(chart().join(template)).unwrap();
        let lines: Vec<&str> = source.lines().collect();
        let mut rules = 0;
        for (i, line) in lines.iter().enumerate() {
            if line.trim_start().starts_with("- apiGroups:") {
                rules += 1;
                let above = lines[..i]
                    .iter()
                    .rev()
                    .find(|l| !l.trim_start().starts_with("{{"))
                    .unwrap();
                assert!(
                    above.trim_start().starts_with('#'),
                    "{template}: the rule at line {} has no comment",
                    i + 1
                );
            }
        }
        assert!(rules >= 2, "{template}: {rules} rules");
    }

    // The tenants' role: leases in their namespace, never their status or anything of sublet's.
    let tenant = find(&objects, "ClusterRole")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "sublet-tenant")
        .expect("the tenant role");
    let tenant = grants(tenant);
    assert!(tenant.contains(&("sublet.dev".into(), "gpuleases".into(), "create".into())));
    assert!(
        tenant
            .iter()
            .all(|(_, r, v)| r != "gpuleases/status" && r != "tenantpools" && v != "patch" && v != "update"),
        "{tenant:?}"
    );
}

#[test]
fn other_values_render_monitoring_dashboard_kueue_and_a_pinned_image() {
    let digest = format!("sha256:{}", "a".repeat(64));
    let digest_set = format!("image.digest={digest}");
    let objects = render(&[
        "replicaCount=1",
        "serviceMonitor.enabled=true",
        "serviceMonitor.labels.release=prom",
        "dashboard.enabled=true",
        "dashboard.namespace=monitoring",
        "kueue.enabled=true",
        "leaderElection.enabled=false",
        "admission.validationActions={Warn,Audit}",
        "admission.exemptNamespaces={kube-system,gpu-operator}",
        "admission.tenantNamespaceLabels.customer=yes",
        &digest_set,
        "logFormat=plain",
        "fullnameOverride=gpu-lender",
        "prometheusRule.enabled=true",
        "prometheusRule.reclaimLatencySeconds=300",
    ]);
    let rule = one(&objects, "PrometheusRule");
    let rules = rule["spec"]["groups"][0]["rules"].as_array().unwrap();
    let exprs: Vec<&str> = rules.iter().map(|r| r["expr"].as_str().unwrap()).collect();
    assert!(exprs.iter().any(|e| e.ends_with("> 300")), "{exprs:?}");
    assert!(exported_series_in(&exprs.join("\n")) >= 4);
    assert!(
        rules.iter().all(|r| r["alert"].as_str().unwrap().starts_with("Sublet")),
        "{rules:?}"
    );
    let deploy = one(&objects, "Deployment");
    assert_eq!(deploy["metadata"]["name"], "gpu-lender");
    assert_eq!(deploy["spec"]["replicas"], 1);
    let c = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["image"].as_str().unwrap(),
        format!("ghcr.io/sublet-dev/sublet@{digest}")
    );
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.contains(&"--leader-elect=false") && args.contains(&"--log-format=plain"),
        "{args:?}"
    );
    <sublet::cli::Cli as clap::Parser>::try_parse_from(std::iter::once("sublet").chain(args.iter().copied()))
        .expect("the chart's arguments parse");

    assert!(find(&objects, "PodDisruptionBudget").is_empty(), "one replica, no PDB");
    assert!(find(&objects, "Role").is_empty(), "no leader election, no Lease access");
    let sm = one(&objects, "ServiceMonitor");
    assert_eq!(sm["metadata"]["labels"]["release"], "prom");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    let cm = one(&objects, "ConfigMap");
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let dashboard: Value = serde_json::from_str(cm["data"]["sublet.json"].as_str().unwrap()).unwrap();
    assert_eq!(dashboard["uid"], "sublet-overview");

    let role = find(&objects, "ClusterRole")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "gpu-lender")
        .expect("the controller's role");
    let grants = grants(role);
    assert!(grants.contains(&("kueue.x-k8s.io".into(), "workloads".into(), "watch".into())));
    let binding = one(&objects, "ValidatingAdmissionPolicyBinding");
    assert_eq!(
        binding["spec"]["validationActions"],
        serde_json::json!(["Warn", "Audit"])
    );
    let policy = one(&objects, "ValidatingAdmissionPolicy");
    let exempt = policy["spec"]["matchConditions"][1]["expression"].as_str().unwrap();
    assert!(exempt.contains("'gpu-operator'"), "{exempt}");
    let tenant = policy["spec"]["variables"][0]["expression"].as_str().unwrap();
    assert!(
        tenant.contains("namespaceObject.metadata.labels['customer'] == 'yes'"),
        "{tenant}"
    );
}

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
    ] {
        assert!(titles.contains(&wanted), "{wanted} missing from {titles:?}");
    }
    assert!(exported_series_in(&text) >= 10);
}

/// Checks that every `sublet_*` series named in `text` is one the controller registers (metrics.rs names them
/// without the prefix); answers how many were checked.
fn exported_series_in(text: &str) -> usize {
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
        .env("SUBLET_HELM", support::tool("helm"))
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

#[test]
fn notes_tell_the_leader_lease_tenant_label_and_crd_upgrade() {
    let chart = chart();
    let out = helm(&[
        "install",
        "sublet",
        chart.to_str().unwrap(),
        "--namespace",
        "sublet-system",
        "--dry-run=client",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let notes = &text[text.find("NOTES:").expect("notes rendered")..];
    assert!(notes.contains("leader Lease sublet-leader"), "{notes}");
    assert!(
        notes.contains("kubectl label namespace tenant-acme sublet.dev/tenant=true\n"),
        "{notes}"
    );
    for crd in sublet::crd::all() {
        let file = format!("charts/sublet/crds/{}", sublet::crd::file_name(&crd));
        assert!(notes.contains(&file), "{file} missing from {notes}");
    }
}

/// The Dockerfile builds the image the chart runs: the binary as the entrypoint, the uid the chart's
/// securityContext names, a builder new enough for the crate, a distroless runtime.
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
    assert_eq!(
        pod["containers"][0]["args"][0], "run",
        "the chart passes the subcommand"
    );
}

#[test]
fn the_chart_refuses_clusters_without_validating_admission_policy() {
    let chart = chart();
    let old = helm(&[
        "template",
        "sublet",
        chart.to_str().unwrap(),
        "--kube-version",
        "1.29.0",
    ]);
    assert!(!old.status.success());
    assert!(
        String::from_utf8_lossy(&old.stderr).contains("chart requires kubeVersion: >=1.30.0-0"),
        "{}",
        String::from_utf8_lossy(&old.stderr)
    );
    let ga = helm(&[
        "template",
        "sublet",
        chart.to_str().unwrap(),
        "--kube-version",
        "1.30.0",
    ]);
    assert!(ga.status.success(), "{}", String::from_utf8_lossy(&ga.stderr));
}

#[test]
fn optional_objects_can_be_turned_off_and_an_existing_service_account_used() {
    let objects = render(&[
        "admission.enabled=false",
        "tenantRole.enabled=false",
        "podDisruptionBudget.enabled=false",
        "serviceAccount.create=false",
        "serviceAccount.name=platform-sublet",
    ]);
    for kind in [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "PodDisruptionBudget",
        "ServiceAccount",
    ] {
        assert!(find(&objects, kind).is_empty(), "{kind} rendered");
    }
    assert_eq!(find(&objects, "ClusterRole").len(), 1, "only the controller's role");
    let deploy = one(&objects, "Deployment");
    assert_eq!(
        deploy["spec"]["template"]["spec"]["serviceAccountName"],
        "platform-sublet"
    );
    for binding in find(&objects, "ClusterRoleBinding")
        .into_iter()
        .chain(find(&objects, "RoleBinding"))
    {
        assert_eq!(binding["subjects"][0]["name"], "platform-sublet");
    }

    // Without a name to use, rendering stops with a message that says what to set.
    let chart = chart();
    let out = helm(&[
        "template",
        "sublet",
        chart.to_str().unwrap(),
        "--set",
        "serviceAccount.create=false",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("serviceAccount.name must name an existing ServiceAccount"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
