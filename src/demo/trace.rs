//! From a trace file to the demo's [`DemandCurve`]: node groups sized by each group's capacity, demand per step.
//!
//! The reading itself belongs to `sublet simulate`'s trace module; until that module is in this build, a
//! minimal reader of the generic CSV (`time,group,capacity_gpus,demand_gpus[,gpus_per_node]`, times in Unix
//! seconds or RFC 3339, one row per group per step) stands in.

use std::collections::HashMap;
use std::path::Path;

use jiff::Timestamp;

use super::DemoError;
use super::cluster::{DEFAULT_MODELS, NodeGroup};
use super::workload::DemandCurve;

/// One group as a trace describes it.
pub struct TraceGroup {
    pub name: String,
    pub capacity_gpus: u32,
    pub gpus_per_node: u32,
}

/// Builds the curve: each group becomes `ceil(capacity / gpus_per_node)` nodes of the first default model.
/// `demand` is `[step * groups + group]`.
pub fn curve(
    name: String,
    start: Timestamp,
    step_seconds: i64,
    groups: &[TraceGroup],
    demand: &[u32],
) -> Result<DemandCurve, DemoError> {
    if groups.is_empty() || demand.is_empty() || step_seconds <= 0 {
        return Err(DemoError::Setup(format!("trace {name} has no steps or no groups")));
    }
    let mut used = std::collections::HashSet::new();
    let node_groups: Vec<NodeGroup> = groups
        .iter()
        .map(|g| {
            let mut label = label_name(&g.name);
            while !used.insert(label.clone()) {
                label.push('x');
            }
            let per = g.gpus_per_node.max(1);
            NodeGroup {
                name: label,
                count: g.capacity_gpus.div_ceil(per),
                gpus_per_node: per,
                model: DEFAULT_MODELS[0].to_string(),
            }
        })
        .collect();
    let rows = demand
        .chunks(groups.len())
        .map(|row| row.iter().zip(groups).map(|(d, g)| (*d).min(g.capacity_gpus)).collect())
        .collect();
    Ok(DemandCurve {
        name,
        start,
        step_seconds,
        groups: node_groups,
        demand: rows,
    })
}

/// A group name fit for node names and label values: lower-case letters, digits and dashes, at most 40.
fn label_name(name: &str) -> String {
    let s: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    let s = s.trim_matches('-').to_string();
    if s.is_empty() { "group".into() } else { s }
}

/// Reads a generic CSV trace.
pub fn load(path: &Path) -> Result<DemandCurve, DemoError> {
    let err = |message: String| DemoError::Input {
        path: path.display().to_string(),
        message,
    };
    if path.is_dir() {
        return Err(err(
            "a folder of Helios files needs `sublet simulate`'s trace reader, which this build lacks; give a CSV"
                .into(),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .map(|(_, l)| l.split(',').map(str::trim).collect())
        .unwrap_or_default();
    let col = |n: &str| header.iter().position(|h| *h == n);
    let need = |n: &str| col(n).ok_or_else(|| err(format!("missing column {n}")));
    let (ct, cg, cc, cd) = (
        need("time")?,
        need("group")?,
        need("capacity_gpus")?,
        need("demand_gpus")?,
    );
    let cp = col("gpus_per_node");
    let mut groups: Vec<TraceGroup> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut cells: Vec<(i64, usize, u32)> = Vec::new();
    for (i, line) in lines {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let at = |c: usize| f.get(c).copied().unwrap_or("");
        let bad = |what: &str| err(format!("line {}: {what} {:?} is not valid", i + 1, line));
        let time = parse_time(at(ct)).ok_or_else(|| bad("time"))?;
        let num = |c: usize, what: &str| {
            at(c)
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0 && v.fract() == 0.0 && *v < 1e7)
                .map(|v| v as u32)
                .ok_or_else(|| bad(what))
        };
        let (capacity, demand) = (num(cc, "capacity_gpus")?, num(cd, "demand_gpus")?);
        let per = match cp {
            Some(c) if !at(c).is_empty() => num(c, "gpus_per_node")?.max(1),
            _ => 8,
        };
        let name = at(cg);
        if name.is_empty() {
            return Err(bad("group"));
        }
        let g = *index.entry(name.to_string()).or_insert_with(|| {
            groups.push(TraceGroup {
                name: name.to_string(),
                capacity_gpus: capacity,
                gpus_per_node: per,
            });
            groups.len() - 1
        });
        cells.push((time, g, demand));
    }
    let mut times: Vec<i64> = cells.iter().map(|c| c.0).collect();
    times.sort_unstable();
    times.dedup();
    let step = times.windows(2).map(|w| w[1] - w[0]).min().unwrap_or(60).max(1);
    let first = *times.first().ok_or_else(|| err("no rows".into()))?;
    let steps = ((times[times.len() - 1] - first) / step + 1) as usize;
    if steps > 10_000_000 / groups.len().max(1) {
        return Err(err("too many steps".into()));
    }
    let mut demand = vec![u32::MAX; steps * groups.len()];
    for (t, g, d) in cells {
        demand[((t - first) / step) as usize * groups.len() + g] = d;
    }
    // A step a group has no row for holds its last known demand.
    for g in 0..groups.len() {
        let mut last = 0;
        for s in 0..steps {
            let cell = &mut demand[s * groups.len() + g];
            if *cell == u32::MAX {
                *cell = last;
            }
            last = *cell;
        }
    }
    let start = Timestamp::from_second(first).map_err(|e| err(e.to_string()))?;
    curve(path.display().to_string(), start, step, &groups, &demand)
}

fn parse_time(s: &str) -> Option<i64> {
    if let Ok(n) = s.parse::<i64>() {
        return Some(n);
    }
    s.parse::<Timestamp>().ok().map(|t| t.as_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generic_csv_becomes_groups_and_steps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(
            &path,
            "time,group,capacity_gpus,demand_gpus\n0,VC_a,16,4\n0,vc-b,8,8\n60,VC_a,16,30\n120,VC_a,16,2\n",
        )
        .unwrap();
        let c = load(&path).unwrap();
        assert_eq!(c.step_seconds, 60);
        assert_eq!(c.groups.len(), 2);
        assert_eq!((c.groups[0].name.as_str(), c.groups[0].count), ("vc-a", 2));
        // Capped at capacity; a missing row holds the last value.
        assert_eq!(c.demand, vec![vec![4, 8], vec![16, 8], vec![2, 8]]);
    }

    #[test]
    fn bad_rows_say_where() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(&path, "time,group,capacity_gpus,demand_gpus\n0,a,16,four\n").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("demand_gpus"), "{e}");
        std::fs::write(&path, "time,group\n0,a\n").unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("capacity_gpus"));
    }
}
