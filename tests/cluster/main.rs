//! The integration tests that run against an API server (the sandbox, in process or over HTTP): the
//! controller's life cycle, the demo, the sandbox with the real kubectl and kube-rs, the signals with the real
//! Prometheus, and the rendered chart applied in RBAC mode. One binary, so the crate is linked once for them all.

#[path = "../support/mod.rs"]
mod support;

mod billing;
mod chaos;
mod chart_sandbox;
mod cluster_life;
mod control_plane;
mod controller;
mod crd;
mod demo;
mod demo_checker;
mod differential;
mod kubectl_view;
mod metrics_prometheus;
mod modes;
mod node_health;
mod sandbox_kube;
mod sandbox_kubectl;
mod sandbox_local;
mod scrub;
mod signals_kueue;
mod signals_prometheus;
