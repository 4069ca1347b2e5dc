//! A sandbox API server running on its own runtime, and the real kubectl pointed at it.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sublet_sandbox::{Sandbox, SandboxConfig, SandboxHandle};

pub struct TestCluster {
    pub handle: Option<SandboxHandle>,
    pub runtime: tokio::runtime::Runtime,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    /// Put before the names the test creates (empty on the sandbox, which is the test's own).
    pub prefix: String,
    _turn: Option<tokio::sync::MutexGuard<'static, ()>>,
}

impl TestCluster {
    pub fn start() -> TestCluster {
        TestCluster::with(SandboxConfig::default())
    }

    pub fn with(config: SandboxConfig) -> TestCluster {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let handle = runtime.block_on(Sandbox::start(config)).expect("sandbox starts");
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        handle.write_kubeconfig(&kubeconfig).unwrap();
        TestCluster {
            handle: Some(handle),
            runtime,
            dir,
            kubeconfig,
            prefix: String::new(),
            _turn: None,
        }
    }

    /// The sandbox (with `config`) or this test's turn on the real control plane, where the test names what it
    /// creates with [`TestCluster::name`] and labels its namespaces with [`TestCluster::namespace`].
    pub fn on(backend: super::real::Backend, config: SandboxConfig) -> TestCluster {
        eprintln!("-- on the {backend:?} cluster");
        if backend == super::real::Backend::Sandbox {
            return TestCluster::with(config);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (turn, _client) = runtime.block_on(super::real::turn());
        TestCluster {
            handle: None,
            runtime,
            dir: tempfile::tempdir().unwrap(),
            kubeconfig: super::real::real().kubeconfig.clone(),
            prefix: format!("{}-", super::real::unique("k")),
            _turn: Some(turn),
        }
    }

    /// This test's name for `base`.
    pub fn name(&self, base: &str) -> String {
        format!("{}{base}", self.prefix)
    }

    /// Creates the namespace `name(base)` (swept after the test on the real control plane) and answers its name.
    pub fn namespace(&self, base: &str) -> String {
        self.namespace_with(base, &[])
    }

    /// As [`TestCluster::namespace`], with `labels` from the start: kube-apiserver's admission reads a
    /// namespace's labels from its informer, so a label added later holds only once that has caught up.
    pub fn namespace_with(&self, base: &str, labels: &[(&str, &str)]) -> String {
        let ns = self.name(base);
        let mut all = serde_json::Map::new();
        all.insert(super::real::OWNED.into(), "true".into());
        for (k, v) in labels {
            all.insert((*k).into(), (*v).into());
        }
        let obj = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": all}});
        self.ok_stdin(&["create", "-f", "-"], &obj.to_string());
        ns
    }

    /// A kube-rs configuration with the admin identity of this cluster (the sandbox's or the real one's).
    pub fn client_config(&self) -> kube::Config {
        match &self.handle {
            Some(handle) => self
                .runtime
                .block_on(handle.client_config())
                .expect("sandbox client config"),
            None => self.runtime.block_on(async {
                let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig readable");
                kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                    .await
                    .expect("kubeconfig valid")
            }),
        }
    }

    /// Runs kubectl with `args` and `--dry-run=server` until it fails with `message` (30 s at most). The real
    /// kube-apiserver enforces a ValidatingAdmissionPolicy, and sees a namespace's new labels, only once its
    /// informers have them; a test waits for that before it asserts what the policy denies.
    pub fn denied_eventually(&self, args: &[&str], stdin: &str, message: &str) {
        let mut all = args.to_vec();
        all.push("--dry-run=server");
        let start = Instant::now();
        loop {
            let out = self.run_with_input(&all, stdin);
            let last = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
            if !out.status.success() && last.contains(message) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "kubectl {} was not denied with `{message}`; last: {last}",
                all.join(" ")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn handle(&self) -> &SandboxHandle {
        self.handle.as_ref().expect("running")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(super::tool("kubectl"));
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            // kubectl caches discovery under $HOME/.kube; each test gets its own.
            .env("HOME", self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs kubectl with `stdin` as standard input.
    pub fn run_with_input(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self.command(args).spawn().expect("kubectl runs");
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with_input(args, "")
    }

    /// Runs kubectl and answers its standard output; fails the test if kubectl fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `kubectl apply -f -` (or any args) with a YAML document on standard input; must succeed.
    pub fn ok_stdin(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run_with_input(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs kubectl, expects it to fail, and answers its standard error.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "kubectl {} succeeded: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn fails_stdin(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run_with_input(args, stdin);
        assert!(!out.status.success(), "kubectl {} succeeded", args.join(" "));
        String::from_utf8(out.stderr).unwrap()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            self.runtime.block_on(handle.shutdown());
        }
    }
}

/// Polls `check` until it answers true, failing after `limit`.
pub fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The repository root, for crds/ and examples/.
pub fn repo(path: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .display()
        .to_string()
}
