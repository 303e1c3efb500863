//! The `redguard` command: parses arguments, sets up logging, loads the config and calls [`redguard::run`].
//!
//! Exit status: 0 on success, 1 when something fails at run time, 2 for a usage error (clap's), and
//! [`EXIT_CONFIG`] (78) whenever the configuration is invalid, by `run`, `check-config` and `notify-test` alike.
//! Signals: SIGTERM and SIGINT drain and stop; SIGHUP reloads the config ([`redguard::reload`]); SIGUSR1 and
//! SIGUSR2 are logged and ignored.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use redguard::config::{process_env, Config};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing_subscriber::EnvFilter;

/// The exit status for an invalid configuration: `EX_CONFIG` of sysexits.h, distinct from clap's usage error (2)
/// and from a failure at run time (1), so a supervisor or a CI step can tell a bad config from a crash.
const EXIT_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    name = "redguard",
    version,
    about = "A circuit-breaking Redis sidecar",
    after_help = "Exit status: 0 success; 1 failure at run time; 2 usage error; 78 invalid configuration \
                  (EX_CONFIG; from run, check-config and notify-test alike).\n\
                  Signals: SIGTERM and SIGINT drain in-flight requests, remove the socket and exit 0; SIGHUP \
                  reloads the config file (an invalid one, or one that changes a restart-only key, changes \
                  nothing); SIGUSR1 and SIGUSR2 are logged and ignored."
)]
struct Cli {
    /// Log format; wins over REDGUARD_LOG_FORMAT and the config's `log.format` (default text).
    #[arg(long, value_enum, global = true)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

impl From<redguard::config::LogFormat> for LogFormat {
    fn from(f: redguard::config::LogFormat) -> Self {
        match f {
            redguard::config::LogFormat::Text => LogFormat::Text,
            redguard::config::LogFormat::Json => LogFormat::Json,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar.
    Run {
        /// YAML config file; without one, the defaults (Redis at redis://127.0.0.1:6379).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a config file (and the REDGUARD_* environment overrides) and exit: the settings, and what
    /// `run` checks on this host before serving (the socket path, the socket group, the Redis URLs and TLS
    /// files). Exits 78 if anything is invalid.
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
    match cli.command {
        Command::CheckConfig { file } => {
            // It reports on stdout and stderr itself; the format only matters for what a check logs.
            init_logging(cli.log_format.unwrap_or(LogFormat::Text));
            check_config(&file)
        }
        Command::NotifyTest { config } => notify_test(&config, cli.log_format),
        Command::Run { config } => {
            // The config is read before logging starts, since it may choose the format; what goes wrong
            // before then is printed to stderr as plain text.
            let loaded = match redguard::reload::load(config.as_deref()) {
                Ok(loaded) => loaded,
                Err(e) => {
                    eprintln!("redguard: invalid configuration: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let format = cli.log_format.unwrap_or_else(|| loaded.config.log.format.into());
            let set_log_level = init_logging(format);
            // One thread, like twemproxy. Measured (BENCHMARKS.md), the multi-threaded runtime cost more CPU per
            // request and added latency: wake-ups crossed workers, and the Redis connection's task, woken at once on
            // the other worker for each request, wrote every command on its own; on one thread the commands of
            // concurrent requests leave in one write. Nothing on the request path blocks (locks are held for a few
            // instructions), so one thread is not starved by a slow handler.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime starts");
            let result = runtime.block_on(async {
                // Installed before anything is bound, so that no signal finds the default action (which would
                // end the process and leave the socket behind).
                let signals = Signals::install();
                let channel = redguard::reload::channel();
                let shutdown = signals.shutdown(channel.requests.clone());
                let live = redguard::reload::Live {
                    path: config,
                    channel,
                    set_log_level,
                };
                redguard::run(loaded, live, shutdown).await
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e @ redguard::RunError::Preflight(_)) => {
                    eprintln!("redguard: {e}");
                    ExitCode::from(EXIT_CONFIG)
                }
                Err(e) => {
                    tracing::error!(error = %e, "redguard failed");
                    eprintln!("redguard: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `redguard check-config`: the config validation, then the pre-flight checks `run` makes on this host.
fn check_config(file: &std::path::Path) -> ExitCode {
    let cfg = match Config::load(Some(file), process_env()) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match redguard::preflight::check(&cfg) {
        Ok(checked) => {
            for note in &checked.notes {
                eprintln!("note: {note}");
            }
            println!("{}: OK", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn notify_test(file: &std::path::Path, log_format: Option<LogFormat>) -> ExitCode {
    let cfg = match Config::load(Some(file), process_env()) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("redguard: invalid configuration: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(set_level) = init_logging(log_format.unwrap_or_else(|| cfg.log.format.into())) {
        set_level(&cfg.log.level);
    }
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

/// Logs to stderr in `format` (the command line's, else the config's `log.format`, which
/// `REDGUARD_LOG_FORMAT` overrides), filtered by `RUST_LOG` if set, else `info` until the config's `log.level`
/// is applied. Returns
/// the setter of the config's level (none while `RUST_LOG` is set: it wins), which a reload calls too.
fn init_logging(format: LogFormat) -> Option<redguard::reload::SetLogLevel> {
    use tracing_subscriber::prelude::*;
    let from_env = EnvFilter::try_from_default_env().ok();
    let env_set = from_env.is_some();
    let (filter, handle) = tracing_subscriber::reload::Layer::new(from_env.unwrap_or_else(|| EnvFilter::new("info")));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry.with(fmt).init(),
        // `message` and the event's fields at the top level, where log pipelines look, not under `fields`.
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).init(),
    }
    (!env_set).then(|| {
        Arc::new(move |level: &str| {
            // The config validated the filter; a failure here would only keep the previous one.
            if let Ok(filter) = EnvFilter::builder().parse(level) {
                let _ = handle.reload(filter);
            }
        }) as redguard::reload::SetLogLevel
    })
}

/// The signals redguard handles: SIGTERM and SIGINT stop it, SIGHUP reloads the config. SIGUSR1 and SIGUSR2,
/// whose default action also ends the process (and which some tools send to reopen logs), are logged and
/// ignored.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr1: Signal,
    usr2: Signal,
}

impl Signals {
    /// Must be called within the runtime.
    fn install() -> Signals {
        let on = |kind: SignalKind, name: &str| signal(kind).unwrap_or_else(|e| panic!("{name} handler installs: {e}"));
        Signals {
            term: on(SignalKind::terminate(), "SIGTERM"),
            int: on(SignalKind::interrupt(), "SIGINT"),
            hup: on(SignalKind::hangup(), "SIGHUP"),
            usr1: on(SignalKind::user_defined1(), "SIGUSR1"),
            usr2: on(SignalKind::user_defined2(), "SIGUSR2"),
        }
    }

    /// Resolves on SIGTERM or SIGINT; asks `reloads` for a reload on SIGHUP (a burst of them folds into one);
    /// logs SIGUSR1 and SIGUSR2.
    async fn shutdown(mut self, reloads: redguard::reload::Requests) {
        let ignored = |name: &str| tracing::warn!(signal = name, "{name} has no meaning for redguard; ignored");
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = self.hup.recv() => reloads.nudge(redguard::reload::Trigger::Signal),
                _ = self.usr1.recv() => ignored("SIGUSR1"),
                _ = self.usr2.recv() => ignored("SIGUSR2"),
            }
        }
    }
}
