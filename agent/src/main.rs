//! `hyphae-agent`: arguments, logging, the runtime and signals. The work is in the library.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use hyphae_agent::config::{self, AgentConfig};
use hyphae_agent::daemon::Daemon;
use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};

/// The hyphae agent.
#[derive(Debug, Parser)]
#[command(name = "hyphae-agent", version, about = "The hyphae per-host agent")]
struct Args {
    /// The agent's configuration: a file or directory holding one `AgentConfig` document and,
    /// optionally, the policies to apply to its static services.
    #[arg(
        long,
        short,
        value_name = "PATH",
        default_value = "/etc/hyphae/agent.yaml"
    )]
    config: PathBuf,
    /// Check the configuration, print a summary and exit (0 when valid, 1 otherwise).
    #[arg(long)]
    check: bool,
    /// Log format; `auto` is human on a terminal and JSON otherwise.
    #[arg(long, value_enum, default_value_t = LogFormat::Auto)]
    log_format: LogFormat,
    /// Runtime worker threads.
    #[arg(long, default_value_t = DEFAULT_WORKER_THREADS)]
    worker_threads: usize,
}

/// Worker threads by default: an agent shares its host with the services it serves.
const DEFAULT_WORKER_THREADS: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Auto,
    Human,
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (config, warnings) = match load(&args.config) {
        Some(loaded) => loaded,
        None => return ExitCode::from(1),
    };
    if args.check {
        for warning in &warnings {
            eprint!("{warning}");
        }
        println!(
            "ok: node `{}` in site `{}`: {} local service(s), {} upstream(s), {} static service(s), {} control-plane address(es), {} polic{}",
            config.node,
            config.spec.site,
            config.spec.services.len(),
            config.spec.upstreams.len(),
            config.spec.static_services.len(),
            config.spec.control_plane.len(),
            config.policies.len(),
            if config.policies.len() == 1 {
                "y"
            } else {
                "ies"
            },
        );
        return ExitCode::SUCCESS;
    }
    init_logging(args.log_format);
    for warning in &warnings {
        tracing::warn!("{}", warning.to_string().trim_end());
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.worker_threads.max(1))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hyphae-agent: cannot start the runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(&args.config, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::from(1)
        }
    }
}

/// Loads the configuration, printing every problem; `None` when it is invalid.
fn load(path: &Path) -> Option<(AgentConfig, Vec<hyphae_policies::Diagnostic>)> {
    match config::load(path) {
        Ok(loaded) => Some(loaded),
        Err(diagnostics) => {
            for diagnostic in diagnostics {
                eprint!("{diagnostic}");
            }
            None
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HYPHAE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Human => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(path: &Path, config: AgentConfig) -> anyhow::Result<()> {
    let metrics = hyphae_agent::metrics::install()?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let drain_timeout = config.spec.limits.drain_timeout.get();
    let daemon = Daemon::start(&config, metrics).await?;
    // One line on stdout with the bound addresses, for scripts and tests (ports may be 0 in
    // the config); everything else goes to the log on stderr.
    println!("{}", serde_json::json!({ "ready": daemon.addresses }));
    tracing::info!(node = %config.node, addresses = ?daemon.addresses, "agent ready");
    notify(&[NotifyState::Ready]);
    let watchdog = sd_notify::watchdog_enabled().map(|interval| {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval / 2);
            loop {
                ticks.tick().await;
                notify(&[NotifyState::Watchdog]);
            }
        })
    });
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                match NotifyState::monotonic_usec_now() {
                    Ok(now) => notify(&[NotifyState::Reloading, now]),
                    Err(_) => notify(&[NotifyState::Reloading]),
                }
                // Reading and checking the file is blocking work: off the runtime threads.
                let file = path.to_path_buf();
                match tokio::task::spawn_blocking(move || config::load(&file)).await {
                    Ok(loaded) => reload(loaded, &daemon),
                    Err(error) => tracing::error!(%error, "configuration reload did not finish"),
                }
                notify(&[NotifyState::Ready]);
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    notify(&[NotifyState::Stopping]);
    tracing::info!(deadline = ?drain_timeout, "draining");
    let finished = daemon.drain(drain_timeout).await;
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    if finished {
        tracing::info!("drained; exiting");
    } else {
        tracing::warn!("drain deadline passed with calls still in flight; closing them");
    }
    Ok(())
}

/// SIGHUP: apply the re-read configuration; a bad file is refused and the running one stays.
fn reload(
    loaded: Result<
        (AgentConfig, Vec<hyphae_policies::Diagnostic>),
        Vec<hyphae_policies::Diagnostic>,
    >,
    daemon: &Daemon,
) {
    match loaded {
        Ok((config, warnings)) => {
            for warning in warnings {
                tracing::warn!("{}", warning.to_string().trim_end());
            }
            daemon.reload(&config);
            hyphae_agent::metrics::reload(true);
        }
        Err(diagnostics) => {
            for diagnostic in &diagnostics {
                tracing::error!("{}", diagnostic.to_string().trim_end());
            }
            hyphae_agent::metrics::reload(false);
            tracing::error!(
                errors = diagnostics.len(),
                "configuration refused; still serving the previous one"
            );
        }
    }
}

/// Tells systemd about a state change when it is watching (`NOTIFY_SOCKET` set).
fn notify(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "cannot notify systemd");
    }
}
