//! The integration tests that need no API server: the CRDs, the planner's properties, the simulator, the Helm
//! chart rendered with the real helm, and the sandbox's pure pieces held against the real kubectl (`kubectl
//! patch --local`, and kubectl reading fixed answers). One binary, so the crate is linked once for them all.

#[path = "../support/mod.rs"]
mod support;

mod admission_kubectl;
mod chart;
mod cli_output;
mod patch_kubectl;
mod policy_props;
mod simulate;
