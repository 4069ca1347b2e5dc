//! Internal demand over time, for the learned reserve.
//!
//! Each node class keeps the peak demand of every hour over the last `days` days, in a ring indexed by the
//! hour since the Unix epoch. The learned reserve asks: over the coming notice period, what demand did the
//! same hours of the week see in the past? Week-old samples follow the weekly swing of real clusters; while
//! less than a week is known, the same hours of earlier days stand in.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

const HOURS_PER_WEEK: i64 = 168;
const HOURS_PER_DAY: i64 = 24;

/// Hourly peaks of internal demand (GPUs) per node class.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DemandHistory {
    hours: u32,
    classes: BTreeMap<String, Ring>,
}

/// `slots[h mod len] = (h, peak)`; a slot whose hour is not `h` is empty or stale.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Ring {
    slots: Vec<(i64, u32)>,
}

impl Ring {
    fn get(&self, hour: i64) -> Option<u32> {
        let (h, v) = self.slots[hour.rem_euclid(self.slots.len() as i64) as usize];
        (h == hour).then_some(v)
    }
}

fn hour_of(t: Timestamp) -> i64 {
    t.as_second().div_euclid(3600)
}

impl DemandHistory {
    /// A history that keeps `days` days (at least one).
    pub fn new(days: u32) -> Self {
        Self {
            hours: days.max(1) * 24,
            classes: BTreeMap::new(),
        }
    }

    /// How many days it keeps.
    pub fn days(&self) -> u32 {
        self.hours / 24
    }

    /// Records that `class` saw `demand` GPUs of internal demand at `at`.
    pub fn record(&mut self, class: &str, at: Timestamp, demand: u32) {
        let len = self.hours as usize;
        let ring = match self.classes.get_mut(class) {
            Some(r) => r,
            None => self.classes.entry(class.to_string()).or_insert(Ring {
                slots: vec![(i64::MIN, 0); len],
            }),
        };
        let hour = hour_of(at);
        let slot = &mut ring.slots[hour.rem_euclid(len as i64) as usize];
        if slot.0 == hour {
            slot.1 = slot.1.max(demand);
        } else if slot.0 < hour {
            *slot = (hour, demand);
        }
    }

    /// The `q` quantile of past peaks for the hours from `now` to `now + ahead_seconds`, at the same hours of
    /// the week (or, with less than a week of history, of the day). None without any sample.
    pub fn quantile_ahead(&self, class: &str, now: Timestamp, ahead_seconds: i64, q: f64) -> Option<u32> {
        let ring = self.classes.get(class)?;
        let first = hour_of(now);
        let last = hour_of(now) + ahead_seconds.max(0).div_euclid(3600) + i64::from(ahead_seconds % 3600 != 0);
        let mut samples = Vec::new();
        for period in [HOURS_PER_WEEK, HOURS_PER_DAY] {
            for target in first..=last {
                let mut back = target - period;
                while first - back <= self.hours as i64 {
                    if let Some(v) = ring.get(back) {
                        samples.push(v);
                    }
                    back -= period;
                }
            }
            if !samples.is_empty() {
                break;
            }
        }
        quantile(&mut samples, q)
    }
}

/// Nearest-rank quantile; None for no samples.
fn quantile(samples: &mut [u32], q: f64) -> Option<u32> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let rank = (q.clamp(0.0, 1.0) * samples.len() as f64).ceil() as usize;
    Some(samples[rank.clamp(1, samples.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: i64, hour: i64) -> Timestamp {
        // 2026-11-02 is a Monday.
        let monday: Timestamp = "2026-11-02T00:00:00Z".parse().unwrap();
        Timestamp::from_second(monday.as_second() + day * 86400 + hour * 3600).unwrap()
    }

    #[test]
    fn keeps_the_hourly_peak() {
        let mut h = DemandHistory::new(14);
        h.record("a100", at(0, 9), 8);
        h.record("a100", at(0, 9), 24);
        h.record("a100", at(0, 9), 16);
        assert_eq!(h.quantile_ahead("a100", at(1, 9), 0, 1.0), Some(24));
    }

    #[test]
    fn uses_the_same_hour_of_the_week_once_a_week_is_known() {
        let mut h = DemandHistory::new(14);
        for day in 0..14 {
            // Mondays (day 0 and 7) peak at 9:00; other days stay low.
            let demand = if day % 7 == 0 { 64 } else { 8 };
            h.record("a100", at(day, 9), demand);
        }
        // Monday of the third week at 8:30, looking an hour ahead: the Monday 9:00 peaks count.
        let now = Timestamp::from_second(at(14, 8).as_second() + 1800).unwrap();
        assert_eq!(h.quantile_ahead("a100", now, 3600, 0.95), Some(64));
        // Tuesday at 9:00: the Tuesday samples only.
        assert_eq!(h.quantile_ahead("a100", at(15, 9), 0, 0.95), Some(8));
    }

    #[test]
    fn falls_back_to_the_same_hour_of_the_day() {
        let mut h = DemandHistory::new(14);
        h.record("a100", at(0, 9), 40);
        h.record("a100", at(1, 9), 20);
        assert_eq!(h.quantile_ahead("a100", at(2, 9), 0, 1.0), Some(40));
        assert_eq!(h.quantile_ahead("a100", at(2, 9), 0, 0.5), Some(20));
        assert_eq!(h.quantile_ahead("h100", at(2, 9), 0, 0.5), None);
    }

    #[test]
    fn forgets_beyond_its_days() {
        let mut h = DemandHistory::new(7);
        h.record("a100", at(0, 9), 40);
        assert_eq!(h.quantile_ahead("a100", at(7, 9), 0, 1.0), Some(40));
        assert_eq!(h.quantile_ahead("a100", at(15, 9), 0, 1.0), None);
        // Overwritten by a newer sample in the same ring slot.
        h.record("a100", at(7, 9), 4);
        assert_eq!(h.quantile_ahead("a100", at(14, 9), 0, 1.0), Some(4));
    }

    #[test]
    fn quantile_is_nearest_rank() {
        let mut s = vec![5, 1, 4, 2, 3];
        assert_eq!(quantile(&mut s, 0.0), Some(1));
        assert_eq!(quantile(&mut s, 0.5), Some(3));
        assert_eq!(quantile(&mut s, 0.95), Some(5));
        assert_eq!(quantile(&mut [], 0.5), None);
    }
}
