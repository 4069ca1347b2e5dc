//! The sandbox API server: a Kubernetes API server for tests and `sublet demo`.
//!
//! This branch holds the pure admission pieces the server calls:
//!
//! ```text
//!   request ──rbac::authorize──▶ vap::admit ──schema (custom resources)──▶ store
//!   list/get with Accept: ...;as=Table ──table──▶ meta.k8s.io/v1 Table
//! ```

pub mod rbac;
pub mod schema;
pub mod table;
pub mod vap;
