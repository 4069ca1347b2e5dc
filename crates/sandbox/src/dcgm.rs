//! A DCGM-format exporter for the sandbox's simulated GPU nodes, for Prometheus to scrape.
//!
//! ```text
//!   nodes in the sandbox (allocatable GPUs, model label) ─┐
//!   utilization set per node / GPU through the handle  ───┼─▶ render() ─▶ GET /metrics (text format 0.0.4)
//!   extra gauges (an internal queue's depth, say)      ───┘        on its own loopback listener
//! ```
//! Series carry dcgm-exporter's real metric and label names: `DCGM_FI_DEV_GPU_UTIL` (percent) and
//! `DCGM_FI_PROF_GR_ENGINE_ACTIVE` (a 0–1 ratio), labelled `gpu`, `UUID`, `pci_bus_id`, `device`,
//! `modelName`, `Hostname` (or `hostname`, as newer exporters write it) and `DCGM_FI_DRIVER_VERSION`.
//! Nodes are read from the cluster on each scrape, so nodes added or removed show up as they would.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::rt::TokioIo;

use super::{LocalApi, SandboxError, SandboxHandle, listen};

pub(crate) const GPU_UTIL: &str = "DCGM_FI_DEV_GPU_UTIL";
pub(crate) const GR_ENGINE_ACTIVE: &str = "DCGM_FI_PROF_GR_ENGINE_ACTIVE";
const DRIVER_VERSION: &str = "570.124.06";

/// How the exporter runs.
#[derive(Clone, Debug)]
pub struct DcgmConfig {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The extended resource that counts a node's GPUs.
    pub gpu_resource: String,
    /// The node label whose value becomes `modelName`.
    pub model_label: String,
    /// Label series with `hostname` (newer exporters) instead of `Hostname`.
    pub lowercase_hostname: bool,
}

impl Default for DcgmConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            gpu_resource: "nvidia.com/gpu".into(),
            model_label: "nvidia.com/gpu.product".into(),
            lowercase_hostname: false,
        }
    }
}

/// One GPU as the exporter reports it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Gpu {
    pub node: String,
    pub index: u32,
    pub model: String,
    /// Percent, 0–100.
    pub utilization: f64,
}

/// A gauge outside DCGM's set, served alongside.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Gauge {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Default)]
struct Values {
    per_node: BTreeMap<String, f64>,
    gauges: BTreeMap<(String, Vec<(String, String)>), f64>,
}

struct State {
    config: DcgmConfig,
    local: LocalApi,
    values: Mutex<Values>,
}

/// A running exporter; it stops when dropped or shut down.
pub struct DcgmExporter {
    state: Arc<State>,
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    /// Ends open connections too: Prometheus keeps its scrape connection alive.
    stop: tokio::sync::watch::Sender<bool>,
}

impl SandboxHandle {
    /// Starts a DCGM exporter over this sandbox's nodes.
    pub async fn start_dcgm_exporter(&self, config: DcgmConfig) -> Result<DcgmExporter, SandboxError> {
        DcgmExporter::start(self.local(), config).await
    }
}

impl DcgmExporter {
    pub async fn start(local: LocalApi, config: DcgmConfig) -> Result<Self, SandboxError> {
        let (listener, address) = listen(config.listen).await?;
        let state = Arc::new(State {
            config,
            local,
            values: Mutex::new(Values::default()),
        });
        let serving = state.clone();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = serving.clone();
                let mut stop = stop_rx.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, req.uri().path())) }
                    });
                    let conn =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = stop.wait_for(|s| *s) => {}
                    }
                });
            }
        });
        tracing::info!(%address, "DCGM exporter listening");
        Ok(Self {
            state,
            address,
            task,
            stop,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The scrape URL.
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.address)
    }

    /// Sets every GPU of a node to `percent` (clamped to 0–100).
    pub fn set_node_utilization(&self, node: &str, percent: f64) {
        let mut v = self.state.values.lock().expect("dcgm values lock");
        v.per_node.insert(node.to_string(), clamp(percent));
    }

    /// Serves `name{labels} value` as a gauge alongside the DCGM series; replaces the same name and labels.
    pub fn set_gauge(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        let mut labels: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        labels.sort();
        let mut v = self.state.values.lock().expect("dcgm values lock");
        v.gauges.insert((name.to_string(), labels), value);
    }

    /// The exposition text the next scrape answers.
    pub fn render(&self) -> String {
        self.state.render()
    }

    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for DcgmExporter {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

fn clamp(p: f64) -> f64 {
    if p.is_nan() { 0.0 } else { p.clamp(0.0, 100.0) }
}

impl State {
    fn gpus(&self) -> Vec<Gpu> {
        let nodes = self.local.list("v1", "nodes", None, "", "").unwrap_or_default();
        let values = self.values.lock().expect("dcgm values lock");
        let mut out = Vec::new();
        for node in nodes {
            let Some(name) = node.pointer("/metadata/name").and_then(|v| v.as_str()) else {
                continue;
            };
            let count = node
                .pointer("/status/allocatable")
                .and_then(|a| a.get(&self.config.gpu_resource))
                .and_then(|q| q.as_str())
                .and_then(|q| q.parse::<u32>().ok())
                .unwrap_or(0);
            let model = node
                .pointer("/metadata/labels")
                .and_then(|l| l.get(&self.config.model_label))
                .and_then(|m| m.as_str())
                .unwrap_or("NVIDIA GPU");
            for index in 0..count {
                let utilization = values.per_node.get(name).copied().unwrap_or(0.0);
                out.push(Gpu {
                    node: name.to_string(),
                    index,
                    model: model.to_string(),
                    utilization,
                });
            }
        }
        out
    }

    fn render(&self) -> String {
        let gauges: Vec<Gauge> = {
            let v = self.values.lock().expect("dcgm values lock");
            v.gauges
                .iter()
                .map(|((name, labels), value)| Gauge {
                    name: name.clone(),
                    labels: labels.iter().cloned().collect(),
                    value: *value,
                })
                .collect()
        };
        let label = if self.config.lowercase_hostname {
            "hostname"
        } else {
            "Hostname"
        };
        render(&self.gpus(), label, &gauges)
    }
}

fn answer(state: &State, path: &str) -> Response<Full<Bytes>> {
    let (status, body) = if path == "/metrics" {
        (StatusCode::OK, state.render())
    } else {
        (
            StatusCode::NOT_FOUND,
            "not found: the exporter serves /metrics\n".to_string(),
        )
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// A stable, UUID-shaped id for a simulated GPU.
fn uuid(node: &str, index: u32) -> String {
    // FNV-1a, twice with different seeds, for 128 bits that depend only on node and index.
    let hash = |seed: u64| {
        let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
        for b in node.bytes().chain(index.to_le_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    };
    let (a, b) = (hash(1), hash(2));
    format!(
        "GPU-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// Escapes a label value for the text exposition format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{v}")
    }
}

/// The exposition text for `gpus`, their node under `hostname_label`, then the extra gauges.
pub(crate) fn render(gpus: &[Gpu], hostname_label: &str, gauges: &[Gauge]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let series = |out: &mut String, name: &str, value: &dyn Fn(&Gpu) -> f64| {
        for g in gpus {
            let _ = writeln!(
                out,
                "{name}{{gpu=\"{i}\",UUID=\"{uuid}\",pci_bus_id=\"00000000:{bus:02X}:00.0\",device=\"nvidia{i}\",modelName=\"{model}\",{hostname_label}=\"{host}\",DCGM_FI_DRIVER_VERSION=\"{DRIVER_VERSION}\"}} {v}",
                i = g.index,
                uuid = uuid(&g.node, g.index),
                bus = 7 + g.index * 8 % 0xf0,
                model = escape(&g.model),
                host = escape(&g.node),
                v = number(value(g)),
            );
        }
    };
    out.push_str(&format!(
        "# HELP {GPU_UTIL} GPU utilization (in %).\n# TYPE {GPU_UTIL} gauge\n"
    ));
    series(&mut out, GPU_UTIL, &|g| g.utilization.round());
    out.push_str(&format!(
        "# HELP {GR_ENGINE_ACTIVE} Ratio of time the graphics engine is active.\n# TYPE {GR_ENGINE_ACTIVE} gauge\n"
    ));
    series(&mut out, GR_ENGINE_ACTIVE, &|g| g.utilization / 100.0);
    let mut typed = std::collections::BTreeSet::new();
    for g in gauges {
        if typed.insert(g.name.as_str()) {
            let _ = writeln!(out, "# TYPE {} gauge", g.name);
        }
        let labels: Vec<String> = g.labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
        let _ = writeln!(out, "{}{{{}}} {}", g.name, labels.join(","), number(g.value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(node: &str, index: u32, utilization: f64) -> Gpu {
        Gpu {
            node: node.into(),
            index,
            model: "NVIDIA A100-SXM4-80GB".into(),
            utilization,
        }
    }

    #[test]
    fn renders_dcgm_names_and_labels() {
        let text = render(&[gpu("node-1", 0, 80.4), gpu("node-1", 1, 0.0)], "Hostname", &[]);
        let util: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("DCGM_FI_DEV_GPU_UTIL{"))
            .collect();
        assert_eq!(util.len(), 2);
        assert!(util[0].contains("gpu=\"0\""));
        assert!(util[0].contains("device=\"nvidia0\""));
        assert!(util[0].contains("modelName=\"NVIDIA A100-SXM4-80GB\""));
        assert!(util[0].contains("Hostname=\"node-1\""));
        assert!(util[0].contains("UUID=\"GPU-"));
        assert!(util[0].ends_with("} 80"), "{}", util[0]);
        let prof = text
            .lines()
            .find(|l| l.starts_with("DCGM_FI_PROF_GR_ENGINE_ACTIVE{gpu=\"0\""))
            .unwrap();
        assert!(prof.ends_with(" 0.804"), "{prof}");
        assert!(text.contains("# TYPE DCGM_FI_DEV_GPU_UTIL gauge"));
        // UUIDs are stable and distinct per GPU.
        assert_eq!(uuid("node-1", 0), uuid("node-1", 0));
        assert_ne!(uuid("node-1", 0), uuid("node-1", 1));
        assert_eq!(uuid("n", 3).len(), "GPU-".len() + 36);
    }

    #[test]
    fn lowercase_hostname_switch() {
        let text = render(&[gpu("node-1", 0, 1.0)], "hostname", &[]);
        assert!(text.contains("hostname=\"node-1\""));
        assert!(!text.contains("Hostname="));
    }

    #[test]
    fn gauges_and_escaping() {
        let gauges = [
            Gauge {
                name: "queue_pending_gpus".into(),
                labels: [("model".to_string(), "A\"100\\x".to_string())].into(),
                value: 8.0,
            },
            Gauge {
                name: "queue_pending_gpus".into(),
                labels: BTreeMap::new(),
                value: f64::NAN,
            },
        ];
        let text = render(&[], "Hostname", &gauges);
        assert_eq!(text.matches("# TYPE queue_pending_gpus gauge").count(), 1);
        assert!(
            text.contains("queue_pending_gpus{model=\"A\\\"100\\\\x\"} 8\n"),
            "{text}"
        );
        assert!(text.contains("queue_pending_gpus{} NaN\n"));
    }

    #[tokio::test]
    async fn serves_the_nodes_of_the_sandbox() {
        let sandbox = super::super::Sandbox::start(super::super::SandboxConfig::default())
            .await
            .unwrap();
        let local = sandbox.local();
        let node = serde_json::json!({
            "metadata": {"name": "gpu-1", "labels": {"nvidia.com/gpu.product": "NVIDIA-H100"}},
            "status": {"allocatable": {"nvidia.com/gpu": "2"}}
        });
        local.create("v1", "nodes", None, node).unwrap();
        let exporter = sandbox.start_dcgm_exporter(DcgmConfig::default()).await.unwrap();
        exporter.set_node_utilization("gpu-1", 50.0);
        let gpus = exporter.state.gpus();
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[1].utilization, 50.0);
        assert_eq!(gpus[0].model, "NVIDIA-H100");
        exporter.set_node_utilization("gpu-1", 150.0);
        assert_eq!(exporter.state.gpus()[0].utilization, 100.0, "clamped");
        assert!(exporter.render().contains("Hostname=\"gpu-1\""));
        exporter.shutdown().await;
        let lowercase = DcgmConfig {
            lowercase_hostname: true,
            ..DcgmConfig::default()
        };
        let exporter = sandbox.start_dcgm_exporter(lowercase).await.unwrap();
        assert!(exporter.render().contains("hostname=\"gpu-1\""));
        exporter.shutdown().await;
        sandbox.shutdown().await;
    }
}
