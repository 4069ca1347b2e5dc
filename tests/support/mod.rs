//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The path of a real tool the tests drive (kubectl, helm, prometheus), as installed by
/// `scripts/install-test-tools` into `.tools/bin`, or named by `SUBLET_<TOOL>` (for example `SUBLET_KUBECTL`).
///
/// A missing tool fails the test: the test command installs every tool, so a missing one is a broken setup.
pub fn tool(name: &str) -> PathBuf {
    let var = format!("SUBLET_{}", name.to_uppercase());
    if let Some(path) = std::env::var_os(&var) {
        return PathBuf::from(path);
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/install-test-tools (or set {var})",
        path.display()
    );
    path
}

/// The columns `kubectl get tenantpools` prints after NAME: the TenantPool's printer columns.
pub const POOL_COLUMNS: [&str; 10] = [
    "MODE",
    "READY",
    "LENDING",
    "NODES",
    "GPUS",
    "LENDABLE",
    "LENT",
    "LEASED",
    "RECLAIMING",
    "AGE",
];

pub mod sandbox;

pub mod chart;

pub mod cluster;

pub mod fault_proxy;

pub mod real;
