//! Expected texts and results are those of `kubectl patch --local --type json` (kubectl 1.35), which runs the
//! same library as the API server.

use serde_json::{Value, json};

use super::*;

fn ok(doc: &Value, patch: Value) -> Value {
    json_patch(doc, &patch).unwrap_or_else(|e| panic!("{patch}: {e}"))
}

#[test]
fn every_operation() {
    let doc = json!({"foo": "bar", "list": [1, 2], "obj": {"a": 1}});
    let cases = [
        (
            json!([{"op":"add","path":"/baz","value":"qux"}]),
            json!({"foo":"bar","list":[1,2],"obj":{"a":1},"baz":"qux"}),
        ),
        (
            json!([{"op":"add","path":"/list/1","value":9}]),
            json!({"foo":"bar","list":[1,9,2],"obj":{"a":1}}),
        ),
        (
            json!([{"op":"add","path":"/list/-","value":3}]),
            json!({"foo":"bar","list":[1,2,3],"obj":{"a":1}}),
        ),
        (
            json!([{"op":"add","path":"/list/2","value":3}]),
            json!({"foo":"bar","list":[1,2,3],"obj":{"a":1}}),
        ),
        (
            json!([{"op":"remove","path":"/list/0"}]),
            json!({"foo":"bar","list":[2],"obj":{"a":1}}),
        ),
        (
            json!([{"op":"replace","path":"/foo","value":{"x":1}}]),
            json!({"foo":{"x":1},"list":[1,2],"obj":{"a":1}}),
        ),
        (
            json!([{"op":"replace","path":"/list/1","value":7}]),
            json!({"foo":"bar","list":[1,7],"obj":{"a":1}}),
        ),
        (
            json!([{"op":"move","from":"/obj/a","path":"/b"}]),
            json!({"foo":"bar","list":[1,2],"obj":{},"b":1}),
        ),
        (
            json!([{"op":"copy","from":"/list","path":"/obj/l"}]),
            json!({"foo":"bar","list":[1,2],"obj":{"a":1,"l":[1,2]}}),
        ),
        (
            json!([{"op":"test","path":"/obj","value":{"a":1.0}},{"op":"remove","path":"/foo"}]),
            json!({"list":[1,2],"obj":{"a":1}}),
        ),
        (json!([{"op":"replace","path":"","value":[]}]), json!([])),
        (
            json!([{"op":"test","path":"","value":{"obj":{"a":1},"list":[1,2],"foo":"bar"}}]),
            doc.clone(),
        ),
    ];
    for (patch, want) in cases {
        assert_eq!(ok(&doc, patch.clone()), want, "{patch}");
    }
}

/// Behaviour of the library the API server uses where it differs from RFC 6902.
#[test]
fn library_quirks_are_kept() {
    let doc = json!({"labels": {"a": "1"}, "list": ["c"]});
    let cases = [
        (
            json!([{"op":"replace","path":"/labels/zz","value":"1"}]),
            json!({"labels": {"a": "1", "zz": "1"}, "list": ["c"]}),
        ),
        (
            json!([{"op":"copy","from":"/labels/nope","path":"/labels/x"}]),
            json!({"labels": {"a": "1", "x": null}, "list": ["c"]}),
        ),
        (json!([{"op":"test","path":"/labels/nope","value":null}]), doc.clone()),
        (
            json!([{"op":"add","path":"/list/-1","value":"q"}]),
            json!({"labels": {"a": "1"}, "list": ["c", "q"]}),
        ),
        (
            json!([{"op":"add","path":"/list/00","value":"q"}]),
            json!({"labels": {"a": "1"}, "list": ["q", "c"]}),
        ),
        (json!([{"op":"test","path":"/list/-1","value":"c"}]), doc.clone()),
        (
            json!([{"op":"add","path":"/labels/q"}]),
            json!({"labels": {"a": "1", "q": null}, "list": ["c"]}),
        ),
        (
            json!([{"op":"add","path":"/labels/a~2b","value":"x"}]),
            json!({"labels": {"a": "1", "a~2b": "x"}, "list": ["c"]}),
        ),
    ];
    for (patch, want) in cases {
        assert_eq!(ok(&doc, patch.clone()), want, "{patch}");
    }
}

#[test]
fn pointer_escapes() {
    let doc = json!({"metadata": {"labels": {"sublet.dev/state": "lent", "a~b": "x", "~1": "y"}}});
    let patch = json!([
        {"op": "test", "path": "/metadata/labels/sublet.dev~1state", "value": "lent"},
        {"op": "replace", "path": "/metadata/labels/sublet.dev~1state", "value": "leased"},
        {"op": "remove", "path": "/metadata/labels/a~0b"},
        {"op": "remove", "path": "/metadata/labels/~01"},
    ]);
    assert_eq!(
        ok(&doc, patch),
        json!({"metadata": {"labels": {"sublet.dev/state": "leased"}}})
    );
}

#[test]
fn failures_have_the_servers_text() {
    let doc = json!({"metadata": {"name": "p", "labels": {"a": "1"}}, "spec": {"containers": [{"name": "c"}]}});
    let failed = [
        (
            json!([{"op":"test","path":"/metadata/labels/a","value":"2"}]),
            "testing value /metadata/labels/a failed: test failed",
        ),
        (
            json!([{"op":"test","path":"","value":1}]),
            "testing value  failed: test failed",
        ),
        (
            json!([{"op":"remove","path":"/metadata/labels/zz"}]),
            "error in remove for path: '/metadata/labels/zz': Unable to remove nonexistent key: zz: missing value",
        ),
        (
            json!([{"op":"remove","path":"/spec/containers/3"}]),
            "error in remove for path: '/spec/containers/3': Unable to access invalid index: 3: invalid index referenced",
        ),
        (
            json!([{"op":"remove","path":"/spec/containers/-"}]),
            "error in remove for path: '/spec/containers/-': strconv.Atoi: parsing \"-\": invalid syntax",
        ),
        (
            json!([{"op":"remove","path":"/nope/x"}]),
            "remove operation does not apply: doc is missing path: \"/nope/x\": missing value",
        ),
        (
            json!([{"op":"remove","path":""}]),
            "remove operation does not apply: doc is missing path: \"\": missing value",
        ),
        (
            json!([{"op":"replace","path":"/spec/containers/3","value":1}]),
            "Object to be patched is missing field (/spec/containers/3: missing value)",
        ),
        (
            json!([{"op":"replace","path":"/nope/x","value":1}]),
            "replace operation does not apply: doc is missing path: /nope/x: missing value",
        ),
        (
            json!([{"op":"add","path":"/metadata/zz/a","value":"1"}]),
            "add operation does not apply: doc is missing path: \"/metadata/zz/a\": missing value",
        ),
        (
            json!([{"op":"add","path":"/metadata/name/x","value":1}]),
            "add operation does not apply: doc is missing path: \"/metadata/name/x\": missing value",
        ),
        (
            json!([{"op":"add","path":"metadata","value":1}]),
            "add operation does not apply: doc is missing path: \"metadata\": missing value",
        ),
        (
            json!([{"op":"add","path":"/spec/containers/5","value":{}}]),
            "error in add for path: '/spec/containers/5': Unable to access invalid index: 5: invalid index referenced",
        ),
        (
            json!([{"op":"move","from":"/metadata","path":"/metadata/x"}]),
            "move operation does not apply: doc is missing destination path: /metadata/x: missing value",
        ),
        (
            json!([{"op":"move","from":"/metadata/nope","path":"/metadata/x"}]),
            "error in move for path: 'nope': Unable to remove nonexistent key: nope: missing value",
        ),
        (
            json!([{"op":"move","from":"/nope/x","path":"/metadata/x"}]),
            "move operation does not apply: doc is missing from path: /nope/x: missing value",
        ),
        (
            json!([{"op":"copy","from":"/nope/x","path":"/metadata/x"}]),
            "copy operation does not apply: doc is missing from path: /nope/x: missing value",
        ),
        (
            json!([{"op":"test","path":"/nope/x","value":1}]),
            "test operation does not apply: is missing path: /nope/x: missing value",
        ),
        (
            json!([{"op":"test","path":"/spec/containers/3","value":null}]),
            "error in test for path: '/spec/containers/3': Unable to access invalid index: 3: invalid index referenced",
        ),
    ];
    for (patch, want) in failed {
        match json_patch(&doc, &patch) {
            Err(PatchError::Failed(msg)) => assert_eq!(msg, want),
            other => panic!("{patch}: {other:?}"),
        }
    }
    let malformed = [
        (
            json!({"op": "add"}),
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch",
        ),
        (
            json!([7]),
            "json: cannot unmarshal number into Go value of type jsonpatch.Operation",
        ),
        (
            json!([{"op": "frob", "path": "/a"}, 7]),
            "json: cannot unmarshal number into Go value of type jsonpatch.Operation",
        ),
    ];
    let failed_to_apply = [
        (json!([{"op":"frob","path":"/a"}]), "Unexpected kind: frob"),
        (json!([{"path":"/a"}]), "Unexpected kind: unknown"),
        (json!([{"op": 1, "path":"/a"}]), "Unexpected kind: unknown"),
        (
            json!([{"op":"add","value":1}]),
            "add operation failed to decode path: missing value",
        ),
        (
            json!([{"op":"add","path":7}]),
            "add operation failed to decode path: missing value",
        ),
        (
            json!([{"op":"move","path":"/a"}]),
            "move operation failed to decode from: operation, missing from field: missing value",
        ),
    ];
    for (patch, want) in failed_to_apply {
        match json_patch(&doc, &patch) {
            Err(PatchError::Failed(msg)) => assert_eq!(msg, want),
            other => panic!("{patch}: {other:?}"),
        }
    }
    for (patch, want) in malformed {
        match json_patch(&doc, &patch) {
            Err(PatchError::Malformed(msg)) => assert_eq!(msg, want),
            other => panic!("{patch}: {other:?}"),
        }
    }
}

#[test]
fn a_failed_operation_leaves_the_document_alone() {
    let doc = json!({"a": 1});
    let patch = json!([{"op": "add", "path": "/b", "value": 2}, {"op": "test", "path": "/a", "value": 2}]);
    assert!(json_patch(&doc, &patch).is_err());
    assert_eq!(doc, json!({"a": 1}));
}
