//! `sublet simulate`: trace parsing, the oracle bound, the baselines' known properties, the replay through
//! the planner, and the command's JSON.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use sublet::policy::PoolPolicy;
use sublet::simulate::{self, Options, PolicyReport, TenantSpec, Trace, TraceError};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn csv_err(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let err = simulate::load_csv(&write(dir.path(), "t.csv", text)).unwrap_err();
    err.to_string()
}

/// A test pool: the defaults of `sublet simulate`'s pool without the learned reserve (whose tests say so),
/// priced, with the given idle window.
fn policy(idle_for: i64) -> PoolPolicy {
    let mut p = simulate::pool_policy(simulate::DEFAULT_POOL_YAML).unwrap();
    p.idle_for_seconds = idle_for;
    p.reserve.learned = None;
    p
}

fn run(trace: &Trace, policy: PoolPolicy) -> Vec<PolicyReport> {
    run_with(trace, policy, None)
}

fn run_with(trace: &Trace, policy: PoolPolicy, tenants: Option<TenantSpec>) -> Vec<PolicyReport> {
    let opts = Options {
        policy,
        static_percents: vec![25, 50],
        tenants,
        eviction_grace_seconds: 0,
    };
    simulate::run(trace, &opts, &mut |_, _| {}).report.policies
}

fn row<'a>(rows: &'a [PolicyReport], name: &str) -> &'a PolicyReport {
    rows.iter().find(|r| r.name == name).unwrap()
}

/// A trace of one group `g`, a row a minute for `minutes` minutes: (capacity, demand) in GPUs at minute `m`.
fn one_group(minutes: u32, at: impl Fn(u32) -> (u32, u32)) -> Trace {
    let mut csv = String::from("time,group,capacity_gpus,demand_gpus\n");
    for m in 0..minutes {
        let (capacity, demand) = at(m);
        writeln!(csv, "{},g,{capacity},{demand}", m * 60).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    simulate::load(&write(dir.path(), "t.csv", &csv)).unwrap()
}

/// Three groups over two days of minutes with waves of different periods, bursts and quiet stretches.
fn waves_csv() -> String {
    let mut s = String::from("time,group,capacity_gpus,demand_gpus,gpus_per_node\n");
    let groups = [("a", 64u32, 8u32, 97u64), ("b", 32, 8, 331), ("c", 20, 4, 53)];
    let mut x: u64 = 7;
    for m in 0..2 * 1440u64 {
        for &(name, cap, per, period) in &groups {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let phase = (m % period) as f64 / period as f64;
            let base = (f64::from(cap) * (0.5 + 0.45 * (phase * std::f64::consts::TAU).sin())) as u32;
            let burst = if (x >> 33).is_multiple_of(40) { cap / 2 } else { 0 };
            let demand = (base + burst).min(cap + 8);
            writeln!(s, "{},{name},{cap},{demand},{per}", 1_700_000_000 + m * 60).unwrap();
        }
    }
    s
}

#[test]
fn generic_csv_reads_both_time_forms_and_holds_missing_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "t.csv",
        "time,group,capacity_gpus,demand_gpus\n\
         2026-01-01T00:00:00Z,a,16,4\n\
         2026-01-01T00:00:00Z,b,8,8\n\
         1767225660,a,16,12\n\
         2026-01-01T00:02:00Z,a,16,0\n\
         2026-01-01T00:02:00Z,b,8,2\n",
    );
    let t = simulate::load(&path).unwrap();
    assert_eq!(t.step_seconds, 60);
    assert_eq!(t.steps(), 3);
    assert_eq!(t.groups.len(), 2);
    assert_eq!((t.groups[0].gpus_per_node, t.groups[0].capacity_gpus), (8, 16));
    // Row by row: a, b. Group b has no row at 00:01: its 8 is held and marked unknown.
    assert_eq!(t.demand, vec![4, 8, 12, 8, 0, 2]);
    assert_eq!(t.known, vec![true, true, true, false, true, true]);
    assert_eq!(t.unknown_steps(), 1);
}

#[test]
fn malformed_csv_names_the_line() {
    let head = "time,group,capacity_gpus,demand_gpus\n";
    let cases = [
        (
            format!("{head}1767225600,a,16,4\n1767225660,a,16,x\n"),
            "line 3",
            "demand_gpus \"x\"",
        ),
        (
            format!("{head}1767225600,a,16,4\nnoon,a,16,4\n"),
            "line 3",
            "neither RFC 3339",
        ),
        (
            "time,group,capacity_gpus,demand_gpus,gpus_per_node\n1767225600,a,16,4,8\n1767225660,a,24,4,4\n"
                .to_string(),
            "line 3",
            "keep their size",
        ),
        (
            format!("{head}1767225600,a,16,4\n1767225600,a,16,5\n"),
            "line 3",
            "a second row",
        ),
        (format!("{head}1767225600,a,16,-2\n"), "line 2", "not a whole number"),
        (format!("{head}1767225600,,16,2\n"), "line 2", "group is empty"),
        (format!("{head}1767225600,a,16,2\n1767225660,a,16\n"), "line 3", "CSV"),
        (
            "time,group,demand_gpus\n1,a,2\n".to_string(),
            "line 1",
            "missing column capacity_gpus",
        ),
        (
            format!("{head}1767225600,a,16,4\n1767225660,a,16,4\n1767225750,a,16,4\n"),
            "line 4",
            "grid",
        ),
    ];
    for (text, line, what) in cases {
        let err = csv_err(&text);
        assert!(
            err.contains(line) && err.contains(what),
            "{err:?} should name {line} and {what}"
        );
    }
    assert!(csv_err(head).contains("no rows"));
    // Two rows a century apart, one second after one of them: far too many steps to replay.
    let far = csv_err(&format!("{head}0,a,8,1\n1,a,8,1\n3155760000,a,8,1\n"));
    assert!(far.contains("group-steps fit"), "{far}");
}

/// Writes a Helios-style VC file: (running, pending, jobs) per minute from 2020-05-01 00:00.
fn helios_file(dir: &Path, vc: &str, total: u32, rows: &[(u32, u32, u32)]) {
    let mut s = String::from(
        "time,total_job_num,running_job_num,pending_job_num,total_gpujob_num,running_gpujob_num,\
         pending_gpujob_num,total_gpu_num,running_gpu_num,pending_gpu_num,idle_gpu_num,gpu_utilization\n",
    );
    for (m, &(run, pend, jobs)) in rows.iter().enumerate() {
        let idle = total.saturating_sub(run);
        writeln!(
            s,
            "2020-05-01 {:02}:{:02}:00,{jobs},{jobs},0,{jobs},{jobs},0,{total},{run},{pend},{idle},0.5",
            m / 60,
            m % 60
        )
        .unwrap();
    }
    write(dir, &format!("{vc}_cluster_sequence_vc.csv"), &s);
}

#[test]
fn helios_folder_reads_vcs_and_marks_logging_gaps() {
    let dir = tempfile::tempdir().unwrap();
    // Minute 2 reads all zeros in both VCs: a logging gap. Minute 3 is zero in vcB only: an idle VC.
    helios_file(dir.path(), "vcA", 16, &[(8, 2, 3), (10, 0, 3), (0, 0, 0), (4, 0, 1)]);
    helios_file(dir.path(), "vcB", 32, &[(16, 0, 2), (24, 8, 4), (0, 0, 0), (0, 0, 0)]);
    write(dir.path(), "README.md", "not a VC file");
    let t = simulate::load(dir.path()).unwrap();
    assert_eq!(
        t.groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
        ["vcA", "vcB"]
    );
    assert_eq!(t.capacity_gpus(), 48);
    assert_eq!(t.start.to_string(), "2020-05-01T00:00:00Z");
    assert_eq!(t.demand, vec![10, 16, 10, 32, 10, 32, 4, 0]);
    assert_eq!(t.known, vec![true, true, true, true, false, false, true, true]);
}

#[test]
fn malformed_helios_files_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    helios_file(dir.path(), "vcA", 16, &[(8, 2, 3), (10, 0, 3)]);
    let bad = std::fs::read_to_string(dir.path().join("vcA_cluster_sequence_vc.csv"))
        .unwrap()
        .replace(",16,10,0,", ",16,ten,0,");
    write(dir.path(), "vcA_cluster_sequence_vc.csv", &bad);
    let err = simulate::load(dir.path()).unwrap_err();
    assert!(matches!(err, TraceError::Line { line: 3, .. }), "{err}");
    assert!(err.to_string().contains("running_gpu_num \"ten\""), "{err}");
    let empty = tempfile::tempdir().unwrap();
    assert!(
        simulate::load(empty.path())
            .unwrap_err()
            .to_string()
            .contains("no *_cluster_sequence_vc.csv")
    );
}

#[test]
fn oracle_bounds_every_policy_and_naive_harvests_most() {
    let dir = tempfile::tempdir().unwrap();
    let trace = simulate::load(&write(dir.path(), "w.csv", &waves_csv())).unwrap();
    for idle_for in [0, 900] {
        let rows = run(&trace, policy(idle_for));
        let oracle = row(&rows, "oracle");
        assert!(oracle.oracle_gpu_hours > 0.0);
        assert!(oracle.oracle_gpu_hours <= oracle.idle_gpu_hours);
        for r in &rows {
            assert!(r.harvested_gpu_hours <= oracle.harvested_gpu_hours + 1e-9, "{}", r.name);
            assert!(r.efficiency <= 1.0 + 1e-12, "{}", r.name);
            assert_eq!(r.capacity_gpu_hours, oracle.capacity_gpu_hours);
        }
        let naive = row(&rows, "naive");
        for r in rows.iter().filter(|r| r.name != "oracle") {
            assert!(
                naive.harvested_gpu_hours >= r.harvested_gpu_hours,
                "{} harvests more than naive",
                r.name
            );
        }
        let none = row(&rows, "no-lending");
        assert_eq!(none.harvested_gpu_hours, 0.0);
        assert_eq!(none.internal_delay_gpu_minutes, 0.0);
        assert_eq!(none.internal_delay_max_seconds, 0);
        assert_eq!((none.notices, none.revenue), (0, 0.0));
        // Lending for good delays internal work on this trace; the oracle never does.
        assert!(row(&rows, "static-50").internal_delay_gpu_minutes > 0.0);
        assert_eq!(oracle.internal_delay_gpu_minutes, 0.0);
    }
}

#[test]
fn sublet_lends_after_the_idle_window_and_reclaims_within_the_notice() {
    let trace = idle_then_busy();
    let rows = run(&trace, policy(900));
    let s = row(&rows, "sublet");
    // Lent at minute 15 (the idle window), leased at once, until the notice at minute 60 runs out at 62.
    assert!((s.harvested_gpu_hours - 16.0 * 45.0 / 60.0).abs() < 1e-9, "{s:?}");
    assert_eq!(s.notices, 2);
    // Both nodes come back exactly at the deadline: one episode of the notice's length.
    assert_eq!(s.internal_delay_max_seconds, 120);
    assert_eq!(s.internal_delay_gpu_minutes, 32.0);
    assert!((s.evictions_per_1000_lent_gpu_hours - 2.0 * 1000.0 / (16.0 * 47.0 / 60.0)).abs() < 1e-6);
    // The oracle lends the whole idle hour and gives notice two minutes before the need.
    let o = row(&rows, "oracle");
    assert!((o.oracle_gpu_hours - 16.0).abs() < 1e-9);
    assert_eq!(o.notices, 2);
    // Naive lends from minute 0.
    assert!((row(&rows, "naive").harvested_gpu_hours - 16.0).abs() < 1e-9);
}

#[test]
fn tenants_from_a_spec_lease_what_they_ask_and_leave_at_the_end() {
    // Two 8-GPU nodes idle for six hours; 16-GPU leases of 30 minutes arrive about twice an hour.
    let trace = one_group(360, |_| (16, 0));
    let spec = TenantSpec::from_yaml(
        "arrivalsPerHour: 2\ngpusPerLease: 16\nduration: {distribution: fixed, seconds: 1800}\nseed: 4",
    )
    .unwrap();
    let rows = run_with(&trace, policy(0), Some(spec.clone()));
    for name in ["sublet", "naive", "static-50"] {
        let r = row(&rows, name);
        // Nobody is reclaimed for internal work: tenants leave on their own, nothing is evicted or delayed.
        assert_eq!(r.evictions_per_1000_lent_gpu_hours, 0.0, "{name}");
        assert_eq!(r.internal_delay_gpu_minutes, 0.0, "{name}");
    }
    let s = row(&rows, "sublet");
    let bound: u64 = spec.arrivals(360 * 60).len() as u64 * 16 * 30;
    assert!(s.harvested_gpu_hours > 0.0);
    assert!(s.harvested_gpu_hours * 60.0 <= bound as f64, "{s:?}");
    // static-50 lends one node: a 16-GPU lease never fits it.
    assert_eq!(row(&rows, "static-50").harvested_gpu_hours, 0.0);
    // A price cap under the pool's price keeps every tenant out.
    let capped = TenantSpec {
        max_price_per_gpu_hour: Some(1.0),
        ..spec
    };
    let rows = run_with(&trace, policy(0), Some(capped));
    assert_eq!(row(&rows, "sublet").harvested_gpu_hours, 0.0);
    assert_eq!(row(&rows, "naive").harvested_gpu_hours, 0.0);
}

/// One group of two 8-GPU nodes: idle for an hour, then fully wanted for an hour.
fn idle_then_busy() -> Trace {
    one_group(120, |m| (16, if m < 60 { 0 } else { 16 }))
}

#[test]
fn deadlines_between_steps_are_kept_to_the_second() {
    let trace = idle_then_busy();
    // Notice 90 s: the nodes are back at 60:90, so minutes 60 and 61 wait (120 s); notice 150 s: back at
    // 62:30, so minutes 60 to 62 wait.
    for (notice, episode) in [(90, 120), (150, 180)] {
        let mut p = policy(900);
        p.notice_seconds = notice;
        let rows = run(&trace, p);
        let s = row(&rows, "sublet");
        assert_eq!(s.internal_delay_max_seconds, episode, "notice {notice}");
        assert_eq!(s.notices, 2);
        // The tenants held the nodes from minute 15 to the deadline, and were evicted there.
        let held_hours = 16.0 * ((60 - 15) as f64 * 60.0 + notice as f64) / 3600.0;
        let per_1000 = 2.0 * 1000.0 / held_hours;
        assert!(
            (s.evictions_per_1000_lent_gpu_hours - per_1000).abs() / per_1000 < 0.05,
            "{s:?}"
        );
    }
}

#[test]
fn evicted_pods_take_their_grace_before_the_node_returns() {
    let trace = idle_then_busy();
    let opts = |grace: u64| Options {
        policy: policy(900),
        static_percents: vec![],
        tenants: None,
        eviction_grace_seconds: grace as i64,
    };
    for (grace, episode) in [(0u64, 120), (30, 180), (60, 180), (61, 240)] {
        let out = simulate::run(&trace, &opts(grace), &mut |_, _| {});
        for name in ["sublet", "naive"] {
            let r = row(&out.report.policies, name);
            assert_eq!(r.internal_delay_max_seconds, episode, "{name}, grace {grace}");
        }
        // Out of internal use until notice plus grace has passed (the notice came at minute 60).
        let back = (60 * 60 + 120 + grace).div_ceil(60) as usize;
        assert_eq!(out.series[back - 1][2], 16, "grace {grace}");
        assert_eq!(out.series[back][2], 0, "grace {grace}");
    }
    // A deadline and an end of grace between steps: notice at 60:00, deadline 61:30, pods gone 61:50.
    let mut o = opts(20);
    o.policy.notice_seconds = 90;
    let out = simulate::run(&trace, &o, &mut |_, _| {});
    assert_eq!(row(&out.report.policies, "sublet").internal_delay_max_seconds, 120);
    assert_eq!((out.series[61][2], out.series[62][2]), (16, 0));
}

#[test]
fn nothing_new_is_lent_while_the_trace_has_no_reading() {
    // Idle throughout, but group g has no rows from minute 10 to 39: signals are stale there.
    let mut csv = String::from("time,group,capacity_gpus,demand_gpus\n");
    for m in 0..60 {
        if !(10..40).contains(&m) {
            writeln!(csv, "{},g,16,0", m * 60).unwrap();
        }
        writeln!(csv, "{},h,8,8", m * 60).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = simulate::load(&write(dir.path(), "t.csv", &csv)).unwrap();
    assert_eq!(trace.unknown_steps(), 30);
    let opts = Options {
        policy: policy(900),
        static_percents: vec![],
        tenants: None,
        eviction_grace_seconds: 0,
    };
    let out = simulate::run(&trace, &opts, &mut |_, _| {});
    let lent: Vec<u32> = out.series.iter().map(|v| v[2]).collect();
    // The idle window (15 minutes) passes during the gap: lending waits for fresh readings at minute 40.
    assert!(lent[..40].iter().all(|&g| g == 0), "{lent:?}");
    assert_eq!(lent[40], 16);
    // The gap is left out of g's sums: 30 known minutes of g's 16 GPUs, 60 of h's 8.
    let s = row(&out.report.policies, "sublet");
    assert!((s.capacity_gpu_hours - (16.0 * 30.0 + 8.0 * 60.0) / 60.0).abs() < 1e-9);
}

#[test]
fn a_reserve_keeps_nodes_back() {
    let dir = tempfile::tempdir().unwrap();
    let trace = simulate::load(&write(dir.path(), "w.csv", &waves_csv())).unwrap();
    let plain = run(&trace, policy(0));
    let mut reserved = policy(0);
    reserved.reserve.percent = 25;
    let reserved = run(&trace, reserved);
    let (a, b) = (row(&plain, "sublet"), row(&reserved, "sublet"));
    assert!(b.harvested_gpu_hours < a.harvested_gpu_hours);
    assert!(b.internal_delay_gpu_minutes < a.internal_delay_gpu_minutes);
}

#[test]
fn json_output_has_the_documented_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "w.csv", &waves_csv());
    let plot = dir.path().join("p.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_sublet"))
        .args(["simulate", "--json", "-", "--static", "30", "--plot"])
        .arg(&plot)
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Not a terminal: no progress bar.
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let policies = v["policies"].as_array().unwrap();
    let names: Vec<&str> = policies.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["oracle", "sublet", "no-lending", "static-30", "naive"]);
    let fields = [
        "name",
        "capacity_gpu_hours",
        "idle_gpu_hours",
        "oracle_gpu_hours",
        "harvested_gpu_hours",
        "efficiency",
        "internal_delay_gpu_minutes",
        "internal_delay_p50_seconds",
        "internal_delay_p99_seconds",
        "internal_delay_max_seconds",
        "internal_delayed_fraction",
        "notices",
        "evictions_per_1000_lent_gpu_hours",
        "revenue",
        "mean_reserve_gpus",
        "reclaim_ahead_notices",
        "lost_to_capacity_change",
    ];
    for p in policies {
        let mut keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        let mut want = fields.to_vec();
        want.sort();
        assert_eq!(keys, want);
        for f in &fields[1..] {
            assert!(p[f].is_number(), "{f} is not a number");
        }
    }
    assert!(std::fs::read_to_string(&plot).unwrap().contains("internal demand"));
}

#[test]
fn the_command_explains_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "t.csv",
        "time,group,capacity_gpus,demand_gpus\n1,a,8,zero\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_sublet"))
        .args(["simulate"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2") && err.contains("demand_gpus"), "{err}");
    let pool = write(dir.path(), "pool.yaml", "kind: TenantPool\nspec: [1]\n");
    let out = Command::new(env!("CARGO_BIN_EXE_sublet"))
        .args(["simulate", "--pool"])
        .arg(&pool)
        .arg(&path)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a TenantPool"));
}

/// The Helios Earth month, when the shared traces sit beside the checkout (always in CI).
#[test]
fn helios_earth_when_present() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/traces/helios-earth");
    if !dir.is_dir() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must have {}",
            dir.display()
        );
        eprintln!("skipped: {} is absent", dir.display());
        return;
    }
    let mut trace = simulate::load(&dir).unwrap();
    assert_eq!(trace.groups.len(), 16);
    assert_eq!(trace.capacity_gpus(), 856);
    assert_eq!(trace.steps(), 44_640);
    // The two logging gaps: 2020-05-09 23:56 to 2020-05-11 00:01 and 2020-05-12 14:01 to 16:02.
    assert!(
        (1550..1580).contains(&trace.unknown_steps()),
        "{}",
        trace.unknown_steps()
    );
    assert!(!trace.known[trace.groups.len() * (9 * 1440 + 12 * 60)]);
    // Two days, to keep the test quick in a debug build; the whole month is the benchmark's.
    let k = trace.groups.len();
    trace.demand.truncate(2 * 1440 * k);
    trace.known.truncate(2 * 1440 * k);
    trace.capacity.truncate(2 * 1440 * k);
    let rows = run(&trace, policy(900));
    let oracle = row(&rows, "oracle");
    for r in &rows {
        assert!(r.harvested_gpu_hours <= oracle.harvested_gpu_hours + 1e-9, "{}", r.name);
    }
    assert!(row(&rows, "sublet").harvested_gpu_hours > 0.0);
}

/// One group of 8-GPU nodes with no internal work: 24 GPUs for an hour, 8 for half an hour, 24 again for
/// an hour and a half.
fn capacity_steps() -> Trace {
    one_group(180, |m| (if (60..90).contains(&m) { 8 } else { 24 }, 0))
}

#[test]
fn capacity_that_steps_down_and_back_is_taken_as_it_comes() {
    let trace = capacity_steps();
    assert_eq!(trace.capacity_gpus(), 24);
    assert_eq!(
        (
            trace.capacity_at(59, 0),
            trace.capacity_at(60, 0),
            trace.capacity_at(90, 0)
        ),
        (24, 8, 24)
    );
    let rows = run(&trace, policy(900));
    // Every policy sees the same capacity: 24 GPUs for 150 minutes and 8 for 30.
    let hours = (24.0 * 150.0 + 8.0 * 30.0) / 60.0;
    for r in &rows {
        assert!(
            (r.capacity_gpu_hours - hours).abs() < 1e-9,
            "{}: {}",
            r.name,
            r.capacity_gpu_hours
        );
        assert!(
            r.harvested_gpu_hours <= row(&rows, "oracle").harvested_gpu_hours + 1e-9,
            "{}",
            r.name
        );
        assert_eq!(r.internal_delay_gpu_minutes, 0.0, "{}", r.name);
    }
    // sublet leases all three nodes after the idle window; two leave at minute 60 while leased: lost, not
    // noticed nor evicted. They come back idle and are leased again after another idle window.
    let s = row(&rows, "sublet");
    assert_eq!(s.lost_to_capacity_change, 2);
    assert_eq!(s.notices, 0);
    assert_eq!(s.evictions_per_1000_lent_gpu_hours, 0.0);
    // Leased: 24 GPUs from minute 15 to 60, the 8 that stay to 105, then 24 (the others idle since 90).
    let leased = (24.0 * 45.0 + 8.0 * 45.0 + 24.0 * 75.0) / 60.0;
    assert!(
        (s.harvested_gpu_hours - leased).abs() < 1e-9,
        "{}",
        s.harvested_gpu_hours
    );
    // naive leases at once and loses the same two nodes.
    assert_eq!(row(&rows, "naive").lost_to_capacity_change, 2);
    assert_eq!(row(&rows, "no-lending").lost_to_capacity_change, 0);
}

#[test]
fn work_on_a_leaving_node_waits_and_is_placed_again() {
    // 24 GPUs wanted 16 for the first hour; at minute 60 one node leaves (16 GPUs left, all wanted), at
    // minute 90 two leave (8 left): 8 of the 16 wait, as they would on a real cluster without lending.
    let trace = one_group(120, |m| {
        let cap = match m {
            0..60 => 24,
            60..90 => 16,
            _ => 8,
        };
        (cap, 16)
    });
    let rows = run(&trace, policy(900));
    // Demand above capacity is the group's own queueing: no policy is charged with it, and the 8 GPUs
    // free in the first hour are lent by sublet (one node) and back before the capacity falls to 16.
    let s = row(&rows, "sublet");
    assert_eq!(row(&rows, "no-lending").internal_delay_gpu_minutes, 0.0);
    assert_eq!(s.lost_to_capacity_change, 1, "the lent node is the one that leaves");
    assert_eq!(s.internal_delay_gpu_minutes, 0.0);
}

#[test]
fn the_default_pool_learns_an_hour_before_it_lends() {
    // Two idle 8-GPU nodes for three hours.
    let trace = one_group(180, |_| (16, 0));
    let pool = simulate::pool_policy(simulate::DEFAULT_POOL_YAML).unwrap();
    assert!(
        pool.reserve
            .learned
            .is_some_and(|l| l.reclaim_ahead && l.quantile.is_none())
    );
    let rows = run(&trace, pool);
    let s = row(&rows, "sublet");
    // Every free GPU is held until the history holds an hour; then, demand never having risen, nothing is.
    assert!(
        (s.harvested_gpu_hours - 16.0 * 120.0 / 60.0).abs() < 1e-9,
        "{}",
        s.harvested_gpu_hours
    );
    assert!(
        (s.mean_reserve_gpus - 16.0 * 60.0 / 180.0).abs() < 1e-9,
        "{}",
        s.mean_reserve_gpus
    );
}

#[test]
fn capacity_that_steps_up_down_and_back_is_taken_as_it_comes() {
    // One group of 8-GPU nodes whose internal work wants 8 GPUs throughout: 16 GPUs for an hour, then two
    // nodes join (32) for an hour, three leave (8) for half an hour, and one comes back (16) for an hour.
    let trace = one_group(210, |m| {
        let cap = match m {
            0..60 => 16,
            60..120 => 32,
            120..150 => 8,
            _ => 16,
        };
        (cap, 8)
    });
    assert_eq!(trace.capacity_gpus(), 32, "the group's nodes are the most it ever has");
    assert_eq!(
        [0, 60, 120, 150].map(|step| trace.capacity_at(step, 0)),
        [16, 32, 8, 16]
    );
    let pool = policy(900);
    let price = pool.prices.for_model(None);
    let rows = run(&trace, pool);
    let hours = (16.0 * 60.0 + 32.0 * 60.0 + 8.0 * 30.0 + 16.0 * 60.0) / 60.0;
    for r in &rows {
        // Every policy sees the same capacity, and none delays the work that always fits on the first node.
        assert!(
            (r.capacity_gpu_hours - hours).abs() < 1e-9,
            "{}: {}",
            r.name,
            r.capacity_gpu_hours
        );
        assert_eq!(r.internal_delay_gpu_minutes, 0.0, "{}", r.name);
        assert!(
            r.harvested_gpu_hours <= row(&rows, "oracle").harvested_gpu_hours + 1e-9,
            "{}",
            r.name
        );
    }
    let s = row(&rows, "sublet");
    // Node 1 is idle from the start and leased at minute 15; nodes 2 and 3 join idle at minute 60 and are
    // leased after their own idle window, at 75; all three leave at 120 while leased: lost, neither noticed
    // nor evicted. Node 1 joins again at 150, idle, and is leased at 165 to the end.
    assert_eq!(s.lost_to_capacity_change, 3);
    assert_eq!(s.notices, 0);
    assert_eq!(s.evictions_per_1000_lent_gpu_hours, 0.0);
    let leased_gpu_hours = 8.0 * (105.0 + 2.0 * 45.0 + 45.0) / 60.0;
    assert!(
        (s.revenue - leased_gpu_hours * price).abs() < 1e-9,
        "{} GPU-hours leased",
        s.revenue / price
    );
    // naive leases every idle node the step it is idle, joiners included, and loses the same three.
    let naive = row(&rows, "naive");
    assert_eq!(naive.lost_to_capacity_change, 3);
    assert!(
        (naive.revenue - 8.0 * (120.0 + 2.0 * 60.0 + 60.0) / 60.0 * price).abs() < 1e-9,
        "{} GPU-hours leased",
        naive.revenue / price
    );
    assert_eq!(row(&rows, "no-lending").lost_to_capacity_change, 0);
}
