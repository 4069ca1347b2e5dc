//! kube-rs against the sandbox API server: watchers and reflectors, optimistic concurrency, server-side
//! apply, eviction and pagination behave as on a real cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use serde_json::json;
use sublet_sandbox::{FaultAction, FaultConfig, FaultRule, Sandbox, SandboxConfig, SandboxHandle};

async fn start(config: SandboxConfig) -> (SandboxHandle, kube::Client) {
    let handle = Sandbox::start(config).await.expect("sandbox starts");
    let client = handle.client().await.expect("client");
    (handle, client)
}

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
}

fn api_error(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(resp) => *resp,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

/// A sandbox whose config map watches all meet `action`, at most `limit` times.
fn config_map_watch_fault(action: FaultAction, limit: Option<u64>) -> SandboxConfig {
    let faults = FaultConfig {
        seed: 1,
        rules: vec![FaultRule {
            verbs: vec!["watch".into()],
            resources: vec!["configmaps".into()],
            share: 1.0,
            limit,
            action,
        }],
    };
    SandboxConfig {
        faults,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_recovers_from_an_injected_410() {
    let (handle, client) = start(config_map_watch_fault(FaultAction::CutWatch, Some(1))).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    for i in 0..5 {
        cms.create(&PostParams::default(), &config_map(&format!("before-{i}")))
            .await
            .unwrap();
    }
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(cms.clone(), watcher::Config::default())).applied_objects();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    for i in 0..5 {
        cms.create(&PostParams::default(), &config_map(&format!("after-{i}")))
            .await
            .unwrap();
    }
    cms.delete("before-0", &DeleteParams::default()).await.unwrap();
    eventually("the reflector to hold every config map", || {
        let names: Vec<String> = reader
            .state()
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect();
        names.len() == 9 && !names.contains(&"before-0".to_string())
    })
    .await;
    assert_eq!(handle.faults_fired(), vec![1], "the first watch was cut with a 410");
    task.abort();
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_watch_delivers_every_event_late_and_in_order() {
    let lag = Duration::from_millis(400);
    let (handle, client) = start(config_map_watch_fault(FaultAction::LagWatch { ms: 400 }, None)).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let start_rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = cms.watch(&WatchParams::default(), &start_rv).await.unwrap().boxed();
    let mut written = Vec::new();
    for i in 0..3 {
        let name = format!("cm-{i}");
        let before = tokio::time::Instant::now();
        cms.create(&PostParams::default(), &config_map(&name)).await.unwrap();
        written.push((name, before));
    }
    for (name, at) in &written {
        match stream.try_next().await.unwrap() {
            Some(WatchEvent::Added(cm)) => {
                assert_eq!(cm.metadata.name.as_ref(), Some(name), "events keep their order");
                assert!(
                    at.elapsed() >= lag,
                    "{name} arrived {:?} after it was written",
                    at.elapsed()
                );
            }
            other => panic!("expected {name} ADDED, got {other:?}"),
        }
    }
    // Requests other than watches are not delayed: a read sees the objects at once.
    assert_eq!(cms.list(&ListParams::default()).await.unwrap().items.len(), 3);
    assert_eq!(handle.faults_fired(), vec![1]);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_compacted_version_gets_410_gone() {
    let (handle, client) = start(SandboxConfig::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let first = cms.create(&PostParams::default(), &config_map("a")).await.unwrap();
    let old_rv = first.metadata.resource_version.unwrap();
    cms.create(&PostParams::default(), &config_map("b")).await.unwrap();
    // Within the kept window the watch replays what happened after the version.
    let mut stream = cms.watch(&WatchParams::default(), &old_rv).await.unwrap().boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Added(cm)) => assert_eq!(cm.metadata.name.as_deref(), Some("b")),
        other => panic!("expected b ADDED, got {other:?}"),
    }
    handle.compact();
    let mut stream = cms.watch(&WatchParams::default(), &old_rv).await.unwrap().boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(status)) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
            assert!(
                status.message.starts_with("too old resource version"),
                "{}",
                status.message
            );
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_resource_version_is_a_409_conflict() {
    let (handle, client) = start(SandboxConfig::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let created = cms.create(&PostParams::default(), &config_map("cm")).await.unwrap();
    let mut first = created.clone();
    first.data = Some(BTreeMap::from([("k".into(), "first".into())]));
    let updated = cms.replace("cm", &PostParams::default(), &first).await.unwrap();
    assert_ne!(updated.metadata.resource_version, created.metadata.resource_version);
    let mut stale = created.clone();
    stale.data = Some(BTreeMap::from([("k".into(), "stale".into())]));
    let err = api_error(cms.replace("cm", &PostParams::default(), &stale).await.unwrap_err());
    assert_eq!(err.code, 409);
    assert_eq!(err.reason, "Conflict");
    assert_eq!(
        err.message,
        r#"Operation cannot be fulfilled on configmaps "cm": the object has been modified; please apply your changes to the latest version and try again"#
    );
    let err = api_error(cms.create(&PostParams::default(), &config_map("cm")).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    let err = api_error(cms.get("missing").await.unwrap_err());
    assert_eq!(
        (err.code, err.reason.as_str(), err.message.as_str()),
        (404, "NotFound", r#"configmaps "missing" not found"#)
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_with_force_takes_over_only_what_it_applies() {
    let (handle, client) = start(SandboxConfig::default()).await;
    let nodes: Api<Node> = Api::all(client);
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"zone": "a"}},
        "spec": {"taints": [{"key": "gpu", "effect": "NoSchedule"}]}});
    nodes
        .patch("n1", &PatchParams::apply("installer"), &Patch::Apply(&node))
        .await
        .unwrap();
    let mine = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"sublet.dev/state": "Lent", "zone": "b"}}});
    let err = api_error(
        nodes
            .patch("n1", &PatchParams::apply("sublet"), &Patch::Apply(&mine))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(err.message.contains(r#"conflict with "installer""#), "{}", err.message);
    let applied = nodes
        .patch("n1", &PatchParams::apply("sublet").force(), &Patch::Apply(&mine))
        .await
        .unwrap();
    let labels = applied.metadata.labels.clone().unwrap();
    assert_eq!(labels["sublet.dev/state"], "Lent");
    assert_eq!(labels["zone"], "b");
    let taints = applied.spec.unwrap().taints.unwrap();
    assert_eq!(taints.len(), 1, "the installer's taints stay");
    // Dropping a label from the applied configuration removes it, since only sublet owns it.
    let less = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"zone": "b"}}});
    let applied = nodes
        .patch("n1", &PatchParams::apply("sublet").force(), &Patch::Apply(&less))
        .await
        .unwrap();
    assert!(!applied.metadata.labels.unwrap().contains_key("sublet.dev/state"));
    let managers: Vec<String> = applied
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.contains(&"installer".into()) && managers.contains(&"sublet".into()),
        "{managers:?}"
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_honours_the_disruption_budget() {
    let handle = Sandbox::start(SandboxConfig::default()).await.unwrap();
    // kube-rs retries 429 by default; this test wants to see the answer.
    let mut config = handle.client_config().await.unwrap();
    config.default_retry = false;
    let client = kube::Client::try_from(config).unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = serde_json::from_value(json!({"metadata": {"name": "p", "labels": {"app": "x"}},
        "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 30, "containers": [{"name": "c", "image": "i"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let status = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
    pods.patch_status("p", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client, "default");
    let pdb = serde_json::from_value(
        json!({"metadata": {"name": "x"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "x"}}}}),
    )
    .unwrap();
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();

    let err = api_error(pods.evict("p", &EvictParams::default()).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (429, "TooManyRequests"));
    assert_eq!(
        err.message,
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    let causes = err.details.unwrap().causes;
    assert_eq!(causes[0].reason, "DisruptionBudget");
    assert_eq!(
        causes[0].message,
        "The disruption budget x needs 1 healthy pods and has 1 currently"
    );

    pdbs.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"minAvailable": 0}})),
    )
    .await
    .unwrap();
    pods.evict("p", &EvictParams::default()).await.unwrap();
    let evicted = pods.get("p").await.unwrap();
    assert!(
        evicted.metadata.deletion_timestamp.is_some(),
        "a bound pod terminates with its grace period"
    );
    assert_eq!(evicted.metadata.deletion_grace_period_seconds, Some(30));
    let conditions = evicted.status.unwrap().conditions.unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "DisruptionTarget" && c.reason.as_deref() == Some("EvictionByEvictionAPI"))
    );
    // An explicit zero grace period removes it at once.
    pods.delete(
        "p",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(api_error(pods.get("p").await.unwrap_err()).code, 404);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_with_limit_and_continue() {
    let (handle, client) = start(SandboxConfig::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    for i in 0..25 {
        let mut cm = config_map(&format!("cm-{i:02}"));
        cm.metadata.labels = Some(BTreeMap::from([(
            "parity".into(),
            if i % 2 == 0 { "even" } else { "odd" }.into(),
        )]));
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    let mut names = Vec::new();
    let mut params = ListParams::default().limit(10);
    let mut pages = 0;
    loop {
        let page = cms.list(&params).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 10);
        names.extend(page.items.into_iter().map(|c| c.metadata.name.unwrap()));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..25).map(|i| format!("cm-{i:02}")).collect();
    assert_eq!(names, expected);
    let odd = cms
        .list(&ListParams::default().labels("parity=odd").limit(5))
        .await
        .unwrap();
    assert_eq!(odd.items.len(), 5);
    assert!(
        odd.items
            .iter()
            .all(|c| c.metadata.labels.as_ref().unwrap()["parity"] == "odd")
    );
    let by_name = cms
        .list(&ListParams::default().fields("metadata.name=cm-07"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let err = api_error(
        cms.list(&ListParams::default().fields("spec.nothing=x"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (err.code, err.message.as_str()),
        (400, "field label not supported: spec.nothing")
    );
    handle.compact();
    let token = cms
        .list(&ListParams::default().limit(10))
        .await
        .unwrap()
        .metadata
        .continue_
        .unwrap();
    handle.compact();
    cms.create(&PostParams::default(), &config_map("late")).await.unwrap();
    handle.compact();
    let err = api_error(
        cms.list(&ListParams::default().limit(10).continue_token(&token))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (410, "Expired"));
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_writes_reach_http_watchers() {
    let (handle, client) = start(SandboxConfig::default()).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    // From the list's resourceVersion, not "0": the watch then replays both writes however late it starts.
    let rv = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = pods.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
    let local = handle.local().as_manager("scheduler");
    local
        .create(
            "v1",
            "pods",
            Some("default"),
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
        )
        .unwrap();
    local.bind("default", "p", "n1").unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match stream.try_next().await.unwrap() {
            Some(WatchEvent::Added(p)) | Some(WatchEvent::Modified(p)) => seen.push(p.spec.unwrap().node_name),
            Some(WatchEvent::Bookmark(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, vec![None, Some("n1".to_string())]);
    let err = local.bind("default", "p", "n2").unwrap_err();
    assert_eq!(err.code(), 409);
    handle.shutdown().await;
}

fn owned_config_map(name: &str, owner: &ConfigMap) -> ConfigMap {
    let mut cm = config_map(name);
    cm.metadata.owner_references = Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: owner.metadata.name.clone().unwrap(),
        uid: owner.metadata.uid.clone().unwrap(),
        block_owner_deletion: Some(true),
        ..Default::default()
    }]);
    cm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_follows_the_propagation_policy() {
    let (handle, client) = start(SandboxConfig::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let pp = PostParams::default();
    let exists = |name: &'static str| {
        let cms = cms.clone();
        async move { cms.get_opt(name).await.unwrap().is_some() }
    };

    // Background: the owner goes at once, its dependents shortly after.
    let owner = cms.create(&pp, &config_map("bg-owner")).await.unwrap();
    cms.create(&pp, &owned_config_map("bg-child", &owner)).await.unwrap();
    cms.delete("bg-owner", &DeleteParams::background()).await.unwrap();
    assert!(!exists("bg-owner").await);
    tokio::time::timeout(Duration::from_secs(20), async {
        while exists("bg-child").await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the dependent is collected");

    // Foreground: the owner waits, with the foregroundDeletion finalizer, until its dependents are gone.
    let owner = cms.create(&pp, &config_map("fg-owner")).await.unwrap();
    let mut child = owned_config_map("fg-child", &owner);
    child.metadata.finalizers = Some(vec!["test/hold".into()]);
    cms.create(&pp, &child).await.unwrap();
    cms.delete("fg-owner", &DeleteParams::foreground()).await.unwrap();
    let waiting = cms.get("fg-owner").await.unwrap();
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert_eq!(
        waiting.metadata.finalizers,
        Some(vec!["foregroundDeletion".to_string()])
    );
    tokio::time::timeout(Duration::from_secs(20), async {
        while cms.get("fg-child").await.unwrap().metadata.deletion_timestamp.is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the dependent is being deleted");
    assert!(exists("fg-owner").await, "the owner stays while a dependent remains");
    cms.patch(
        "fg-child",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        while exists("fg-owner").await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the owner goes once its dependents are gone");

    // Orphan: the dependent stays, without the owner reference.
    let owner = cms.create(&pp, &config_map("or-owner")).await.unwrap();
    cms.create(&pp, &owned_config_map("or-child", &owner)).await.unwrap();
    cms.delete("or-owner", &DeleteParams::orphan()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        while exists("or-owner").await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the owner goes");
    let orphan = cms.get("or-child").await.unwrap();
    assert!(orphan.metadata.owner_references.unwrap_or_default().is_empty());
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_endpoint_injects_429_with_retry_after() {
    let (handle, _client) = start(SandboxConfig::default()).await;
    let url = handle.url();
    let host = url.strip_prefix("http://").unwrap().to_string();
    let token = handle.admin_token().to_string();
    let request = |method: &str, path: &str, body: &str| {
        let (host, token) = (host.clone(), token.clone());
        let text = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/yaml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let mut stream = tokio::net::TcpStream::connect(&host).await.unwrap();
            stream.write_all(text.as_bytes()).await.unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            response
        }
    };
    let rules = "seed: 3\nrules:\n- verbs: [list]\n  resources: [configmaps]\n  limit: 1\n  action: {kind: tooManyRequests, retryAfterSeconds: 7}\n";
    let set = request("PUT", "/sandbox/faults", rules).await;
    assert!(set.starts_with("HTTP/1.1 200"), "{set}");
    let limited = request("GET", "/api/v1/namespaces/default/configmaps", "").await;
    assert!(limited.starts_with("HTTP/1.1 429"), "{limited}");
    assert!(limited.to_lowercase().contains("retry-after: 7"), "{limited}");
    assert!(limited.contains(r#""reason":"TooManyRequests""#), "{limited}");
    let fine = request("GET", "/api/v1/namespaces/default/configmaps", "").await;
    assert!(fine.starts_with("HTTP/1.1 200"), "{fine}");
    assert_eq!(handle.faults_fired(), vec![1]);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_list_watcher_and_crd_lifecycle() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
    let (handle, client) = start(SandboxConfig::default()).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in sublet::crd::all() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let pool = crds.get("tenantpools.sublet.dev").await.unwrap();
    let conditions = pool.status.unwrap().conditions.unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "NamesAccepted" && c.status == "True")
    );

    let gvk = GroupVersionKind::gvk("sublet.dev", "v1alpha1", "TenantPool");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "tenantpools");
    let pools: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let example: serde_json::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/tenantpool.yaml")).unwrap(),
    )
    .unwrap();
    let obj: DynamicObject = serde_json::from_value(example).unwrap();
    let created = pools.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    // Writes to the main resource ignore status; the status subresource takes only status.
    let with_status = json!({"status": {"observedGeneration": 1}, "spec": {"mode": "Enforce"}});
    let patched = pools
        .patch_status("a100", &PatchParams::default(), &Patch::Merge(&with_status))
        .await
        .unwrap();
    assert_eq!(patched.data["status"]["observedGeneration"], 1);
    assert_eq!(patched.data["spec"]["mode"], "Observe");
    assert_eq!(patched.metadata.generation, Some(1));
    let patched = pools
        .patch("a100", &PatchParams::default(), &Patch::Merge(&with_status))
        .await
        .unwrap();
    assert_eq!(patched.data["spec"]["mode"], "Enforce");
    assert_eq!(patched.metadata.generation, Some(2));

    // kube-rs' streaming list (sendInitialEvents) fills a reflector.
    let writer = reflector::store::Writer::<DynamicObject>::new(resource.clone());
    let reader = writer.as_reader();
    let config = watcher::Config::default().streaming_lists();
    let stream = reflector(writer, kube::runtime::watcher::watcher(pools.clone(), config).boxed());
    let task = tokio::spawn(stream.for_each(|_| async {}));
    eventually("the streaming list to deliver the pool", || reader.state().len() == 1).await;
    task.abort();

    // Deleting the CRD deletes its objects, then the CRD, then the resource is no longer served.
    crds.delete("tenantpools.sublet.dev", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        while crds.get_opt("tenantpools.sublet.dev").await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the CRD goes");
    // kube-apiserver stops serving a deleted CRD's resource asynchronously; the sandbox before the CRD goes.
    // Either way the resource is gone soon after.
    let err = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match pools.list(&ListParams::default()).await {
                Err(e) => return api_error(e),
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .expect("the resource stops being served");
    assert_eq!(err.code, 404);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_events_show_in_both_event_apis() {
    use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference};
    use k8s_openapi::api::events::v1::Event as NewEvent;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let (handle, client) = start(SandboxConfig::default()).await;
    let reporter = Reporter {
        controller: "sublet".into(),
        instance: Some("sublet-0".into()),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let node = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some("gpu-1".into()),
        ..Default::default()
    };
    let event = Event {
        type_: EventType::Normal,
        reason: "Lent".into(),
        note: Some("lent to tenant-a".into()),
        action: "Lend".into(),
        secondary: None,
    };
    recorder.publish(&event, &node).await.unwrap();
    // The same event again becomes a series on the one object.
    recorder.publish(&event, &node).await.unwrap();

    let new_api: Api<NewEvent> = Api::namespaced(client.clone(), "default");
    let listed = new_api
        .list(&ListParams::default().fields("regarding.name=gpu-1"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].note.as_deref(), Some("lent to tenant-a"));
    assert_eq!(listed.items[0].series.as_ref().map(|s| s.count), Some(2));

    let core_api: Api<CoreEvent> = Api::namespaced(client, "default");
    let core = core_api
        .list(&ListParams::default().fields("involvedObject.name=gpu-1,reason=Lent"))
        .await
        .unwrap();
    assert_eq!(core.items.len(), 1);
    assert_eq!(core.items[0].message.as_deref(), Some("lent to tenant-a"));
    assert_eq!(core.items[0].reporting_component.as_deref(), Some("sublet"));
    handle.shutdown().await;
}

/// One HTTP/1.1 request over a fresh connection: status code and body.
async fn raw(handle: &SandboxHandle, method: &str, path: &str, content_type: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let host = handle.url().strip_prefix("http://").unwrap().to_string();
    let text = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(&host).await.unwrap();
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_requests_get_clear_status_errors() {
    let (handle, client) = start(SandboxConfig::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    cms.create(&PostParams::default(), &config_map("cm")).await.unwrap();
    let json = "application/json";
    let cases: &[(&str, &str, &str, &str, u16, &str)] = &[
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            json,
            "{not json",
            400,
            "BadRequest",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            json,
            "[1,2]",
            400,
            "BadRequest",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods",
            json,
            r#"{"metadata":{"name":"p"},"spec":"x"}"#,
            400,
            "BadRequest",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            json,
            r#"{"metadata":{"name":"Bad_Name"}}"#,
            422,
            "Invalid",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps",
            json,
            r#"{"metadata":{}}"#,
            422,
            "Invalid",
        ),
        (
            "POST",
            "/api/v1/namespaces/other/configmaps",
            json,
            r#"{"metadata":{"name":"x","namespace":"default"}}"#,
            400,
            "BadRequest",
        ),
        (
            "POST",
            "/api/v1/namespaces/missing/configmaps",
            json,
            r#"{"metadata":{"name":"x"}}"#,
            404,
            "NotFound",
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/configmaps/cm",
            "text/plain",
            "{}",
            415,
            "UnsupportedMediaType",
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/configmaps/cm",
            "application/apply-patch+yaml",
            "data: {a: b}",
            422,
            "Invalid",
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/configmaps/cm",
            "application/json-patch+json",
            r#"{"op":"add"}"#,
            400,
            "BadRequest",
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/configmaps/cm",
            "application/merge-patch+json",
            r#"{"metadata":{"resourceVersion":"1"}}"#,
            409,
            "Conflict",
        ),
        (
            "PUT",
            "/api/v1/namespaces/default/configmaps/other",
            json,
            r#"{"metadata":{"name":"cm"}}"#,
            400,
            "BadRequest",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/configmaps?limit=abc",
            json,
            "",
            400,
            "BadRequest",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/configmaps?labelSelector=a%20in%20b",
            json,
            "",
            400,
            "BadRequest",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/configmaps?continue=garbage",
            json,
            "",
            400,
            "BadRequest",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/configmaps?resourceVersion=999999&resourceVersionMatch=NotOlderThan",
            json,
            "",
            504,
            "Timeout",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=x",
            json,
            "",
            400,
            "BadRequest",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/configmaps/cm/status",
            json,
            "",
            404,
            "NotFound",
        ),
        ("GET", "/api/v1/nodes/n1/eviction", json, "", 404, "NotFound"),
        ("GET", "/apis/nothing.example/v1/things", json, "", 404, "NotFound"),
        (
            "DELETE",
            "/api/v1/namespaces/default/configmaps/cm?propagationPolicy=Sideways",
            json,
            "",
            422,
            "Invalid",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps/cm",
            json,
            "{}",
            405,
            "MethodNotAllowed",
        ),
        (
            "PUT",
            "/sandbox/faults",
            "application/yaml",
            "rules: 3",
            400,
            "BadRequest",
        ),
    ];
    for (method, path, content_type, body, code, reason) in cases {
        let (got, answer) = raw(&handle, method, path, content_type, body).await;
        assert_eq!(got, *code, "{method} {path} {body}: {answer}");
        let status: serde_json::Value =
            serde_json::from_str(&answer).unwrap_or_else(|_| panic!("{method} {path}: {answer}"));
        assert_eq!(status["kind"], "Status", "{answer}");
        assert_eq!(status["reason"], *reason, "{method} {path}: {answer}");
        assert!(!status["message"].as_str().unwrap_or("").is_empty(), "{answer}");
    }
    // The server is still healthy.
    assert_eq!(raw(&handle, "GET", "/readyz", json, "").await.0, 200);
    handle.shutdown().await;
}
