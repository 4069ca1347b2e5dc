//! The sandbox: an in-process Kubernetes API server for tests and `sublet demo`, which the real kubectl and
//! kube-rs cannot tell from a real one wherever they rely on a behaviour.
//!
//! ```text
//!   kubectl / kube-rs ──HTTP──▶ server ─▶ resources ─▶ verbs ─▶ store ─▶ watch fan-out
//!   simulated actors ──────────▶ LocalApi ─────────────┘   │
//!                                        builtin/ (pods, namespaces, CRDs, PDBs, controllers)
//!                     admission, authorization, pipeline ─▶ patch, schema, rbac, table, vap (pure modules)
//! ```
//! `Sandbox::start` binds a loopback port, starts the server and the controllers, and answers a handle with
//! the URL, a kubeconfig, an in-process API and `shutdown`.
//!
//! The public API is what sublet's tests, benches and demo use: the handle, its configuration and fault
//! rules, the in-process API, and the pure pieces the tests hold against the real kubectl (patch, rbac,
//! schema, table, vap). Everything else is crate-private, so the compiler reports what nothing uses.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

mod admission;
mod auth;
mod authorization;
mod builtin;
mod convert;
pub mod dcgm;
mod discovery;
mod error;
mod faults;
pub mod kubeconfig;
mod local;
pub mod meta;
mod openapi;
pub mod patch;
mod pipeline;
mod protobuf;
pub mod rbac;
mod registry;
#[cfg(test)]
mod repo_files;
mod resources;
mod reviews;
pub mod schema;
mod selector;
mod server;
pub mod store;
pub mod table;
pub mod vap;
mod verbs;
mod watch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch as watch_channel;

pub use error::ApiError;
pub use faults::{FaultAction, FaultConfig, FaultRule, Faults};
pub use local::LocalApi;
pub use verbs::{Caller, DeleteOpts, PatchKind};

/// How a sandbox runs.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Authorize every request with RBAC (otherwise every request is allowed).
    pub rbac: bool,
    /// Extra bearer tokens and whom they authenticate.
    pub tokens: HashMap<String, Caller>,
    pub faults: FaultConfig,
    /// Leave the removal of gracefully deleted pods to an external kubelet simulation.
    pub external_kubelet: bool,
    /// Events kept for watches that resume from a resourceVersion; older ones get 410 Gone.
    pub watch_history: usize,
    /// How often watches that allow bookmarks get one.
    pub bookmark_interval: Duration,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            rbac: false,
            tokens: HashMap::new(),
            faults: FaultConfig::default(),
            external_kubelet: false,
            watch_history: 200_000,
            bookmark_interval: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("cannot write the kubeconfig to {path}: {source}")]
    Kubeconfig { path: String, source: std::io::Error },
    #[error("cannot build a client: {0}")]
    Client(String),
}

pub struct Sandbox;

/// Binds a loopback listener, returning it with the address it got (port 0 picks a free one).
pub(crate) async fn listen(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), SandboxError> {
    let listen_error = |source| SandboxError::Listen { addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(listen_error)?;
    let address = listener.local_addr().map_err(listen_error)?;
    Ok((listener, address))
}

impl Sandbox {
    /// Starts a sandbox on the current tokio runtime.
    pub async fn start(config: SandboxConfig) -> Result<SandboxHandle, SandboxError> {
        let (listener, address) = listen(config.listen).await?;
        let settings = verbs::Settings {
            external_kubelet: config.external_kubelet,
            rbac: config.rbac,
        };
        let (cluster, kicks) = verbs::Cluster::new(settings, config.watch_history);
        let auth = auth::Auth::new(config.rbac, &cluster.ids, config.tokens.clone());
        let server = Arc::new(server::Server {
            cluster: cluster.clone(),
            auth,
            faults: faults::Faults::new(config.faults.clone()),
            address,
            bookmark_interval: config.bookmark_interval,
        });
        let (stop, stop_rx) = watch_channel::channel(false);
        let controllers = tokio::spawn(builtin::controllers::run(cluster.clone(), kicks));
        let serving = tokio::spawn(server::serve(server.clone(), listener, stop_rx));
        let handle = SandboxHandle {
            server,
            stop,
            tasks: vec![controllers, serving],
        };
        handle.seed();
        tracing::info!(url = %handle.url(), "sandbox API server listening");
        Ok(handle)
    }
}

/// A running sandbox.
pub struct SandboxHandle {
    server: Arc<server::Server>,
    stop: watch_channel::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SandboxHandle {
    /// The namespaces every cluster starts with.
    fn seed(&self) {
        let local = self.local();
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let _ = local.create("v1", "namespaces", None, json!({"metadata": {"name": ns}}));
        }
        let rbac = "rbac.authorization.k8s.io/v1";
        let discovery_urls = [
            "/api",
            "/api/*",
            "/apis",
            "/apis/*",
            "/healthz",
            "/livez",
            "/readyz",
            "/openapi",
            "/openapi/*",
            "/version",
            "/version/",
        ];
        let roles = [
            (
                "cluster-admin",
                json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
                json!([{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "system:masters"}]),
            ),
            (
                "system:discovery",
                json!([{"nonResourceURLs": discovery_urls, "verbs": ["get"]}]),
                json!([{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "system:authenticated"}]),
            ),
            (
                "system:basic-user",
                json!([
                    {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
                    {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]},
                ]),
                json!([{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "system:authenticated"}]),
            ),
            (
                "system:public-info-viewer",
                json!([{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
                json!([
                    {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "system:authenticated"},
                    {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "system:unauthenticated"},
                ]),
            ),
        ];
        // The bootstrap roles every real cluster has, so that RBAC-checked clients can discover the API.
        for (name, rules, subjects) in roles {
            let labels = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
            let role = json!({"metadata": {"name": name, "labels": labels}, "rules": rules});
            let binding = json!({"metadata": {"name": name, "labels": labels},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name}, "subjects": subjects});
            let _ = local.create(rbac, "clusterroles", None, role);
            let _ = local.create(rbac, "clusterrolebindings", None, binding);
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.server.address)
    }

    pub fn address(&self) -> SocketAddr {
        self.server.address
    }

    /// The token of `sandbox-admin` (group `system:masters`).
    pub fn admin_token(&self) -> &str {
        &self.server.auth.admin_token
    }

    pub(crate) fn kubeconfig_yaml(&self) -> String {
        kubeconfig::render(&self.url(), &self.server.auth.admin_token)
    }

    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), SandboxError> {
        std::fs::write(path, self.kubeconfig_yaml()).map_err(|source| SandboxError::Kubeconfig {
            path: path.display().to_string(),
            source,
        })
    }

    /// A kube-rs client as the admin (for tests; the controller builds its own from a kubeconfig).
    pub async fn client(&self) -> Result<kube::Client, SandboxError> {
        kube::Client::try_from(self.client_config().await?).map_err(|e| SandboxError::Client(e.to_string()))
    }

    /// The kube-rs configuration `client` uses, for tests that change it (e.g. turn off kube-rs' own retries
    /// of 429 answers).
    pub async fn client_config(&self) -> Result<kube::Config, SandboxError> {
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&self.kubeconfig_yaml())
            .map_err(|e| SandboxError::Client(e.to_string()))?;
        kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| SandboxError::Client(e.to_string()))
    }

    /// The in-process API for simulated cluster actors, writing as `manager`.
    pub fn local(&self) -> LocalApi {
        LocalApi::new(self.server.cluster.clone(), "sandbox")
    }

    /// Replaces the fault rules in force.
    pub fn set_faults(&self, config: FaultConfig) {
        self.server.faults.set(config);
    }

    /// How many times each fault rule has fired.
    pub fn faults_fired(&self) -> Vec<u64> {
        self.server.faults.fired()
    }

    /// Forgets the watch history: watches and continue tokens from before now get 410 Gone.
    pub fn compact(&self) {
        self.server.cluster.store.compact();
    }

    /// Stops serving and ends the controllers.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }
}
