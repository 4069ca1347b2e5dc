//! The demand history of a pool with a learned reserve, read back from Prometheus.
//!
//! ```text
//!  sublet /metrics: sublet_internal_demand_gpus{pool,class} ──scrape──▶ Prometheus
//!  first pass:  query_range(max by (class) (max_over_time(…[1m])), now − historyDays … now, step 1m)
//!               in slices of at most 10,000 points ──▶ DemandHistory (per class, per minute)
//!  then:        the same from the last minute read to now, at most once a minute
//! ```
//!
//! Nothing is kept that Prometheus does not hold: a restarted controller reads the whole history again. While
//! Prometheus cannot answer, the history is reported as unusable (the planner then lends nothing new from
//! the classes it reserves for) and the read is tried again after a pause.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::prometheus::{PromError, Prometheus};
use crate::policy::DemandHistory;

/// The resolution of the history: one sample a minute.
pub const STEP_SECONDS: i64 = 60;
/// The most points one range query asks for (Prometheus refuses more than 11,000).
const POINTS_PER_QUERY: i64 = 10_000;
/// How long after a failed read the next is tried.
const RETRY_SECONDS: i64 = 10;

/// The query for one pool's per-minute demand peaks by class.
pub fn demand_query(pool: &str) -> String {
    let pool = pool.replace('\\', "\\\\").replace('"', "\\\"");
    format!("max by (class) (max_over_time(sublet_internal_demand_gpus{{pool=\"{pool}\"}}[59s]))")
}

/// Per pool, the history read so far and until when.
#[derive(Default)]
pub struct Histories {
    pools: Mutex<HashMap<String, PoolHistory>>,
}

#[derive(Clone)]
struct PoolHistory {
    url: String,
    days: u32,
    history: Arc<DemandHistory>,
    /// Read up to here (exclusive); None before the first read.
    until: Option<Timestamp>,
    /// The last failure and when, while Prometheus does not answer.
    failed: Option<(Timestamp, String)>,
}

impl Histories {
    /// The pool's history as of `now`, reading what is new from `prometheus` when a minute or more is due.
    pub async fn read(
        &self,
        pool: &str,
        prometheus: &Prometheus,
        days: u32,
        now: Timestamp,
    ) -> Result<Arc<DemandHistory>, String> {
        let mut state = {
            let mut pools = self.pools.lock().expect("history lock");
            let entry = pools.entry(pool.to_string()).or_insert_with(|| PoolHistory {
                url: prometheus.url().to_string(),
                days,
                history: Arc::new(DemandHistory::new(days)),
                until: None,
                failed: None,
            });
            if entry.url != prometheus.url() || entry.days != days {
                *entry = PoolHistory {
                    url: prometheus.url().to_string(),
                    days,
                    history: Arc::new(DemandHistory::new(days)),
                    until: None,
                    failed: None,
                };
            }
            entry.clone()
        };
        let retry_due = state
            .failed
            .as_ref()
            .is_none_or(|(at, _)| now.as_second() - at.as_second() >= RETRY_SECONDS);
        let read_due = state
            .until
            .is_none_or(|u| u.as_second() <= now.as_second().div_euclid(STEP_SECONDS) * STEP_SECONDS);
        if read_due && retry_due {
            match load(&mut state, pool, prometheus, now).await {
                Ok(()) => state.failed = None,
                Err(e) => state.failed = Some((now, format!("Prometheus at {} cannot answer: {e}", prometheus.url()))),
            }
            self.pools
                .lock()
                .expect("history lock")
                .insert(pool.to_string(), state.clone());
        }
        match state.failed {
            Some((_, why)) => Err(why),
            None => Ok(state.history),
        }
    }

    /// Forgets the pools not named, so a deleted pool's history does not linger.
    pub fn retain(&self, pools: &[&str]) {
        self.pools
            .lock()
            .expect("history lock")
            .retain(|name, _| pools.contains(&name.as_str()));
    }
}

/// Reads from `state.until` (or `days` back) to `now` in slices, moving `until` past each slice read.
async fn load(state: &mut PoolHistory, pool: &str, prometheus: &Prometheus, now: Timestamp) -> Result<(), PromError> {
    let end = now.as_second().div_euclid(STEP_SECONDS) * STEP_SECONDS;
    // The last minutes read may have been read before their last scrape: read them again (a minute keeps
    // its peak, so reading twice changes nothing else).
    let mut from = match state.until {
        Some(u) => u.as_second() - 2 * STEP_SECONDS,
        None => end - i64::from(state.days) * 86_400,
    };
    let query = demand_query(pool);
    while from <= end {
        let to = (from + (POINTS_PER_QUERY - 1) * STEP_SECONDS).min(end);
        let (start, stop) = (ts(from), ts(to));
        let series = prometheus
            .query_range(&query, start, stop, Duration::from_secs(STEP_SECONDS as u64))
            .await?;
        let history = Arc::make_mut(&mut state.history);
        for s in &series {
            let class = s.labels.get("class").map(String::as_str).unwrap_or("");
            for &(at, value) in &s.points {
                if value.is_finite() && value >= 0.0 {
                    // The value at `at` is the peak of the minute before it.
                    let minute = at.checked_sub(SignedDuration::from_secs(1)).unwrap_or(at);
                    history.record(class, minute, value.round() as u32);
                }
            }
        }
        from = to + STEP_SECONDS;
        state.until = Some(ts(from));
    }
    Ok(())
}

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_names_the_pool_and_groups_by_class() {
        assert_eq!(
            demand_query("gpu"),
            "max by (class) (max_over_time(sublet_internal_demand_gpus{pool=\"gpu\"}[59s]))"
        );
        assert!(demand_query("a\"b").contains("pool=\"a\\\"b\""));
    }
}
