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
    /// Runs the controller (`sublet run`, as a child process) against an embedded sandbox through many
    /// lend → bind → notice → evict → return cycles, several at once, while it is killed at random and at
    /// chosen points, API writes fail, nodes are deleted and registered again or go NotReady, leases churn and the pool's
    /// mode flips; an independent watch checks the rules 1–3 (README), deadlines, notices, evictions, billing to
    /// the second, pool totals and reclaim latency. Exits 3 on any violation.
    #[cfg(feature = "demo")]
    Chaos(ChaosArgs),
    /// Not in this build (see `NOT_BUILT`).
    #[cfg(not(feature = "demo"))]
    #[command(hide = true, disable_help_flag = true)]
    Chaos(NotBuilt),
    /// Prints sublet's CustomResourceDefinitions as YAML, or writes one file per CRD into a folder.
    Crd(CrdArgs),
    /// Runs sublet end to end on this machine, no cluster needed: a sandbox API server with simulated GPU
    /// nodes, internal work from a trace (or a synthetic day), tenants leasing nodes, and the real
    /// controller; writes a kubeconfig for kubectl, shows a live view, and ends with a summary.
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
    /// Not in this build (see `NOT_BUILT`).
    #[cfg(not(feature = "demo"))]
    #[command(hide = true, disable_help_flag = true)]
    Demo(NotBuilt),
    /// Runs the operator against a Kubernetes API server: lends idle GPU nodes, binds leases, gives notice,
    /// evicts at the deadline and returns nodes, for every TenantPool.
    Run(RunArgs),
    /// Serves a Kubernetes API for tests and demos on a loopback port until interrupted, and writes a
    /// kubeconfig that points kubectl at it.
    #[cfg(feature = "demo")]
    Sandbox(SandboxArgs),
    /// Not in this build (see `NOT_BUILT`).
    #[cfg(not(feature = "demo"))]
    #[command(hide = true, disable_help_flag = true)]
    Sandbox(NotBuilt),
    /// Replays a trace of internal demand through the planner, next to an oracle and baselines, and reports
    /// harvest, the delay lending adds to internal work, notices, evictions and revenue.
    Simulate(SimulateArgs),
}

/// Arguments of `sublet run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The kubeconfig to use; by default $KUBECONFIG, ~/.kube/config, or the in-cluster service account.
    #[arg(long, value_name = "FILE", env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Where /metrics, /livez and /readyz listen.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: std::net::SocketAddr,
    /// Whether replicas elect a leader on a coordination.k8s.io Lease (only the leader writes).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub leader_elect: bool,
    /// The namespace of the leader Lease; by default the pod's own namespace, or `default`.
    #[arg(long, value_name = "NAMESPACE", env = "POD_NAMESPACE")]
    pub leader_elect_namespace: Option<String>,
    /// The name of the leader Lease.
    #[arg(long, value_name = "NAME", default_value = "sublet-leader")]
    pub leader_elect_name: String,
    /// This replica's name in the leader Lease; by default the pod name or host name.
    #[arg(long, value_name = "NAME", env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds the leader Lease stays valid without renewal; another replica takes over after that.
    #[arg(long, value_name = "SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=600))]
    pub leader_elect_duration: u64,
    /// Seconds between periodic passes (the time-based rules: deadlines, windows, cool-downs).
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub tick: f64,
    /// Serve /metrics only to callers the API server authenticates (TokenReview) and allows `get` on the
    /// non-resource URL /metrics (SubjectAccessReview); /livez and /readyz stay open.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub metrics_auth: bool,
    /// Keep the NetworkPolicy `sublet-tenant-network` in every tenant namespace: ingress from the namespace's
    /// own pods only; egress to its own pods, the cluster DNS and the internet but --tenant-denied-cidrs and
    /// the cloud metadata address.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub tenant_network_policy: bool,
    /// CIDRs tenant pods may not reach: the cluster's pod, service and node CIDRs and the API server.
    #[arg(long, value_name = "CIDR,...", value_delimiter = ',')]
    pub tenant_denied_cidrs: Vec<String>,
    /// The namespace of the cluster DNS pods tenant pods may query on port 53; none when empty.
    #[arg(long, value_name = "NAMESPACE")]
    pub tenant_dns_namespace: Option<String>,
    /// The labels of the cluster DNS pods.
    #[arg(long, value_name = "KEY=VALUE,...", value_delimiter = ',')]
    pub tenant_dns_labels: Vec<String>,
}

/// What `sublet demo` and `sublet sandbox` answer in a build without the `demo` feature (the operator image).
#[cfg(not(feature = "demo"))]
pub const NOT_BUILT: &str = "this build of sublet has no demo: `sublet demo` and `sublet sandbox` need the \
    `demo` feature, which the operator image leaves out (it ships no API server); build with the default \
    features to get them, e.g. `cargo run --release -- demo`";

/// The arguments of a command this build does not have, taken whole so that any of them gets `NOT_BUILT`
/// instead of a parse error.
#[cfg(not(feature = "demo"))]
#[derive(clap::Args, Debug)]
pub struct NotBuilt {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub args: Vec<String>,
}

/// Arguments of `sublet sandbox`.
#[cfg(feature = "demo")]
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

/// Arguments of `sublet chaos`.
#[cfg(feature = "demo")]
#[derive(clap::Args, Debug)]
pub struct ChaosArgs {
    /// Lend → bind → notice → evict → return cycles to run.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub cycles: u64,
    /// Seed of every random choice (kills, faults, node deletions, mode flips, the cycles' timing).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The perturbations, comma-separated; `none` for none.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "kills,faults,lease-churn,node-delete,node-not-ready,mode-flips"
    )]
    pub perturb: Vec<PerturbArg>,
    /// Cycles at once; the cluster has as many nodes.
    #[arg(long, value_name = "N", default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=200))]
    pub parallel: u32,
    /// The pool's reclaim notice, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 3, value_parser = clap::value_parser!(i64).range(0..=600))]
    pub notice: i64,
    /// The pool's idle window, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 2, value_parser = clap::value_parser!(i64).range(0..=600))]
    pub idle: i64,
    /// Writes the report as JSON to this file (`-` for standard output, after the text).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Appends the controller's log to this file (every start of it).
    #[arg(long, value_name = "FILE")]
    pub controller_log: Option<PathBuf>,
}

/// One perturbation of `sublet chaos --perturb`.
#[cfg(feature = "demo")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PerturbArg {
    /// SIGKILL the controller at random and 0–80 ms after chosen writes (notice, eviction, return, lease
    /// deletion, internal demand), and start it again.
    Kills,
    /// Answer a share of API writes with 500, 409 or 429 (the sandbox's fault injection).
    Faults,
    /// Delete nodes (leased ones first) and register them again a moment later.
    NodeDelete,
    /// Stop a node's kubelet (a leased node's first) for 2–6 s: the node goes NotReady, then Ready again.
    NodeNotReady,
    /// Reuse lease names as soon as they are free, and delete some leases the moment they are bound.
    LeaseChurn,
    /// Switch the pool to Observe for a moment and back to Enforce, now and then.
    ModeFlips,
    /// No perturbation.
    None,
}

/// Arguments of `sublet simulate`.
#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// A folder of Helios per-VC minute files (`*_cluster_sequence_vc.csv`), or a CSV file with the columns
    /// `time,group,capacity_gpus,demand_gpus` and optionally `gpus_per_node` (see the README).
    #[arg(value_name = "TRACE")]
    pub trace: PathBuf,

    /// A TenantPool YAML for the `sublet` policy. Without it: the defaults of an empty TenantPool spec,
    /// priced at 2.00 per GPU-hour.
    #[arg(long, value_name = "FILE")]
    pub pool: Option<PathBuf>,

    /// A `static-N` baseline lending N% of each group for good; repeat for several.
    #[arg(long = "static", value_name = "PERCENT", default_values_t = [50u32],
          value_parser = clap::value_parser!(u32).range(0..=100))]
    pub static_percents: Vec<u32>,

    /// Tenant demand as YAML (lease arrivals per hour, GPUs per lease, duration distribution, price cap; see
    /// the README). Without it every lent node is leased at once.
    #[arg(long, value_name = "FILE")]
    pub tenants: Option<PathBuf>,

    /// Seconds a tenant pod evicted at the deadline takes to be gone (its termination grace period); the node
    /// returns to internal use after it. 0: pods evicted at the deadline are gone at once.
    #[arg(long, value_name = "SECONDS", default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..=86400))]
    pub eviction_grace: i64,

    /// Writes the report as JSON to FILE; `-` prints it instead of the table.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Draws the report as SVG: harvest against internal delay for every policy (the tuning frontier), and
    /// one small panel per node group with capacity, internal demand, lent and leased GPUs of the `sublet`
    /// policy (steps without a reading left as gaps). With `--sweep`, the frontier of the sweep's points.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,

    /// Replays the `sublet` policy over a grid of burst quantile × idle window × notice and prints the
    /// frontier as a Markdown table (with `--json`, the points as JSON); the pool gets a learned reserve if
    /// it has none.
    #[arg(long)]
    pub sweep: bool,

    /// The burst quantiles of the sweep.
    #[arg(long, value_name = "Q,...", value_delimiter = ',', default_values_t = [0.5, 0.75, 0.9, 0.95, 0.99])]
    pub sweep_quantiles: Vec<f64>,

    /// The idle windows of the sweep, in seconds.
    #[arg(long, value_name = "SECONDS,...", value_delimiter = ',', default_values_t = [300i64, 900, 1800])]
    pub sweep_idle: Vec<i64>,

    /// The notices of the sweep, in seconds.
    #[arg(long, value_name = "SECONDS,...", value_delimiter = ',', default_values_t = [30i64, 60, 120])]
    pub sweep_notices: Vec<i64>,
}

/// Arguments of `sublet crd`.
#[derive(clap::Args, Debug)]
pub struct CrdArgs {
    /// Writes one file per CRD into this folder instead of printing them all to standard output.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
}

/// Arguments of `sublet demo`.
#[cfg(feature = "demo")]
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// GPU nodes in the simulated cluster (split over `--models`).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub nodes: u32,
    /// GPUs per node.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub gpus_per_node: u32,
    /// GPU models, comma-separated; the first gets three quarters of the nodes when there are two.
    #[arg(
        long,
        value_name = "MODELS",
        value_delimiter = ',',
        default_value = "NVIDIA-H100-80GB-HBM3,NVIDIA-A100-SXM4-80GB"
    )]
    pub models: Vec<String>,
    /// Reads node groups from a YAML file instead: a list of `{name, count, gpusPerNode, model}`.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["nodes", "gpus_per_node", "models"])]
    pub nodes_file: Option<PathBuf>,
    /// Replays internal demand from a trace (a folder of Helios per-VC files, or the generic CSV
    /// `time,group,capacity_gpus,demand_gpus`, as `sublet simulate` reads them); its
    /// groups become the node groups. Without it, a built-in synthetic day.
    #[arg(long, value_name = "PATH")]
    pub trace: Option<PathBuf>,
    /// Simulated seconds per wall-clock second (2160: a day in 40 seconds).
    #[arg(long, value_name = "X", default_value_t = 2160.0)]
    pub speed: f64,
    /// How long the demo runs, wall clock (`40s`, `2m`).
    #[arg(long, value_name = "DURATION", default_value = "40s", value_parser = crate::demo::parse_duration)]
    pub duration: std::time::Duration,
    /// Tenants leasing nodes (the third one ignores notices and is evicted at the deadline).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=50))]
    pub tenants: u32,
    /// Seed for the workload's and tenants' random choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where to write the kubeconfig for kubectl.
    #[arg(long, value_name = "FILE", default_value = "sublet-demo.kubeconfig")]
    pub kubeconfig: PathBuf,
    /// Runs on the existing cluster of this kubeconfig (a test control plane such as `scripts/control-plane`'s)
    /// instead of a sandbox of its own, so that its kube-scheduler places the pods. The demo creates its nodes,
    /// namespaces and pool there, refuses to start if they exist, and deletes them at the end.
    #[arg(long, value_name = "KUBECONFIG", conflicts_with_all = ["kubeconfig", "listen"])]
    pub cluster: Option<PathBuf>,
    /// Where the API server listens; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    /// Reclaim notice in real seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 3, value_parser = clap::value_parser!(i64).range(0..=3600))]
    pub notice: i64,
    /// Writes the summary as JSON to this file (`-` for standard output, after the human summary).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Plain log lines even on a terminal.
    #[arg(long)]
    pub plain: bool,
    /// Reads the DCGM exporter directly even when a Prometheus server is installed.
    #[arg(long)]
    pub no_prometheus: bool,
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[cfg(feature = "demo")]
    #[test]
    fn demo_and_sandbox_are_commands() {
        let cli = Cli::try_parse_from(["sublet", "demo", "--nodes", "4"]).expect("demo parses");
        assert!(matches!(cli.command, Command::Demo(DemoArgs { nodes: 4, .. })));
        let cli = Cli::try_parse_from(["sublet", "sandbox", "--kubeconfig", "k"]).expect("sandbox parses");
        assert!(matches!(cli.command, Command::Sandbox(SandboxArgs { rbac: false, .. })));
    }

    /// Without the `demo` feature both commands still parse, whatever follows them, so that `main` can say
    /// that this build has none instead of calling them unknown.
    #[cfg(not(feature = "demo"))]
    #[test]
    fn demo_and_sandbox_are_taken_whole_without_the_feature() {
        for (command, rest) in [("demo", vec!["--nodes", "4"]), ("sandbox", vec!["--help"])] {
            let args = ["sublet", command].into_iter().chain(rest.iter().copied());
            let cli = Cli::try_parse_from(args).expect("parses");
            let taken = match cli.command {
                Command::Demo(NotBuilt { args }) | Command::Sandbox(NotBuilt { args }) => args,
                other => panic!("{command} parsed as {other:?}"),
            };
            assert_eq!(taken, rest);
        }
        assert!(NOT_BUILT.contains("no demo") && NOT_BUILT.contains("`demo` feature"));
    }
}
