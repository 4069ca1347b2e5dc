//! The controller's Prometheus metrics, in one registry served on `/metrics`.
//!
//! Named by the Prometheus conventions: base units (`_seconds`), `_total` for counters, money with a
//! `currency` label, a tenant's namespace as `tenant_namespace` (a ServiceMonitor puts the target's own
//! `namespace` label on every series; without honorLabels a series' own `namespace` would be renamed
//! `exported_namespace`). Counters with fixed labels are present at zero from the start, a pool's from its
//! first pass; a lease's series are dropped when the lease ends, so that months of leases do not pile up.
//!
//! The running totals of leases and pools mirror their statuses (durable, read back after a restart), so
//! they only grow, across restarts too.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use prometheus::core::Collector;
use prometheus::{
    Counter, CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use super::process_metrics::ProcessMetrics;

/// Node GPU states of `sublet_gpus`.
pub const GPU_STATES: [&str; 6] = ["internal", "lendable", "lent", "leased", "reclaiming", "scrubbing"];
/// Outcomes of `sublet_evictions_total`.
pub const EVICTION_OUTCOMES: [&str; 4] = ["evicted", "blocked", "deleted", "failed"];
/// Kinds of `sublet_api_writes_total`.
pub const WRITE_KINDS: [&str; 9] = [
    "node",
    "pod",
    "eviction",
    "pod_delete",
    "pool_status",
    "pool_finalizer",
    "lease_status",
    "event",
    "job",
];
/// Signal sources of `sublet_signal_sample_timestamp_seconds`.
pub const SIGNAL_SOURCES: [&str; 3] = ["utilization", "kueue", "promql"];
/// Buckets of `sublet_reclaim_latency_seconds`: fine around the usual notices (a few minutes).
pub const RECLAIM_BUCKETS: [f64; 13] = [
    1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 90.0, 120.0, 150.0, 180.0, 240.0, 300.0, 600.0,
];

/// Results of `sublet_scrubs_total`.
pub const SCRUB_RESULTS: [&str; 3] = ["succeeded", "failed", "timeout"];
/// Buckets of `sublet_scrub_duration_seconds`: from a quick cache prune to a long GPU reset and wipe.
pub const SCRUB_BUCKETS: [f64; 11] = [1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0];

/// Every metric sublet exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// The `process_*` metrics, kept in a registry of their own (no `sublet_` prefix).
    process_registry: Registry,
    process: ProcessMetrics,
    /// GPUs by pool and state ([`GPU_STATES`]).
    pub gpus: IntGaugeVec,
    /// Leases by pool and phase.
    pub leases: IntGaugeVec,
    /// Internal GPUs waiting (pending pods, Kueue, PromQL) by pool and class (`any` when any node will do).
    pub internal_pending_gpus: IntGaugeVec,
    /// When the newest sample of each signal source was taken, by pool and source.
    pub signal_sample_timestamp: GaugeVec,
    /// Each pool's reclaim notice, for alerts on reclaims slower than the notice.
    pub pool_notice: IntGaugeVec,
    pub notices: IntCounterVec,
    /// Evictions by pool and outcome ([`EVICTION_OUTCOMES`]).
    pub evictions: IntCounterVec,
    /// Tenant pods found on a node no lease of their namespace holds, evicted without notice.
    pub breaches: IntCounterVec,
    /// Seconds from internal demand seen to a node back in internal use.
    pub reclaim_latency: HistogramVec,
    /// Scrubs of nodes between holders.
    pub scrubs: Scrubs,
    totals: Totals,
    pub reconciles: IntCounterVec,
    /// Reconcile failures by pool and error kind.
    pub reconcile_failures: IntCounterVec,
    pub reconcile_duration: HistogramVec,
    /// API writes by kind ([`WRITE_KINDS`]) and outcome.
    pub api_writes: IntCounterVec,
    /// 1 while this replica holds the leader lease.
    pub leader: IntGauge,
    /// Internal demand (GPUs used and waited for) by pool and class: the history the learned reserve reads
    /// back from Prometheus.
    internal_demand: IntGaugeVec,
    /// GPUs of member nodes by pool and class.
    capacity: IntGaugeVec,
    /// Nodes whose sublet marks disagreed with sublet's record and were put right, by pool and what differed
    /// (taints, deadline).
    pub marks_repaired: IntCounterVec,
    /// Per pool, the label values of the series that come and go (leases, classes).
    exported: Arc<Mutex<HashMap<String, Exported>>>,
}

/// Scrubs of nodes between holders: how they ended and how long they took.
#[derive(Clone)]
pub struct Scrubs {
    /// Scrubs that ended, by pool and result ([`SCRUB_RESULTS`]).
    pub ended: IntCounterVec,
    /// Seconds from a scrub Job's creation to its completion.
    pub duration: HistogramVec,
}

impl Scrubs {
    fn new(r: &Registrar) -> Self {
        Self {
            ended: r.int_counters(
                "scrubs_total",
                "Scrubs of nodes between holders that ended, by result (succeeded, failed, timeout)",
                &["pool", "result"],
            ),
            duration: r.histograms(
                "scrub_duration_seconds",
                "From a scrub Job's creation to its completion",
                &SCRUB_BUCKETS,
                &["pool"],
            ),
        }
    }
}

/// The running totals of leases and pools, mirrored from their statuses.
#[derive(Clone)]
struct Totals {
    lease_gpu_seconds: CounterVec,
    lease_cost: CounterVec,
    pool_gpu_seconds: CounterVec,
    pool_revenue: CounterVec,
}

impl Totals {
    fn new(r: &Registrar) -> Self {
        Self {
            lease_gpu_seconds: r.counters(
                "lease_gpu_seconds_total",
                "GPU-seconds a lease has used, as accounted in its status",
                &["pool", "tenant_namespace", "lease"],
            ),
            lease_cost: r.counters(
                "lease_cost_total",
                "What a lease has cost, as accounted in its status",
                &["pool", "tenant_namespace", "lease", "currency"],
            ),
            pool_gpu_seconds: r.counters(
                "pool_gpu_seconds_total",
                "GPU-seconds a pool could have lent (harvestable) and lent",
                &["pool", "kind"],
            ),
            pool_revenue: r.counters(
                "pool_revenue_total",
                "Revenue from a pool's leases",
                &["pool", "currency"],
            ),
        }
    }
}

/// Label values exported for one pool, to drop or zero them later.
#[derive(Default)]
struct Exported {
    /// (tenant namespace, lease name) → currency.
    leases: HashMap<(String, String), String>,
    classes: BTreeSet<String>,
    currency: Option<String>,
}

/// `api_writes_total`, every kind and outcome present at zero.
fn api_writes(r: &Registrar) -> IntCounterVec {
    let api_writes = r.int_counters(
        "api_writes_total",
        "API writes by kind and outcome",
        &["kind", "outcome"],
    );
    for kind in WRITE_KINDS {
        for outcome in ["ok", "error"] {
            api_writes.with_label_values(&[kind, outcome]);
        }
    }
    api_writes
}

/// Makes metrics and registers each as it is made, so none is made and left out of `/metrics`.
struct Registrar(Registry);

impl Registrar {
    fn add<M: Collector + Clone + 'static>(&self, metric: M) -> M {
        self.0
            .register(Box::new(metric.clone()))
            .expect("metric names are unique");
        metric
    }

    fn int_gauges(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        self.add(GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn int_counters(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn counters(&self, name: &str, help: &str, labels: &[&str]) -> CounterVec {
        self.add(CounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn histograms(&self, name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(HistogramVec::new(opts, labels).expect("valid metric"))
    }
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registrar(Registry::new_custom(Some("sublet".into()), None).expect("valid prefix"));
        r.int_gauges("build_info", "Always 1; the version of this sublet", &["version"])
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let process_registry = Registry::new();
        let process = ProcessMetrics::register(&process_registry);
        Self {
            gpus: r.int_gauges("gpus", "GPUs by pool and state", &["pool", "state"]),
            leases: r.int_gauges("leases", "Leases by pool and phase", &["pool", "phase"]),
            internal_pending_gpus: r.int_gauges(
                "internal_pending_gpus",
                "Internal GPUs waiting (pending pods, Kueue, PromQL) by class; `any` when any node will do",
                &["pool", "class"],
            ),
            signal_sample_timestamp: r.gauges(
                "signal_sample_timestamp_seconds",
                "When the newest sample of a signal source was taken (Unix seconds); age = time() - this",
                &["pool", "source"],
            ),
            pool_notice: r.int_gauges(
                "pool_notice_seconds",
                "The reclaim notice a pool gives tenants",
                &["pool"],
            ),
            notices: r.int_counters("notices_total", "Reclaim notices given, per node", &["pool"]),
            evictions: r.int_counters(
                "evictions_total",
                "Tenant pod evictions by outcome",
                &["pool", "outcome"],
            ),
            breaches: r.int_counters(
                "breaches_total",
                "Tenant pods found on a node no lease of their namespace holds, evicted at once without notice",
                &["pool"],
            ),
            reclaim_latency: r.histograms(
                "reclaim_latency_seconds",
                "From internal demand seen to a node back in internal use",
                &RECLAIM_BUCKETS,
                &["pool"],
            ),
            scrubs: Scrubs::new(&r),
            totals: Totals::new(&r),
            reconciles: r.int_counters("reconciles_total", "Pool reconciles", &["pool"]),
            reconcile_failures: r.int_counters(
                "reconcile_failures_total",
                "Failed pool reconciles",
                &["pool", "error"],
            ),
            reconcile_duration: r.histograms(
                "reconcile_duration_seconds",
                "Time to observe, plan, execute and report a pool",
                &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0],
                &["pool"],
            ),
            api_writes: api_writes(&r),
            leader: r
                .add(IntGauge::new("leader", "1 while this replica holds the leader lease").expect("valid metric")),
            internal_demand: r.int_gauges(
                "internal_demand_gpus",
                "Internal demand: GPUs internal work uses and waits for, by pool and class",
                &["pool", "class"],
            ),
            capacity: r.int_gauges(
                "pool_capacity_gpus",
                "GPUs of a pool's member nodes, by class",
                &["pool", "class"],
            ),
            marks_repaired: r.int_counters(
                "node_marks_repaired_total",
                "Nodes whose sublet.dev/ marks disagreed with sublet's record and were put right",
                &["pool", "mark"],
            ),
            exported: Arc::default(),
            registry: r.0,
            process_registry,
            process,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        self.process.update();
        let mut families = self.registry.gather();
        families.extend(self.process_registry.gather());
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut buf)
            .expect("text encoding never fails");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }

    /// Counts an API write.
    pub fn write(&self, kind: &str, ok: bool) {
        self.api_writes
            .with_label_values(&[kind, if ok { "ok" } else { "error" }])
            .inc();
    }

    /// Puts a pool's counters at zero on its first pass, so that `rate()` and `increase()` see the first
    /// event; `errors` are the labels of `sublet_reconcile_failures_total`.
    pub fn pool_seen(&self, pool: &str, errors: &[&str]) {
        let mut exported = self.exported.lock().expect("metrics lock");
        if exported.contains_key(pool) {
            return;
        }
        exported.insert(pool.to_string(), Exported::default());
        self.notices.with_label_values(&[pool]);
        self.breaches.with_label_values(&[pool]);
        self.reconciles.with_label_values(&[pool]);
        for outcome in EVICTION_OUTCOMES {
            self.evictions.with_label_values(&[pool, outcome]);
        }
        for result in SCRUB_RESULTS {
            self.scrubs.ended.with_label_values(&[pool, result]);
        }
        for error in errors {
            self.reconcile_failures.with_label_values(&[pool, error]);
        }
        for kind in ["harvestable", "lent"] {
            self.totals.pool_gpu_seconds.with_label_values(&[pool, kind]);
        }
    }

    /// A lease's running totals, as accounted in its status.
    pub fn lease_accounted(
        &self,
        pool: &str,
        namespace: &str,
        lease: &str,
        currency: &str,
        gpu_seconds: f64,
        cost: f64,
    ) {
        let mut exported = self.exported.lock().expect("metrics lock");
        let e = exported.entry(pool.to_string()).or_default();
        let key = (namespace.to_string(), lease.to_string());
        if let Some(old) = e.leases.get(&key)
            && old != currency
        {
            let _ = self
                .totals
                .lease_cost
                .remove_label_values(&[pool, namespace, lease, old]);
        }
        e.leases.insert(key, currency.to_string());
        advance(
            &self
                .totals
                .lease_gpu_seconds
                .with_label_values(&[pool, namespace, lease]),
            gpu_seconds,
        );
        advance(
            &self
                .totals
                .lease_cost
                .with_label_values(&[pool, namespace, lease, currency]),
            cost,
        );
    }

    /// Drops the series of every lease of `pool` not in `active` (ended, or deleted).
    pub fn leases_ended(&self, pool: &str, active: &BTreeSet<(&str, &str)>) {
        let mut exported = self.exported.lock().expect("metrics lock");
        let Some(e) = exported.get_mut(pool) else { return };
        e.leases.retain(|(ns, name), currency| {
            let keep = active.contains(&(ns.as_str(), name.as_str()));
            if !keep {
                let _ = self.totals.lease_gpu_seconds.remove_label_values(&[pool, ns, name]);
                let _ = self.totals.lease_cost.remove_label_values(&[pool, ns, name, currency]);
            }
            keep
        });
    }

    /// A pool's leases by phase (every phase, zero when none).
    pub fn lease_phases(&self, pool: &str, phases: &[crate::policy::LeasePhase]) {
        use crate::policy::LeasePhase::*;
        for phase in [Pending, Bound, Reclaiming, Released, Expired] {
            let n = phases.iter().filter(|&&p| p == phase).count();
            self.leases
                .with_label_values(&[pool, &format!("{phase:?}")])
                .set(n as i64);
        }
    }

    /// Internal GPUs waiting, by class; a class no longer waiting reads 0.
    pub fn internal_pending(&self, pool: &str, by_class: &std::collections::BTreeMap<String, u32>) {
        let mut exported = self.exported.lock().expect("metrics lock");
        let e = exported.entry(pool.to_string()).or_default();
        e.classes.extend(by_class.keys().cloned());
        for class in &e.classes {
            let gpus = by_class.get(class).copied().unwrap_or(0);
            self.internal_pending_gpus
                .with_label_values(&[pool, class])
                .set(i64::from(gpus));
        }
    }

    /// Internal demand and capacity of one class, the history the learned reserve reads back.
    pub fn class_demand(&self, pool: &str, class: &str, demand_gpus: u32, capacity_gpus: u32) {
        let mut exported = self.exported.lock().expect("metrics lock");
        exported
            .entry(pool.to_string())
            .or_default()
            .classes
            .insert(class.to_string());
        self.internal_demand
            .with_label_values(&[pool, class])
            .set(i64::from(demand_gpus));
        self.capacity
            .with_label_values(&[pool, class])
            .set(i64::from(capacity_gpus));
    }

    /// A pool's running totals, as accounted in its status.
    pub fn pool_accounted(
        &self,
        pool: &str,
        currency: &str,
        harvestable_gpu_hours: f64,
        lent_gpu_hours: f64,
        revenue: f64,
    ) {
        advance(
            &self.totals.pool_gpu_seconds.with_label_values(&[pool, "harvestable"]),
            harvestable_gpu_hours * 3600.0,
        );
        advance(
            &self.totals.pool_gpu_seconds.with_label_values(&[pool, "lent"]),
            lent_gpu_hours * 3600.0,
        );
        let mut exported = self.exported.lock().expect("metrics lock");
        let e = exported.entry(pool.to_string()).or_default();
        if let Some(old) = e.currency.replace(currency.to_string())
            && old != currency
        {
            let _ = self.totals.pool_revenue.remove_label_values(&[pool, &old]);
        }
        advance(&self.totals.pool_revenue.with_label_values(&[pool, currency]), revenue);
    }

    /// Drops every series of a deleted pool.
    pub fn pool_deleted(&self, pool: &str) {
        let removed = self.exported.lock().expect("metrics lock").remove(pool);
        if let Some(e) = removed {
            for ((ns, name), currency) in &e.leases {
                let _ = self.totals.lease_gpu_seconds.remove_label_values(&[pool, ns, name]);
                let _ = self.totals.lease_cost.remove_label_values(&[pool, ns, name, currency]);
            }
            for class in &e.classes {
                let _ = self.internal_pending_gpus.remove_label_values(&[pool, class]);
                let _ = self.internal_demand.remove_label_values(&[pool, class]);
                let _ = self.capacity.remove_label_values(&[pool, class]);
            }
            if let Some(c) = &e.currency {
                let _ = self.totals.pool_revenue.remove_label_values(&[pool, c]);
            }
        }
        let _ = self.pool_notice.remove_label_values(&[pool]);
        for state in GPU_STATES {
            let _ = self.gpus.remove_label_values(&[pool, state]);
        }
        for phase in ["Pending", "Bound", "Reclaiming", "Released", "Expired"] {
            let _ = self.leases.remove_label_values(&[pool, phase]);
        }
        for source in SIGNAL_SOURCES {
            let _ = self.signal_sample_timestamp.remove_label_values(&[pool, source]);
        }
    }
}

/// Moves a counter up to a running total kept elsewhere; a total never goes down, so a lower one (an older
/// status read again) leaves the counter where it is.
fn advance(counter: &Counter, total: f64) {
    let delta = total - counter.get();
    if delta > 0.0 {
        counter.inc_by(delta);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::LeasePhase;

    #[test]
    fn renders_with_the_sublet_prefix_and_the_process_metrics() {
        let m = Metrics::new();
        m.gpus.with_label_values(&["a100", "lent"]).set(16);
        m.write("node", true);
        let text = m.render();
        assert!(text.contains("sublet_gpus{pool=\"a100\",state=\"lent\"} 16"), "{text}");
        assert!(text.contains("sublet_api_writes_total{kind=\"node\",outcome=\"ok\"} 1"));
        assert!(text.contains("sublet_build_info{version=\""), "{text}");
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
        assert!(text.contains("\nprocess_cpu_seconds_total "), "{text}");
    }

    #[test]
    fn counters_are_present_at_zero_before_anything_happened() {
        let m = Metrics::new();
        let text = m.render();
        assert!(
            text.contains("sublet_api_writes_total{kind=\"eviction\",outcome=\"error\"} 0"),
            "{text}"
        );
        m.pool_seen("a100", &["kube", "invalid_spec"]);
        let text = m.render();
        for series in [
            "sublet_notices_total{pool=\"a100\"} 0",
            "sublet_reconciles_total{pool=\"a100\"} 0",
            "sublet_evictions_total{outcome=\"deleted\",pool=\"a100\"} 0",
            "sublet_reconcile_failures_total{error=\"invalid_spec\",pool=\"a100\"} 0",
            "sublet_pool_gpu_seconds_total{kind=\"lent\",pool=\"a100\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
    }

    #[test]
    fn a_lease_is_labelled_by_tenant_namespace_and_dropped_when_it_ends() {
        let m = Metrics::new();
        m.lease_accounted("a100", "acme", "train", "EUR", 7200.0, 4.5);
        m.lease_accounted("a100", "beta", "infer", "EUR", 60.0, 0.1);
        let text = m.render();
        assert!(
            text.contains(
                "sublet_lease_cost_total{currency=\"EUR\",lease=\"train\",pool=\"a100\",tenant_namespace=\"acme\"} 4.5"
            ),
            "{text}"
        );
        assert!(!text.contains(",namespace=") && !text.contains("{namespace="), "{text}");
        m.leases_ended("a100", &BTreeSet::from([("beta", "infer")]));
        let text = m.render();
        assert!(!text.contains("lease=\"train\""), "{text}");
        assert!(text.contains("lease=\"infer\""), "{text}");
    }

    #[test]
    fn running_totals_never_go_down_and_are_in_seconds() {
        let m = Metrics::new();
        m.pool_accounted("a100", "USD", 2.0, 1.0, 10.0);
        m.pool_accounted("a100", "USD", 1.5, 1.0, 9.0);
        let text = m.render();
        assert!(
            text.contains("sublet_pool_gpu_seconds_total{kind=\"harvestable\",pool=\"a100\"} 7200"),
            "{text}"
        );
        assert!(
            text.contains("sublet_pool_revenue_total{currency=\"USD\",pool=\"a100\"} 10"),
            "{text}"
        );
    }

    #[test]
    fn leases_by_phase_and_pending_classes_read_zero_when_gone() {
        let m = Metrics::new();
        m.lease_phases("a100", &[LeasePhase::Bound, LeasePhase::Bound, LeasePhase::Pending]);
        m.internal_pending("a100", &[("H100".to_string(), 8)].into());
        m.internal_pending("a100", &Default::default());
        let text = m.render();
        assert!(
            text.contains("sublet_leases{phase=\"Bound\",pool=\"a100\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("sublet_leases{phase=\"Expired\",pool=\"a100\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("sublet_internal_pending_gpus{class=\"H100\",pool=\"a100\"} 0"),
            "{text}"
        );
        m.pool_deleted("a100");
        assert!(!m.render().contains("pool=\"a100\""));
    }

    #[test]
    fn reclaim_buckets_are_fine_around_the_notice() {
        let m = Metrics::new();
        m.reclaim_latency.with_label_values(&["a100"]).observe(130.0);
        let text = m.render();
        assert!(
            text.contains("sublet_reclaim_latency_seconds_bucket{pool=\"a100\",le=\"120\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("sublet_reclaim_latency_seconds_bucket{pool=\"a100\",le=\"150\"} 1"),
            "{text}"
        );
    }
}
