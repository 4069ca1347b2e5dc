//! From a trace file to the demo's [`DemandCurve`]: node groups sized by each group's capacity, demand per step.
//!
//! The reading itself is `sublet simulate`'s (`crate::simulate::load`: Helios per-VC folders and the generic
//! CSV); this module only turns its groups into node groups and its demand into rows, capped at capacity.

use std::path::Path;

use jiff::Timestamp;

use super::DemoError;
use super::nodes::{DEFAULT_MODELS, NodeGroup};
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

/// Reads a trace with `sublet simulate`'s reader: a folder of Helios per-VC files or a generic CSV.
pub fn load(path: &Path) -> Result<DemandCurve, DemoError> {
    let trace = crate::simulate::load(path).map_err(|e| DemoError::Input {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let groups: Vec<TraceGroup> = trace
        .groups
        .iter()
        .map(|g| TraceGroup {
            name: g.name.clone(),
            capacity_gpus: g.capacity_gpus,
            gpus_per_node: g.gpus_per_node,
        })
        .collect();
    curve(
        trace.name.clone(),
        trace.start,
        trace.step_seconds,
        &groups,
        &trace.demand,
    )
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
