//! Pods: the status a new pod starts with, what may not change, and graceful deletion.

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::meta;

pub(crate) fn prepare_create(obj: &mut Value) -> Result<(), ApiError> {
    let name = meta::str_at(obj, &["metadata", "name"]).unwrap_or("").to_string();
    let containers = obj["spec"]["containers"].as_array().map(Vec::len).unwrap_or(0);
    if containers == 0 {
        return Err(ApiError::invalid(
            "Pod",
            "",
            &name,
            "spec.containers",
            "FieldValueRequired",
            "Required value",
        ));
    }
    if obj["spec"]["ephemeralContainers"]
        .as_array()
        .is_some_and(|e| !e.is_empty())
    {
        return Err(ApiError::invalid(
            "Pod",
            "",
            &name,
            "spec.ephemeralContainers",
            "FieldValueForbidden",
            "Forbidden: cannot be set on create",
        ));
    }
    default_pull_policies(obj);
    if !obj["spec"]["terminationGracePeriodSeconds"].is_i64() {
        obj["spec"]["terminationGracePeriodSeconds"] = json!(30);
    }
    // Defaulted as kube-apiserver does (kubectl debug reads it without a check).
    if !obj["spec"]["securityContext"].is_object() {
        obj["spec"]["securityContext"] = json!({});
    }
    // A new pod's status is the server's: Pending until a kubelet reports.
    obj["status"] = json!({"phase": "Pending", "qosClass": qos_class(obj)});
    Ok(())
}

/// Sets each container's imagePullPolicy where the request left it out, as the server's defaulting does
/// (before admission, on create and update).
fn default_pull_policies(obj: &mut Value) {
    for list in ["containers", "initContainers"] {
        let containers = obj
            .get_mut("spec")
            .and_then(|s| s.get_mut(list))
            .and_then(Value::as_array_mut);
        for c in containers.into_iter().flatten() {
            if c.get("imagePullPolicy")
                .is_none_or(|p| p.as_str().is_none_or(str::is_empty))
            {
                let policy = pull_policy(c["image"].as_str().unwrap_or(""));
                c["imagePullPolicy"] = json!(policy);
            }
        }
    }
}

/// The server's default pull policy: `Always` for the tag `latest` (also when the image names neither a tag nor
/// a digest), else `IfNotPresent`.
fn pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

fn qos_class(pod: &Value) -> &'static str {
    let containers = pod["spec"]["containers"].as_array().cloned().unwrap_or_default();
    let has_any = containers.iter().any(|c| {
        c["resources"]["requests"].as_object().is_some_and(|m| !m.is_empty())
            || c["resources"]["limits"].as_object().is_some_and(|m| !m.is_empty())
    });
    if !has_any {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        let limits = &c["resources"]["limits"];
        let requests = &c["resources"]["requests"];
        ["cpu", "memory"]
            .iter()
            .all(|r| limits[r].is_string() && (requests[r].is_null() || requests[r] == limits[r]))
    });
    if guaranteed { "Guaranteed" } else { "Burstable" }
}

pub(crate) fn validate_update(old: &Value, new: &mut Value) -> Result<(), ApiError> {
    default_pull_policies(new);
    let name = meta::str_at(old, &["metadata", "name"]).unwrap_or("");
    let old_node = old["spec"]["nodeName"].as_str().unwrap_or("");
    let new_node = new["spec"]["nodeName"].as_str().unwrap_or("");
    if old_node != new_node && !old_node.is_empty() {
        return Err(ApiError::invalid(
            "Pod",
            "",
            name,
            "spec",
            "FieldValueForbidden",
            "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
    // Tolerations may be added to a pod, never taken away or changed (but for their tolerationSeconds).
    let tolerations = |pod: &Value| pod["spec"]["tolerations"].as_array().cloned().unwrap_or_default();
    let without_seconds = |t: &Value| {
        let mut t = t.clone();
        if let Some(o) = t.as_object_mut() {
            o.remove("tolerationSeconds");
        }
        t
    };
    let kept: Vec<Value> = tolerations(new).iter().map(without_seconds).collect();
    if tolerations(old).iter().any(|t| !kept.contains(&without_seconds(t))) {
        return Err(ApiError::invalid(
            "Pod",
            "",
            name,
            "spec.tolerations",
            "FieldValueForbidden",
            "Forbidden: existing toleration can not be modified except its tolerationSeconds",
        ));
    }
    if old_node.is_empty() && !new_node.is_empty() && old["spec"]["nodeName"] != new["spec"]["nodeName"] {
        // Binding through an update is what the binding subresource exists for; the real server forbids it too.
        return Err(ApiError::invalid(
            "Pod",
            "",
            name,
            "spec",
            "FieldValueForbidden",
            "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
    Ok(())
}

/// Bound, running pods get a grace period; unbound and finished pods go at once.
pub(crate) fn grace_period(pod: &Value, asked: Option<i64>) -> Option<i64> {
    let bound = pod["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty());
    let finished = matches!(pod["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
    if !bound || finished {
        return None;
    }
    let seconds = asked.unwrap_or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64().unwrap_or(30));
    if seconds <= 0 { None } else { Some(seconds) }
}

pub(crate) fn grace_over(pod: &Value) -> bool {
    match meta::str_at(pod, &["metadata", "deletionTimestamp"]).and_then(meta::parse_time) {
        Some(at) => at <= jiff::Timestamp::now(),
        None => true,
    }
}

/// The pod bound to a node by a `pods/binding` create.
pub(crate) fn bind(pod: &Value, binding: &Value) -> Result<Value, ApiError> {
    let name = meta::str_at(pod, &["metadata", "name"]).unwrap_or("");
    let node = binding["target"]["name"].as_str().unwrap_or("");
    if node.is_empty() {
        return Err(ApiError::invalid(
            "Binding",
            "",
            name,
            "target.name",
            "FieldValueRequired",
            "Required value",
        ));
    }
    if pod["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty()) {
        return Err(ApiError::Conflict {
            gr: crate::error::GroupResource::new("", "pods"),
            name: name.to_string(),
            reason: format!(
                "pod {name} is already assigned to node \"{}\"",
                pod["spec"]["nodeName"].as_str().unwrap_or("")
            ),
        });
    }
    let mut new = pod.clone();
    new["spec"]["nodeName"] = json!(node);
    let conditions = new["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let mut conditions: Vec<Value> = conditions.into_iter().filter(|c| c["type"] != "PodScheduled").collect();
    conditions.push(json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": meta::now()}));
    new["status"]["conditions"] = json!(conditions);
    Ok(new)
}
