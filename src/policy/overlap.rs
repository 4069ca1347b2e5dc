//! Nodes this pool selects that belong to another pool: an older pool that selects them too, or the pool
//! whose marks they carry. A lease waiting on them says whose they are.

use std::collections::BTreeMap;

use super::draft::Draft;

/// The nodes this pool selects that are not its members (found once per plan; usually none).
pub(super) fn selected_elsewhere(w: &Draft) -> Vec<usize> {
    (0..w.nodes.len())
        .filter(|&n| w.nodes[n].selected && !w.nodes[n].member)
        .collect()
}

/// Of `nodes` (from [`selected_elsewhere`]), the GPUs (of `model`, when one is asked for) that another pool
/// holds, by pool.
pub(super) fn held_elsewhere(w: &Draft, nodes: &[usize], model: Option<&str>) -> BTreeMap<String, u32> {
    let mut by_pool: BTreeMap<String, u32> = BTreeMap::new();
    for &n in nodes {
        let node = &w.nodes[n];
        if model.is_some_and(|m| w.model(n) != Some(m)) {
            continue;
        }
        let view = &w.snap.nodes[n];
        let other = view
            .marks
            .pool
            .as_deref()
            .filter(|p| *p != w.policy.name)
            .or(view.claimed_by.as_deref());
        if let Some(other) = other {
            *by_pool.entry(other.to_string()).or_default() += node.gpus;
        }
    }
    by_pool
}

/// Says where the GPUs held by other pools are, for a lease's reason: empty when none are.
pub(super) fn because(held: &BTreeMap<String, u32>) -> String {
    if held.is_empty() {
        return String::new();
    }
    let pools: Vec<String> = held.iter().map(|(p, g)| format!("{g} on nodes of pool {p}")).collect();
    format!(
        "; of the GPUs this pool selects, {} (selected by both pools; the older pool, or the one holding a node, keeps it)",
        pools.join(", ")
    )
}
