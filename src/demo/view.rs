//! What the person running the demo sees: an intro, then a live view redrawn with plain ANSI codes on a
//! terminal, or one log line every two seconds (and one per controller decision) when stdout is not one.
//!
//! ```text
//!   summary::State (shared) ──every 250 ms──▶ render() ──▶ terminal (clear + redraw)
//!                           ──every 2 s─────▶ line()   ──▶ stdout (CI logs)
//! ```

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::SimClock;
use super::summary::{State, Summary};

pub struct Intro {
    pub url: String,
    pub kubeconfig: PathBuf,
    pub nodes: u32,
    pub gpus: u32,
    pub source: String,
    pub speed: f64,
    pub duration: Duration,
    pub signals: String,
    /// The controller's /metrics URL.
    pub metrics: String,
}

pub fn intro(i: &Intro) {
    let kc = i.kubeconfig.display();
    println!(
        "sublet demo: {} nodes, {} GPUs; internal work from {}; {:.0}x speed for {:.0} s.",
        i.nodes,
        i.gpus,
        i.source,
        i.speed,
        i.duration.as_secs_f64()
    );
    println!("Signals: {}.", i.signals);
    println!(
        "Controller metrics at {} (Prometheus text format; /livez and /readyz beside it).",
        i.metrics
    );
    println!("API server at {}; while it runs, try:", i.url);
    println!("  export KUBECONFIG={kc}");
    println!("  kubectl get tenantpools");
    println!("  kubectl get gpuleases -A");
    println!("  kubectl get nodes -L sublet.dev/state,sublet.dev/lease");
    println!();
    let _ = std::io::stdout().flush();
}

/// Counts of nodes by sublet state: internal, lent, leased, reclaiming, scrubbing (neither internal nor leased).
pub fn node_counts(s: &State) -> [usize; 5] {
    let mut c = [0; 5];
    for n in s.nodes.values() {
        let i = match n.state.as_deref() {
            None => 0,
            Some("lent") => 1,
            Some("leased") => 2,
            Some("scrubbing") => 4,
            _ => 3,
        };
        c[i] += 1;
    }
    c
}

pub fn line(s: &State, clock: &SimClock, wall: f64) -> String {
    let [internal, lent, leased, reclaiming, scrubbing] = node_counts(s);
    let (pods, gpus) = s.internal_pending();
    let c = &s.counters;
    format!(
        "t={wall:.1}s {} nodes internal={internal} lent={lent} leased={leased} reclaiming={reclaiming} \
         scrubbing={scrubbing} internal_pending={pods}pods/{gpus}gpus leases_bound={} notices={} evictions={} \
         checkpoints={} scrubs={}/{} harvested={:.1}GPU-h revenue={:.2} violations={}",
        clock.label(),
        c.leases_bound,
        c.notices,
        c.evictions,
        c.checkpoints,
        c.scrubbed,
        c.scrubs,
        s.leased_gpu_seconds / 3600.0,
        s.revenue,
        s.violations.len()
    )
}

pub fn render(s: &State, clock: &SimClock, wall: f64) -> String {
    let [internal, lent, leased, reclaiming, scrubbing] = node_counts(s);
    let (pods, gpus) = s.internal_pending();
    let c = &s.counters;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\x1b[1msublet demo\x1b[0m  {}  ({:.0}x, {wall:.0} s)",
        clock.label(),
        clock.speed
    );
    let _ = writeln!(
        out,
        "nodes      internal {internal:>4}   \x1b[36mlent {lent:>4}\x1b[0m   \x1b[32mleased {leased:>4}\x1b[0m   \x1b[33mreclaiming {reclaiming:>4}\x1b[0m   \x1b[35mscrubbing {scrubbing:>4}\x1b[0m"
    );
    let _ = writeln!(out, "internal   pending pods {pods}, GPUs {gpus}");
    let _ = writeln!(
        out,
        "tenants    leases bound {}  notices {}  checkpoints {}  evictions {}  scrubs done {} of {}",
        c.leases_bound, c.notices, c.checkpoints, c.evictions, c.scrubbed, c.scrubs
    );
    let _ = writeln!(
        out,
        "harvested  {:.1} GPU-hours   revenue {:.2} USD",
        s.leased_gpu_seconds / 3600.0,
        s.revenue
    );
    let rules = if s.violations.is_empty() {
        "\x1b[32mok\x1b[0m".to_string()
    } else {
        format!("\x1b[31m{} broken\x1b[0m", s.violations.len())
    };
    let _ = writeln!(out, "invariants {rules}");
    let _ = writeln!(out, "\nleases");
    for ((ns, name), phase) in s.leases.iter().take(8) {
        let nodes = s
            .nodes
            .values()
            .filter(|n| n.lease.as_deref() == Some(&format!("{ns}.{name}")))
            .count();
        let lease = format!("{ns}/{name}");
        let _ = writeln!(out, "  {lease:<24} {phase:<11} {nodes} nodes");
    }
    let _ = writeln!(out, "\nlast decisions");
    for d in s.decisions.iter().rev().take(8) {
        let d: String = d.chars().take(110).collect();
        let _ = writeln!(out, "  {d}");
    }
    out
}

/// Shows the state until `stop`.
pub async fn run(
    state: Arc<Mutex<State>>,
    loads: super::prom::Loads,
    clock: SimClock,
    live: bool,
    mut stop: watch::Receiver<bool>,
) {
    let period = if live {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(2)
    };
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let wall = clock.wall_start.elapsed().as_secs_f64();
        let mut s = state.lock().expect("demo state");
        let text = frame(&mut s, mean_load(&loads), &clock, wall, live);
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

/// The mean GPU load, in percent.
pub fn mean_load(loads: &super::prom::Loads) -> f64 {
    let l = loads.lock().expect("loads");
    // A mean of non-negative loads; `abs` keeps a rounding -0 from printing as "-0 %".
    (l.values().sum::<f64>() / l.len().max(1) as f64).abs()
}

/// One redraw: the live view on a terminal; otherwise the decisions not printed yet and one log line.
/// Drawn once more from the final state after the demo stops, so the last frame agrees with the summary.
pub fn frame(s: &mut State, util: f64, clock: &SimClock, wall: f64, live: bool) -> String {
    let mut out = String::new();
    if live {
        let _ = write!(out, "\x1b[H\x1b[2J{}", render(s, clock, wall));
        let _ = writeln!(out, "\nmean GPU utilization {util:.0} %");
    } else {
        let skip = s
            .decisions
            .len()
            .saturating_sub((s.decisions_total - s.decisions_printed) as usize);
        for d in s.decisions.iter().skip(skip) {
            let _ = writeln!(out, "decision: {d}");
        }
        s.decisions_printed = s.decisions_total;
        let _ = writeln!(out, "{} gpu_util={util:.0}%", line(s, clock, wall));
    }
    out
}

/// The summary for people.
pub fn print_summary(s: &Summary) {
    let d = &s.internal_delay;
    println!();
    println!(
        "sublet demo summary ({:.0} s wall, {:.1} simulated hours, {})",
        s.wall_seconds, s.simulated_hours, s.workload
    );
    println!(
        "  harvested    {:.1} GPU-hours, revenue {:.2} {}",
        s.harvested_gpu_hours, s.revenue, s.currency
    );
    println!(
        "  decisions    {} lends, {} binds to leases, {} returns (a node may go out and back many times); {} leases bound",
        s.counters.lends, s.counters.binds, s.counters.returns, s.counters.leases_bound
    );
    println!(
        "  reclaims     {} notices, {} tenant pods checkpointed, {} evicted at the deadline",
        s.counters.notices, s.counters.checkpoints, s.counters.evictions
    );
    println!(
        "  scrubs       {} nodes scrubbed between holders, of {} that entered Scrubbing",
        s.counters.scrubbed, s.counters.scrubs
    );
    println!(
        "  internal     {} pods; delay added: {} pods, {:.2} pod-hours in total, mean {:.1} min, max {:.1} min",
        d.pods, d.delayed_pods, d.total_hours, d.mean_minutes, d.max_minutes
    );
    if s.invariants.ok {
        println!("  invariants   ok (rules 1-3 of the README's \"The rules sublet keeps\" held at every watch event)");
        if s.invariants.lend_races_settled > 0 {
            println!(
                "               {} nodes were lent just as an internal pod was bound to them and taken back at once",
                s.invariants.lend_races_settled
            );
        }
    } else {
        println!(
            "  invariants   BROKEN: {} violations, {} events missed",
            s.invariants.violations.len(),
            s.invariants.missed_events
        );
        for v in &s.invariants.violations {
            println!("    rule {}: {}", v.rule, v.detail);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::summary::NodeInfo;

    fn state() -> State {
        let mut s = State::default();
        for (name, st) in [
            ("a", None),
            ("b", Some("lent")),
            ("c", Some("leased")),
            ("d", Some("reclaiming")),
            ("e", Some("scrubbing")),
        ] {
            let info = NodeInfo {
                state: st.map(str::to_string),
                lease: (st == Some("leased")).then(|| "acme.job-1".to_string()),
                group: "h100".into(),
                gpus: 8,
                price: 2.5,
            };
            s.nodes.insert(name.into(), info);
        }
        s.leases.insert(("acme".into(), "job-1".into()), "Bound".into());
        s.counters.notices = 2;
        s.leased_gpu_seconds = 7200.0;
        s.decisions.push_back("Bound job-1: bound c".into());
        s
    }

    #[test]
    fn the_log_line_and_the_live_view_show_the_counts() {
        let s = state();
        assert_eq!(node_counts(&s), [1, 1, 1, 1, 1]);
        let clock = SimClock::new(100.0, jiff::Timestamp::UNIX_EPOCH);
        let l = line(&s, &clock, 1.0);
        assert!(l.contains("internal=1 lent=1 leased=1 reclaiming=1 scrubbing=1"), "{l}");
        assert!(l.contains("notices=2") && l.contains("harvested=2.0GPU-h"), "{l}");
        let v = render(&s, &clock, 1.0);
        assert!(v.contains("acme/job-1") && v.contains("1 nodes"), "{v}");
        assert!(v.contains("Bound job-1: bound c"), "{v}");
    }

    #[test]
    fn idle_gpus_read_0_percent_not_minus_0_and_each_decision_is_printed_once() {
        let loads: super::super::prom::Loads = Arc::new(Mutex::new([("a".to_string(), -0.0)].into()));
        assert_eq!(format!("{:.0} %", mean_load(&loads)), "0 %");
        let clock = SimClock::new(2160.0, jiff::Timestamp::UNIX_EPOCH);
        let mut s = state();
        s.decisions_total = 1;
        let first = frame(&mut s, 0.0, &clock, 1.0, false);
        assert!(
            first.contains("decision: Bound job-1") && first.contains("gpu_util=0%"),
            "{first}"
        );
        let again = frame(&mut s, 0.0, &clock, 2.0, false);
        assert!(!again.contains("decision:"), "{again}");
    }
}
