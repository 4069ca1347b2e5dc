//! One plan over a large pool: 5,000 nodes, 40,000 GPUs, 100,000 pods, 1,000 leases.
//!
//! `cargo bench --bench plan` prints the time per plan for a steady pool (little internal demand), for a
//! pool under a wave of internal demand (notices to give), and for the steady pool with a learned reserve
//! (burst, hourly peak and reclaim ahead) over a 14-day history of one sample a minute per class.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use jiff::{SignedDuration, Timestamp};
use sublet::policy::*;

const NODES: usize = 5_000;
const GPUS: u32 = 8;
const LEASES: usize = 1_000;
const PODS: usize = 100_000;

/// 2,500 internal nodes running 1-GPU pods, 1,000 leased (one per lease) with tenant pods, 500 lent, 200
/// reclaiming, the rest idle; the remaining pods wait in the queue (`pending` of them request GPUs).
fn snapshot(pending_gpus_per_pod: u32) -> Snapshot {
    snapshot_with(pending_gpus_per_pod, None)
}

/// 14 days of minutes per class: a daily wave between a fifth and all of the class's 20,000 GPUs, with
/// pseudo-random jumps.
fn history(now: Timestamp) -> DemandHistory {
    let mut h = DemandHistory::new(14);
    let mut x: u64 = 1;
    for class in ["A100", "H100"] {
        for m in 0..14 * 1440i64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let phase = (m % 1440) as f64 / 1440.0;
            let wave = 4_000.0 + 12_000.0 * (0.5 + 0.5 * (phase * std::f64::consts::TAU).sin());
            let jump = ((x >> 40) % 2_000) as f64;
            let at = now.checked_sub(SignedDuration::from_mins(14 * 1440 - m)).unwrap();
            h.record(class, at, (wave + jump) as u32);
        }
    }
    h
}

fn snapshot_with(pending_gpus_per_pod: u32, learned: Option<LearnedPolicy>) -> Snapshot {
    let now: Timestamp = "2026-11-25T12:00:00Z".parse().unwrap();
    let long_ago = now.checked_sub(SignedDuration::from_hours(2)).unwrap();
    let deadline = now.checked_add(SignedDuration::from_secs(60)).unwrap();
    let mut policy = PoolPolicy::with_defaults("bench");
    policy.reserve.percent = 5;
    policy.max_concurrent_reclaims = Some(400);
    policy.reserve.learned = learned;
    let mut b = SnapshotBuilder::new(Arc::new(policy), now);
    if learned.is_some() {
        b.history(Arc::new(history(now)));
    }
    let models = ["A100", "H100"];
    for i in 0..NODES {
        let mut marks = Marks::default();
        let (state, lease) = match i {
            0..2_500 => (NodeState::Internal, None),
            2_500..3_500 => (NodeState::Leased, Some(i - 2_500)),
            3_500..4_000 => (NodeState::Lent, None),
            4_000..4_200 => (NodeState::Reclaiming, Some(i - 4_000)),
            _ => (NodeState::Internal, None),
        };
        if state != NodeState::Internal {
            marks = Marks {
                pool: Some("bench".into()),
                state,
                lease: lease.map(|l| format!("tenant-{}.lease-{l}", l % 50)),
                lease_uid: None,
                since: Some(long_ago),
                returned_at: None,
                deadline: (state == NodeState::Reclaiming)
                    .then_some(now.checked_add(SignedDuration::from_secs(60)).unwrap()),
            };
        }
        b.node(NodeView {
            name: format!("gpu-{i:05}"),
            labels: BTreeMap::from([("nvidia.com/gpu.product".to_string(), models[i % 2].to_string())]),
            ready: true,
            unschedulable: false,
            gpus: GPUS,
            marks,
            utilization: None,
            idle_since: (i >= 4_200).then_some(long_ago),
            internal: InternalLoad::default(),
            scrub: None,
        });
    }
    for l in 0..LEASES {
        b.lease(LeaseView {
            namespace: format!("tenant-{}", l % 50),
            name: format!("lease-{l}"),
            uid: None,
            gpus: GPUS,
            model: None,
            duration_seconds: None,
            max_price: None,
            phase: LeasePhase::Bound,
            bound_at: Some(long_ago),
            created: long_ago,
            tenant_namespace: true,
            deleting: false,
        });
    }
    let mut pods = 0;
    // 2,500 × 8 internal 1-GPU pods.
    for i in 0..2_500 {
        for k in 0..8 {
            let pod = PodView {
                namespace: "ml".into(),
                name: format!("train-{i}-{k}"),
                gpus: 1,
                phase: PodPhase::Running,
                ..PodView::default()
            };
            b.pod(pod, Some(&format!("gpu-{i:05}")));
            pods += 1;
        }
    }
    // Tenant pods on leased and reclaiming nodes, 8 each.
    for i in 2_500..4_200 {
        if (3_500..4_000).contains(&i) {
            continue;
        }
        for k in 0..8 {
            let pod = PodView {
                namespace: format!("tenant-{}", (i % 1000) % 50),
                name: format!("t-{i}-{k}"),
                gpus: 1,
                tenant: true,
                phase: PodPhase::Running,
                deadline_annotation: (i >= 4_000).then_some(deadline),
                ..PodView::default()
            };
            b.pod(pod, Some(&format!("gpu-{i:05}")));
            pods += 1;
        }
    }
    // The queue.
    let mut q = 0;
    while pods < PODS {
        let pod = PodView {
            namespace: "ml".into(),
            name: format!("queued-{q}"),
            gpus: pending_gpus_per_pod,
            ..PodView::default()
        };
        b.pod(pod, None);
        pods += 1;
        q += 1;
    }
    b.build()
}

fn bench(c: &mut Criterion) {
    let steady = snapshot(0);
    let p = plan(&steady);
    eprintln!(
        "steady: {} steps, {} GPUs lendable",
        p.steps.len(),
        p.totals.lendable_gpus
    );
    c.bench_function("plan 5k nodes / 100k pods / 1k leases, steady", |b| {
        b.iter(|| plan(black_box(&steady)))
    });
    let wave = snapshot(1);
    let p = plan(&wave);
    eprintln!(
        "wave: {} steps ({} notices)",
        p.steps.len(),
        p.steps
            .iter()
            .filter(|s| matches!(s.action, Action::Notice { .. }))
            .count()
    );
    c.bench_function("plan 5k nodes / 100k pods / 1k leases, demand wave", |b| {
        b.iter(|| plan(black_box(&wave)))
    });
    let learned = LearnedPolicy {
        quantile: Some(0.95),
        ..LearnedPolicy::with_defaults()
    };
    let learning = snapshot_with(0, Some(learned));
    let p = plan(&learning);
    eprintln!(
        "learned: {} steps, reserve {} GPUs ({:?}), {} notices ahead",
        p.steps.len(),
        p.totals.reserve_gpus,
        p.reserve_learned,
        p.steps.iter().filter(|s| s.cause == Cause::ReclaimAhead).count()
    );
    c.bench_function(
        "plan 5k nodes / 100k pods / 1k leases, learned reserve, 14-day minute history",
        |b| b.iter(|| plan(black_box(&learning))),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
