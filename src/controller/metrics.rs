//! The controller's Prometheus metrics, in one registry served on `/metrics`.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric sublet exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// GPUs by pool and state (internal, lendable, lent, leased, reclaiming).
    pub gpus: IntGaugeVec,
    pub notices: IntCounterVec,
    /// Evictions by pool and outcome (evicted, blocked, deleted, failed).
    pub evictions: IntCounterVec,
    /// Seconds from internal demand seen to a node back in internal use.
    pub reclaim_latency: HistogramVec,
    pub lease_gpu_seconds: GaugeVec,
    pub lease_cost: GaugeVec,
    pub pool_gpu_hours: GaugeVec,
    pub pool_revenue: GaugeVec,
    pub reconciles: IntCounterVec,
    /// Reconcile failures by pool and error kind.
    pub reconcile_failures: IntCounterVec,
    pub reconcile_duration: HistogramVec,
    /// API writes by kind (node, pod, eviction, status, event) and outcome.
    pub api_writes: IntCounterVec,
    /// 1 while this replica holds the leader lease.
    pub leader: IntGauge,
    /// Internal demand (GPUs used and waited for) by pool and class: the history the learned reserve reads
    /// back from Prometheus.
    pub internal_demand: IntGaugeVec,
    /// GPUs of member nodes by pool and class.
    pub capacity: IntGaugeVec,
    /// Nodes whose sublet marks disagreed with sublet's record and were put right, by pool and what differed
    /// (taints, deadline).
    pub marks_repaired: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("sublet".into()), None).expect("valid prefix");
        let gpus = IntGaugeVec::new(Opts::new("gpus", "GPUs by pool and state"), &["pool", "state"]).unwrap();
        let notices =
            IntCounterVec::new(Opts::new("notices_total", "Reclaim notices given, per node"), &["pool"]).unwrap();
        let evictions = IntCounterVec::new(
            Opts::new("evictions_total", "Tenant pod evictions by outcome"),
            &["pool", "outcome"],
        )
        .unwrap();
        let reclaim_latency = HistogramVec::new(
            HistogramOpts::new(
                "reclaim_latency_seconds",
                "From internal demand seen to a node back in internal use",
            )
            .buckets(vec![1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0, 1800.0]),
            &["pool"],
        )
        .unwrap();
        let lease_gpu_seconds = GaugeVec::new(
            Opts::new(
                "lease_gpu_seconds",
                "GPU-seconds a lease has used, as accounted in its status",
            ),
            &["pool", "namespace", "lease"],
        )
        .unwrap();
        let lease_cost = GaugeVec::new(
            Opts::new("lease_cost", "What a lease has cost, in the pool's currency"),
            &["pool", "namespace", "lease"],
        )
        .unwrap();
        let pool_gpu_hours = GaugeVec::new(
            Opts::new(
                "pool_gpu_hours",
                "GPU-hours a pool could have lent (harvestable) and lent",
            ),
            &["pool", "kind"],
        )
        .unwrap();
        let pool_revenue = GaugeVec::new(Opts::new("pool_revenue", "Revenue from a pool's leases"), &["pool"]).unwrap();
        let reconciles = IntCounterVec::new(Opts::new("reconciles_total", "Pool reconciles"), &["pool"]).unwrap();
        let reconcile_failures = IntCounterVec::new(
            Opts::new("reconcile_failures_total", "Failed pool reconciles"),
            &["pool", "error"],
        )
        .unwrap();
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new(
                "reconcile_duration_seconds",
                "Time to observe, plan, execute and report a pool",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]),
            &["pool"],
        )
        .unwrap();
        let api_writes = IntCounterVec::new(
            Opts::new("api_writes_total", "API writes by kind and outcome"),
            &["kind", "outcome"],
        )
        .unwrap();
        let leader = IntGauge::new("leader", "1 while this replica holds the leader lease").unwrap();
        let internal_demand = IntGaugeVec::new(
            Opts::new(
                "internal_demand_gpus",
                "Internal demand: GPUs internal work uses and waits for, by pool and class",
            ),
            &["pool", "class"],
        )
        .unwrap();
        let capacity = IntGaugeVec::new(
            Opts::new("pool_capacity_gpus", "GPUs of a pool's member nodes, by class"),
            &["pool", "class"],
        let marks_repaired = IntCounterVec::new(
            Opts::new(
                "node_marks_repaired_total",
                "Nodes whose sublet.dev/ marks disagreed with sublet's record and were put right",
            ),
            &["pool", "mark"],
        )
        .unwrap();
        for m in [
            Box::new(gpus.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(notices.clone()),
            Box::new(evictions.clone()),
            Box::new(reclaim_latency.clone()),
            Box::new(lease_gpu_seconds.clone()),
            Box::new(lease_cost.clone()),
            Box::new(pool_gpu_hours.clone()),
            Box::new(pool_revenue.clone()),
            Box::new(reconciles.clone()),
            Box::new(reconcile_failures.clone()),
            Box::new(reconcile_duration.clone()),
            Box::new(api_writes.clone()),
            Box::new(leader.clone()),
            Box::new(internal_demand.clone()),
            Box::new(capacity.clone()),
            Box::new(marks_repaired.clone()),
        ] {
            registry.register(m).expect("metric names are unique");
        }
        Self {
            registry,
            gpus,
            notices,
            evictions,
            reclaim_latency,
            lease_gpu_seconds,
            lease_cost,
            pool_gpu_hours,
            pool_revenue,
            reconciles,
            reconcile_failures,
            reconcile_duration,
            api_writes,
            leader,
            internal_demand,
            capacity,
            marks_repaired,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding never fails");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }

    /// Counts an API write.
    pub fn write(&self, kind: &str, ok: bool) {
        self.api_writes
            .with_label_values(&[kind, if ok { "ok" } else { "error" }])
            .inc();
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

    #[test]
    fn renders_with_the_sublet_prefix() {
        let m = Metrics::new();
        m.gpus.with_label_values(&["a100", "lent"]).set(16);
        m.write("node", true);
        let text = m.render();
        assert!(text.contains("sublet_gpus{pool=\"a100\",state=\"lent\"} 16"), "{text}");
        assert!(text.contains("sublet_api_writes_total{kind=\"node\",outcome=\"ok\"} 1"));
    }
}
