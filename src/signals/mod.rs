//! Signals: GPU utilization and internal demand from outside the pool's own objects, fetched once per pass.
//!
//! ```text
//!   TenantPool spec ──▶ Sources::fetch ──┬─ utilization.rs  Prometheus (DCGM series) ─▶ node → Utilization
//!                       (concurrently,   ├─ kueue.rs        Workloads waiting in named ClusterQueues ─▶ Demand
//!                        each bounded)   ├─ promql.rs       the pool's PromQL query ─▶ Demand
//!                                        └─ history.rs      sublet's own demand series, read back ─▶ DemandHistory
//!                                        ▼
//!                                     Readings ──apply()──▶ Snapshot { nodes[].utilization, demand, signals,
//!                                                                      history }
//! ```
//! A source that fails (unreachable, timed out, refused) makes the pool's signals not fresh, with the reason;
//! its demand is left out, so a missing signal can never drive a reclaim, and without fresh utilization the
//! planner lends nothing new. A history that cannot be read is reported apart (`ReserveLearned`): the
//! planner then holds every free GPU from lending, but reclaims nothing for it. Pending pods come from the API caches and are always counted by the planner.

pub mod history;
pub mod kueue;
pub mod prometheus;
pub mod promql;
pub mod utilization;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;

use self::prometheus::{PromError, Prometheus};
use crate::api::TenantPool;
use crate::policy::{Demand, DemandHistory, Signals, Snapshot, Utilization};

/// What one pass learned from the signal sources.
#[derive(Clone, Debug, Default)]
pub struct Readings {
    pub signals: Signals,
    /// Fresh utilization per node name.
    pub utilization: HashMap<String, Utilization>,
    /// Internal demand from Kueue and PromQL, by class.
    pub demand: Demand,
    /// Whether the pool reads utilization at all.
    pub utilization_configured: bool,
    /// The staleness limit, for the reason when no node has a fresh reading.
    pub stale_seconds: i64,
    /// For a pool with a learned reserve: its demand history, or why it cannot be read.
    pub history: Option<Result<Arc<DemandHistory>, String>>,
    /// Per source read without error (`utilization`, `kueue`, `promql`), when its newest sample was taken:
    /// the newest DCGM sample for utilization, the time of the read for sources that are read live.
    pub newest: Vec<(&'static str, Timestamp)>,
}

impl Readings {
    fn fail(&mut self, source: &str, err: impl std::fmt::Display) {
        let why = format!("{source}: {err}");
        self.signals.fresh = false;
        self.signals.reason = Some(match self.signals.reason.take() {
            Some(r) => format!("{r}; {why}"),
            None => why,
        });
    }

    /// Puts the readings into a snapshot observed from the caches. When the pool reads utilization and not
    /// one of its GPU nodes has a fresh reading, the signals are not fresh (the exporter or its scrape is
    /// down), not merely every node busy.
    pub fn apply(mut self, snapshot: &mut Snapshot) {
        let mut members = 0;
        let mut read = 0;
        for node in &mut snapshot.nodes {
            node.utilization = self.utilization.get(&node.name).copied();
            if node.gpus > 0 && snapshot.policy.node_selector.matches(&node.labels) {
                members += 1;
                read += usize::from(node.utilization.is_some());
            }
        }
        if self.utilization_configured && self.signals.fresh && members > 0 && read == 0 {
            let limit = self.stale_seconds;
            self.fail(
                "utilization",
                format!("no DCGM sample newer than {limit}s for any of the pool's {members} nodes"),
            );
        }
        for (class, gpus) in self.demand.by_class {
            snapshot.demand.add(class, gpus);
        }
        snapshot.signals = self.signals;
        match self.history {
            Some(Ok(h)) => snapshot.history = Some(h),
            Some(Err(why)) => snapshot.history_error = Some(why),
            None => {}
        }
    }
}

/// How long one source may take; a pass never waits longer on its signals.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// The signal sources, with Prometheus clients kept per URL so that connections are reused across passes.
pub struct Sources {
    client: kube::Client,
    prometheus: Mutex<HashMap<String, Prometheus>>,
    timeout: Duration,
    /// Per pool, the last failure logged, so that a lasting outage is logged once, not every pass.
    logged: Mutex<HashMap<String, String>>,
    /// Per pool with a learned reserve, the demand history read back so far.
    histories: history::Histories,
}

impl Sources {
    pub fn new(client: kube::Client) -> Self {
        Self::with_timeout(client, TIMEOUT)
    }

    pub fn with_timeout(client: kube::Client, timeout: Duration) -> Self {
        Self {
            client,
            prometheus: Mutex::new(HashMap::new()),
            timeout,
            logged: Mutex::new(HashMap::new()),
            histories: history::Histories::default(),
        }
    }

    fn prometheus(&self, url: &str) -> Result<Prometheus, PromError> {
        let mut map = self.prometheus.lock().expect("prometheus client lock");
        if let Some(p) = map.get(url) {
            return Ok(p.clone());
        }
        let p = Prometheus::new(url, self.timeout)?;
        map.insert(url.to_string(), p.clone());
        Ok(p)
    }

    /// Fetches every source the pool names, concurrently; never fails, but says what failed.
    pub async fn fetch(&self, pool: &TenantPool, now: Timestamp) -> Readings {
        let spec = &pool.spec;
        let class_keys: Vec<&str> = spec
            .node_group_label
            .as_deref()
            .into_iter()
            .chain([spec.gpu_model_label.as_str()])
            .collect();
        let kueue = async {
            let k = spec.demand.kueue.as_ref()?;
            Some(
                kueue::fetch(
                    &self.client,
                    &k.cluster_queues,
                    &spec.gpu_resource_name,
                    &class_keys,
                    self.timeout,
                )
                .await,
            )
        };
        let (util, kueue, promql, history) = tokio::join!(
            self.utilization(spec, now),
            kueue,
            self.promql_demand(spec),
            self.history(pool, now)
        );
        let mut out = Readings {
            utilization_configured: spec.utilization.is_some(),
            stale_seconds: spec.utilization.as_ref().map(|u| u.stale_seconds).unwrap_or(0),
            history,
            ..Readings::default()
        };
        match util {
            Some(Ok(r)) => {
                if !r.stale.is_empty() {
                    tracing::debug!(pool = %spec_name(pool), stale = ?r.stale, "nodes without a fresh utilization sample");
                }
                if let Some(at) = r.by_node.values().map(|u| u.measured_at).max() {
                    out.newest.push(("utilization", at));
                }
                out.utilization = r.by_node;
            }
            Some(Err(e)) => out.fail("utilization", e),
            None => {}
        }
        for (source, label, result) in [
            ("Kueue demand", "kueue", kueue.map(|r| r.map_err(|e| e.to_string()))),
            ("PromQL demand", "promql", promql.map(|r| r.map_err(|e| e.to_string()))),
        ] {
            match result {
                Some(Ok(d)) => {
                    out.newest.push((label, now));
                    for (class, gpus) in d {
                        out.demand.add(class, gpus);
                    }
                }
                Some(Err(e)) => out.fail(source, e),
                None => {}
            }
        }
        self.log(spec_name(pool), out.signals.reason.as_deref());
        out
    }

    /// GPU utilization per node, from the pool's Prometheus; None when the pool names no source.
    async fn utilization(
        &self,
        spec: &crate::api::TenantPoolSpec,
        now: Timestamp,
    ) -> Option<Result<utilization::Readings, PromError>> {
        let src = spec.utilization.as_ref()?;
        let p = match self.prometheus(&src.prometheus_url) {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        let (query, is_default) = match &src.query {
            Some(q) => (q.clone(), false),
            None => (utilization::default_query(&src.node_label, spec.idle.for_seconds), true),
        };
        let fresh_q = utilization::freshness_query(&src.node_label);
        let (values, fresh) = tokio::join!(p.query(&query, None), p.query(&fresh_q, None));
        let (values, fresh) = match (values, fresh) {
            (Ok(v), Ok(f)) => (v, f),
            (Err(e), _) | (_, Err(e)) => return Some(Err(e)),
        };
        // A pool's own query over other metrics has no DCGM series to date it by.
        let freshness = (is_default || !fresh.is_empty()).then_some(fresh.as_slice());
        Some(Ok(utilization::readings(
            &values,
            freshness,
            &src.node_label,
            now,
            src.stale_seconds,
        )))
    }

    /// Internal demand by class from the pool's PromQL query; None when it names none.
    async fn promql_demand(
        &self,
        spec: &crate::api::TenantPoolSpec,
    ) -> Option<Result<std::collections::BTreeMap<Option<String>, u32>, PromError>> {
        let q = spec.demand.promql.as_ref()?;
        let url = q
            .prometheus_url
            .as_deref()
            .or(spec.utilization.as_ref().map(|u| u.prometheus_url.as_str()));
        let Some(url) = url else {
            return Some(Err(PromError::Url {
                url: String::new(),
                reason: "demand.promql names no prometheusUrl and the pool has no utilization source".into(),
            }));
        };
        let p = match self.prometheus(url) {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        Some(
            p.query(&q.query, None)
                .await
                .map(|s| promql::demand(&s, q.class_label.as_deref())),
        )
    }

    /// The demand history a learned reserve reads; None when the pool learns none.
    async fn history(&self, pool: &TenantPool, now: Timestamp) -> Option<Result<Arc<DemandHistory>, String>> {
        let spec = &pool.spec;
        let learned = spec.reserve.learned.as_ref().filter(|l| l.enabled)?;
        let url = learned
            .prometheus_url
            .as_deref()
            .or(spec.utilization.as_ref().map(|u| u.prometheus_url.as_str()));
        let Some(url) = url else {
            return Some(Err(
                "reserve.learned names no prometheusUrl and the pool has no utilization source".to_string(),
            ));
        };
        let p = match self.prometheus(url) {
            Ok(p) => p,
            Err(e) => return Some(Err(e.to_string())),
        };
        let days = learned.history_days.clamp(1, 90) as u32;
        Some(self.histories.read(spec_name(pool), &p, days, now).await)
    }

    fn log(&self, pool: &str, reason: Option<&str>) {
        let mut logged = self.logged.lock().expect("signal log lock");
        match reason {
            Some(why) if logged.get(pool).map(String::as_str) != Some(why) => {
                tracing::warn!(%pool, reason = %why, "signals are not fresh");
                logged.insert(pool.to_string(), why.to_string());
            }
            None if logged.remove(pool).is_some() => tracing::info!(%pool, "signals are fresh again"),
            _ => {}
        }
    }
}

fn spec_name(pool: &TenantPool) -> &str {
    pool.metadata.name.as_deref().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{NodeView, PoolPolicy, SnapshotBuilder};
    use std::sync::Arc;

    fn snapshot() -> Snapshot {
        let mut b = SnapshotBuilder::new(Arc::new(PoolPolicy::with_defaults("p")), Timestamp::UNIX_EPOCH);
        for name in ["a", "b"] {
            b.node(NodeView {
                name: name.into(),
                gpus: 8,
                ready: true,
                ..NodeView::default()
            });
        }
        b.build()
    }

    fn reading(p: f64) -> Utilization {
        Utilization {
            mean_percent: p,
            measured_at: Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn apply_sets_utilization_demand_and_signals() {
        let mut s = snapshot();
        s.demand.add(Some("A100".into()), 1);
        let mut r = Readings {
            utilization_configured: true,
            stale_seconds: 60,
            ..Readings::default()
        };
        r.utilization.insert("a".into(), reading(3.0));
        r.demand.add(Some("A100".into()), 8);
        r.apply(&mut s);
        assert_eq!(s.nodes[0].utilization, Some(reading(3.0)));
        assert_eq!(s.nodes[1].utilization, None);
        assert_eq!(s.demand.by_class[&Some("A100".to_string())], 9);
        assert!(s.signals.fresh);
    }

    #[test]
    fn no_fresh_reading_for_any_node_is_stale() {
        let mut s = snapshot();
        let r = Readings {
            utilization_configured: true,
            stale_seconds: 60,
            ..Readings::default()
        };
        r.apply(&mut s);
        assert!(!s.signals.fresh);
        let reason = s.signals.reason.unwrap();
        assert!(reason.contains("no DCGM sample newer than 60s"), "{reason}");
        // Without a utilization source there is nothing to be stale.
        let mut s = snapshot();
        Readings::default().apply(&mut s);
        assert!(s.signals.fresh);
    }

    #[tokio::test]
    async fn unreachable_sources_give_stale_signals_and_no_demand() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let config = kube::Config::new(url.parse().unwrap());
        let sources = Sources::with_timeout(kube::Client::try_from(config).unwrap(), Duration::from_secs(2));
        let spec: crate::api::TenantPoolSpec = serde_json::from_value(serde_json::json!({
            "utilization": {"prometheusUrl": url},
            "demand": {"promql": {"query": "queue_gpus"}, "kueue": {"clusterQueues": ["gpu"]}},
        }))
        .unwrap();
        let pool = TenantPool::new("p", spec);
        let r = sources.fetch(&pool, Timestamp::now()).await;
        assert!(!r.signals.fresh);
        let reason = r.signals.reason.unwrap();
        for part in [
            "utilization: Prometheus at",
            "unreachable",
            "Kueue demand",
            "PromQL demand",
        ] {
            assert!(reason.contains(part), "{part:?} missing from {reason}");
        }
        assert!(r.demand.by_class.is_empty());
        assert!(r.utilization.is_empty());
        // A pool without sources has fresh signals and fetches nothing.
        let pool = TenantPool::new("q", serde_json::from_value(serde_json::json!({})).unwrap());
        let r = sources.fetch(&pool, Timestamp::now()).await;
        assert!(r.signals.fresh && r.demand.by_class.is_empty());
    }

    #[test]
    fn failures_join_their_reasons() {
        let mut r = Readings::default();
        r.fail("utilization", "down");
        r.fail("Kueue demand", "forbidden");
        assert!(!r.signals.fresh);
        assert_eq!(
            r.signals.reason.as_deref(),
            Some("utilization: down; Kueue demand: forbidden")
        );
    }
}
