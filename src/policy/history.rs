//! Internal demand over time, for the learned reserves.
//!
//! Each node class keeps the peak demand of every minute over the last `days` days, in a ring indexed by
//! the minute since the Unix epoch. Two questions are asked of it:
//!
//! - [`DemandHistory::quantile_ahead`]: over the coming notice period, what demand did the same hours of the
//!   week see in the past (hourly peaks)? Week-old samples follow the weekly swing of real clusters; while
//!   less than a week is known, the same hours of earlier days stand in.
//! - [`DemandHistory::rise_quantile`]: how far did demand climb within one window (the notice) from any
//!   minute at the same hour of the week (else of the day, else of the last day)? That is the burst the
//!   notice cannot cover, and what the burst reserve keeps free.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

const MINUTES_PER_HOUR: i64 = 60;
const MINUTES_PER_DAY: i64 = 24 * MINUTES_PER_HOUR;
const MINUTES_PER_WEEK: i64 = 7 * MINUTES_PER_DAY;

/// Minutes of history the burst reserve needs before it is trusted: one hour of minutes.
pub const BURST_MINUTES_NEEDED: usize = 60;
/// Rises a selection (same hour of the week or of the day) must hold to be used on its own.
const ENOUGH_RISES: usize = 60;

/// Per-minute peaks of internal demand (GPUs) per node class.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DemandHistory {
    minutes: u32,
    classes: BTreeMap<String, Ring>,
}

/// `slots[m mod len] = (m, peak)`; a slot whose minute is not `m` is empty or stale.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Ring {
    slots: Vec<(i64, u32)>,
}

impl Ring {
    fn get(&self, minute: i64) -> Option<u32> {
        let (m, v) = self.slots[minute.rem_euclid(self.slots.len() as i64) as usize];
        (m == minute).then_some(v)
    }
}

fn minute_of(t: Timestamp) -> i64 {
    t.as_second().div_euclid(60)
}

/// Whole minutes a window of `seconds` spans (at least one).
pub fn window_minutes(seconds: i64) -> i64 {
    (seconds.max(1) + 59) / 60
}

impl DemandHistory {
    /// A history that keeps `days` days (at least one).
    pub fn new(days: u32) -> Self {
        Self {
            minutes: days.max(1) * MINUTES_PER_DAY as u32,
            classes: BTreeMap::new(),
        }
    }

    /// How many days it keeps.
    pub fn days(&self) -> u32 {
        self.minutes / MINUTES_PER_DAY as u32
    }

    /// The classes it has samples of.
    pub fn classes(&self) -> impl Iterator<Item = &str> {
        self.classes.keys().map(String::as_str)
    }

    /// Records that `class` saw `demand` GPUs of internal demand at `at` (the minute keeps its peak).
    pub fn record(&mut self, class: &str, at: Timestamp, demand: u32) {
        let len = self.minutes as usize;
        let ring = match self.classes.get_mut(class) {
            Some(r) => r,
            None => self.classes.entry(class.to_string()).or_insert(Ring {
                slots: vec![(i64::MIN, 0); len],
            }),
        };
        let minute = minute_of(at);
        let slot = &mut ring.slots[minute.rem_euclid(len as i64) as usize];
        if slot.0 == minute {
            slot.1 = slot.1.max(demand);
        } else if slot.0 < minute {
            *slot = (minute, demand);
        }
    }

    /// Minutes with a sample for `class` in the day before `now`, counted up to `up_to`.
    pub fn recent_minutes(&self, class: &str, now: Timestamp, up_to: usize) -> usize {
        let Some(ring) = self.classes.get(class) else { return 0 };
        let now = minute_of(now);
        let mut found = 0;
        let mut m = now;
        while found < up_to && m > now - MINUTES_PER_DAY.min(i64::from(self.minutes)) {
            found += usize::from(ring.get(m).is_some());
            m -= 1;
        }
        found
    }

    /// The sample of `class` at `at`'s minute, if one was recorded.
    pub fn at(&self, class: &str, at: Timestamp) -> Option<u32> {
        self.classes.get(class)?.get(minute_of(at))
    }

    /// The `q` quantile of past hourly peaks for the hours from `now` to `now + ahead_seconds`, at the same
    /// hours of the week (or, with less than a week of history, of the day). None without any sample.
    pub fn quantile_ahead(&self, class: &str, now: Timestamp, ahead_seconds: i64, q: f64) -> Option<u32> {
        let ring = self.classes.get(class)?;
        let first = minute_of(now).div_euclid(MINUTES_PER_HOUR);
        let last = first + ahead_seconds.max(0).div_euclid(3600) + i64::from(ahead_seconds % 3600 != 0);
        let hours = i64::from(self.minutes) / MINUTES_PER_HOUR;
        let mut samples = Vec::new();
        for period in [MINUTES_PER_WEEK / MINUTES_PER_HOUR, MINUTES_PER_DAY / MINUTES_PER_HOUR] {
            for target in first..=last {
                let mut back = target - period;
                while first - back <= hours {
                    let peak = (back * MINUTES_PER_HOUR..(back + 1) * MINUTES_PER_HOUR)
                        .filter_map(|m| ring.get(m))
                        .max();
                    samples.extend(peak);
                    back -= period;
                }
            }
            if !samples.is_empty() {
                break;
            }
        }
        quantile(&mut samples, q)
    }

    /// The `q` quantile of how far demand climbed within `window_seconds` from a minute at the same hour of
    /// the week as `now` (else of the day, else any minute of the last day; with too few everywhere, the
    /// selection with the most): for each past minute `t` with a
    /// sample, the highest sample in `(t, t + window]` less the one at `t`, never below zero. With `rising`,
    /// only minutes at which demand had climbed over the window before count (what follows a rise).
    /// None without a single rise to learn from.
    pub fn rise_quantile(&self, class: &str, now: Timestamp, window_seconds: i64, q: f64, rising: bool) -> Option<u32> {
        let ring = self.classes.get(class)?;
        let w = window_minutes(window_seconds);
        let now_m = minute_of(now);
        let oldest = now_m - i64::from(self.minutes);
        let mut rises = Vec::new();
        let collect = |from: i64, to: i64, rises: &mut Vec<u32>| {
            // Minutes t in [from, to) whose window ends before now.
            for t in from.max(oldest + 1)..to.min(now_m - w + 1) {
                let Some(base) = ring.get(t) else { continue };
                if rising {
                    match ring.get(t - w) {
                        Some(before) if base > before => {}
                        _ => continue,
                    }
                }
                let top = (t + 1..=t + w).filter_map(|m| ring.get(m)).max();
                if let Some(top) = top {
                    rises.push(top.saturating_sub(base));
                }
            }
        };
        let hour_start = now_m - now_m.rem_euclid(MINUTES_PER_HOUR);
        // The first selection with enough rises; else the one with the most.
        let mut best: Vec<u32> = Vec::new();
        for period in [MINUTES_PER_WEEK, MINUTES_PER_DAY] {
            rises.clear();
            let mut start = hour_start - period;
            while start + MINUTES_PER_HOUR > oldest {
                collect(start, start + MINUTES_PER_HOUR, &mut rises);
                start -= period;
            }
            if rises.len() >= ENOUGH_RISES {
                return quantile(&mut rises, q);
            }
            if rises.len() > best.len() {
                std::mem::swap(&mut best, &mut rises);
            }
        }
        rises.clear();
        collect(now_m - MINUTES_PER_DAY, now_m, &mut rises);
        if rises.len() > best.len() {
            best = rises;
        }
        quantile(&mut best, q)
    }
}

/// Nearest-rank quantile; None for no samples.
fn quantile(samples: &mut [u32], q: f64) -> Option<u32> {
    if samples.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * samples.len() as f64).ceil() as usize;
    let i = rank.clamp(1, samples.len()) - 1;
    Some(*samples.select_nth_unstable(i).1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: i64, hour: i64) -> Timestamp {
        // 2026-11-02 is a Monday.
        let monday: Timestamp = "2026-11-02T00:00:00Z".parse().unwrap();
        Timestamp::from_second(monday.as_second() + day * 86400 + hour * 3600).unwrap()
    }

    fn plus_minutes(t: Timestamp, m: i64) -> Timestamp {
        Timestamp::from_second(t.as_second() + m * 60).unwrap()
    }

    #[test]
    fn keeps_the_hourly_peak() {
        let mut h = DemandHistory::new(14);
        h.record("a100", at(0, 9), 8);
        h.record("a100", plus_minutes(at(0, 9), 10), 24);
        h.record("a100", plus_minutes(at(0, 9), 20), 16);
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

    #[test]
    fn rises_within_the_window_at_the_same_hour_of_the_week() {
        let mut h = DemandHistory::new(14);
        // Two weeks of a flat 10 GPUs, except Mondays 9:00-10:00 where demand climbs 4 GPUs a minute for
        // 3 minutes then drops back, repeating.
        for day in 0..14 {
            for minute in 0..MINUTES_PER_DAY {
                let t = plus_minutes(at(day, 0), minute);
                let monday_nine = day % 7 == 0 && (9 * 60..10 * 60).contains(&minute);
                let demand = if monday_nine { 10 + 4 * (minute % 4) as u32 } else { 10 };
                h.record("a100", t, demand);
            }
        }
        // Monday 9:30 of the third week, a 120 s window: rises from 0 (at the top) to 8 (two climbs).
        let now = plus_minutes(at(14, 9), 30);
        assert_eq!(h.rise_quantile("a100", now, 120, 1.0, false), Some(8));
        // Half the minutes (the two lowest of each four) rise by 8, a quarter by 4, the tops by 0.
        assert_eq!(h.rise_quantile("a100", now, 120, 0.75, false), Some(8));
        assert_eq!(h.rise_quantile("a100", now, 120, 0.5, false), Some(4));
        assert_eq!(h.rise_quantile("a100", now, 120, 0.25, false), Some(0));
        // After a climb: the two upper minutes of each four, which rise 4 and 0 more (only 9:01, climbing
        // from the flat 10 before the hour, rises 8).
        assert_eq!(h.rise_quantile("a100", now, 120, 0.9, true), Some(4));
        // Tuesday 9:30: flat at that hour of the week.
        assert_eq!(
            h.rise_quantile("a100", plus_minutes(at(15, 9), 30), 120, 1.0, false),
            Some(0)
        );
        assert_eq!(h.recent_minutes("a100", now, 100), 100);
    }

    #[test]
    fn rises_fall_back_to_the_last_day() {
        let mut h = DemandHistory::new(14);
        assert_eq!(h.rise_quantile("a100", at(0, 9), 60, 1.0, false), None);
        for minute in 0..30 {
            h.record("a100", plus_minutes(at(0, 8), minute), minute as u32);
        }
        // Half an hour known, all of it a climb of one GPU a minute: a 2-minute window rises by 2.
        let now = plus_minutes(at(0, 8), 30);
        assert_eq!(h.rise_quantile("a100", now, 120, 0.9, false), Some(2));
        assert_eq!(h.recent_minutes("a100", now, 60), 30);
        assert_eq!(h.recent_minutes("a100", at(20, 0), 60), 0);
    }
}
