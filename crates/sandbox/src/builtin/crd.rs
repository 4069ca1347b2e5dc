//! CustomResourceDefinitions: checked and given an Established status on write, served at once by the
//! registry, their objects deleted before the CRD itself goes (finalizer `customresourcecleanup...`).

use std::sync::Arc;

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::meta;
use crate::patch::MergeSchema;
use crate::registry::{CustomInfo, ResourceType};
use crate::schema::CrdSchema;
use crate::verbs::Cluster;

pub(crate) const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// Checks a CRD and sets its status (accepted names, Established), as the apiextensions controllers would.
pub(crate) fn prepare(cluster: &Cluster, crd: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
    let name = meta::str_at(crd, &["metadata", "name"]).unwrap_or("").to_string();
    let spec = &crd["spec"];
    check_names(spec, &name)?;
    let storage_name = check_versions(spec, &name)?;
    if old.is_none() {
        check_plural_free(cluster, spec, &name)?;
    }
    crd["status"] = status(&crd["spec"], old, storage_name);
    if old.is_none() {
        let mut fins = meta::finalizers(crd);
        if !fins.iter().any(|f| f == CLEANUP_FINALIZER) {
            fins.push(CLEANUP_FINALIZER.into());
        }
        meta::metadata(crd).insert("finalizers".into(), json!(fins));
    }
    Ok(())
}

/// The 422 a CRD named `name` gets for `field`.
fn invalid(name: &str, field: &str, reason: &str, msg: &str) -> ApiError {
    ApiError::invalid(
        "CustomResourceDefinition",
        "apiextensions.k8s.io",
        name,
        field,
        reason,
        msg,
    )
}

/// Group, plural and kind are required, the name is `plural.group`, and the scope is one of the two.
fn check_names(spec: &Value, name: &str) -> Result<(), ApiError> {
    let group = spec["group"].as_str().unwrap_or("");
    let plural = spec["names"]["plural"].as_str().unwrap_or("");
    let kind = spec["names"]["kind"].as_str().unwrap_or("");
    if group.is_empty() {
        return Err(invalid(name, "spec.group", "FieldValueRequired", "Required value"));
    }
    if plural.is_empty() {
        return Err(invalid(
            name,
            "spec.names.plural",
            "FieldValueRequired",
            "Required value",
        ));
    }
    if kind.is_empty() {
        return Err(invalid(name, "spec.names.kind", "FieldValueRequired", "Required value"));
    }
    if name != format!("{plural}.{group}") {
        return Err(invalid(
            name,
            "metadata.name",
            "FieldValueInvalid",
            &format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let scope = spec["scope"].as_str().unwrap_or("");
    if scope != "Namespaced" && scope != "Cluster" {
        return Err(invalid(
            name,
            "spec.scope",
            "FieldValueNotSupported",
            &format!("Unsupported value: \"{scope}\": supported values: \"Cluster\", \"Namespaced\""),
        ));
    }
    Ok(())
}

/// Exactly one version is the storage version and every version's schema is one the server accepts;
/// returns the storage version's name.
fn check_versions(spec: &Value, name: &str) -> Result<Value, ApiError> {
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        return Err(invalid(
            name,
            "spec.versions",
            "FieldValueInvalid",
            "Invalid value: null: must have exactly one version marked as storage version",
        ));
    }
    let storage: Vec<&Value> = versions.iter().filter(|v| v["storage"] == json!(true)).collect();
    if storage.len() != 1 {
        return Err(invalid(
            name,
            "spec.versions",
            "FieldValueInvalid",
            "Invalid value: []apiextensions.CustomResourceDefinitionVersion{...}: must have exactly one version marked as storage version",
        ));
    }
    for (i, v) in versions.iter().enumerate() {
        if let Some(schema) = v["schema"].get("openAPIV3Schema") {
            crate::admission::check_schema(schema).map_err(|e| {
                invalid(
                    name,
                    &format!("spec.versions[{i}].schema.openAPIV3Schema"),
                    "FieldValueInvalid",
                    &format!("Invalid value: \"\": {e}"),
                )
            })?;
        }
    }
    Ok(storage[0]["name"].clone())
}

/// A new CRD may not take a plural another CRD (or a built-in resource) already serves: a real server
/// answers with NamesAccepted=False, the sandbox rejects.
fn check_plural_free(cluster: &Cluster, spec: &Value, name: &str) -> Result<(), ApiError> {
    let group = spec["group"].as_str().unwrap_or("");
    let plural = spec["names"]["plural"].as_str().unwrap_or("");
    let key = format!("{group}/{plural}");
    if let Some(rt) = cluster.registry.by_key(&key)
        && (rt.custom.as_ref().is_some_and(|c| c.crd_name != name) || rt.custom.is_none())
    {
        return Err(invalid(
            name,
            "spec.names.plural",
            "FieldValueInvalid",
            &format!("Invalid value: \"{plural}\": is already in use"),
        ));
    }
    Ok(())
}

/// The status the apiextensions controllers give an accepted CRD: its names with the defaults filled in,
/// NamesAccepted and Established (transition times kept from `old`), and the storage version recorded.
fn status(spec: &Value, old: Option<&Value>, storage_name: Value) -> Value {
    let kind = spec["names"]["kind"].as_str().unwrap_or("");
    let mut accepted = spec["names"].clone();
    if accepted["singular"].as_str().unwrap_or("").is_empty() {
        accepted["singular"] = json!(kind.to_lowercase());
    }
    if accepted["listKind"].as_str().unwrap_or("").is_empty() {
        accepted["listKind"] = json!(format!("{kind}List"));
    }
    let now = meta::now();
    let keep_time = |ty: &str| {
        old.and_then(|o| o["status"]["conditions"].as_array())
            .and_then(|cs| cs.iter().find(|c| c["type"] == ty))
            .and_then(|c| c["lastTransitionTime"].as_str().map(String::from))
            .unwrap_or_else(|| now.clone())
    };
    let mut stored_versions: Vec<Value> = old
        .and_then(|o| o["status"]["storedVersions"].as_array().cloned())
        .unwrap_or_default();
    if !stored_versions.contains(&storage_name) {
        stored_versions.push(storage_name);
    }
    json!({
        "acceptedNames": accepted,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": keep_time("NamesAccepted"), "reason": "NoConflicts", "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": keep_time("Established"), "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
        ],
        "storedVersions": stored_versions,
    })
}

/// The resource a CRD defines.
pub(crate) fn resource_type(crd: &Value) -> Option<ResourceType> {
    let spec = &crd["spec"];
    let names = &crd["status"]["acceptedNames"];
    let versions: Vec<&Value> = spec["versions"]
        .as_array()?
        .iter()
        .filter(|v| v["served"] != json!(false))
        .collect();
    let storage = spec["versions"]
        .as_array()?
        .iter()
        .find(|v| v["storage"] == json!(true))?;
    let mut served: Vec<String> = vec![storage["name"].as_str()?.to_string()];
    for v in &versions {
        let n = v["name"].as_str().unwrap_or("").to_string();
        if !served.contains(&n) {
            served.push(n);
        }
    }
    let mut info = CustomInfo {
        crd_name: meta::str_at(crd, &["metadata", "name"])?.to_string(),
        ..Default::default()
    };
    let mut subresources = Vec::new();
    for v in spec["versions"].as_array()? {
        let vname = v["name"].as_str().unwrap_or("").to_string();
        if let Some(schema) = v["schema"].get("openAPIV3Schema") {
            info.schemas.insert(vname.clone(), schema.clone());
            info.merge.insert(vname.clone(), MergeSchema::from_openapi(schema));
            match CrdSchema::new(schema) {
                Ok(compiled) => {
                    info.compiled.insert(vname.clone(), Arc::new(compiled));
                }
                Err(e) => tracing::warn!(crd = %info.crd_name, version = %vname, error = %e, "schema does not compile"),
            }
        }
        if let Some(cols) = v["additionalPrinterColumns"].as_array() {
            info.printer_columns.insert(vname.clone(), cols.clone());
        }
        if v["subresources"].get("status").is_some() && !subresources.contains(&"status") {
            subresources.push("status");
        }
    }
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    Some(ResourceType {
        group: spec["group"].as_str()?.to_string(),
        version: served[0].clone(),
        versions: served,
        resource: names["plural"].as_str()?.to_string(),
        kind: names["kind"].as_str()?.to_string(),
        singular: names["singular"].as_str().unwrap_or("").to_string(),
        namespaced: spec["scope"] == "Namespaced",
        short_names: strings(&names["shortNames"]),
        categories: strings(&names["categories"]),
        subresources,
        create_only: false,
        custom: Some(Arc::new(info)),
    })
}

pub(crate) fn install(cluster: &Cluster, crd: &Value) {
    if let Some(rt) = resource_type(crd) {
        cluster.registry.install(rt);
    }
}

pub(crate) fn uninstall(cluster: &Cluster, crd: &Value) {
    if let (Some(group), Some(plural)) = (crd["spec"]["group"].as_str(), crd["spec"]["names"]["plural"].as_str()) {
        cluster.registry.remove(&format!("{group}/{plural}"));
    }
}
