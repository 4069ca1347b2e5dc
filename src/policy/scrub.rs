//! Scrubbing: a node a tenant held passes a pool-configured scrub before anyone else gets it.
//!
//! ```text
//!   Reclaiming ──(no tenant pod left)──▶ Scrubbing ──(scrub Job Complete)──▶ Internal (then lendable again)
//!   Leased ──(notice with no tenant pod)──┘     │
//!                                               └─(Job Failed, or older than the timeout)─▶ stays Scrubbing,
//!                                                  out of use, its reason says why; deleting the Job retries
//! ```
//!
//! The planner only decides: which node enters Scrubbing (with the name of its Job, derived from the node
//! and the lease it leaves, so a restart never makes a second one), and which leaves it. The controller
//! creates, reads and deletes the Jobs and tells the planner what each shows ([`ScrubView`]). A pool without
//! a scrub returns nodes exactly as before.

use jiff::{SignedDuration, Timestamp};

use super::draft::Draft;
use super::output::{Action, Cause};
use super::state::NodeState;

/// The pool's scrub, as the planner needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScrubPolicy {
    /// A scrub that has not completed this long after its Job was created has failed.
    pub timeout_seconds: i64,
}

/// A scrubbing node's Job, as the controller last read it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScrubView {
    /// The Job the node's marks name (sublet's `scrub-job` annotation).
    pub job: Option<String>,
    /// What the Job shows; None when no such Job exists (not created yet, or deleted to retry).
    pub state: Option<ScrubJob>,
}

/// A scrub Job's progress.
#[derive(Clone, Debug, PartialEq)]
pub struct ScrubJob {
    pub created: Timestamp,
    pub outcome: JobOutcome,
}

/// A Job's terminal conditions, or none yet.
#[derive(Clone, Debug, PartialEq)]
pub enum JobOutcome {
    Running,
    /// The `Complete` condition, with its time.
    Complete(Timestamp),
    /// The `Failed` condition, with its reason and message.
    Failed(String),
}

/// Where a scrubbing node stands, for the controller and the pool status.
#[derive(Clone, Debug, PartialEq)]
pub struct ScrubReport {
    pub node: String,
    pub job: String,
    pub stage: ScrubStage,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ScrubStage {
    /// No Job exists: the controller creates it.
    Create,
    /// The Job runs, since the given time.
    Running(Timestamp),
    /// The scrub failed (or timed out): the node stays out, and why.
    Failed(String),
    /// The Job completed: the node goes back in this plan; created and completed times.
    Done { created: Timestamp, completed: Timestamp },
}

/// The scrub Job's name for `node` leaving the lease with `uid` (or, for a lease sublet knew no UID of, any
/// other stable token of that holding): `scrub-`, the node's name cut to fit, `-` and 10 hex digits of a
/// hash of both, at most 63 characters (a Job's name becomes a label value on its pods).
pub fn job_name(node: &str, holding: &str) -> String {
    // FNV-1a, 64 bits: stable across versions and platforms, unlike std's hasher.
    let hash = node
        .bytes()
        .chain([0u8])
        .chain(holding.bytes())
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    let head: String = node.chars().take(63 - "scrub-".len() - 11).collect();
    let head = head.trim_end_matches(['-', '.']);
    format!("scrub-{head}-{:010x}", hash >> 24)
}

/// Takes node `n` from its holder: into Scrubbing when the pool scrubs, else straight back (as before).
pub(super) fn release(w: &mut Draft, n: usize, cause: Cause, why: &str) {
    let name = w.snap.nodes[n].name.clone();
    let lease = w.lease_key(n).map(str::to_string);
    w.nodes[n].acted = true;
    if w.policy.scrub.is_none() {
        w.nodes[n].state = NodeState::Internal;
        w.nodes[n].reason = format!("returned: {why}");
        w.push(Action::Return { node: name, lease }, cause, why);
        return;
    }
    let marks = &w.snap.nodes[n].marks;
    // The lease's UID names the holding; a node bound before sublet recorded UIDs has its since stamp.
    let holding = marks
        .lease_uid
        .clone()
        .or_else(|| marks.since.map(|s| s.to_string()))
        .unwrap_or_else(|| lease.clone().unwrap_or_default());
    let job = job_name(&name, &holding);
    w.nodes[n].state = NodeState::Scrubbing;
    w.nodes[n].lease = None;
    w.nodes[n].key = None;
    w.nodes[n].deadline = None;
    w.nodes[n].reason = format!("scrubbing (job {job}): {why}");
    w.push(Action::Scrub { node: name, lease, job }, cause, why);
}

/// Step 0: scrubbing nodes whose Job completed go back; failed and timed-out ones stay out, with why.
pub(super) fn scrubbing_nodes(w: &mut Draft) {
    for n in 0..w.nodes.len() {
        if !w.nodes[n].member || w.nodes[n].state != NodeState::Scrubbing {
            continue;
        }
        let name = w.snap.nodes[n].name.clone();
        let view = w.snap.nodes[n].scrub.clone().unwrap_or_default();
        let job = view.job.clone().unwrap_or_else(|| {
            let since = w.snap.nodes[n].marks.since.map(|s| s.to_string()).unwrap_or_default();
            job_name(&name, &since)
        });
        let Some(policy) = w.policy.scrub else {
            back(w, n, Cause::Scrubbed, "the pool no longer configures a scrub");
            continue;
        };
        let stage = match view.state {
            None => ScrubStage::Create,
            Some(ScrubJob {
                outcome: JobOutcome::Complete(completed),
                created,
            }) => ScrubStage::Done { created, completed },
            Some(ScrubJob {
                outcome: JobOutcome::Failed(why),
                ..
            }) => ScrubStage::Failed(why),
            Some(ScrubJob {
                outcome: JobOutcome::Running,
                created,
            }) => {
                let end = created
                    .checked_add(SignedDuration::from_secs(policy.timeout_seconds))
                    .unwrap_or(created);
                if w.now >= end {
                    ScrubStage::Failed(format!(
                        "not complete within timeoutSeconds ({}s)",
                        policy.timeout_seconds
                    ))
                } else {
                    ScrubStage::Running(created)
                }
            }
        };
        match &stage {
            ScrubStage::Create => w.nodes[n].reason = format!("scrubbing: job {job} to be created"),
            ScrubStage::Running(since) => w.nodes[n].reason = format!("scrubbing: job {job} running since {since}"),
            ScrubStage::Failed(why) if w.policy.deleting => {
                // Deleting the pool gives every node back (no taint outlives the pool), scrubbed or not.
                let why = format!("scrub job {job} failed ({why}), and the pool is being deleted");
                back(w, n, Cause::PoolDeleted, &why);
            }
            ScrubStage::Failed(why) => {
                w.nodes[n].reason =
                    format!("scrub failed: {why}; the node stays out until job {job} is deleted (which scrubs again)")
            }
            ScrubStage::Done { .. } => back(w, n, Cause::Scrubbed, &format!("scrub job {job} completed")),
        }
        w.scrubs.push(ScrubReport { node: name, job, stage });
    }
}

fn back(w: &mut Draft, n: usize, cause: Cause, why: &str) {
    let name = w.snap.nodes[n].name.clone();
    w.nodes[n].state = NodeState::Internal;
    w.nodes[n].acted = true;
    w.nodes[n].reason = format!("returned: {why}");
    w.push(
        Action::Return {
            node: name,
            lease: None,
        },
        cause,
        why,
    );
}

#[cfg(test)]
mod tests {
    use super::job_name;

    #[test]
    fn job_names_fit_and_differ_by_holding() {
        let long = "n".repeat(253);
        assert!(job_name(&long, "uid").len() <= 63);
        assert_eq!(job_name("gpu-1", "a"), job_name("gpu-1", "a"));
        assert_ne!(job_name("gpu-1", "a"), job_name("gpu-1", "b"));
        assert_ne!(job_name("gpu-1", "a"), job_name("gpu-2", "a"));
        assert!(job_name("gpu-1", "a").starts_with("scrub-gpu-1-"));
        let dotted = job_name(&format!("{}.x", "a".repeat(41)), "u");
        assert!(!dotted.contains("-.") && !dotted.contains(".-"), "{dotted}");
    }
}
