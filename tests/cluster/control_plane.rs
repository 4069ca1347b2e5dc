//! `scripts/control-plane`: a component that fails to start makes `up` fail with its last log lines, and
//! nothing is left running. (Starting and stopping for real is what every test on the real control plane does.)

use std::path::Path;
use std::process::Command;

#[test]
fn up_fails_with_the_failing_components_log_and_leaves_nothing_running() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = tempfile::tempdir().unwrap();
    for name in ["etcd", "kube-controller-manager", "kube-scheduler"] {
        std::os::unix::fs::symlink(crate::support::tool(name), bin.path().join(name)).unwrap();
    }
    let apiserver = bin.path().join("kube-apiserver");
    std::fs::write(
        &apiserver,
        "#!/bin/sh\necho 'Error: unknown flag: --sublet-test-broken' >&2\nexit 1\n",
    )
    .unwrap();
    let mut mode = std::fs::metadata(&apiserver).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o755);
    std::fs::set_permissions(&apiserver, mode).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(root.join("scripts/control-plane"))
        .arg("up")
        .arg(dir.path())
        .env("SUBLET_K8S_BIN", bin.path())
        .output()
        .expect("the script runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "up succeeded with a broken kube-apiserver");
    assert!(
        stderr.contains("kube-apiserver exited") && stderr.contains("unknown flag: --sublet-test-broken"),
        "{stderr}"
    );
    // etcd had started; up stopped it again.
    let pids: Vec<_> = std::fs::read_dir(dir.path().join("run")).unwrap().collect();
    assert!(pids.is_empty(), "pid files left: {pids:?}");
    assert!(dir.path().join("pki/ca.crt").is_file() && dir.path().join("kubeconfig").is_file());
}
