//! The sandbox's in-process API, as simulated cluster actors (scheduler, kubelet) use it: the same semantics
//! as HTTP writes.

use std::time::Duration;

use serde_json::{Value, json};
use sublet_sandbox::{DeleteOpts, LocalApi, PatchKind, Sandbox, SandboxConfig, SandboxHandle};

fn pod(name: &str, node: Option<&str>) -> Value {
    let mut pod = json!({"metadata": {"name": name, "labels": {"app": "x"}},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "i"}]}});
    if let Some(node) = node {
        pod["spec"]["nodeName"] = json!(node);
    }
    pod
}

async fn gone(local: &LocalApi, name: &str) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while local.get("v1", "pods", Some("default"), name).is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("pod {name} is still there"));
}

async fn start(external_kubelet: bool) -> (SandboxHandle, LocalApi) {
    let handle = Sandbox::start(SandboxConfig {
        external_kubelet,
        ..Default::default()
    })
    .await
    .unwrap();
    let local = handle.local();
    (handle, local)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_pods_terminate_gracefully_unbound_ones_go_at_once() {
    let (handle, local) = start(false).await;
    local
        .create("v1", "pods", Some("default"), pod("unbound", None))
        .unwrap();
    local
        .delete("v1", "pods", Some("default"), "unbound", &DeleteOpts::default())
        .unwrap();
    assert_eq!(
        local.get("v1", "pods", Some("default"), "unbound").unwrap_err().code(),
        404
    );

    local
        .create("v1", "pods", Some("default"), pod("bound", Some("n1")))
        .unwrap();
    let terminating = local
        .delete("v1", "pods", Some("default"), "bound", &DeleteOpts::default())
        .unwrap();
    assert!(terminating["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(terminating["metadata"]["deletionGracePeriodSeconds"], 1);
    assert!(
        local.get("v1", "pods", Some("default"), "bound").is_ok(),
        "it stays for its grace period"
    );
    gone(&local, "bound").await;
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_kubelet_finishes_graceful_deletion() {
    let (handle, local) = start(true).await;
    local
        .create("v1", "pods", Some("default"), pod("p", Some("n1")))
        .unwrap();
    local
        .delete("v1", "pods", Some("default"), "p", &DeleteOpts::default())
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still = local.get("v1", "pods", Some("default"), "p").unwrap();
    assert!(
        still["metadata"]["deletionTimestamp"].is_string(),
        "the sandbox leaves removal to the kubelet"
    );
    let kubelet = local.as_manager("kubelet");
    kubelet
        .delete(
            "v1",
            "pods",
            Some("default"),
            "p",
            &DeleteOpts {
                grace_period: Some(0),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(local.get("v1", "pods", Some("default"), "p").unwrap_err().code(), 404);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminating_namespace_takes_no_new_objects() {
    let (handle, local) = start(true).await;
    local
        .create("v1", "namespaces", None, json!({"metadata": {"name": "t"}}))
        .unwrap();
    local.create("v1", "pods", Some("t"), pod("p", Some("n1"))).unwrap();
    let ns = local
        .delete("v1", "namespaces", None, "t", &DeleteOpts::default())
        .unwrap();
    assert_eq!(ns["status"]["phase"], "Terminating");
    let err = local
        .create("v1", "configmaps", Some("t"), json!({"metadata": {"name": "c"}}))
        .unwrap_err();
    assert_eq!(err.code(), 403);
    assert_eq!(
        err.to_string(),
        "configmaps \"c\" is forbidden: unable to create new content in namespace t because it is being terminated"
    );
    // The namespace waits for its pod, which an external kubelet removes.
    assert!(local.get("v1", "namespaces", None, "t").is_ok());
    local
        .delete(
            "v1",
            "pods",
            Some("t"),
            "p",
            &DeleteOpts {
                grace_period: Some(0),
                ..Default::default()
            },
        )
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        while local.get("v1", "namespaces", None, "t").is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the namespace goes once empty");
    let err = local
        .create("v1", "configmaps", Some("t"), json!({"metadata": {"name": "c"}}))
        .unwrap_err();
    assert_eq!(
        (err.code(), err.to_string().as_str()),
        (404, "namespaces \"t\" not found")
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_resource_versions_and_bindings() {
    let (handle, local) = start(false).await;
    let before = local.resource_version();
    local.create("v1", "pods", Some("default"), pod("a", None)).unwrap();
    local.create("v1", "pods", Some("default"), pod("b", None)).unwrap();
    let bound = local.bind("default", "a", "n1").unwrap();
    assert_eq!(bound["spec"]["nodeName"], "n1");
    assert!(local.resource_version() >= before + 3, "one version per write");
    let on_n1 = local
        .list("v1", "pods", Some("default"), "app=x", "spec.nodeName=n1")
        .unwrap();
    assert_eq!(on_n1.len(), 1);
    assert_eq!(on_n1[0]["metadata"]["name"], "a");
    let unbound = local.list("v1", "pods", None, "", "spec.nodeName=").unwrap();
    assert_eq!(unbound.len(), 1);
    // The node of a bound pod never changes.
    let err = local
        .patch(
            "v1",
            "pods",
            Some("default"),
            "a",
            PatchKind::Merge,
            &json!({"spec": {"nodeName": "n2"}}),
            None,
        )
        .unwrap_err();
    assert_eq!(err.code(), 422);
    // A status write changes only status and leaves generation alone; a spec write bumps it.
    let status = json!({"status": {"phase": "Running"}, "metadata": {"labels": {"ignored": "yes"}}});
    let after = local
        .patch(
            "v1",
            "pods",
            Some("default"),
            "a",
            PatchKind::Merge,
            &status,
            Some("status"),
        )
        .unwrap();
    assert_eq!(after["status"]["phase"], "Running");
    assert!(after["metadata"]["labels"].get("ignored").is_none());
    assert_eq!(after["metadata"]["generation"], 1);
    let image = json!({"spec": {"containers": [{"name": "c", "image": "i:2"}]}});
    let after = local
        .patch("v1", "pods", Some("default"), "a", PatchKind::Strategic, &image, None)
        .unwrap();
    assert_eq!(after["metadata"]["generation"], 2);
    assert_eq!(after["status"]["phase"], "Running", "a spec write keeps status");
    handle.shutdown().await;
}
