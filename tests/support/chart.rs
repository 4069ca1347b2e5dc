//! The rendered chart (`deploy/sublet.yaml`) applied to a cluster, with a tenant namespace and an internal one.

use std::path::Path;

use sublet_sandbox::SandboxConfig;

use super::real::Backend;
use super::sandbox::TestCluster;

/// The chart rendered with default values, as checked in.
pub fn deploy_yaml() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/sublet.yaml")).unwrap()
}

/// A cluster with the rendered chart applied, a tenant namespace (`acme`) and an internal one (`ml`), their
/// names unique on the real control plane.
pub struct Installed {
    pub cluster: TestCluster,
    pub acme: String,
    pub ml: String,
}

/// Applies the rendered chart (server-side, taking over conflicts) to the sandbox in RBAC mode or to the real
/// control plane, and creates the two namespaces, the tenant's labelled `sublet.dev/tenant` from the start.
/// kube-apiserver loads the chart's policies a moment later: a test waits for the ones it asserts.
pub fn install(backend: Backend) -> Installed {
    let cluster = TestCluster::on(
        backend,
        SandboxConfig {
            rbac: true,
            ..Default::default()
        },
    );
    cluster.ok_stdin(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        &deploy_yaml(),
    );
    let acme = cluster.namespace_with("acme", &[("sublet.dev/tenant", "true")]);
    let ml = cluster.namespace("ml");
    Installed { cluster, acme, ml }
}
