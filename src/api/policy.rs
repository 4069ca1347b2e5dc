//! From a `TenantPool` spec to the planner's [`PoolPolicy`].

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{TenantPoolSpec, Weekday};
use crate::policy::{LearnedPolicy, PolicyError, PoolPolicy, Prices, Requirement, ReservePolicy, Selector, Windows};

/// A label selector as the planner matches it.
pub fn selector(sel: Option<&LabelSelector>) -> Selector {
    let Some(sel) = sel else { return Selector::default() };
    let match_labels = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let requirements = sel
        .match_expressions
        .iter()
        .flatten()
        .map(|e| {
            let values = e.values.clone().unwrap_or_default();
            match e.operator.as_str() {
                "In" => Requirement::In(e.key.clone(), values),
                "NotIn" => Requirement::NotIn(e.key.clone(), values),
                "Exists" => Requirement::Exists(e.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
                // An operator the API would have refused: match nothing rather than everything.
                _ => Requirement::In(e.key.clone(), vec![]),
            }
        })
        .collect();
    Selector {
        match_labels,
        requirements,
    }
}

fn day_bit(d: Weekday) -> u8 {
    1 << match d {
        Weekday::Monday => 0,
        Weekday::Tuesday => 1,
        Weekday::Wednesday => 2,
        Weekday::Thursday => 3,
        Weekday::Friday => 4,
        Weekday::Saturday => 5,
        Weekday::Sunday => 6,
    }
}

fn non_negative(v: i32) -> u32 {
    v.max(0) as u32
}

impl TenantPoolSpec {
    /// The planner's form of this pool. Fails on what the schema cannot check (an unknown time zone).
    pub fn to_policy(&self, name: &str, deleting: bool) -> Result<PoolPolicy, PolicyError> {
        let ranges: Vec<(u8, &str, &str)> = self
            .windows
            .iter()
            .map(|w| {
                (
                    w.days.iter().fold(0u8, |m, d| m | day_bit(*d)),
                    w.start.as_str(),
                    w.end.as_str(),
                )
            })
            .collect();
        let windows = Windows::parse(&self.time_zone, &ranges)?;
        let learned = self
            .reserve
            .learned
            .as_ref()
            .filter(|l| l.enabled)
            .map(|l| LearnedPolicy {
                quantile: l.quantile,
                burst_quantile: l.burst_quantile,
                reclaim_ahead: l.reclaim_ahead,
                history_days: non_negative(l.history_days).max(1),
            });
        Ok(PoolPolicy {
            name: name.to_string(),
            node_selector: selector(self.node_selector.as_ref()),
            gpu_models: self.gpu_models.clone(),
            model_label: self.gpu_model_label.clone(),
            group_label: self.node_group_label.clone(),
            idle_max_percent: f64::from(self.idle.max_utilization_percent),
            idle_for_seconds: self.idle.for_seconds.max(0),
            reserve: ReservePolicy {
                gpus: non_negative(self.reserve.gpus),
                percent: non_negative(self.reserve.percent).min(100),
                learned,
            },
            notice_seconds: self.reclaim.notice_seconds.max(0),
            max_concurrent_reclaims: self.reclaim.max_concurrent.map(|m| non_negative(m).max(1)),
            min_lease_seconds: self.reclaim.min_lease_seconds.max(0),
            cooldown_seconds: self.reclaim.cooldown_seconds.max(0),
            max_lent_percent: non_negative(self.max_lent_percent).min(100),
            windows,
            prices: Prices {
                per_model: self.pricing.per_gpu_hour.clone(),
                default: self.pricing.default_per_gpu_hour.max(0.0),
                floor: self.pricing.floor_per_gpu_hour.max(0.0),
            },
            utilization_configured: self.utilization.is_some(),
            pending_pods_demand: self.demand.pending_pods.enabled,
            deleting,
            invalid: None,
            // Set by the controller from `mode`; the simulator plans as a pool in Enforce would.
            observe: false,
            scrub: self.scrub.as_ref().map(|s| crate::policy::ScrubPolicy {
                timeout_seconds: s.timeout_seconds.max(1),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> TenantPoolSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn defaults_match_the_planner_defaults() {
        let p = spec(serde_json::json!({})).to_policy("p", false).unwrap();
        let d = PoolPolicy::with_defaults("p");
        assert_eq!(p.idle_for_seconds, d.idle_for_seconds);
        assert_eq!(p.idle_max_percent, d.idle_max_percent);
        assert_eq!(p.notice_seconds, d.notice_seconds);
        assert_eq!(p.cooldown_seconds, d.cooldown_seconds);
        assert_eq!(p.max_lent_percent, d.max_lent_percent);
        assert_eq!(p.model_label, d.model_label);
        assert!(!p.utilization_configured);
    }

    #[test]
    fn windows_and_selectors_carry_over() {
        let p = spec(serde_json::json!({
            "nodeSelector": {"matchLabels": {"pool": "gpu"}, "matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
            "windows": [{"days": ["Saturday", "Sunday"], "start": "00:00", "end": "24:00"}],
            "timeZone": "Asia/Tokyo",
            "reserve": {"learned": {"quantile": 0.9, "historyDays": 21}},
        }))
        .to_policy("p", true)
        .unwrap();
        assert_eq!(p.windows.ranges[0].days, 0b110_0000);
        assert_eq!(
            p.node_selector.match_labels,
            vec![("pool".to_string(), "gpu".to_string())]
        );
        assert_eq!(
            p.node_selector.requirements,
            vec![Requirement::In("zone".into(), vec!["a".into()])]
        );
        assert_eq!(p.reserve.learned.unwrap().history_days, 21);
        assert!(p.deleting);
    }

    #[test]
    fn unknown_time_zone_is_an_error() {
        let err = spec(serde_json::json!({"timeZone": "Nowhere/Town"}))
            .to_policy("p", false)
            .unwrap_err();
        assert!(err.to_string().contains("unknown time zone"));
    }
}
