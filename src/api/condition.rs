//! Status conditions, kept by the pure [`set_condition`].

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The three values a condition's `status` may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

/// Sets `type_` in `conditions` to the given status, reason and message.
///
/// `lastTransitionTime` moves to `now` only when the status flips (or the condition is new), so a
/// reader can tell how long a pool has been, say, without fresh signals. Returns whether anything changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
    now: jiff::Timestamp,
) -> bool {
    let status = status.as_str();
    if let Some(existing) = conditions.iter_mut().find(|c| c.type_ == type_) {
        let flipped = existing.status != status;
        let changed = flipped
            || existing.reason != reason
            || existing.message != message
            || existing.observed_generation != observed_generation;
        if flipped {
            existing.last_transition_time = Time(now);
        }
        existing.status = status.to_string();
        existing.reason = reason.to_string();
        existing.message = message.to_string();
        existing.observed_generation = observed_generation;
        return changed;
    }
    conditions.push(Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation,
        last_transition_time: Time(now),
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn new_condition_takes_now() {
        let mut c = Vec::new();
        assert!(set_condition(
            &mut c,
            "Ready",
            ConditionStatus::True,
            "Synced",
            "ok",
            Some(1),
            at(10)
        ));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time.0, at(10));
        assert_eq!(c[0].status, "True");
    }

    #[test]
    fn same_status_keeps_transition_time_but_updates_message() {
        let mut c = Vec::new();
        set_condition(&mut c, "Ready", ConditionStatus::True, "Synced", "ok", Some(1), at(10));
        assert!(set_condition(
            &mut c,
            "Ready",
            ConditionStatus::True,
            "Synced",
            "still ok",
            Some(2),
            at(20)
        ));
        assert_eq!(c[0].last_transition_time.0, at(10));
        assert_eq!(c[0].message, "still ok");
        assert_eq!(c[0].observed_generation, Some(2));
    }

    #[test]
    fn unchanged_condition_reports_no_change() {
        let mut c = Vec::new();
        set_condition(&mut c, "Ready", ConditionStatus::True, "Synced", "ok", Some(1), at(10));
        assert!(!set_condition(
            &mut c,
            "Ready",
            ConditionStatus::True,
            "Synced",
            "ok",
            Some(1),
            at(30)
        ));
        assert_eq!(c[0].last_transition_time.0, at(10));
    }

    #[test]
    fn flip_moves_transition_time() {
        let mut c = Vec::new();
        set_condition(&mut c, "SignalsFresh", ConditionStatus::True, "Fresh", "", None, at(10));
        set_condition(&mut c, "Ready", ConditionStatus::True, "Synced", "", None, at(10));
        set_condition(
            &mut c,
            "SignalsFresh",
            ConditionStatus::False,
            "PrometheusDown",
            "timeout",
            None,
            at(50),
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].last_transition_time.0, at(50));
        assert_eq!(c[0].reason, "PrometheusDown");
        assert_eq!(c[1].last_transition_time.0, at(10));
    }
}
