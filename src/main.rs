#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use sublet::cli::{Cli, Command, CrdArgs, LogFormat, SimulateArgs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Crd(args) => crd(args),
        Command::Simulate(args) => simulate(args),
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
        let svg = simulate::plot::svg(&outcome.series, trace.step_seconds, &title)
            .map_err(|e| anyhow::anyhow!("cannot draw the plot: {e}"))?;
        std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_env("SUBLET_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
