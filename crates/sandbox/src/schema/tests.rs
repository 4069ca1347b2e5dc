use serde_json::{Value, json};

use super::*;

/// The openAPIV3Schema of one of sublet's own CRDs.
fn sublet_schema(kind: &str) -> CrdSchema {
    CrdSchema::new(&crate::repo_files::sublet_schema(kind)).expect("sublet's schema compiles")
}

fn example(file: &str) -> Value {
    crate::repo_files::yaml(&format!("examples/{file}"))
}

fn pool(spec: Value) -> Value {
    json!({"apiVersion": "sublet.dev/v1alpha1", "kind": "TenantPool", "metadata": {"name": "a100"}, "spec": spec})
}

fn lines(causes: &[FieldCause]) -> Vec<String> {
    causes.iter().map(FieldCause::to_line).collect()
}

const BLOCKED: &str = "<nil>: Invalid value: \"null\": some validation rules were not checked because the object was \
                       invalid; correct the existing errors to complete validation";

fn hand(schema: Value) -> CrdSchema {
    CrdSchema::new(&json!({"type": "object", "properties": {"spec": schema}})).expect("schema compiles")
}

#[test]
fn compiled_schema_can_be_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<CrdSchema>();
}

#[test]
fn sublet_examples_are_valid_after_defaulting() {
    for (kind, file) in [("TenantPool", "tenantpool.yaml"), ("GpuLease", "gpulease.yaml")] {
        let schema = sublet_schema(kind);
        let mut obj = example(file);
        schema.default_and_prune(&mut obj);
        assert_eq!(lines(&schema.validate(&obj, None)), Vec::<String>::new(), "{file}");
        assert_eq!(
            lines(&schema.validate(&obj, Some(&obj))),
            Vec::<String>::new(),
            "{file} as an update"
        );
    }
}

#[test]
fn defaults_fill_absent_fields_and_nested_objects() {
    let schema = sublet_schema("TenantPool");
    let mut obj = pool(json!({"idle": {"forSeconds": 60}, "mode": null, "nodeGroupLabel": null}));
    schema.default_and_prune(&mut obj);
    let spec = &obj["spec"];
    assert_eq!(
        spec["mode"], "Observe",
        "a null in a non-nullable field is dropped, then defaulted"
    );
    assert_eq!(
        spec["nodeGroupLabel"],
        Value::Null,
        "a null in a nullable field is kept"
    );
    assert_eq!(
        spec["idle"],
        json!({"forSeconds": 60, "maxUtilizationPercent": 5}),
        "present values win"
    );
    assert_eq!(spec["demand"], json!({"pendingPods": {"enabled": true}}));
    assert_eq!(spec["pricing"]["currency"], "USD");
    assert_eq!(spec["maxLentPercent"], 100);
    assert!(
        spec.get("utilization").is_none(),
        "absent objects without a default stay absent"
    );
}

#[test]
fn defaults_inside_a_default_are_applied() {
    let schema = hand(json!({"type": "object", "properties": {
        "outer": {"type": "object", "default": {}, "properties": {
            "inner": {"type": "object", "default": {"a": 1}, "properties": {
                "a": {"type": "integer"}, "b": {"type": "string", "default": "x"}}}}},
        "items": {"type": "array", "items": {"type": "object", "properties": {
            "port": {"type": "integer"}, "protocol": {"type": "string", "default": "TCP"}}}}}}));
    let mut obj = json!({"spec": {"items": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}});
    schema.default_and_prune(&mut obj);
    assert_eq!(obj["spec"]["outer"], json!({"inner": {"a": 1, "b": "x"}}));
    assert_eq!(
        obj["spec"]["items"],
        json!([{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}])
    );
}

#[test]
fn unknown_fields_are_pruned_except_where_preserved() {
    let schema = CrdSchema::new(&json!({"type": "object", "properties": {
        "spec": {"type": "object", "properties": {
            "known": {"type": "string"},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}}}}}}))
    .expect("compiles");
    let mut obj = json!({
        "apiVersion": "x.dev/v1", "kind": "X", "metadata": {"name": "n", "whatever": 1}, "extra": 1,
        "spec": {"known": "k", "unknown": 2, "free": {"a": {"b": 1}}, "labels": {"a": "b"}}});
    schema.default_and_prune(&mut obj);
    assert_eq!(
        obj,
        json!({"apiVersion": "x.dev/v1", "kind": "X", "metadata": {"name": "n", "whatever": 1},
               "spec": {"known": "k", "free": {"a": {"b": 1}}, "labels": {"a": "b"}}})
    );
}

#[test]
fn cel_failure_is_worded_as_the_server_words_it() {
    let schema = sublet_schema("TenantPool");
    let mut obj = pool(json!({"maxLentPercent": 150}));
    schema.default_and_prune(&mut obj);
    let causes = schema.validate(&obj, None);
    assert_eq!(
        causes,
        vec![FieldCause {
            reason: "FieldValueInvalid".into(),
            field: "spec.maxLentPercent".into(),
            message: "Invalid value: \"integer\": maxLentPercent must be between 0 and 100".into(),
        }]
    );
    let status = invalid_status("sublet.dev", "TenantPool", "a100", &causes);
    assert_eq!(
        status["message"],
        "TenantPool.sublet.dev \"a100\" is invalid: spec.maxLentPercent: Invalid value: \"integer\": \
         maxLentPercent must be between 0 and 100"
    );
    assert_eq!(status["code"], 422);
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(status["details"]["kind"], "TenantPool");
    assert_eq!(status["details"]["group"], "sublet.dev");
    assert_eq!(status["details"]["causes"][0]["field"], "spec.maxLentPercent");
}

#[test]
fn several_causes_are_aggregated_in_brackets() {
    let causes = vec![
        FieldCause::new("FieldValueRequired", "spec.a", "Required value".into()),
        FieldCause::new("FieldValueRequired", "spec.b", "Required value".into()),
    ];
    let status = invalid_status("", "Pod", "p", &causes);
    assert_eq!(
        status["message"],
        "Pod \"p\" is invalid: [spec.a: Required value, spec.b: Required value]"
    );
    assert!(status["details"].get("group").is_none());
}

#[test]
fn integers_in_number_fields_evaluate_as_doubles() {
    let schema = sublet_schema("TenantPool");
    let mut obj = pool(json!({"pricing": {"defaultPerGpuHour": 2, "perGpuHour": {"a100": 3}}}));
    schema.default_and_prune(&mut obj);
    assert_eq!(lines(&schema.validate(&obj, None)), Vec::<String>::new());

    let mut bad = pool(json!({"pricing": {"defaultPerGpuHour": -1, "perGpuHour": {"a100": -2}}}));
    schema.default_and_prune(&mut bad);
    assert_eq!(
        lines(&schema.validate(&bad, None)),
        vec![
            "spec.pricing.defaultPerGpuHour: Invalid value: \"number\": defaultPerGpuHour must not be negative",
            "spec.pricing.perGpuHour: Invalid value: \"object\": prices must not be negative",
        ]
    );

    // Arithmetic has no int/double overloads in CEL: it only works because the value is a double.
    let arith = hand(json!({"type": "object", "properties": {"ratio": {"type": "number",
        "x-kubernetes-validations": [{"rule": "self * 2.0 <= 1.0", "message": "ratio must be at most 0.5"}]}}}));
    assert!(arith.validate(&json!({"spec": {"ratio": 0}}), None).is_empty());
    assert_eq!(
        lines(&arith.validate(&json!({"spec": {"ratio": 1}}), None)),
        vec!["spec.ratio: Invalid value: \"number\": ratio must be at most 0.5"]
    );
}

#[test]
fn transition_rules_run_on_update_only() {
    let schema = sublet_schema("GpuLease");
    let mut lease = example("gpulease.yaml");
    schema.default_and_prune(&mut lease);
    assert!(schema.validate(&lease, None).is_empty());
    let mut changed = lease.clone();
    changed["spec"]["gpus"] = json!(8);
    changed["spec"]["pool"] = json!("h100");
    assert!(schema.validate(&changed, None).is_empty(), "skipped on create");
    assert_eq!(
        lines(&schema.validate(&changed, Some(&lease))),
        vec![
            "spec.gpus: Invalid value: \"integer\": gpus is immutable; create a new lease instead",
            "spec.pool: Invalid value: \"string\": pool is immutable; create a new lease instead",
        ]
    );
    let mut without_model = lease.clone();
    without_model["spec"].as_object_mut().expect("spec").remove("gpuModel");
    assert_eq!(
        lines(&schema.validate(&without_model, Some(&lease))),
        vec!["spec: Invalid value: \"object\": gpuModel is immutable; create a new lease instead"]
    );
}

#[test]
fn transition_rules_follow_list_map_items_by_key() {
    let schema = hand(json!({"type": "object", "properties": {"ports": {
        "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
        "items": {"type": "object", "properties": {"name": {"type": "string"}, "port": {"type": "integer"}},
            "x-kubernetes-validations": [{"rule": "self.port == oldSelf.port", "message": "port is immutable"}]}}}}));
    let old = json!({"spec": {"ports": [{"name": "a", "port": 1}, {"name": "b", "port": 2}]}});
    let reordered =
        json!({"spec": {"ports": [{"name": "c", "port": 9}, {"name": "b", "port": 2}, {"name": "a", "port": 1}]}});
    assert!(
        schema.validate(&reordered, Some(&old)).is_empty(),
        "items correlate by key, new items are skipped"
    );
    let changed = json!({"spec": {"ports": [{"name": "b", "port": 3}]}});
    assert_eq!(
        lines(&schema.validate(&changed, Some(&old))),
        vec!["spec.ports[0]: Invalid value: \"object\": port is immutable"]
    );
}

#[test]
fn message_expression_field_path_and_reason() {
    let schema = hand(
        json!({"type": "object", "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
        "x-kubernetes-validations": [
            {"rule": "self.min <= self.max", "messageExpression": "'min ' + string(self.min) + ' exceeds max'",
             "fieldPath": ".min", "reason": "FieldValueForbidden"},
            {"rule": "self.max < 100"},
            {"rule": "has(self.min)", "message": "min is required", "reason": "FieldValueRequired", "fieldPath": ".min"}]}),
    );
    assert_eq!(
        lines(&schema.validate(&json!({"spec": {"min": 5, "max": 200}}), None)),
        vec!["spec: Invalid value: \"object\": failed rule: self.max < 100"]
    );
    let causes = schema.validate(&json!({"spec": {"min": 7, "max": 3}}), None);
    assert_eq!(lines(&causes), vec!["spec.min: Forbidden: min 7 exceeds max"]);
    assert_eq!(causes[0].reason, "FieldValueForbidden");
    let causes = schema.validate(&json!({"spec": {"max": 3}}), None);
    assert_eq!(
        causes.last().map(|c| (c.reason.as_str(), c.to_line())),
        Some(("FieldValueRequired", "spec.min: Required value: min is required".into()))
    );
}

#[test]
fn structural_checks_are_worded_as_the_server_words_them() {
    let schema = hand(json!({"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string", "minLength": 2, "maxLength": 5, "pattern": "^[a-z]+$"},
        "count": {"type": "integer", "minimum": 0, "maximum": 10},
        "ratio": {"type": "number", "minimum": 0, "exclusiveMinimum": true, "maximum": 1, "exclusiveMaximum": true},
        "mode": {"type": "string", "enum": ["Observe", "Enforce"]},
        "port": {"x-kubernetes-int-or-string": true},
        "at": {"type": "string", "format": "date-time"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2, "minItems": 1, "x-kubernetes-list-type": "set"},
        "conds": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
                  "items": {"type": "object", "required": ["type"], "properties": {"type": {"type": "string"}}}},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": 1, "minProperties": 1},
        "flag": {"type": "boolean"}}}));
    let valid = json!({"spec": {"name": "ab", "count": 3, "ratio": 0.5, "mode": "Enforce", "port": "http",
        "at": "2026-11-22T03:00:00Z", "tags": ["a"], "conds": [{"type": "A"}, {"type": "B"}], "labels": {"a": "b"}, "flag": true}});
    assert_eq!(lines(&schema.validate(&valid, None)), Vec::<String>::new());
    let bad = json!({"spec": {"name": "ABCDEFG", "count": -1, "ratio": 1, "mode": "Nope", "port": true,
        "at": "yesterday", "tags": ["a", "b", "a"], "conds": [{"type": "A"}, {"type": "A"}], "labels": {"a": "b", "c": "d"},
        "flag": "yes"}});
    assert_eq!(
        lines(&schema.validate(&bad, None)),
        vec![
            "spec.at: Invalid value: \"yesterday\": spec.at in body must be of type date-time: \"yesterday\"",
            "spec.count: Invalid value: -1: spec.count in body should be greater than or equal to 0",
            "spec.flag: Invalid value: \"string\": spec.flag in body must be of type boolean: \"string\"",
            "spec.labels: Too many: 2: must have at most 1 item",
            "spec.mode: Unsupported value: \"Nope\": supported values: \"Observe\", \"Enforce\"",
            "spec.name: Too long: may not be more than 5 bytes",
            "spec.name: Invalid value: \"ABCDEFG\": spec.name in body should match '^[a-z]+$'",
            "spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer,string: \"boolean\"",
            "spec.ratio: Invalid value: 1: spec.ratio in body should be less than 1",
            "spec.tags: Too many: 3: must have at most 2 items",
            "spec.conds[1]: Duplicate value: map[string]interface {}{\"type\":\"A\"}",
            "spec.tags[2]: Duplicate value: \"a\"",
            BLOCKED,
        ]
    );
    let causes = schema.validate(
        &json!({"spec": {"name": "a", "tags": [], "labels": {}, "ratio": 0}}),
        None,
    );
    assert_eq!(
        lines(&causes),
        vec![
            "spec.labels: Invalid value: 0: spec.labels in body should have at least 1 properties",
            "spec.name: Invalid value: \"a\": spec.name in body should be at least 2 chars long",
            "spec.ratio: Invalid value: 0: spec.ratio in body should be greater than 0",
            "spec.tags: Invalid value: 0: spec.tags in body should have at least 1 items",
        ]
    );
    let causes = schema.validate(&json!({"spec": {"conds": [{}]}}), None);
    assert_eq!(
        lines(&causes),
        vec![
            "spec.name: Required value",
            "spec.conds[0].type: Required value",
            BLOCKED
        ]
    );
    assert_eq!(causes[0].reason, "FieldValueRequired");
}

#[test]
fn type_errors_block_the_rules() {
    let schema = sublet_schema("TenantPool");
    let causes = schema.validate(&pool(json!({"maxLentPercent": "lots"})), None);
    assert_eq!(
        lines(&causes),
        vec![
            "spec.maxLentPercent: Invalid value: \"string\": spec.maxLentPercent in body must be of type integer: \"string\"",
            BLOCKED,
        ]
    );
    assert_eq!(causes[0].reason, "FieldValueTypeInvalid");
}

#[test]
fn schemas_that_are_not_structural_or_do_not_compile_are_refused() {
    let missing_type = CrdSchema::new(&json!({"type": "object", "properties": {"spec": {"properties": {}}}}));
    assert!(
        missing_type
            .err()
            .is_some_and(|e| e.contains("openAPIV3Schema.properties[spec].type: Required value"))
    );
    let bad_rule = CrdSchema::new(&json!({"type": "object", "x-kubernetes-validations": [{"rule": "self.a >"}]}));
    assert!(
        bad_rule
            .err()
            .is_some_and(|e| e.contains("x-kubernetes-validations[0].rule"))
    );
    assert!(CrdSchema::new(&json!({"type": "string"})).is_err());
    assert!(
        CrdSchema::new(&json!({"type": "object", "properties": {"a": {"type": "string", "pattern": "("}}})).is_err()
    );
}

#[test]
fn unchanged_values_are_not_revalidated_on_update() {
    let schema = hand(json!({"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 3},
        "count": {"type": "integer", "x-kubernetes-validations": [{"rule": "self < 10", "message": "count must be under 10"}]},
        "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
        "other": {"type": "string"}}}));
    // Stored under an older, looser schema.
    let old = json!({"spec": {"name": "toolong", "count": 50, "tags": ["a", "a"], "other": "x"}});
    let edit = json!({"spec": {"name": "toolong", "count": 50, "tags": ["a", "a"], "other": "y"}});
    assert_eq!(lines(&schema.validate(&edit, Some(&old))), Vec::<String>::new());
    assert_eq!(
        lines(&schema.validate(&edit, None)),
        vec![
            "spec.name: Too long: may not be more than 3 bytes",
            "spec.tags[1]: Duplicate value: \"a\"",
            BLOCKED
        ]
    );
    let worse = json!({"spec": {"name": "toolong", "count": 51, "tags": ["a", "a"]}});
    assert_eq!(
        lines(&schema.validate(&worse, Some(&old))),
        vec!["spec.count: Invalid value: \"integer\": count must be under 10"],
        "a changed value is validated; duplicates already stored stay allowed"
    );
    let clean_old = json!({"spec": {"tags": ["a"]}});
    assert_eq!(
        lines(&schema.validate(&json!({"spec": {"tags": ["a", "a"]}}), Some(&clean_old))),
        vec!["spec.tags[1]: Duplicate value: \"a\""]
    );
}

#[test]
fn root_rules_see_only_name_and_generate_name_of_metadata() {
    let schema = CrdSchema::new(&json!({"type": "object", "properties": {"spec": {"type": "object"}},
        "x-kubernetes-validations": [
            {"rule": "self.metadata.name.startsWith('gpu-')", "message": "name must start with gpu-"},
            {"rule": "!has(self.metadata.labels)", "message": "labels are not visible to rules"}]}))
    .expect("compiles");
    let obj =
        json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "cpu-1", "labels": {"a": "b"}}, "spec": {}});
    assert_eq!(
        lines(&schema.validate(&obj, None)),
        vec!["<nil>: Invalid value: \"object\": name must start with gpu-"]
    );
}

#[test]
fn unknown_fields_are_named_for_strict_field_validation() {
    let schema = sublet_schema("TenantPool");
    let obj = pool(
        json!({"mode": "Observe", "bogus": 1, "windows": [{"days": ["Monday"], "start": "00:00",
        "end": "24:00", "extra": true}], "pricing": {"perGpuHour": {"a100": 1.0}}}),
    );
    let mut with_root = obj.clone();
    with_root["status2"] = json!({});
    with_root["metadata"]["whatever"] = json!(1);
    assert_eq!(
        schema.unknown_fields(&with_root),
        vec!["spec.bogus", "spec.windows[0].extra", "status2"]
    );
    let mut pruned = with_root.clone();
    schema.default_and_prune(&mut pruned);
    assert!(
        schema.unknown_fields(&pruned).is_empty(),
        "pruning drops exactly those fields"
    );
}

#[test]
fn multi_line_message_expressions_fall_back_to_the_message() {
    let schema = hand(json!({"type": "object", "properties": {"n": {"type": "integer",
        "x-kubernetes-validations": [{"rule": "self < 3", "message": "n must be under 3", "messageExpression": "'n is\\ntoo big'"}]}}}));
    assert_eq!(
        lines(&schema.validate(&json!({"spec": {"n": 5}}), None)),
        vec!["spec.n: Invalid value: \"integer\": n must be under 3"]
    );
}

mod oracle {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// On schema-valid pools, the rules fail exactly where kube-cel's own validator says they do.
        #[test]
        fn cel_failures_agree_with_kube_cel(
            lent in -20i64..130, util in -20i64..130, percent in -20i64..130, notice in -100i64..100_000,
            price in -3.0f64..3.0, quantile in -0.5f64..1.5, history in -5i64..100, concurrent in -2i64..4,
        ) {
            let raw = crate::repo_files::sublet_schema("TenantPool");
            let schema = CrdSchema::new(&raw).expect("compiles");
            let mut obj = pool(json!({"maxLentPercent": lent, "idle": {"maxUtilizationPercent": util},
                "reserve": {"percent": percent, "learned": {"quantile": quantile, "historyDays": history}},
                "reclaim": {"noticeSeconds": notice, "maxConcurrent": concurrent},
                "pricing": {"defaultPerGpuHour": price, "perGpuHour": {"a100": price}}}));
            schema.default_and_prune(&mut obj);
            let mut ours: Vec<String> = schema.validate(&obj, None).iter().map(|c| {
                c.message.split_once(": ").map(|(_, m)| m.split_once(": ").map_or(m, |(_, m)| m)).unwrap_or(&c.message).to_owned()
            }).collect();
            let mut theirs: Vec<String> = match kube::core::cel::Validator::new().validate(&raw, &obj, None) {
                Ok(()) => vec![],
                Err(errs) => errs.iter().map(|e| e.message.clone()).collect(),
            };
            ours.sort();
            theirs.sort();
            prop_assert_eq!(ours, theirs);
        }
    }
}

#[test]
fn declared_metadata_restricts_the_name_but_is_never_pruned() {
    let schema = CrdSchema::new(&json!({"type": "object", "properties": {
        "metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 5}}},
        "spec": {"type": "object"}}}))
    .expect("compiles");
    let mut obj =
        json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "too-long-name", "labels": {"a": "b"}}});
    schema.default_and_prune(&mut obj);
    assert_eq!(obj["metadata"]["labels"], json!({"a": "b"}));
    assert!(schema.unknown_fields(&obj).is_empty());
    assert_eq!(
        lines(&schema.validate(&obj, None)),
        vec!["metadata.name: Too long: may not be more than 5 bytes", BLOCKED]
    );
}

#[test]
fn numeric_formats_are_not_enforced_as_in_kubernetes_1_35() {
    // kube-apiserver 1.35 strips int32/int64/float/double before validating (enforcement arrives in 1.36).
    let schema = hand(json!({"type": "object", "properties": {
        "small": {"type": "integer", "format": "int32"}, "ratio": {"type": "number", "format": "float"}}}));
    assert!(
        schema
            .validate(&json!({"spec": {"small": 2_147_483_648_i64, "ratio": 3.5e38}}), None)
            .is_empty()
    );
}

#[test]
fn set_items_kept_from_the_old_object_are_not_revalidated() {
    let schema = hand(
        json!({"type": "object", "properties": {"zones": {"type": "array", "x-kubernetes-list-type": "set",
        "items": {"type": "string", "pattern": "^[a-z]+$"}}}}),
    );
    let old = json!({"spec": {"zones": ["EU"]}});
    assert!(
        schema
            .validate(&json!({"spec": {"zones": ["us", "EU"]}}), Some(&old))
            .is_empty()
    );
    assert_eq!(
        lines(&schema.validate(&json!({"spec": {"zones": ["US", "EU"]}}), Some(&old))),
        vec!["spec.zones[0]: Invalid value: \"US\": spec.zones[0] in body should match '^[a-z]+$'"]
    );
}

#[test]
fn optional_old_self_rules_run_on_create_with_an_empty_optional() {
    let schema = hand(json!({"type": "object", "properties": {"size": {"type": "integer",
        "x-kubernetes-validations": [{"rule": "!oldSelf.hasValue() || self >= oldSelf.value()",
            "message": "size may only grow", "optionalOldSelf": true},
            {"rule": "oldSelf.hasValue() || self <= 10", "message": "a new size is at most 10", "optionalOldSelf": true}]}}}));
    assert!(schema.validate(&json!({"spec": {"size": 5}}), None).is_empty());
    assert_eq!(
        lines(&schema.validate(&json!({"spec": {"size": 50}}), None)),
        vec!["spec.size: Invalid value: \"integer\": a new size is at most 10"]
    );
    let old = json!({"spec": {"size": 20}});
    assert!(schema.validate(&json!({"spec": {"size": 30}}), Some(&old)).is_empty());
    assert_eq!(
        lines(&schema.validate(&json!({"spec": {"size": 15}}), Some(&old))),
        vec!["spec.size: Invalid value: \"integer\": size may only grow"]
    );
}

mod odd_input {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    /// Any JSON value, a few levels deep, with keys that sublet's schema knows and keys it does not.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "[a-zA-Z0-9:/.-]{0,12}".prop_map(Value::from),
        ];
        let key = prop_oneof![
            Just("mode".to_owned()),
            Just("idle".to_owned()),
            Just("maxLentPercent".to_owned()),
            Just("pricing".to_owned()),
            Just("perGpuHour".to_owned()),
            Just("windows".to_owned()),
            Just("days".to_owned()),
            Just("nodeSelector".to_owned()),
            Just("matchExpressions".to_owned()),
            "[a-z]{1,6}",
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(key.clone(), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// Whatever a client sends, defaulting and pruning settle in one pass, leave no unknown field, and
        /// validation answers without panicking, on create and on update.
        #[test]
        fn any_body_is_defaulted_pruned_and_validated(spec in any_json(), old_spec in any_json()) {
            let schema = sublet_schema("TenantPool");
            let mut obj = pool(spec);
            schema.default_and_prune(&mut obj);
            let once = obj.clone();
            schema.default_and_prune(&mut obj);
            prop_assert_eq!(&obj, &once);
            prop_assert!(schema.unknown_fields(&obj).is_empty());
            let mut old = pool(old_spec);
            schema.default_and_prune(&mut old);
            for cause in schema.validate(&obj, Some(&old)).into_iter().chain(schema.validate(&obj, None)) {
                prop_assert!(!cause.field.is_empty() && !cause.message.is_empty());
            }
        }
    }
}

#[test]
fn a_whole_float_in_an_integer_field_is_an_integer() {
    let schema = hand(json!({"type": "object", "properties": {"n": {"type": "integer",
        "x-kubernetes-validations": [{"rule": "self + 1 == 3", "message": "n must be 2"}]}}}));
    assert!(schema.validate(&json!({"spec": {"n": 2.0}}), None).is_empty());
    assert_eq!(
        lines(&schema.validate(&json!({"spec": {"n": 2.5}}), None)),
        vec![
            "spec.n: Invalid value: \"number\": spec.n in body must be of type integer: \"number\"",
            BLOCKED
        ]
    );
}
