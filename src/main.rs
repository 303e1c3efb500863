//! The `redguard` command: parses arguments, sets up logging, loads the config and calls [`redguard::run`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use redguard::config::Config;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "redguard", version, about = "A circuit-breaking Redis sidecar")]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar.
    Run {
        /// YAML config file; without one, the defaults (Redis at redis://127.0.0.1:6379).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a config file (and the REDGUARD_* environment overrides) and exit.
    CheckConfig { file: PathBuf },
    /// Send one test notification to every configured sink and report each result; exits non-zero if any
    /// sink failed (or none is configured).
    NotifyTest {
        /// YAML config file with a `notify.sinks` list.
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::CheckConfig { file } => match Config::load(Some(&file), env_vars()) {
            // The descriptor check is run's too: a config that cannot start must not pass here.
            Ok(cfg) => match redguard::resources::reserve_descriptors(&cfg) {
                Ok(_) => {
                    println!("{}: OK", file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::NotifyTest { config } => notify_test(&config),
        Command::Run { config } => {
            let cfg = match Config::load(config.as_deref(), env_vars()) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("redguard: invalid configuration: {e}");
                    return ExitCode::from(2);
                }
            };
            // One thread, like twemproxy. Measured (BENCHMARKS.md), the multi-threaded runtime cost more CPU per
            // request and added latency: wake-ups crossed workers, and the Redis connection's task, woken at once on
            // the other worker for each request, wrote every command on its own; on one thread the commands of
            // concurrent requests leave in one write. Nothing on the request path blocks (locks are held for a few
            // instructions), so one thread is not starved by a slow handler.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime starts");
            match runtime.block_on(redguard::run(cfg, shutdown_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "redguard failed");
                    eprintln!("redguard: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn notify_test(file: &std::path::Path) -> ExitCode {
    let cfg = match Config::load(Some(file), env_vars()) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("redguard: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if cfg.notify.sinks.is_empty() {
        eprintln!("{}: no notify.sinks configured; nothing to test", file.display());
        return ExitCode::FAILURE;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    let reports = match runtime.block_on(redguard::notify_test(&cfg)) {
        Ok(reports) => reports,
        Err(e) => {
            eprintln!("redguard: {e}");
            return ExitCode::FAILURE;
        }
    };
    for report in &reports {
        println!("{report}");
    }
    let failed = reports.iter().filter(|r| r.result.is_err()).count();
    println!("{} of {} sink(s) delivered", reports.len() - failed, reports.len());
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The process environment, skipping variables that are not valid UTF-8 (they cannot be ours).
fn env_vars() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
