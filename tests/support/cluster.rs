//! A sandbox with sublet's CRDs, GPU nodes and namespaces, and a controller to run against it.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use sublet::api::{GpuLease, GpuLeaseStatus, TenantPool};
use sublet_sandbox::{Sandbox, SandboxConfig, SandboxHandle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Env {
    pub sandbox: SandboxHandle,
    pub client: Client,
}

pub const MODEL: &str = "NVIDIA-A100-SXM4-80GB";

/// A sandbox with the CRDs applied and namespaces `ml` (internal) and `acme` (a tenant).
pub async fn env(config: SandboxConfig) -> Env {
    // SUBLET_LOG=debug shows the controller's and the sandbox's logs with a test's output.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("SUBLET_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
    let sandbox = Sandbox::start(config).await.expect("sandbox starts");
    let client = sandbox.client().await.expect("client");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in sublet::crd::all() {
        crds.create(&PostParams::default(), &crd).await.expect("CRD created");
    }
    let ns: Api<Namespace> = Api::all(client.clone());
    for (name, tenant) in [("ml", false), ("acme", true)] {
        let labels = if tenant {
            json!({"sublet.dev/tenant": "true"})
        } else {
            json!({})
        };
        let obj = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
        ns.create(&PostParams::default(), &obj)
            .await
            .expect("namespace created");
    }
    Env { sandbox, client }
}

/// A Ready GPU node.
pub async fn gpu_node(client: &Client, name: &str, gpus: u32) {
    gpu_node_with(client, name, gpus, json!({})).await;
}

/// A Ready GPU node with `labels` besides the model and host name.
pub async fn gpu_node_with(client: &Client, name: &str, gpus: u32, labels: Value) {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut all = json!({"nvidia.com/gpu.product": MODEL, "kubernetes.io/hostname": name});
    if let (Value::Object(all), Value::Object(extra)) = (&mut all, labels) {
        all.extend(extra);
    }
    let obj = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": all},
        "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &obj).await.expect("node created");
    let status = json!({"status": {
        "capacity": {"nvidia.com/gpu": gpus.to_string(), "cpu": "96", "pods": "110"},
        "allocatable": {"nvidia.com/gpu": gpus.to_string(), "cpu": "96", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ready"}],
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("node status");
}

pub async fn create_pool(client: &Client, name: &str, spec: Value) -> TenantPool {
    let api: Api<TenantPool> = Api::all(client.clone());
    let obj = serde_json::from_value(
        json!({"apiVersion": "sublet.dev/v1alpha1", "kind": "TenantPool", "metadata": {"name": name}, "spec": spec}),
    )
    .unwrap();
    api.create(&PostParams::default(), &obj).await.expect("pool created")
}

pub async fn create_lease(client: &Client, ns: &str, name: &str, spec: Value) -> GpuLease {
    let api: Api<GpuLease> = Api::namespaced(client.clone(), ns);
    let obj = serde_json::from_value(
        json!({"apiVersion": "sublet.dev/v1alpha1", "kind": "GpuLease", "metadata": {"name": name}, "spec": spec}),
    )
    .unwrap();
    api.create(&PostParams::default(), &obj).await.expect("lease created")
}

/// A pod asking for `gpus` GPUs; on `node` and Running when given, else Pending. It meets the `restricted`
/// Pod Security level, which sublet has tenant namespaces enforce (kube-apiserver's admission checks it), and
/// what the chart's policy asks of tenant pods besides: it pulls its image and mounts no token.
pub async fn gpu_pod(client: &Client, ns: &str, name: &str, gpus: u32, node: Option<&str>, extra_spec: Value) -> Pod {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut spec = json!({
        "terminationGracePeriodSeconds": 0,
        "automountServiceAccountToken": false,
        "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "main", "image": "trainer:1", "imagePullPolicy": "Always",
            "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
            "resources": {"requests": {"nvidia.com/gpu": gpus.to_string()}, "limits": {"nvidia.com/gpu": gpus.to_string()}}}],
    });
    if let (Value::Object(s), Value::Object(extra)) = (&mut spec, extra_spec) {
        s.extend(extra);
    }
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    let obj = serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap();
    let pod = api.create(&PostParams::default(), &obj).await.expect("pod created");
    if node.is_some() {
        let status = json!({"status": {"phase": "Running"}});
        return api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("pod running");
    }
    pod
}

/// A controller running in this process until the returned sender is dropped or fired.
pub struct Running {
    pub stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

pub fn controller(client: &Client, identity: &str, leader_election: bool) -> Running {
    controller_in(client, identity, leader_election, "default")
}

/// A controller keeping its leader Lease and its scrub Jobs in `namespace`.
pub fn controller_in(client: &Client, identity: &str, leader_election: bool, namespace: &str) -> Running {
    let config = sublet::controller::Config {
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        leader_election,
        lease_namespace: namespace.into(),
        identity: identity.into(),
        lease_duration: 3,
        tick: Duration::from_millis(200),
        ledger_interval: Duration::from_secs(1),
        ..sublet::controller::Config::default()
    };
    let (tx, rx) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = rx.await;
    };
    let task = tokio::spawn(sublet::controller::run(client.clone(), config, shutdown));
    Running { stop: Some(tx), task }
}

/// Polls `check` every 50 ms until it yields a value; panics with `what` after `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Like [`eventually`], for a `check` that says what it saw when not yet satisfied; a timeout shows the last.
pub async fn eventually_seen<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let seen = match check().await {
            Ok(v) => return v,
            Err(seen) => seen,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; last seen: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The events.k8s.io events about objects of `kind`, in `ns` or (None) in every namespace.
pub async fn events_about(client: &Client, ns: Option<&str>, kind: &str) -> Vec<k8s_openapi::api::events::v1::Event> {
    let events: Api<k8s_openapi::api::events::v1::Event> = match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    events
        .list(&kube::api::ListParams::default())
        .await
        .expect("events listed")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some(kind))
        .collect()
}

pub fn label<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
}

pub fn taint_keys(node: &Node) -> Vec<String> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|t| t.iter().map(|t| t.key.clone()).collect())
        .unwrap_or_default()
}

/// A test's cluster, the sandbox or the real control plane (`super::real`), with the names the test uses.
///
/// On the sandbox every test has a server of its own and the plain names (`ml`, `acme`, `gpu-1`). On the real
/// control plane the tests share one server and take turns; each gets a prefix for its namespaces, nodes and
/// pools, and its pools select only its own nodes. The controller reaches the real server through a
/// fault-injecting proxy, so `set_faults` works on both.
pub struct TestEnv {
    pub backend: super::real::Backend,
    /// The admin client the test reads and writes with (never through faults).
    pub client: Client,
    /// The internal and the tenant namespace.
    pub ml: String,
    pub acme: String,
    prefix: String,
    pub sandbox: Option<SandboxHandle>,
    proxy: Option<super::fault_proxy::FaultProxy>,
    _turn: Option<tokio::sync::MutexGuard<'static, ()>>,
}

/// The node label a real-cluster test's pools select its nodes by.
pub const ENV_LABEL: &str = "sublet.test/env";

impl TestEnv {
    pub async fn start(backend: super::real::Backend, config: SandboxConfig) -> TestEnv {
        use super::real::{Backend, OWNED};
        eprintln!("-- on the {backend:?} cluster");
        match backend {
            Backend::Sandbox => {
                let e = env(config).await;
                TestEnv {
                    backend,
                    client: e.client,
                    ml: "ml".into(),
                    acme: "acme".into(),
                    prefix: String::new(),
                    sandbox: Some(e.sandbox),
                    proxy: None,
                    _turn: None,
                }
            }
            Backend::Real => {
                if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("SUBLET_LOG") {
                    let _ = tracing_subscriber::fmt()
                        .with_env_filter(filter)
                        .with_test_writer()
                        .try_init();
                }
                let (turn, client) = super::real::turn().await;
                let prefix = format!("{}-", super::real::unique("t"));
                let (ml, acme) = (format!("{prefix}ml"), format!("{prefix}acme"));
                let ns: Api<Namespace> = Api::all(client.clone());
                for (name, tenant) in [(&ml, false), (&acme, true)] {
                    let mut labels = json!({OWNED: "true"});
                    if tenant {
                        labels["sublet.dev/tenant"] = json!("true");
                    }
                    let obj = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
                    ns.create(&PostParams::default(), &obj)
                        .await
                        .expect("namespace created");
                }
                let proxy = super::fault_proxy::FaultProxy::start(client.clone(), Default::default()).await;
                TestEnv {
                    backend,
                    client,
                    ml,
                    acme,
                    prefix,
                    sandbox: None,
                    proxy: Some(proxy),
                    _turn: Some(turn),
                }
            }
        }
    }

    /// [`TestEnv::start`] with a sandbox that authorizes every request with RBAC (the real server always does).
    pub async fn with_rbac(backend: super::real::Backend) -> TestEnv {
        TestEnv::start(
            backend,
            SandboxConfig {
                rbac: true,
                ..Default::default()
            },
        )
        .await
    }

    /// This test's name for `base` (a node, a pool).
    pub fn name(&self, base: &str) -> String {
        format!("{}{base}", self.prefix)
    }

    /// A Ready GPU node named `name(base)`; returns its name.
    pub async fn gpu_node(&self, base: &str, gpus: u32) -> String {
        let name = self.name(base);
        let id = self.prefix.trim_end_matches('-');
        let labels = match self.backend {
            super::real::Backend::Sandbox => json!({}),
            super::real::Backend::Real => json!({ENV_LABEL: id, super::real::OWNED: "true"}),
        };
        gpu_node_with(&self.client, &name, gpus, labels).await;
        if self.backend == super::real::Backend::Real {
            // A new node carries `node.kubernetes.io/not-ready` until the node lifecycle controller sees it Ready
            // (the simulated kubelet's heartbeat); a test starts from a node that has joined.
            let nodes: Api<Node> = Api::all(self.client.clone());
            eventually_seen(30, "the node to join", || async {
                let keys = taint_keys(&nodes.get(&name).await.map_err(|e| e.to_string())?);
                match keys.iter().any(|k| k.starts_with("node.kubernetes.io/")) {
                    false => Ok(()),
                    true => Err(format!("taints {keys:?}")),
                }
            })
            .await;
        }
        name
    }

    /// `spec` with a node selector for this test's nodes (on the real control plane).
    pub fn pool_spec(&self, mut spec: Value) -> Value {
        if self.backend == super::real::Backend::Real {
            spec["nodeSelector"] = json!({"matchLabels": {ENV_LABEL: self.prefix.trim_end_matches('-')}});
        }
        spec
    }

    /// The client the controller runs with: through the fault proxy on the real control plane.
    pub fn controller_client(&self) -> Client {
        match &self.proxy {
            Some(p) => p.client(),
            None => self.client.clone(),
        }
    }

    pub fn controller(&self, identity: &str, leader_election: bool) -> Running {
        controller(&self.controller_client(), identity, leader_election)
    }

    /// A controller keeping its leader Lease and its scrub Jobs in `namespace`.
    pub fn controller_in(&self, identity: &str, leader_election: bool, namespace: &str) -> Running {
        controller_in(&self.controller_client(), identity, leader_election, namespace)
    }

    pub fn set_faults(&self, faults: sublet_sandbox::FaultConfig) {
        match (&self.sandbox, &self.proxy) {
            (Some(s), _) => s.set_faults(faults),
            (None, Some(p)) => p.faults.set(faults),
            (None, None) => unreachable!("a test env has a sandbox or a proxy"),
        }
    }

    pub fn faults_fired(&self) -> Vec<u64> {
        match (&self.sandbox, &self.proxy) {
            (Some(s), _) => s.faults_fired(),
            (None, Some(p)) => p.faults.fired(),
            (None, None) => Vec::new(),
        }
    }

    /// A tenant pod of `gpus` GPUs with the lease's node selector and tolerations (as the admission policy wants
    /// them: no spec.nodeName), Running on `node`: kube-scheduler and the simulated kubelet put it there on the
    /// real control plane; on the sandbox the test binds it and marks it Running.
    pub async fn tenant_pod(&self, name: &str, gpus: u32, lease: &sublet::api::GpuLeaseStatus, node: &str) -> Pod {
        gpu_pod(&self.client, &self.acme, name, gpus, None, lease_pod_spec(lease)).await;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.acme);
        if self.sandbox.is_some() {
            self.bind(&self.acme, name, node).await;
            let status = json!({"status": {"phase": "Running"}});
            pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .expect("pod running");
        }
        eventually_seen(30, "the tenant pod running on its leased node", || async {
            let p = pods.get(name).await.map_err(|e| e.to_string())?;
            let on = p.spec.as_ref().and_then(|s| s.node_name.clone());
            let phase = p.status.as_ref().and_then(|s| s.phase.clone());
            match (on.as_deref(), phase.as_deref()) {
                (Some(n), Some("Running")) if n == node => Ok(p),
                seen => Err(format!("{seen:?}")),
            }
        })
        .await
    }

    /// Stops `node`'s kubelet: its heartbeats end. On the real control plane the node lifecycle controller
    /// then marks it `Unknown` (node-monitor-grace-period, 50 s by default) and taints it unreachable; the
    /// sandbox runs no such controller, so the test stands in for it and sets Ready `Unknown` at once.
    pub async fn stop_kubelet(&self, node: &str) {
        self.kubelet_label(node, json!("stopped")).await;
        if self.backend == super::real::Backend::Sandbox {
            self.set_ready(node, "Unknown").await;
        }
    }

    /// Starts `node`'s kubelet again: it posts Ready (on the sandbox, the test does).
    pub async fn start_kubelet(&self, node: &str) {
        self.kubelet_label(node, Value::Null).await;
        if self.backend == super::real::Backend::Sandbox {
            self.set_ready(node, "True").await;
        }
    }

    async fn kubelet_label(&self, node: &str, value: Value) {
        let patch = json!({"metadata": {"labels": {super::real::KUBELET_LABEL: value}}});
        Api::<Node>::all(self.client.clone())
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("node labelled");
    }

    async fn set_ready(&self, node: &str, status: &str) {
        let reason = if status == "True" {
            "KubeletReady"
        } else {
            "NodeStatusUnknown"
        };
        let patch = json!({"status": {"conditions": [{"type": "Ready", "status": status,
            "reason": reason, "message": "set by the test"}]}});
        Api::<Node>::all(self.client.clone())
            .patch_status(node, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .expect("node status");
    }

    /// Sets `node`'s capacity and allocatable GPUs, as a device plugin does when GPUs fail.
    pub async fn set_gpus(&self, node: &str, gpus: u32) {
        let patch = json!({"status": {"capacity": {"nvidia.com/gpu": gpus.to_string()},
            "allocatable": {"nvidia.com/gpu": gpus.to_string()}}});
        Api::<Node>::all(self.client.clone())
            .patch_status(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("node status");
    }

    /// A tenant pod as [`TestEnv::tenant_pod`] makes it, placed by kube-scheduler on whichever node of the lease
    /// it picks (the real control plane only); the node it runs on.
    pub async fn tenant_pod_placed(&self, name: &str, gpus: u32, lease: &sublet::api::GpuLeaseStatus) -> String {
        assert_eq!(
            self.backend,
            super::real::Backend::Real,
            "the sandbox runs no scheduler"
        );
        gpu_pod(&self.client, &self.acme, name, gpus, None, lease_pod_spec(lease)).await;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.acme);
        eventually_seen(30, "the tenant pod running", || async {
            let p = pods.get(name).await.map_err(|e| e.to_string())?;
            let on = p.spec.as_ref().and_then(|s| s.node_name.clone());
            let phase = p.status.as_ref().and_then(|s| s.phase.clone());
            match (on, phase.as_deref()) {
                (Some(n), Some("Running")) => Ok(n),
                seen => Err(format!("{seen:?}")),
            }
        })
        .await
    }

    /// Binds a pod to a node through the binding subresource, as a scheduler does.
    pub async fn bind(&self, ns: &str, pod: &str, node: &str) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let binding: k8s_openapi::api::core::v1::Binding = serde_json::from_value(json!({
            "metadata": {"name": pod}, "target": {"apiVersion": "v1", "kind": "Node", "name": node}}))
        .unwrap();
        pods.create_subresource::<_, serde_json::Value>("binding", pod, &PostParams::default(), &binding)
            .await
            .expect("pod bound");
    }
}

/// What a tenant pod of `lease` carries besides the GPU pod's spec: the lease's node selector and tolerations,
/// and the GPU nodes' taint.
fn lease_pod_spec(lease: &sublet::api::GpuLeaseStatus) -> Value {
    let mut tolerations = serde_json::to_value(&lease.tolerations).unwrap();
    tolerations
        .as_array_mut()
        .unwrap()
        .push(json!({"key": "nvidia.com/gpu", "operator": "Exists"}));
    json!({"nodeSelector": lease.node_selector, "tolerations": tolerations})
}

/// The names of the nodes sublet has lent (state `lent`), sorted.
pub async fn lent(client: &Client) -> Vec<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut out: Vec<String> = nodes
        .list(&kube::api::ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|n| label(n, "sublet.dev/state") == Some("lent"))
        .map(|n| n.metadata.name.clone().unwrap_or_default())
        .collect();
    out.sort();
    out
}

/// A lease's status in the tenant namespace, once it has one.
pub async fn lease_status(env: &TestEnv, name: &str) -> Option<GpuLeaseStatus> {
    Api::<GpuLease>::namespaced(env.client.clone(), &env.acme)
        .get_opt(name)
        .await
        .ok()??
        .status
}

/// When sublet gave `node` back (no state label, the `returned-at` stamp), in whole seconds as statuses are
/// written; panics after `secs` seconds.
pub async fn returned_at_within(env: &TestEnv, node: &str, secs: u64) -> jiff::Timestamp {
    let nodes: Api<Node> = Api::all(env.client.clone());
    eventually_seen(secs, "the node given back", || async {
        let n = nodes.get(node).await.map_err(|e| e.to_string())?;
        let at = n
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("sublet.dev/returned-at"))
            .and_then(|t| t.parse::<jiff::Timestamp>().ok());
        match (label(&n, "sublet.dev/state"), at) {
            (None, Some(at)) => Ok(jiff::Timestamp::from_second(at.as_second()).unwrap()),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await
}
