//! How a lease is named on the nodes it holds: the planner matches nodes to leases by this key, and the
//! controller writes it into node labels and taints.

/// The form sublet uses for a lease in node labels and taint values: `NAMESPACE.NAME`, or, when that is
/// longer than the 63 characters a label value may hold, its first 54 characters and a hash of the whole.
pub fn lease_key(namespace: &str, name: &str) -> String {
    let full = format!("{namespace}.{name}");
    if full.len() <= 63 {
        return full;
    }
    // FNV-1a: stable across versions and platforms, unlike std's hasher.
    let hash = full
        .bytes()
        .fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    let head = full[..54].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{head}-{hash:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_keys_are_valid_label_values() {
        assert_eq!(lease_key("acme", "train"), "acme.train");
        let long = lease_key(
            "tenant-with-a-rather-long-namespace-name",
            "and-an-even-longer-lease-name-for-fun",
        );
        assert_eq!(long.len(), 63);
        assert!(long.starts_with("tenant-with-a-rather-long-namespace-name.and-an-even-"));
        assert_ne!(
            long,
            lease_key(
                "tenant-with-a-rather-long-namespace-name",
                "and-an-even-longer-lease-name-for-fun2"
            )
        );
        let ok = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
        assert!(long.chars().all(ok) && long.ends_with(|c: char| c.is_ascii_alphanumeric()));
    }
}
