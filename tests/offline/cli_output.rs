//! What the `sublet` binary writes for a person or a log file: no colour codes when stderr is not a
//! terminal, and each error said once.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn sublet() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sublet"));
    // Colour must follow the terminal, not depend on the environment the tests run in.
    cmd.env_remove("NO_COLOR")
        .env_remove("SUBLET_LOG")
        .env_remove("KUBECONFIG");
    cmd
}

fn stderr_of(args: &[&str], dir: &Path) -> String {
    let out = sublet().args(args).current_dir(dir).output().expect("sublet runs");
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn a_missing_kubeconfig_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let err = stderr_of(&["run", "--kubeconfig", "/nonexistent/kubeconfig"], dir.path());
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert_eq!(err.matches("/nonexistent/kubeconfig").count(), 1, "{err}");
    assert!(
        err.starts_with("error: cannot read kubeconfig /nonexistent/kubeconfig"),
        "{err}"
    );
}

#[test]
fn a_malformed_pool_file_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pool.yaml"), "mode: [unclosed\n").unwrap();
    let err = stderr_of(&["simulate", "--pool", "pool.yaml", "trace.csv"], dir.path());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.matches("did not find expected").count(), 1, "{err}");
    assert!(err.contains("pool.yaml"), "{err}");
}

#[test]
fn a_pool_file_the_api_server_would_refuse_is_refused_with_the_crds_messages() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pool.yaml"),
        "apiVersion: sublet.dev/v1alpha1\nkind: TenantPool\nmetadata: {name: p}\n\
         spec: {idle: {maxUtilizationPercent: 150}, reclaim: {noticeSeconds: -1}}\n",
    )
    .unwrap();
    let err = stderr_of(&["simulate", "--pool", "pool.yaml", "trace.csv"], dir.path());
    assert!(err.contains("pool pool.yaml"), "{err}");
    assert!(
        err.contains("spec.idle.maxUtilizationPercent: maxUtilizationPercent must be between 0 and 100"),
        "{err}"
    );
    assert!(
        err.contains("spec.reclaim.noticeSeconds: noticeSeconds must be between 0 and 86400"),
        "{err}"
    );
}

#[test]
fn a_plot_in_a_format_it_cannot_write_is_refused_before_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["x.png", "x", "x.svg.png"] {
        let err = stderr_of(&["simulate", "--plot", name, "trace.csv"], dir.path());
        assert!(err.contains("--plot") && err.contains(".svg"), "{err}");
        assert!(!dir.path().join(name).exists(), "{name} written");
    }
}

#[test]
fn the_log_has_no_colour_codes_when_stderr_is_a_file() {
    let dir = tempfile::tempdir().unwrap();
    // An API server that refuses connections: the controller starts, serves /metrics and logs its retries.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
         clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{port}', insecure-skip-tls-verify: true}}}}]\n\
         users: [{{name: u, user: {{token: t}}}}]\n\
         contexts: [{{name: c, context: {{cluster: c, user: u}}}}]\n"
    );
    std::fs::write(dir.path().join("kubeconfig"), kubeconfig).unwrap();
    let log_path = dir.path().join("sublet.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = sublet()
        .args([
            "run",
            "--kubeconfig",
            "kubeconfig",
            "--metrics-addr",
            "127.0.0.1:0",
            "--leader-elect=false",
        ])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("sublet runs");
    let started = Instant::now();
    let text = loop {
        let text = std::fs::read_to_string(&log_path).unwrap();
        if text.contains("serving /metrics") && text.lines().count() >= 2 {
            break text;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("sublet exited ({status}) before logging: {text}");
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no log lines: {text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(!text.contains('\x1b'), "colour codes in a log file:\n{text:?}");
    assert!(text.contains("INFO"), "{text}");
}
