//! The real control plane under the tests: one per test binary, started on first use with
//! `scripts/control-plane up`, with a simulated kubelet for every node, and stopped when the binary exits.
//!
//! ```text
//!   SUBLET_TEST_CLUSTER=sandbox|real|both (default both, as CI) ─▶ clusters()
//!   real() ─▶ scripts/control-plane up DIR ─▶ DIR/kubeconfig ─▶ kube::Client per test
//!          ─▶ a kubelet thread: node Leases, Ready, bound pods started, graceful deletions finished
//!             (for every node but the demo's: `sublet demo --cluster` runs its own)
//!          ─▶ a reaper (sh) that runs `scripts/control-plane down DIR` once this process is gone
//!   turn() ─▶ tests on the real control plane take turns and sweep what earlier ones left
//! ```
//! Tests on the real control plane share it, so each keeps to its own names (`Env::name`) and they run one
//! at a time: internal demand is cluster-wide (a pending GPU pod of one test is demand in another's pool).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use sublet::api::{GpuLease, TenantPool};

/// The label on every namespace and node a test creates on the real control plane.
pub const OWNED: &str = "sublet.test/owned";
/// A node labelled `sublet.test/kubelet=stopped` gets no heartbeat from the simulated kubelet.
pub const KUBELET_LABEL: &str = "sublet.test/kubelet";

/// Which API server a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sandbox,
    Real,
}

/// The clusters `SUBLET_TEST_CLUSTER` asks for: `sandbox`, `real` or `both` (the default, and CI's).
pub fn clusters() -> Vec<Backend> {
    match std::env::var("SUBLET_TEST_CLUSTER").as_deref() {
        Ok("sandbox") => vec![Backend::Sandbox],
        Ok("real") => vec![Backend::Real],
        Ok("both") | Err(_) => vec![Backend::Sandbox, Backend::Real],
        Ok(other) => panic!("SUBLET_TEST_CLUSTER must be sandbox, real or both, not `{other}`"),
    }
}

pub struct RealCluster {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
}

static REAL: OnceLock<RealCluster> = OnceLock::new();

/// The binary's control plane, started on first use.
pub fn real() -> &'static RealCluster {
    REAL.get_or_init(start)
}

fn start() -> RealCluster {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let name = std::env::current_exe()
        .ok()
        .and_then(|e| e.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "tests".into());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("control-plane-{name}-{}", std::process::id()));
    let script = root.join("scripts/control-plane");
    let out = Command::new(&script)
        .arg("up")
        .arg(&dir)
        .output()
        .expect("scripts/control-plane runs");
    assert!(
        out.status.success(),
        "the real control plane did not start (scripts/control-plane up {}):\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // However this process ends, the control plane goes with it.
    let reaper = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; '{script}' down '{dir}' && rm -rf '{dir}'",
        pid = std::process::id(),
        script = script.display(),
        dir = dir.display()
    );
    let mut reaper = Command::new("setsid")
        .args(["sh", "-c", &reaper])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the reaper starts");
    // It outlives this process; the thread only keeps clippy's promise that the child is waited for.
    std::thread::spawn(move || reaper.wait());
    let kubeconfig = dir.join("kubeconfig");
    let for_kubelet = kubeconfig.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let client = client_for(&for_kubelet).await;
            let (_keep, stop) = tokio::sync::watch::channel(false);
            // Every node but `sublet demo --cluster`'s, which the demo's own kubelet runs, and those a test
            // stopped the kubelet of (`TestEnv::stop_kubelet`).
            let config = sublet::demo::kubelet::KubeletConfig {
                node_selector: format!("!{},{KUBELET_LABEL}!=stopped", sublet::demo::GROUP_LABEL),
                period: Duration::from_millis(100),
                ..Default::default()
            };
            sublet::demo::kubelet::run(client, config, stop).await;
        });
    });
    RealCluster { dir, kubeconfig }
}

/// A client for the API server of `kubeconfig`.
pub async fn client_for(kubeconfig: &Path) -> Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig readable");
    let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("kubeconfig valid");
    Client::try_from(config).expect("client")
}

/// A name unique in this test binary: `base` and a counter.
pub fn unique(base: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    format!("{base}{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// This test's turn on the real control plane (held until dropped), its client, with what earlier tests left
/// swept away and sublet's CRDs served.
pub async fn turn() -> (tokio::sync::MutexGuard<'static, ()>, Client) {
    let guard = TURN.lock().await;
    let cluster = tokio::task::spawn_blocking(real)
        .await
        .expect("the control plane starts");
    let client = client_for(&cluster.kubeconfig).await;
    sweep(&client).await;
    ensure_crds(&client).await;
    (guard, client)
}

/// Removes what earlier tests left: pools and leases (finalizers dropped: their controllers are gone), the
/// owned namespaces with their pods, the owned nodes, the leader-election Lease, and the Deployment of a chart
/// applied by an earlier test (nothing runs it here, but `helm install` would take it for a second release).
async fn sweep(client: &Client) {
    let unfinalize = json!({"metadata": {"finalizers": null}});
    let pp = PatchParams::default();
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    if crds.get_opt("tenantpools.sublet.dev").await.ok().flatten().is_some() {
        let pools: Api<TenantPool> = Api::all(client.clone());
        for p in pools.list(&ListParams::default()).await.expect("pools listed") {
            let _ = pools.patch(&p.name_any(), &pp, &Patch::Merge(&unfinalize)).await;
            let _ = pools.delete(&p.name_any(), &now).await;
        }
    }
    if crds.get_opt("gpuleases.sublet.dev").await.ok().flatten().is_some() {
        for l in Api::<GpuLease>::all(client.clone())
            .list(&ListParams::default())
            .await
            .expect("leases listed")
        {
            let api: Api<GpuLease> = Api::namespaced(client.clone(), &l.namespace().unwrap_or_default());
            let _ = api.patch(&l.name_any(), &pp, &Patch::Merge(&unfinalize)).await;
            let _ = api.delete(&l.name_any(), &now).await;
        }
    }
    let owned = ListParams::default().labels(&format!("{OWNED}=true"));
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut swept = std::collections::BTreeSet::new();
    for ns in namespaces.list(&owned).await.expect("namespaces listed") {
        swept.insert(ns.name_any());
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name_any());
        let _ = pods.delete_collection(&now, &ListParams::default()).await;
        let _ = namespaces.delete(&ns.name_any(), &DeleteParams::default()).await;
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let _ = nodes.delete_collection(&DeleteParams::default(), &owned).await;
    for ns in ["default", "sublet-system"] {
        let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
        let _ = leases.delete("sublet-leader", &DeleteParams::default()).await;
    }
    let deployments: Api<Deployment> = Api::all(client.clone());
    let charts = ListParams::default().labels("app.kubernetes.io/part-of=sublet");
    for d in deployments.list(&charts).await.expect("deployments listed") {
        let api: Api<Deployment> = Api::namespaced(client.clone(), &d.namespace().unwrap_or_default());
        let _ = api.delete(&d.name_any(), &DeleteParams::default()).await;
    }
    // Pods of the swept namespaces are internal demand until they are gone.
    let all: Api<Pod> = Api::all(client.clone());
    for _ in 0..300 {
        let left = all.list(&ListParams::default()).await.expect("pods listed");
        if !left
            .items
            .iter()
            .any(|p| swept.contains(&p.namespace().unwrap_or_default()))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("pods of earlier tests did not go");
}

/// Creates sublet's CRDs (or updates them) and waits until they are served.
pub async fn ensure_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in sublet::crd::all() {
        let name = crd.name_any();
        let apply = PatchParams::apply("sublet-tests").force();
        crds.patch(&name, &apply, &Patch::Apply(&crd))
            .await
            .expect("CRD applied");
        let mut established = false;
        for _ in 0..300 {
            let got = crds.get(&name).await.expect("CRD read");
            let conditions = got.status.and_then(|s| s.conditions).unwrap_or_default();
            if conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
            {
                established = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(established, "{name} was not established");
    }
}
