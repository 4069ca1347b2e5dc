//! The pool's reserve, reported: per class the GPUs kept from lending and why in the status, the
//! `ReserveLearned` condition for a pool with a learned reserve, and the demand and capacity gauges by class
//! that Prometheus scrapes and the learned reserve reads back as its history ([`crate::signals::history`]).

use jiff::Timestamp;

use super::Context;
use crate::api::{ClassReserve, ConditionStatus, TenantPoolStatus, set_condition};
use crate::policy::Plan;

/// Puts the plan's reserve by class and the `ReserveLearned` condition into `status`, and sets the gauges.
pub(super) fn report(
    ctx: &Context,
    pool: &str,
    plan: &Plan,
    status: &mut TenantPoolStatus,
    generation: Option<i64>,
    now: Timestamp,
) {
    status.reserve = plan
        .classes
        .iter()
        .map(|c| ClassReserve {
            class: c.class.clone(),
            gpus: c.reserve_gpus as i32,
            reason: c.reason.clone(),
        })
        .collect();
    for c in &plan.classes {
        ctx.metrics.class_demand(pool, &c.class, c.demand_gpus, c.capacity_gpus);
    }
    match &plan.reserve_learned {
        Some(Ok(())) => {
            set_condition(
                &mut status.conditions,
                "ReserveLearned",
                ConditionStatus::True,
                "HistoryCovers",
                "the demand history covers what the learned reserve needs",
                generation,
                now,
            );
        }
        Some(Err(why)) => {
            set_condition(
                &mut status.conditions,
                "ReserveLearned",
                ConditionStatus::False,
                "HistoryMissing",
                &format!("{why}; every free GPU is kept from lending"),
                generation,
                now,
            );
        }
        None => status.conditions.retain(|c| c.type_ != "ReserveLearned"),
    }
}
