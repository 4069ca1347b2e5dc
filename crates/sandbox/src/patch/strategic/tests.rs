//! Cases from the Kubernetes documentation ("Update API Objects in Place Using kubectl patch") and the
//! strategic merge patch design document.

use serde_json::{Value, json};

use super::*;

fn smp(doc: Value, patch: Value, group: &str, kind: &str) -> Value {
    strategic_merge_patch(&doc, &patch, &MergeSchema::builtin(group, kind)).unwrap_or_else(|e| panic!("{patch}: {e}"))
}

fn deployment(containers: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "patch-demo"},
           "spec": {"replicas": 2, "template": {"spec": {"containers": containers}}}})
}

#[test]
fn containers_merge_by_name() {
    let doc = deployment(json!([{"name": "patch-demo-ctr", "image": "nginx"}]));
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "patch-demo-ctr-2", "image": "redis"}]}}}});
    let got = smp(doc.clone(), patch, "apps", "Deployment");
    // The patch's new container comes first, as in the documentation's output.
    assert_eq!(
        got["spec"]["template"]["spec"]["containers"],
        json!([{"name": "patch-demo-ctr-2", "image": "redis"}, {"name": "patch-demo-ctr", "image": "nginx"}])
    );
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "patch-demo-ctr", "image": "nginx:1.27"}]}}}});
    let got = smp(doc, patch, "apps", "Deployment");
    assert_eq!(
        got["spec"]["template"]["spec"]["containers"],
        json!([{"name": "patch-demo-ctr", "image": "nginx:1.27"}])
    );
    assert_eq!(got["spec"]["replicas"], json!(2));
}

#[test]
fn tolerations_are_replaced_whole() {
    let doc = deployment(json!([{"name": "c", "image": "nginx"}]));
    let doc = smp(
        doc,
        json!({"spec": {"template": {"spec": {"tolerations": [{"effect": "NoSchedule", "key": "dedicated", "value": "test-team"}]}}}}),
        "apps",
        "Deployment",
    );
    let patch = json!({"spec": {"template": {"spec": {"tolerations": [{"effect": "NoSchedule", "key": "disktype", "value": "ssd"}]}}}});
    let got = smp(doc, patch, "apps", "Deployment");
    assert_eq!(
        got["spec"]["template"]["spec"]["tolerations"],
        json!([{"effect": "NoSchedule", "key": "disktype", "value": "ssd"}])
    );
}

#[test]
fn node_taints_are_replaced_whole() {
    let node = json!({"metadata": {"name": "n"}, "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}, {"key": "b", "effect": "NoSchedule"}]}});
    let got = smp(
        node,
        json!({"spec": {"taints": [{"key": "c", "effect": "NoExecute"}]}}),
        "",
        "Node",
    );
    assert_eq!(got["spec"]["taints"], json!([{"key": "c", "effect": "NoExecute"}]));
}

#[test]
fn patch_delete_removes_one_item() {
    let doc = deployment(json!([{"name": "a", "image": "nginx"}, {"name": "b", "image": "redis"}]));
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}}});
    let got = smp(doc, patch, "apps", "Deployment");
    assert_eq!(
        got["spec"]["template"]["spec"]["containers"],
        json!([{"name": "b", "image": "redis"}])
    );
}

/// An item deleted and sent again in one patch is new to the merged list, so it comes first, before the items
/// only the server has, as kubectl's strategic merge orders it (a case the random patches found).
#[test]
fn an_item_deleted_and_sent_again_comes_before_the_servers_items() {
    let doc = deployment(json!([{"name": "a", "image": "nginx"}, {"name": "b", "image": "redis"}]));
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "b", "image": null}, {"name": "b", "$patch": "delete"}]}}}});
    let got = smp(doc, patch, "apps", "Deployment");
    assert_eq!(
        got["spec"]["template"]["spec"]["containers"],
        json!([{"name": "b"}, {"name": "a", "image": "nginx"}])
    );
}

/// A list the original does not have is taken as sent, less the items with directives: two items with the
/// same merge key both stay, as kubectl's strategic merge keeps them (a case the random patches found).
#[test]
fn a_new_list_is_taken_as_sent_without_its_directives() {
    let doc = deployment(json!([{"name": "a", "image": "nginx"}]));
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "env": [
        {"name": "Z", "value": null}, {"name": "Z", "value": null}, {"name": "Y", "$patch": "delete"}]}]}}}});
    let got = smp(doc, patch, "apps", "Deployment");
    assert_eq!(
        got["spec"]["template"]["spec"]["containers"][0]["env"],
        json!([{"name": "Z"}, {"name": "Z"}])
    );
}

#[test]
fn patch_replace_on_a_list_and_a_map() {
    let doc = deployment(json!([{"name": "a", "image": "nginx"}, {"name": "b", "image": "redis"}]));
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}, {"$patch": "replace"}]}}}});
    let got = smp(doc.clone(), patch, "apps", "Deployment");
    assert_eq!(
        got["spec"]["template"]["spec"]["containers"],
        json!([{"name": "c", "image": "busybox"}])
    );
    let patch = json!({"spec": {"$patch": "replace", "replicas": 1}});
    assert_eq!(smp(doc, patch, "apps", "Deployment")["spec"], json!({"replicas": 1}));
}

#[test]
fn patch_delete_on_a_map_empties_it() {
    let doc = json!({"metadata": {"name": "x", "labels": {"a": "1"}}});
    let got = smp(
        doc,
        json!({"metadata": {"labels": {"$patch": "delete"}}}),
        "",
        "ConfigMap",
    );
    assert_eq!(got["metadata"]["labels"], json!({}));
}

#[test]
fn retain_keys_drops_unlisted_fields() {
    let doc = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}}});
    let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
    assert_eq!(
        smp(doc, patch, "apps", "Deployment")["spec"]["strategy"],
        json!({"type": "Recreate"})
    );
    let doc = json!({"spec": {"volumes": [{"name": "v", "emptyDir": {}}]}});
    let patch =
        json!({"spec": {"volumes": [{"name": "v", "$retainKeys": ["name", "hostPath"], "hostPath": {"path": "/d"}}]}});
    assert_eq!(
        smp(doc, patch, "", "Pod")["spec"]["volumes"],
        json!([{"name": "v", "hostPath": {"path": "/d"}}])
    );
}

#[test]
fn primitive_set_lists_union_and_delete() {
    let doc = json!({"metadata": {"name": "x", "finalizers": ["a", "b"]}});
    let got = smp(
        doc.clone(),
        json!({"metadata": {"finalizers": ["b", "c"]}}),
        "",
        "ConfigMap",
    );
    assert_eq!(got["metadata"]["finalizers"], json!(["a", "b", "c"]));
    let got = smp(
        doc,
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        "",
        "ConfigMap",
    );
    assert_eq!(got["metadata"]["finalizers"], json!(["b"]));
}

#[test]
fn set_element_order_reorders() {
    let doc = deployment(json!([{"name": "a"}, {"name": "b"}, {"name": "server-only"}]));
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "c"}, {"name": "b"}, {"name": "a"}],
        "containers": [{"name": "c", "image": "x"}]}}}});
    let got = smp(doc, patch, "apps", "Deployment");
    let names: Vec<&str> = got["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c", "b", "a", "server-only"]);

    let doc = deployment(json!([{"name": "x"}, {"name": "a"}, {"name": "y"}, {"name": "b"}]));
    let patch =
        json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}}}});
    let got = smp(doc, patch, "apps", "Deployment");
    let names: Vec<&str> = got["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["x", "y", "b", "a"],
        "server-only items keep their place before the named ones"
    );

    let doc = json!({"metadata": {"finalizers": ["a", "s", "b"]}});
    let patch = json!({"metadata": {"$setElementOrder/finalizers": ["b", "c", "a"], "finalizers": ["c"]}});
    assert_eq!(
        smp(doc, patch, "", "ConfigMap")["metadata"]["finalizers"],
        json!(["s", "b", "c", "a"])
    );
}

#[test]
fn null_deletes_and_nested_items_merge() {
    let doc = json!({"spec": {"containers": [{"name": "a", "image": "nginx", "env": [{"name": "X", "value": "1"}],
                                          "ports": [{"containerPort": 80, "protocol": "TCP"}]}]},
                     "metadata": {"labels": {"a": "1", "b": "2"}}});
    let patch = json!({"metadata": {"labels": {"a": null}},
                       "spec": {"containers": [{"name": "a", "env": [{"name": "Y", "value": "2"}, {"name": "X", "value": null}],
                                                "ports": [{"containerPort": 443}]}]}});
    let got = smp(doc, patch, "", "Pod");
    assert_eq!(got["metadata"]["labels"], json!({"b": "2"}));
    assert_eq!(
        got["spec"]["containers"],
        json!([{"name": "a", "image": "nginx", "env": [{"name": "Y", "value": "2"}, {"name": "X"}],
                "ports": [{"containerPort": 443}, {"containerPort": 80, "protocol": "TCP"}]}])
    );
}

#[test]
fn bad_patches_are_rejected() {
    let doc = deployment(json!([{"name": "a"}]));
    let schema = MergeSchema::builtin("apps", "Deployment");
    let bad = [
        json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}),
        json!({"spec": {"template": {"spec": {"containers": ["x"]}}}}),
        json!({"spec": {"$patch": "frob"}}),
        json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "$patch": "merge"}]}}}}),
        json!({"spec": {"$retainKeys": ["template"], "replicas": 3}}),
        json!({"spec": {"$retainKeys": "x"}}),
        json!([1]),
    ];
    for patch in bad {
        assert!(
            matches!(
                strategic_merge_patch(&doc, &patch, &schema),
                Err(PatchError::Malformed(_))
            ),
            "{patch}"
        );
    }
}

#[test]
fn unknown_lists_are_atomic_for_custom_resources() {
    let schema = MergeSchema::from_openapi(&json!({"properties": {"spec": {"properties": {
        "tags": {"type": "array", "x-kubernetes-list-type": "set"}}}}}));
    let doc = json!({"spec": {"tags": ["a"], "other": [1, 2]}});
    let got = strategic_merge_patch(&doc, &json!({"spec": {"tags": ["b"], "other": [3]}}), &schema).unwrap();
    assert_eq!(got, json!({"spec": {"tags": ["b", "a"], "other": [3]}}));
}

#[test]
fn selectors_merge_although_apply_owns_them_whole() {
    let doc = json!({"spec": {"selector": {"matchLabels": {"a": "1"}}}});
    let patch = json!({"spec": {"selector": {"matchLabels": {"b": "2"}}}});
    let got = smp(doc, patch, "apps", "Deployment");
    assert_eq!(got["spec"]["selector"], json!({"matchLabels": {"a": "1", "b": "2"}}));
}
