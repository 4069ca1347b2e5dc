//! The demo's invariant checker catches each broken rule from the API's watch events, and lets the allowed
//! cases pass: writes made directly to a sandbox, as a faulty operator would make them.

use std::time::Duration;

use serde_json::{Value, json};
use sublet::demo::{NodeGroup, SimClock, feed, nodes, summary::Checker};
use sublet_sandbox::{DeleteOpts, LocalApi, PatchKind, Sandbox, SandboxConfig};

fn pod(name: &str, annotations: Value) -> Value {
    json!({"metadata": {"name": name, "annotations": annotations},
        "spec": {"terminationGracePeriodSeconds": 5, "containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"nvidia.com/gpu": "8"}}}]}})
}

fn running_pod(local: &LocalApi, ns: &str, name: &str, node: &str, annotations: Value) {
    local.create("v1", "pods", Some(ns), pod(name, annotations)).unwrap();
    local.bind(ns, name, node).unwrap();
    let status = json!({"status": {"phase": "Running"}});
    local
        .patch("v1", "pods", Some(ns), name, PatchKind::Merge, &status, Some("status"))
        .unwrap();
}

fn label_node(local: &LocalApi, node: &str, labels: Value) {
    let patch = json!({"metadata": {"labels": labels}});
    local
        .patch("v1", "nodes", None, node, PatchKind::Merge, &patch, None)
        .unwrap();
}

fn delete(local: &LocalApi, ns: &str, name: &str) {
    local
        .delete("v1", "pods", Some(ns), name, &DeleteOpts::default())
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_broken_rule_is_reported_and_allowed_cases_pass() {
    let sandbox = Sandbox::start(SandboxConfig {
        external_kubelet: true,
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    let local = sandbox.local();
    let clock = SimClock::new(1000.0, jiff::Timestamp::UNIX_EPOCH);
    let checker = Checker::start(feed::local(&local), clock, 2.0, sublet::demo::summary::RACE_LIMIT);
    local
        .create("v1", "namespaces", None, json!({"metadata": {"name": "ml"}}))
        .unwrap();
    let tenant_ns = json!({"metadata": {"name": "acme", "labels": {"sublet.dev/tenant": "true"}}});
    local.create("v1", "namespaces", None, tenant_ns).unwrap();
    let group = NodeGroup {
        name: "h100".into(),
        count: 4,
        gpus_per_node: 8,
        model: "NVIDIA-H100-80GB-HBM3".into(),
    };
    nodes::create_nodes(&local.clone().into(), &[group]).await.unwrap();

    // Rule 1: an internal pod deleted while it runs.
    running_pod(&local, "ml", "train-1", "h100-000", json!({}));
    delete(&local, "ml", "train-1");
    // Rule 1: a node lent with an internal pod on it, and left so past the limit.
    running_pod(&local, "ml", "train-2", "h100-001", json!({}));
    label_node(
        &local,
        "h100-001",
        json!({"sublet.dev/state": "lent", "sublet.dev/pool": "demo"}),
    );
    // Rule 2: a tenant pod on a node that is not its lease's.
    label_node(
        &local,
        "h100-002",
        json!({"sublet.dev/state": "leased", "sublet.dev/lease": "other.job"}),
    );
    running_pod(&local, "acme", "stray", "h100-002", json!({}));
    // Rule 3: a tenant pod evicted without notice, and one evicted before its deadline.
    label_node(
        &local,
        "h100-003",
        json!({"sublet.dev/state": "leased", "sublet.dev/lease": "acme.job"}),
    );
    running_pod(&local, "acme", "early", "h100-003", json!({}));
    delete(&local, "acme", "early");
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600);
    let ann = json!({"sublet.dev/reclaim-deadline": later.to_string()});
    running_pod(&local, "acme", "before-deadline", "h100-003", ann);
    delete(&local, "acme", "before-deadline");
    // Allowed: an eviction after the deadline; a finished internal pod removed.
    let past = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(5);
    running_pod(
        &local,
        "acme",
        "noticed",
        "h100-003",
        json!({"sublet.dev/reclaim-deadline": past.to_string()}),
    );
    delete(&local, "acme", "noticed");
    running_pod(&local, "ml", "done", "h100-000", json!({}));
    let status = json!({"status": {"phase": "Succeeded"}});
    local
        .patch(
            "v1",
            "pods",
            Some("ml"),
            "done",
            PatchKind::Merge,
            &status,
            Some("status"),
        )
        .unwrap();
    delete(&local, "ml", "done");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let summary = checker
        .finish(&local.clone().into(), Duration::from_secs(2), "test")
        .await;
    let inv = &summary.invariants;
    assert!(!inv.ok);
    let details: Vec<String> = inv
        .violations
        .iter()
        .map(|v| format!("{} {}", v.rule, v.detail))
        .collect();
    let has = |rule: u8, text: &str| inv.violations.iter().any(|v| v.rule == rule && v.detail.contains(text));
    assert!(has(1, "ml/train-1"), "{details:?}");
    assert!(has(1, "h100-001") && has(1, "stayed lent"), "{details:?}");
    assert!(has(2, "acme/stray"), "{details:?}");
    assert!(has(3, "acme/early") && has(3, "without a notice"), "{details:?}");
    assert!(has(3, "acme/before-deadline"), "{details:?}");
    assert!(
        !details.iter().any(|d| d.contains("noticed") || d.contains("done")),
        "{details:?}"
    );
    assert_eq!(inv.violations.len(), 5, "{details:?}");
    assert_eq!(summary.counters.evictions, 3);
    sandbox.shutdown().await;
}
