//! The chaos run's report: what was done, counts per check, violations with their objects, and the reclaim
//! latency against the notice. JSON with `--json`, and a few lines for people.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::child::Kills;
use super::cycles::CycleCounts;
use super::watcher::{self, CheckCount, Record, Violation};
use super::{ChaosConfig, Perturbation};
use crate::demo::Summary;

/// Internal demand seen (an internal pod pending) to its placement on a node back in internal use.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    pub samples: usize,
    pub p50_seconds: f64,
    pub p99_seconds: f64,
    pub max_seconds: f64,
    pub notice_seconds: i64,
    /// p99 must stay within the notice plus this.
    pub allowed_p99_seconds: f64,
}

/// A distribution in brief.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Spread {
    pub samples: usize,
    pub p50_seconds: f64,
    pub p99_seconds: f64,
    pub max_seconds: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Spread {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        Spread {
            samples: v.len(),
            p50_seconds: round(watcher::percentile(&v, 0.5)),
            p99_seconds: round(watcher::percentile(&v, 0.99)),
            max_seconds: round(v.last().copied().unwrap_or(0.0)),
        }
    }
}

/// Everything a chaos run reports.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub ok: bool,
    pub seed: u64,
    pub cycles: u64,
    pub parallel: u32,
    pub perturbations: Vec<Perturbation>,
    pub wall_seconds: f64,
    pub cycle_counts: CycleCounts,
    pub kills: Kills,
    pub controller_starts: u64,
    pub faults_injected: u64,
    pub nodes_deleted: u64,
    pub nodes_not_ready: u64,
    pub mode_flips: u64,
    /// What the demo's checker counted (lends, binds, notices, evictions, returns, checkpoints).
    pub counters: crate::demo::summary::Counters,
    /// Changes the watches missed (a watch that had to list again).
    pub missed_events: u64,
    /// Per check: how many times it was checked and failed.
    pub checks: BTreeMap<String, CheckCount>,
    pub reclaim_latency: Latency,
    /// Seconds from a tenant pod's deadline to the start of its eviction.
    pub eviction_lateness: Spread,
    /// Seconds a tenant pod whose node was deleted under it ran on the node registered again (not leased to
    /// it) before sublet evicted it as a breach.
    pub breach_eviction: Spread,
    pub violations: Vec<Violation>,
}

pub struct Parts<'a> {
    pub config: &'a ChaosConfig,
    pub record: &'a Record,
    pub summary: &'a Summary,
    pub counts: CycleCounts,
    pub kills: Kills,
    pub faults_fired: u64,
    pub nodes_deleted: u64,
    pub nodes_not_ready: u64,
    pub mode_flips: u64,
    pub controller_starts: u64,
    /// Violations found at the end (nodes left marked, a pool that would not go).
    pub end: Vec<Violation>,
    pub wall: Duration,
}

/// Puts the report together and adds the checks made of the whole run.
pub fn build(p: Parts<'_>) -> Report {
    let mut checks: BTreeMap<String, CheckCount> = p
        .record
        .checks
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let mut violations = p.record.violations.clone();
    let mut count = |name: &str, checked: u64, failed: Vec<Violation>| {
        let c = checks.entry(name.to_string()).or_default();
        c.checked += checked;
        c.failed += failed.len() as u64;
        violations.extend(failed);
    };
    // DESIGN rules 1–3, from the demo's checker.
    for rule in 1..=3u8 {
        let (checked, failed) = rule_checks(p.summary, rule);
        count(&format!("rule {rule}"), checked, failed);
    }
    let end_checks = [
        "no node left leased after every lease ended",
        "no tenant pod outlives its leases",
        "no node left marked after the pool's deletion",
        "pool deletion completes",
    ];
    // Every violation found at the end counts, under its own check if it is not one of those.
    let mut names: Vec<&str> = end_checks.to_vec();
    for v in &p.end {
        if !names.contains(&v.check.as_str()) {
            names.push(&v.check);
        }
    }
    for name in names {
        let failed: Vec<Violation> = p.end.iter().filter(|v| v.check == name).cloned().collect();
        count(name, 1, failed);
    }
    count("every cycle completes", p.counts.started, stalls(&p.counts));
    count("the controller keeps running", p.controller_starts, exits(&p.kills));
    let latency = reclaim_latency(p.record, p.config);
    let slow = if latency.p99_seconds > latency.allowed_p99_seconds {
        vec![Violation {
            check: "reclaim latency p99 within notice + 2 s".into(),
            detail: format!("p99 {:.2} s > {} s", latency.p99_seconds, latency.allowed_p99_seconds),
            objects: serde_json::Value::Null,
        }]
    } else {
        vec![]
    };
    count("reclaim latency p99 within notice + 2 s", 1, slow);
    Report {
        ok: violations.is_empty(),
        seed: p.config.seed,
        cycles: p.config.cycles,
        parallel: p.config.parallel,
        perturbations: p.config.perturbations.clone(),
        wall_seconds: round(p.wall.as_secs_f64()),
        cycle_counts: p.counts,
        kills: p.kills,
        controller_starts: p.controller_starts,
        faults_injected: p.faults_fired,
        nodes_deleted: p.nodes_deleted,
        nodes_not_ready: p.nodes_not_ready,
        mode_flips: p.mode_flips,
        counters: p.summary.counters.clone(),
        missed_events: p.record.missed + p.summary.invariants.missed_events,
        checks,
        reclaim_latency: latency,
        eviction_lateness: Spread::of(&p.record.evictions_late),
        breach_eviction: Spread::of(&p.summary.invariants.breach_seconds),
        violations,
    }
}

/// DESIGN rule `rule` from the demo's checker: how many times it was checked, and its violations.
fn rule_checks(summary: &Summary, rule: u8) -> (u64, Vec<Violation>) {
    let failed: Vec<Violation> = summary
        .invariants
        .violations
        .iter()
        .filter(|v| v.rule == rule)
        .map(|v| Violation {
            check: format!("rule {rule}"),
            detail: v.detail.clone(),
            objects: serde_json::Value::Null,
        })
        .collect();
    let checked = match rule {
        1 => summary.counters.lends + summary.counters.binds,
        2 => summary.counters.binds + summary.invariants.breach_seconds.len() as u64,
        _ => summary.counters.evictions - summary.counters.breach_evictions,
    };
    (checked, failed)
}

/// The cycles that stalled, as violations of "every cycle completes".
fn stalls(counts: &CycleCounts) -> Vec<Violation> {
    counts
        .stalled
        .iter()
        .map(|s| Violation {
            check: "every cycle completes".into(),
            detail: format!(
                "cycle {} ({}) waited {:.0} s for {}",
                s.cycle, s.lease, s.seconds, s.waited_for
            ),
            objects: serde_json::json!({"leaseStatus": s.lease_status}),
        })
        .collect()
}

/// The controller's exits that no kill caused, as violations of "the controller keeps running".
fn exits(kills: &Kills) -> Vec<Violation> {
    kills
        .unexpected_exits
        .iter()
        .map(|e| Violation {
            check: "the controller keeps running".into(),
            detail: format!("the controller exited by itself: {e}"),
            objects: serde_json::Value::Null,
        })
        .collect()
}

/// The spread of the reclaim latencies the watch saw, and the p99 the notice allows (notice + 2 s).
fn reclaim_latency(record: &Record, config: &ChaosConfig) -> Latency {
    let mut lat = record.latencies.clone();
    lat.sort_by(f64::total_cmp);
    Latency {
        samples: lat.len(),
        p50_seconds: round(watcher::percentile(&lat, 0.5)),
        p99_seconds: round(watcher::percentile(&lat, 0.99)),
        max_seconds: round(lat.last().copied().unwrap_or(0.0)),
        notice_seconds: config.notice_seconds,
        allowed_p99_seconds: config.notice_seconds as f64 + 2.0,
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Report {
    /// The perturbations of the run, by their command-line names; "none" for none.
    fn perturbation_names(&self) -> String {
        let names: Vec<String> = self
            .perturbations
            .iter()
            .map(|p| {
                serde_json::to_value(p)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            })
            .collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(",")
        }
    }

    /// What the perturbations did: kills (random and at which points), starts, faults, node losses, flips.
    fn perturbed_line(&self) -> String {
        let points: Vec<String> = self.kills.at_points.iter().map(|(p, n)| format!("{n} {p}")).collect();
        format!(
            "  perturbed    {} kills ({} random{}{}), {} starts, {} API faults, {} nodes deleted, {} nodes NotReady, {} \
             mode flips\n",
            self.kills.total,
            self.kills.random,
            if points.is_empty() { "" } else { ", " },
            points.join(", "),
            self.controller_starts,
            self.faults_injected,
            self.nodes_deleted,
            self.nodes_not_ready,
            self.mode_flips
        )
    }

    /// The report for people.
    pub fn text(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "sublet chaos: {} cycles ({} at once), seed {}, perturbations: {}, {:.0} s\n",
            self.cycles,
            self.parallel,
            self.seed,
            self.perturbation_names(),
            self.wall_seconds
        ));
        let c = &self.cycle_counts;
        out.push_str(&format!(
            "  cycles       {} completed of {} started ({} by internal demand, {} by lease end, {} churned, {} ended \
             before the tenant saw them bound), {} stalled\n",
            c.completed,
            c.started,
            c.by_demand,
            c.by_lease_end,
            c.churned,
            c.ended_before_seen_bound,
            c.stalled.len()
        ));
        let k = &self.counters;
        out.push_str(&format!(
            "  controller   {} lends, {} binds, {} notices, {} checkpoints, {} evictions, {} returns\n",
            k.lends, k.binds, k.notices, k.checkpoints, k.evictions, k.returns
        ));
        out.push_str(&self.perturbed_line());
        let l = &self.reclaim_latency;
        out.push_str(&format!(
            "  reclaim      {} samples: p50 {:.2} s, p99 {:.2} s, max {:.2} s (notice {} s; p99 allowed {:.0} s)\n",
            l.samples, l.p50_seconds, l.p99_seconds, l.max_seconds, l.notice_seconds, l.allowed_p99_seconds
        ));
        let e = &self.eviction_lateness;
        out.push_str(&format!(
            "  evictions    {} after their deadline by p50 {:.2} s, p99 {:.2} s, max {:.2} s\n",
            e.samples, e.p50_seconds, e.p99_seconds, e.max_seconds
        ));
        let b = &self.breach_eviction;
        if self.counters.breach_evictions > 0 {
            out.push_str(&format!(
                "  breaches     {} tenant pods evicted without notice from a node not leased to them; {} of them \
                 stranded by a node deletion, on the node again for p50 {:.2} s, max {:.2} s\n",
                self.counters.breach_evictions, b.samples, b.p50_seconds, b.max_seconds
            ));
        }
        out.push_str("  checks       checked / failed\n");
        for (name, c) in &self.checks {
            out.push_str(&format!("    {name:<52} {:>7} / {}\n", c.checked, c.failed));
        }
        if self.missed_events > 0 {
            out.push_str(&format!("  the watches missed {} changes\n", self.missed_events));
        }
        for v in self.violations.iter().take(20) {
            out.push_str(&format!("  VIOLATION {}: {}\n", v.check, v.detail));
        }
        if self.violations.len() > 20 {
            out.push_str(&format!("  ... and {} more (see --json)\n", self.violations.len() - 20));
        }
        out.push_str(if self.ok {
            "  result       ok\n"
        } else {
            "  result       VIOLATIONS\n"
        });
        out
    }
}
