//! The generated CRDs: checked in under `crds/`, structural, and their CEL rules reject what they should.

use serde_json::{Value, json};
use sublet::api::{GpuLease, TenantPool};

fn pool(spec: Value) -> TenantPool {
    serde_json::from_value(json!({
        "apiVersion": "sublet.dev/v1alpha1",
        "kind": "TenantPool",
        "metadata": {"name": "a100"},
        "spec": spec,
    }))
    .expect("test pool deserializes")
}

fn lease(spec: Value) -> GpuLease {
    serde_json::from_value(json!({
        "apiVersion": "sublet.dev/v1alpha1",
        "kind": "GpuLease",
        "metadata": {"name": "train", "namespace": "tenant-a"},
        "spec": spec,
    }))
    .expect("test lease deserializes")
}

/// The messages of every rule the object breaks.
fn pool_errors(spec: Value) -> Vec<String> {
    match pool(spec).validate_cel() {
        Ok(()) => vec![],
        Err(errs) => errs.iter().map(|e| e.message.clone()).collect(),
    }
}

fn assert_rejects(errors: Vec<String>, needle: &str) {
    assert!(
        errors.iter().any(|m| m.contains(needle)),
        "expected an error containing {needle:?}, got {errors:?}"
    );
}

#[test]
fn checked_in_crds_match_the_generated_ones() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let mut expected_files = Vec::new();
    for crd in sublet::crd::all() {
        let name = sublet::crd::file_name(&crd);
        let on_disk = std::fs::read_to_string(dir.join(&name))
            .unwrap_or_else(|e| panic!("crds/{name} is missing ({e}); run `sublet crd --output-dir crds`"));
        assert_eq!(
            on_disk,
            sublet::crd::to_yaml(&crd),
            "crds/{name} is stale; run `sublet crd --output-dir crds`"
        );
        expected_files.push(name);
    }
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    expected_files.sort();
    assert_eq!(
        present, expected_files,
        "crds/ holds files that `sublet crd` does not generate"
    );
}

/// The apiserver's structural-schema rules that a derive can break: every node has a type (or says it
/// preserves unknown fields), no `$ref`, no `additionalProperties` beside `properties`, and
/// `x-kubernetes-list-map-keys` only on map lists whose keys are required scalar properties.
fn assert_structural(schema: &Value, path: &str) {
    let obj = schema
        .as_object()
        .unwrap_or_else(|| panic!("{path}: schema is not an object"));
    assert!(!obj.contains_key("$ref"), "{path}: $ref is not allowed");
    let preserves = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true))
        || obj.get("x-kubernetes-int-or-string") == Some(&json!(true));
    assert!(obj.contains_key("type") || preserves, "{path}: no type");
    assert!(
        !(obj.contains_key("properties") && obj.contains_key("additionalProperties")),
        "{path}: properties and additionalProperties together"
    );
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(items)) = obj.get(key) {
            for item in items {
                assert!(item.get("type").is_none(), "{path}: {key} may not set types");
            }
        }
    }
    if obj.get("x-kubernetes-list-type") == Some(&json!("map")) {
        let keys = obj["x-kubernetes-list-map-keys"].as_array().expect("map list has keys");
        let item = &obj["items"];
        let required: Vec<&Value> = item["required"]
            .as_array()
            .map(|r| r.iter().collect())
            .unwrap_or_default();
        for k in keys {
            assert!(required.contains(&k), "{path}: list map key {k} must be required");
        }
    }
    if let Some(Value::Object(props)) = obj.get("properties") {
        for (name, sub) in props {
            assert_structural(sub, &format!("{path}.{name}"));
        }
    }
    if let Some(items) = obj.get("items") {
        assert_structural(items, &format!("{path}[]"));
    }
    if let Some(add @ Value::Object(_)) = obj.get("additionalProperties") {
        assert_structural(add, &format!("{path}{{}}"));
    }
}

#[test]
fn crds_are_structural_v1_with_status_and_names() {
    for crd in sublet::crd::all() {
        let name = crd.metadata.name.clone().unwrap();
        assert_eq!(crd.spec.group, "sublet.dev");
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["sublet".to_string()][..]),
            "{name}"
        );
        assert_eq!(crd.spec.versions.len(), 1);
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v.served && v.storage);
        assert!(
            v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(),
            "{name} has a status subresource"
        );
        let schema = serde_json::to_value(v.schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap()).unwrap();
        assert_structural(&schema, &name);
        let compiled = kube::core::cel::compile_schema(&schema);
        assert!(
            !compiled.has_errors(),
            "{name}: CEL rules compile: {:?}",
            compiled.compilation_errors()
        );
    }
}

#[test]
fn printer_columns_answer_the_daily_questions() {
    let columns =
        |crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition| {
            crd.spec.versions[0]
                .additional_printer_columns
                .as_ref()
                .unwrap()
                .iter()
                .filter(|c| c.priority.unwrap_or(0) == 0)
                .map(|c| c.name.to_uppercase())
                .collect::<Vec<_>>()
        };
    let crds = sublet::crd::all();
    // `-o wide` adds the scrub counts.
    let wide: Vec<String> = crds[0].spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .filter(|c| c.priority == Some(1))
        .map(|c| c.name.to_uppercase())
        .collect();
    assert_eq!(wide, ["SCRUBBING", "SCRUBFAILED"]);
    assert_eq!(columns(&crds[0]), crate::support::POOL_COLUMNS);
    assert_eq!(
        columns(&crds[1]),
        [
            "POOL", "GPUS", "MODEL", "PHASE", "NODES", "DEADLINE", "COST", "REASON", "AGE"
        ]
    );
    assert_eq!(crds[0].spec.names.short_names.as_deref(), Some(&["tp".to_string()][..]));
    assert_eq!(crds[1].spec.names.short_names.as_deref(), Some(&["gl".to_string()][..]));
    assert_eq!(crds[0].spec.scope, "Cluster");
    assert_eq!(crds[1].spec.scope, "Namespaced");
}

#[test]
fn conditions_are_a_map_list_keyed_by_type() {
    let yaml = sublet::crd::all_yaml();
    let docs: Vec<Value> = yaml
        .split("\n---\n")
        .map(|d| serde_yaml_ng::from_str::<Value>(d).unwrap())
        .collect();
    for doc in docs {
        let conditions = &doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
            ["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
    }
}

#[test]
fn defaults_fill_an_empty_pool() {
    let p = pool(json!({}));
    assert_eq!(p.spec.gpu_resource_name, "nvidia.com/gpu");
    assert_eq!(p.spec.gpu_model_label, "nvidia.com/gpu.product");
    assert_eq!(p.spec.idle.max_utilization_percent, 5);
    assert_eq!(p.spec.idle.for_seconds, 900);
    assert_eq!(p.spec.reclaim.notice_seconds, 120);
    assert_eq!(p.spec.max_lent_percent, 100);
    assert_eq!(p.spec.mode, sublet::api::Mode::Observe);
    assert!(p.spec.demand.pending_pods.enabled);
    assert_eq!(pool_errors(json!({})), Vec::<String>::new());
}

/// A pool that sets every field, validly.
fn full_valid_pool() -> Value {
    json!({
        "nodeSelector": {"matchLabels": {"gpu": "a100"}},
        "gpuModels": ["NVIDIA-A100-SXM4-80GB"],
        "idle": {"maxUtilizationPercent": 10, "forSeconds": 600},
        "reserve": {"gpus": 8, "percent": 10, "learned": {"enabled": true, "quantile": 0.9, "historyDays": 28}},
        "reclaim": {"noticeSeconds": 300, "maxConcurrent": 4, "minLeaseSeconds": 3600, "cooldownSeconds": 600},
        "maxLentPercent": 60,
        "windows": [{"days": ["Saturday", "Sunday"], "start": "00:00", "end": "24:00"},
                    {"days": ["Monday"], "start": "20:00", "end": "23:30"}],
        "timeZone": "Europe/Berlin",
        "pricing": {"perGpuHour": {"NVIDIA-A100-SXM4-80GB": 2.5}, "defaultPerGpuHour": 1.5, "floorPerGpuHour": 1.0},
        "demand": {"pendingPods": {"enabled": true}, "kueue": {"clusterQueues": ["research"]},
                   "promql": {"query": "sum(queue_pending_gpus)"}},
        "utilization": {"prometheusUrl": "http://prometheus:9090", "staleSeconds": 60},
        "mode": "Enforce"
    })
}

#[test]
fn a_full_valid_pool_passes_every_rule() {
    assert_eq!(pool_errors(full_valid_pool()), Vec::<String>::new());
}

/// Pools every one of which breaks a rule, with the rule's message.
fn pool_rejections() -> Vec<(Value, &'static str)> {
    vec![
        (
            json!({"idle": {"maxUtilizationPercent": 101}}),
            "maxUtilizationPercent must be between 0 and 100",
        ),
        (
            json!({"idle": {"maxUtilizationPercent": -1}}),
            "maxUtilizationPercent must be between 0 and 100",
        ),
        (
            json!({"idle": {"forSeconds": -5}}),
            "forSeconds must be between 0 and 604800",
        ),
        (
            json!({"reserve": {"percent": 150}}),
            "reserve.percent must be between 0 and 100",
        ),
        (json!({"reserve": {"gpus": -2}}), "reserve.gpus must not be negative"),
        (
            json!({"reserve": {"learned": {"quantile": 0.0}}}),
            "quantile must be greater than 0 and at most 1",
        ),
        (
            json!({"reserve": {"learned": {"quantile": 1.5}}}),
            "quantile must be greater than 0 and at most 1",
        ),
        (
            json!({"reserve": {"learned": {"historyDays": 0}}}),
            "historyDays must be between 1 and 90",
        ),
        (
            json!({"reclaim": {"noticeSeconds": -1}}),
            "noticeSeconds must be between 0 and 86400",
        ),
        (
            json!({"reclaim": {"maxConcurrent": 0}}),
            "maxConcurrent must be at least 1",
        ),
        (
            json!({"reclaim": {"minLeaseSeconds": -1}}),
            "minLeaseSeconds must not be negative",
        ),
        (
            json!({"reclaim": {"cooldownSeconds": -1}}),
            "cooldownSeconds must not be negative",
        ),
        (
            json!({"reclaim": {"maxGraceSeconds": 86400}}),
            "maxGraceSeconds must be between 0 and 600",
        ),
        (
            json!({"reclaim": {"maxGraceSeconds": -1}}),
            "maxGraceSeconds must be between 0 and 600",
        ),
        (
            json!({"maxLentPercent": 120}),
            "maxLentPercent must be between 0 and 100",
        ),
        (
            json!({"windows": [{"start": "18:00", "end": "08:00"}]}),
            "a window's end must be after its start",
        ),
        (
            json!({"windows": [{"start": "10:00", "end": "10:00"}]}),
            "a window's end must be after its start",
        ),
        (
            json!({"windows": [{"start": "9:00", "end": "17:00"}]}),
            "start must be a time of day as HH:MM",
        ),
        (
            json!({"windows": [{"start": "09:00", "end": "24:30"}]}),
            "end must be a time of day as HH:MM",
        ),
        (json!({"timeZone": ""}), "timeZone must not be empty"),
        (json!({"gpuResourceName": ""}), "gpuResourceName must not be empty"),
        (json!({"gpuModelLabel": ""}), "gpuModelLabel must not be empty"),
        (
            json!({"pricing": {"perGpuHour": {"A100": -1.0}}}),
            "prices must not be negative",
        ),
        (
            json!({"pricing": {"defaultPerGpuHour": -0.5}}),
            "defaultPerGpuHour must not be negative",
        ),
        (
            json!({"pricing": {"floorPerGpuHour": -0.5}}),
            "floorPerGpuHour must not be negative",
        ),
        (
            json!({"demand": {"kueue": {"clusterQueues": []}}}),
            "kueue.clusterQueues must name at least one ClusterQueue",
        ),
        (
            json!({"demand": {"promql": {"query": ""}}}),
            "promql.query must not be empty",
        ),
        (
            json!({"demand": {"promql": {"query": "q", "prometheusUrl": "prom:9090"}}}),
            "prometheusUrl must be an http",
        ),
        (
            json!({"utilization": {"prometheusUrl": "ftp://x"}}),
            "prometheusUrl must be an http",
        ),
        (
            json!({"utilization": {"prometheusUrl": "http://p", "staleSeconds": 0}}),
            "staleSeconds must be at least 1",
        ),
    ]
}

#[test]
fn pool_rules_reject_nonsense_with_clear_messages() {
    for (spec, message) in pool_rejections() {
        let errors = pool_errors(spec.clone());
        assert_rejects(errors, message);
    }
}

/// Pools at the edges of what the rules allow.
fn pool_boundaries() -> Vec<Value> {
    vec![
        json!({"idle": {"maxUtilizationPercent": 0, "forSeconds": 0}}),
        json!({"idle": {"maxUtilizationPercent": 100, "forSeconds": 604800}}),
        json!({"reserve": {"percent": 100, "learned": {"quantile": 1.0, "historyDays": 90}}}),
        json!({"reclaim": {"noticeSeconds": 0, "maxConcurrent": 1}}),
        json!({"maxLentPercent": 0}),
        json!({"windows": [{"start": "00:00", "end": "00:01"}, {"start": "23:59", "end": "24:00"}]}),
    ]
}

#[test]
fn pool_boundaries_are_accepted() {
    for spec in pool_boundaries() {
        assert_eq!(pool_errors(spec.clone()), Vec::<String>::new(), "{spec}");
    }
}

#[test]
fn unknown_enum_values_do_not_deserialize() {
    let bad = serde_json::from_value::<TenantPool>(json!({
        "apiVersion": "sublet.dev/v1alpha1", "kind": "TenantPool", "metadata": {"name": "x"},
        "spec": {"mode": "Lend"}
    }));
    assert!(bad.is_err());
    let schema = serde_json::to_value(sublet::crd::all()[0].spec.versions[0].schema.clone()).unwrap();
    assert_eq!(
        schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["mode"]["enum"],
        json!(["Observe", "Enforce"])
    );
}

/// A lease that sets every field, validly.
fn full_valid_lease() -> Value {
    json!({"pool": "a100", "gpus": 8, "gpuModel": "A100", "durationSeconds": 3600, "maxPricePerGpuHour": 2.0})
}

/// Leases every one of which breaks a rule on create, with the rule's message.
fn lease_rejections() -> Vec<(Value, &'static str)> {
    vec![
        (json!({"pool": "a100", "gpus": 0}), "gpus must be between 1 and 100000"),
        (json!({"pool": "a100", "gpus": -8}), "gpus must be between 1 and 100000"),
        (json!({"pool": "", "gpus": 8}), "pool must not be empty"),
        (
            json!({"pool": "a100", "gpus": 8, "durationSeconds": 10}),
            "durationSeconds must be at least 60",
        ),
        (
            json!({"pool": "a100", "gpus": 8, "maxPricePerGpuHour": -1.0}),
            "maxPricePerGpuHour must not be negative",
        ),
    ]
}

#[test]
fn lease_rules_on_create() {
    assert!(lease(full_valid_lease()).validate_cel().is_ok());
    for (spec, message) in lease_rejections() {
        let errors = lease(spec)
            .validate_cel()
            .map(|_| vec![])
            .unwrap_or_else(|e| e.iter().map(|e| e.message.clone()).collect());
        assert_rejects(errors, message);
    }
}

/// A lease, an allowed change of it, and changes that break a rule with the rule's message.
fn lease_changes() -> (Value, Value, Vec<(Value, &'static str)>) {
    let old = json!({"pool": "a100", "gpus": 8, "gpuModel": "A100"});
    let allowed = json!({"pool": "a100", "gpus": 8, "gpuModel": "A100", "durationSeconds": 600});
    let refused = vec![
        (
            json!({"pool": "h100", "gpus": 8, "gpuModel": "A100"}),
            "pool is immutable",
        ),
        (
            json!({"pool": "a100", "gpus": 16, "gpuModel": "A100"}),
            "gpus is immutable",
        ),
        (
            json!({"pool": "a100", "gpus": 8, "gpuModel": "H100"}),
            "gpuModel is immutable",
        ),
        (json!({"pool": "a100", "gpus": 8}), "gpuModel is immutable"),
    ];
    (old, allowed, refused)
}

#[test]
fn lease_pool_gpus_and_model_are_immutable() {
    let (old, allowed, refused) = lease_changes();
    let old = lease(old);
    assert!(
        lease(allowed).validate_cel_update(&old).is_ok(),
        "changing durationSeconds is allowed"
    );
    for (spec, message) in refused {
        let errors = lease(spec)
            .validate_cel_update(&old)
            .map(|_| vec![])
            .unwrap_or_else(|e| e.iter().map(|e| e.message.clone()).collect());
        assert_rejects(errors, message);
    }
}

#[test]
fn examples_parse_and_pass_validation() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/ exists") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = <Value as serde::Deserialize>::deserialize(doc).unwrap();
            match value["kind"].as_str() {
                Some("TenantPool") => {
                    let p: TenantPool =
                        serde_json::from_value(value).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    p.validate_cel().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    seen += 1;
                }
                Some("GpuLease") => {
                    let l: GpuLease =
                        serde_json::from_value(value).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    l.validate_cel().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    seen += 1;
                }
                _ => {}
            }
        }
    }
    assert!(seen >= 2, "examples/ holds at least a pool and a lease");
}

/// The real kubectl against an API server serving sublet's CRDs: the sandbox (a server of its own) or the
/// real control plane (this test's turn on it).
struct Server {
    kubeconfig: std::path::PathBuf,
    home: tempfile::TempDir,
    namespace: String,
    _sandbox: Option<crate::support::sandbox::TestCluster>,
    _turn: Option<tokio::sync::MutexGuard<'static, ()>>,
}

impl Server {
    fn start(backend: crate::support::real::Backend) -> Server {
        use crate::support::real::{Backend, OWNED};
        let home = tempfile::tempdir().unwrap();
        let (kubeconfig, sandbox, turn, namespace) = match backend {
            Backend::Sandbox => {
                let cluster = crate::support::sandbox::TestCluster::start();
                (cluster.kubeconfig.clone(), Some(cluster), None, "tenant-a".to_string())
            }
            Backend::Real => {
                let runtime = tokio::runtime::Runtime::new().unwrap();
                let (turn, _client) = runtime.block_on(crate::support::real::turn());
                let ns = format!("{}-tenant", crate::support::real::unique("crd"));
                let server = crate::support::real::real();
                let s = Server {
                    kubeconfig: server.kubeconfig.clone(),
                    home,
                    namespace: ns.clone(),
                    _sandbox: None,
                    _turn: Some(turn),
                };
                let out = s.kubectl(&["create", "namespace", &ns], "");
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                s.kubectl(&["label", "namespace", &ns, &format!("{OWNED}=true")], "");
                return s;
            }
        };
        let s = Server {
            kubeconfig,
            home,
            namespace,
            _sandbox: sandbox,
            _turn: turn,
        };
        let crds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
        let out = s.kubectl(&["apply", "--server-side", "-f", crds.to_str().unwrap()], "");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        s.kubectl(&["create", "namespace", &s.namespace], "");
        s
    }

    fn kubectl(&self, args: &[&str], stdin: &str) -> std::process::Output {
        use std::io::Write as _;
        let mut child = std::process::Command::new(crate::support::tool("kubectl"))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.home.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// `kubectl VERB -f -` with `obj`: whether the server took it, and what kubectl printed on stderr.
    fn send(&self, verb: &[&str], obj: &Value) -> (bool, String) {
        let mut args = verb.to_vec();
        args.extend(["-f", "-"]);
        let out = self.kubectl(&args, &obj.to_string());
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    fn pool(&self, spec: Value) -> Value {
        json!({"apiVersion": "sublet.dev/v1alpha1", "kind": "TenantPool",
            "metadata": {"name": format!("{}-pool", self.namespace)}, "spec": spec})
    }

    fn lease(&self, spec: Value) -> Value {
        json!({"apiVersion": "sublet.dev/v1alpha1", "kind": "GpuLease",
            "metadata": {"name": "train", "namespace": self.namespace}, "spec": spec})
    }
}

/// Every rule's valid and invalid cases above, through the real kubectl, judged by the API server itself:
/// the sandbox and the real kube-apiserver (`SUBLET_TEST_CLUSTER`) refuse with the rule's message.
#[test]
fn cel_rules_through_kubectl_on_the_api_server() {
    let dry = ["create", "--dry-run=server"];
    for backend in crate::support::real::clusters() {
        eprintln!("-- on the {backend:?} cluster");
        let server = Server::start(backend);
        let mut valid = vec![json!({}), full_valid_pool()];
        valid.extend(pool_boundaries());
        for spec in valid {
            let (ok, err) = server.send(&dry, &server.pool(spec.clone()));
            assert!(ok, "{backend:?} refused a valid pool {spec}: {err}");
        }
        for (spec, message) in pool_rejections() {
            let (ok, err) = server.send(&dry, &server.pool(spec.clone()));
            assert!(
                !ok && err.contains(message),
                "{backend:?}: {spec} should be refused with {message:?}, got {err}"
            );
        }
        let (ok, err) = server.send(&dry, &server.lease(full_valid_lease()));
        assert!(ok, "{backend:?} refused a valid lease: {err}");
        for (spec, message) in lease_rejections() {
            let (ok, err) = server.send(&dry, &server.lease(spec.clone()));
            assert!(
                !ok && err.contains(message),
                "{backend:?}: {spec} should be refused with {message:?}, got {err}"
            );
        }
        let (old, allowed, refused) = lease_changes();
        let (ok, err) = server.send(&["create"], &server.lease(old));
        assert!(ok, "{backend:?}: {err}");
        let replace = ["replace", "--dry-run=server"];
        let (ok, err) = server.send(&replace, &server.lease(allowed));
        assert!(ok, "{backend:?} refused an allowed change: {err}");
        for (spec, message) in refused {
            let (ok, err) = server.send(&replace, &server.lease(spec.clone()));
            assert!(
                !ok && err.contains(message),
                "{backend:?}: {spec} should be refused with {message:?}, got {err}"
            );
        }
    }
}
