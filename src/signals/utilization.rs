//! GPU utilization per node from the DCGM exporter's series in Prometheus.
//!
//! ```text
//!   value query      avg by (Hostname, hostname) (avg_over_time(DCGM_FI_DEV_GPU_UTIL[WINDOWs]))   (or the pool's)
//!   freshness query  max by (Hostname, hostname) (timestamp(DCGM_FI_DEV_GPU_UTIL)) or … (the profiling series)
//!        │                                   │
//!        └──────────── readings() ───────────┘──▶ node → Utilization { mean_percent, measured_at }
//! ```
//! A window average is answered for as long as the window still holds old samples, even after the exporter
//! stopped; the freshness query asks for the time of each node's newest raw sample (Prometheus drops a series
//! from instant queries once its target fails), and a node whose newest sample is older than the pool's
//! staleness limit has no reading. The exporter renamed its node label from `Hostname` to `hostname`; both
//! are read, whichever the series carries.

use std::collections::HashMap;

use jiff::Timestamp;

use super::prometheus::Sample;
use crate::policy::Utilization;

pub const GPU_UTIL: &str = "DCGM_FI_DEV_GPU_UTIL";
pub const GR_ENGINE_ACTIVE: &str = "DCGM_FI_PROF_GR_ENGINE_ACTIVE";

/// The node labels to read: the configured one, and its other spelling when it is one of the exporter's.
pub fn node_labels(node_label: &str) -> Vec<&str> {
    match node_label {
        "Hostname" => vec!["Hostname", "hostname"],
        "hostname" => vec!["hostname", "Hostname"],
        other => vec![other],
    }
}

/// The node a series belongs to: the first of `labels` it carries with a value.
pub fn node_of<'a>(series: &'a std::collections::BTreeMap<String, String>, labels: &[&str]) -> Option<&'a str> {
    labels
        .iter()
        .find_map(|l| series.get(*l).filter(|v| !v.is_empty()))
        .map(String::as_str)
}

/// The default query: the mean of `DCGM_FI_DEV_GPU_UTIL` over the idle window, per node.
pub fn default_query(node_label: &str, window_seconds: i64) -> String {
    let by = node_labels(node_label).join(", ");
    if window_seconds < 1 {
        format!("avg by ({by}) ({GPU_UTIL})")
    } else {
        format!("avg by ({by}) (avg_over_time({GPU_UTIL}[{window_seconds}s]))")
    }
}

/// The time of each node's newest DCGM utilization sample, from the device series or else the profiling one.
/// (`timestamp` drops the metric name, so the two cannot be selected together: their GPUs would collide.)
pub fn freshness_query(node_label: &str) -> String {
    let by = node_labels(node_label).join(", ");
    format!("max by ({by}) (timestamp({GPU_UTIL})) or max by ({by}) (timestamp({GR_ENGINE_ACTIVE}))")
}

/// The readings of one pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Readings {
    pub by_node: HashMap<String, Utilization>,
    /// Nodes with samples older than the staleness limit, with their age in seconds.
    pub stale: Vec<(String, i64)>,
}

/// Joins the value query's answer with the freshness query's.
///
/// `freshness` is None when the query is not over DCGM series (a pool's own query over other metrics): then
/// the evaluation time stands for the sample time. Series without a node label and NaN values are skipped;
/// several series of one node (a query per GPU) are averaged, as the pool's rule is about the mean.
pub fn readings(
    values: &[Sample],
    freshness: Option<&[Sample]>,
    node_label: &str,
    now: Timestamp,
    stale_seconds: i64,
) -> Readings {
    let labels = node_labels(node_label);
    let newest: Option<HashMap<&str, Timestamp>> = freshness.map(|f| {
        let mut m = HashMap::new();
        for s in f {
            let (Some(node), true) = (node_of(&s.labels, &labels), s.value.is_finite()) else {
                continue;
            };
            let Ok(at) = Timestamp::from_millisecond((s.value * 1000.0).round() as i64) else {
                continue;
            };
            let e = m.entry(node).or_insert(at);
            *e = (*e).max(at);
        }
        m
    });
    let mut sums: HashMap<&str, (f64, u32, Timestamp)> = HashMap::new();
    for s in values {
        let Some(node) = node_of(&s.labels, &labels) else {
            continue;
        };
        if !s.value.is_finite() {
            continue;
        }
        let e = sums.entry(node).or_insert((0.0, 0, s.at));
        e.0 += s.value;
        e.1 += 1;
        e.2 = e.2.min(s.at);
    }
    let mut out = Readings::default();
    for (node, (sum, n, at)) in sums {
        let measured_at = match &newest {
            Some(m) => match m.get(node) {
                Some(t) => *t,
                // A DCGM query whose node has no current raw sample: its exporter is gone.
                None => {
                    out.stale.push((node.to_string(), i64::MAX));
                    continue;
                }
            },
            None => at,
        };
        let age = now.duration_since(measured_at).as_secs();
        if age > stale_seconds {
            out.stale.push((node.to_string(), age));
            continue;
        }
        out.by_node.insert(
            node.to_string(),
            Utilization {
                mean_percent: sum / f64::from(n),
                measured_at,
            },
        );
    }
    out.stale.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(labels: &[(&str, &str)], at: i64, value: f64) -> Sample {
        Sample {
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            at: Timestamp::from_second(at).unwrap(),
            value,
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_000).unwrap()
    }

    #[test]
    fn queries_group_by_both_spellings_of_the_exporter_label() {
        assert_eq!(
            default_query("Hostname", 900),
            "avg by (Hostname, hostname) (avg_over_time(DCGM_FI_DEV_GPU_UTIL[900s]))"
        );
        assert_eq!(
            default_query("hostname", 0),
            "avg by (hostname, Hostname) (DCGM_FI_DEV_GPU_UTIL)"
        );
        assert_eq!(
            default_query("node", 60),
            "avg by (node) (avg_over_time(DCGM_FI_DEV_GPU_UTIL[60s]))"
        );
        assert_eq!(
            freshness_query("Hostname"),
            "max by (Hostname, hostname) (timestamp(DCGM_FI_DEV_GPU_UTIL)) or \
         max by (Hostname, hostname) (timestamp(DCGM_FI_PROF_GR_ENGINE_ACTIVE))"
        );
    }

    #[test]
    fn hostname_and_capital_hostname_both_name_the_node() {
        let values = [
            sample(&[("Hostname", "gpu-1"), ("hostname", "")], 1_000, 80.0),
            sample(&[("hostname", "gpu-2")], 1_000, 2.0),
        ];
        let fresh = [
            sample(&[("Hostname", "gpu-1")], 1_000, 995.0),
            sample(&[("hostname", "gpu-2")], 1_000, 998.0),
        ];
        for label in ["Hostname", "hostname"] {
            let r = readings(&values, Some(&fresh), label, now(), 60);
            assert_eq!(r.by_node["gpu-1"].mean_percent, 80.0);
            assert_eq!(r.by_node["gpu-2"].mean_percent, 2.0);
            assert_eq!(r.by_node["gpu-2"].measured_at, Timestamp::from_second(998).unwrap());
        }
        // A pool that names another label reads only that one.
        let r = readings(&values, Some(&fresh), "node", now(), 60);
        assert!(r.by_node.is_empty());
    }

    #[test]
    fn samples_older_than_the_limit_count_as_missing() {
        let values = [
            sample(&[("Hostname", "old")], 1_000, 1.0),
            sample(&[("Hostname", "new")], 1_000, 1.0),
            sample(&[("Hostname", "gone")], 1_000, 1.0),
        ];
        let fresh = [
            sample(&[("Hostname", "old")], 1_000, 800.0),
            sample(&[("Hostname", "new")], 1_000, 990.0),
        ];
        let r = readings(&values, Some(&fresh), "Hostname", now(), 120);
        assert_eq!(r.by_node.keys().collect::<Vec<_>>(), vec!["new"]);
        assert_eq!(r.stale, vec![("gone".to_string(), i64::MAX), ("old".to_string(), 200)]);
    }

    #[test]
    fn without_freshness_the_evaluation_time_counts() {
        let values = [
            sample(&[("Hostname", "a")], 990, 3.0),
            sample(&[("Hostname", "b")], 500, 3.0),
        ];
        let r = readings(&values, None, "Hostname", now(), 60);
        assert!(r.by_node.contains_key("a"));
        assert_eq!(r.stale, vec![("b".to_string(), 500)]);
    }

    #[test]
    fn nan_and_unlabelled_series_are_skipped_and_gpus_averaged() {
        let values = [
            sample(&[("Hostname", "a"), ("gpu", "0")], 1_000, 10.0),
            sample(&[("Hostname", "a"), ("gpu", "1")], 1_000, 30.0),
            sample(&[("Hostname", "b")], 1_000, f64::NAN),
            sample(&[("gpu", "0")], 1_000, 50.0),
        ];
        let r = readings(&values, None, "Hostname", now(), 60);
        assert_eq!(r.by_node.len(), 1);
        assert_eq!(r.by_node["a"].mean_percent, 20.0);
    }
}
