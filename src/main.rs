#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
#[cfg(not(feature = "demo"))]
use sublet::cli::NOT_BUILT;
#[cfg(feature = "demo")]
use sublet::cli::{ChaosArgs, DemoArgs, SandboxArgs};
use sublet::cli::{Cli, Command, CrdArgs, LogFormat, RunArgs, SimulateArgs};

/// mimalloc: a pass builds and drops tens of thousands of small objects, which it allocates at about twice
/// the speed of the system allocator (`cargo bench --bench observe`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo's own view is the output; only warnings from the parts it runs go to the log.
    let quiet = matches!(cli.command, Command::Demo(_) | Command::Chaos(_));
    // The controller's watches are cut when the demo's API server stops at the end: kube's client and the
    // caches warn of that, which is expected there (SUBLET_LOG overrides this filter).
    let demo_filter = "warn,kube_client=off,sublet::controller::cache=error";
    init_logging(cli.log_format, if quiet { demo_filter } else { "info" });
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", error_text(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: a cause whose text is already part of what was said (many
/// libraries repeat their source in their own message) is left out.
fn error_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let said = cause.to_string();
        if text.contains(&said) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&said);
    }
    text
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Crd(args) => crd(args),
        #[cfg(feature = "demo")]
        Command::Demo(args) => runtime()?.block_on(demo(args)),
        #[cfg(feature = "demo")]
        Command::Sandbox(args) => sandbox(args),
        #[cfg(feature = "demo")]
        Command::Chaos(args) => runtime()?.block_on(chaos(args)),
        #[cfg(not(feature = "demo"))]
        Command::Demo(_) | Command::Sandbox(_) | Command::Chaos(_) => {
            eprintln!("error: {NOT_BUILT}");
            Ok(ExitCode::from(2))
        }
        Command::Run(args) => runtime()?.block_on(run_controller(args)),
        Command::Simulate(args) => simulate(args),
    }
}

#[cfg(feature = "demo")]
fn sandbox(args: SandboxArgs) -> anyhow::Result<ExitCode> {
    let faults = match &args.faults {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            serde_yaml_ng::from_str(&text).with_context(|| format!("invalid fault rules in {}", path.display()))?
        }
        None => Default::default(),
    };
    let config = sublet_sandbox::SandboxConfig {
        listen: args.listen,
        rbac: args.rbac,
        faults,
        ..Default::default()
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let handle = sublet_sandbox::Sandbox::start(config).await?;
        handle.write_kubeconfig(&args.kubeconfig)?;
        eprintln!(
            "sandbox API at {}; kubeconfig written to {}",
            handle.url(),
            args.kubeconfig.display()
        );
        shutdown_signal().await;
        handle.shutdown().await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

async fn run_controller(args: RunArgs) -> anyhow::Result<ExitCode> {
    if !(args.tick.is_finite() && args.tick >= 0.05) {
        anyhow::bail!("--tick must be at least 0.05 seconds, got {}", args.tick);
    }
    let client = sublet::controller::client(&sublet::controller::Connect {
        kubeconfig: args.kubeconfig,
    })
    .await?;
    let namespace = args.leader_elect_namespace.or_else(|| {
        std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            .ok()
            .map(|s| s.trim().to_string())
    });
    let identity = args
        .identity
        .unwrap_or_else(|| std::env::var("HOSTNAME").unwrap_or_else(|_| format!("sublet-{}", std::process::id())));
    let tenant_network = match args.tenant_network_policy {
        false => None,
        true => Some(
            sublet::controller::TenantNetwork::new(
                &args.tenant_denied_cidrs,
                args.tenant_dns_namespace.as_deref(),
                &args.tenant_dns_labels,
            )
            .map_err(|e| anyhow::anyhow!("--tenant-denied-cidrs or --tenant-dns-labels: {e}"))?,
        ),
    };
    let config = sublet::controller::Config {
        metrics_addr: args.metrics_addr,
        metrics_auth: args.metrics_auth,
        tenant_network,
        leader_election: args.leader_elect,
        lease_namespace: namespace.unwrap_or_else(|| "default".into()),
        lease_name: args.leader_elect_name,
        identity,
        lease_duration: args.leader_elect_duration,
        tick: std::time::Duration::from_secs_f64(args.tick),
        ..sublet::controller::Config::default()
    };
    sublet::controller::run(client, config, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "demo")]
async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal as _;
    use sublet::demo;
    let nodes = match &args.nodes_file {
        Some(path) => demo::nodes::load_groups(path)?,
        None => {
            let weights: &[u32] = if args.models.len() == 2 { &[3, 1] } else { &[] };
            let groups = demo::nodes::groups_for(args.nodes, args.gpus_per_node, &args.models, weights);
            demo::nodes::validate_groups(&groups).map_err(|e| anyhow::anyhow!("invalid --models: {e}"))?;
            groups
        }
    };
    let config = demo::DemoConfig {
        nodes,
        trace: args.trace,
        speed: args.speed,
        duration: args.duration,
        tenants: args.tenants as usize,
        seed: args.seed,
        kubeconfig: args.kubeconfig,
        cluster: args.cluster,
        listen: args.listen,
        notice_seconds: args.notice,
        live_view: !args.plain && std::io::stdout().is_terminal(),
        prometheus: !args.no_prometheus,
        ..demo::DemoConfig::default()
    };
    let summary = demo::run(config, shutdown_signal()).await?;
    demo::view::print_summary(&summary);
    println!("  signals      {}", summary.signals);
    if let Some(path) = &args.json {
        write_json(path, &summary)?;
    }
    Ok(if summary.invariants.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

#[cfg(feature = "demo")]
async fn chaos(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    use sublet::chaos::{self, Perturbation};
    use sublet::cli::PerturbArg;
    let mut perturbations: Vec<Perturbation> = args
        .perturb
        .iter()
        .filter_map(|p| match p {
            PerturbArg::Kills => Some(Perturbation::Kills),
            PerturbArg::Faults => Some(Perturbation::Faults),
            PerturbArg::NodeDelete => Some(Perturbation::NodeDelete),
            PerturbArg::NodeNotReady => Some(Perturbation::NodeNotReady),
            PerturbArg::LeaseChurn => Some(Perturbation::LeaseChurn),
            PerturbArg::ModeFlips => Some(Perturbation::ModeFlips),
            PerturbArg::None => None,
        })
        .collect();
    if args.perturb.contains(&PerturbArg::None) && !perturbations.is_empty() {
        anyhow::bail!("--perturb none cannot be combined with other perturbations");
    }
    perturbations.sort();
    perturbations.dedup();
    let config = chaos::ChaosConfig {
        cycles: args.cycles,
        seed: args.seed,
        perturbations,
        notice_seconds: args.notice,
        idle_seconds: args.idle,
        parallel: args.parallel,
        controller_log: args.controller_log,
        ..chaos::ChaosConfig::default()
    };
    let report = chaos::run(config).await?;
    print!("{}", report.text());
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// Writes `value` as pretty JSON to `path`, or to standard output for `-`.
#[cfg(feature = "demo")]
fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    if path.as_os_str() == "-" {
        println!("{text}");
        Ok(())
    } else {
        std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
    }
}

fn crd(args: CrdArgs) -> anyhow::Result<ExitCode> {
    match args.output_dir {
        None => print!("{}", sublet::crd::all_yaml()),
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            for crd in sublet::crd::all() {
                let path = dir.join(sublet::crd::file_name(&crd));
                std::fs::write(&path, sublet::crd::to_yaml(&crd))
                    .with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn simulate(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal as _;
    use sublet::simulate;
    if let Some(path) = &args.plot {
        // Refused before the replay, which can take minutes: the plot is SVG and nothing else.
        simulate::plot::check_path(path)?;
    }
    let yaml = match &args.pool {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
        None => simulate::DEFAULT_POOL_YAML.to_string(),
    };
    let policy = simulate::pool_policy(&yaml).with_context(|| match &args.pool {
        Some(path) => format!("pool {}", path.display()),
        None => "the default pool".to_string(),
    })?;
    let tenants = match &args.tenants {
        Some(path) => {
            let yaml = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let spec = simulate::TenantSpec::from_yaml(&yaml).with_context(|| format!("tenants {}", path.display()))?;
            Some(spec)
        }
        None => None,
    };
    let trace = simulate::load(&args.trace)?;
    if args.sweep {
        return sweep(&args, policy, &trace);
    }
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(trace.steps() as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} steps {eta}") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message("replaying");
        bar
    });
    let opts = simulate::Options {
        policy,
        static_percents: args.static_percents.clone(),
        tenants,
        eviction_grace_seconds: args.eviction_grace,
    };
    let outcome = simulate::run(&trace, &opts, &mut |done, _| {
        if let Some(bar) = &bar {
            bar.set_position(done as u64);
        }
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let json = serde_json::to_string_pretty(&outcome.report)? + "\n";
    match args.json.as_deref() {
        Some(path) if path.as_os_str() == "-" => print!("{json}"),
        Some(path) => {
            std::fs::write(path, &json).with_context(|| format!("cannot write {}", path.display()))?;
            print!("{}", outcome.report.table());
        }
        None => print!("{}", outcome.report.table()),
    }
    if let Some(path) = &args.plot {
        let title = format!("sublet on {}", trace.name);
        let svg = simulate::plot::report_svg(&title, &trace, &outcome.report.policies, &outcome.by_group)
            .map_err(|e| anyhow::anyhow!("cannot draw the plot: {e}"))?;
        std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn sweep(
    args: &SimulateArgs,
    mut policy: sublet::policy::PoolPolicy,
    trace: &sublet::simulate::Trace,
) -> anyhow::Result<ExitCode> {
    use sublet::simulate::sweep;
    for (what, bad) in [
        (
            "--sweep-quantiles",
            args.sweep_quantiles.iter().any(|q| !(*q > 0.0 && *q <= 1.0)),
        ),
        ("--sweep-idle", args.sweep_idle.iter().any(|s| *s < 0)),
        ("--sweep-notices", args.sweep_notices.iter().any(|s| *s < 0)),
    ] {
        anyhow::ensure!(!bad, "{what}: quantiles must be in (0, 1], seconds not negative");
    }
    policy
        .reserve
        .learned
        .get_or_insert_with(sublet::policy::LearnedPolicy::with_defaults);
    let grid = sweep::Grid {
        quantiles: args.sweep_quantiles.clone(),
        idle_seconds: args.sweep_idle.clone(),
        notice_seconds: args.sweep_notices.clone(),
    };
    let points = sweep::run(trace, &policy, &grid, args.eviction_grace, &|done, total| {
        eprintln!("sweep: {done}/{total} points");
    });
    match args.json.as_deref() {
        Some(path) if path.as_os_str() == "-" => println!("{}", serde_json::to_string_pretty(&points)?),
        Some(path) => {
            std::fs::write(path, serde_json::to_string_pretty(&points)? + "\n")
                .with_context(|| format!("cannot write {}", path.display()))?;
            print!("{}", sweep::table(&trace.name, &points));
        }
        None => print!("{}", sweep::table(&trace.name, &points)),
    }
    if let Some(path) = &args.plot {
        let title = format!("sublet's tuning frontier on {}", trace.name);
        let svg = sublet::simulate::plot::sweep_svg(&title, &points)
            .map_err(|e| anyhow::anyhow!("cannot draw the plot: {e}"))?;
        std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn init_logging(format: LogFormat, default: &str) {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_env("SUBLET_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only for a person at a terminal: a log file or collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
