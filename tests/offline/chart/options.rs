//! Chart options a platform team sets around the controller: Kueue access as the signal reads it, extra
//! arguments and environment, common labels, pod annotations and labels, the priority class, topology spread, the ServiceMonitor's label handling, CRDs as templates, and
//! the refusal of two writers.

use std::path::Path;

use serde_json::Value;

use super::{chart, container_args, find, grants, one, parse, render, template};

/// What `helm template` says when it refuses to render.
fn refused(sets: &[&str]) -> String {
    let out = template(sets);
    assert!(!out.status.success(), "helm template accepted {sets:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn kueue_access_covers_every_resource_the_kueue_signal_lists() {
    let source = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/signals/kueue.rs")).unwrap();
    // The signal lists each Kueue resource as `list(client, "Kind", "plural", timeout)`.
    let re = regex::Regex::new(r#"list\(client, "[A-Za-z]+", "([a-z]+)""#).unwrap();
    let listed: Vec<String> = re.captures_iter(&source).map(|c| c[1].to_string()).collect();
    assert!(listed.len() >= 2, "{listed:?}");
    let objects = render(&["kueue.enabled=true"]);
    let role = find(&objects, "ClusterRole")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "sublet")
        .expect("the controller's role");
    let grants = grants(role);
    for plural in &listed {
        for verb in ["list", "watch"] {
            assert!(
                grants.contains(&("kueue.x-k8s.io".into(), plural.clone(), verb.into())),
                "kueue.enabled does not grant {verb} on {plural}"
            );
        }
    }
}

#[test]
fn several_replicas_without_leader_election_are_refused() {
    let err = refused(&["replicaCount=2", "leaderElection.enabled=false"]);
    assert!(
        err.contains("replicaCount is 2 with leaderElection.enabled=false"),
        "{err}"
    );
    let objects = render(&["replicaCount=1", "leaderElection.enabled=false"]);
    assert_eq!(one(&objects, "Deployment")["spec"]["replicas"], 1);
}

#[test]
fn extra_args_extra_env_and_common_labels() {
    let objects = render(&[
        "extraArgs={--kubeconfig=/etc/sublet/kubeconfig}",
        "extraEnv[0].name=HTTPS_PROXY",
        "extraEnv[0].value=http://proxy:3128",
        "commonLabels.team=gpu-platform",
        "serviceMonitor.enabled=true",
        "prometheusRule.enabled=true",
        "dashboard.enabled=true",
    ]);
    for o in &objects {
        assert_eq!(
            o["metadata"]["labels"]["team"], "gpu-platform",
            "{} {} lacks the common label",
            o["kind"], o["metadata"]["name"]
        );
    }
    let deployment = one(&objects, "Deployment");
    let c = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args = container_args(deployment);
    assert_eq!(args.last(), Some(&"--kubeconfig=/etc/sublet/kubeconfig"), "{args:?}");
    <sublet::cli::Cli as clap::Parser>::try_parse_from(std::iter::once("sublet").chain(args.iter().copied()))
        .expect("the chart's arguments parse");
    let env = c["env"].as_array().unwrap();
    assert!(
        env.iter()
            .any(|e| e["name"] == "HTTPS_PROXY" && e["value"] == "http://proxy:3128"),
        "{env:?}"
    );
    // A misspelt argument is refused by the schema, not by a crash loop.
    let err = refused(&["extraArgs={tick=3}"]);
    assert!(err.contains("extraArgs"), "{err}");
}

#[test]
fn pod_annotations_labels_priority_class_and_topology_spread() {
    let plain = render(&[]);
    let pod = &one(&plain, "Deployment")["spec"]["template"];
    assert!(pod["metadata"].get("annotations").is_none(), "{pod}");
    assert!(pod["spec"].get("priorityClassName").is_none(), "{pod}");
    // On by default: the replicas spread over nodes, selected by the pods' own labels.
    let spread = &pod["spec"]["topologySpreadConstraints"][0];
    assert_eq!(spread["topologyKey"], "kubernetes.io/hostname", "{pod}");
    assert_eq!(spread["whenUnsatisfiable"], "ScheduleAnyway");
    for (k, v) in spread["labelSelector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&pod["metadata"]["labels"][k], v, "the spread selects {k}={v}");
    }

    let objects = render(&[
        "podAnnotations.example\\.com/owner=gpu-platform",
        "podLabels.team=gpu-platform",
        "priorityClassName=system-cluster-critical",
        "topologySpread=false",
    ]);
    let deployment = one(&objects, "Deployment");
    let pod = &deployment["spec"]["template"];
    assert_eq!(pod["metadata"]["annotations"]["example.com/owner"], "gpu-platform");
    assert_eq!(pod["metadata"]["labels"]["team"], "gpu-platform");
    assert_eq!(pod["spec"]["priorityClassName"], "system-cluster-critical");
    assert!(pod["spec"].get("topologySpreadConstraints").is_none(), "{pod}");
    // Pod labels stay out of the selector, which a Deployment cannot change after it is created.
    assert!(deployment["spec"]["selector"]["matchLabels"].get("team").is_none());
    assert_eq!(
        deployment["spec"]["selector"],
        one(&plain, "Deployment")["spec"]["selector"]
    );
    let err = refused(&["priorityClassName=1"]);
    assert!(err.contains("priorityClassName"), "{err}");
}

#[test]
fn the_service_monitor_keeps_target_labels_and_takes_relabelings() {
    let objects = render(&["serviceMonitor.enabled=true"]);
    let endpoint = &one(&objects, "ServiceMonitor")["spec"]["endpoints"][0];
    assert_eq!(endpoint["honorLabels"], false);
    assert!(endpoint.get("relabelings").is_none());
    let objects = render(&[
        "serviceMonitor.enabled=true",
        "serviceMonitor.relabelings[0].targetLabel=cluster",
        "serviceMonitor.relabelings[0].replacement=eu-1",
        "serviceMonitor.metricRelabelings[0].action=drop",
        "serviceMonitor.metricRelabelings[0].regex=process_.*",
        "serviceMonitor.metricRelabelings[0].sourceLabels={__name__}",
    ]);
    let endpoint = &one(&objects, "ServiceMonitor")["spec"]["endpoints"][0];
    assert_eq!(endpoint["relabelings"][0]["targetLabel"], "cluster");
    assert_eq!(endpoint["metricRelabelings"][0]["action"], "drop");
}

#[test]
fn crds_as_templates_equal_the_charts_crds_and_are_kept_on_uninstall() {
    assert!(
        find(&render(&[]), "CustomResourceDefinition").is_empty(),
        "off by default"
    );
    let objects = render(&["crds.enabled=true"]);
    let crds = find(&objects, "CustomResourceDefinition");
    assert_eq!(crds.len(), 2);
    for crd in crds {
        let name = crd["metadata"]["name"].as_str().unwrap();
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "{name}"
        );
        assert_eq!(
            crd["metadata"]["labels"]["app.kubernetes.io/managed-by"], "Helm",
            "{name}"
        );
        let file = std::fs::read_to_string(chart().join(format!("crds/{name}.yaml"))).unwrap();
        let source: Value = parse(&file).remove(0);
        assert_eq!(crd["spec"], source["spec"], "{name} differs from crds/{name}.yaml");
    }
}
