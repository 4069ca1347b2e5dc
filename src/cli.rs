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
}

/// Arguments of `sublet crd`.
#[derive(clap::Args, Debug)]
pub struct CrdArgs {
    /// Writes one file per CRD into this folder instead of printing them all to standard output.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
}
