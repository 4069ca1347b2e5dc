//! How a lease is named on the nodes it holds: the planner matches nodes to leases by this key, and the
//! controller writes it into node labels and taints.

use std::collections::HashMap;

/// The longest namespace name sublet serves leases in: its lease keys keep the `NAMESPACE.` prefix (what the
/// chart's admission policy checks a tenant pod's lease by) only up to this length.
pub const MAX_NAMESPACE_LEN: usize = 52;

/// Characters of a shortened key kept from `NAMESPACE.NAME` (the namespace and its dot, at most).
const HEAD: usize = MAX_NAMESPACE_LEN + 1;
/// Base-62 digits of the hash in a shortened key: 63 characters in all with the head and the `_`.
const HASH_DIGITS: usize = 63 - HEAD - 1;

/// The form sublet uses for a lease in node labels and taint values: `NAMESPACE.NAME`, or, when that is
/// longer than the 63 characters a label value may hold, its first 53 characters, `_` and nine base-62 digits
/// of a 64-bit hash of the whole (about 53 bits). No object name holds `_` or capitals, so a shortened key
/// never equals a whole one; two shortened keys that still collide are refused by [`refusals`], never shared.
pub fn lease_key(namespace: &str, name: &str) -> String {
    let full = format!("{namespace}.{name}");
    if full.len() <= 63 {
        return full;
    }
    // FNV-1a, 64 bits: stable across versions and platforms, unlike std's hasher.
    let mut hash = full.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut tail = String::with_capacity(HASH_DIGITS);
    for _ in 0..HASH_DIGITS {
        tail.push(char::from(DIGITS[(hash % 62) as usize]));
        hash /= 62;
    }
    format!("{}_{tail}", &full[..HEAD])
}

/// A lease as [`refusals`] weighs it.
pub struct KeyedLease<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// Holds nodes now (a bound lease keeps its key whatever its age).
    pub holding: bool,
    /// Creation time, in any unit that orders.
    pub created: i64,
}

/// The leases sublet binds no node to, with why: a namespace longer than [`MAX_NAMESPACE_LEN`], or a key that
/// an older lease (or one holding nodes) already has. Only leases still to be served should be passed (not
/// the released ones).
pub fn refusals(leases: &[KeyedLease]) -> HashMap<(String, String), String> {
    refusals_by(leases, lease_key)
}

fn refusals_by(leases: &[KeyedLease], key: impl Fn(&str, &str) -> String) -> HashMap<(String, String), String> {
    let mut refused = HashMap::new();
    let mut order: Vec<&KeyedLease> = leases.iter().collect();
    order.sort_by_key(|l| (!l.holding, l.created, l.namespace, l.name));
    let mut owner: HashMap<String, &KeyedLease> = HashMap::new();
    for l in order {
        let id = (l.namespace.to_string(), l.name.to_string());
        if l.namespace.len() > MAX_NAMESPACE_LEN {
            let why = format!(
                "namespace {} has {} characters: sublet serves leases only in namespaces of at most {MAX_NAMESPACE_LEN} (the lease key on the nodes, NAMESPACE.NAME in 63 characters, would lose its namespace)",
                l.namespace,
                l.namespace.len()
            );
            refused.insert(id, why);
            continue;
        }
        let k = key(l.namespace, l.name);
        match owner.get(&k) {
            Some(first) => {
                let why = format!(
                    "its node key {k} is already lease {}/{}'s: sublet does not share a key; recreate the lease under another name",
                    first.namespace, first.name
                );
                refused.insert(id, why);
            }
            None => {
                owner.insert(k, l);
            }
        }
    }
    refused
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_label_value(v: &str) -> bool {
        let ok = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
        v.len() <= 63
            && v.chars().all(ok)
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric())
    }

    #[test]
    fn lease_keys_are_valid_label_values() {
        assert_eq!(lease_key("acme", "train"), "acme.train");
        let long = lease_key(
            "tenant-with-a-rather-long-namespace-name",
            "and-an-even-longer-lease-name-for-fun",
        );
        assert_eq!(long.len(), 63);
        assert!(
            long.starts_with("tenant-with-a-rather-long-namespace-name.and-an-even-_"),
            "{long}"
        );
        assert_ne!(
            long,
            lease_key(
                "tenant-with-a-rather-long-namespace-name",
                "and-an-even-longer-lease-name-for-fun2"
            )
        );
        assert!(valid_label_value(&long), "{long}");
        // A head that ends in a dot or a dash is still a valid label value.
        let ns = "n".repeat(MAX_NAMESPACE_LEN);
        let key = lease_key(&ns, &"x".repeat(40));
        assert!(key.starts_with(&format!("{ns}._")) && valid_label_value(&key), "{key}");
    }

    #[test]
    fn every_namespace_up_to_the_limit_keeps_its_prefix() {
        for len in 1..=MAX_NAMESPACE_LEN {
            let ns = "a".repeat(len);
            for name_len in [1, 10, 62 - len, 63 - len, 64 - len, 200] {
                let name = "b".repeat(name_len.max(1));
                let key = lease_key(&ns, &name);
                assert!(key.starts_with(&format!("{ns}.")), "{ns} {name}: {key}");
                assert!(valid_label_value(&key), "{key}");
            }
        }
        // One more character, and the prefix is gone: such namespaces are refused.
        let ns = "a".repeat(MAX_NAMESPACE_LEN + 1);
        assert!(!lease_key(&ns, "job-with-a-name").starts_with(&format!("{ns}.")));
    }

    #[test]
    fn a_shortened_key_never_equals_a_whole_one() {
        // The old form (head, dash, hex hash) let a second lease take the first's key by name: its name was the
        // first's key without the namespace. `_` is in no object name, so that name does not exist now.
        let long = lease_key("acme", &"l".repeat(80));
        let suffix = long.strip_prefix("acme.").unwrap();
        assert!(suffix.contains('_'), "{long}");
        let dns_name = |s: &str| {
            s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c))
        };
        assert!(!dns_name(suffix));
    }

    fn lease<'a>(namespace: &'a str, name: &'a str, holding: bool, created: i64) -> KeyedLease<'a> {
        KeyedLease {
            namespace,
            name,
            holding,
            created,
        }
    }

    #[test]
    fn a_collision_is_refused_and_the_key_kept_by_its_first_holder() {
        // Every lease of `acme` gets one key, as if the hash collided everywhere.
        let same = |ns: &str, _: &str| format!("{ns}.same");
        let leases = [
            lease("acme", "young", false, 30),
            lease("acme", "old", false, 10),
            lease("acme", "bound-late", true, 20),
            lease("globex", "own", false, 5),
        ];
        let refused = refusals_by(&leases, same);
        assert_eq!(refused.len(), 2, "{refused:?}");
        let why = &refused[&("acme".to_string(), "old".to_string())];
        assert!(why.contains("acme.same is already lease acme/bound-late's"), "{why}");
        assert!(refused.contains_key(&("acme".to_string(), "young".to_string())));
        // Without a holder, the oldest keeps it.
        let refused = refusals_by(&leases[..2], same);
        assert_eq!(
            refused.keys().collect::<Vec<_>>(),
            [&("acme".to_string(), "young".to_string())]
        );
        // Real keys of distinct leases do not collide.
        assert!(refusals(&leases).is_empty());
    }

    #[test]
    fn a_namespace_over_the_limit_is_refused_with_the_reason() {
        let ns = "t".repeat(53);
        let leases = [lease(&ns, "job", false, 1)];
        let refused = refusals(&leases);
        let why = &refused[&(ns.clone(), "job".to_string())];
        assert!(
            why.contains("has 53 characters: sublet serves leases only in namespaces of at most 52"),
            "{why}"
        );
    }
}
