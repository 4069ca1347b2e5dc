use serde_json::{Value, json};

use super::*;

/// Evaluates the policies for a request; Err holds the denial's message.
fn admit(
    policies: &[Value],
    bindings: &[Value],
    namespaces: &[Value],
    request: &AdmissionRequest,
) -> Result<(), String> {
    admit_status(policies, bindings, namespaces, request)
        .map_err(|status| status["message"].as_str().unwrap_or_default().to_owned())
}

/// A simple form of sublet's tenant isolation policy.
fn isolation_policy() -> Value {
    let yaml = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: sublet-tenant-isolation
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE", "UPDATE"]
      resources: ["pods"]
  matchConditions:
  - name: not-sublet
    expression: "request.userInfo.username != 'system:serviceaccount:sublet-system:sublet'"
  variables:
  - name: tenant
    expression: >-
      namespaceObject != null && has(namespaceObject.metadata.labels) &&
      'sublet.dev/tenant' in namespaceObject.metadata.labels &&
      namespaceObject.metadata.labels['sublet.dev/tenant'] == 'true'
  - name: subletTolerations
    expression: >-
      has(object.spec.tolerations) ?
      object.spec.tolerations.filter(t, has(t.key) && t.key.startsWith('sublet.dev/')) : []
  validations:
  - expression: >-
      !variables.tenant || variables.subletTolerations.all(t,
      t.key == 'sublet.dev/lease' && has(t.value) && t.value.startsWith(request.namespace + '.'))
    messageExpression: "'pods in ' + request.namespace + ' may only tolerate sublet.dev/lease taints of their own leases'"
  - expression: "variables.tenant || size(variables.subletTolerations) == 0"
    message: only pods in tenant namespaces may tolerate sublet.dev taints
  - expression: "!variables.tenant || !has(object.spec.nodeName)"
    message: tenant pods may not set spec.nodeName
    reason: Forbidden
"#;
    serde_yaml_ng::from_str(yaml).expect("policy parses")
}

fn binding(name: &str, policy: &str, actions: &[&str], match_resources: Option<Value>) -> Value {
    let mut b = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name}, "spec": {"policyName": policy, "validationActions": actions}});
    if let Some(m) = match_resources {
        b["spec"]["matchResources"] = m;
    }
    b
}

fn namespaces() -> Vec<Value> {
    vec![
        json!({"metadata": {"name": "tenant-a", "labels": {"sublet.dev/tenant": "true"}}}),
        json!({"metadata": {"name": "ml-team"}}),
    ]
}

fn pod_request(ns: &str, spec: Value) -> AdmissionRequest {
    AdmissionRequest {
        operation: "CREATE".into(),
        group: String::new(),
        version: "v1".into(),
        resource: "pods".into(),
        subresource: String::new(),
        kind: "Pod".into(),
        namespace: Some(ns.into()),
        name: "train".into(),
        object: Some(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "train", "namespace": ns}, "spec": spec}),
        ),
        old_object: None,
        user: UserInfo {
            name: "alice".into(),
            groups: vec!["system:authenticated".into()],
        },
    }
}

fn lease_toleration(value: &str) -> Value {
    json!({"key": "sublet.dev/lease", "operator": "Equal", "value": value, "effect": "NoSchedule"})
}

fn admit_one(req: &AdmissionRequest) -> Result<(), String> {
    let bindings = [binding(
        "sublet-tenant-isolation",
        "sublet-tenant-isolation",
        &["Deny"],
        None,
    )];
    admit(&[isolation_policy()], &bindings, &namespaces(), req)
}

#[test]
fn tenant_pods_may_tolerate_only_their_own_leases() {
    let own = pod_request(
        "tenant-a",
        json!({"containers": [], "tolerations": [lease_toleration("tenant-a.finetune"),
        {"key": "nvidia.com/gpu", "operator": "Exists"}]}),
    );
    assert_eq!(admit_one(&own), Ok(()));

    let other = pod_request(
        "tenant-a",
        json!({"containers": [], "tolerations": [lease_toleration("tenant-b.finetune")]}),
    );
    assert_eq!(
        admit_one(&other),
        Err(
            "pods \"train\" is forbidden: ValidatingAdmissionPolicy 'sublet-tenant-isolation' with binding \
             'sublet-tenant-isolation' denied request: pods in tenant-a may only tolerate sublet.dev/lease taints of \
             their own leases"
                .into()
        )
    );
    let lent = pod_request(
        "tenant-a",
        json!({"containers": [], "tolerations": [{"key": "sublet.dev/lent", "operator": "Exists"}]}),
    );
    assert!(admit_one(&lent).is_err());
}

#[test]
fn other_pods_may_not_tolerate_sublet_taints() {
    let plain = pod_request(
        "ml-team",
        json!({"containers": [], "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}),
    );
    assert_eq!(admit_one(&plain), Ok(()));
    let sneaky = pod_request(
        "ml-team",
        json!({"containers": [], "tolerations": [lease_toleration("tenant-a.x")]}),
    );
    let status = admit_status(
        &[isolation_policy()],
        &[binding("iso", "sublet-tenant-isolation", &["Deny"], None)],
        &namespaces(),
        &sneaky,
    )
    .expect_err("denied");
    assert_eq!(
        status["message"],
        "pods \"train\" is forbidden: ValidatingAdmissionPolicy 'sublet-tenant-isolation' with binding 'iso' denied \
         request: only pods in tenant namespaces may tolerate sublet.dev taints"
    );
    assert_eq!(status["code"], 422, "a validation without a reason is Invalid");
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(status["details"]["kind"], "pods");
}

#[test]
fn tenants_may_not_pick_their_node_and_the_reason_sets_the_code() {
    let pinned = pod_request("tenant-a", json!({"containers": [], "nodeName": "gpu-1"}));
    let status = admit_status(
        &[isolation_policy()],
        &[binding("iso", "sublet-tenant-isolation", &["Deny"], None)],
        &namespaces(),
        &pinned,
    )
    .expect_err("denied");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("denied request: tenant pods may not set spec.nodeName"))
    );
    assert_eq!(
        (status["code"].as_i64(), status["reason"].as_str()),
        (Some(403), Some("Forbidden"))
    );
    let internal = pod_request("ml-team", json!({"containers": [], "nodeName": "gpu-1"}));
    assert_eq!(admit_one(&internal), Ok(()));
}

#[test]
fn match_conditions_bindings_and_constraints_select_requests() {
    let policy = [isolation_policy()];
    let bad = pod_request("tenant-a", json!({"containers": [], "nodeName": "gpu-1"}));

    let mut by_sublet = bad.clone();
    by_sublet.user = UserInfo::service_account("sublet-system", "sublet");
    assert_eq!(admit_one(&by_sublet), Ok(()), "a false matchCondition skips the policy");

    let warn_only = [binding("warn", "sublet-tenant-isolation", &["Warn", "Audit"], None)];
    assert_eq!(
        admit(&policy, &warn_only, &namespaces(), &bad),
        Ok(()),
        "only Deny bindings deny"
    );
    let (result, warnings) = admit_with_warnings(&policy, &warn_only, &namespaces(), &bad);
    assert!(result.is_ok());
    assert_eq!(
        warnings,
        [
            "Validation failed for ValidatingAdmissionPolicy 'sublet-tenant-isolation' with binding 'warn': tenant pods \
          may not set spec.nodeName"
        ]
    );
    assert_eq!(
        admit(&policy, &[], &namespaces(), &bad),
        Ok(()),
        "an unbound policy does nothing"
    );
    let other_policy = [binding("x", "another-policy", &["Deny"], None)];
    assert_eq!(admit(&policy, &other_policy, &namespaces(), &bad), Ok(()));

    let scoped = |selector: Value| {
        [binding(
            "scoped",
            "sublet-tenant-isolation",
            &["Deny"],
            Some(json!({"namespaceSelector": selector})),
        )]
    };
    assert!(
        admit(
            &policy,
            &scoped(json!({"matchLabels": {"sublet.dev/tenant": "true"}})),
            &namespaces(),
            &bad
        )
        .is_err()
    );
    let elsewhere = json!({"matchExpressions": [{"key": "sublet.dev/tenant", "operator": "DoesNotExist"}]});
    assert_eq!(
        admit(&policy, &scoped(elsewhere), &namespaces(), &bad),
        Ok(()),
        "binding matchResources narrows"
    );

    let mut delete = bad.clone();
    delete.operation = "DELETE".into();
    delete.old_object = delete.object.take();
    assert_eq!(admit_one(&delete), Ok(()), "DELETE is not in the policy's operations");

    let mut status_update = bad.clone();
    status_update.operation = "UPDATE".into();
    status_update.subresource = "status".into();
    assert_eq!(admit_one(&status_update), Ok(()), "pods does not match pods/status");

    let mut node = bad;
    node.resource = "nodes".into();
    node.namespace = None;
    assert_eq!(admit_one(&node), Ok(()));
}

#[test]
fn evaluation_errors_follow_the_failure_policy() {
    let mut policy = json!({"metadata": {"name": "broken"}, "spec": {
        "matchConstraints": {"resourceRules": [{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"], "resources": ["*"]}]},
        "validations": [{"expression": "object.spec.missing.deeper == 1"}]}});
    let bindings = [binding("b", "broken", &["Deny"], None)];
    let req = pod_request("ml-team", json!({"containers": []}));
    let err = admit(std::slice::from_ref(&policy), &bindings, &namespaces(), &req).expect_err("fails closed");
    assert!(err.contains("ValidatingAdmissionPolicy 'broken' with binding 'b' denied request: expression 'object.spec.missing.deeper == 1' resulted in error"), "{err}");
    policy["spec"]["failurePolicy"] = json!("Ignore");
    assert_eq!(admit(&[policy.clone()], &bindings, &namespaces(), &req), Ok(()));

    policy["spec"]["validations"] = json!([{"expression": "object.metadata.name.size() < 3"}]);
    assert_eq!(
        admit(&[policy], &bindings, &namespaces(), &req),
        Err(
            "pods \"train\" is forbidden: ValidatingAdmissionPolicy 'broken' with binding 'b' denied request: failed \
             expression: object.metadata.name.size() < 3"
                .into()
        )
    );
}

#[test]
fn label_selectors() {
    let labels = json!({"a": "1", "b": "2"}).as_object().cloned().expect("map");
    let m = |sel: Value| matching::selector_matches(&sel, &labels);
    assert!(m(Value::Null));
    assert!(m(json!({})));
    assert!(m(json!({"matchLabels": {"a": "1"}})));
    assert!(!m(json!({"matchLabels": {"a": "2"}})));
    assert!(m(
        json!({"matchExpressions": [{"key": "b", "operator": "In", "values": ["2", "3"]}]})
    ));
    assert!(!m(
        json!({"matchExpressions": [{"key": "b", "operator": "NotIn", "values": ["2"]}]})
    ));
    assert!(m(
        json!({"matchExpressions": [{"key": "c", "operator": "NotIn", "values": ["2"]}]})
    ));
    assert!(m(
        json!({"matchExpressions": [{"key": "a", "operator": "Exists"}, {"key": "c", "operator": "DoesNotExist"}]})
    ));
    assert!(!m(json!({"matchExpressions": [{"key": "a", "operator": "Bogus"}]})));
}

mod odd_input {
    use proptest::prelude::*;

    use super::*;

    fn any_spec() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            prop::sample::select(vec!["sublet.dev/lease", "sublet.dev/lent", "tenant-a.x", "gpu-1", ""])
                .prop_map(Value::from),
        ];
        let key = prop::sample::select(vec![
            "tolerations",
            "key",
            "value",
            "nodeName",
            "operator",
            "containers",
        ])
        .prop_map(str::to_owned);
        leaf.prop_recursive(4, 32, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(key.clone(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Any pod body gets an answer, and every denial names the policy and binding as the server does.
        #[test]
        fn any_pod_is_admitted_or_denied_by_name(spec in any_spec(), ns in prop::sample::select(vec!["tenant-a", "ml-team", "gone"])) {
            let req = pod_request(ns, spec);
            if let Err(message) = admit_one(&req) {
                prop_assert!(message.starts_with("pods \"train\" is forbidden: ValidatingAdmissionPolicy \
                    'sublet-tenant-isolation' with binding 'sublet-tenant-isolation' denied request: "), "{}", message);
            }
        }
    }
}

#[test]
fn empty_request_fields_are_absent_as_on_kube_apiserver() {
    let policy = |expression: &str| {
        json!({"metadata": {"name": "p"}, "spec": {
            "matchConstraints": {"resourceRules": [{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"], "resources": ["*"]}]},
            "validations": [{"expression": expression}]}})
    };
    let bindings = [binding("b", "p", &["Deny"], None)];
    let req = pod_request("ml-team", json!({"containers": []}));
    // No subresource: reading it unguarded is an evaluation error (kube-apiserver: "no such key"), as the
    // chart's operator-bounds policy once did; guarded with has() it reads as absent.
    let err = admit(&[policy("request.subResource == ''")], &bindings, &namespaces(), &req).unwrap_err();
    assert!(err.contains("resulted in error"), "{err}");
    let guarded = "!has(request.subResource) && !has(request.requestSubResource)";
    assert_eq!(admit(&[policy(guarded)], &bindings, &namespaces(), &req), Ok(()));
    let mut binding_req = req.clone();
    binding_req.subresource = "binding".into();
    assert_eq!(
        admit(
            &[policy("request.subResource == 'binding'")],
            &bindings,
            &namespaces(),
            &binding_req
        ),
        Ok(())
    );
    // A cluster-scoped request has no namespace.
    let mut node_req = req.clone();
    node_req.namespace = None;
    assert_eq!(
        admit(
            &[policy("!has(request.namespace)")],
            &bindings,
            &namespaces(),
            &node_req
        ),
        Ok(())
    );
}
