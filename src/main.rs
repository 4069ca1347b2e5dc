#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use sublet::cli::{Cli, Command, CrdArgs, LogFormat, SandboxArgs};

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
        Command::Sandbox(args) => sandbox(args),
    }
}

fn sandbox(args: SandboxArgs) -> anyhow::Result<ExitCode> {
    let faults = match &args.faults {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            serde_yaml_ng::from_str(&text).with_context(|| format!("invalid fault rules in {}", path.display()))?
        }
        None => Default::default(),
    };
    let config = sublet::sandbox::SandboxConfig {
        listen: args.listen,
        rbac: args.rbac,
        faults,
        ..Default::default()
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let handle = sublet::sandbox::Sandbox::start(config).await?;
        handle.write_kubeconfig(&args.kubeconfig)?;
        eprintln!(
            "sandbox API at {}; kubeconfig written to {}",
            handle.url(),
            args.kubeconfig.display()
        );
        wait_for_signal().await;
        handle.shutdown().await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
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

fn init_logging(format: LogFormat) {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_env("SUBLET_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
