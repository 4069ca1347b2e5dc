//! Table tests: one behaviour of the planner each.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};

use super::*;

mod modes;

const MODEL: &str = "A100";

fn t0() -> Timestamp {
    // A Wednesday, 12:00 UTC.
    "2026-11-25T12:00:00Z".parse().unwrap()
}

fn at(secs: i64) -> Timestamp {
    t0().checked_add(SignedDuration::from_secs(secs)).unwrap()
}

struct Fx {
    policy: PoolPolicy,
    nodes: Vec<NodeView>,
    pods: Vec<(PodView, Option<String>)>,
    leases: Vec<LeaseView>,
    demand: Vec<(Option<String>, u32)>,
    signals: Signals,
    history: Option<DemandHistory>,
    now: Timestamp,
}

fn fx() -> Fx {
    let mut policy = PoolPolicy::with_defaults("pool");
    policy.cooldown_seconds = 0;
    Fx {
        policy,
        nodes: vec![],
        pods: vec![],
        leases: vec![],
        demand: vec![],
        signals: Signals::default(),
        history: None,
        now: t0(),
    }
}

fn labels(model: &str) -> BTreeMap<String, String> {
    [("nvidia.com/gpu.product".to_string(), model.to_string())].into()
}

impl Fx {
    /// An idle, ready node of `gpus` GPUs, idle for an hour.
    fn node(mut self, name: &str, gpus: u32) -> Self {
        self.nodes.push(NodeView {
            name: name.into(),
            labels: labels(MODEL),
            ready: true,
            gpus,
            idle_since: Some(at(-3600)),
            ..NodeView::default()
        });
        self
    }
    fn with_node(mut self, f: impl FnOnce(&mut NodeView)) -> Self {
        f(self.nodes.last_mut().unwrap());
        self
    }
    fn marked(self, state: NodeState, lease: Option<&str>) -> Self {
        self.with_node(|n| {
            n.marks = Marks {
                pool: Some("pool".into()),
                state,
                lease: lease.map(str::to_string),
                since: Some(at(-600)),
                ..Marks::default()
            }
        })
    }
    fn internal_pod(mut self, name: &str, node: Option<&str>, gpus: u32) -> Self {
        let phase = if node.is_some() {
            PodPhase::Running
        } else {
            PodPhase::Pending
        };
        let pod = PodView {
            namespace: "ml".into(),
            name: name.into(),
            gpus,
            phase,
            ..PodView::default()
        };
        self.pods.push((pod, node.map(str::to_string)));
        self
    }
    fn tenant_pod(mut self, ns: &str, name: &str, node: &str) -> Self {
        let pod = PodView {
            namespace: ns.into(),
            name: name.into(),
            gpus: 8,
            tenant: true,
            phase: PodPhase::Running,
            ..PodView::default()
        };
        self.pods.push((pod, Some(node.into())));
        self
    }
    fn lease(mut self, ns: &str, name: &str, gpus: u32, phase: LeasePhase, bound_at: Option<i64>) -> Self {
        self.leases.push(LeaseView {
            namespace: ns.into(),
            name: name.into(),
            uid: None,
            gpus,
            model: None,
            duration_seconds: None,
            max_price: None,
            phase,
            bound_at: bound_at.map(at),
            created: at(-7200),
            tenant_namespace: true,
            deleting: false,
        });
        self
    }
    fn with_lease(mut self, f: impl FnOnce(&mut LeaseView)) -> Self {
        f(self.leases.last_mut().unwrap());
        self
    }
    fn policy(mut self, f: impl FnOnce(&mut PoolPolicy)) -> Self {
        f(&mut self.policy);
        self
    }
    fn snapshot(&self) -> Snapshot {
        let mut b = SnapshotBuilder::new(Arc::new(self.policy.clone()), self.now);
        for n in &self.nodes {
            b.node(n.clone());
        }
        for (p, node) in &self.pods {
            b.pod(p.clone(), node.as_deref());
        }
        for l in &self.leases {
            b.lease(l.clone());
        }
        for (c, g) in &self.demand {
            b.demand(c.clone(), *g);
        }
        b.signals(self.signals.clone());
        if let Some(h) = &self.history {
            b.history(Arc::new(h.clone()));
        }
        b.build()
    }
    fn plan(&self) -> Plan {
        plan(&self.snapshot())
    }
}

fn lent(p: &Plan) -> Vec<&str> {
    p.steps
        .iter()
        .filter_map(|s| match &s.action {
            Action::Lend { node } => Some(node.as_str()),
            _ => None,
        })
        .collect()
}

fn kinds(p: &Plan) -> Vec<String> {
    p.steps
        .iter()
        .map(|s| match &s.action {
            Action::Lend { node } => format!("lend {node}"),
            Action::Unlend { node } => format!("unlend {node}"),
            Action::Bind { name, nodes, .. } => format!("bind {name} {}", nodes.join(",")),
            Action::Notice { node, .. } => format!("notice {node}"),
            Action::AnnotatePod { name, .. } => format!("annotate {name}"),
            Action::Evict { name, .. } => format!("evict {name}"),
            Action::Return { node, .. } => format!("return {node}"),
            Action::Scrub { node, .. } => format!("scrub {node}"),
        })
        .collect()
}

fn reason_of<'a>(p: &'a Plan, node: &str) -> &'a str {
    &p.nodes.iter().find(|n| n.name == node).unwrap().reason
}

#[test]
fn lends_an_idle_node() {
    let p = fx().node("n1", 8).plan();
    assert_eq!(lent(&p), ["n1"]);
    assert_eq!(p.totals.lendable_gpus, 8);
    assert_eq!(p.totals.harvestable_gpus, 8);
    assert!(!p.steps[0].reason.is_empty());
}

#[test]
fn each_lendability_rule_holds_a_node_back() {
    let cases: Vec<(Fx, &str)> = vec![
        (fx().node("n1", 8).with_node(|n| n.ready = false), "not Ready"),
        (fx().node("n1", 8).with_node(|n| n.unschedulable = true), "cordoned"),
        (
            fx().node("n1", 8).internal_pod("train", Some("n1"), 1),
            "runs an internal GPU pod",
        ),
        (
            fx().node("n1", 8).with_node(|n| n.idle_since = Some(at(-60))),
            "idle for 60s",
        ),
        (
            fx().node("n1", 8)
                .with_node(|n| n.marks.returned_at = Some(at(-10)))
                .policy(|p| p.cooldown_seconds = 300),
            "cooling down",
        ),
        (
            fx().node("n1", 8)
                .policy(|p| p.utilization_configured = true)
                .with_node(|n| {
                    n.utilization = Some(Utilization {
                        mean_percent: 80.0,
                        measured_at: t0(),
                    })
                }),
            "utilization 80% is above 5%",
        ),
        (
            fx().node("n1", 8).policy(|p| p.utilization_configured = true),
            "no fresh utilization reading",
        ),
        (
            fx().node("n1", 8)
                .policy(|p| p.windows = Windows::parse("UTC", &[(0, "00:00", "01:00")]).unwrap()),
            "outside the lending windows",
        ),
        (
            Fx {
                signals: Signals {
                    fresh: false,
                    reason: Some("Prometheus unreachable".into()),
                },
                ..fx().node("n1", 8)
            },
            "Prometheus unreachable",
        ),
        (
            fx().node("n1", 8).policy(|p| p.reserve.gpus = 1),
            "kept for internal work",
        ),
        (
            fx().node("n1", 8).node("n2", 8).policy(|p| p.reserve.percent = 60),
            "kept for internal work",
        ),
        (fx().node("n1", 8).policy(|p| p.max_lent_percent = 50), "maxLentPercent"),
        (
            fx().node("n1", 8).internal_pod("queued", None, 8),
            "kept for internal work",
        ),
    ];
    for (i, (f, needle)) in cases.into_iter().enumerate() {
        let p = f.plan();
        assert!(lent(&p).is_empty(), "case {i}: nothing is lent, got {:?}", kinds(&p));
        let reason = reason_of(&p, "n1");
        assert!(
            reason.contains(needle),
            "case {i}: reason {reason:?} should contain {needle:?}"
        );
    }
}

#[test]
fn internal_pods_given_as_totals_count_as_pods_listed_one_by_one() {
    let listed = fx()
        .node("n1", 8)
        .internal_pod("a", Some("n1"), 2)
        .internal_pod("b", Some("n1"), 3)
        .node("n2", 8)
        .plan();
    let totalled = fx()
        .node("n1", 8)
        .with_node(|n| n.internal = InternalLoad { pods: 2, gpus: 5 })
        .node("n2", 8)
        .plan();
    assert_eq!(lent(&listed), ["n2"]);
    assert_eq!(lent(&totalled), ["n2"]);
    assert_eq!(reason_of(&totalled, "n1"), reason_of(&listed, "n1"));
    assert!(reason_of(&totalled, "n1").contains("2 internal GPU pods"));
    assert_eq!(totalled.totals, listed.totals);
    assert_eq!(totalled.totals.internal_used_gpus, 5);
}

#[test]
fn a_bound_lease_whose_status_lost_its_binding_time_takes_it_from_its_nodes() {
    let p = fx()
        .node("n1", 8)
        .marked(NodeState::Leased, Some("acme.job"))
        .lease("acme", "job", 8, LeasePhase::Bound, None)
        .plan();
    assert_eq!(p.leases[0].phase, LeasePhase::Bound);
    assert_eq!(p.leases[0].bound_at, Some(at(-600)), "the node's since mark");
    // A node only lent, not bound to it, tells nothing.
    let p = fx()
        .node("n1", 8)
        .marked(NodeState::Lent, None)
        .lease("acme", "job", 8, LeasePhase::Pending, None)
        .plan();
    assert!(
        p.leases[0].bound_at.is_none_or(|b| b == t0()),
        "bound now or not at all"
    );
}

#[test]
fn utilization_under_threshold_lends() {
    let p = fx()
        .node("n1", 8)
        .policy(|p| p.utilization_configured = true)
        .with_node(|n| {
            n.idle_since = None;
            n.utilization = Some(Utilization {
                mean_percent: 2.0,
                measured_at: t0(),
            })
        })
        .plan();
    assert_eq!(lent(&p), ["n1"]);
}

#[test]
fn reserve_keeps_whole_nodes_and_lends_the_rest() {
    let p = fx()
        .node("n1", 8)
        .node("n2", 8)
        .node("n3", 8)
        .policy(|p| p.reserve.gpus = 8)
        .plan();
    assert_eq!(lent(&p).len(), 2);
    assert_eq!(p.totals.reserve_gpus, 8);
}

#[test]
fn foreign_and_unselected_nodes_are_not_members() {
    let p = fx()
        .node("other-pool", 8)
        .with_node(|n| {
            n.marks = Marks {
                pool: Some("other".into()),
                state: NodeState::Lent,
                ..Marks::default()
            }
        })
        .node("t4", 8)
        .with_node(|n| n.labels = labels("T4"))
        .node("mine", 8)
        .policy(|p| p.gpu_models = vec![MODEL.into()])
        .plan();
    assert_eq!(lent(&p), ["mine"]);
    assert_eq!(p.nodes.len(), 1);
}

/// A history of `demand(minute)` for `MODEL` over the `minutes` minutes before `t0()` (minute 0 is the
/// oldest, `minutes - 1` the last before now).
fn history_of(minutes: i64, demand: impl Fn(i64) -> u32) -> DemandHistory {
    let mut h = DemandHistory::new(14);
    for m in 0..minutes {
        h.record(MODEL, at((m - minutes) * 60), demand(m));
    }
    h
}

fn learned(quantile: Option<f64>, burst: f64, ahead: bool) -> LearnedPolicy {
    LearnedPolicy {
        quantile,
        burst_quantile: burst,
        reclaim_ahead: ahead,
        history_days: 14,
    }
}

#[test]
fn learned_reserve_keeps_gpus_ahead_of_a_weekly_peak() {
    // Quiet for the last two hours; a week ago, the hour starting now saw 16 GPUs of internal demand.
    let mut history = history_of(120, |_| 0);
    let week = 7 * 86400;
    history.record(MODEL, at(-week + 60), 16);
    let f = fx().node("n1", 8).node("n2", 8).node("n3", 8).policy(|p| {
        p.reserve.learned = Some(learned(Some(0.95), 0.99, true));
    });
    let p = Fx {
        history: Some(history),
        ..f
    }
    .plan();
    assert_eq!(
        lent(&p).len(),
        1,
        "two nodes stay free for the expected peak: {:?}",
        kinds(&p)
    );
    assert_eq!(p.totals.reserve_gpus, 16);
    assert_eq!(p.reserve_learned, Some(Ok(())));
    assert!(p.classes[0].reason.contains("peak 16"), "{:?}", p.classes);
}

#[test]
fn without_the_history_it_needs_a_learned_reserve_holds_every_free_gpu_and_reclaims_nothing() {
    let base = || {
        fx().node("free", 8)
            .node("lent", 8)
            .marked(NodeState::Lent, None)
            .node("leased", 8)
            .marked(NodeState::Leased, Some("acme.job"))
            .tenant_pod("acme", "w", "leased")
            .lease("acme", "job", 8, LeasePhase::Bound, Some(-600))
            .policy(|p| p.reserve.learned = Some(learned(None, 0.99, true)))
    };
    for (history, error, says) in [
        (None, None, "no demand history yet"),
        (Some(history_of(30, |_| 0)), None, "holds 30 of the 60 recent minutes"),
        (
            Some(history_of(120, |_| 0)),
            Some("Prometheus at http://p cannot answer: unreachable"),
            "cannot answer",
        ),
    ] {
        let f = Fx { history, ..base() };
        let mut s = f.snapshot();
        s.history_error = error.map(str::to_string);
        let p = plan(&s);
        assert!(p.steps.is_empty(), "nothing lent, nothing taken back: {:?}", kinds(&p));
        let Some(Err(why)) = &p.reserve_learned else {
            panic!("{:?}", p.reserve_learned)
        };
        assert!(why.contains(says), "{why}");
        assert_eq!(p.totals.reserve_gpus, 8, "the free node is held");
        assert!(
            reason_of(&p, "free").contains("kept for internal work"),
            "{}",
            reason_of(&p, "free")
        );
    }
}

#[test]
fn burst_reserve_keeps_the_rise_seen_within_one_notice() {
    // Two hours at this time of day, climbing 4 GPUs a minute in runs of three minutes: within a 120 s
    // notice demand rose by up to 8 GPUs.
    let history = history_of(120, |m| 4 * (m % 4) as u32);
    let f = fx().node("n1", 8).node("n2", 8).node("n3", 8).policy(|p| {
        p.reserve.learned = Some(learned(None, 0.99, false));
    });
    let p = Fx {
        history: Some(history),
        ..f
    }
    .plan();
    assert_eq!(p.totals.reserve_gpus, 8, "{:?}", p.classes);
    assert_eq!(lent(&p).len(), 2, "{:?}", kinds(&p));
    assert!(p.classes[0].reason.contains("burst 8"), "{:?}", p.classes);
}

#[test]
fn reclaim_ahead_gives_notice_while_demand_climbs() {
    // Every ten minutes demand climbs 0 → 8 → 16 → 24 and drops back. Most two-minute windows see no rise
    // (the burst reserve at the median is 0), but after a climb has begun demand rose 8 more at the
    // median. Now it is at 8, up from 0 two minutes ago; nothing is free and nothing is coming back.
    let pattern = [0, 0, 0, 0, 0, 0, 8, 16, 24, 0];
    let history = history_of(180, |m| pattern[((m + 6) % 10) as usize]);
    let f = fx()
        .node("busy", 8)
        .internal_pod("run", Some("busy"), 8)
        .node("leased", 8)
        .marked(NodeState::Leased, Some("acme.job"))
        .tenant_pod("acme", "w", "leased")
        .lease("acme", "job", 8, LeasePhase::Bound, Some(-3600))
        .policy(|p| p.reserve.learned = Some(learned(None, 0.5, true)));
    let f = Fx {
        history: Some(history),
        ..f
    };
    let mut s = f.snapshot();
    let p = plan(&s);
    assert!(p.classes[0].reason.contains("burst 0"), "{:?}", p.classes);
    let ahead: Vec<&Step> = p.steps.iter().filter(|st| st.cause == Cause::ReclaimAhead).collect();
    assert!(
        ahead
            .iter()
            .any(|st| matches!(&st.action, Action::Notice { node, .. } if node == "leased")),
        "{:?}",
        p.steps
    );
    assert!(ahead[0].reason.starts_with("reclaim ahead"), "{}", ahead[0].reason);
    ideal::apply(&mut s, &p);
    let again = plan(&s);
    assert!(
        again.steps.iter().all(|st| st.cause != Cause::ReclaimAhead),
        "{:?}",
        kinds(&again)
    );

    // Without reclaim ahead, the same snapshot gives no notice: nothing is pending.
    let mut quiet = f.snapshot();
    Arc::make_mut(&mut quiet.policy).reserve.learned = Some(learned(None, 0.5, false));
    let p = plan(&quiet);
    assert!(
        p.steps.iter().all(|st| !matches!(st.action, Action::Notice { .. })),
        "{:?}",
        kinds(&p)
    );
}

#[test]
fn pending_lease_binds_to_fewest_lent_nodes_of_its_model() {
    let p = fx()
        .node("n4", 4)
        .marked(NodeState::Lent, None)
        .node("n8a", 8)
        .marked(NodeState::Lent, None)
        .node("n8b", 8)
        .marked(NodeState::Lent, None)
        .lease("acme", "job", 8, LeasePhase::Pending, None)
        .lease("beta", "small", 4, LeasePhase::Pending, None)
        .with_lease(|l| l.created = at(-10))
        .plan();
    assert_eq!(kinds(&p), ["bind job n8a", "bind small n4"]);
    let job = p.leases.iter().find(|l| l.name == "job").unwrap();
    assert_eq!(job.phase, LeasePhase::Bound);
    assert_eq!(job.bound_at, Some(t0()));
}

#[test]
fn lease_of_other_model_or_too_large_waits() {
    let p = fx()
        .node("n1", 8)
        .marked(NodeState::Lent, None)
        .lease("acme", "h100", 8, LeasePhase::Pending, None)
        .with_lease(|l| l.model = Some("H100".into()))
        .lease("acme", "big", 16, LeasePhase::Pending, None)
        .plan();
    assert!(kinds(&p).is_empty());
    for l in &p.leases {
        assert_eq!(l.phase, LeasePhase::Pending);
        assert!(l.unschedulable, "more than the pool has in all");
        assert!(l.reason.contains("and the pool has"), "{}", l.reason);
    }
    // Within what the pool has, but more than is lent and free now: it waits.
    let p = fx()
        .node("n1", 8)
        .marked(NodeState::Lent, None)
        .node("busy", 8)
        .internal_pod("train", Some("busy"), 8)
        .lease("acme", "big", 16, LeasePhase::Pending, None)
        .plan();
    assert!(!p.leases[0].unschedulable);
    assert!(
        p.leases[0].reason.contains("waiting for 16 GPUs; 8 lent and free now"),
        "{}",
        p.leases[0].reason
    );
}

#[test]
fn price_cap_under_the_price_or_floor_keeps_a_lease_pending() {
    let f = || {
        fx().node("n1", 8)
            .marked(NodeState::Lent, None)
            .lease("acme", "cheap", 8, LeasePhase::Pending, None)
            .with_lease(|l| l.max_price = Some(1.0))
    };
    let p = f().policy(|p| p.prices.default = 2.0).plan();
    assert!(kinds(&p).is_empty());
    assert!(p.leases[0].reason.contains("price"), "{}", p.leases[0].reason);
    let p = f().policy(|p| p.prices.floor = 1.5).plan();
    assert!(kinds(&p).is_empty());
    let p = f().policy(|p| p.prices.default = 0.9).plan();
    assert_eq!(kinds(&p), ["bind cheap n1"]);
    assert_eq!(p.leases[0].price_per_gpu_hour, 0.9);
}

#[test]
fn lease_from_a_non_tenant_namespace_waits() {
    let p = fx()
        .node("n1", 8)
        .marked(NodeState::Lent, None)
        .lease("kube-system", "x", 8, LeasePhase::Pending, None)
        .with_lease(|l| l.tenant_namespace = false)
        .plan();
    assert!(kinds(&p).is_empty());
    assert!(p.leases[0].reason.contains("not a tenant namespace"));
}

#[test]
fn internal_demand_takes_idle_lent_nodes_back_at_once() {
    let p = fx()
        .node("lent", 8)
        .marked(NodeState::Lent, None)
        .node("leased", 8)
        .marked(NodeState::Leased, Some("acme.job"))
        .lease("acme", "job", 8, LeasePhase::Bound, Some(-600))
        .internal_pod("queued", None, 8)
        .plan();
    assert_eq!(kinds(&p), ["unlend lent"]);
}

#[test]
fn internal_demand_gives_notice_on_leased_nodes() {
    let p = fx()
        .node("leased", 8)
        .marked(NodeState::Leased, Some("acme.job"))
        .lease("acme", "job", 8, LeasePhase::Bound, Some(-600))
        .tenant_pod("acme", "worker", "leased")
        .internal_pod("queued", None, 8)
        .plan();
    assert_eq!(kinds(&p), ["notice leased", "annotate worker"]);
    let Action::Notice { deadline, lease, .. } = &p.steps[0].action else {
        unreachable!()
    };
    assert_eq!(*deadline, at(120));
    assert_eq!(lease.as_deref(), Some("acme.job"));
    assert_eq!(p.leases[0].phase, LeasePhase::Reclaiming);
    assert_eq!(p.leases[0].deadline, Some(at(120)));
    let why = &p.steps[0].reason;
    assert!(why.contains("taken back for internal work"), "{why}");
    assert!(why.contains("8 GPUs pending that can run on any GPU model"), "{why}");
}

#[test]
fn a_notice_for_the_reserve_says_the_reserve_is_short() {
    let p = fx()
        .node("leased", 8)
        .marked(NodeState::Leased, Some("acme.job"))
        .lease("acme", "job", 8, LeasePhase::Bound, Some(-600))
        .tenant_pod("acme", "worker", "leased")
        .policy(|p| p.reserve.gpus = 8)
        .plan();
    assert_eq!(kinds(&p), ["notice leased", "annotate worker"]);
    let why = &p.steps[0].reason;
    assert!(
        why.contains("is short by 8 GPUs (nothing pending; reserve 8, 0 free"),
        "{why}"
    );
}

#[test]
fn an_invalid_spec_stops_new_lending_only() {
    let invalid = |p: &mut PoolPolicy| p.invalid = Some("invalid pool spec: unknown time zone".into());
    // Idle nodes are not lent, lent ones not bound; a lent node stays lent.
    let p = fx()
        .policy(invalid)
        .node("idle", 8)
        .node("lent", 8)
        .marked(NodeState::Lent, None)
        .lease("acme", "new", 8, LeasePhase::Pending, None)
        .plan();
    assert!(kinds(&p).is_empty(), "{:?}", kinds(&p));
    assert!(p.lending_blocked.as_deref().unwrap().contains("unknown time zone"));
    assert!(
        p.leases[0].reason.contains("nothing new is bound"),
        "{}",
        p.leases[0].reason
    );
    // Internal demand still takes nodes back through notice, a passed deadline still evicts, and an empty
    // reclaiming node still goes back.
    let p = fx()
        .policy(invalid)
        .node("leased", 8)
        .marked(NodeState::Leased, Some("acme.job"))
        .lease("acme", "job", 8, LeasePhase::Bound, Some(-600))
        .tenant_pod("acme", "worker", "leased")
        .internal_pod("queued", None, 24)
        .node("due", 8)
        .marked(NodeState::Reclaiming, Some("acme.old"))
        .with_node(|n| n.marks.deadline = Some(at(-1)))
        .tenant_pod("acme", "stays", "due")
        .node("empty", 8)
        .marked(NodeState::Reclaiming, Some("acme.old"))
        .with_node(|n| n.marks.deadline = Some(at(30)))
        .plan();
    assert_eq!(
        kinds(&p),
        ["evict stays", "return empty", "notice leased", "annotate worker"]
    );
}

#[test]
fn a_lease_larger_than_the_pool_says_so() {
    let p = fx()
        .node("n1", 8)
        .marked(NodeState::Lent, None)
        .node("n2", 8)
        .lease("acme", "huge", 64, LeasePhase::Pending, None)
        .lease("acme", "fits", 16, LeasePhase::Pending, None)
        .plan();
    let huge = p.leases.iter().find(|l| l.name == "huge").unwrap();
    assert!(huge.unschedulable);
    assert!(
        huge.reason.contains("asks for 64 GPUs and the pool has 16 in all"),
        "{}",
        huge.reason
    );
    let fits = p.leases.iter().find(|l| l.name == "fits").unwrap();
    assert!(
        !fits.unschedulable,
        "16 GPUs fit once both nodes are lent: {}",
        fits.reason
    );
    let p = fx()
        .node("n1", 8)
        .lease("acme", "t4", 8, LeasePhase::Pending, None)
        .with_lease(|l| l.model = Some("T4".into()))
        .plan();
    assert!(p.leases[0].unschedulable);
    assert!(
        p.leases[0].reason.contains("8 GPUs of model T4 and the pool has 0"),
        "{}",
        p.leases[0].reason
    );
}

#[test]
fn a_member_no_longer_selected_leaves_once_back_and_a_lease_keeps_its_node() {
    // The pool selects `pool=a`; none of these nodes carries it any more.
    let p = fx()
        .policy(|p| p.node_selector = Selector::from_labels([("pool", "a")]))
        .node("lent", 8)
        .marked(NodeState::Lent, None)
        .node("leased", 8)
        .marked(NodeState::Leased, Some("acme.job"))
        .tenant_pod("acme", "worker", "leased")
        .lease("acme", "job", 8, LeasePhase::Bound, Some(-600))
        .node("internal", 8)
        .lease("acme", "waits", 8, LeasePhase::Pending, None)
        .plan();
    assert_eq!(
        kinds(&p),
        ["unlend lent"],
        "the lent node goes back at once, and nothing is bound to it"
    );
    assert!(reason_of(&p, "lent").contains("no longer selected"));
    assert!(
        reason_of(&p, "leased").contains("once its lease gives it back"),
        "{}",
        reason_of(&p, "leased")
    );
    let job = p.leases.iter().find(|l| l.name == "job").unwrap();
    assert_eq!(job.phase, LeasePhase::Bound, "a lease keeps its node to its end");
    assert!(
        p.nodes.iter().all(|n| n.name != "internal"),
        "an unselected internal node is no member"
    );
}

#[test]
fn notices_respect_the_concurrency_cap_and_count_nodes_in_notice() {
    let mut f = fx().policy(|p| p.reclaim_cap(2));
    for i in 0..4 {
        f = f
            .node(&format!("n{i}"), 8)
            .marked(NodeState::Leased, Some("acme.job"))
            .tenant_pod("acme", &format!("w{i}"), &format!("n{i}"));
    }
    f = f
        .lease("acme", "job", 32, LeasePhase::Bound, Some(-600))
        .internal_pod("queued", None, 32);
    let notices = |p: &Plan| {
        p.steps
            .iter()
            .filter(|s| matches!(s.action, Action::Notice { .. }))
            .count()
    };
    assert_eq!(notices(&f.plan()), 2);
    // One node already under notice leaves room for one more.
    f.nodes[0].marks.state = NodeState::Reclaiming;
    f.nodes[0].marks.deadline = Some(at(60));
    f.pods[0].0.deadline_annotation = Some(at(60));
    let p = f.plan();
    assert_eq!(
        p.steps
            .iter()
            .filter(|s| matches!(s.action, Action::Notice { .. }))
            .count(),
        1
    );
}

impl PoolPolicy {
    fn reclaim_cap(&mut self, n: u32) {
        self.max_concurrent_reclaims = Some(n);
    }
}

#[test]
fn idle_leased_nodes_go_back_without_notice_and_outside_the_cap() {
    let p = fx()
        .policy(|p| p.reclaim_cap(1))
        .node("busy", 8)
        .marked(NodeState::Leased, Some("acme.job"))
        .tenant_pod("acme", "w", "busy")
        .node("idle1", 8)
        .marked(NodeState::Leased, Some("acme.job"))
        .node("idle2", 8)
        .marked(NodeState::Leased, Some("acme.job"))
        .lease("acme", "job", 24, LeasePhase::Bound, Some(-600))
        .internal_pod("queued", None, 24)
        .plan();
    let mut k = kinds(&p);
    k.sort();
    assert_eq!(k, ["annotate w", "notice busy", "return idle1", "return idle2"]);
}

#[test]
fn nodes_under_notice_count_towards_demand() {
    let p = fx()
        .node("n1", 8)
        .marked(NodeState::Reclaiming, Some("acme.job"))
        .with_node(|n| n.marks.deadline = Some(at(60)))
        .tenant_pod("acme", "w", "n1")
        .with_pod_deadline(at(60))
        .node("n2", 8)
        .marked(NodeState::Leased, Some("acme.job"))
        .lease("acme", "job", 16, LeasePhase::Reclaiming, Some(-600))
        .internal_pod("queued", None, 8)
        .plan();
    assert!(
        kinds(&p).is_empty(),
        "the node under notice will cover the demand: {:?}",
        kinds(&p)
    );
}

impl Fx {
    fn with_pod_deadline(mut self, d: Timestamp) -> Self {
        self.pods.last_mut().unwrap().0.deadline_annotation = Some(d);
        self
    }
}

#[test]
fn eviction_waits_for_the_deadline_then_evicts_tenant_pods_only() {
    let f = |now: i64| {
        let mut f = fx()
            .node("n1", 8)
            .marked(NodeState::Reclaiming, Some("acme.job"))
            .with_node(|n| n.marks.deadline = Some(at(120)))
            .tenant_pod("acme", "w", "n1")
            .with_pod_deadline(at(120))
            .internal_pod("sneaky", Some("n1"), 1)
            .lease("acme", "job", 8, LeasePhase::Reclaiming, Some(-600))
            .internal_pod("queued", None, 8);
        f.now = at(now);
        f
    };
    assert!(kinds(&f(119).plan()).is_empty());
    assert_eq!(kinds(&f(120).plan()), ["evict w"]);
}

#[test]
fn tenant_pods_missing_the_deadline_are_annotated() {
    let p = fx()
        .node("n1", 8)
        .marked(NodeState::Reclaiming, Some("acme.job"))
        .with_node(|n| n.marks.deadline = Some(at(120)))
        .tenant_pod("acme", "w", "n1")
        .lease("acme", "job", 8, LeasePhase::Reclaiming, Some(-600))
        .plan();
    assert_eq!(kinds(&p), ["annotate w"]);
}

#[test]
fn reclaiming_node_without_tenant_pods_returns() {
    let p = fx()
        .node("n1", 8)
        .marked(NodeState::Reclaiming, Some("acme.job"))
        .with_node(|n| n.marks.deadline = Some(at(120)))
        .lease("acme", "job", 8, LeasePhase::Reclaiming, Some(-600))
        .internal_pod("queued", None, 8)
        .plan();
    assert_eq!(kinds(&p), ["return n1"]);
    assert_eq!(p.leases[0].phase, LeasePhase::Released);
}

#[test]
fn a_lease_that_runs_out_gets_notice_ending_at_its_end() {
    let f = |now: i64| {
        let mut f = fx()
            .node("n1", 8)
            .marked(NodeState::Leased, Some("acme.job"))
            .tenant_pod("acme", "w", "n1")
            .lease("acme", "job", 8, LeasePhase::Bound, Some(-3600))
            .with_lease(|l| l.duration_seconds = Some(3600 + 600));
        f.now = at(now);
        f
    };
    // Ends at 600 s from t0; the 120 s notice is due at 480 s.
    assert!(kinds(&f(479).plan()).is_empty());
    let p = f(480).plan();
    let Action::Notice { deadline, .. } = &p.steps[0].action else {
        panic!("{:?}", kinds(&p))
    };
    assert_eq!(*deadline, at(600));
    assert!(p.steps[0].reason.contains("ends at"));
}

#[test]
fn expired_lease_reports_expired_once_its_nodes_are_back() {
    let p = fx()
        .lease("acme", "job", 8, LeasePhase::Reclaiming, Some(-3600))
        .with_lease(|l| l.duration_seconds = Some(600))
        .plan();
    assert_eq!(p.leases[0].phase, LeasePhase::Expired);
}

#[test]
fn deleting_a_lease_or_losing_it_gives_notice() {
    let p = fx()
        .node("n1", 8)
        .marked(NodeState::Leased, Some("acme.job"))
        .tenant_pod("acme", "w", "n1")
        .lease("acme", "job", 8, LeasePhase::Bound, Some(-600))
        .with_lease(|l| l.deleting = true)
        .node("n2", 8)
        .marked(NodeState::Leased, Some("acme.gone"))
        .tenant_pod("acme", "w2", "n2")
        .plan();
    assert_eq!(kinds(&p), ["notice n1", "annotate w", "notice n2", "annotate w2"]);
}

#[test]
fn a_lease_created_again_under_the_same_name_is_another_lease() {
    // n1 is under notice for the earlier acme/job (UID u-old); the lease now named acme/job is u-new.
    let p = fx()
        .node("n1", 8)
        .marked(NodeState::Leased, Some("acme.job"))
        .with_node(|n| n.marks.lease_uid = Some("u-old".into()))
        .tenant_pod("acme", "w", "n1")
        .lease("acme", "job", 8, LeasePhase::Pending, None)
        .with_lease(|l| l.uid = Some("u-new".into()))
        .node("n2", 8)
        .marked(NodeState::Lent, None)
        .plan();
    assert_eq!(
        kinds(&p),
        ["notice n1", "annotate w"],
        "the earlier lease's node is reclaimed"
    );
    let job = &p.leases[0];
    assert_eq!(
        job.phase,
        LeasePhase::Pending,
        "never born holding the earlier lease's node"
    );
    assert_eq!(job.bound_at, None);
    assert!(job.nodes.is_empty());
    assert!(
        job.reason
            .contains("an earlier lease named acme.job still holds node n1"),
        "{}",
        job.reason
    );
    // The same UID on the node and the lease: its own node.
    let p = fx()
        .node("n1", 8)
        .marked(NodeState::Leased, Some("acme.job"))
        .with_node(|n| n.marks.lease_uid = Some("u-1".into()))
        .lease("acme", "job", 8, LeasePhase::Bound, Some(-600))
        .with_lease(|l| l.uid = Some("u-1".into()))
        .plan();
    assert_eq!(p.leases[0].phase, LeasePhase::Bound);
    assert_eq!(p.leases[0].nodes, ["n1"]);
}

#[test]
fn deleting_the_pool_returns_everything_through_notice() {
    let p = fx()
        .node("idle", 8)
        .node("lent", 8)
        .marked(NodeState::Lent, None)
        .node("leased", 8)
        .marked(NodeState::Leased, Some("acme.job"))
        .tenant_pod("acme", "w", "leased")
        .lease("acme", "job", 8, LeasePhase::Bound, Some(-600))
        .lease("acme", "waiting", 8, LeasePhase::Pending, None)
        .policy(|p| p.deleting = true)
        .plan();
    assert_eq!(kinds(&p), ["unlend lent", "notice leased", "annotate w"]);
    assert!(p.lending_blocked.unwrap().contains("deleted"));
}

#[test]
fn stale_signals_lend_nothing_and_reclaim_nothing_on_their_own() {
    let f = Fx {
        signals: Signals {
            fresh: false,
            reason: Some("metrics are 10m old".into()),
        },
        ..fx()
    }
    .node("idle", 8)
    .node("lent", 8)
    .marked(NodeState::Lent, None)
    .node("leased", 8)
    .marked(NodeState::Leased, Some("acme.job"))
    .tenant_pod("acme", "w", "leased")
    .lease("acme", "job", 8, LeasePhase::Bound, Some(-600));
    let p = f.plan();
    assert!(kinds(&p).is_empty(), "{:?}", kinds(&p));
    assert!(p.lending_blocked.unwrap().contains("metrics are 10m old"));
}

#[test]
fn outside_windows_idle_lent_nodes_come_back_but_leases_stay() {
    let p = fx()
        .policy(|p| p.windows = Windows::parse("UTC", &[(0, "00:00", "01:00")]).unwrap())
        .node("lent", 8)
        .marked(NodeState::Lent, None)
        .node("leased", 8)
        .marked(NodeState::Leased, Some("acme.job"))
        .tenant_pod("acme", "w", "leased")
        .lease("acme", "job", 8, LeasePhase::Bound, Some(-600))
        .plan();
    assert_eq!(kinds(&p), ["unlend lent"]);
}

#[test]
fn an_internal_pod_on_a_lent_node_sends_it_back() {
    let p = fx()
        .node("n1", 8)
        .marked(NodeState::Lent, None)
        .internal_pod("tolerant", Some("n1"), 1)
        .plan();
    assert_eq!(kinds(&p), ["unlend n1"]);
}

#[test]
fn demand_for_any_class_is_met_from_any_class() {
    let mut f = fx()
        .node("a", 8)
        .marked(NodeState::Lent, None)
        .node("h", 8)
        .marked(NodeState::Lent, None);
    f.nodes[1].labels = labels("H100");
    f.demand.push((None, 8));
    let p = f.plan();
    assert_eq!(
        p.steps
            .iter()
            .filter(|s| matches!(s.action, Action::Unlend { .. }))
            .count(),
        1
    );
    // Demand for a class the pool has no nodes of is not the pool's to meet.
    let mut f = fx().node("a", 8).marked(NodeState::Lent, None);
    f.demand.push((Some("T4".into()), 8));
    assert!(kinds(&f.plan()).is_empty());
}

#[test]
fn work_waiting_for_any_gpu_is_the_demand_of_a_pool_of_one_class() {
    // The demand by class is what the learned reserve's history records: in a pool of one model, a pod that
    // asks for no model waits for that model; with two models it is neither's.
    let one = fx()
        .node("a", 8)
        .internal_pod("run", Some("a"), 4)
        .node("b", 8)
        .internal_pod("wait", None, 8);
    let p = one.plan();
    assert_eq!(p.classes.len(), 1);
    assert_eq!(p.classes[0].demand_gpus, 4 + 8);
    // Never more than the class could serve.
    let p = one.internal_pod("more", None, 8).plan();
    assert_eq!(p.classes[0].demand_gpus, 16);
    let mut two = fx()
        .node("a", 8)
        .internal_pod("run", Some("a"), 4)
        .node("h", 8)
        .internal_pod("wait", None, 8);
    two.nodes[1].labels = labels("H100");
    let p = two.plan();
    let demand: Vec<u32> = p.classes.iter().map(|c| c.demand_gpus).collect();
    assert_eq!(demand, vec![4, 0]);
}

#[test]
fn ledger_accrues_at_observed_rates() {
    let mut s = fx()
        .node("n1", 8)
        .marked(NodeState::Leased, Some("acme.job"))
        .tenant_pod("acme", "w", "n1")
        .lease("acme", "job", 8, LeasePhase::Bound, Some(-600))
        .snapshot();
    s.ledger = PoolLedger {
        harvestable_gpu_hours: 1.0,
        lent_gpu_hours: 1.0,
        accounted_until: Some(at(-1800)),
    };
    let p = plan(&s);
    assert_eq!(p.ledger.lent_gpu_hours, 1.0 + 8.0 * 0.5);
    assert_eq!(p.ledger.harvestable_gpu_hours, 1.0 + 8.0 * 0.5);
    assert_eq!(p.ledger.accounted_until, Some(t0()));
}

#[test]
fn planning_again_after_carrying_out_changes_nothing() {
    let fixtures = vec![
        fx().node("n1", 8)
            .node("n2", 8)
            .lease("acme", "job", 8, LeasePhase::Pending, None),
        fx().node("leased", 8)
            .marked(NodeState::Leased, Some("acme.job"))
            .tenant_pod("acme", "w", "leased")
            .lease("acme", "job", 8, LeasePhase::Bound, Some(-600))
            .internal_pod("queued", None, 8),
        fx().node("lent", 8)
            .marked(NodeState::Lent, None)
            .internal_pod("queued", None, 8),
    ];
    for f in fixtures {
        let mut s = f.snapshot();
        let p = plan(&s);
        assert!(!p.steps.is_empty());
        ideal::apply(&mut s, &p);
        let again = plan(&s);
        assert!(again.steps.is_empty(), "replanned: {:?}", kinds(&again));
    }
}

// Node health: breaches, and leased nodes that are not Ready or shrank.

impl Fx {
    /// The node a lease holds, bound with `bound` GPUs (its hold's record).
    fn held_with(self, bound: u32) -> Self {
        self.with_node(|n| n.held_gpus = Some(bound))
    }
    fn not_ready(self) -> Self {
        self.with_node(|n| n.ready = false)
    }
    fn demand(mut self, class: Option<&str>, gpus: u32) -> Self {
        self.demand.push((class.map(str::to_string), gpus));
        self
    }
}

fn causes(p: &Plan) -> Vec<(String, Cause)> {
    kinds(p).into_iter().zip(p.steps.iter().map(|s| s.cause)).collect()
}

#[test]
fn a_tenant_pod_where_no_lease_of_its_namespace_holds_the_node_is_evicted_at_once() {
    let p = fx()
        .node("internal", 8)
        .tenant_pod("acme", "stray", "internal")
        .node("other", 8)
        .marked(NodeState::Leased, Some("globex.job"))
        .tenant_pod("acme", "intruder", "other")
        .tenant_pod("globex", "own", "other")
        .node("reclaiming", 8)
        .marked(NodeState::Reclaiming, Some("globex.job"))
        .with_node(|n| n.marks.deadline = Some(at(60)))
        .tenant_pod("acme", "late", "reclaiming")
        .tenant_pod("globex", "own2", "reclaiming")
        .with_pod_deadline(at(60))
        .lease("globex", "job", 16, LeasePhase::Reclaiming, Some(-600))
        .plan();
    let mut got = causes(&p);
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [
            ("evict intruder".to_string(), Cause::Breach),
            ("evict late".to_string(), Cause::Breach),
            ("evict stray".to_string(), Cause::Breach),
        ],
        "no notice, no deadline annotation for a pod that is not the lease's; the lease's own pods are left"
    );
    for s in &p.steps {
        let Action::Evict { deadline, .. } = s.action else {
            unreachable!()
        };
        assert_eq!(deadline, p.steps[0].action_deadline(), "evicted now");
        assert!(s.reason.contains("breach"), "{}", s.reason);
    }
    // A pod already terminating is left to finish; one not running yet is left to the kubelet's admission.
    for f in [
        |p: &mut PodView| p.terminating = true,
        |p: &mut PodView| p.phase = PodPhase::Pending,
    ] {
        let p = fx()
            .node("internal", 8)
            .tenant_pod("acme", "stray", "internal")
            .with_pod(f)
            .plan();
        assert!(!kinds(&p).iter().any(|k| k.starts_with("evict")), "{:?}", kinds(&p));
    }
}

impl Step {
    fn action_deadline(&self) -> Timestamp {
        match self.action {
            Action::Evict { deadline, .. } => deadline,
            _ => panic!("not an eviction"),
        }
    }
}

impl Fx {
    fn with_pod(mut self, f: impl FnOnce(&mut PodView)) -> Self {
        f(&mut self.pods.last_mut().unwrap().0);
        self
    }
}

#[test]
fn internal_demand_takes_the_node_that_is_not_ready_first_and_counts_it_for_nothing() {
    // 8 GPUs wanted; a lease holds a Ready node and one not Ready, both running the tenant's pods.
    let base = || {
        fx().node("sick", 8)
            .marked(NodeState::Leased, Some("acme.job"))
            .held_with(8)
            .not_ready()
            .tenant_pod("acme", "w1", "sick")
            .node("well", 8)
            .marked(NodeState::Leased, Some("acme.job"))
            .held_with(8)
            .tenant_pod("acme", "w2", "well")
            .lease("acme", "job", 16, LeasePhase::Bound, Some(-600))
    };
    let p = base().internal_pod("queued", None, 8).plan();
    let notices: Vec<String> = kinds(&p).into_iter().filter(|k| k.starts_with("notice")).collect();
    assert_eq!(
        notices,
        ["notice sick", "notice well"],
        "the sick node first; the well one still serves the demand"
    );
    assert!(reason_of(&p, "sick").contains("not Ready"), "{}", reason_of(&p, "sick"));
    // With one notice allowed, the sick node does not use it up.
    let p = base()
        .policy(|p| p.reclaim_cap(1))
        .internal_pod("queued", None, 8)
        .plan();
    let notices: Vec<String> = kinds(&p).into_iter().filter(|k| k.starts_with("notice")).collect();
    assert_eq!(notices, ["notice sick", "notice well"]);
    // Without internal demand, nothing is taken: the sick node bills nothing (the controller's holds).
    assert!(base().plan().steps.is_empty());
}

#[test]
fn a_shrunk_node_goes_first_and_counts_what_it_has() {
    let p = fx()
        .node("half", 4)
        .marked(NodeState::Leased, Some("acme.a"))
        .held_with(8)
        .tenant_pod("acme", "w1", "half")
        .node("whole", 8)
        .marked(NodeState::Leased, Some("acme.b"))
        .held_with(8)
        .tenant_pod("acme", "w2", "whole")
        .lease("acme", "a", 8, LeasePhase::Bound, Some(-600))
        .lease("acme", "b", 8, LeasePhase::Bound, Some(-600))
        .internal_pod("queued", None, 4)
        .plan();
    let notices: Vec<String> = kinds(&p).into_iter().filter(|k| k.starts_with("notice")).collect();
    assert_eq!(notices, ["notice half"], "4 GPUs wanted: the shrunk node's 4 cover it");
    assert!(
        reason_of(&p, "half").contains("4 of the 8 GPUs"),
        "{}",
        reason_of(&p, "half")
    );
}

#[test]
fn a_lease_at_no_usable_gpus_under_internal_demand_is_reclaimed() {
    // Capacity 8 → 0 on the leased node while 16 GPUs of internal work wait for the pool.
    let p = fx()
        .node("empty", 0)
        .marked(NodeState::Leased, Some("acme.job"))
        .held_with(8)
        .tenant_pod("acme", "w", "empty")
        .node("busy", 8)
        .internal_pod("running", Some("busy"), 8)
        .lease("acme", "job", 8, LeasePhase::Bound, Some(-600))
        .internal_pod("queued", None, 16)
        .demand(None, 16)
        .plan();
    assert!(kinds(&p).contains(&"notice empty".to_string()), "{:?}", kinds(&p));
    let lease = &p.leases[0];
    assert_eq!(lease.phase, LeasePhase::Reclaiming);
    // With no tenant pod left on it, it goes back at once and the lease ends.
    let p = fx()
        .node("empty", 0)
        .marked(NodeState::Leased, Some("acme.job"))
        .held_with(8)
        .node("busy", 8)
        .internal_pod("running", Some("busy"), 8)
        .lease("acme", "job", 8, LeasePhase::Bound, Some(-600))
        .demand(None, 16)
        .plan();
    assert_eq!(kinds(&p), ["return empty"]);
    assert_eq!(p.leases[0].phase, LeasePhase::Released);
}

#[test]
fn a_node_under_notice_that_is_not_ready_is_not_counted_as_coming_back() {
    let p = fx()
        .node("n1", 8)
        .marked(NodeState::Reclaiming, Some("acme.job"))
        .not_ready()
        .with_node(|n| n.marks.deadline = Some(at(60)))
        .tenant_pod("acme", "w", "n1")
        .with_pod_deadline(at(60))
        .node("n2", 8)
        .marked(NodeState::Leased, Some("acme.job"))
        .held_with(8)
        .tenant_pod("acme", "w2", "n2")
        .lease("acme", "job", 16, LeasePhase::Reclaiming, Some(-600))
        .internal_pod("queued", None, 8)
        .plan();
    assert!(kinds(&p).contains(&"notice n2".to_string()), "{:?}", kinds(&p));
}

// Scrubbing between holders.

fn scrubbing(timeout: i64) -> impl FnOnce(&mut PoolPolicy) {
    move |p| {
        p.scrub = Some(ScrubPolicy {
            timeout_seconds: timeout,
        })
    }
}

impl Fx {
    /// The last node is scrubbing, waiting for `job`, which shows `state`.
    fn scrub_job(self, job: &str, state: Option<ScrubJob>) -> Self {
        let job = job.to_string();
        self.marked(NodeState::Scrubbing, None)
            .with_node(|n| n.scrub = Some(ScrubView { job: Some(job), state }))
    }
}

fn running(created: i64) -> Option<ScrubJob> {
    Some(ScrubJob {
        created: at(created),
        outcome: JobOutcome::Running,
    })
}

#[test]
fn a_node_its_tenant_left_is_scrubbed_before_anything_else() {
    let p = fx()
        .policy(scrubbing(300))
        .node("n1", 8)
        .marked(NodeState::Reclaiming, Some("acme.job"))
        .with_node(|n| {
            n.marks.deadline = Some(at(120));
            n.marks.lease_uid = Some("uid-1".into());
        })
        .lease("acme", "job", 8, LeasePhase::Reclaiming, Some(-600))
        .with_lease(|l| l.uid = Some("uid-1".into()))
        .internal_pod("queued", None, 8)
        .plan();
    assert_eq!(kinds(&p), ["scrub n1"]);
    let Action::Scrub { job, lease, .. } = &p.steps[0].action else {
        unreachable!()
    };
    assert_eq!(job, &scrub::job_name("n1", "uid-1"));
    assert_eq!(lease.as_deref(), Some("acme.job"));
    // The tenant no longer holds it: the lease is over, and the scrub is what internal work waits for.
    assert_eq!(p.leases[0].phase, LeasePhase::Released);
    assert!(p.leases[0].nodes.is_empty());
}

#[test]
fn an_ended_lease_with_no_pods_left_goes_to_scrubbing_too() {
    let p = fx()
        .policy(scrubbing(300))
        .node("n1", 8)
        .marked(NodeState::Leased, Some("acme.job"))
        .lease("acme", "job", 8, LeasePhase::Bound, Some(-600))
        .with_lease(|l| l.deleting = true)
        .plan();
    assert_eq!(kinds(&p), ["scrub n1"]);
}

#[test]
fn without_a_scrub_nodes_go_straight_back_as_before() {
    let p = fx()
        .node("n1", 8)
        .marked(NodeState::Leased, Some("acme.job"))
        .lease("acme", "job", 8, LeasePhase::Bound, Some(-600))
        .with_lease(|l| l.deleting = true)
        .plan();
    assert_eq!(kinds(&p), ["return n1"]);
    assert!(p.scrubs.is_empty());
}

#[test]
fn a_scrubbing_node_is_neither_lent_nor_bound_nor_internal_until_its_job_completes() {
    for state in [None, running(-10)] {
        let p = fx()
            .policy(scrubbing(300))
            .node("n1", 8)
            .scrub_job("scrub-n1", state.clone())
            .lease("acme", "next", 8, LeasePhase::Pending, None)
            .plan();
        assert!(kinds(&p).is_empty(), "{:?}", kinds(&p));
        assert_eq!(p.totals.scrubbing_gpus, 8);
        assert_eq!(p.totals.internal_free_gpus, 0);
        assert_eq!(p.leases[0].phase, LeasePhase::Pending);
        let want = if state.is_none() {
            ScrubStage::Create
        } else {
            ScrubStage::Running(at(-10))
        };
        assert_eq!(
            p.scrubs,
            [ScrubReport {
                node: "n1".into(),
                job: "scrub-n1".into(),
                stage: want
            }]
        );
        assert!(
            reason_of(&p, "n1").starts_with("scrubbing: job scrub-n1"),
            "{}",
            reason_of(&p, "n1")
        );
    }
}

#[test]
fn a_completed_scrub_sends_the_node_back() {
    let done = Some(ScrubJob {
        created: at(-60),
        outcome: JobOutcome::Complete(at(-5)),
    });
    let p = fx()
        .policy(scrubbing(300))
        .node("n1", 8)
        .scrub_job("scrub-n1", done)
        .plan();
    assert_eq!(kinds(&p), ["return n1"]);
    assert_eq!(p.steps[0].cause, Cause::Scrubbed);
    assert_eq!(
        p.scrubs[0].stage,
        ScrubStage::Done {
            created: at(-60),
            completed: at(-5)
        }
    );
}

#[test]
fn a_failed_or_timed_out_scrub_keeps_the_node_out_and_says_why() {
    let failed = Some(ScrubJob {
        created: at(-60),
        outcome: JobOutcome::Failed("BackoffLimitExceeded: Job has reached the specified backoff limit".into()),
    });
    for (state, why) in [
        (failed, "BackoffLimitExceeded"),
        (running(-300), "timeoutSeconds (300s)"),
    ] {
        let p = fx()
            .policy(scrubbing(300))
            .node("n1", 8)
            .scrub_job("scrub-n1", state)
            .lease("acme", "next", 8, LeasePhase::Pending, None)
            .plan();
        assert!(kinds(&p).is_empty(), "{:?}", kinds(&p));
        let ScrubStage::Failed(said) = &p.scrubs[0].stage else {
            panic!("{:?}", p.scrubs)
        };
        assert!(said.contains(why), "{said}");
        let reason = reason_of(&p, "n1");
        assert!(
            reason.starts_with("scrub failed") && reason.contains("scrub-n1 is deleted"),
            "{reason}"
        );
        assert_eq!(p.leases[0].phase, LeasePhase::Pending);
    }
}

#[test]
fn a_job_deleted_after_a_failure_is_made_again() {
    let p = fx()
        .policy(scrubbing(300))
        .node("n1", 8)
        .scrub_job("scrub-n1", None)
        .plan();
    assert_eq!(p.scrubs[0].stage, ScrubStage::Create);
}

#[test]
fn scrubbing_nodes_count_as_coming_back_so_no_more_is_reclaimed_for_them() {
    let p = fx()
        .policy(scrubbing(300))
        .node("n1", 8)
        .scrub_job("scrub-n1", running(-10))
        .node("n2", 8)
        .marked(NodeState::Leased, Some("acme.job"))
        .tenant_pod("acme", "w", "n2")
        .lease("acme", "job", 8, LeasePhase::Bound, Some(-600))
        .internal_pod("queued", None, 8)
        .plan();
    assert!(kinds(&p).is_empty(), "{:?}", kinds(&p));
}

#[test]
fn deleting_the_pool_gives_back_a_node_whose_scrub_failed() {
    let failed = Some(ScrubJob {
        created: at(-60),
        outcome: JobOutcome::Failed("BackoffLimitExceeded".into()),
    });
    let p = fx()
        .policy(scrubbing(300))
        .policy(|p| p.deleting = true)
        .node("n1", 8)
        .scrub_job("scrub-n1", failed)
        .node("n2", 8)
        .scrub_job("scrub-n2", running(-10))
        .plan();
    assert_eq!(kinds(&p), ["return n1"]);
}

#[test]
fn a_pool_that_stops_scrubbing_gives_its_scrubbing_nodes_back() {
    let p = fx().node("n1", 8).scrub_job("scrub-n1", running(-10)).plan();
    assert_eq!(kinds(&p), ["return n1"]);
}

#[test]
fn planning_again_after_a_scrub_starts_changes_nothing() {
    let f = fx()
        .policy(scrubbing(300))
        .node("n1", 8)
        .marked(NodeState::Reclaiming, Some("acme.job"))
        .with_node(|n| n.marks.deadline = Some(at(120)))
        .lease("acme", "job", 8, LeasePhase::Reclaiming, Some(-600));
    let mut s = f.snapshot();
    let p = plan(&s);
    assert_eq!(kinds(&p), ["scrub n1"]);
    ideal::apply(&mut s, &p);
    let again = plan(&s);
    assert!(again.steps.is_empty(), "replanned: {:?}", kinds(&again));
    assert_eq!(again.scrubs[0].stage, ScrubStage::Create);
}
