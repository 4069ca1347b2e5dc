//! The chaos run's own checks, from watches of its own (its own client over HTTP, never the controller's
//! state), each change stamped with the time it was received.
//!
//! ```text
//!   feed::remote (nodes, pods, GpuLeases, TenantPools) ─▶ on_change ─▶ Record
//!     nodes:   who holds each node (state leased/reclaiming + the lease's UID) ─▶ observed holds per lease;
//!              entering `reclaiming` twice for one hold ─▶ second notice; kill points (notice, return)
//!     pods:    a tenant pod's deadline annotation never changes; its deletion ─▶ kill point (eviction);
//!              an internal pod seen pending ─▶ bound: the reclaim latency
//!     leases:  each node's notice deadline never changes; the last status of each lease UID
//!     pools:   `endedLeases` records by UID, never rewritten
//!   finish() ─▶ billing (each lease's ledger against its own holds and against the observed holds),
//!               pool totals against the leases, latency percentiles
//! ```
//! DESIGN rules 1–3 are checked by the demo's checker ([`crate::demo::summary`]) on a feed of its own.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Value, json};
use sublet_sandbox::store::EventType;
use tokio::sync::mpsc;

use super::KillPoint;
use crate::api::keys::{DEADLINE_ANNOTATION, LEASE_LABEL, LEASE_UID_ANNOTATION, STATE_LABEL};
use crate::demo::feed::{Change, Feed, Item};
use crate::demo::{GPU_RESOURCE, INTERNAL_NAMESPACE};

/// How much earlier than the watch saw the node change a lease's recorded bound or returned time may be: the
/// records are the pass's time cut to whole seconds, and the node's write lands a pass's work later.
pub const HOLD_EARLY_SECONDS: f64 = 2.0;
/// How much later: only the watch's own delay in seeing a write (a record is never after the write).
pub const HOLD_LATE_SECONDS: f64 = 0.5;

/// How long after its deadline an unfinished tenant pod's eviction may begin: a pass's tick, a restart of
/// a killed controller and its caches' sync.
pub const EVICTION_LATE_SECONDS: f64 = 5.0;

/// Whether a recorded time agrees with the time the watch saw the change.
fn agrees(recorded: Timestamp, seen: Timestamp) -> bool {
    let d = (recorded.as_millisecond() - seen.as_millisecond()) as f64 / 1000.0;
    (-HOLD_EARLY_SECONDS..=HOLD_LATE_SECONDS).contains(&d)
}

/// A broken check, with the objects it is about.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Violation {
    pub check: String,
    pub detail: String,
    pub objects: Value,
}

/// A span a node was held by one lease, as the watch saw it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    pub node: String,
    pub gpus: u32,
    pub start: Timestamp,
    pub end: Option<Timestamp>,
    /// How many times the node entered `reclaiming` during the span.
    pub notices: u32,
    /// When, within the span, the watch saw the node not Ready (it serves, and bills, nothing then).
    pub not_ready: Vec<(Timestamp, Option<Timestamp>)>,
}

impl Span {
    /// GPU-seconds the tenant could use in the span, as the watch saw it: its GPUs, less the time not Ready.
    fn usable_gpu_seconds(&self, end: Timestamp) -> f64 {
        let secs = |a: Timestamp, b: Timestamp| (b.as_millisecond() - a.as_millisecond()).max(0) as f64 / 1000.0;
        let down: f64 = self
            .not_ready
            .iter()
            .map(|&(a, b)| secs(a, b.unwrap_or(end).min(end)))
            .sum();
        f64::from(self.gpus) * (secs(self.start, end) - down)
    }
}

/// GPU-seconds a lease's recorded hold bills: its GPUs from `boundAt`, then what each `usable` change says
/// from its `at` (never more than the hold's GPUs), until `returnedAt`, in whole seconds.
fn hold_gpu_seconds(h: &Value) -> i64 {
    let gpus = h["gpus"].as_i64().unwrap_or(0);
    let (Some(bound), Some(end)) = (time(&h["boundAt"]), time(&h["returnedAt"])) else {
        return 0;
    };
    let (mut at, mut rate, mut total) = (bound.as_second(), gpus, 0);
    for change in h["usable"].as_array().into_iter().flatten() {
        let Some(t) = time(&change["at"]) else { continue };
        let t = t.as_second().clamp(at, end.as_second());
        total += rate * (t - at);
        at = t;
        rate = change["gpus"].as_i64().unwrap_or(0).clamp(0, gpus);
    }
    total + rate * (end.as_second() - at).max(0)
}

#[derive(Clone, Debug, Default)]
struct LeaseRec {
    key: String,
    spans: Vec<Span>,
    last_status: Value,
    deleted: bool,
}

/// Counts per check: how many times each was checked and how many times it failed.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckCount {
    pub checked: u64,
    pub failed: u64,
}

#[derive(Default)]
pub struct Record {
    leases: HashMap<String, LeaseRec>,
    /// node → (lease UID, span index) of the open hold.
    holding: HashMap<String, (String, usize)>,
    node_gpus: HashMap<String, u32>,
    node_ready: HashMap<String, bool>,
    node_state: HashMap<String, Option<String>>,
    notice_deadlines: HashMap<(String, String), String>,
    pod_deadlines: HashMap<String, String>,
    pod_deleting: HashMap<String, bool>,
    internal_seen: HashMap<String, Instant>,
    pub latencies: Vec<f64>,
    /// Seconds from each evicted tenant pod's deadline to the start of its eviction.
    pub evictions_late: Vec<f64>,
    ended: BTreeMap<String, Value>,
    pub pool_status: Value,
    pub checks: BTreeMap<&'static str, CheckCount>,
    pub violations: Vec<Violation>,
    pub missed: u64,
    /// Lease UIDs by `namespace/name`, newest last.
    pub uids: HashMap<String, Vec<String>>,
}

impl Record {
    fn check(&mut self, name: &'static str, ok: bool, detail: impl FnOnce() -> (String, Value)) {
        let c = self.checks.entry(name).or_default();
        c.checked += 1;
        if !ok {
            c.failed += 1;
            let (detail, objects) = detail();
            tracing::error!(check = name, %detail, "chaos check failed");
            self.violations.push(Violation {
                check: name.to_string(),
                detail,
                objects,
            });
        }
    }

    fn lease(&mut self, uid: &str) -> &mut LeaseRec {
        self.leases.entry(uid.to_string()).or_default()
    }
}

/// The running watcher.
pub struct Watcher {
    pub record: Arc<Mutex<Record>>,
    task: tokio::task::JoinHandle<()>,
    close: Box<dyn FnOnce() + Send>,
}

impl Watcher {
    /// Reads `feed` until closed; sends the points a kill may follow to `points`.
    pub fn start(mut feed: Feed, points: mpsc::UnboundedSender<KillPoint>) -> Watcher {
        let record = Arc::new(Mutex::new(Record::default()));
        let shared = record.clone();
        let (close_tx, mut close_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut closing = false;
            loop {
                tokio::select! {
                    item = feed.rx.recv() => match item {
                        Some(Item::Change(c)) => {
                            let mut r = shared.lock().expect("chaos record");
                            on_change(&mut r, &c, Timestamp::now(), &points);
                        }
                        Some(Item::Missed(n)) => shared.lock().expect("chaos record").missed += n,
                        None => return,
                    },
                    _ = &mut close_rx, if !closing => {
                        closing = true;
                        feed.close();
                    }
                }
            }
        });
        Watcher {
            record,
            task,
            close: Box::new(move || {
                let _ = close_tx.send(());
            }),
        }
    }

    /// Delivers what the feed holds and stops.
    pub async fn stop(self) -> Arc<Mutex<Record>> {
        (self.close)();
        let _ = self.task.await;
        self.record
    }
}

fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj["metadata"]["annotations"][key].as_str()
}

fn label<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj["metadata"]["labels"][key].as_str()
}

fn on_change(r: &mut Record, c: &Change, now: Timestamp, points: &mpsc::UnboundedSender<KillPoint>) {
    let obj = &c.obj;
    let gone = matches!(c.kind, EventType::Deleted);
    match c.resource.as_str() {
        "nodes" => on_node(r, &c.name, obj, gone, now, points),
        "pods" => on_pod(r, c, obj, gone, now, points),
        "gpuleases" => on_lease(r, c, obj, gone),
        "tenantpools" if !gone => on_pool(r, obj),
        _ => {}
    }
}

/// The lease holding a node: its UID while the node is leased or under notice.
fn holder(obj: &Value) -> Option<String> {
    let state = label(obj, STATE_LABEL)?;
    if !matches!(state, "leased" | "reclaiming") {
        return None;
    }
    annotation(obj, LEASE_UID_ANNOTATION)
        .or(label(obj, LEASE_LABEL))
        .map(str::to_string)
}

fn on_node(
    r: &mut Record,
    name: &str,
    obj: &Value,
    gone: bool,
    now: Timestamp,
    points: &mpsc::UnboundedSender<KillPoint>,
) {
    let gpus = obj["status"]["allocatable"][GPU_RESOURCE]
        .as_str()
        .and_then(|g| g.parse().ok())
        .unwrap_or(0);
    if gpus > 0 {
        r.node_gpus.insert(name.to_string(), gpus);
    }
    let state = if gone {
        None
    } else {
        label(obj, STATE_LABEL).map(str::to_string)
    };
    let before = r.node_state.insert(name.to_string(), state.clone()).flatten();
    let now_holder = if gone { None } else { holder(obj) };
    let ready = !gone
        && obj["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
    let was_ready = r.node_ready.insert(name.to_string(), ready).unwrap_or(true);
    follow_holder(r, name, now_holder.as_ref(), ready, now);
    if ready != was_ready {
        follow_ready(r, name, ready, now);
    }
    if state != before {
        on_state_change(r, name, before.as_deref(), state.as_deref(), points);
    }
}

/// Closes the span of the hold the node had, if its holder changed, and opens one for its new holder.
fn follow_holder(r: &mut Record, name: &str, now_holder: Option<&String>, ready: bool, now: Timestamp) {
    let open = r.holding.get(name).cloned();
    if open.as_ref().map(|(u, _)| u) != now_holder {
        if let Some((uid, i)) = open {
            let span = &mut r.lease(&uid).spans[i];
            span.end = Some(now);
            if let Some(down) = span.not_ready.last_mut().filter(|d| d.1.is_none()) {
                down.1 = Some(now);
            }
            r.holding.remove(name);
        }
        if let Some(uid) = now_holder {
            let gpus = r.node_gpus.get(name).copied().unwrap_or(0);
            let lease = r.lease(uid);
            lease.spans.push(Span {
                node: name.to_string(),
                gpus,
                start: now,
                end: None,
                notices: 0,
                not_ready: if ready { Vec::new() } else { vec![(now, None)] },
            });
            let i = lease.spans.len() - 1;
            r.holding.insert(name.to_string(), (uid.clone(), i));
        }
    }
}

/// A held node went not Ready or Ready again: opens or closes a not-Ready stretch of its hold.
fn follow_ready(r: &mut Record, name: &str, ready: bool, now: Timestamp) {
    let Some((uid, i)) = r.holding.get(name).cloned() else {
        return;
    };
    let span = &mut r.lease(&uid).spans[i];
    let down_open = span.not_ready.last().is_some_and(|d| d.1.is_none());
    if ready && down_open {
        if let Some(down) = span.not_ready.last_mut() {
            down.1 = Some(now);
        }
    } else if !ready && !down_open {
        span.not_ready.push((now, None));
    }
}

/// A node's state label changed: tells the killer of a notice or a return, and checks one notice per hold.
fn on_state_change(
    r: &mut Record,
    name: &str,
    before: Option<&str>,
    state: Option<&str>,
    points: &mpsc::UnboundedSender<KillPoint>,
) {
    match (before, state) {
        (_, Some("reclaiming")) => {
            let _ = points.send(KillPoint::Notice);
            if let Some((uid, i)) = r.holding.get(name).cloned() {
                let span = &mut r.lease(&uid).spans[i];
                span.notices += 1;
                let (n, span) = (span.notices, span.clone());
                r.check("one notice per hold", n == 1, || {
                    (
                        format!("node {name} was put under notice {n} times while lease {uid} held it"),
                        json!({"node": name, "lease": uid, "hold": span}),
                    )
                });
            }
        }
        (Some("reclaiming" | "leased"), None | Some("lent")) => {
            let _ = points.send(KillPoint::Return);
        }
        _ => {}
    }
}

fn on_pod(
    r: &mut Record,
    c: &Change,
    obj: &Value,
    gone: bool,
    now: Timestamp,
    points: &mpsc::UnboundedSender<KillPoint>,
) {
    let uid = obj["metadata"]["uid"].as_str().unwrap_or_default().to_string();
    let who = format!("{}/{}", c.namespace, c.name);
    if c.namespace == INTERNAL_NAMESPACE {
        let bound = obj["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty());
        if gone {
            r.internal_seen.remove(&uid);
        } else if !bound {
            r.internal_seen.entry(uid).or_insert_with(Instant::now);
        } else if let Some(seen) = r.internal_seen.remove(&uid) {
            r.latencies.push(seen.elapsed().as_secs_f64());
        }
        return;
    }
    if let Some(deadline) = annotation(obj, DEADLINE_ANNOTATION) {
        // Each move is reported once: the next deadline must equal the last one seen.
        if let Some(last) = r.pod_deadlines.insert(uid.clone(), deadline.to_string()) {
            r.check("pod deadline never moves", last == deadline, || {
                (
                    format!("tenant pod {who}'s deadline moved from {last} to {deadline}"),
                    json!({"pod": who, "before": last, "now": deadline}),
                )
            });
        }
    }
    let deleting = gone || obj["metadata"]["deletionTimestamp"].is_string();
    let was = r.pod_deleting.insert(uid.clone(), deleting).unwrap_or(false);
    let finished = matches!(obj["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
    if deleting && !was {
        let _ = points.send(KillPoint::Eviction);
        let deadline = r.pod_deadlines.get(&uid).and_then(|d| d.parse::<Timestamp>().ok());
        if let (Some(d), false) = (deadline, finished) {
            let late = (now.as_millisecond() - d.as_millisecond()) as f64 / 1000.0;
            r.evictions_late.push(late);
            r.check(
                "eviction begins by deadline + 5 s",
                late <= EVICTION_LATE_SECONDS,
                || {
                    (
                        format!("tenant pod {who} was evicted {late:.1} s after its deadline {d}"),
                        json!({"pod": who, "deadline": d, "lateSeconds": late}),
                    )
                },
            );
        }
    }
    if gone {
        r.pod_deleting.remove(&uid);
        r.pod_deadlines.remove(&uid);
    }
}

fn on_lease(r: &mut Record, c: &Change, obj: &Value, gone: bool) {
    let Some(uid) = obj["metadata"]["uid"].as_str().map(str::to_string) else {
        return;
    };
    let key = format!("{}/{}", c.namespace, c.name);
    let uids = r.uids.entry(key.clone()).or_default();
    if uids.last() != Some(&uid) {
        uids.push(uid.clone());
    }
    let status = obj["status"].clone();
    for notice in status["notices"].as_array().cloned().unwrap_or_default() {
        let (Some(node), Some(deadline)) = (notice["node"].as_str(), notice["deadline"].as_str()) else {
            continue;
        };
        let k = (uid.clone(), node.to_string());
        if let Some(last) = r.notice_deadlines.insert(k, deadline.to_string()) {
            r.check("notice deadline never moves", last == deadline, || {
                (
                    format!("lease {key} ({uid}): the deadline of node {node} moved from {last} to {deadline}"),
                    json!({"lease": key, "uid": uid, "node": node, "before": last, "now": deadline}),
                )
            });
        }
    }
    let lease = r.lease(&uid);
    lease.key = key;
    if !status.is_null() {
        lease.last_status = status;
    }
    lease.deleted |= gone;
}

fn on_pool(r: &mut Record, obj: &Value) {
    let status = obj["status"].clone();
    for ended in status["endedLeases"].as_array().cloned().unwrap_or_default() {
        let Some(uid) = ended["uid"].as_str().map(str::to_string) else {
            continue;
        };
        let first = r.ended.entry(uid.clone()).or_insert_with(|| ended.clone()).clone();
        r.check("ended lease record never changes", first == ended, || {
            (
                format!("the pool's record of ended lease {uid} changed"),
                json!({"first": first, "now": ended}),
            )
        });
    }
    r.pool_status = status;
}

fn time(v: &Value) -> Option<Timestamp> {
    v.as_str().and_then(|s| s.parse().ok())
}

/// The end-of-run checks: billing and pool totals. `pool` is the pool's status once every lease has ended.
pub fn finish(r: &mut Record, pool: &Value) {
    let uids: Vec<String> = r.leases.keys().cloned().collect();
    let mut ended_seconds = 0i64;
    let mut ended_cost = 0.0;
    for uid in uids {
        let lease = r.leases[&uid].clone();
        let ended = r.ended.get(&uid).cloned();
        if let Some(e) = &ended {
            ended_seconds += e["gpuSeconds"].as_i64().unwrap_or(0);
            ended_cost += e["cost"].as_f64().unwrap_or(0.0);
        }
        check_ledger(r, &uid, &lease, ended.as_ref());
    }
    check_pool_totals(r, pool, ended_seconds, ended_cost);
}

/// A lease's ledger against its final record, its own holds, and the holds the watch saw. `ended` is its
/// record in the pool's endedLeases, if any.
fn check_ledger(r: &mut Record, uid: &str, lease: &LeaseRec, ended: Option<&Value>) {
    let final_status = ended.cloned().unwrap_or_else(|| lease.last_status.clone());
    // A lease that never held a node has no account to record.
    let held = !lease.spans.is_empty() || lease.last_status["holds"].as_array().is_some_and(|h| !h.is_empty());
    if (lease.deleted && held) || ended.is_some() {
        r.check("deleted lease has a final record", ended.is_some(), || {
            (
                format!(
                    "lease {} ({uid}) was deleted without a record in the pool's endedLeases",
                    lease.key
                ),
                json!({"lease": lease.key, "uid": uid, "lastStatus": lease.last_status}),
            )
        });
    }
    let billed = final_status["gpuSeconds"].as_i64().unwrap_or(0);
    // The lease's ledger against its own record of holds, to the second.
    let holds = lease.last_status["holds"].as_array().cloned().unwrap_or_default();
    let from_holds: i64 = holds.iter().map(hold_gpu_seconds).sum();
    let open = holds.iter().any(|h| h["returnedAt"].is_null());
    if !open && (ended.is_some() || lease.deleted) {
        r.check("ledger equals its holds", billed == from_holds, || {
            (
                format!(
                    "lease {} ({uid}) billed {billed} GPU-s; its holds add up to {from_holds} GPU-s",
                    lease.key
                ),
                json!({"lease": lease.key, "uid": uid, "final": final_status, "holds": holds}),
            )
        });
    }
    check_observed(r, uid, lease, billed, &holds, ended.is_some() || lease.deleted);
}

/// The lease's holds against the holds the watch saw, once it `ended` and every span it was seen holding
/// closed.
fn check_observed(r: &mut Record, uid: &str, lease: &LeaseRec, billed: i64, holds: &[Value], ended: bool) {
    let observed: f64 = lease
        .spans
        .iter()
        .filter_map(|s| s.end.map(|e| s.usable_gpu_seconds(e)))
        .sum();
    if !lease.spans.is_empty() && lease.spans.iter().all(|s| s.end.is_some()) && ended {
        // Each bound and return may be recorded a little off the watch's time; each time a node went not
        // Ready or Ready again is recorded when a pass first saw it, which may follow a restart.
        let slack: f64 = lease
            .spans
            .iter()
            .map(|s| {
                let turns = s.not_ready.iter().map(|d| 1 + u32::from(d.1.is_some())).sum::<u32>();
                f64::from(s.gpus) * (HOLD_EARLY_SECONDS + HOLD_LATE_SECONDS + f64::from(turns) * EVICTION_LATE_SECONDS)
            })
            .sum();
        let diff = billed as f64 - observed;
        r.check("billed equals observed holds", diff.abs() <= slack, || {
            (
                format!(
                    "lease {} ({uid}) billed {billed} GPU-s; its nodes were seen held for {observed:.1} GPU-s",
                    lease.key
                ),
                json!({"lease": lease.key, "uid": uid, "billed": billed, "observed": observed,
                       "observedHolds": lease.spans, "holds": holds}),
            )
        });
        for span in &lease.spans {
            let matching = holds.iter().find(|h| {
                h["node"] == span.node.as_str() && time(&h["boundAt"]).is_some_and(|b| agrees(b, span.start))
            });
            let ok = matching.is_some_and(|h| {
                let end = span.end.expect("closed span");
                time(&h["returnedAt"]).is_some_and(|e| agrees(e, end))
            });
            r.check("each hold recorded as seen", ok, || {
                (
                    format!(
                        "lease {} ({uid}) held node {} from {} to {:?} as watched; its record says otherwise",
                        lease.key, span.node, span.start, span.end
                    ),
                    json!({"lease": lease.key, "uid": uid, "observed": span, "holds": holds}),
                )
            });
        }
    }
}

/// The pool's totals: the sums of its leases' ledgers (every lease has ended by now).
fn check_pool_totals(r: &mut Record, pool: &Value, ended_seconds: i64, ended_cost: f64) {
    let totals = &pool["endedTotals"];
    let pool_seconds = totals["gpuSeconds"].as_i64().unwrap_or(0);
    let pool_leases = totals["leases"].as_i64().unwrap_or(0);
    let ended_count = r.ended.len() as i64;
    r.check("pool ended totals equal the ended leases", pool_seconds == ended_seconds && pool_leases == ended_count, || {
        (
            format!(
                "pool endedTotals: {pool_leases} leases, {pool_seconds} GPU-s; the ended leases seen: {ended_count}, {ended_seconds} GPU-s"
            ),
            json!({"endedTotals": totals}),
        )
    });
    let lent = pool["lentGpuHours"].as_f64().unwrap_or(0.0) * 3600.0;
    r.check(
        "pool lentGpuHours equals the leases' GPU-seconds",
        (lent - ended_seconds as f64).abs() < 0.5,
        || {
            (
                format!("pool lentGpuHours × 3600 = {lent:.2}; the leases' GPU-seconds add up to {ended_seconds}"),
                json!({"lentGpuHours": pool["lentGpuHours"], "endedTotals": totals}),
            )
        },
    );
    let revenue = pool["revenue"].as_f64().unwrap_or(0.0);
    r.check(
        "pool revenue equals the leases' cost",
        (revenue - ended_cost).abs() < 1e-6_f64.max(ended_cost * 1e-9),
        || {
            (
                format!("pool revenue {revenue}; the leases' cost adds up to {ended_cost}"),
                json!({"revenue": revenue, "endedTotals": totals}),
            )
        },
    );
}

/// The value below which a share `q` of `sorted` lies (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
        assert_eq!(percentile(&[3.0], 0.99), 3.0);
    }

    fn node(state: Option<&str>, uid: Option<&str>) -> Value {
        let mut n = json!({"metadata": {"labels": {}, "annotations": {}},
            "status": {"allocatable": {GPU_RESOURCE: "8"}}});
        if let Some(s) = state {
            n["metadata"]["labels"][STATE_LABEL] = json!(s);
        }
        if let Some(u) = uid {
            n["metadata"]["annotations"][LEASE_UID_ANNOTATION] = json!(u);
        }
        n
    }

    /// A hold seen twice under notice is a second notice; a hold's span runs from leased to returned.
    #[test]
    fn holds_and_notices_come_from_node_changes() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut r = Record::default();
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let at = |s: i64| t0.checked_add(jiff::SignedDuration::from_secs(s)).unwrap();
        on_node(&mut r, "n1", &node(Some("lent"), None), false, at(0), &tx);
        on_node(&mut r, "n1", &node(Some("leased"), Some("u1")), false, at(1), &tx);
        on_node(&mut r, "n1", &node(Some("reclaiming"), Some("u1")), false, at(5), &tx);
        on_node(&mut r, "n1", &node(Some("leased"), Some("u1")), false, at(6), &tx);
        on_node(&mut r, "n1", &node(Some("reclaiming"), Some("u1")), false, at(7), &tx);
        on_node(&mut r, "n1", &node(None, None), false, at(9), &tx);
        let spans = &r.leases["u1"].spans;
        assert_eq!(spans.len(), 1);
        assert_eq!((spans[0].start, spans[0].end, spans[0].gpus), (at(1), Some(at(9)), 8));
        assert_eq!(r.checks["one notice per hold"].failed, 1);
        assert_eq!(r.violations.len(), 1);
    }

    /// A ledger that lost part of its holds fails both billing checks; one that matches passes.
    #[test]
    fn billing_is_checked_against_the_holds_and_the_watch() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let at = |s: i64| t0.checked_add(jiff::SignedDuration::from_secs(s)).unwrap();
        for (billed, fails) in [(80, 0), (24, 2)] {
            let mut r = Record::default();
            let holds =
                json!([{"node": "n1", "gpus": 8, "boundAt": at(0).to_string(), "returnedAt": at(10).to_string()}]);
            r.leases.insert(
                "u1".into(),
                LeaseRec {
                    key: "t/l".into(),
                    spans: vec![Span {
                        node: "n1".into(),
                        gpus: 8,
                        start: at(0),
                        end: Some(at(10)),
                        notices: 1,
                        not_ready: Vec::new(),
                    }],
                    last_status: json!({"gpuSeconds": billed, "holds": holds}),
                    deleted: true,
                },
            );
            r.ended
                .insert("u1".into(), json!({"uid": "u1", "gpuSeconds": billed, "cost": 1.0}));
            let pool = json!({"endedTotals": {"leases": 1, "gpuSeconds": billed, "cost": 1.0},
                "lentGpuHours": billed as f64 / 3600.0, "revenue": 1.0});
            finish(&mut r, &pool);
            let failed: u64 = r.checks.values().map(|c| c.failed).sum();
            assert_eq!(failed, fails, "{:?}", r.violations);
        }
    }

    #[test]
    fn a_hold_bills_what_its_node_could_serve_and_the_watch_agrees() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let at = |s: i64| t0.checked_add(jiff::SignedDuration::from_secs(s)).unwrap();
        // Bound 20 s with 8 GPUs, not Ready from 5 s to 12 s, shrunk to 4 GPUs from 15 s.
        let hold = json!({"node": "n1", "gpus": 8, "boundAt": at(0).to_string(), "returnedAt": at(20).to_string(),
            "usable": [{"at": at(5).to_string(), "gpus": 0, "reason": "NotReady"},
                       {"at": at(12).to_string(), "gpus": 8, "reason": "Healthy"},
                       {"at": at(15).to_string(), "gpus": 4, "reason": "Shrunk"}]});
        assert_eq!(hold_gpu_seconds(&hold), 8 * 5 + 8 * 3 + 4 * 5);
        // A usable change never bills more than the hold's GPUs, and one before the binding counts from it.
        let odd = json!({"gpus": 8, "boundAt": at(0).to_string(), "returnedAt": at(10).to_string(),
            "usable": [{"at": at(-5).to_string(), "gpus": 16, "reason": "Healthy"}]});
        assert_eq!(hold_gpu_seconds(&odd), 80);
        let span = Span {
            node: "n1".into(),
            gpus: 8,
            start: at(0),
            end: Some(at(20)),
            notices: 0,
            not_ready: vec![(at(5), Some(at(12))), (at(18), None)],
        };
        assert_eq!(span.usable_gpu_seconds(at(20)), 8.0 * (20.0 - 7.0 - 2.0));
    }
}
