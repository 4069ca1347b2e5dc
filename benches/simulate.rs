//! The Helios Earth month (16 groups, 856 GPUs, 44,640 minutes) replayed for every policy of a default run.
//!
//! `cargo bench --bench simulate` prints the time to load the trace and the time of each whole replay
//! (oracle, sublet through plan(), no-lending, static-50, naive), best and median of a few runs. The trace
//! is read from `../shared/traces/helios-earth` or from the folder in `SUBLET_HELIOS`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sublet::simulate::{self, Options};

fn main() {
    let dir = std::env::var_os("SUBLET_HELIOS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/traces/helios-earth"));
    if !dir.is_dir() {
        eprintln!("no Helios trace at {}: set SUBLET_HELIOS", dir.display());
        return;
    }
    let t = Instant::now();
    let mut trace = simulate::load(&dir).expect("the Helios trace loads");
    // `cargo test --all-targets` runs this without `--bench`, in a debug build: replay one day, once.
    if !std::env::args().any(|a| a == "--bench") {
        let k = trace.groups.len();
        trace.demand.truncate(1440 * k);
        trace.known.truncate(1440 * k);
        trace.capacity.truncate(1440 * k);
    }
    println!(
        "load: {:.3} s ({} steps, {} groups)",
        secs(t.elapsed()),
        trace.steps(),
        trace.groups.len()
    );
    let opts = Options {
        policy: simulate::pool_policy(simulate::DEFAULT_POOL_YAML).expect("the default pool parses"),
        static_percents: vec![50],
        tenants: None,
        eviction_grace_seconds: 0,
    };
    let runs = std::env::var("SUBLET_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3usize);
    let runs = if std::env::args().any(|a| a == "--bench") {
        runs
    } else {
        1
    };
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let out = simulate::run(&trace, &opts, &mut |_, _| {});
        times.push(t.elapsed());
        std::hint::black_box(out);
    }
    times.sort();
    println!(
        "replay, all policies: best {:.3} s, median {:.3} s over {} runs",
        secs(times[0]),
        secs(times[times.len() / 2]),
        times.len()
    );
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
