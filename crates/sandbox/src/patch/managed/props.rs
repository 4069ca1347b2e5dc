//! Property tests: random sequences of applies and updates by several managers on one Deployment keep the
//! field-ownership invariants the real server keeps.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::fieldset::{FieldSet, item_elements};
use super::*;
use crate::patch::schema::Node;

#[derive(Clone, Debug)]
enum Op {
    /// An apply of labels, replicas and containers (name, image) by one of three appliers.
    Apply {
        manager: usize,
        labels: Vec<(String, String)>,
        replicas: Option<i64>,
        containers: Vec<(String, String)>,
        force: bool,
    },
    /// A plain update by "editor" setting a label and a container image.
    Update {
        label: (String, String),
        container: (String, String),
    },
}

fn op() -> impl Strategy<Value = Op> {
    let pair = |keys: &'static str| (keys, "[0-2]").prop_map(|(k, v)| (k, v));
    let apply = (
        0..3usize,
        prop::collection::btree_map("[a-c]", "[0-2]", 0..3).prop_map(|m| m.into_iter().collect::<Vec<_>>()),
        prop::option::of(1..3i64),
        prop::collection::vec(pair("[x-z]"), 0..3),
        any::<bool>(),
    )
        .prop_map(|(manager, labels, replicas, containers, force)| Op::Apply {
            manager,
            labels,
            replicas,
            containers,
            force,
        });
    let update = (pair("[a-c]"), pair("[x-z]")).prop_map(|(label, container)| Op::Update { label, container });
    prop_oneof![3 => apply, 1 => update]
}

fn config(labels: &[(String, String)], replicas: Option<i64>, containers: &[(String, String)]) -> Value {
    let mut c = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}});
    if !labels.is_empty() {
        c["metadata"]["labels"] = labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    }
    if let Some(r) = replicas {
        c["spec"]["replicas"] = json!(r);
    }
    if !containers.is_empty() {
        let mut seen = std::collections::HashSet::new();
        let items: Vec<Value> = containers
            .iter()
            .filter(|(n, _)| seen.insert(n.clone()))
            .map(|(n, i)| json!({"name": n, "image": i}))
            .collect();
        c["spec"]["template"] = json!({"spec": {"containers": items}});
    }
    c
}

/// Whether every member path of `set` exists in `value`.
fn owned_paths_exist(value: &Value, set: &FieldSet, node: &Node) -> bool {
    set.children.iter().all(|(pe, child)| {
        let found = match value {
            Value::Object(m) => pe
                .strip_prefix("f:")
                .and_then(|name| m.get(name).map(|v| (v, node.field(name)))),
            Value::Array(list) => {
                let elements = item_elements(list, node);
                elements.iter().position(|e| e == pe).map(|i| (&list[i], node.item()))
            }
            _ => None,
        };
        found.is_some_and(|(v, n)| owned_paths_exist(v, child, n))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn ownership_invariants_hold(ops in prop::collection::vec(op(), 1..8)) {
        let schema = MergeSchema::builtin("apps", "Deployment");
        let mut obj = record_update(None, &config(&[], Some(1), &[]), "creator", None, &schema, "2026-01-01T00:00:00Z");
        let mut last_applied: Vec<Option<Value>> = vec![None; 3];
        for (step, op) in ops.into_iter().enumerate() {
            let now = format!("2026-01-01T00:01:{step:02}Z");
            match op {
                Op::Apply { manager, labels, replicas, containers, force } => {
                    let c = config(&labels, replicas, &containers);
                    match apply(Some(&obj), &c, &format!("m{manager}"), force, None, &schema, &now) {
                        Ok(next) => {
                            // The applied values are in the object.
                            for (k, v) in &labels {
                                prop_assert_eq!(&next["metadata"]["labels"][k], &json!(v));
                            }
                            obj = next;
                            last_applied[manager] = Some(c);
                        }
                        Err(ApplyError::Conflicts(c)) => prop_assert!(!force && !c.is_empty()),
                        Err(e) => prop_assert!(false, "{e:?}"),
                    }
                }
                Op::Update { label, container } => {
                    let mut next = obj.clone();
                    next["metadata"]["labels"][&label.0] = json!(label.1);
                    next["spec"]["template"]["spec"]["containers"] = json!([{"name": container.0, "image": container.1}]);
                    obj = record_update(Some(&obj), &next, "editor", None, &schema, &now);
                }
            }
            let entries = entries::read_entries(&obj);
            let raw = obj["metadata"]["managedFields"].as_array().map_or(0, Vec::len);
            prop_assert_eq!(entries.len(), raw, "one entry per manager, operation and subresource");
            for e in &entries {
                prop_assert!(!e.set.is_empty(), "no empty entry");
                prop_assert!(owned_paths_exist(&obj, &e.set, schema.root()), "{} owns a missing field in {}", e.manager, obj);
            }
        }
        // Re-applying what a manager last applied (with force: others may have taken fields since) is stable.
        for (m, c) in last_applied.iter().enumerate() {
            let Some(c) = c else { continue };
            let once = apply(Some(&obj), c, &format!("m{m}"), true, None, &schema, "2026-01-01T00:02:00Z").unwrap();
            let twice = apply(Some(&once), c, &format!("m{m}"), false, None, &schema, "2026-01-01T00:03:00Z").unwrap();
            prop_assert_eq!(once, twice);
        }
    }
}
