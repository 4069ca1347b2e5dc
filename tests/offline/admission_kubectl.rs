//! The real kubectl reads what `sandbox::{table, schema, rbac, vap}` produce: tables, 422 Invalid, 403
//! Forbidden. A minimal HTTP responder serves legacy discovery and fixed answers, so that only the bodies
//! built by the admission modules are under test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;

use serde_json::{Value, json};
use sublet_sandbox::rbac::{Attributes, UserInfo, forbidden_status};
use sublet_sandbox::schema::{CrdSchema, invalid_status};
use sublet_sandbox::table::{IncludeObject, builtin_table, crd_table};
use sublet_sandbox::vap::{AdmissionRequest, admit_status};

fn ago(minutes: i64) -> String {
    (jiff::Timestamp::now() - jiff::SignedDuration::from_mins(minutes)).to_string()
}

fn resource_list(group_version: &str, resources: &[(&str, &str, bool)]) -> Value {
    let resources: Vec<Value> = resources
        .iter()
        .map(|(name, kind, namespaced)| {
            json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": kind,
                   "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

fn tenant_pool_crd() -> Value {
    let crd = sublet::crd::all()
        .into_iter()
        .find(|c| c.spec.names.kind == "TenantPool")
        .expect("TenantPool CRD");
    serde_json::to_value(crd).expect("CRD serializes")
}

/// The answer to one request: status code and JSON body.
fn answer(method: &str, path: &str, accept: &str, body: &[u8]) -> (u16, Value) {
    let table = accept.contains("as=Table");
    let path = path.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/api") => (
            200,
            json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        ),
        ("GET", "/apis") => (
            200,
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": "apiextensions.k8s.io", "versions": [{"groupVersion": "apiextensions.k8s.io/v1", "version": "v1"}],
                 "preferredVersion": {"groupVersion": "apiextensions.k8s.io/v1", "version": "v1"}},
                {"name": "sublet.dev",
            "versions": [{"groupVersion": "sublet.dev/v1alpha1", "version": "v1alpha1"}],
            "preferredVersion": {"groupVersion": "sublet.dev/v1alpha1", "version": "v1alpha1"}}]}),
        ),
        ("GET", "/api/v1") => (
            200,
            resource_list(
                "v1",
                &[
                    ("nodes", "Node", false),
                    ("pods", "Pod", true),
                    ("events", "Event", true),
                ],
            ),
        ),
        ("GET", "/apis/apiextensions.k8s.io/v1") => (
            200,
            resource_list(
                "apiextensions.k8s.io/v1",
                &[("customresourcedefinitions", "CustomResourceDefinition", false)],
            ),
        ),
        ("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions") if table => {
            let crd =
                json!({"metadata": {"name": "tenantpools.sublet.dev", "creationTimestamp": "2026-11-01T08:00:00Z"}});
            let now = jiff::Timestamp::now();
            (
                200,
                builtin_table(
                    "apiextensions.k8s.io",
                    "CustomResourceDefinition",
                    &[&crd],
                    now,
                    IncludeObject::Metadata,
                ),
            )
        }
        ("GET", "/apis/sublet.dev/v1alpha1") => (
            200,
            resource_list("sublet.dev/v1alpha1", &[("tenantpools", "TenantPool", false)]),
        ),
        ("GET", "/api/v1/nodes") if table => {
            let ready = json!({"metadata": {"name": "gpu-1", "creationTimestamp": ago(5),
                    "labels": {"node-role.kubernetes.io/gpu": ""}},
                "spec": {"unschedulable": true},
                "status": {"conditions": [{"type": "Ready", "status": "True"}],
                    "addresses": [{"type": "InternalIP", "address": "10.0.0.5"}],
                    "nodeInfo": {"kubeletVersion": "v1.35.0", "osImage": "Ubuntu 24.04", "kernelVersion": "6.8.0",
                        "containerRuntimeVersion": "containerd://2.0.0"}}});
            let not_ready = json!({"metadata": {"name": "gpu-2", "creationTimestamp": ago(3 * 24 * 60 + 60)},
                "status": {"conditions": [{"type": "Ready", "status": "False"}], "nodeInfo": {"kubeletVersion": "v1.35.0"}}});
            let mut t = builtin_table(
                "",
                "Node",
                &[&ready, &not_ready],
                jiff::Timestamp::now(),
                IncludeObject::Metadata,
            );
            t["metadata"]["resourceVersion"] = json!("7");
            (200, t)
        }
        ("GET", "/api/v1/namespaces/default/pods") if table => {
            let running = json!({"metadata": {"name": "train-0", "namespace": "default", "creationTimestamp": ago(90)},
                "spec": {"nodeName": "gpu-1", "containers": [{"name": "main"}, {"name": "logger"}]},
                "status": {"phase": "Running", "podIP": "10.1.0.7", "podIPs": [{"ip": "10.1.0.7"}],
                    "containerStatuses": [
                        {"name": "logger", "ready": true, "restartCount": 0, "state": {"running": {}}},
                        {"name": "main", "ready": false, "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                         "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(2)}}}]}});
            let pending = json!({"metadata": {"name": "train-1", "namespace": "default", "creationTimestamp": ago(1)},
                "spec": {"containers": [{"name": "main"}]}, "status": {"phase": "Pending"}});
            (
                200,
                builtin_table(
                    "",
                    "Pod",
                    &[&running, &pending],
                    jiff::Timestamp::now(),
                    IncludeObject::Metadata,
                ),
            )
        }
        ("GET", "/api/v1/namespaces/default/events") if table => {
            let event = json!({"metadata": {"name": "gpu-1.1", "namespace": "default", "creationTimestamp": ago(10)},
                "involvedObject": {"kind": "Node", "name": "gpu-1"}, "reason": "Lent", "type": "Normal",
                "message": "lent to tenant-a", "source": {"component": "sublet"}, "count": 3,
                "firstTimestamp": ago(10), "lastTimestamp": ago(4)});
            (
                200,
                builtin_table("", "Event", &[&event], jiff::Timestamp::now(), IncludeObject::Metadata),
            )
        }
        ("GET", "/api/v1/namespaces/tenant-a/pods") => {
            let user = UserInfo::service_account("tenant-a", "runner");
            let attrs = Attributes {
                verb: "list".into(),
                resource: "pods".into(),
                namespace: Some("tenant-a".into()),
                ..Attributes::default()
            };
            (403, forbidden_status(&user, &attrs))
        }
        ("GET", "/apis/sublet.dev/v1alpha1/tenantpools") if table => {
            let pool = json!({"apiVersion": "sublet.dev/v1alpha1", "kind": "TenantPool",
                "metadata": {"name": "a100", "creationTimestamp": ago(3 * 60)},
                "spec": {"mode": "Enforce"}, "status": {"ready": "True", "lending": "Yes",
                    "totals": {"nodes": 4, "gpus": 32, "lendableGpus": 0, "lentGpus": 8, "leasedGpus": 16}}});
            let crd = tenant_pool_crd();
            let columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            (
                200,
                crd_table(&columns, &[&pool], jiff::Timestamp::now(), IncludeObject::Metadata),
            )
        }
        ("POST", "/apis/sublet.dev/v1alpha1/tenantpools") => {
            let crd = tenant_pool_crd();
            let schema = CrdSchema::new(&crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]).expect("schema");
            let mut obj: Value = serde_json::from_slice(body).expect("JSON body");
            schema.default_and_prune(&mut obj);
            let causes = schema.validate(&obj, None);
            assert!(!causes.is_empty(), "the test posts an invalid pool");
            (422, invalid_status("sublet.dev", "TenantPool", "a100", &causes))
        }
        ("POST", "/api/v1/namespaces/tenant-a/pods") => {
            let pod: Value = serde_json::from_slice(body).expect("JSON body");
            let policy = json!({"metadata": {"name": "no-node-name"}, "spec": {
                "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                    "operations": ["CREATE"], "resources": ["pods"]}]},
                "validations": [{"expression": "!has(object.spec.nodeName)",
                    "message": "tenant pods may not set spec.nodeName", "reason": "Forbidden"}]}});
            let binding = json!({"metadata": {"name": "no-node-name"},
                "spec": {"policyName": "no-node-name", "validationActions": ["Deny"]}});
            let req = AdmissionRequest {
                operation: "CREATE".into(),
                group: String::new(),
                version: "v1".into(),
                resource: "pods".into(),
                subresource: String::new(),
                kind: "Pod".into(),
                namespace: Some("tenant-a".into()),
                name: String::new(),
                object: Some(pod),
                old_object: None,
                user: UserInfo {
                    name: "alice".into(),
                    groups: vec![],
                },
            };
            let status = admit_status(&[policy], &[binding], &[], &req).expect_err("the test posts a pinned pod");
            (status["code"].as_u64().unwrap_or(500) as u16, status)
        }
        _ => (
            404,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("the server could not find the requested resource ({method} {path})"),
            "reason": "NotFound", "details": {}, "code": 404}),
        ),
    }
}

fn serve_one(mut stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    );
    let (mut accept, mut length) = (String::new(), 0usize);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or_default();
        match name.to_ascii_lowercase().as_str() {
            "accept" => accept = value.trim().to_owned(),
            "content-length" => length = value.trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let (code, json) = answer(&method, &path, &accept, &body);
    let text = json.to_string();
    write!(
        stream,
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )
}

/// Runs kubectl against the responder; returns (success, stdout, stderr).
fn kubectl(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = serve_one(stream);
        }
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let server = format!("http://{addr}");
    let mut cmd = Command::new(crate::support::tool("kubectl"));
    cmd.args(["--server", &server, "--cache-dir"])
        .arg(dir.path())
        .args(args)
        .env("KUBECONFIG", dir.path().join("none"))
        .env("HOME", dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl runs");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.unwrap_or_default().as_bytes()).expect("stdin");
    }
    let out = child.wait_with_output().expect("kubectl finishes");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn squeeze(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn kubectl_prints_node_tables() {
    let (ok, out, err) = kubectl(&["get", "nodes"], None);
    assert!(ok, "{err}");
    assert_eq!(
        squeeze(&out),
        [
            "NAME STATUS ROLES AGE VERSION",
            "gpu-1 Ready,SchedulingDisabled gpu 5m v1.35.0",
            "gpu-2 NotReady <none> 3d1h v1.35.0"
        ]
    );
    let (ok, out, err) = kubectl(&["get", "nodes", "-o", "wide"], None);
    assert!(ok, "{err}");
    assert_eq!(
        squeeze(&out)[..2],
        [
            "NAME STATUS ROLES AGE VERSION INTERNAL-IP EXTERNAL-IP OS-IMAGE KERNEL-VERSION CONTAINER-RUNTIME",
            "gpu-1 Ready,SchedulingDisabled gpu 5m v1.35.0 10.0.0.5 <none> Ubuntu 24.04 6.8.0 containerd://2.0.0",
        ]
    );
}

#[test]
fn kubectl_prints_pod_and_event_tables() {
    let (ok, out, err) = kubectl(&["get", "pods", "-n", "default", "-o", "wide"], None);
    assert!(ok, "{err}");
    assert_eq!(
        squeeze(&out),
        [
            "NAME READY STATUS RESTARTS AGE IP NODE NOMINATED NODE READINESS GATES",
            "train-0 1/2 CrashLoopBackOff 4 (2m ago) 90m 10.1.0.7 gpu-1 <none> <none>",
            "train-1 0/1 Pending 0 60s <none> <none> <none> <none>",
        ]
    );
    let (ok, out, err) = kubectl(&["get", "events", "-n", "default"], None);
    assert!(ok, "{err}");
    assert_eq!(
        squeeze(&out),
        [
            "LAST SEEN TYPE REASON OBJECT MESSAGE",
            "4m Normal Lent node/gpu-1 lent to tenant-a"
        ]
    );
}

#[test]
fn kubectl_prints_custom_resource_tables() {
    let (ok, out, err) = kubectl(&["get", "tenantpools"], None);
    assert!(ok, "{err}");
    assert_eq!(
        squeeze(&out),
        [
            "NAME MODE READY LENDING NODES GPUS LENDABLE LENT LEASED RECLAIMING AGE",
            "a100 Enforce True Yes 4 32 0 8 16 3h"
        ]
    );
}

#[test]
fn kubectl_prints_crds_with_their_creation_time() {
    let (ok, out, err) = kubectl(&["get", "customresourcedefinitions"], None);
    assert!(ok, "{err}");
    assert_eq!(
        squeeze(&out),
        ["NAME CREATED AT", "tenantpools.sublet.dev 2026-11-01T08:00:00Z"]
    );
}

#[test]
fn kubectl_shows_invalid_forbidden_and_policy_denials() {
    let pool = r#"{"apiVersion": "sublet.dev/v1alpha1", "kind": "TenantPool", "metadata": {"name": "a100"},
        "spec": {"maxLentPercent": 150}}"#;
    let (ok, _, err) = kubectl(&["create", "--validate=false", "-f", "-"], Some(pool));
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "The TenantPool \"a100\" is invalid: spec.maxLentPercent: Invalid value: \"integer\": maxLentPercent must be between 0 and 100"
    );

    let (ok, _, err) = kubectl(&["get", "pods", "-n", "tenant-a"], None);
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "Error from server (Forbidden): pods is forbidden: User \"system:serviceaccount:tenant-a:runner\" cannot list \
         resource \"pods\" in API group \"\" in the namespace \"tenant-a\""
    );

    let pod = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pinned", "namespace": "tenant-a"},
        "spec": {"nodeName": "gpu-1", "containers": [{"name": "main", "image": "busybox"}]}}"#;
    let (ok, _, err) = kubectl(&["create", "--validate=false", "-f", "-"], Some(pod));
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "Error from server (Forbidden): error when creating \"STDIN\": pods \"pinned\" is forbidden: \
         ValidatingAdmissionPolicy 'no-node-name' with binding 'no-node-name' denied request: tenant pods may not set \
         spec.nodeName"
    );
}
