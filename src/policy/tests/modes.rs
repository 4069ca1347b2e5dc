//! Observe mode and pools that select the same nodes, as the planner sees them.

use super::*;

fn observing(p: &mut PoolPolicy) {
    p.observe = true;
}

fn lease_reason<'a>(p: &'a Plan, name: &str) -> &'a LeaseReport {
    p.leases.iter().find(|l| l.name == name).unwrap()
}

#[test]
fn observe_lends_and_binds_nothing_and_reports_what_it_would_lend() {
    let p = fx()
        .policy(observing)
        .node("n1", 8)
        .node("n2", 8)
        .lease("acme", "job", 8, LeasePhase::Pending, None)
        .plan();
    assert!(p.steps.is_empty(), "{:?}", kinds(&p));
    assert_eq!(p.totals.lendable_gpus, 16, "what Enforce would lend now");
    assert!(
        reason_of(&p, "n1").contains("would be lent in Enforce mode"),
        "{}",
        reason_of(&p, "n1")
    );
    let l = lease_reason(&p, "job");
    assert_eq!(l.phase, LeasePhase::Pending);
    assert!(l.reason.contains("Observe mode"), "{}", l.reason);
    // The same pool in Enforce lends both and binds the lease: only the flag differs.
    let e = fx()
        .node("n1", 8)
        .node("n2", 8)
        .lease("acme", "job", 8, LeasePhase::Pending, None)
        .plan();
    assert_eq!(e.totals.lendable_gpus, 16);
    assert_eq!(lent(&e).len(), 2);
}

#[test]
fn observe_carries_out_a_notice_already_given_at_its_deadline() {
    // The notice was given in Enforce; its deadline passed while the pool was in Observe.
    let f = fx()
        .policy(observing)
        .node("n1", 8)
        .marked(NodeState::Reclaiming, Some("acme.job"))
        .with_node(|n| n.marks.deadline = Some(at(-5)))
        .tenant_pod("acme", "w", "n1")
        .with_pod_deadline(at(-5))
        .lease("acme", "job", 8, LeasePhase::Reclaiming, Some(-600))
        .internal_pod("queued", None, 8);
    let p = f.plan();
    assert_eq!(kinds(&p), ["evict w"]);
    match &p.steps[0].action {
        Action::Evict { deadline, .. } => assert_eq!(*deadline, at(-5), "the deadline given, unmoved"),
        other => panic!("{other:?}"),
    }
    // Before the deadline: nothing but waiting, and no second notice.
    let mut early = f;
    early.now = at(-10);
    assert!(kinds(&early.plan()).is_empty(), "{:?}", kinds(&early.plan()));
}

#[test]
fn observe_returns_a_node_once_its_tenant_is_gone() {
    let p = fx()
        .policy(observing)
        .node("n1", 8)
        .marked(NodeState::Reclaiming, Some("acme.job"))
        .with_node(|n| n.marks.deadline = Some(at(30)))
        .lease("acme", "job", 8, LeasePhase::Reclaiming, Some(-600))
        .plan();
    assert_eq!(kinds(&p), ["return n1"]);
    assert_eq!(
        p.totals.lendable_gpus, 0,
        "a node just back is not lent again in Observe"
    );
}

#[test]
fn observe_takes_nodes_back_for_internal_demand() {
    let p = fx()
        .policy(observing)
        .node("idle", 8)
        .marked(NodeState::Lent, None)
        .node("leased", 8)
        .marked(NodeState::Leased, Some("acme.job"))
        .tenant_pod("acme", "w", "leased")
        .lease("acme", "job", 8, LeasePhase::Bound, Some(-600))
        .internal_pod("queued", None, 16)
        .plan();
    let mut k = kinds(&p);
    k.sort();
    assert_eq!(k, ["annotate w", "notice leased", "unlend idle"]);
    let notice = p.steps.iter().find_map(|s| match &s.action {
        Action::Notice { deadline, .. } => Some(*deadline),
        _ => None,
    });
    assert_eq!(notice, Some(at(120)), "a full notice");
}

#[test]
fn observe_keeps_what_is_out_while_nothing_calls_for_it() {
    // Nothing waits: a lent node and a bound lease stay as they are (a lease's end still ends it).
    let f = fx()
        .policy(observing)
        .node("idle", 8)
        .marked(NodeState::Lent, None)
        .node("leased", 8)
        .marked(NodeState::Leased, Some("acme.job"))
        .tenant_pod("acme", "w", "leased")
        .lease("acme", "job", 8, LeasePhase::Bound, Some(-600));
    assert!(f.plan().steps.is_empty(), "{:?}", kinds(&f.plan()));
    // The lease runs 700 s from its binding 600 s ago: within the notice of its end, it is given notice,
    // with its end as the deadline.
    let ending = f.with_lease(|l| l.duration_seconds = Some(700));
    let p = ending.plan();
    assert!(kinds(&p).contains(&"notice leased".to_string()), "{:?}", kinds(&p));
    let l = lease_reason(&p, "job");
    assert_eq!(l.phase, LeasePhase::Reclaiming);
    assert_eq!(l.deadline, Some(at(120)));
}

#[test]
fn a_node_claimed_by_an_older_pool_is_not_a_member() {
    let p = fx()
        .node("n1", 8)
        .with_node(|n| n.claimed_by = Some("older".into()))
        .node("n2", 8)
        .plan();
    assert_eq!(lent(&p), ["n2"]);
    assert_eq!(p.totals.nodes, 1);
    // A node carrying this pool's marks stays a member whatever another pool claims.
    let p = fx()
        .node("n1", 8)
        .marked(NodeState::Lent, None)
        .with_node(|n| n.claimed_by = Some("older".into()))
        .plan();
    assert_eq!(p.totals.nodes, 1);
    assert_eq!(p.totals.lent_gpus, 8);
}

#[test]
fn a_lease_of_a_pool_whose_nodes_another_pool_holds_says_so() {
    // Both nodes are selected by this pool too: one claimed by an older pool, one lent by it.
    let p = fx()
        .node("n1", 8)
        .with_node(|n| n.claimed_by = Some("older".into()))
        .node("n2", 8)
        .with_node(|n| {
            n.marks = Marks {
                pool: Some("older".into()),
                state: NodeState::Lent,
                ..Marks::default()
            }
        })
        .lease("acme", "job", 8, LeasePhase::Pending, None)
        .plan();
    assert_eq!(p.totals.nodes, 0);
    let l = lease_reason(&p, "job");
    assert_eq!(l.phase, LeasePhase::Pending);
    assert!(!l.unschedulable, "the nodes exist; another pool holds them");
    assert!(l.reason.contains("the pool has 0 in all"), "{}", l.reason);
    assert!(l.reason.contains("16 on nodes of pool older"), "{}", l.reason);
    // Larger than both pools' nodes together: unschedulable as before.
    let p = fx()
        .node("n1", 8)
        .with_node(|n| n.claimed_by = Some("older".into()))
        .lease("acme", "big", 24, LeasePhase::Pending, None)
        .plan();
    assert!(lease_reason(&p, "big").unschedulable);
}
