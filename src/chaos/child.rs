//! The controller under test: `sublet run` as a child process (this very binary), SIGKILLed and started
//! again at random and at chosen points.
//!
//! ```text
//!   killer ◀── KillPoint (watcher: notice written, eviction begun, return begun;
//!          │              cycles: lease deleted, internal demand created)
//!          ├─ at random, every few seconds ───────────────┐
//!          └─ after a point, with a probability, 0–80 ms ─┴─▶ SIGKILL ─▶ wait ─▶ start again
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tokio::sync::{Mutex, mpsc, watch};

use super::{ChaosError, KillPoint};
use crate::demo::Rng;

/// How the controller is started.
pub struct Controller {
    exe: PathBuf,
    kubeconfig: PathBuf,
    log: Option<PathBuf>,
    child: Mutex<Option<Child>>,
    pub starts: std::sync::atomic::AtomicU64,
}

impl Controller {
    pub fn new(kubeconfig: &Path, log: Option<PathBuf>) -> Result<Arc<Controller>, ChaosError> {
        let exe =
            std::env::current_exe().map_err(|e| ChaosError::Setup(format!("cannot find sublet's binary: {e}")))?;
        Ok(Arc::new(Controller {
            exe,
            kubeconfig: kubeconfig.to_path_buf(),
            log,
            child: Mutex::new(None),
            starts: 0.into(),
        }))
    }

    fn command(&self) -> Result<Command, ChaosError> {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("run")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args([
                "--leader-elect",
                "false",
                "--metrics-addr",
                "127.0.0.1:0",
                "--tick",
                "0.2",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        match &self.log {
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| ChaosError::Setup(format!("cannot open {}: {e}", path.display())))?;
                cmd.stderr(Stdio::from(file));
            }
            None => {
                cmd.stderr(Stdio::null());
            }
        }
        Ok(cmd)
    }

    /// Starts the controller (again).
    pub async fn start(&self) -> Result<(), ChaosError> {
        let child = self
            .command()?
            .spawn()
            .map_err(|e| ChaosError::Setup(format!("cannot start `{} run`: {e}", self.exe.display())))?;
        *self.child.lock().await = Some(child);
        self.starts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// SIGKILLs the controller and waits until it is gone; answers whether it was running.
    pub async fn kill(&self) -> bool {
        let mut guard = self.child.lock().await;
        let Some(mut child) = guard.take() else {
            return false;
        };
        let alive = matches!(child.try_wait(), Ok(None));
        let _ = child.kill().await;
        alive
    }

    /// Whether the controller exited by itself (it should not), and how.
    pub async fn exited(&self) -> Option<String> {
        let mut guard = self.child.lock().await;
        let child = guard.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }
}

/// Kills: how many, and at which points.
#[derive(Clone, Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Kills {
    pub total: u64,
    pub random: u64,
    /// Kills shortly after each kind of write.
    pub at_points: BTreeMap<String, u64>,
    /// Times the controller had exited by itself when checked.
    pub unexpected_exits: Vec<String>,
}

/// Kills and restarts the controller until `stop`. With `enabled` false it only drains `points` and
/// restarts a controller that exited by itself.
pub async fn killer(
    controller: Arc<Controller>,
    mut points: mpsc::UnboundedReceiver<KillPoint>,
    enabled: bool,
    seed: u64,
    mut stop: watch::Receiver<bool>,
) -> Kills {
    let mut rng = Rng::new(seed ^ 0x6b696c6c);
    let mut kills = Kills::default();
    let mut last_kill = Instant::now();
    let mut next_random = Instant::now() + Duration::from_secs_f64(rng.range(2.0, 8.0));
    // Kills no closer than this, so that the controller gets passes done between them.
    let spacing = Duration::from_millis(1500);
    loop {
        let wake = tokio::time::Instant::from_std(next_random);
        let point = tokio::select! {
            _ = stop.wait_for(|s| *s) => return kills,
            p = points.recv() => p,
            _ = tokio::time::sleep_until(wake) => None,
        };
        if let Some(exit) = controller.exited().await {
            kills.unexpected_exits.push(exit);
            let _ = controller.start().await;
        }
        if !enabled {
            next_random = Instant::now() + Duration::from_secs(3600);
            continue;
        }
        let what = match point {
            Some(p) if rng.range(0.0, 1.0) < 0.2 && last_kill.elapsed() >= spacing => {
                tokio::time::sleep(Duration::from_millis(rng.range(0.0, 80.0) as u64)).await;
                p.name().to_string()
            }
            Some(_) => continue,
            None if last_kill.elapsed() >= spacing => {
                next_random = Instant::now() + Duration::from_secs_f64(rng.range(2.0, 8.0));
                "random".to_string()
            }
            None => {
                next_random = Instant::now() + spacing;
                continue;
            }
        };
        if controller.kill().await {
            kills.total += 1;
            if what == "random" {
                kills.random += 1;
            } else {
                *kills.at_points.entry(what).or_default() += 1;
            }
        }
        last_kill = Instant::now();
        // Down for a moment, as a pod being replaced is.
        tokio::time::sleep(Duration::from_millis(rng.range(0.0, 500.0) as u64)).await;
        if let Err(e) = controller.start().await {
            kills.unexpected_exits.push(e.to_string());
        }
    }
}
