//! Lists: selectors, pages with opaque continue tokens (410 Expired once older than the watch history),
//! and the resourceVersion checks of a list.

use serde_json::{Value, json};

use super::{Cluster, ListOpts, ListResult};
use crate::error::ApiError;
use crate::registry::ResourceType;

impl Cluster {
    pub(crate) fn list(&self, rt: &ResourceType, ns: Option<&str>, opts: &ListOpts) -> Result<ListResult, ApiError> {
        let current = self.store.current_rv();
        if let Some(rv) = opts
            .resource_version
            .as_deref()
            .filter(|rv| !rv.is_empty() && *rv != "0")
        {
            let asked: u64 = rv
                .parse()
                .map_err(|_| ApiError::BadRequest(format!("invalid resource version: {rv}")))?;
            if asked > current {
                return Err(too_large_rv(asked, current));
            }
            if opts.resource_version_match.as_deref() == Some("Exact") && asked < self.store.compacted_rv() {
                return Err(ApiError::Expired(
                    "The resourceVersion for the provided list is too old.".into(),
                ));
            }
        }
        let after = match &opts.continue_token {
            Some(token) => {
                let (rv, ns_after, name_after) = decode_continue(token)?;
                if rv < self.store.compacted_rv() {
                    return Err(ApiError::Expired(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".into(),
                    ));
                }
                Some((ns_after, name_after))
            }
            None => None,
        };
        let page = self.store.list(
            &rt.key(),
            ns,
            after.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
            opts.limit.filter(|l| *l > 0),
            |s| opts.labels.matches(|k| s.label(k)) && opts.fields.matches(|f| s.field(f)),
        );
        let continue_token = page.more_after.map(|(ns, name)| encode_continue(page.rv, &ns, &name));
        Ok(ListResult {
            items: page.items,
            rv: page.rv,
            continue_token,
        })
    }
}

fn too_large_rv(asked: u64, current: u64) -> ApiError {
    ApiError::Status(crate::error::status_body(
        504,
        "Timeout",
        &format!("Timeout: Too large resource version: {asked}, current: {current}"),
        Some(
            json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}),
        ),
    ))
}

fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    use base64::Engine as _;
    let raw = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{ns}/{name}")}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(token: &str) -> Result<(u64, String, String), ApiError> {
    use base64::Engine as _;
    let bad = || ApiError::BadRequest(format!("continue key is not valid: {token}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v["rv"].as_u64().ok_or_else(bad)?;
    let (ns, name) = v["start"].as_str().and_then(|s| s.split_once('/')).ok_or_else(bad)?;
    Ok((rv, ns.to_string(), name.to_string()))
}
