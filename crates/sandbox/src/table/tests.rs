use serde_json::{Value, json};

use super::*;

const NOW: &str = "2026-11-22T12:00:00Z";

fn now() -> jiff::Timestamp {
    NOW.parse().expect("valid time")
}

fn cells(table: &Value) -> Vec<Vec<Value>> {
    table["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["cells"].as_array().expect("cells").clone())
        .collect()
}

fn column_names(table: &Value) -> Vec<(String, i64)> {
    table["columnDefinitions"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_owned(),
                c["priority"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

fn names(table: &Value) -> Vec<&str> {
    table["columnDefinitions"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect()
}

#[test]
fn human_duration_matches_the_server() {
    let s = |secs: i128| human_duration(secs * 1_000_000_000);
    let cases = [
        (-3, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (45, "45s"),
        (119, "119s"),
        (120, "2m"),
        (330, "5m30s"),
        (600, "10m"),
        (179 * 60, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 600, "3h10m"),
        (8 * 3600 + 600, "8h"),
        (47 * 3600, "47h"),
        (48 * 3600, "2d"),
        (51 * 3600, "2d3h"),
        (8 * 86400, "8d"),
        (400 * 86400, "400d"),
        (730 * 86400, "2y"),
        ((3 * 365 + 12) * 86400, "3y12d"),
        (9 * 365 * 86400, "9y"),
    ];
    for (secs, want) in cases {
        assert_eq!(s(secs), want, "{secs}s");
    }
    assert_eq!(
        human_duration(-1_500_000_000),
        "0s",
        "under two seconds ahead counts as now"
    );
}

#[test]
fn node_status_roles_and_wide_columns() {
    let ready = json!({"metadata": {"name": "gpu-1", "creationTimestamp": "2026-11-22T11:55:00Z",
            "labels": {"node-role.kubernetes.io/gpu": "", "node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "infra"}},
        "spec": {"unschedulable": true},
        "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
            "addresses": [{"type": "Hostname", "address": "gpu-1"}, {"type": "InternalIP", "address": "10.0.0.5"}],
            "nodeInfo": {"kubeletVersion": "v1.35.0", "osImage": "Ubuntu 24.04", "kernelVersion": "6.8.0", "containerRuntimeVersion": "containerd://2.0.0"}}});
    let not_ready = json!({"metadata": {"name": "gpu-2", "creationTimestamp": "2026-11-20T09:00:00Z"},
        "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
    let unknown = json!({"metadata": {"name": "gpu-3"}});
    let table = builtin_table(
        "",
        "Node",
        &[&ready, &not_ready, &unknown],
        now(),
        IncludeObject::Metadata,
    );
    assert_eq!(
        column_names(&table),
        [
            ("Name", 0),
            ("Status", 0),
            ("Roles", 0),
            ("Age", 0),
            ("Version", 0),
            ("Internal-IP", 1),
            ("External-IP", 1),
            ("OS-Image", 1),
            ("Kernel-Version", 1),
            ("Container-Runtime", 1)
        ]
        .map(|(n, p)| (n.to_owned(), p))
    );
    assert_eq!(
        cells(&table),
        vec![
            vec![
                json!("gpu-1"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,gpu,infra"),
                json!("5m"),
                json!("v1.35.0"),
                json!("10.0.0.5"),
                json!("<none>"),
                json!("Ubuntu 24.04"),
                json!("6.8.0"),
                json!("containerd://2.0.0")
            ],
            vec![
                json!("gpu-2"),
                json!("NotReady"),
                json!("<none>"),
                json!("2d3h"),
                json!(""),
                json!("<none>"),
                json!("<none>"),
                json!("<unknown>"),
                json!("<unknown>"),
                json!("<unknown>")
            ],
            vec![
                json!("gpu-3"),
                json!("Unknown"),
                json!("<none>"),
                json!("<unknown>"),
                json!(""),
                json!("<none>"),
                json!("<none>"),
                json!("<unknown>"),
                json!("<unknown>"),
                json!("<unknown>")
            ],
        ]
    );
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(
        table["rows"][0]["object"],
        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": ready["metadata"]})
    );
    assert_eq!(table["columnDefinitions"][0]["format"], "name");
}

#[test]
fn include_object_selects_what_rows_carry() {
    let ns = json!({"metadata": {"name": "tenant-a", "creationTimestamp": NOW}, "status": {"phase": "Active"}});
    let full = builtin_table("", "Namespace", &[&ns], now(), IncludeObject::Object);
    assert_eq!(full["rows"][0]["object"], ns);
    assert_eq!(
        cells(&full),
        vec![vec![json!("tenant-a"), json!("Active"), json!("0s")]]
    );
    let none = builtin_table("", "Namespace", &[&ns], now(), IncludeObject::None);
    assert_eq!(none["rows"][0]["object"], Value::Null);
    assert_eq!(IncludeObject::parse(""), Some(IncludeObject::Metadata));
    assert_eq!(IncludeObject::parse("Object"), Some(IncludeObject::Object));
    assert_eq!(IncludeObject::parse("All"), None);
}

fn pod(status: Value) -> Value {
    json!({"metadata": {"name": "p", "creationTimestamp": "2026-11-22T11:00:00Z"},
        "spec": {"containers": [{"name": "main"}], "nodeName": "gpu-1"}, "status": status})
}

fn pod_cells(p: &Value) -> Vec<Value> {
    cells(&builtin_table("", "Pod", &[p], now(), IncludeObject::Metadata)).remove(0)
}

#[test]
fn pod_ready_status_restarts_and_wide_columns() {
    let running = pod(json!({"phase": "Running", "podIPs": [{"ip": "10.1.0.7"}],
        "containerStatuses": [{"name": "main", "ready": true, "restartCount": 0, "state": {"running": {"startedAt": NOW}}}]}));
    assert_eq!(
        pod_cells(&running),
        vec![
            json!("p"),
            json!("1/1"),
            json!("Running"),
            json!("0"),
            json!("60m"),
            json!("10.1.0.7"),
            json!("gpu-1"),
            json!("<none>"),
            json!("<none>")
        ]
    );
    let table = builtin_table("", "Pod", &[&running], now(), IncludeObject::Metadata);
    assert_eq!(
        names(&table),
        [
            "Name",
            "Ready",
            "Status",
            "Restarts",
            "Age",
            "IP",
            "Node",
            "Nominated Node",
            "Readiness Gates"
        ]
    );

    let crashing = pod(
        json!({"phase": "Running", "containerStatuses": [{"name": "main", "ready": false, "restartCount": 3,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-11-22T11:58:00Z"}}}]}),
    );
    let c = pod_cells(&crashing);
    assert_eq!(
        (&c[1], &c[2], &c[3]),
        (&json!("0/1"), &json!("CrashLoopBackOff"), &json!("3 (2m ago)"))
    );

    let pending = pod(json!({"phase": "Pending"}));
    assert_eq!(pod_cells(&pending)[2], "Pending");

    let mut terminating = running.clone();
    terminating["metadata"]["deletionTimestamp"] = json!(NOW);
    assert_eq!(pod_cells(&terminating)[2], "Terminating");

    let completed = pod(
        json!({"phase": "Succeeded", "containerStatuses": [{"name": "main", "ready": false,
        "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
    );
    let table = builtin_table("", "Pod", &[&completed], now(), IncludeObject::Metadata);
    assert_eq!(cells(&table)[0][2], "Completed");
    assert_eq!(table["rows"][0]["conditions"][0]["type"], "Completed");

    let killed = pod(
        json!({"phase": "Failed", "containerStatuses": [{"name": "main", "restartCount": 0,
        "state": {"terminated": {"exitCode": 137, "signal": 9}}}]}),
    );
    assert_eq!(pod_cells(&killed)[2], "Signal:9");
}

#[test]
fn pod_init_containers_and_sidecars() {
    let mut p = pod(json!({"phase": "Pending", "initContainerStatuses": [
        {"name": "fetch", "restartCount": 0, "state": {"terminated": {"exitCode": 0}}},
        {"name": "warm", "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]}));
    p["spec"]["initContainers"] = json!([{"name": "fetch"}, {"name": "warm"}]);
    assert_eq!(pod_cells(&p)[2], "Init:1/2");

    p["status"]["initContainerStatuses"][1]["state"] = json!({"waiting": {"reason": "ImagePullBackOff"}});
    assert_eq!(pod_cells(&p)[2], "Init:ImagePullBackOff");

    p["status"]["initContainerStatuses"][1]["state"] = json!({"terminated": {"exitCode": 2}});
    assert_eq!(pod_cells(&p)[2], "Init:ExitCode:2");

    let mut sidecar = pod(
        json!({"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}],
        "initContainerStatuses": [{"name": "proxy", "ready": true, "started": true, "restartCount": 0, "state": {"running": {}}}],
        "containerStatuses": [{"name": "main", "ready": true, "restartCount": 0, "state": {"running": {}}}]}),
    );
    sidecar["spec"]["initContainers"] = json!([{"name": "proxy", "restartPolicy": "Always"}]);
    let c = pod_cells(&sidecar);
    assert_eq!((&c[1], &c[2]), (&json!("2/2"), &json!("Running")));
}

#[test]
fn events_leases_and_pdbs() {
    let event = json!({"metadata": {"name": "gpu-1.abc", "creationTimestamp": "2026-11-22T11:50:00Z"},
        "involvedObject": {"kind": "Node", "name": "gpu-1"}, "reason": "Lent", "type": "Normal",
        "message": "lent to tenant-a \n", "source": {"component": "sublet"}, "count": 4,
        "firstTimestamp": "2026-11-22T11:50:00Z", "lastTimestamp": "2026-11-22T11:59:00Z"});
    let new_style = json!({"metadata": {"name": "e2"}, "involvedObject": {"kind": "Pod", "name": "x"},
        "reason": "Evicted", "type": "Warning", "message": "m", "reportingComponent": "sublet",
        "eventTime": "2026-11-22T11:59:30.000000Z", "series": {"count": 2, "lastObservedTime": "2026-11-22T11:59:50.000000Z"}});
    let table = builtin_table("", "Event", &[&event, &new_style], now(), IncludeObject::Metadata);
    assert_eq!(
        column_names(&table)
            .iter()
            .filter(|(_, p)| *p == 0)
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["Last Seen", "Type", "Reason", "Object", "Message"]
    );
    assert_eq!(
        cells(&table),
        vec![
            vec![
                json!("60s"),
                json!("Normal"),
                json!("Lent"),
                json!("node/gpu-1"),
                json!(""),
                json!("sublet"),
                json!("lent to tenant-a"),
                json!("10m"),
                json!(4),
                json!("gpu-1.abc")
            ],
            vec![
                json!("10s"),
                json!("Warning"),
                json!("Evicted"),
                json!("pod/x"),
                json!(""),
                json!("sublet"),
                json!("m"),
                json!("30s"),
                json!(2),
                json!("e2")
            ],
        ]
    );

    let lease = json!({"metadata": {"name": "sublet", "creationTimestamp": "2026-11-22T10:00:00Z"},
        "spec": {"holderIdentity": "sublet-0"}});
    let table = builtin_table(
        "coordination.k8s.io",
        "Lease",
        &[&lease],
        now(),
        IncludeObject::Metadata,
    );
    assert_eq!(names(&table), ["Name", "Holder", "Age"]);
    assert_eq!(
        cells(&table),
        vec![vec![json!("sublet"), json!("sublet-0"), json!("120m")]]
    );

    let pdb = json!({"metadata": {"name": "train", "creationTimestamp": NOW}, "spec": {"minAvailable": "50%"},
        "status": {"disruptionsAllowed": 1}});
    let table = builtin_table("policy", "PodDisruptionBudget", &[&pdb], now(), IncludeObject::Metadata);
    assert_eq!(
        names(&table),
        ["Name", "Min Available", "Max Unavailable", "Allowed Disruptions", "Age"]
    );
    assert_eq!(
        cells(&table),
        vec![vec![json!("train"), json!("50%"), json!("N/A"), json!(1), json!("0s")]]
    );
}

#[test]
fn workloads_services_and_config() {
    let deploy = json!({"metadata": {"name": "sublet", "creationTimestamp": NOW},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "sublet"},
                 "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}, {"key": "old", "operator": "DoesNotExist"}]},
            "template": {"spec": {"containers": [{"name": "manager", "image": "sublet:1"}, {"name": "proxy", "image": "envoy"}]}}},
        "status": {"readyReplicas": 1, "updatedReplicas": 2, "availableReplicas": 1}});
    let table = builtin_table("apps", "Deployment", &[&deploy], now(), IncludeObject::Metadata);
    assert_eq!(
        names(&table),
        [
            "Name",
            "Ready",
            "Up-to-date",
            "Available",
            "Age",
            "Containers",
            "Images",
            "Selector"
        ]
    );
    assert_eq!(
        cells(&table)[0],
        vec![
            json!("sublet"),
            json!("1/2"),
            json!(2),
            json!(1),
            json!("0s"),
            json!("manager,proxy"),
            json!("sublet:1,envoy"),
            json!("app=sublet,tier in (a,b),!old")
        ]
    );

    let svc = json!({"metadata": {"name": "metrics", "creationTimestamp": NOW},
        "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "ports": [{"port": 8080, "protocol": "TCP"},
            {"port": 53, "protocol": "UDP", "nodePort": 30053}], "selector": {"app": "sublet"}}});
    let lb = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.11"}});
    let table = builtin_table("", "Service", &[&svc, &lb], now(), IncludeObject::Metadata);
    assert_eq!(
        names(&table),
        [
            "Name",
            "Type",
            "Cluster-IP",
            "External-IP",
            "Port(s)",
            "Age",
            "Selector"
        ]
    );
    assert_eq!(
        cells(&table),
        vec![
            vec![
                json!("metrics"),
                json!("ClusterIP"),
                json!("10.96.0.10"),
                json!("<none>"),
                json!("8080/TCP,53:30053/UDP"),
                json!("0s"),
                json!("app=sublet")
            ],
            vec![
                json!("lb"),
                json!("LoadBalancer"),
                json!("10.96.0.11"),
                json!("<pending>"),
                json!("<none>"),
                json!("<unknown>"),
                json!("<none>")
            ],
        ]
    );

    let cm = json!({"metadata": {"name": "cfg", "creationTimestamp": NOW}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": ""}});
    assert_eq!(
        cells(&builtin_table("", "ConfigMap", &[&cm], now(), IncludeObject::Metadata)),
        vec![vec![json!("cfg"), json!(3), json!("0s")]]
    );
    let sa = json!({"metadata": {"name": "sublet", "creationTimestamp": NOW}});
    assert_eq!(
        names(&builtin_table(
            "",
            "ServiceAccount",
            &[&sa],
            now(),
            IncludeObject::Metadata
        )),
        ["Name", "Age"]
    );
}

#[test]
fn rbac_and_crd_tables() {
    let binding = json!({"metadata": {"name": "tenants", "creationTimestamp": NOW},
        "roleRef": {"kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "team"},
                     {"kind": "ServiceAccount", "name": "ci", "namespace": "tenant-a"}, {"kind": "User", "name": "bob"}]});
    let table = builtin_table(
        "rbac.authorization.k8s.io",
        "RoleBinding",
        &[&binding],
        now(),
        IncludeObject::Metadata,
    );
    assert_eq!(
        names(&table),
        ["Name", "Role", "Age", "Users", "Groups", "ServiceAccounts"]
    );
    assert_eq!(
        cells(&table)[0],
        vec![
            json!("tenants"),
            json!("ClusterRole/edit"),
            json!("0s"),
            json!("alice, bob"),
            json!("team"),
            json!("tenant-a/ci")
        ]
    );
    let crd = json!({"metadata": {"name": "tenantpools.sublet.dev", "creationTimestamp": "2026-11-01T08:00:00Z"}});
    let table = builtin_table(
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        &[&crd],
        now(),
        IncludeObject::Metadata,
    );
    assert_eq!(names(&table), ["Name", "Created At"]);
    assert_eq!(table["columnDefinitions"][1]["type"], "date");
    assert_eq!(
        cells(&table)[0],
        vec![json!("tenantpools.sublet.dev"), json!("2026-11-01T08:00:00Z")]
    );
    let other = builtin_table(
        "storage.k8s.io",
        "StorageClass",
        &[&crd],
        now(),
        IncludeObject::Metadata,
    );
    assert_eq!(cells(&other)[0], vec![json!("tenantpools.sublet.dev"), json!("21d")]);
}

#[test]
fn crd_table_from_sublet_printer_columns() {
    let crd = crate::repo_files::sublet_crd("TenantPool");
    let columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .cloned()
        .expect("printer columns");
    let pool = json!({"metadata": {"name": "a100", "creationTimestamp": "2026-11-22T09:00:00Z"},
        "spec": {"mode": "Enforce"}, "status": {"ready": "True", "lending": "Yes",
            "totals": {"nodes": 4, "gpus": 32.0, "lentGpus": 8, "leasedGpus": 16}}});
    let table = crd_table(&columns, &[&pool], now(), IncludeObject::Metadata);
    assert_eq!(
        names(&table),
        [
            "Name",
            "Mode",
            "Ready",
            "Lending",
            "Nodes",
            "GPUs",
            "Lendable",
            "Lent",
            "Leased",
            "Reclaiming",
            "Scrubbing",
            "ScrubFailed",
            "Age"
        ]
    );
    assert_eq!(
        cells(&table)[0],
        vec![
            json!("a100"),
            json!("Enforce"),
            json!("True"),
            json!("Yes"),
            json!(4),
            json!(32),
            Value::Null,
            json!(8),
            json!(16),
            Value::Null,
            Value::Null,
            Value::Null,
            json!("3h")
        ]
    );
    assert_eq!(table["columnDefinitions"][1]["description"], "Observe or Enforce");
    // The scrub counts show with `-o wide` only.
    assert_eq!(table["columnDefinitions"][11]["priority"], 1);
    assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
}

#[test]
fn crd_cells_are_typed_by_their_column() {
    let columns = vec![
        json!({"name": "Ratio", "type": "number", "jsonPath": ".spec.ratio"}),
        json!({"name": "Ok", "type": "boolean", "jsonPath": ".spec.ok", "priority": 1}),
        json!({"name": "Text", "type": "string", "jsonPath": ".spec.count"}),
        json!({"name": "Nodes", "type": "string", "jsonPath": ".status.nodes[*].name"}),
        json!({"name": "When", "type": "date", "jsonPath": ".status.when"}),
        json!({"name": "Bad", "type": "integer", "jsonPath": ".spec.ok"}),
    ];
    let obj = json!({"metadata": {"name": "x"}, "spec": {"ratio": 2, "ok": true, "count": 3},
        "status": {"nodes": [{"name": "gpu-1"}, {"name": "gpu-2"}], "when": "not a time"}});
    let table = crd_table(&columns, &[&obj], now(), IncludeObject::None);
    assert_eq!(
        cells(&table)[0],
        vec![
            json!("x"),
            json!(2.0),
            json!(true),
            json!("3"),
            json!("gpu-1"),
            json!("<invalid>"),
            Value::Null
        ]
    );
    assert_eq!(table["columnDefinitions"][2]["priority"], 1);
    let defaulted = crd_table(&[], &[&obj], now(), IncludeObject::None);
    assert_eq!(names(&defaulted), ["Name", "Age"]);
    assert_eq!(cells(&defaulted)[0], vec![json!("x"), Value::Null]);
}

#[test]
fn events_k8s_io_events_print_like_core_ones() {
    let event = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e3"},
        "regarding": {"kind": "GpuLease", "name": "finetune", "namespace": "tenant-a"}, "reason": "Reclaiming",
        "type": "Warning", "note": "node gpu-1 returns in 120s", "reportingController": "sublet.dev/controller",
        "reportingInstance": "sublet-0", "action": "Reclaim", "eventTime": "2026-11-22T11:58:00.000000Z"});
    let table = builtin_table("events.k8s.io", "Event", &[&event], now(), IncludeObject::Metadata);
    assert_eq!(
        cells(&table)[0],
        vec![
            json!("2m"),
            json!("Warning"),
            json!("Reclaiming"),
            json!("gpulease/finetune"),
            json!(""),
            json!("sublet.dev/controller, sublet-0"),
            json!("node gpu-1 returns in 120s"),
            json!("2m"),
            json!(1),
            json!("e3")
        ]
    );
}

#[test]
fn jobs_and_daemon_sets() {
    let running = json!({"metadata": {"name": "train", "creationTimestamp": "2026-11-22T11:00:00Z"},
        "spec": {"completions": 4, "parallelism": 2, "selector": {"matchLabels": {"job-name": "train"}},
            "template": {"spec": {"containers": [{"name": "main", "image": "trainer:1"}]}}},
        "status": {"succeeded": 1, "startTime": "2026-11-22T11:00:00Z"}});
    let done = json!({"metadata": {"name": "eval", "creationTimestamp": "2026-11-22T10:00:00Z"},
        "spec": {"parallelism": 3},
        "status": {"succeeded": 1, "startTime": "2026-11-22T10:00:00Z", "completionTime": "2026-11-22T10:04:30Z",
            "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]}});
    let suspended =
        json!({"metadata": {"name": "later"}, "status": {"conditions": [{"type": "Suspended", "status": "True"}]}});
    let table = builtin_table(
        "batch",
        "Job",
        &[&running, &done, &suspended],
        now(),
        IncludeObject::Metadata,
    );
    assert_eq!(
        names(&table),
        [
            "Name",
            "Status",
            "Completions",
            "Duration",
            "Age",
            "Containers",
            "Images",
            "Selector"
        ]
    );
    let rows = cells(&table);
    assert_eq!(
        rows[0],
        vec![
            json!("train"),
            json!("Running"),
            json!("1/4"),
            json!("60m"),
            json!("60m"),
            json!("main"),
            json!("trainer:1"),
            json!("job-name=train")
        ]
    );
    assert_eq!(rows[1][1..4], [json!("Complete"), json!("1/1 of 3"), json!("4m30s")]);
    assert_eq!(rows[2][1..4], [json!("Suspended"), json!("0/1"), json!("")]);

    let ds = json!({"metadata": {"name": "dcgm-exporter", "creationTimestamp": NOW},
        "spec": {"template": {"spec": {"nodeSelector": {"nvidia.com/gpu.present": "true"}}}},
        "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
            "updatedNumberScheduled": 3, "numberAvailable": 2}});
    let table = builtin_table("apps", "DaemonSet", &[&ds], now(), IncludeObject::Metadata);
    assert_eq!(
        cells(&table)[0][..8],
        [
            json!("dcgm-exporter"),
            json!(3),
            json!(3),
            json!(2),
            json!(3),
            json!(2),
            json!("nvidia.com/gpu.present=true"),
            json!("0s")
        ]
    );
}

mod odd_input {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            prop_oneof![Just(NOW.to_owned()), "[a-zA-Z0-9:/.-]{0,12}"].prop_map(Value::from),
        ];
        let key = prop::sample::select(vec![
            "metadata",
            "spec",
            "status",
            "name",
            "creationTimestamp",
            "labels",
            "containers",
            "conditions",
            "containerStatuses",
            "initContainerStatuses",
            "state",
            "waiting",
            "terminated",
            "ports",
            "series",
            "involvedObject",
            "subjects",
            "selector",
            "matchExpressions",
            "type",
            "status",
            "reason",
        ])
        .prop_map(str::to_owned);
        leaf.prop_recursive(5, 64, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(key.clone(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Every printer answers any object with one row of as many cells as it has columns.
        #[test]
        fn printers_take_any_object(obj in any_json(), column in any_json()) {
            let kinds = [("", "Node"), ("", "Pod"), ("", "Namespace"), ("", "Event"), ("events.k8s.io", "Event"),
                ("coordination.k8s.io", "Lease"), ("policy", "PodDisruptionBudget"), ("apps", "Deployment"),
                ("apps", "ReplicaSet"), ("apps", "StatefulSet"), ("apps", "DaemonSet"), ("batch", "Job"), ("", "Service"),
                ("", "ConfigMap"), ("", "Secret"), ("rbac.authorization.k8s.io", "RoleBinding"),
                ("rbac.authorization.k8s.io", "ClusterRole"), ("apiextensions.k8s.io", "CustomResourceDefinition"),
                ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
                ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding"), ("x", "Unknown")];
            for (group, kind) in kinds {
                let table = builtin_table(group, kind, &[&obj], now(), IncludeObject::Metadata);
                let columns = table["columnDefinitions"].as_array().map(Vec::len);
                prop_assert_eq!(table["rows"][0]["cells"].as_array().map(Vec::len), columns, "{}", kind);
            }
            let columns = [column, json!({"name": "X", "type": "date", "jsonPath": ".metadata.creationTimestamp"})];
            let table = crd_table(&columns, &[&obj], now(), IncludeObject::Object);
            prop_assert_eq!(table["rows"][0]["cells"].as_array().map(Vec::len), Some(3));
        }
    }
}
