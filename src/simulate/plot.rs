//! `--plot FILE.svg`: a picture a team can decide from.
//!
//! ```text
//!   ┌ the tuning frontier ─────────────────────────────┐ ┌ legend ───────────┐
//!   │ harvest (η) against internal delay, one point    │ │ the panels' lines │
//!   │ per policy (per grid point with --sweep, the     │ │ and what the axes │
//!   │ Pareto-best ones joined)                         │ │ mean              │
//!   └──────────────────────────────────────────────────┘ └───────────────────┘
//!   ┌ group a ─────┐ ┌ group b ─────┐ ┌ group c ─────┐   one small panel per node group: capacity, internal
//!   │              │ │   ──  ──     │ │              │   demand, lent and leased GPUs of the `sublet` policy;
//!   └──────────────┘ └──────────────┘ └──────────────┘   steps the trace has no reading for are left as gaps
//! ```
//!
//! The legend has its own column, so it never covers data. A month of minutes is 44,640 steps per line;
//! each panel averages its lines into at most [`MAX_POINTS`] buckets (over the steps with a reading).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::PolicyReport;
use super::sublet::GroupSeries;
use super::sweep::Point;
use super::trace::Trace;

const MAX_POINTS: usize = 600;
/// The picture's width, and the width of the frontier panel (the legend column is the rest).
pub const WIDTH: u32 = 1400;
pub const FRONTIER_WIDTH: u32 = 940;
const FRONTIER_HEIGHT: u32 = 440;
const PANEL_HEIGHT: u32 = 200;
const COLUMNS: usize = 3;
/// At most this many group panels, the largest groups first.
pub const MAX_PANELS: usize = 24;
/// Delay fractions are drawn on a log scale; no delay at all is drawn at this floor.
const DELAY_FLOOR: f64 = 1e-6;

const LINES: [(&str, usize, RGBColor); 4] = [
    ("capacity", 0, RGBColor(0, 0, 0)),
    ("internal demand", 1, RGBColor(30, 90, 220)),
    ("lent (out of internal use)", 2, RGBColor(230, 150, 0)),
    ("leased", 3, RGBColor(0, 150, 60)),
];

/// Refuses a path the plot cannot be written as: it is SVG, and the name must say so.
pub fn check_path(path: &Path) -> anyhow::Result<()> {
    let svg = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
    anyhow::ensure!(
        svg,
        "--plot {}: the plot is written as SVG only; name the file FILE.svg (convert it to PNG with a tool such as \
         rsvg-convert if needed)",
        path.display()
    );
    Ok(())
}

/// One point of the frontier.
struct Dot {
    label: String,
    delayed_fraction: f64,
    efficiency: f64,
    /// Drawn larger and in colour (sublet, or a point that meets the target).
    strong: bool,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The report's picture: every policy on the frontier, the `sublet` policy's GPUs per group below.
pub fn report_svg(
    title: &str,
    trace: &Trace,
    policies: &[PolicyReport],
    groups: &GroupSeries,
) -> Result<String, String> {
    let dots: Vec<Dot> = policies
        .iter()
        .map(|p| Dot {
            label: p.name.clone(),
            delayed_fraction: p.internal_delayed_fraction,
            efficiency: p.efficiency,
            strong: p.name == "sublet",
        })
        .collect();
    let order = panel_order(trace);
    let rows = order.len().div_ceil(COLUMNS) as u32;
    let height = FRONTIER_HEIGHT + 30 + rows * PANEL_HEIGHT;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (top, bottom) = root.split_vertically(FRONTIER_HEIGHT);
        let (frontier_area, legend_area) = top.split_horizontally(FRONTIER_WIDTH);
        frontier(&frontier_area, title, &dots, false)?;
        legend(&legend_area, trace, groups.len().saturating_sub(order.len()))?;
        let (caption, grid) = bottom.split_vertically(30);
        caption
            .draw(&Text::new(
                "GPUs per node group under the `sublet` policy, over days from the trace start",
                (12, 8),
                ("sans-serif", 16).into_font(),
            ))
            .map_err(err)?;
        let cells = grid.split_evenly((rows.max(1) as usize, COLUMNS));
        for (cell, &g) in cells.iter().zip(&order) {
            panel(cell, trace, g, &groups[g])?;
        }
        root.present().map_err(err)?;
    }
    Ok(out)
}

/// The sweep's picture: every grid point on the frontier, the Pareto-best joined, the target's points strong.
pub fn sweep_svg(title: &str, points: &[Point]) -> Result<String, String> {
    let dots: Vec<Dot> = points
        .iter()
        .map(|p| Dot {
            label: format!("n{} i{} q{}", p.notice_seconds, p.idle_seconds, p.burst_quantile),
            delayed_fraction: p.internal_delayed_fraction,
            efficiency: p.efficiency,
            strong: p.meets_target,
        })
        .collect();
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, FRONTIER_HEIGHT + 40)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (frontier_area, legend_area) = root.split_horizontally(FRONTIER_WIDTH);
        frontier(&frontier_area, title, &dots, true)?;
        let font = ("sans-serif", 14).into_font();
        let notes = [
            "Each point: one replay of the grid,".to_string(),
            "labelled n<notice s> i<idle s> q<burst quantile>.".to_string(),
            "Filled green: meets the target (η ≥ 0.95,".to_string(),
            "p99 delay ≤ 120 s, delayed fraction ≤ 0.001).".to_string(),
            "The line joins the Pareto-best points:".to_string(),
            "no other point harvests more with less delay.".to_string(),
        ];
        for (i, n) in notes.iter().enumerate() {
            legend_area
                .draw(&Text::new(n.as_str(), (16, 40 + 22 * i as i32), font.clone()))
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(out)
}

/// The groups to draw, largest first, at most [`MAX_PANELS`], then in trace order.
fn panel_order(trace: &Trace) -> Vec<usize> {
    let mut order: Vec<usize> = (0..trace.groups.len()).collect();
    order.sort_by_key(|&g| std::cmp::Reverse(trace.groups[g].capacity_gpus));
    order.truncate(MAX_PANELS);
    order.sort_unstable();
    order
}

/// Points no other point beats: at least as much harvest with no more delay, one of them strictly.
fn pareto(dots: &[Dot]) -> Vec<(f64, f64)> {
    let mut best: Vec<(f64, f64)> = dots
        .iter()
        .filter(|d| {
            !dots.iter().any(|o| {
                o.efficiency >= d.efficiency
                    && o.delayed_fraction <= d.delayed_fraction
                    && (o.efficiency > d.efficiency || o.delayed_fraction < d.delayed_fraction)
            })
        })
        .map(|d| (d.delayed_fraction.max(DELAY_FLOOR), d.efficiency))
        .collect();
    best.sort_by(|a, b| a.0.total_cmp(&b.0));
    best.dedup();
    best
}

fn frontier(area: &DrawingArea<SVGBackend<'_>, Shift>, title: &str, dots: &[Dot], join: bool) -> Result<(), String> {
    let most = dots.iter().map(|d| d.delayed_fraction).fold(1e-3, f64::max) * 3.0;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d((DELAY_FLOOR / 2.0..most.min(2.0)).log_scale(), 0.0..1.08f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("internal GPU demand delayed (fraction, log scale; no delay drawn at 1e-6)")
        .y_desc("harvest η (share of what the oracle lends)")
        .x_label_formatter(&|x| format!("{x:.0e}"))
        .draw()
        .map_err(err)?;
    if join {
        chart
            .draw_series(LineSeries::new(pareto(dots), RGBColor(120, 120, 120).stroke_width(1)))
            .map_err(err)?;
    }
    for d in dots {
        let at = (d.delayed_fraction.max(DELAY_FLOOR), d.efficiency);
        let (color, size) = if d.strong {
            (RGBColor(0, 150, 60), 6)
        } else {
            (RGBColor(90, 90, 90), 4)
        };
        chart
            .draw_series(std::iter::once(Circle::new(at, size, color.filled())))
            .map_err(err)?;
        let label = if d.delayed_fraction == 0.0 && !join {
            format!("{} (no delay)", d.label)
        } else {
            d.label.clone()
        };
        chart
            .draw_series(std::iter::once(
                EmptyElement::at(at) + Text::new(label, (8, -14), ("sans-serif", 13).into_font()),
            ))
            .map_err(err)?;
    }
    Ok(())
}

fn legend(area: &DrawingArea<SVGBackend<'_>, Shift>, trace: &Trace, not_drawn: usize) -> Result<(), String> {
    let font = ("sans-serif", 14).into_font();
    area.draw(&Text::new(
        "Node group panels",
        (16, 30),
        ("sans-serif", 16).into_font(),
    ))
    .map_err(err)?;
    for (i, (label, _, color)) in LINES.iter().enumerate() {
        let y = 60 + 24 * i as i32;
        area.draw(&PathElement::new(vec![(16, y + 7), (46, y + 7)], color.stroke_width(3)))
            .map_err(err)?;
        area.draw(&Text::new(*label, (56, y), font.clone())).map_err(err)?;
    }
    let mut notes = vec![
        "Frontier: one point per policy; up and to".to_string(),
        "the left is better (more harvest, less delay).".to_string(),
        format!(
            "Gaps in a panel: steps without a reading ({} of {}).",
            trace.unknown_steps(),
            trace.steps()
        ),
    ];
    if not_drawn > 0 {
        notes.push(format!("{not_drawn} smaller groups are not drawn."));
    }
    for (i, n) in notes.iter().enumerate() {
        area.draw(&Text::new(n.as_str(), (16, 180 + 22 * i as i32), font.clone()))
            .map_err(err)?;
    }
    Ok(())
}

/// The lines of one group, averaged per bucket over the steps with a reading; a bucket without one ends the
/// line, and the next bucket with one starts a new line.
fn segments(trace: &Trace, g: usize, series: &[[u32; 4]], line: usize) -> Vec<Vec<(f64, f64)>> {
    let k = trace.groups.len();
    let day = 86_400.0 / trace.step_seconds as f64;
    let bucket = series.len().div_ceil(MAX_POINTS).max(1);
    let mut out: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    for (b, chunk) in series.chunks(bucket).enumerate() {
        let known: Vec<f64> = chunk
            .iter()
            .enumerate()
            .filter(|(i, _)| trace.known[(b * bucket + i) * k + g])
            .map(|(_, v)| f64::from(v[line]))
            .collect();
        if known.is_empty() {
            if !out.last().is_some_and(Vec::is_empty) {
                out.push(Vec::new());
            }
            continue;
        }
        let mean = known.iter().sum::<f64>() / known.len() as f64;
        out.last_mut()
            .expect("one segment at least")
            .push(((b * bucket) as f64 / day, mean));
    }
    out.retain(|s| !s.is_empty());
    out
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    trace: &Trace,
    g: usize,
    series: &[[u32; 4]],
) -> Result<(), String> {
    let day = 86_400.0 / trace.step_seconds as f64;
    let days = (series.len() as f64 / day).max(1e-9);
    let top = series.iter().map(|v| v[0]).max().unwrap_or(1).max(1) as f64 * 1.08;
    let mut chart = ChartBuilder::on(area)
        .caption(&trace.groups[g].name, ("sans-serif", 14))
        .margin(8)
        .x_label_area_size(22)
        .y_label_area_size(40)
        .build_cartesian_2d(0.0..days, 0.0..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_labels(5)
        .y_labels(4)
        .label_style(("sans-serif", 11))
        .draw()
        .map_err(err)?;
    for (_, line, color) in LINES {
        for segment in segments(trace, g, series, line) {
            chart
                .draw_series(LineSeries::new(segment, color.stroke_width(1)))
                .map_err(err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::trace::GroupSpec;

    fn trace(groups: usize, steps: usize, gap: Option<std::ops::Range<usize>>) -> Trace {
        let mut known = vec![true; groups * steps];
        for s in gap.into_iter().flatten() {
            known[s * groups] = false;
        }
        Trace {
            name: "t".into(),
            start: jiff::Timestamp::UNIX_EPOCH,
            step_seconds: 60,
            groups: (0..groups)
                .map(|g| GroupSpec {
                    name: format!("vc-{g}"),
                    capacity_gpus: 64,
                    gpus_per_node: 8,
                })
                .collect(),
            demand: vec![8; groups * steps],
            known,
            capacity: vec![],
        }
    }

    fn series(groups: usize, steps: usize) -> GroupSeries {
        (0..groups)
            .map(|_| {
                (0..steps as u32)
                    .map(|i| [64, i % 64, (64 - i % 64) / 2, (64 - i % 64) / 4])
                    .collect()
            })
            .collect()
    }

    fn policy(name: &str, efficiency: f64, delayed: f64) -> PolicyReport {
        let mut p = PolicyReport::from_meter(name, &Default::default(), 0.0);
        p.efficiency = efficiency;
        p.internal_delayed_fraction = delayed;
        p
    }

    fn policies() -> Vec<PolicyReport> {
        vec![
            policy("oracle", 1.0, 0.0),
            policy("sublet", 0.93, 0.0004),
            policy("no-lending", 0.0, 0.0),
            policy("naive", 1.0, 0.38),
        ]
    }

    /// Lines drawn thin in `color` (the legend's samples are thicker).
    fn polylines(svg: &str, color: &str) -> usize {
        svg.matches(&format!(r#"stroke="{color}" stroke-width="1""#)).count()
    }

    const DEMAND: &str = "#1E5ADC";

    /// The x of each `<text>` holding `label`.
    fn text_x(svg: &str, label: &str) -> Vec<f64> {
        let re = regex::Regex::new(r#"<text x="([0-9.]+)"[^>]*>\s*([^<]*?)\s*</text>"#).unwrap();
        re.captures_iter(svg)
            .filter(|c| &c[2] == label)
            .map(|c| c[1].parse().unwrap())
            .collect()
    }

    #[test]
    fn every_policy_is_a_labelled_point_of_the_frontier() {
        let svg = report_svg("test", &trace(2, 3000, None), &policies(), &series(2, 3000)).unwrap();
        assert!(svg.starts_with("<svg"));
        for label in ["oracle (no delay)", "sublet", "no-lending (no delay)", "naive"] {
            assert_eq!(text_x(&svg, label).len(), 1, "{label} missing");
        }
        assert!(svg.matches("<circle").count() >= 4);
    }

    #[test]
    fn one_panel_per_group_and_the_legend_beside_the_data() {
        let svg = report_svg("test", &trace(5, 3000, None), &policies(), &series(5, 3000)).unwrap();
        for g in 0..5 {
            assert_eq!(text_x(&svg, &format!("vc-{g}")).len(), 1, "panel vc-{g}");
        }
        // Each line of each panel is one polyline without gaps.
        assert_eq!(polylines(&svg, DEMAND), 5);
        for (label, _, _) in LINES {
            let xs = text_x(&svg, label);
            assert_eq!(xs.len(), 1, "{label}");
            assert!(
                xs[0] > f64::from(FRONTIER_WIDTH),
                "{label} at x {} is over the frontier",
                xs[0]
            );
        }
    }

    #[test]
    fn steps_without_a_reading_are_drawn_as_gaps() {
        let whole = report_svg("test", &trace(2, 6000, None), &policies(), &series(2, 6000)).unwrap();
        let gapped = report_svg("test", &trace(2, 6000, Some(2000..3000)), &policies(), &series(2, 6000)).unwrap();
        // Group 0's lines break in two; group 1's stay whole.
        assert_eq!(polylines(&whole, DEMAND), 2);
        assert_eq!(polylines(&gapped, DEMAND), 3);
    }

    #[test]
    fn the_sweep_joins_its_pareto_best_points() {
        let point = |q: f64, efficiency: f64, delayed: f64| Point {
            burst_quantile: q,
            idle_seconds: 900,
            notice_seconds: 60,
            efficiency,
            internal_delay_p99_seconds: 60,
            internal_delayed_fraction: delayed,
            mean_reserve_gpus: 4.0,
            meets_target: efficiency >= 0.95 && delayed <= 0.001,
            within_notice: true,
        };
        let points = [
            point(0.5, 0.99, 0.01),
            point(0.75, 0.96, 0.0005),
            point(0.9, 0.9, 0.002),
        ];
        let best = pareto(
            &points
                .iter()
                .map(|p| Dot {
                    label: String::new(),
                    delayed_fraction: p.internal_delayed_fraction,
                    efficiency: p.efficiency,
                    strong: false,
                })
                .collect::<Vec<_>>(),
        );
        assert_eq!(best, vec![(0.0005, 0.96), (0.01, 0.99)]);
        let svg = sweep_svg("sweep", &points).unwrap();
        assert_eq!(text_x(&svg, "n60 i900 q0.75").len(), 1);
        assert_eq!(polylines(&svg, "#787878"), 1);
    }

    #[test]
    fn only_svg_paths_are_taken() {
        assert!(check_path(Path::new("out/plot.svg")).is_ok());
        assert!(check_path(Path::new("PLOT.SVG")).is_ok());
        for bad in ["plot.png", "plot", "plot.svg.pdf"] {
            let e = check_path(Path::new(bad)).unwrap_err().to_string();
            assert!(e.contains("SVG only"), "{e}");
        }
    }
}
