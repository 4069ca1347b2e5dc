//! The `sublet` command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// sublet lends idle GPU nodes of a Kubernetes cluster to outside tenants and takes them back, with
/// notice, when internal work needs them.
#[derive(Parser, Debug)]
#[command(name = "sublet", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// How log lines are written: `plain` for people, `json` for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Plain, env = "SUBLET_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// The format of log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Plain,
    /// One JSON object per event.
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Prints sublet's CustomResourceDefinitions as YAML, or writes one file per CRD into a folder.
    Crd(CrdArgs),
    /// Serves a Kubernetes API for tests and demos on a loopback port until interrupted, and writes a
    /// kubeconfig that points kubectl at it.
    Sandbox(SandboxArgs),
}

/// Arguments of `sublet sandbox`.
#[derive(clap::Args, Debug)]
pub struct SandboxArgs {
    /// The address to listen on; port 0 picks a free port, which the kubeconfig then names.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:6443")]
    pub listen: std::net::SocketAddr,
    /// Where to write the kubeconfig for the sandbox's admin user.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: PathBuf,
    /// Authorizes every request with RBAC, as a real cluster does; without it every request is allowed.
    #[arg(long)]
    pub rbac: bool,
    /// Reads fault-injection rules (YAML) from this file; they can be changed later at /sandbox/faults.
    #[arg(long, value_name = "FILE")]
    pub faults: Option<PathBuf>,
}

/// Arguments of `sublet crd`.
#[derive(clap::Args, Debug)]
pub struct CrdArgs {
    /// Writes one file per CRD into this folder instead of printing them all to standard output.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
}
