//! Lint, the values schema, and rendering with default, other and off values.

use serde_json::Value;

use super::{chart, chart_yaml, container_args, exported_series_in, find, grants, helm, one, render};

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
    let args = container_args(deploy);
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
        3,
        "the controller's, the tenants' and the metrics readers'"
    );
    for kind in ["ClusterRoleBinding", "Service", "PodDisruptionBudget"] {
        one(&objects, kind);
    }
    assert_eq!(
        find(&objects, "ServiceAccount").len(),
        2,
        "the controller's and the scrub Jobs'"
    );
    assert!(find(&objects, "ServiceMonitor").is_empty());
    assert!(find(&objects, "PrometheusRule").is_empty());
    assert!(find(&objects, "ConfigMap").is_empty());
    assert!(
        find(&objects, "CustomResourceDefinition").is_empty(),
        "CRDs come from crds/, not templates"
    );
    // Two Roles in the release namespace, each with its binding: the leader Lease's and the scrub Jobs'.
    assert_eq!(find(&objects, "Role").len(), 2, "leader election and scrub Jobs");
    assert_eq!(find(&objects, "RoleBinding").len(), 2);
    let role = named(&objects, "Role", "sublet-leader-election");
    assert_eq!(role["metadata"]["namespace"], "sublet-system");
    let scrub = named(&objects, "Role", "sublet-scrub");
    assert_eq!(scrub["metadata"]["namespace"], "sublet-system");
    assert_eq!(scrub["rules"][0]["resources"][0], "jobs");
    assert_eq!(role["rules"][1]["resourceNames"][0], "sublet-leader");
    // Tenant pods, tenant budgets, sublet's own writes, kubelets' writes of sublet's marks, tenant Services,
    // lease namespaces, tenant NetworkPolicies: each a policy and its binding, all denying.
    let policies: Vec<&str> = find(&objects, "ValidatingAdmissionPolicy")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        policies,
        [
            "sublet-tenant-isolation",
            "sublet-tenant-budgets",
            "sublet-operator-bounds",
            "sublet-node-marks",
            "sublet-tenant-services",
            "sublet-lease-limits",
            "sublet-tenant-network"
        ]
    );
    let bindings = find(&objects, "ValidatingAdmissionPolicyBinding");
    assert_eq!(bindings.len(), 7);
    for (binding, policy) in bindings.iter().zip(&policies) {
        assert_eq!(binding["spec"]["validationActions"], serde_json::json!(["Deny"]));
        assert_eq!(binding["spec"]["policyName"], *policy);
    }
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
        "admission.allowedServiceAccounts={kube-system:kube-proxy,gpu-operator:nvidia-driver}",
        "admission.tenantRuntimeClassName=gvisor",
        "admission.tenantNamespaceLabels.customer=yes",
        &digest_set,
        "logFormat=plain",
        "fullnameOverride=gpu-lender",
        "prometheusRule.enabled=true",
        "prometheusRule.reclaimGraceSeconds=120",
        "prometheusRule.signalsStaleMinutes=15",
    ]);
    let rule = one(&objects, "PrometheusRule");
    let rules = rule["spec"]["groups"][0]["rules"].as_array().unwrap();
    let exprs: Vec<&str> = rules.iter().map(|r| r["expr"].as_str().unwrap()).collect();
    assert!(exprs.iter().any(|e| e.ends_with("+ 120)")), "{exprs:?}");
    assert!(exprs.iter().any(|e| e.ends_with("> 900")), "{exprs:?}");
    assert!(exported_series_in(&exprs.join("\n")) >= 6);
    // The job a ServiceMonitor scrapes under is the metrics Service's name.
    let service = one(&objects, "Service")["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        exprs[0].contains(&format!("job=\"{service}\"")),
        "{service}: {}",
        exprs[0]
    );
    let alerts: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    for wanted in [
        "SubletTargetDown",
        "SubletNoLeader",
        "SubletSignalsStale",
        "SubletSlowReclaim",
        "SubletReconcileFailing",
    ] {
        assert!(alerts.contains(&wanted), "{wanted} missing from {alerts:?}");
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for r in rules {
        let alert = r["alert"].as_str().unwrap();
        let description = r["annotations"]["description"].as_str().unwrap_or_default();
        assert!(description.len() > 40, "{alert} has no description");
        let url = r["annotations"]["runbook_url"].as_str().unwrap_or_default();
        let anchor = format!("#{}", alert.to_lowercase());
        assert!(
            url.starts_with("https://") && url.ends_with(&anchor),
            "{alert}: runbook_url {url}"
        );
        // The anchor is the README's heading of that alert, under "Runbook".
        assert!(
            readme.contains(&format!("\n#### {alert}\n")),
            "the README's Runbook has no {alert}"
        );
        // Every query is limited to the release's namespace.
        assert!(
            r["expr"].as_str().unwrap().contains("namespace=\"sublet-system\""),
            "{alert}"
        );
    }
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
    let args = container_args(deploy);
    assert!(
        args.contains(&"--leader-elect=false") && args.contains(&"--log-format=plain"),
        "{args:?}"
    );
    <sublet::cli::Cli as clap::Parser>::try_parse_from(std::iter::once("sublet").chain(args.iter().copied()))
        .expect("the chart's arguments parse");

    assert!(find(&objects, "PodDisruptionBudget").is_empty(), "one replica, no PDB");
    let roles = find(&objects, "Role");
    assert!(
        roles.len() == 1 && roles[0]["rules"][0]["resources"][0] == "jobs",
        "no leader election, no Lease access"
    );
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
    for binding in find(&objects, "ValidatingAdmissionPolicyBinding") {
        assert_eq!(
            binding["spec"]["validationActions"],
            serde_json::json!(["Warn", "Audit"])
        );
    }
    let policy = find(&objects, "ValidatingAdmissionPolicy")
        .into_iter()
        .find(|p| p["metadata"]["name"] == "gpu-lender-tenant-isolation")
        .expect("the tenant isolation policy");
    let agents = policy["spec"]["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "agent")
        .unwrap()["expression"]
        .as_str()
        .unwrap();
    assert!(agents.contains("'gpu-operator:nvidia-driver'"), "{agents}");
    let validations = serde_json::to_string(&policy["spec"]["validations"]).unwrap();
    assert!(
        validations.contains("object.spec.runtimeClassName == 'gvisor'"),
        "{validations}"
    );
    let tenant = policy["spec"]["variables"][0]["expression"].as_str().unwrap();
    assert!(
        tenant.contains("namespaceObject.metadata.labels['customer'] == 'yes'"),
        "{tenant}"
    );
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
        "metricsAuth.enabled=false",
        "podDisruptionBudget.enabled=false",
        "serviceAccount.create=false",
        "serviceAccount.name=platform-sublet",
        "scrub.serviceAccount.create=false",
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

/// The object of `kind` named `name`.
fn named<'a>(objects: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    find(objects, kind)
        .into_iter()
        .find(|o| o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn the_scrub_service_account_is_made_and_let_past_the_isolation_policy_unless_turned_off() {
    let agents = |objects: &[Value]| -> String {
        let policy = find(objects, "ValidatingAdmissionPolicy")
            .into_iter()
            .find(|p| p["metadata"]["name"] == "sublet-tenant-isolation")
            .expect("the isolation policy")
            .clone();
        let variables = policy["spec"]["variables"].as_array().unwrap().clone();
        let agent = variables
            .iter()
            .find(|v| v["name"] == "agent")
            .expect("the agent variable");
        agent["expression"].as_str().unwrap().to_string()
    };
    let objects = render(&[]);
    let scrub = find(&objects, "ServiceAccount")
        .into_iter()
        .find(|a| a["metadata"]["name"] == "sublet-scrub")
        .expect("the scrub ServiceAccount")
        .clone();
    assert_eq!(scrub["automountServiceAccountToken"], false);
    let namespace = scrub["metadata"]["namespace"].as_str().unwrap().to_string();
    assert!(
        agents(&objects).contains(&format!("'{namespace}:sublet-scrub'")),
        "{}",
        agents(&objects)
    );
    // No role binds it: a scrub needs nothing from the API server.
    for binding in find(&objects, "RoleBinding")
        .into_iter()
        .chain(find(&objects, "ClusterRoleBinding"))
    {
        let subjects = binding["subjects"].as_array().cloned().unwrap_or_default();
        assert!(!subjects.iter().any(|s| s["name"] == "sublet-scrub"), "{binding}");
    }
    let off = render(&["scrub.serviceAccount.create=false"]);
    assert!(
        !find(&off, "ServiceAccount")
            .iter()
            .any(|a| a["metadata"]["name"] == "sublet-scrub"),
        "turned off, no scrub ServiceAccount"
    );
    assert!(!agents(&off).contains("sublet-scrub"), "{}", agents(&off));
}
