//! The sandbox Kubernetes API server (tests and `sublet demo`).

pub mod patch;
