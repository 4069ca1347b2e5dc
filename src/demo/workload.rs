//! Internal work: a demand curve (GPUs wanted per node group over simulated time) turned into GPU pods.
//!
//! ```text
//!   trace (Helios / CSV)      ─┐
//!   synthetic day (built in)  ─┴─▶ DemandCurve ─▶ every 100 ms: wanted(group, sim time) vs GPUs of live
//!                                                 internal pods ─▶ create whole-node pods until met
//! ```
//! Pods run for a simulated 1.5 to 4 hours (the kubelet ends them), so when demand falls, capacity frees up
//! as work finishes, as it does in a real cluster; when it rises, new pods wait until nodes come back.

use std::collections::HashMap;
use std::path::Path;

use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::api::DemoApi;
use super::nodes::{NodeGroup, finished, pod_gpus};
use super::{DemoError, GPU_RESOURCE, GROUP_LABEL, INTERNAL_NAMESPACE, RUN_ANNOTATION, Rng, SimClock};

/// GPUs wanted per group, one row per step.
#[derive(Clone, Debug)]
pub struct DemandCurve {
    pub name: String,
    pub start: Timestamp,
    pub step_seconds: i64,
    pub groups: Vec<NodeGroup>,
    /// `demand[step][group]`.
    pub demand: Vec<Vec<u32>>,
}

impl DemandCurve {
    /// The step at `sim_seconds` from the start; a curve shorter than the run starts over.
    pub fn at(&self, sim_seconds: f64) -> &[u32] {
        let step = (sim_seconds.max(0.0) / self.step_seconds as f64) as usize;
        &self.demand[step % self.demand.len()]
    }

    /// A working day: a night valley near a fifth of capacity, a morning peak near nine tenths, a smaller
    /// afternoon bump; each group shifted a little so that reclaims do not all land in the same minute.
    pub fn synthetic_day(groups: &[NodeGroup]) -> Self {
        let step_seconds = 600;
        let steps = 86_400 / step_seconds;
        let demand = (0..steps)
            .map(|s| {
                groups
                    .iter()
                    .enumerate()
                    .map(|(g, group)| {
                        let hour = (s * step_seconds) as f64 / 3600.0 - 0.75 * g as f64;
                        let capacity = (group.count * group.gpus_per_node) as f64;
                        (capacity * day_share(hour)).round() as u32
                    })
                    .collect()
            })
            .collect();
        DemandCurve {
            name: "synthetic day (night valley, morning peak)".into(),
            start: Timestamp::UNIX_EPOCH,
            step_seconds,
            groups: groups.to_vec(),
            demand,
        }
    }

    /// Reads a trace file and keeps the steps a run of `sim_seconds` replays.
    pub fn from_trace(path: &Path, sim_seconds: f64) -> Result<Self, DemoError> {
        let mut curve = super::trace::load(path)?;
        let keep = ((sim_seconds / curve.step_seconds as f64).ceil() as usize + 1).max(1);
        curve.demand.truncate(keep);
        Ok(curve)
    }
}

/// The share of capacity internal work wants at `hour` of the day.
pub fn day_share(hour: f64) -> f64 {
    let h = hour.rem_euclid(24.0);
    let bump = |centre: f64, width: f64| {
        let d = (h - centre) / width;
        (-d * d).exp()
    };
    (0.18 + 0.8 * bump(10.5, 2.5) + 0.45 * bump(16.0, 2.0)).min(0.98)
}

/// Creates internal pods so that each group's live internal GPUs meet its demand, until `stop`.
pub async fn run(api: DemoApi, curve: DemandCurve, clock: SimClock, seed: u64, mut stop: watch::Receiver<bool>) {
    let mut rng = Rng::new(seed ^ 0x1234);
    let mut next = 0u64;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let wanted = curve.at(clock.sim_elapsed());
        let Ok(pods) = api.list("v1", "pods", Some(INTERNAL_NAMESPACE), "", "").await else {
            continue;
        };
        let live = live_by_group(&pods);
        for (group, want) in curve.groups.iter().zip(wanted) {
            let mut have = live.get(group.name.as_str()).copied().unwrap_or(0);
            while have < *want {
                // Whole nodes; a remainder becomes a smaller pod.
                let size = group.gpus_per_node.min(*want - have).max(1);
                next += 1;
                let run = rng.range(1.5, 4.0) * 3600.0;
                let pod = internal_pod(&format!("train-{}-{next:05}", group.name), &group.name, size, run);
                if api.create("v1", "pods", Some(INTERNAL_NAMESPACE), pod).await.is_err() {
                    break;
                }
                have += size;
            }
        }
    }
}

/// GPUs of internal pods not finished nor being deleted, by group.
fn live_by_group(pods: &[Value]) -> HashMap<&str, u32> {
    let mut live = HashMap::new();
    for pod in pods {
        if finished(pod) || pod["metadata"]["deletionTimestamp"].is_string() {
            continue;
        }
        if let Some(g) = pod["metadata"]["labels"][GROUP_LABEL].as_str() {
            *live.entry(g).or_default() += pod_gpus(pod);
        }
    }
    live
}

pub(crate) fn internal_pod(name: &str, group: &str, gpus: u32, run_seconds: f64) -> Value {
    let n = gpus.to_string();
    json!({
        "metadata": {"name": name, "labels": {"app": "train", GROUP_LABEL: group},
            "annotations": {RUN_ANNOTATION: format!("{run_seconds:.0}")}},
        "spec": {
            "nodeSelector": {GROUP_LABEL: group},
            "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{"name": "train", "image": "registry.internal/trainer:2024.6",
                "resources": {"requests": {GPU_RESOURCE: n, "cpu": "8"}, "limits": {GPU_RESOURCE: n}}}],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_synthetic_day_has_a_night_valley_and_a_morning_peak() {
        assert!(day_share(3.0) < 0.25, "{}", day_share(3.0));
        assert!(day_share(10.0) > 0.85, "{}", day_share(10.0));
        assert!(day_share(23.0) < 0.3);
        let groups = super::super::nodes::default_groups(64, 8);
        let curve = DemandCurve::synthetic_day(&groups);
        assert_eq!(curve.demand.len(), 144);
        let night = curve.at(3.0 * 3600.0)[0];
        let morning = curve.at(10.5 * 3600.0)[0];
        assert!(morning > 3 * night, "night {night}, morning {morning}");
        assert!(curve.demand.iter().all(|row| row[0] <= 48 * 8 && row[1] <= 16 * 8));
        // Past the end the day starts over.
        assert_eq!(curve.at(86_400.0 + 3.0 * 3600.0), curve.at(3.0 * 3600.0));
    }

    #[test]
    fn live_gpus_leave_out_finished_and_deleting_pods() {
        let pod = |g: &str, gpus: u32, phase: &str, deleting: bool| {
            let mut p = internal_pod("p", g, gpus, 60.0);
            p["status"] = json!({"phase": phase});
            if deleting {
                p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            p
        };
        let pods = vec![
            pod("h100", 8, "Running", false),
            pod("h100", 4, "Pending", false),
            pod("h100", 8, "Succeeded", false),
            pod("a100", 8, "Running", true),
        ];
        let live = live_by_group(&pods);
        assert_eq!(live.get("h100"), Some(&12));
        assert_eq!(live.get("a100"), None);
    }
}
