//! The network of tenant namespaces.
//!
//! With `Config::tenant_network` set, every tenant namespace a pool serves holds sublet's NetworkPolicy
//! `sublet-tenant-network`, put back on every pass when it is missing or changed:
//!
//! ```text
//!   ingress: only from the namespace's own pods (a lease's nodes talk to each other), nothing else in the cluster
//!   egress:  the namespace's own pods; the cluster DNS on port 53 (when named); and the internet: 0.0.0.0/0 and
//!            ::/0 except the denied CIDRs (the cluster's pod, service and node CIDRs, the API server) and the
//!            cloud metadata addresses, always
//! ```
//! NetworkPolicies add up, so one that allows more would undo this: the chart's policy `-tenant-network` lets
//! no one but sublet write NetworkPolicies in tenant namespaces.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use super::{Context, timed};
use crate::api::keys::FIELD_MANAGER;

/// The name of sublet's NetworkPolicy in each tenant namespace.
pub const NAME: &str = "sublet-tenant-network";

/// The cloud metadata endpoints (AWS, GCP, Azure, and AWS over IPv6): denied whatever the values say.
pub const METADATA: [&str; 2] = ["169.254.169.254/32", "fd00:ec2::254/128"];

/// What tenant pods may reach.
#[derive(Clone, Debug, PartialEq)]
pub struct TenantNetwork {
    /// CIDRs tenant pods may not reach (besides [`METADATA`]).
    pub denied: Vec<String>,
    /// The cluster DNS pods, by namespace and labels, that tenant pods may query on port 53.
    pub dns: Option<(String, BTreeMap<String, String>)>,
}

impl TenantNetwork {
    /// From `sublet run`'s arguments: CIDRs (`10.0.0.0/8`, `fc00::/7`) and the DNS pods as `NAMESPACE` and
    /// `KEY=VALUE` labels. A CIDR that does not parse, or has host bits set, is an error that names it.
    pub fn new(denied: &[String], dns_namespace: Option<&str>, dns_labels: &[String]) -> Result<Self, String> {
        for cidr in denied {
            parse_cidr(cidr)?;
        }
        let dns = match dns_namespace.filter(|ns| !ns.is_empty()) {
            None => None,
            Some(ns) => {
                let mut labels = BTreeMap::new();
                for kv in dns_labels {
                    let (k, v) = kv
                        .split_once('=')
                        .ok_or_else(|| format!("DNS pod label `{kv}` is not KEY=VALUE"))?;
                    labels.insert(k.to_string(), v.to_string());
                }
                Some((ns.to_string(), labels))
            }
        };
        Ok(TenantNetwork {
            denied: denied.to_vec(),
            dns,
        })
    }

    /// The NetworkPolicy's spec.
    pub fn spec(&self) -> Value {
        let (mut v4, mut v6): (Vec<&str>, Vec<&str>) = (Vec::new(), Vec::new());
        for cidr in self.denied.iter().map(String::as_str).chain(METADATA) {
            let list = if cidr.contains(':') { &mut v6 } else { &mut v4 };
            if !list.contains(&cidr) {
                list.push(cidr);
            }
        }
        let own = json!({"podSelector": {}});
        let mut egress = vec![json!({"to": [own]})];
        if let Some((ns, labels)) = &self.dns {
            egress.push(json!({
                "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                        "podSelector": {"matchLabels": labels}}],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
            }));
        }
        egress.push(json!({"to": [
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": v4}},
            {"ipBlock": {"cidr": "::/0", "except": v6}},
        ]}));
        json!({
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [own]}],
            "egress": egress,
        })
    }
}

/// Checks `a.b.c.d/n` or `x::y/n`: an address, a prefix length in range, no host bits.
fn parse_cidr(cidr: &str) -> Result<(), String> {
    let bad = |why: &str| format!("`{cidr}` is not a CIDR: {why}");
    let (addr, len) = cidr.split_once('/').ok_or_else(|| bad("no /PREFIX"))?;
    let addr: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
    let len: u32 = len.parse().map_err(|_| bad("the prefix length is no number"))?;
    let (bits, max) = match addr {
        IpAddr::V4(a) => (u128::from(u32::from(a)) << 96, 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    };
    if len > max {
        return Err(bad(&format!("the prefix length is above {max}")));
    }
    if len < 128 && bits & (u128::MAX >> len) != 0 {
        return Err(bad("host bits are set"));
    }
    Ok(())
}

/// Puts sublet's NetworkPolicy into every tenant namespace where it is missing or differs. A failure is logged
/// and tried again on the next pass.
pub async fn keep(ctx: &Context, network: &TenantNetwork, tenant: &HashSet<String>) {
    let spec = network.spec();
    for ns in tenant {
        if !ctx.is_leader() {
            return;
        }
        let api: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), ns);
        let current = match timed(api.get_opt(NAME)).await {
            Ok(current) => current,
            Err(err) => {
                tracing::warn!(namespace = %ns, %err, "could not read the tenant namespace's NetworkPolicy");
                continue;
            }
        };
        let same = current
            .and_then(|p| serde_json::to_value(p.spec).ok())
            .is_some_and(|have| covers(&have, &spec));
        if same {
            continue;
        }
        let body = json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": NAME, "labels": {"app.kubernetes.io/managed-by": "sublet"}},
            "spec": spec,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let r = timed(api.patch(NAME, &params, &Patch::Apply(&body))).await;
        ctx.metrics.write("networkpolicy", r.is_ok());
        match r {
            Ok(_) => tracing::info!(namespace = %ns, "put the tenant NetworkPolicy in place"),
            Err(err) => tracing::warn!(namespace = %ns, %err, "could not write the tenant NetworkPolicy"),
        }
    }
}

/// Whether `have` (as the server returns it, with defaults filled in) says what `want` says.
fn covers(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| h.get(k).is_some_and(|hv| covers(hv, wv)) || (wv == &json!({}) && h.get(k).is_none())),
        (Value::Array(h), Value::Array(w)) => h.len() == w.len() && h.iter().zip(w).all(|(h, w)| covers(h, w)),
        _ => have == want,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_checked_and_named_when_wrong() {
        let ok = [
            "10.0.0.0/8",
            "169.254.169.254/32",
            "fc00::/7",
            "0.0.0.0/0",
            "fd00:ec2::254/128",
        ];
        for cidr in ok {
            assert_eq!(parse_cidr(cidr), Ok(()), "{cidr}");
        }
        for (cidr, why) in [
            ("10.0.0.0", "no /PREFIX"),
            ("10.0.0.1/8", "host bits are set"),
            ("10.0.0.0/33", "above 32"),
            ("ten/8", "not an IP address"),
            ("fc00::/129", "above 128"),
        ] {
            let err = TenantNetwork::new(&[cidr.to_string()], None, &[]).unwrap_err();
            assert!(err.contains(cidr) && err.contains(why), "{cidr}: {err}");
        }
        let err = TenantNetwork::new(&[], Some("kube-system"), &["k8s-app".into()]).unwrap_err();
        assert!(err.contains("not KEY=VALUE"), "{err}");
    }

    #[test]
    fn the_policy_denies_the_cluster_and_the_metadata_address_and_allows_the_rest() {
        let network = TenantNetwork::new(
            &["10.0.0.0/8".into(), "fc00::/7".into(), "203.0.113.7/32".into()],
            Some("kube-system"),
            &["k8s-app=kube-dns".into()],
        )
        .unwrap();
        let spec = network.spec();
        assert_eq!(spec["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(spec["ingress"], json!([{"from": [{"podSelector": {}}]}]));
        let internet = &spec["egress"][2]["to"];
        assert_eq!(
            internet[0]["ipBlock"],
            json!({"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "203.0.113.7/32", "169.254.169.254/32"]})
        );
        assert_eq!(
            internet[1]["ipBlock"],
            json!({"cidr": "::/0", "except": ["fc00::/7", "fd00:ec2::254/128"]})
        );
        assert_eq!(spec["egress"][1]["ports"][0], json!({"protocol": "UDP", "port": 53}));
        // What the server returns, with its defaults, covers it; a change does not.
        let mut served = spec.clone();
        served["egress"][0]["to"][0]["namespaceSelector"] = Value::Null;
        served.as_object_mut().unwrap().insert("extra".into(), json!(1));
        assert!(covers(&spec, &spec) && covers(&served, &spec));
        let mut loosened = spec.clone();
        loosened["egress"][2]["to"][0]["ipBlock"]["except"] = json!([]);
        assert!(!covers(&loosened, &spec));
        let mut opened = spec.clone();
        opened["ingress"] = json!([{}]);
        assert!(!covers(&opened, &spec));
    }
}
