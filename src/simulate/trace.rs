//! Traces of internal demand, read at run time: the Helios per-VC minute files or a generic CSV.
//!
//! Both become one [`Trace`]: node groups and, per step and group, the GPUs the group's internal work wants
//! and, when it changes, the GPUs the group has (whole nodes: nodes join and leave, the last ones first).
//! A step a group has no reading for (a logging gap, a missing CSV row) holds the group's last known demand
//! and capacity and is marked unknown: the replay goes on through it, the metrics skip it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;

/// A replayable trace.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    /// Where it came from, for the report.
    pub name: String,
    pub start: Timestamp,
    pub step_seconds: i64,
    pub groups: Vec<GroupSpec>,
    /// `demand[step * groups + g]`: GPUs group `g` wants (running + pending), as read, not capped.
    pub demand: Vec<u32>,
    /// `known[step * groups + g]`: whether that demand was read (false: held over a gap).
    pub known: Vec<bool>,
    /// `capacity[step * groups + g]`: GPUs group `g` has at that step, in whole nodes; empty when every
    /// group keeps its `capacity_gpus` throughout.
    pub capacity: Vec<u32>,
}

/// One node group: a team's quota of identical nodes.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupSpec {
    pub name: String,
    /// The most GPUs the group has at any step.
    pub capacity_gpus: u32,
    pub gpus_per_node: u32,
}

impl GroupSpec {
    /// The group's node sizes: whole nodes of `gpus_per_node`, the last one smaller when the capacity is
    /// not a multiple.
    pub fn node_sizes(&self) -> Vec<u32> {
        let per = self.gpus_per_node.max(1);
        let mut sizes = vec![per; (self.capacity_gpus / per) as usize];
        if !self.capacity_gpus.is_multiple_of(per) {
            sizes.push(self.capacity_gpus % per);
        }
        sizes
    }

    /// The GPUs of the group's first nodes that fit in `gpus`: a capacity in whole nodes.
    pub fn whole_nodes(&self, gpus: u32) -> u32 {
        let mut sum = 0;
        for size in self.node_sizes() {
            if sum + size > gpus {
                break;
            }
            sum += size;
        }
        sum
    }
}

impl Trace {
    pub fn steps(&self) -> usize {
        self.demand.len().checked_div(self.groups.len()).unwrap_or(0)
    }

    /// The most GPUs each group has, summed.
    pub fn capacity_gpus(&self) -> u32 {
        self.groups.iter().map(|g| g.capacity_gpus).sum()
    }

    /// The GPUs group `g` has at `step`.
    pub fn capacity_at(&self, step: usize, g: usize) -> u32 {
        if self.capacity.is_empty() {
            self.groups[g].capacity_gpus
        } else {
            self.capacity[step * self.groups.len() + g]
        }
    }

    /// The GPUs of all groups at `step`.
    pub fn capacity_total_at(&self, step: usize) -> u32 {
        (0..self.groups.len()).map(|g| self.capacity_at(step, g)).sum()
    }

    /// Whether some group's capacity changes over the trace.
    pub fn capacity_changes(&self) -> bool {
        !self.capacity.is_empty()
    }

    /// Sets the per-step capacities read (`read[step * groups + g]`, raw GPUs): each group's capacity is
    /// its largest, each step's is rounded down to whole nodes; none is kept when nothing changes.
    fn set_capacity(&mut self, read: Vec<u32>) {
        let k = self.groups.len();
        for (g, spec) in self.groups.iter_mut().enumerate() {
            spec.capacity_gpus = read.iter().skip(g).step_by(k.max(1)).copied().max().unwrap_or(0);
        }
        let rounded: Vec<u32> = read
            .iter()
            .enumerate()
            .map(|(i, &c)| self.groups[i % k].whole_nodes(c))
            .collect();
        let fixed = rounded
            .iter()
            .enumerate()
            .all(|(i, &c)| c == self.groups[i % k].capacity_gpus);
        self.capacity = if fixed { Vec::new() } else { rounded };
    }

    pub fn time(&self, step: usize) -> Timestamp {
        Timestamp::from_second(self.start.as_second() + step as i64 * self.step_seconds).unwrap_or(Timestamp::MAX)
    }

    /// Steps at which some group has no reading.
    pub fn unknown_steps(&self) -> usize {
        let k = self.groups.len().max(1);
        self.known.chunks(k).filter(|c| c.iter().any(|&x| !x)).count()
    }
}

/// Why a trace cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot read {path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{path}, line {line}: {message}")]
    Line { path: PathBuf, line: u64, message: String },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

fn line_err(path: &Path, line: u64, message: impl Into<String>) -> TraceError {
    TraceError::Line {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
}

fn file_err(path: &Path, message: impl Into<String>) -> TraceError {
    TraceError::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn csv_err(path: &Path, e: csv::Error) -> TraceError {
    let line = e.position().map(|p| p.line()).unwrap_or(0);
    match e.into_kind() {
        csv::ErrorKind::Io(error) => TraceError::Io {
            path: path.to_path_buf(),
            error,
        },
        kind => line_err(path, line, format!("not valid CSV: {kind:?}")),
    }
}

/// Reads a trace: a folder is read as Helios per-VC files, a file as the generic CSV.
pub fn load(path: &Path) -> Result<Trace, TraceError> {
    if path.is_dir() {
        load_helios(path)
    } else {
        load_csv(path)
    }
}

/// Reads the Helios per-VC minute files (`*_cluster_sequence_vc.csv`) of a folder. Each VC is a group of
/// 8-GPU nodes; its demand is `running_gpu_num + pending_gpu_num`. A minute in which every VC reads zero
/// jobs, running and pending GPUs is a logging gap, not an idle cluster: it is marked unknown.
pub fn load_helios(dir: &Path) -> Result<Trace, TraceError> {
    const SUFFIX: &str = "_cluster_sequence_vc.csv";
    let entries = std::fs::read_dir(dir).map_err(|error| TraceError::Io {
        path: dir.to_path_buf(),
        error,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(SUFFIX))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(file_err(dir, format!("no *{SUFFIX} files in the folder")));
    }
    let mut groups = Vec::new();
    let mut columns: Vec<Vec<(u32, u32, bool)>> = Vec::new();
    let mut times: Vec<String> = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .trim_end_matches(SUFFIX);
        let rows = read_helios_file(file, &mut times, i == 0)?;
        groups.push(GroupSpec {
            name: name.to_string(),
            capacity_gpus: 0,
            gpus_per_node: 8,
        });
        columns.push(rows);
    }
    let stamps = times
        .iter()
        .enumerate()
        .map(|(i, t)| parse_time(t).ok_or_else(|| line_err(&files[0], i as u64 + 2, format!("bad time {t:?}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let step_seconds = uniform_step(&stamps).map_err(|(i, m)| line_err(&files[0], i as u64 + 2, m))?;
    let steps = stamps.len();
    let k = groups.len();
    let mut demand = vec![0u32; steps * k];
    let mut known = vec![true; steps * k];
    let mut capacity = vec![0u32; steps * k];
    for s in 0..steps {
        let gap = columns.iter().all(|c| c[s].2);
        for g in 0..k {
            let held = if s > 0 { demand[(s - 1) * k + g] } else { 0 };
            demand[s * k + g] = if gap { held } else { columns[g][s].0 };
            capacity[s * k + g] = columns[g][s].1;
            known[s * k + g] = !gap;
        }
    }
    let mut trace = Trace {
        name: dir.display().to_string(),
        start: stamps[0],
        step_seconds,
        groups,
        demand,
        known,
        capacity: Vec::new(),
    };
    trace.set_capacity(capacity);
    Ok(trace)
}

/// One VC file, per row: (demand, capacity, whether the row reads all zeros). The first file sets the times;
/// the others must have the same ones.
fn read_helios_file(path: &Path, times: &mut Vec<String>, first: bool) -> Result<Vec<(u32, u32, bool)>, TraceError> {
    let mut r = csv::Reader::from_path(path).map_err(|e| csv_err(path, e))?;
    let headers = r.headers().map_err(|e| csv_err(path, e))?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| line_err(path, 1, format!("missing column {name}")))
    };
    let (c_time, c_total, c_run, c_pend, c_jobs) = (
        col("time")?,
        col("total_gpu_num")?,
        col("running_gpu_num")?,
        col("pending_gpu_num")?,
        col("total_job_num")?,
    );
    let mut capacity = None;
    let mut rows = Vec::new();
    let mut record = csv::StringRecord::new();
    let mut i = 0usize;
    while r.read_record(&mut record).map_err(|e| csv_err(path, e))? {
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let field = |c: usize| record.get(c).unwrap_or("").trim();
        let number = |c: usize, what: &str| {
            let v = field(c);
            parse_count(v).ok_or_else(|| line_err(path, line, format!("{what} {v:?} is not a whole number of GPUs")))
        };
        let time = field(c_time);
        if first {
            times.push(time.to_string());
        } else if times.get(i).map(String::as_str) != Some(time) {
            return Err(line_err(
                path,
                line,
                format!("time {time:?} does not match the other VC files at this row"),
            ));
        }
        let total = number(c_total, "total_gpu_num")?;
        let (run, pend) = (number(c_run, "running_gpu_num")?, number(c_pend, "pending_gpu_num")?);
        let jobs = field(c_jobs);
        let gap = run == 0 && pend == 0 && (jobs == "0" || jobs == "0.0");
        // A logging gap reads zero GPUs too: the capacity before it holds.
        let total = if gap { capacity.unwrap_or(total) } else { total };
        capacity = Some(total);
        rows.push((run.saturating_add(pend), total, gap));
        i += 1;
    }
    if rows.is_empty() {
        return Err(file_err(path, "no rows"));
    }
    if !first && rows.len() != times.len() {
        return Err(file_err(
            path,
            format!("{} rows where the other VC files have {}", rows.len(), times.len()),
        ));
    }
    Ok(rows)
}

/// A count that may be written as `12` or `12.0`.
fn parse_count(v: &str) -> Option<u32> {
    if let Ok(n) = v.parse::<u32>() {
        return Some(n);
    }
    let f: f64 = v.parse().ok()?;
    (f >= 0.0 && f.fract() == 0.0 && f <= f64::from(u32::MAX)).then_some(f as u32)
}

/// RFC 3339, Unix seconds, or a civil `YYYY-MM-DD HH:MM:SS` read as UTC.
fn parse_time(v: &str) -> Option<Timestamp> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<i64>() {
        return Timestamp::from_second(secs).ok();
    }
    if let Ok(t) = v.parse::<Timestamp>() {
        return Some(t);
    }
    v.parse::<DateTime>()
        .ok()?
        .to_zoned(TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// The common step between sorted distinct times; every time must sit on that grid.
fn uniform_step(times: &[Timestamp]) -> Result<i64, (usize, String)> {
    if times.len() < 2 {
        return Ok(60);
    }
    let mut step = i64::MAX;
    for (i, w) in times.windows(2).enumerate() {
        let d = w[1].as_second() - w[0].as_second();
        if d <= 0 {
            return Err((i + 1, format!("time {} is not after {}", w[1], w[0])));
        }
        step = step.min(d);
    }
    for (i, t) in times.iter().enumerate() {
        if (t.as_second() - times[0].as_second()) % step != 0 {
            return Err((i, format!("time {t} is off the {step}-second grid of the trace")));
        }
    }
    Ok(step)
}

/// The most group-steps a generic CSV may span: a year of minutes for 100 groups.
const MAX_CELLS: i64 = 366 * 1440 * 100;

/// Reads the generic CSV: `time,group,capacity_gpus,demand_gpus[,gpus_per_node]`, one row per group per
/// step. See the README for the format.
pub fn load_csv(path: &Path) -> Result<Trace, TraceError> {
    let mut r = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| csv_err(path, e))?;
    let headers = r.headers().map_err(|e| csv_err(path, e))?.clone();
    let cols = CsvColumns::find(path, &headers)?;
    let mut groups = CsvGroups::default();
    let mut rows = Vec::new();
    for record in r.records() {
        let record = record.map_err(|e| csv_err(path, e))?;
        rows.push(read_row(path, &record, &cols, &mut groups)?);
    }
    if rows.is_empty() {
        return Err(file_err(path, "no rows"));
    }
    let groups = groups.specs;
    let (start, step_seconds, steps) = time_grid(path, &rows, groups.len())?;
    let read = by_step(path, &rows, &groups, start, step_seconds, steps)?;
    let (demand, known, capacity) = carried_forward(&read, steps, groups.len());
    let mut trace = Trace {
        name: path.display().to_string(),
        start,
        step_seconds,
        groups,
        demand,
        known,
        capacity: Vec::new(),
    };
    trace.set_capacity(capacity);
    Ok(trace)
}

/// The positions of the generic CSV's columns.
struct CsvColumns {
    time: usize,
    group: usize,
    capacity: usize,
    demand: usize,
    gpus_per_node: Option<usize>,
}

impl CsvColumns {
    fn find(path: &Path, headers: &csv::StringRecord) -> Result<Self, TraceError> {
        let col = |name: &str| headers.iter().position(|h| h == name);
        let need = |name: &str| col(name).ok_or_else(|| line_err(path, 1, format!("missing column {name}")));
        Ok(Self {
            time: need("time")?,
            group: need("group")?,
            capacity: need("capacity_gpus")?,
            demand: need("demand_gpus")?,
            gpus_per_node: col("gpus_per_node"),
        })
    }
}

/// One row of the generic CSV, its group as an index into the groups read so far.
struct CsvRow {
    line: u64,
    time: Timestamp,
    group: usize,
    demand: u32,
    capacity: u32,
}

/// The groups in the order the CSV first names them.
#[derive(Default)]
struct CsvGroups {
    specs: Vec<GroupSpec>,
    index: HashMap<String, usize>,
}

impl CsvGroups {
    /// The index of group `name`, added with this row's capacity when new; a group's node size may not change.
    fn index(&mut self, path: &Path, line: u64, name: &str, capacity: u32, per: u32) -> Result<usize, TraceError> {
        match self.index.get(name) {
            Some(&g) => {
                let spec = &self.specs[g];
                if spec.gpus_per_node != per {
                    return Err(line_err(
                        path,
                        line,
                        format!(
                            "group {name} had gpus_per_node {} before; a group's nodes keep their size",
                            spec.gpus_per_node
                        ),
                    ));
                }
                Ok(g)
            }
            None => {
                self.index.insert(name.to_string(), self.specs.len());
                self.specs.push(GroupSpec {
                    name: name.to_string(),
                    capacity_gpus: capacity,
                    gpus_per_node: per,
                });
                Ok(self.specs.len() - 1)
            }
        }
    }
}

/// Parses one record (time, group, counts; gpus_per_node 8 when not given).
fn read_row(
    path: &Path,
    record: &csv::StringRecord,
    cols: &CsvColumns,
    groups: &mut CsvGroups,
) -> Result<CsvRow, TraceError> {
    let line = record.position().map(|p| p.line()).unwrap_or(0);
    let field = |c: usize| record.get(c).unwrap_or("");
    let count = |c: usize, what: &str| {
        let v = field(c);
        parse_count(v).ok_or_else(|| line_err(path, line, format!("{what} {v:?} is not a whole number")))
    };
    let t = field(cols.time);
    let time = parse_time(t).ok_or_else(|| {
        line_err(
            path,
            line,
            format!("time {t:?} is neither RFC 3339 (2020-05-01T00:00:00Z) nor Unix seconds"),
        )
    })?;
    let name = field(cols.group);
    if name.is_empty() {
        return Err(line_err(path, line, "group is empty"));
    }
    let capacity = count(cols.capacity, "capacity_gpus")?;
    let demand = count(cols.demand, "demand_gpus")?;
    let per = match cols.gpus_per_node.map(field) {
        None | Some("") => 8,
        Some(_) => count(cols.gpus_per_node.unwrap_or(0), "gpus_per_node")?,
    };
    if per == 0 {
        return Err(line_err(path, line, "gpus_per_node must be at least 1"));
    }
    Ok(CsvRow {
        line,
        time,
        group: groups.index(path, line, name, capacity, per)?,
        demand,
        capacity,
    })
}

/// The rows' first time, step and number of steps; the times must sit on one grid, and the grid times the
/// `k` groups may not exceed [`MAX_CELLS`].
fn time_grid(path: &Path, rows: &[CsvRow], k: usize) -> Result<(Timestamp, i64, usize), TraceError> {
    let mut times: Vec<Timestamp> = rows.iter().map(|r| r.time).collect();
    times.sort();
    times.dedup();
    let step_seconds = uniform_step(&times).map_err(|(i, m)| {
        let line = rows.iter().find(|r| r.time == times[i]).map_or(0, |r| r.line);
        line_err(path, line, m)
    })?;
    let start = times[0];
    let steps = (times[times.len() - 1].as_second() - start.as_second()) / step_seconds + 1;
    if steps.saturating_mul(k as i64) > MAX_CELLS {
        return Err(file_err(
            path,
            format!(
                "the rows span {steps} steps of {step_seconds} s for {k} groups; at most {MAX_CELLS} group-steps \
                 fit (are some times far from the others?)"
            ),
        ));
    }
    Ok((start, step_seconds, steps as usize))
}

/// The rows' (demand, capacity) by step and group (`step * k + group`), None where no row was given; two rows
/// for one group and step are refused.
fn by_step(
    path: &Path,
    rows: &[CsvRow],
    groups: &[GroupSpec],
    start: Timestamp,
    step_seconds: i64,
    steps: usize,
) -> Result<Vec<Option<(u32, u32)>>, TraceError> {
    let k = groups.len();
    let mut read: Vec<Option<(u32, u32)>> = vec![None; steps * k];
    for row in rows {
        let s = ((row.time.as_second() - start.as_second()) / step_seconds) as usize;
        let slot = &mut read[s * k + row.group];
        if slot.is_some() {
            return Err(line_err(
                path,
                row.line,
                format!("a second row for group {} at {}", groups[row.group].name, row.time),
            ));
        }
        *slot = Some((row.demand, row.capacity));
    }
    Ok(read)
}

/// Demand, known and capacity for every step and group: a missing row repeats the step before (not known).
fn carried_forward(read: &[Option<(u32, u32)>], steps: usize, k: usize) -> (Vec<u32>, Vec<bool>, Vec<u32>) {
    let mut demand = vec![0u32; steps * k];
    let mut known = vec![false; steps * k];
    let mut capacity = vec![0u32; steps * k];
    for s in 0..steps {
        for g in 0..k {
            let i = s * k + g;
            (demand[i], capacity[i], known[i]) = match read[i] {
                Some((d, c)) => (d, c, true),
                None if s > 0 => (demand[i - k], capacity[i - k], false),
                // Before a group's first row: its first capacity, no demand.
                None => (0, first_capacity(read, g, k), false),
            };
        }
    }
    (demand, known, capacity)
}

/// The capacity of group `g`'s first row.
fn first_capacity(read: &[Option<(u32, u32)>], g: usize, k: usize) -> u32 {
    read.iter().skip(g).step_by(k).flatten().next().map_or(0, |r| r.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_every_accepted_form() {
        let want: Timestamp = "2020-05-01T00:00:00Z".parse().unwrap();
        assert_eq!(parse_time("2020-05-01T00:00:00Z"), Some(want));
        assert_eq!(parse_time("2020-05-01T02:00:00+02:00"), Some(want));
        assert_eq!(parse_time("1588291200"), Some(want));
        assert_eq!(parse_time("2020-05-01 00:00:00"), Some(want));
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn counts_accept_integral_floats_only() {
        assert_eq!(parse_count("12"), Some(12));
        assert_eq!(parse_count("12.0"), Some(12));
        assert_eq!(parse_count("12.5"), None);
        assert_eq!(parse_count("-1"), None);
        assert_eq!(parse_count(""), None);
    }

    #[test]
    fn node_sizes_keep_the_remainder() {
        let g = |c, p| GroupSpec {
            name: "g".into(),
            capacity_gpus: c,
            gpus_per_node: p,
        };
        assert_eq!(g(16, 8).node_sizes(), vec![8, 8]);
        assert_eq!(g(20, 8).node_sizes(), vec![8, 8, 4]);
        assert_eq!(g(0, 8).node_sizes(), Vec::<u32>::new());
        assert_eq!(g(20, 8).whole_nodes(12), 8);
        assert_eq!(g(20, 8).whole_nodes(20), 20);
    }

    #[test]
    fn steps_must_share_a_grid() {
        let t = |s: i64| Timestamp::from_second(s).unwrap();
        assert_eq!(uniform_step(&[t(0), t(60), t(180)]), Ok(60));
        assert!(uniform_step(&[t(0), t(60), t(90)]).is_ok_and(|s| s == 30));
        assert!(uniform_step(&[t(0), t(60), t(150)]).is_err());
    }
}
