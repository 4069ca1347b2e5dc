//! Server-side apply scenarios on a Node, as sublet and other controllers share one on a real cluster.

use serde_json::{Value, json};

use super::*;

const T0: &str = "2026-11-22T03:00:00Z";
const T1: &str = "2026-11-22T03:00:01Z";
const T2: &str = "2026-11-22T03:00:02Z";
const T3: &str = "2026-11-22T03:00:03Z";
const T4: &str = "2026-11-22T03:00:04Z";

fn node_schema() -> MergeSchema {
    MergeSchema::builtin("", "Node")
}

fn labels_config(labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-1", "labels": labels}})
}

fn apply_ok(live: &Value, config: Value, manager: &str, force: bool, now: &str) -> Value {
    apply(Some(live), &config, manager, force, None, &node_schema(), now).unwrap_or_else(|e| panic!("{e:?}"))
}

fn entry<'a>(obj: &'a Value, manager: &str) -> Option<&'a Value> {
    obj["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager)
}

/// A node created by the kubelet and tainted by a third manager with a plain update.
fn tainted_node() -> Value {
    let created = json!({"apiVersion": "v1", "kind": "Node",
                         "metadata": {"name": "gpu-1", "uid": "u-1", "resourceVersion": "1"},
                         "spec": {"podCIDR": "10.0.0.0/24"}});
    let created = record_update(None, &created, "kubelet", None, &node_schema(), T0);
    let mut tainted = created.clone();
    tainted["spec"]["taints"] = json!([{"key": "sublet.dev/lent", "effect": "NoSchedule"}]);
    record_update(Some(&created), &tainted, "taint-keeper", None, &node_schema(), T0)
}

#[test]
fn two_appliers_share_labels_and_leave_taints_alone() {
    let node = tainted_node();
    let node = apply_ok(&node, labels_config(json!({"a": "1"})), "A", false, T1);
    let node = apply_ok(&node, labels_config(json!({"b": "2"})), "B", false, T2);
    assert_eq!(node["metadata"]["labels"], json!({"a": "1", "b": "2"}));
    assert_eq!(
        node["spec"]["taints"],
        json!([{"key": "sublet.dev/lent", "effect": "NoSchedule"}])
    );
    assert_eq!(node["metadata"]["uid"], "u-1");
    assert_eq!(
        entry(&node, "A").unwrap()["fieldsV1"],
        json!({"f:metadata": {"f:labels": {"f:a": {}}}})
    );
    assert_eq!(
        entry(&node, "B").unwrap()["fieldsV1"],
        json!({"f:metadata": {"f:labels": {"f:b": {}}}})
    );
    assert_eq!(
        entry(&node, "taint-keeper").unwrap()["fieldsV1"],
        json!({"f:spec": {"f:taints": {}}})
    );
    assert_eq!(entry(&node, "A").unwrap()["operation"], "Apply");
    assert_eq!(entry(&node, "taint-keeper").unwrap()["operation"], "Update");

    // A stops applying `a` (a null is no opinion): it goes, `b` and the taints stay, A's empty entry is dropped.
    let node = apply_ok(&node, labels_config(Value::Null), "A", false, T3);
    assert_eq!(node["metadata"]["labels"], json!({"b": "2"}));
    assert_eq!(
        node["spec"]["taints"],
        json!([{"key": "sublet.dev/lent", "effect": "NoSchedule"}])
    );
    assert!(entry(&node, "A").is_none());
    assert!(entry(&node, "B").is_some());
}

#[test]
fn conflicting_label_needs_force_and_then_changes_owner() {
    let node = tainted_node();
    let node = apply_ok(&node, labels_config(json!({"a": "1"})), "A", false, T1);
    let err = apply(
        Some(&node),
        &labels_config(json!({"a": "3"})),
        "B",
        false,
        None,
        &node_schema(),
        T2,
    )
    .unwrap_err();
    let ApplyError::Conflicts(conflicts) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(conflicts.len(), 1);
    assert_eq!(
        (conflicts[0].manager.as_str(), conflicts[0].field.as_str()),
        ("A", ".metadata.labels.a")
    );
    assert_eq!(
        err.status_message(),
        "Apply failed with 1 conflict: conflict with \"A\": .metadata.labels.a"
    );
    let status = err.status();
    assert_eq!(status["code"], 409);
    assert_eq!(status["reason"], "Conflict");
    assert_eq!(
        status["details"]["causes"],
        json!([{"reason": "FieldManagerConflict", "message": "conflict with \"A\"", "field": ".metadata.labels.a"}])
    );

    let forced = apply_ok(&node, labels_config(json!({"a": "3"})), "B", true, T2);
    assert_eq!(forced["metadata"]["labels"]["a"], "3");
    assert_eq!(
        entry(&forced, "B").unwrap()["fieldsV1"],
        json!({"f:metadata": {"f:labels": {"f:a": {}}}})
    );
    assert!(entry(&forced, "A").is_none(), "A lost its only field");
    // A applying its old value again now conflicts with B.
    let err = apply(
        Some(&forced),
        &labels_config(json!({"a": "1"})),
        "A",
        false,
        None,
        &node_schema(),
        T3,
    );
    assert!(matches!(err, Err(ApplyError::Conflicts(c)) if c[0].manager == "B"));
}

#[test]
fn same_value_is_shared_and_survives_one_owner_leaving() {
    let node = tainted_node();
    let node = apply_ok(&node, labels_config(json!({"a": "1"})), "A", false, T1);
    let node = apply_ok(&node, labels_config(json!({"a": "1"})), "B", false, T2);
    let node = apply_ok(&node, labels_config(Value::Null), "A", false, T3);
    assert_eq!(node["metadata"]["labels"], json!({"a": "1"}), "B still owns a");
}

#[test]
fn conflict_with_an_update_manager_names_its_version() {
    let node = tainted_node();
    let mut edited = node.clone();
    edited["metadata"]["labels"] = json!({"a": "1"});
    let node = record_update(
        Some(&node),
        &edited,
        "kubectl-client-side-apply",
        None,
        &node_schema(),
        T1,
    );
    let err = apply(
        Some(&node),
        &labels_config(json!({"a": "2"})),
        "B",
        false,
        None,
        &node_schema(),
        T2,
    )
    .unwrap_err();
    assert_eq!(
        err.status_message(),
        "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using v1: .metadata.labels.a"
    );
}

#[test]
fn applying_taints_takes_over_the_whole_list() {
    let node = tainted_node();
    let config = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-1"},
                        "spec": {"taints": [{"key": "mine", "effect": "NoExecute"}]}});
    let err = apply(Some(&node), &config, "sublet", false, None, &node_schema(), T1).unwrap_err();
    assert_eq!(
        err.status_message(),
        "Apply failed with 1 conflict: conflict with \"taint-keeper\" using v1: .spec.taints"
    );
    let node = apply_ok(&node, config, "sublet", true, T1);
    assert_eq!(
        node["spec"]["taints"],
        json!([{"key": "mine", "effect": "NoExecute"}]),
        "the other taint is gone"
    );
    assert_eq!(
        entry(&node, "sublet").unwrap()["fieldsV1"],
        json!({"f:spec": {"f:taints": {}}})
    );
    assert!(entry(&node, "taint-keeper").is_none());
}

#[test]
fn reapplying_is_stable() {
    let node = tainted_node();
    let config = labels_config(json!({"a": "1", "b": "2"}));
    let once = apply_ok(&node, config.clone(), "A", false, T1);
    let twice = apply_ok(&once, config, "A", false, T2);
    assert_eq!(once, twice);
    assert_eq!(entry(&twice, "A").unwrap()["time"], T1);
}

#[test]
fn update_takes_fields_and_keeps_the_time_of_last_change() {
    let node = tainted_node();
    let node = apply_ok(&node, labels_config(json!({"a": "1"})), "A", false, T1);
    // An update by X changes `a`: X owns it now, so A's next apply of another value conflicts with X.
    let mut edited = node.clone();
    edited["metadata"]["labels"]["a"] = json!("x");
    let node = record_update(Some(&node), &edited, "X", None, &node_schema(), T2);
    assert!(entry(&node, "A").is_none());
    assert_eq!(
        entry(&node, "X").unwrap()["fieldsV1"],
        json!({"f:metadata": {"f:labels": {"f:a": {}}}})
    );
    let err = apply(
        Some(&node),
        &labels_config(json!({"a": "1"})),
        "A",
        false,
        None,
        &node_schema(),
        T3,
    );
    assert!(matches!(err, Err(ApplyError::Conflicts(c)) if c[0].manager == "X"));

    // A second update by X merges into X's entry; an update changing nothing keeps the time.
    let mut edited = node.clone();
    edited["metadata"]["labels"]["c"] = json!("3");
    let node = record_update(Some(&node), &edited, "X", None, &node_schema(), T3);
    let x: Vec<&Value> = node["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["manager"] == "X")
        .collect();
    assert_eq!(x.len(), 1);
    assert_eq!(
        x[0]["fieldsV1"],
        json!({"f:metadata": {"f:labels": {"f:a": {}, "f:c": {}}}})
    );
    assert_eq!(x[0]["time"], T3);
    let same = record_update(Some(&node), &node, "X", None, &node_schema(), T4);
    assert_eq!(same, node);
}

#[test]
fn create_by_apply_and_status_subresource() {
    let schema = node_schema();
    let config = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-1", "labels": {"a": "1"}},
                        "spec": {"podCIDR": "10.0.0.0/24"}});
    let node = apply(None, &config, "A", false, None, &schema, T0).unwrap();
    assert_eq!(
        node["metadata"]["managedFields"],
        json!([{"manager": "A", "operation": "Apply", "apiVersion": "v1", "time": T0, "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {"f:a": {}}}, "f:spec": {"f:podCIDR": {}}}}])
    );
    let status = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-1"},
                        "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    let node = apply(Some(&node), &status, "kubelet", false, Some("status"), &schema, T1).unwrap();
    let kubelet = entry(&node, "kubelet").unwrap();
    assert_eq!(kubelet["subresource"], "status");
    assert_eq!(
        kubelet["fieldsV1"],
        json!({"f:status": {"f:conditions": {"k:{\"type\":\"Ready\"}": {".": {}, "f:status": {}, "f:type": {}}}}})
    );
    let mut flipped = status.clone();
    flipped["status"]["conditions"][0]["status"] = json!("False");
    let err = apply(Some(&node), &flipped, "other", false, Some("status"), &schema, T2).unwrap_err();
    assert_eq!(
        err.status_message(),
        "Apply failed with 1 conflict: conflict with \"kubelet\" with subresource \"status\": \
         .status.conditions[type=\"Ready\"].status"
    );
}

#[test]
fn objects_without_managed_fields_belong_to_before_first_apply() {
    let legacy = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-1", "labels": {"a": "1"}}});
    let err = apply(
        Some(&legacy),
        &labels_config(json!({"a": "2"})),
        "A",
        false,
        None,
        &node_schema(),
        T1,
    );
    assert!(matches!(err, Err(ApplyError::Conflicts(c)) if c[0].manager == "before-first-apply"));
}

#[test]
fn several_conflicts_are_grouped_by_manager() {
    let node = tainted_node();
    let node = apply_ok(&node, labels_config(json!({"a": "1", "b": "1"})), "A", false, T1);
    let err = apply(
        Some(&node),
        &labels_config(json!({"a": "2", "b": "2"})),
        "B",
        false,
        None,
        &node_schema(),
        T2,
    );
    let err = err.unwrap_err();
    assert_eq!(
        err.status_message(),
        "Apply failed with 2 conflicts: conflicts with \"A\":\n- .metadata.labels.a\n- .metadata.labels.b"
    );
}

#[test]
fn map_lists_merge_by_key_and_prune_items() {
    let schema = MergeSchema::builtin("apps", "Deployment");
    let config = |containers: Value| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
               "spec": {"template": {"spec": {"containers": containers}}}})
    };
    let d = apply(
        None,
        &config(json!([{"name": "a", "image": "1"}, {"name": "b", "image": "1"}])),
        "A",
        false,
        None,
        &schema,
        T0,
    )
    .unwrap();
    let d = apply(
        Some(&d),
        &config(json!([{"name": "b", "env": [{"name": "E", "value": "v"}]}])),
        "B",
        false,
        None,
        &schema,
        T1,
    )
    .unwrap();
    // A drops container b: the image A owned goes, the item stays because B owns a field in it.
    let d = apply(
        Some(&d),
        &config(json!([{"name": "a", "image": "1"}])),
        "A",
        false,
        None,
        &schema,
        T2,
    )
    .unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"],
        json!([{"name": "a", "image": "1"}, {"name": "b", "env": [{"name": "E", "value": "v"}]}])
    );
    let d = apply(Some(&d), &config(json!([])), "B", false, None, &schema, T3).unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"],
        json!([{"name": "a", "image": "1"}])
    );
}

#[test]
fn invalid_configurations_are_rejected() {
    let node = tainted_node();
    let schema = node_schema();
    let bad = [
        json!([1]),
        json!({"metadata": {"name": "gpu-1", "managedFields": [{"manager": "x"}]}}),
        json!({"status": {"conditions": [{"status": "True"}]}}),
    ];
    for config in bad {
        let err = apply(Some(&node), &config, "A", false, None, &schema, T1);
        assert!(matches!(err, Err(ApplyError::Invalid(_))), "{config}: {err:?}");
    }
    let config = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-1", "managedFields": []}});
    let err = apply(Some(&node), &config, "A", false, None, &schema, T1).unwrap_err();
    assert_eq!(err.status_message(), "metadata.managedFields must be nil");
    assert_eq!(err.status()["code"], 400);
    let config = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-1"},
                        "status": {"conditions": [{"status": "True"}]}});
    let err = apply(Some(&node), &config, "A", false, None, &schema, T1).unwrap_err();
    assert_eq!(
        err.status_message(),
        "failed to create typed patch object (/gpu-1; /v1, Kind=Node): .status.conditions: element 0: associative \
         list with keys has an element that omits key field \"type\" (and doesn't have default value)"
    );
    assert_eq!(err.status()["code"], 500);
}

#[test]
fn managed_fields_sent_by_a_writer() {
    let node = tainted_node();
    for cleared in [json!([{}]), json!([])] {
        let mut reset = node.clone();
        reset["metadata"]["managedFields"] = cleared.clone();
        let out = record_update(Some(&node), &reset, "kubectl-edit", None, &node_schema(), T1);
        assert!(out["metadata"].get("managedFields").is_none(), "{cleared}");
        // Untracked now: later updates record nothing until an apply starts tracking again.
        let mut edited = out.clone();
        edited["metadata"]["labels"] = json!({"a": "1"});
        let out = record_update(Some(&out), &edited, "kubectl-edit", None, &node_schema(), T2);
        assert!(out["metadata"].get("managedFields").is_none());
    }
    // Entries sent with the object replace the stored ones, except through a subresource.
    let mut sent = node.clone();
    sent["metadata"]["managedFields"] = json!([{"manager": "m", "operation": "Update", "apiVersion": "v1",
        "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:podCIDR": {}, "f:taints": {}}}}]);
    let out = record_update(Some(&node), &sent, "x", None, &node_schema(), T1);
    assert_eq!(out["metadata"]["managedFields"], sent["metadata"]["managedFields"]);
    let out = record_update(Some(&node), &sent, "x", Some("status"), &node_schema(), T1);
    assert_eq!(out["metadata"]["managedFields"], node["metadata"]["managedFields"]);
}

#[test]
fn applying_what_is_already_there_shares_without_a_time() {
    let node = tainted_node();
    let config = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-1"},
                        "spec": {"podCIDR": "10.0.0.0/24"}});
    let out = apply_ok(&node, config, "A", false, T1);
    let a = entry(&out, "A").unwrap();
    assert_eq!(a["fieldsV1"], json!({"f:spec": {"f:podCIDR": {}}}));
    assert!(a.get("time").is_none(), "the object did not change");
    assert_eq!(
        entry(&out, "kubelet").unwrap()["fieldsV1"],
        json!({"f:spec": {"f:podCIDR": {}}})
    );
}

#[test]
fn more_than_ten_updaters_fold_into_ancient_changes() {
    let schema = node_schema();
    let mut node = tainted_node();
    for i in 0..12 {
        let mut edited = node.clone();
        edited["metadata"]["labels"][format!("l{i}")] = json!("v");
        node = record_update(
            Some(&node),
            &edited,
            &format!("m{i:02}"),
            None,
            &schema,
            &format!("2026-11-22T04:00:{i:02}Z"),
        );
    }
    let entries = node["metadata"]["managedFields"].as_array().unwrap();
    assert_eq!(entries.len(), 10);
    let names: Vec<&str> = entries.iter().map(|e| e["manager"].as_str().unwrap()).collect();
    // kubelet and taint-keeper (oldest) were folded with m00..m02; the bucket has the newest folded time.
    assert_eq!(names[0], "ancient-changes");
    assert_eq!(
        names[1..],
        ["m03", "m04", "m05", "m06", "m07", "m08", "m09", "m10", "m11"]
    );
    assert_eq!(entries[0]["time"], "2026-11-22T04:00:02Z");
    assert_eq!(
        entries[0]["fieldsV1"],
        json!({"f:metadata": {"f:labels": {"f:l0": {}, "f:l1": {}, "f:l2": {}}}, "f:spec": {"f:podCIDR": {}, "f:taints": {}}})
    );
}

#[test]
fn atomic_selector_is_owned_and_replaced_whole() {
    let schema = MergeSchema::builtin("apps", "Deployment");
    let config = |labels: Value| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
               "spec": {"selector": {"matchLabels": labels}}})
    };
    let d = apply(
        None,
        &config(json!({"a": "1", "b": "2"})),
        "A",
        false,
        None,
        &schema,
        T0,
    )
    .unwrap();
    assert_eq!(
        entry(&d, "A").unwrap()["fieldsV1"],
        json!({"f:spec": {"f:selector": {}}})
    );
    let d = apply(Some(&d), &config(json!({"c": "3"})), "A", false, None, &schema, T1).unwrap();
    assert_eq!(d["spec"]["selector"], json!({"matchLabels": {"c": "3"}}));
    let err = apply(Some(&d), &config(json!({"c": "4"})), "B", false, None, &schema, T2).unwrap_err();
    assert_eq!(
        err.status_message(),
        "Apply failed with 1 conflict: conflict with \"A\": .spec.selector"
    );
}
