//! The controller as the chart's ServiceAccount, with exactly the chart's RBAC.

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use sublet::api::{GpuLease, LeasePhase, TenantPool};
use sublet_sandbox::{Sandbox, SandboxConfig, SandboxHandle};

use super::deploy_yaml;
use crate::support::cluster::{TestEnv, create_lease, create_pool, eventually, gpu_node, gpu_pod, label, taint_keys};
use crate::support::real::{Backend, clusters};

/// `kubectl` with the sandbox's admin kubeconfig, off the async runtime; fails the test when kubectl fails.
pub(crate) async fn kubectl(kubeconfig: &Path, home: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = kubectl_output(kubeconfig, home, args, stdin).await;
    assert!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `kubectl` with `kubeconfig`, off the async runtime: its exit status and output.
pub(crate) async fn kubectl_output(
    kubeconfig: &Path,
    home: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> std::process::Output {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new(crate::support::tool("kubectl"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default().as_bytes()).await.unwrap();
    drop(input);
    child.wait_with_output().await.unwrap()
}

/// Applies the rendered chart with the admin kubeconfig and answers a token for the chart's ServiceAccount
/// from TokenRequest, as the kubelet would project it into the pod.
async fn apply_chart(kubeconfig: &Path, dir: &Path) -> String {
    kubectl(
        kubeconfig,
        dir,
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(&deploy_yaml()),
    )
    .await;
    let token = kubectl(
        kubeconfig,
        dir,
        &["create", "token", "sublet", "-n", "sublet-system"],
        None,
    )
    .await;
    token.trim().to_string()
}

/// A client that authenticates with the kubeconfig written to `path`, as `sublet run` would.
async fn client_from(path: std::path::PathBuf, text: &str) -> Client {
    std::fs::write(&path, text).unwrap();
    sublet::controller::client(&sublet::controller::Connect { kubeconfig: Some(path) })
        .await
        .expect("a client for the ServiceAccount")
}

/// Installs the rendered chart, then answers a client that authenticates as the chart's ServiceAccount.
pub(crate) async fn install(sandbox: &SandboxHandle, dir: &Path) -> Client {
    let kubeconfig = dir.join("admin.kubeconfig");
    sandbox.write_kubeconfig(&kubeconfig).unwrap();
    let token = apply_chart(&kubeconfig, dir).await;
    let text = sublet_sandbox::kubeconfig::render(&sandbox.url(), &token);
    client_from(dir.join("sublet.kubeconfig"), &text).await
}

/// A sandbox that authorizes every request with RBAC, and a folder for kubeconfigs.
async fn rbac_sandbox() -> (SandboxHandle, tempfile::TempDir) {
    let sandbox = Sandbox::start(SandboxConfig {
        rbac: true,
        ..Default::default()
    })
    .await
    .expect("sandbox starts");
    (sandbox, tempfile::tempdir().unwrap())
}

/// A replica as the chart runs it (leader election on the chart's Lease in the release namespace), with the
/// short tick and ledger interval of the tests.
pub(crate) fn replica_config(identity: &str) -> sublet::controller::Config {
    sublet::controller::Config {
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        leader_election: true,
        lease_namespace: "sublet-system".into(),
        lease_name: "sublet-leader".into(),
        identity: identity.into(),
        lease_duration: 3,
        tick: Duration::from_millis(200),
        ledger_interval: Duration::from_secs(1),
        ..sublet::controller::Config::default()
    }
}

fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{what}: {status:?}"),
        other => panic!("{what} was not refused: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_runs_its_life_cycle_with_exactly_the_charts_rbac() {
    for backend in clusters() {
        life_cycle_with_the_charts_rbac(backend).await;
    }
}

/// Installs the rendered chart on `env`'s API server and answers a client that authenticates as the chart's
/// ServiceAccount with a token from TokenRequest.
pub(crate) async fn install_on(env: &TestEnv, dir: &Path) -> Client {
    let Some(sandbox) = &env.sandbox else {
        let kubeconfig = crate::support::real::real().kubeconfig.clone();
        let token = apply_chart(&kubeconfig, dir).await;
        // The admin kubeconfig's server and CA, with the token as the only credential.
        let admin: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&kubeconfig).unwrap()).unwrap();
        let text = json!({"apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "real", "cluster": admin["clusters"][0]["cluster"]}],
            "users": [{"name": "sublet", "user": {"token": token}}],
            "contexts": [{"name": "real", "context": {"cluster": "real", "user": "sublet"}}],
            "current-context": "real"});
        return client_from(dir.join("sublet.kubeconfig"), &serde_yaml_ng::to_string(&text).unwrap()).await;
    };
    install(sandbox, dir).await
}

async fn life_cycle_with_the_charts_rbac(backend: Backend) {
    let env = TestEnv::with_rbac(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let sa = install_on(&env, dir.path()).await;
    let admin = env.client.clone();
    let (acme, ml) = (env.acme.as_str(), env.ml.as_str());
    let gpu_1 = env.gpu_node("gpu-1", 8).await;
    let gpu_2 = env.gpu_node("gpu-2", 8).await;
    let pool = env.name("a100");
    create_pool(
        &admin,
        &pool,
        env.pool_spec(
            json!({"mode": "Enforce", "idle": {"forSeconds": 0}, "reclaim": {"noticeSeconds": 3, "cooldownSeconds": 0},
               "pricing": {"defaultPerGpuHour": 3.6}}),
        ),
    )
    .await;

    // Two replicas as the chart runs them: leader election on the chart's Lease in the release namespace.
    let mut replicas = Vec::new();
    for identity in ["sublet-0", "sublet-1"] {
        let config = replica_config(identity);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(sublet::controller::run(sa.clone(), config, async move {
            let _ = stopped.await;
        }));
        replicas.push((stop, task));
    }

    let nodes: Api<Node> = Api::all(admin.clone());
    for n in [&gpu_1, &gpu_2] {
        eventually(30, "nodes lent", || async {
            let node = nodes.get(n).await.unwrap();
            (label(&node, "sublet.dev/state") == Some("lent")).then_some(())
        })
        .await;
    }
    let leases: Api<Lease> = Api::namespaced(admin.clone(), "sublet-system");
    let holder = leases.get("sublet-leader").await.unwrap().spec.unwrap().holder_identity;
    assert!(matches!(holder.as_deref(), Some("sublet-0" | "sublet-1")), "{holder:?}");

    // A tenant's lease binds; its pod, admitted by the policy, is placed by the scheduler (a binding).
    create_lease(&admin, acme, "job", json!({"pool": pool, "gpus": 8})).await;
    let gpuleases: Api<GpuLease> = Api::namespaced(admin.clone(), acme);
    let leased = eventually(20, "the lease bound", || async {
        let s = gpuleases.get("job").await.unwrap().status?;
        (s.phase == LeasePhase::Bound && s.nodes.len() == 1).then(|| s.nodes[0].clone())
    })
    .await;
    let status = gpuleases.get("job").await.unwrap().status.unwrap();
    let carry = json!({"nodeSelector": status.node_selector,
        "tolerations": [status.tolerations[0], {"key": "nvidia.com/gpu", "operator": "Exists"}]});
    gpu_pod(&admin, acme, "worker", 8, None, carry).await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), acme);
    match &env.sandbox {
        Some(sandbox) => {
            sandbox.local().bind(acme, "worker", &leased).expect("tenant pod binds");
            pods.patch_status(
                "worker",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Running"}})),
            )
            .await
            .unwrap();
        }
        // kube-scheduler places it by the lease's selector and toleration; the simulated kubelet starts it.
        None => {
            eventually(30, "the tenant pod running on the leased node", || async {
                let p = pods.get("worker").await.unwrap();
                let on = p.spec.and_then(|s| s.node_name);
                let running = p.status.and_then(|s| s.phase).as_deref() == Some("Running");
                (on.as_deref() == Some(leased.as_str()) && running).then_some(())
            })
            .await;
        }
    }

    // Internal demand: notice on the lease and the pod, eviction at the deadline, the node back clean.
    gpu_pod(&admin, ml, "train", 16, None, json!({})).await;
    let deadline = eventually(20, "the notice", || async {
        let s = gpuleases.get("job").await.unwrap().status?;
        (s.phase == LeasePhase::Reclaiming).then_some(s.notice_deadline?.0)
    })
    .await;
    eventually(10, "the pod annotated", || async {
        let p = pods.get("worker").await.unwrap();
        p.metadata
            .annotations
            .unwrap_or_default()
            .contains_key("sublet.dev/reclaim-deadline")
            .then_some(())
    })
    .await;
    eventually(20, "the eviction", || async {
        pods.get_opt("worker").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(Timestamp::now() >= deadline);
    eventually(20, "the node back", || async {
        let n = nodes.get(&leased).await.unwrap();
        (label(&n, "sublet.dev/state").is_none() && !taint_keys(&n).iter().any(|k| k.starts_with("sublet.dev/")))
            .then_some(())
    })
    .await;
    eventually(20, "the lease released", || async {
        (gpuleases.get("job").await.unwrap().status?.phase == LeasePhase::Released).then_some(())
    })
    .await;
    let events: Api<Event> = Api::namespaced(admin.clone(), acme);
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    for reason in ["Bound", "ReclaimNotice", "Evicted"] {
        assert!(reasons.iter().any(|r| r == reason), "no {reason} event: {reasons:?}");
    }
    let pools: Api<TenantPool> = Api::all(admin.clone());
    let pool_status = pools.get(&pool).await.unwrap().status.expect("pool status written");
    assert_eq!(pool_status.totals.nodes, 2);

    // Writes the controller does not need are refused.
    let as_sa_nodes: Api<Node> = Api::all(sa.clone());
    forbidden(
        as_sa_nodes.delete(&gpu_1, &DeleteParams::default()).await,
        "deleting a node",
    );
    let as_sa_pods: Api<Pod> = Api::namespaced(sa.clone(), ml);
    let intruder = serde_json::from_value(
        json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}),
    )
    .unwrap();
    forbidden(
        as_sa_pods.create(&PostParams::default(), &intruder).await,
        "creating a pod",
    );
    let as_sa_leases: Api<GpuLease> = Api::namespaced(sa.clone(), acme);
    forbidden(
        as_sa_leases
            .patch(
                "job",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"maxPricePerGpuHour": 100.0}})),
            )
            .await,
        "changing a tenant's lease (RBAC allows patch for the finalizer; the admission policy refuses the rest)",
    );
    let as_sa_pools: Api<TenantPool> = Api::all(sa.clone());
    forbidden(
        as_sa_pools.delete(&pool, &DeleteParams::default()).await,
        "deleting a pool",
    );
    // Scrub Jobs only in sublet's own namespace: a Job elsewhere (a pod on any node) is refused.
    let as_sa_jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(sa.clone(), ml);
    let job = serde_json::from_value(json!({"metadata": {"name": "x"}, "spec": {"template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}}))
    .unwrap();
    forbidden(
        as_sa_jobs.create(&PostParams::default(), &job).await,
        "creating a Job outside sublet's namespace",
    );
    let secrets: Api<Secret> = Api::namespaced(sa.clone(), "sublet-system");
    forbidden(secrets.list(&ListParams::default()).await, "reading secrets");
    let other_lease: Api<Lease> = Api::namespaced(sa.clone(), "sublet-system");
    forbidden(
        other_lease
            .patch(
                "someone-elses-lock",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"holderIdentity": "sublet-0"}})),
            )
            .await,
        "taking another component's Lease",
    );

    // Deleting the pool: its finalizer is the controller's to remove, and it does.
    pools.delete(&pool, &DeleteParams::default()).await.unwrap();
    eventually(20, "the pool gone", || async {
        pools.get_opt(&pool).await.unwrap().is_none().then_some(())
    })
    .await;

    for (stop, task) in replicas {
        let _ = stop.send(());
        let result = tokio::time::timeout(Duration::from_secs(10), task).await;
        assert!(
            matches!(result, Ok(Ok(Ok(())))),
            "the controller stopped cleanly: {result:?}"
        );
    }
}

/// The HTTP status of a GET, or None while nothing listens.
async fn http_status(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    http_status_as(addr, path, None).await
}

/// The HTTP status of a GET with `token` as its bearer token, or None while nothing listens.
pub(crate) async fn http_status_as(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> Option<u16> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_with_the_charts_arguments_as_its_service_account() {
    let (sandbox, dir) = rbac_sandbox().await;
    install(&sandbox, dir.path()).await;
    let admin = sandbox.client().await.unwrap();

    // The container's arguments and environment, exactly as deploy/sublet.yaml has them, but for the port.
    let objects: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&deploy_yaml())
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .collect();
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_str().unwrap();
            if a.starts_with("--metrics-addr=") {
                format!("--metrics-addr={addr}")
            } else {
                a.to_string()
            }
        })
        .collect();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sublet"));
    command
        .args(&args)
        .env_clear()
        .env("KUBECONFIG", dir.path().join("sublet.kubeconfig"))
        .kill_on_drop(true);
    for var in container["env"].as_array().unwrap() {
        let name = var["name"].as_str().unwrap();
        let value = match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.namespace") => "sublet-system".to_string(),
            Some("metadata.name") => "sublet-5d8f7-x2x9q".to_string(),
            Some(other) => panic!("the chart reads {other}, which this test does not provide"),
            None => var["value"].as_str().unwrap().to_string(),
        };
        command.env(name, value);
    }
    let mut child = command.spawn().expect("sublet runs");

    eventually(30, "the replica ready", || async {
        (http_status(addr, "/readyz").await == Some(200)).then_some(())
    })
    .await;
    assert_eq!(http_status(addr, "/livez").await, Some(200));
    let leases: Api<Lease> = Api::namespaced(admin.clone(), "sublet-system");
    eventually(30, "the leader lease held by the pod", || async {
        let lease = leases.get_opt("sublet-leader").await.unwrap()?;
        (lease.spec?.holder_identity.as_deref() == Some("sublet-5d8f7-x2x9q")).then_some(())
    })
    .await;

    // It acts as a leader: a new pool in Observe mode gets its finalizer and its status.
    gpu_node(&admin, "gpu-1", 8).await;
    create_pool(&admin, "a100", json!({"idle": {"forSeconds": 0}})).await;
    let pools: Api<TenantPool> = Api::all(admin.clone());
    eventually(30, "the pool's status", || async {
        let pool = pools.get("a100").await.unwrap();
        let status = pool.status?;
        let observing = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Lending" && c.reason == "ObserveMode");
        (observing && pool.metadata.finalizers.is_some_and(|f| !f.is_empty())).then_some(())
    })
    .await;
    // /metrics names every tenant's leases and costs: only for a caller the API server vouches for and allows
    // get on /metrics (the chart's sublet-metrics-reader), checked by the controller with its own RBAC.
    assert_eq!(http_status(addr, "/metrics").await, Some(401), "no token");
    assert_eq!(http_status_as(addr, "/metrics", Some("forged")).await, Some(401));
    let kubeconfig = dir.path().join("admin.kubeconfig");
    let token_of = |sa: &'static str| {
        let (kubeconfig, home) = (kubeconfig.clone(), dir.path().to_path_buf());
        async move {
            kubectl(
                &kubeconfig,
                &home,
                &["create", "serviceaccount", sa, "-n", "sublet-system"],
                None,
            )
            .await;
            let token = kubectl(
                &kubeconfig,
                &home,
                &["create", "token", sa, "-n", "sublet-system"],
                None,
            )
            .await;
            token.trim().to_string()
        }
    };
    let (tenant, prometheus) = (token_of("curious").await, token_of("prometheus").await);
    kubectl(
        &kubeconfig,
        dir.path(),
        &[
            "create",
            "clusterrolebinding",
            "prometheus-reads-sublet",
            "--clusterrole=sublet-metrics-reader",
            "--serviceaccount=sublet-system:prometheus",
        ],
        None,
    )
    .await;
    assert_eq!(http_status_as(addr, "/metrics", Some(&tenant)).await, Some(403));
    assert_eq!(http_status_as(addr, "/metrics", Some(&prometheus)).await, Some(200));
    assert!(child.try_wait().unwrap().is_none(), "sublet is still running");
    child.kill().await.unwrap();
    sandbox.shutdown().await;
}
