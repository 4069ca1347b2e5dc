//! Tenant demand. By default tenants want without bound: every lent node is leased at once. A
//! [`TenantSpec`] (`--tenants FILE`) replaces that with leases arriving at random (a Poisson process), each
//! for some GPUs, a duration drawn from a distribution and an optional price cap. The arrivals are drawn
//! once, from a seed, so every policy of a run faces the same tenants.
//!
//! ```yaml
//! arrivalsPerHour: 6
//! gpusPerLease: 16
//! duration: {distribution: exponential, meanSeconds: 7200}
//!   # or {distribution: fixed, seconds: 3600}, {distribution: uniform, minSeconds: 600, maxSeconds: 7200},
//!   # {distribution: unbounded} (the default: until reclaimed)
//! maxPricePerGpuHour: 2.5                         # optional
//! patienceSeconds: 3600                           # optional: a request not served by then is withdrawn
//! seed: 1                                         # optional
//! ```
//!
//! A tenant leaves at the end of its lease on its own (no eviction).

use serde::Deserialize;

/// The tenants of a run.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantSpec {
    pub arrivals_per_hour: f64,
    #[serde(default = "one")]
    pub gpus_per_lease: u32,
    #[serde(default)]
    pub duration: Duration,
    #[serde(default)]
    pub max_price_per_gpu_hour: Option<f64>,
    /// A request not served within this many seconds is withdrawn.
    #[serde(default = "an_hour")]
    pub patience_seconds: i64,
    #[serde(default)]
    pub seed: u64,
}

/// More requests than this an hour would drown the replay in waiting leases.
pub const MAX_ARRIVALS_PER_HOUR: f64 = 1000.0;
/// The most requests that may wait at once on average (rate × patience): each is a pending lease every plan
/// looks at.
pub const MAX_WAITING: f64 = 100.0;

fn one() -> u32 {
    1
}

fn an_hour() -> i64 {
    3600
}

/// How long a lease lasts.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(tag = "distribution", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Duration {
    /// Until reclaimed.
    #[default]
    Unbounded,
    Fixed {
        seconds: i64,
    },
    Exponential {
        mean_seconds: f64,
    },
    Uniform {
        min_seconds: i64,
        max_seconds: i64,
    },
}

/// One lease request.
#[derive(Clone, Debug, PartialEq)]
pub struct Arrival {
    /// Seconds from the trace start.
    pub at: i64,
    pub gpus: u32,
    pub duration_seconds: Option<i64>,
    pub max_price: Option<f64>,
}

/// A tenant spec that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TenantSpecError {
    #[error("not a tenant spec: {0}")]
    Parse(#[from] serde_yaml_ng::Error),
    #[error("{0}")]
    Invalid(String),
}

impl TenantSpec {
    pub fn from_yaml(yaml: &str) -> Result<Self, TenantSpecError> {
        let spec: Self = serde_yaml_ng::from_str(yaml)?;
        let bad = |m: &str| Err(TenantSpecError::Invalid(m.to_string()));
        if !(spec.arrivals_per_hour.is_finite()
            && spec.arrivals_per_hour > 0.0
            && spec.arrivals_per_hour <= MAX_ARRIVALS_PER_HOUR)
        {
            return bad("arrivalsPerHour must be a positive number, at most 1000");
        }
        if spec.patience_seconds <= 0 {
            return bad("patienceSeconds must be positive");
        }
        if spec.arrivals_per_hour * spec.patience_seconds as f64 / 3600.0 > MAX_WAITING {
            return bad("arrivalsPerHour × patienceSeconds / 3600 (requests waiting at once) must be at most 100");
        }
        if spec.gpus_per_lease == 0 {
            return bad("gpusPerLease must be at least 1");
        }
        if spec.max_price_per_gpu_hour.is_some_and(|p| p.is_nan() || p < 0.0) {
            return bad("maxPricePerGpuHour must not be negative");
        }
        match spec.duration {
            Duration::Fixed { seconds } if seconds <= 0 => bad("duration.fixed.seconds must be positive"),
            Duration::Exponential { mean_seconds } if !(mean_seconds.is_finite() && mean_seconds >= 1.0) => {
                bad("duration.exponential.meanSeconds must be at least 1")
            }
            Duration::Uniform {
                min_seconds,
                max_seconds,
            } if min_seconds <= 0 || max_seconds < min_seconds => {
                bad("duration.uniform needs 0 < minSeconds <= maxSeconds")
            }
            _ => Ok(spec),
        }
    }

    /// The lease requests over `seconds` of trace, in time order.
    pub fn arrivals(&self, seconds: i64) -> Vec<Arrival> {
        let mut rng = SplitMix(self.seed ^ 0x5eed_0f7e_4a47);
        let mean_gap = 3600.0 / self.arrivals_per_hour;
        let mut out = Vec::new();
        let mut t = 0.0;
        loop {
            t += rng.exponential(mean_gap);
            if t >= seconds as f64 {
                return out;
            }
            let duration_seconds = match self.duration {
                Duration::Unbounded => None,
                Duration::Fixed { seconds } => Some(seconds),
                Duration::Exponential { mean_seconds } => Some(rng.exponential(mean_seconds).ceil().max(1.0) as i64),
                Duration::Uniform {
                    min_seconds,
                    max_seconds,
                } => Some(min_seconds + (rng.unit() * (max_seconds - min_seconds + 1) as f64) as i64),
            };
            out.push(Arrival {
                at: t as i64,
                gpus: self.gpus_per_lease,
                duration_seconds,
                max_price: self.max_price_per_gpu_hour,
            });
        }
    }
}

/// A small, seedable generator (SplitMix64): enough for arrival times, and the same on every platform.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_duration_form() {
        let s = TenantSpec::from_yaml("arrivalsPerHour: 2\nduration: {distribution: exponential, meanSeconds: 600}\n")
            .unwrap();
        assert_eq!(s.duration, Duration::Exponential { mean_seconds: 600.0 });
        assert_eq!(s.gpus_per_lease, 1);
        let s = TenantSpec::from_yaml(
            "arrivalsPerHour: 2\nduration: {distribution: uniform, minSeconds: 60, maxSeconds: 120}",
        )
        .unwrap();
        assert!(matches!(s.duration, Duration::Uniform { .. }));
        let s = TenantSpec::from_yaml("arrivalsPerHour: 2\nduration: {distribution: unbounded}\nmaxPricePerGpuHour: 3")
            .unwrap();
        assert_eq!((s.duration, s.max_price_per_gpu_hour), (Duration::Unbounded, Some(3.0)));
    }

    #[test]
    fn refuses_nonsense() {
        for yaml in [
            "arrivalsPerHour: 0",
            "arrivalsPerHour: 1e9",
            "arrivalsPerHour: 1\npatienceSeconds: 0",
            "arrivalsPerHour: 200",
            "arrivalsPerHour: 1\ngpusPerLease: 0",
            "arrivalsPerHour: 1\nduration: {distribution: fixed, seconds: -5}",
            "arrivalsPerHour: 1\nduration: {distribution: uniform, minSeconds: 90, maxSeconds: 60}",
            "arrivalsPerHour: 1\nmaxPricePerGpuHour: -1",
            "arrivalsPerHour: 1\nsurprise: true",
        ] {
            assert!(TenantSpec::from_yaml(yaml).is_err(), "{yaml}");
        }
    }

    #[test]
    fn arrivals_follow_the_rate_and_the_seed() {
        let s = TenantSpec::from_yaml("arrivalsPerHour: 10\nduration: {distribution: fixed, seconds: 900}\nseed: 3")
            .unwrap();
        let a = s.arrivals(1000 * 3600);
        // A Poisson process of 10 an hour over 1,000 hours: 10,000 ± a few hundred.
        assert!((9_500..10_500).contains(&a.len()), "{}", a.len());
        assert!(a.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(a.iter().all(|x| x.duration_seconds == Some(900) && x.gpus == 1));
        assert_eq!(a, s.arrivals(1000 * 3600));
    }
}
