//! From meters to the report: one row per policy, as a terminal table or as JSON.

use serde::Serialize;

use super::fleet::Meter;

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub trace: TraceSummary,
    pub policies: Vec<PolicyReport>,
}

/// What was replayed.
#[derive(Clone, Debug, Serialize)]
pub struct TraceSummary {
    pub name: String,
    pub groups: usize,
    pub gpus: u32,
    pub steps: usize,
    pub step_seconds: i64,
    pub start: String,
    /// Steps at which some group had no reading (its demand held, and left out of its sums).
    pub unknown_steps: usize,
    pub notice_seconds: i64,
    pub price_per_gpu_hour: f64,
}

/// One policy's figures. Field names are those of the JSON output.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PolicyReport {
    pub name: String,
    pub capacity_gpu_hours: f64,
    pub idle_gpu_hours: f64,
    pub oracle_gpu_hours: f64,
    pub harvested_gpu_hours: f64,
    pub efficiency: f64,
    pub internal_delay_gpu_minutes: f64,
    pub internal_delay_p50_seconds: i64,
    pub internal_delay_p99_seconds: i64,
    pub internal_delay_max_seconds: i64,
    pub internal_delayed_fraction: f64,
    pub notices: u64,
    pub evictions_per_1000_lent_gpu_hours: f64,
    pub revenue: f64,
    /// GPUs kept from lending as the reserve, on average over time (sublet only; 0 for the others).
    pub mean_reserve_gpus: f64,
    /// Notices given ahead of a rise in demand (sublet's reclaim ahead).
    pub reclaim_ahead_notices: u64,
    /// Lent or leased nodes that left the cluster: their leases ended without notice (never counted as
    /// notices or evictions).
    pub lost_to_capacity_change: u64,
}

impl PolicyReport {
    /// The figures of a meter; revenue is every leased GPU-hour (notice time included) at `price`.
    pub fn from_meter(name: &str, m: &Meter, price: f64) -> Self {
        let mut episodes = m.episodes.clone();
        episodes.sort_unstable();
        let leased_hours = m.leased / 3600.0;
        Self {
            name: name.to_string(),
            capacity_gpu_hours: m.capacity / 3600.0,
            idle_gpu_hours: m.idle / 3600.0,
            oracle_gpu_hours: m.oracle / 3600.0,
            harvested_gpu_hours: m.harvested / 3600.0,
            efficiency: if m.oracle > 0.0 { m.harvested / m.oracle } else { 0.0 },
            internal_delay_gpu_minutes: m.delayed / 60.0,
            internal_delay_p50_seconds: rank(&episodes, 0.50),
            internal_delay_p99_seconds: rank(&episodes, 0.99),
            internal_delay_max_seconds: episodes.last().copied().unwrap_or(0),
            internal_delayed_fraction: if m.demand > 0.0 { m.delayed / m.demand } else { 0.0 },
            notices: m.notices,
            evictions_per_1000_lent_gpu_hours: if leased_hours > 0.0 {
                m.evictions as f64 * 1000.0 / leased_hours
            } else {
                0.0
            },
            revenue: leased_hours * price,
            mean_reserve_gpus: if m.reserve_seconds > 0.0 {
                m.reserve / m.reserve_seconds
            } else {
                0.0
            },
            reclaim_ahead_notices: m.ahead_notices,
            lost_to_capacity_change: m.lost,
        }
    }
}

/// Nearest rank over sorted values; 0 for none.
fn rank(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let r = (q * sorted.len() as f64).ceil() as usize;
    sorted[r.clamp(1, sorted.len()) - 1]
}

/// The column heads of the terminal table.
const TABLE_HEAD: [&str; 14] = [
    "policy",
    "capacity GPU-h",
    "idle GPU-h",
    "oracle GPU-h",
    "harvested GPU-h",
    "η",
    "delay GPU-min",
    "p50 s",
    "p99 s",
    "max s",
    "delayed frac",
    "notices",
    "evict/1k GPU-h",
    "revenue",
];

impl Report {
    /// The terminal table.
    pub fn table(&self) -> String {
        let mut out = self.trace.heading();
        let rows: Vec<Vec<String>> = self.policies.iter().map(PolicyReport::cells).collect();
        out.push_str(&aligned(&TABLE_HEAD, rows));
        out.push_str(&self.notes());
        out
    }

    /// The lines under the table: nodes lost to capacity changes, and the reserve of policies that keep one.
    fn notes(&self) -> String {
        let mut out = String::new();
        let lost: Vec<String> = self
            .policies
            .iter()
            .filter(|p| p.lost_to_capacity_change > 0)
            .map(|p| format!("{} {}", p.name, p.lost_to_capacity_change))
            .collect();
        if !lost.is_empty() {
            out.push_str(&format!(
                "\nnodes lost to capacity change while lent or leased (leases ended without notice): {}\n",
                lost.join(", ")
            ));
        }
        for p in self
            .policies
            .iter()
            .filter(|p| p.mean_reserve_gpus > 0.0 || p.reclaim_ahead_notices > 0)
        {
            out.push_str(&format!(
                "\n{}: reserve {:.1} GPUs kept on average, {} of its notices given ahead of a rise\n",
                p.name, p.mean_reserve_gpus, p.reclaim_ahead_notices
            ));
        }
        out
    }
}

impl TraceSummary {
    /// The two lines above the table: what was replayed, and the notice and price.
    fn heading(&self) -> String {
        format!(
            "trace {}: {} groups, {} GPUs, {} steps of {} s from {} ({} steps without a reading left out)\n\
             notice {} s, price {:.2} per GPU-hour\n\n",
            self.name,
            self.groups,
            self.gpus,
            self.steps,
            self.step_seconds,
            self.start,
            self.unknown_steps,
            self.notice_seconds,
            self.price_per_gpu_hour
        )
    }
}

impl PolicyReport {
    /// The policy's row of the terminal table, in the order of [`TABLE_HEAD`].
    fn cells(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            format!("{:.0}", self.capacity_gpu_hours),
            format!("{:.0}", self.idle_gpu_hours),
            format!("{:.0}", self.oracle_gpu_hours),
            format!("{:.0}", self.harvested_gpu_hours),
            format!("{:.3}", self.efficiency),
            format!("{:.0}", self.internal_delay_gpu_minutes),
            self.internal_delay_p50_seconds.to_string(),
            self.internal_delay_p99_seconds.to_string(),
            self.internal_delay_max_seconds.to_string(),
            format!("{:.4}", self.internal_delayed_fraction),
            self.notices.to_string(),
            format!("{:.2}", self.evictions_per_1000_lent_gpu_hours),
            format!("{:.0}", self.revenue),
        ]
    }
}

/// The head and rows as columns: the first left-aligned, the others right-aligned, two spaces apart.
fn aligned(head: &[&str], rows: Vec<Vec<String>>) -> String {
    let widths: Vec<usize> = (0..head.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([head[c].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (c, cell) in cells.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            if c == 0 {
                s.push_str(cell);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str("  ");
                s.push_str(&" ".repeat(pad));
                s.push_str(cell);
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(head.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(rank(&[], 0.5), 0);
        let v: Vec<i64> = (1..=100).map(|i| i * 60).collect();
        assert_eq!(rank(&v, 0.5), 3000);
        assert_eq!(rank(&v, 0.99), 5940);
        assert_eq!(rank(&[120], 0.99), 120);
    }

    #[test]
    fn figures_from_a_meter() {
        let m = Meter {
            capacity: 3600.0 * 100.0,
            idle: 3600.0 * 40.0,
            oracle: 3600.0 * 30.0,
            harvested: 3600.0 * 15.0,
            leased: 3600.0 * 20.0,
            demand: 3600.0 * 60.0,
            delayed: 3600.0 * 0.6,
            episodes: vec![60, 180, 120],
            notices: 3,
            evictions: 2,
            ..Meter::default()
        };
        let p = PolicyReport::from_meter("x", &m, 2.0);
        assert_eq!(p.efficiency, 0.5);
        assert_eq!(p.internal_delay_gpu_minutes, 36.0);
        assert_eq!((p.internal_delay_p50_seconds, p.internal_delay_max_seconds), (120, 180));
        assert!((p.internal_delayed_fraction - 0.01).abs() < 1e-12);
        assert_eq!(p.evictions_per_1000_lent_gpu_hours, 100.0);
        assert_eq!(p.revenue, 40.0);
    }
}
