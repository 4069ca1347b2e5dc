//! The pool's rules in the form the planner reads them: parsed, checked and ready to evaluate.
//!
//! Built from a `TenantPool` spec by [`crate::api`]; the simulator builds one the same way, so both run the
//! very rules the platform team wrote.

use std::collections::BTreeMap;

use jiff::Timestamp;
use jiff::civil::Weekday;
use jiff::tz::TimeZone;

use super::selector::Selector;

/// Everything the planner needs to know about a pool.
#[derive(Clone, Debug)]
pub struct PoolPolicy {
    pub name: String,
    pub node_selector: Selector,
    /// GPU models that may be lent; empty allows all.
    pub gpu_models: Vec<String>,
    /// The node label holding the GPU model.
    pub model_label: String,
    /// The node label naming a node group; demand is keyed by it when set, by model otherwise.
    pub group_label: Option<String>,
    pub idle_max_percent: f64,
    pub idle_for_seconds: i64,
    pub reserve: ReservePolicy,
    pub notice_seconds: i64,
    pub max_concurrent_reclaims: Option<u32>,
    pub min_lease_seconds: i64,
    pub cooldown_seconds: i64,
    pub max_lent_percent: u32,
    pub windows: Windows,
    pub prices: Prices,
    /// Whether a utilization source is configured; without one a node is idle when no internal GPU pod ran
    /// on it for the idle window.
    pub utilization_configured: bool,
    /// Whether pending internal GPU pods count as demand.
    pub pending_pods_demand: bool,
    /// The pool is being deleted: lend nothing, return everything through the notice path.
    pub deleting: bool,
    /// Why the pool's spec as written cannot be used, when it cannot: the plan then runs under the last
    /// valid spec (this policy), lends and binds nothing new, and carries out everything else.
    pub invalid: Option<String>,
    /// The pool is in `Observe` mode: nothing new is lent or bound (what would be is reported), while what
    /// is still out is carried out as in `Enforce` (notices, evictions at the deadline, returns for demand).
    pub observe: bool,
    /// The scrub a node passes between holders; None returns nodes straight away.
    pub scrub: Option<super::scrub::ScrubPolicy>,
}

/// GPUs kept back for internal bursts, per node class.
#[derive(Clone, Debug, Default)]
pub struct ReservePolicy {
    pub gpus: u32,
    pub percent: u32,
    pub learned: Option<LearnedPolicy>,
}

/// Reserves learned from the history of internal demand.
#[derive(Clone, Copy, Debug)]
pub struct LearnedPolicy {
    /// The quantile of past hourly peaks ahead (same hour of the week) to keep free; None: no peak reserve.
    pub quantile: Option<f64>,
    /// The quantile of past rises of demand within one notice to keep free.
    pub burst_quantile: f64,
    /// Give notice ahead while demand rises faster than what is free and coming back covers.
    pub reclaim_ahead: bool,
    pub history_days: u32,
}

impl LearnedPolicy {
    /// The defaults of an empty `reserve.learned`.
    pub const DEFAULT_BURST_QUANTILE: f64 = 0.75;

    pub fn with_defaults() -> Self {
        Self {
            quantile: None,
            burst_quantile: Self::DEFAULT_BURST_QUANTILE,
            reclaim_ahead: true,
            history_days: 14,
        }
    }
}

/// Prices per GPU-hour.
#[derive(Clone, Debug, Default)]
pub struct Prices {
    pub per_model: BTreeMap<String, f64>,
    pub default: f64,
    pub floor: f64,
}

impl Prices {
    /// What a GPU-hour of this model sells for: its price, never under the floor.
    pub fn for_model(&self, model: Option<&str>) -> f64 {
        let base = model
            .and_then(|m| self.per_model.get(m))
            .copied()
            .unwrap_or(self.default);
        base.max(self.floor)
    }
}

/// Weekly lending windows in a time zone. No ranges means always open.
#[derive(Clone, Debug)]
pub struct Windows {
    pub tz: TimeZone,
    pub ranges: Vec<WindowRange>,
}

impl Default for Windows {
    fn default() -> Self {
        Self {
            tz: TimeZone::UTC,
            ranges: vec![],
        }
    }
}

/// One range: on the days in `days` (bit 0 = Monday … bit 6 = Sunday), from `start` to `end` minutes of the day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowRange {
    pub days: u8,
    pub start_minute: u16,
    pub end_minute: u16,
}

/// A problem with a pool spec that its schema cannot catch.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error("unknown time zone {0:?}; use an IANA name such as Europe/Berlin or UTC")]
    TimeZone(String),
    #[error("window {index}: {message}")]
    Window { index: usize, message: String },
}

impl Windows {
    /// Parses `HH:MM` ranges in the named zone.
    pub fn parse(tz: &str, ranges: &[(u8, &str, &str)]) -> Result<Self, PolicyError> {
        let tz = TimeZone::get(tz).map_err(|_| PolicyError::TimeZone(tz.to_string()))?;
        let mut out = Vec::with_capacity(ranges.len());
        for (index, (days, start, end)) in ranges.iter().enumerate() {
            let bad = |message: String| PolicyError::Window { index, message };
            let start_minute = parse_hhmm(start).ok_or_else(|| bad(format!("start {start:?} is not HH:MM")))?;
            let end_minute = parse_hhmm(end).ok_or_else(|| bad(format!("end {end:?} is not HH:MM")))?;
            if end_minute <= start_minute || end_minute > 24 * 60 || start_minute >= 24 * 60 {
                return Err(bad(format!("end {end} must be after start {start}")));
            }
            let days = if *days == 0 { 0x7f } else { *days };
            out.push(WindowRange {
                days,
                start_minute,
                end_minute,
            });
        }
        Ok(Self { tz, ranges: out })
    }

    /// Whether `now` falls inside a window.
    pub fn is_open(&self, now: Timestamp) -> bool {
        if self.ranges.is_empty() {
            return true;
        }
        let local = now.to_zoned(self.tz.clone());
        let day_bit = 1u8 << weekday_index(local.weekday());
        let minute = local.hour() as u16 * 60 + local.minute() as u16;
        self.ranges
            .iter()
            .any(|r| r.days & day_bit != 0 && r.start_minute <= minute && minute < r.end_minute)
    }
}

/// Monday = 0 … Sunday = 6.
pub fn weekday_index(day: Weekday) -> u8 {
    day.to_monday_zero_offset() as u8
}

fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

impl PoolPolicy {
    /// A policy with the defaults of an empty `TenantPool` spec, for tests and the simulator.
    pub fn with_defaults(name: &str) -> Self {
        Self {
            name: name.to_string(),
            node_selector: Selector::default(),
            gpu_models: vec![],
            model_label: "nvidia.com/gpu.product".into(),
            group_label: None,
            idle_max_percent: 5.0,
            idle_for_seconds: 900,
            reserve: ReservePolicy::default(),
            notice_seconds: 120,
            max_concurrent_reclaims: None,
            min_lease_seconds: 0,
            cooldown_seconds: 300,
            max_lent_percent: 100,
            windows: Windows::default(),
            prices: Prices::default(),
            utilization_configured: false,
            pending_pods_demand: true,
            deleting: false,
            invalid: None,
            observe: false,
            scrub: None,
        }
    }

    /// Every node label key the planner reads for this pool: a snapshot's nodes need carry no others.
    pub fn label_keys(&self) -> impl Iterator<Item = &str> {
        self.node_selector
            .keys()
            .chain([self.model_label.as_str()])
            .chain(self.group_label.as_deref())
    }

    /// The class a node belongs to for demand: its group label's value when the pool names one, else its model.
    pub fn node_class<'a>(&self, labels: &'a BTreeMap<String, String>) -> &'a str {
        let key = self.group_label.as_deref().unwrap_or(&self.model_label);
        labels.get(key).map(String::as_str).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn windows_open_and_close_in_their_zone() {
        // Weekdays 19:00-24:00 and Saturday all day, Berlin time.
        let w = Windows::parse(
            "Europe/Berlin",
            &[(0b1_1111, "19:00", "24:00"), (0b10_0000, "00:00", "24:00")],
        )
        .unwrap();
        // 2026-11-23 is a Monday. 18:30 UTC = 19:30 CET: open.
        assert!(w.is_open(ts("2026-11-23T18:30:00Z")));
        // 17:30 UTC = 18:30 CET: closed.
        assert!(!w.is_open(ts("2026-11-23T17:30:00Z")));
        // 22:59 UTC = 23:59 CET: open; 23:00 UTC = 00:00 Tuesday CET: closed until 19:00.
        assert!(w.is_open(ts("2026-11-23T22:59:00Z")));
        assert!(w.is_open(ts("2026-11-24T18:00:00Z")));
        assert!(!w.is_open(ts("2026-11-24T08:00:00Z")));
        // Saturday noon: open; Sunday noon: closed (Sunday not listed).
        assert!(w.is_open(ts("2026-11-28T12:00:00Z")));
        assert!(!w.is_open(ts("2026-11-29T12:00:00Z")));
    }

    #[test]
    fn no_windows_is_always_open() {
        assert!(Windows::default().is_open(ts("2026-11-29T12:00:00Z")));
    }

    #[test]
    fn bad_windows_and_zones_are_errors() {
        assert_eq!(
            Windows::parse("Mars/Olympus", &[]).unwrap_err(),
            PolicyError::TimeZone("Mars/Olympus".into())
        );
        assert!(Windows::parse("UTC", &[(0, "10:00", "09:00")]).is_err());
        assert!(Windows::parse("UTC", &[(0, "25:00", "26:00")]).is_err());
        assert!(Windows::parse("UTC", &[(0, "1000", "11:00")]).is_err());
        assert!(Windows::parse("UTC", &[(0, "00:00", "24:00")]).is_ok());
    }

    #[test]
    fn price_never_under_floor() {
        let p = Prices {
            per_model: [("A100".to_string(), 2.0)].into(),
            default: 1.0,
            floor: 1.5,
        };
        assert_eq!(p.for_model(Some("A100")), 2.0);
        assert_eq!(p.for_model(Some("T4")), 1.5);
        assert_eq!(p.for_model(None), 1.5);
    }
}
