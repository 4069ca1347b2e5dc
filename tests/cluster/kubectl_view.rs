//! What a platform team and a tenant see with the real kubectl against the sandbox and a running controller:
//! `kubectl get tenantpools` and `gpuleases` answer "is it healthy and what would it lend", a pool with a
//! broken spec does not print like a healthy one, and the events name every node and pod they are about.

use std::path::Path;
use std::process::Command;

use crate::support::cluster::*;
use serde_json::json;
use sublet_sandbox::SandboxConfig;

fn kubectl(kubeconfig: &Path, home: &Path, args: &[&str]) -> String {
    let out = Command::new(crate::support::tool("kubectl"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// An event as kubectl shows it (events.k8s.io/v1).
#[derive(Debug)]
struct Seen {
    type_: String,
    reason: String,
    regarding: String,
    related: String,
    note: String,
    count: u64,
}

/// Every event in `namespace` (`-A` for all), through `kubectl get events.events.k8s.io -o json`.
fn events(kubeconfig: &Path, home: &Path, namespace: &str) -> Vec<Seen> {
    let scope = if namespace == "-A" {
        vec!["-A"]
    } else {
        vec!["-n", namespace]
    };
    let mut args = vec!["get", "events.events.k8s.io", "-o", "json"];
    args.extend(scope);
    let list: serde_json::Value = serde_json::from_str(&kubectl(kubeconfig, home, &args)).unwrap();
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| Seen {
            type_: text(&e["type"]),
            reason: text(&e["reason"]),
            regarding: text(&e["regarding"]["name"]),
            related: text(&e["related"]["name"]),
            note: text(&e["note"]),
            count: e["series"]["count"].as_u64().unwrap_or(1),
        })
        .collect()
}

/// A sandbox with two 8-GPU nodes, and a kubeconfig for kubectl in a folder of the test.
async fn two_nodes() -> (Env, tempfile::TempDir, std::path::PathBuf) {
    let env = env(SandboxConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    env.sandbox.write_kubeconfig(&kubeconfig).unwrap();
    gpu_node(&env.client, "gpu-1", 8).await;
    gpu_node(&env.client, "gpu-2", 8).await;
    (env, dir, kubeconfig)
}

/// The table as rows of (column → cell), cells split at the header's column starts.
fn table(text: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let mut starts: Vec<(usize, &str)> = Vec::new();
    let mut at = 0;
    for name in header.split_whitespace() {
        let i = header[at..].find(name).unwrap() + at;
        starts.push((i, name));
        at = i + name.len();
    }
    lines
        .map(|line| {
            starts
                .iter()
                .enumerate()
                .map(|(k, &(i, name))| {
                    let end = starts.get(k + 1).map_or(line.len(), |n| n.0.min(line.len()));
                    let cell = line.get(i.min(line.len())..end).unwrap_or_default();
                    (name.to_string(), cell.trim().to_string())
                })
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_show_readiness_lending_and_lendable_gpus_and_leases_their_reason_and_model() {
    let (env, dir, kubeconfig) = two_nodes().await;
    let c = env.client.clone();
    create_pool(&c, "a100", json!({"mode": "Observe", "idle": {"forSeconds": 0}})).await;
    // Accepted by the API server (any non-empty string), refused by sublet.
    create_pool(
        &c,
        "broken",
        json!({"mode": "Enforce", "timeZone": "Mars/Olympus_Mons"}),
    )
    .await;
    // A utilization source nobody answers at: its signals are stale and it lends nothing.
    create_pool(
        &c,
        "blind",
        json!({"nodeSelector": {"matchLabels": {"pool": "blind"}}, "utilization": {"prometheusUrl": "http://127.0.0.1:1"}}),
    )
    .await;
    create_lease(&c, "acme", "job", json!({"pool": "a100", "gpus": 8, "gpuModel": MODEL})).await;
    let run = controller(&c, "sublet-0", false);

    let (k, home) = (kubeconfig.clone(), dir.path().to_path_buf());
    let pools = eventually_seen(30, "both pools reported", || {
        let (k, home) = (k.clone(), home.clone());
        async move {
            let text = kubectl(&k, &home, &["get", "tenantpools"]);
            let rows = table(&text);
            let done = rows.len() == 3 && rows.iter().all(|r| !r["READY"].is_empty()) && rows[0]["LENDABLE"] == "16";
            if done { Ok(rows) } else { Err(text) }
        }
    })
    .await;
    let a100 = pools.iter().find(|r| r["NAME"] == "a100").unwrap();
    assert_eq!(a100["READY"], "True", "{a100:?}");
    assert_eq!(a100["LENDING"], "ObserveMode", "{a100:?}");
    assert_eq!(a100["LENDABLE"], "16", "what Observe mode would lend: {a100:?}");
    let broken = pools.iter().find(|r| r["NAME"] == "broken").unwrap();
    assert_eq!(broken["READY"], "False", "{broken:?}");
    assert_eq!(broken["LENDING"], "InvalidSpec", "{broken:?}");
    let blind = pools.iter().find(|r| r["NAME"] == "blind").unwrap();
    assert_eq!(blind["LENDING"], "Blocked", "{blind:?}");

    // Warnings on the pools, once each.
    let warnings = eventually_seen(30, "the pools' warnings", || {
        let (k, home) = (k.clone(), home.clone());
        async move {
            let found = events(&k, &home, "default");
            let pick = |pool: &str, reason: &str| {
                found
                    .iter()
                    .filter(|e| e.regarding == pool && e.reason == reason && e.type_ == "Warning")
                    .count()
            };
            let seen = [
                pick("broken", "InvalidSpec"),
                pick("blind", "SignalsStale"),
                pick("blind", "LendingBlocked"),
            ];
            if seen == [1, 1, 1] {
                Ok(found)
            } else {
                Err(format!("{seen:?} in {found:?}"))
            }
        }
    })
    .await;
    let invalid = warnings.iter().find(|e| e.reason == "InvalidSpec").unwrap();
    assert!(invalid.note.contains("Mars/Olympus_Mons"), "{invalid:?}");

    let leases = eventually_seen(30, "the lease's reason", || {
        let (k, home) = (k.clone(), home.clone());
        async move {
            let text = kubectl(&k, &home, &["get", "gpuleases", "-A"]);
            let rows = table(&text);
            if rows.len() == 1 && !rows[0]["REASON"].is_empty() {
                Ok(rows)
            } else {
                Err(text)
            }
        }
    })
    .await;
    assert_eq!(leases[0]["MODEL"], MODEL);
    assert!(leases[0]["REASON"].contains("Observe mode"), "{:?}", leases[0]);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_under_notice_and_each_evicted_pod_has_its_own_event() {
    let (env, dir, kubeconfig) = two_nodes().await;
    let c = env.client.clone();
    create_pool(
        &c,
        "a100",
        json!({"mode": "Enforce", "idle": {"forSeconds": 0}, "reclaim": {"noticeSeconds": 1, "cooldownSeconds": 0}}),
    )
    .await;
    let run = controller(&c, "sublet-0", false);
    create_lease(&c, "acme", "job", json!({"pool": "a100", "gpus": 16})).await;
    let (k, home) = (kubeconfig.clone(), dir.path().to_path_buf());
    // Bound, and billed: the cost in cents with its currency, not a float's every digit.
    let cents = regex::Regex::new(r"^[0-9]+\.[0-9]{2} USD$").unwrap();
    eventually_seen(30, "both nodes bound and billed", || {
        let (k, home, cents) = (k.clone(), home.clone(), cents.clone());
        async move {
            let text = kubectl(&k, &home, &["get", "gpuleases", "-n", "acme"]);
            let rows = table(&text);
            if rows
                .first()
                .is_some_and(|r| r["PHASE"] == "Bound" && r["NODES"] == "2" && cents.is_match(&r["COST"]))
            {
                Ok(())
            } else {
                Err(text)
            }
        }
    })
    .await;
    let on_lease = json!({
        "nodeSelector": {"sublet.dev/lease": "acme.job"},
        "tolerations": [{"key": "sublet.dev/lease", "operator": "Equal", "value": "acme.job", "effect": "NoSchedule"}],
    });
    for (pod, node) in [("w-1", "gpu-1"), ("w-2", "gpu-1"), ("w-3", "gpu-2")] {
        gpu_pod(&c, "acme", pod, 4, Some(node), on_lease.clone()).await;
    }
    // Internal work wants both nodes back.
    gpu_pod(&c, "ml", "train", 16, None, json!({})).await;

    let seen = eventually_seen(60, "notices and evictions", || {
        let (k, home) = (k.clone(), home.clone());
        async move {
            let found = events(&k, &home, "acme");
            let n = |r: &str| found.iter().filter(|e| e.reason == r).count();
            if n("ReclaimNotice") >= 2 && n("Evicted") >= 3 {
                Ok(found)
            } else {
                Err(format!("{found:?}"))
            }
        }
    })
    .await;
    let mut notices: Vec<&Seen> = seen.iter().filter(|e| e.reason == "ReclaimNotice").collect();
    notices.sort_by(|a, b| a.related.cmp(&b.related));
    assert_eq!(notices.len(), 2, "{notices:?}");
    for (e, node) in notices.iter().zip(["gpu-1", "gpu-2"]) {
        assert_eq!(
            (e.regarding.as_str(), e.related.as_str(), e.count),
            ("job", node, 1),
            "{e:?}"
        );
        assert!(
            e.note
                .contains(&format!("node {node} is needed back for internal work")),
            "{e:?}"
        );
        for internal in ["pending", "reserve", "free"] {
            assert!(
                !e.note.contains(internal),
                "a tenant is told about internal demand: {e:?}"
            );
        }
    }
    let mut evicted: Vec<&Seen> = seen.iter().filter(|e| e.reason == "Evicted").collect();
    evicted.sort_by(|a, b| a.related.cmp(&b.related));
    let pods: Vec<&str> = evicted.iter().map(|e| e.related.as_str()).collect();
    assert_eq!(pods, ["w-1", "w-2", "w-3"], "{evicted:?}");
    for e in &evicted {
        assert!(e.note.contains(&format!("acme/{}", e.related)), "{e:?}");
    }

    // The nodes say when they were lent and when they came back, with the reason.
    let nodes = eventually_seen(30, "node events", || {
        let (k, home) = (k.clone(), home.clone());
        async move {
            let found = events(&k, &home, "-A");
            let on = |node: &str, reason: &str| found.iter().any(|e| e.regarding == node && e.reason == reason);
            if ["gpu-1", "gpu-2"].iter().all(|n| on(n, "Lent") && on(n, "Returned")) {
                Ok(found)
            } else {
                Err(format!("{found:?}"))
            }
        }
    })
    .await;
    let lent = nodes
        .iter()
        .find(|e| e.regarding == "gpu-1" && e.reason == "Lent")
        .unwrap();
    assert!(lent.note.starts_with("lent by pool a100: "), "{lent:?}");
    assert_eq!(lent.type_, "Normal");
    run.stop().await;
}
