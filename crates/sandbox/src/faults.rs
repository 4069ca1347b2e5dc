//! Fault injection for tests: a share of matching requests answered with an error, delayed, or (watches) cut
//! with a 410 or lagging behind. Seeded, so a test sees the same faults on every run.
//!
//! Set through `SandboxConfig::faults`, `sublet sandbox --faults FILE` (YAML), or at run time with
//! `PUT /sandbox/faults` (JSON or YAML body; `GET` shows the rules in force).

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// What a fault does to a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum FaultAction {
    /// 409 Conflict, as on a stale resourceVersion.
    Conflict,
    /// 429 with Retry-After.
    TooManyRequests {
        #[serde(default = "one", rename = "retryAfterSeconds")]
        retry_after_seconds: u64,
    },
    /// 500 InternalError.
    InternalError,
    /// Handle the request normally after a delay.
    Delay { ms: u64 },
    /// Watches only: end at once with an ERROR event carrying 410 Expired.
    CutWatch,
    /// Watches only: every event arrives `ms` late, in order, as from an API server whose watch cache
    /// falls behind. Watches of different kinds then disagree for a while, as they may on a real cluster.
    LagWatch { ms: u64 },
}

fn one() -> u64 {
    1
}

fn all() -> f64 {
    1.0
}

/// One rule: which requests, how often, what happens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultRule {
    /// Verbs (get, list, watch, create, update, patch, delete); empty means all.
    #[serde(default)]
    pub verbs: Vec<String>,
    /// Resources by plural name (`pods`) or group-qualified (`tenantpools.sublet.dev`); empty means all.
    #[serde(default)]
    pub resources: Vec<String>,
    /// The share of matching requests affected, 0.0 to 1.0.
    #[serde(default = "all")]
    pub share: f64,
    /// Stop after this many faults.
    #[serde(default)]
    pub limit: Option<u64>,
    pub action: FaultAction,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultConfig {
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub rules: Vec<FaultRule>,
}

struct State {
    config: FaultConfig,
    rng: u64,
    fired: Vec<u64>,
}

pub struct Faults {
    state: Mutex<State>,
}

impl Faults {
    pub fn new(config: FaultConfig) -> Faults {
        let fired = vec![0; config.rules.len()];
        Faults {
            state: Mutex::new(State {
                rng: config.seed,
                config,
                fired,
            }),
        }
    }

    pub fn config(&self) -> FaultConfig {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).config.clone()
    }

    pub fn set(&self, config: FaultConfig) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.fired = vec![0; config.rules.len()];
        state.rng = config.seed;
        state.config = config;
    }

    /// How many times each rule has fired since the rules were set.
    pub fn fired(&self) -> Vec<u64> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).fired.clone()
    }

    /// The fault for a request, if one fires. `resource` is the plural name, `group` its API group.
    pub fn decide(&self, verb: &str, group: &str, resource: &str) -> Option<FaultAction> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.config.rules.is_empty() {
            return None;
        }
        let qualified = if group.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{group}")
        };
        for i in 0..state.config.rules.len() {
            let rule = &state.config.rules[i];
            let verb_ok = rule.verbs.is_empty() || rule.verbs.iter().any(|v| v == verb);
            let res_ok = rule.resources.is_empty() || rule.resources.iter().any(|r| *r == qualified || *r == resource);
            let watch_only =
                matches!(rule.action, FaultAction::CutWatch | FaultAction::LagWatch { .. }) && verb != "watch";
            if !verb_ok || !res_ok || watch_only || rule.limit.is_some_and(|l| state.fired[i] >= l) {
                continue;
            }
            let share = rule.share;
            let action = rule.action.clone();
            // splitmix64: deterministic from the seed and the number of decisions made.
            state.rng = state.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let draw = (z >> 11) as f64 / (1u64 << 53) as f64;
            if draw < share {
                state.fired[i] += 1;
                return Some(action);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_deterministic_and_limits_hold() {
        let yaml = "seed: 7\nrules:\n- verbs: [get]\n  resources: [pods]\n  share: 0.5\n  action: {kind: internalError}\n- resources: [nodes]\n  limit: 2\n  action: {kind: tooManyRequests, retryAfterSeconds: 3}\n";
        let config: FaultConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let run = || {
            let faults = Faults::new(config.clone());
            (0..100)
                .map(|_| faults.decide("get", "", "pods").is_some())
                .collect::<Vec<_>>()
        };
        let first = run();
        assert_eq!(first, run());
        let hits = first.iter().filter(|h| **h).count();
        assert!((30..70).contains(&hits), "{hits}");
        let faults = Faults::new(config);
        assert_eq!(
            faults.decide("list", "", "nodes"),
            Some(FaultAction::TooManyRequests { retry_after_seconds: 3 })
        );
        assert!(faults.decide("list", "", "nodes").is_some());
        assert_eq!(faults.decide("list", "", "nodes"), None);
        assert_eq!(faults.decide("list", "", "pods"), None);
    }
}
