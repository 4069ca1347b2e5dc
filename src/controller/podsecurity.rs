//! Pod Security on tenant namespaces.
//!
//! Every tenant namespace a pool serves is labelled `pod-security.kubernetes.io/enforce: restricted` (the
//! API server's Pod Security admission then holds tenant pods to the `restricted` profile). A namespace that
//! already carries a weaker level keeps it (someone chose it), but sublet binds no lease there.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{Context, timed};

/// The Pod Security admission label sublet sets.
pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";
/// The version of the profile: always the API server's own.
pub const ENFORCE_VERSION_LABEL: &str = "pod-security.kubernetes.io/enforce-version";
/// The only level sublet serves.
pub const RESTRICTED: &str = "restricted";

/// The tenant namespaces whose enforced level is weaker than `restricted`, with that level.
pub fn weaker(namespaces: &[Arc<Namespace>], tenant: &HashSet<String>) -> HashMap<String, String> {
    let empty = BTreeMap::new();
    namespaces
        .iter()
        .filter(|ns| tenant.contains(&ns.name_any()))
        .filter_map(|ns| {
            let level = ns.metadata.labels.as_ref().unwrap_or(&empty).get(ENFORCE_LABEL)?;
            (level != RESTRICTED).then(|| (ns.name_any(), level.clone()))
        })
        .collect()
}

/// Labels the tenant namespaces that carry no enforced level yet. A failure is logged and tried again on
/// the next pass.
pub async fn label(ctx: &Context, namespaces: &[Arc<Namespace>], tenant: &HashSet<String>) {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let empty = BTreeMap::new();
    for ns in namespaces.iter().filter(|ns| tenant.contains(&ns.name_any())) {
        if ns
            .metadata
            .labels
            .as_ref()
            .unwrap_or(&empty)
            .contains_key(ENFORCE_LABEL)
            || !ctx.is_leader()
        {
            continue;
        }
        let patch = json!({"metadata": {"labels": {ENFORCE_LABEL: RESTRICTED, ENFORCE_VERSION_LABEL: "latest"}}});
        let r = timed(api.patch(&ns.name_any(), &PatchParams::default(), &Patch::Merge(&patch))).await;
        ctx.metrics.write("namespace", r.is_ok());
        if let Err(err) = r {
            tracing::warn!(namespace = %ns.name_any(), %err, "could not label the tenant namespace for Pod Security");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_other_than_restricted_is_weaker() {
        let ns = |name: &str, level: Option<&str>| -> Arc<Namespace> {
            let labels = level.map(|l| json!({ENFORCE_LABEL: l})).unwrap_or(json!({}));
            Arc::new(serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap())
        };
        let all = [
            ns("a", Some("restricted")),
            ns("b", Some("baseline")),
            ns("c", Some("privileged")),
            ns("d", None),
            ns("internal", Some("privileged")),
        ];
        let tenant: HashSet<String> = ["a", "b", "c", "d"].map(String::from).into();
        let weak = weaker(&all, &tenant);
        assert_eq!(
            weak,
            HashMap::from([("b".into(), "baseline".into()), ("c".into(), "privileged".into())])
        );
    }
}
