//! The agent's command line, shared by its two binaries: arguments, logging, the runtime and
//! signals. `hyphae-agent` is built without the embedded control plane (its `--dev` hands the
//! process over to `hyphae-agent-dev`, which has it), so the binary every host runs carries none
//! of the control plane's code (decision 51).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};

use crate::config::{self, AgentConfig};
use crate::daemon::Daemon;
use crate::dev::{self, DevMode};

/// The hyphae agent.
#[derive(Debug, Parser)]
#[command(name = "hyphae-agent", version, about = "The hyphae per-host agent")]
struct Args {
    /// The agent's configuration: a file or directory holding one `AgentConfig` document and,
    /// optionally, the policies to apply to its static services.
    /// Default `/etc/hyphae/agent.yaml`; with `--dev` and no such file, built-in defaults.
    #[arg(long, short, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Check the configuration, print a summary and exit (0 when valid, 1 otherwise).
    #[arg(long)]
    check: bool,
    /// Log format; `auto` is human on a terminal and JSON otherwise.
    #[arg(long, value_enum, default_value_t = LogFormat::Auto)]
    log_format: LogFormat,
    /// Runtime worker threads.
    #[arg(long, default_value_t = DEFAULT_WORKER_THREADS)]
    worker_threads: usize,
    /// Also run a single-node control plane in this process and follow it: one command for a
    /// working mesh on a laptop or a lone edge box.
    #[arg(long)]
    dev: bool,
    /// Where the `--dev` control plane listens (the `hyphae` CLI's default server).
    #[arg(long, value_name = "ADDR", default_value_t = dev::DEFAULT_LISTEN, requires = "dev")]
    dev_listen: SocketAddr,
    /// Where the `--dev` control plane keeps its data; unset means a temporary directory,
    /// removed at exit.
    #[arg(long, value_name = "DIR", requires = "dev")]
    dev_data_dir: Option<PathBuf>,
    /// Join with the join token in this owner-only file when the agent has no certificate yet
    /// (instead of `spec.join.tokenFile`).
    #[arg(long, value_name = "FILE", conflicts_with = "dev")]
    join_token_file: Option<PathBuf>,
    /// The SHA-256 fingerprint of the cluster's root to pin when joining (instead of
    /// `spec.join.caFingerprint`; `hyphae ca` prints it).
    #[arg(long, value_name = "HEX", conflicts_with = "dev")]
    ca_fingerprint: Option<String>,
    /// Where the node's certificate, key and roots are (instead of `spec.tlsDir`, default
    /// `<dataDir>/tls`).
    #[arg(long, value_name = "DIR")]
    tls_dir: Option<PathBuf>,
}

/// Where the configuration is read from when `--config` is not given.
const DEFAULT_CONFIG: &str = "/etc/hyphae/agent.yaml";

/// The `--dev` settings.
struct DevSettings {
    listen: SocketAddr,
    data_dir: Option<PathBuf>,
}

/// Worker threads by default: an agent shares its host with the services it serves.
const DEFAULT_WORKER_THREADS: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Auto,
    Human,
    Json,
}

/// Runs the agent as its command line says; `D` is what `--dev` starts.
pub fn main<D: DevMode>() -> ExitCode {
    let args = Args::parse();
    if args.dev && !D::EMBEDS {
        return ExitCode::from(dev::run_dev_build());
    }
    let path = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    // `--dev` runs without a file when none was named and the default one does not exist.
    let file = (args.config.is_some() || !args.dev || args.check || path.exists()).then_some(path);
    let (mut config, warnings) = match &file {
        Some(path) => match load(path) {
            Some((config, warnings)) => (Some(config), warnings),
            None => return ExitCode::from(1),
        },
        None => (None, Vec::new()),
    };
    if let Some(config) = &mut config {
        if let Some(path) = &args.join_token_file {
            config.spec.join.token_file = Some(path.clone());
        }
        if let Some(fingerprint) = &args.ca_fingerprint {
            config.spec.join.ca_fingerprint = Some(fingerprint.clone());
        }
        if let Some(dir) = &args.tls_dir {
            config.spec.tls_dir = Some(dir.clone());
        }
    }
    if args.check
        && let Some(config) = &config
    {
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
        // Small writes wait for the end of the worker's round and leave together.
        .on_thread_park(crate::write_behind::end_round)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hyphae-agent: cannot start the runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let dev = args.dev.then(|| DevSettings {
        listen: args.dev_listen,
        data_dir: args.dev_data_dir.clone(),
    });
    match runtime.block_on(run::<D>(file.as_deref(), config, dev)) {
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
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=error"));
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

async fn run<D: DevMode>(
    path: Option<&Path>,
    config: Option<AgentConfig>,
    dev: Option<DevSettings>,
) -> anyhow::Result<()> {
    let metrics = crate::metrics::install()?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let dev = match dev {
        Some(settings) => Some(D::start(settings.listen, settings.data_dir).await?),
        None => None,
    };
    let mut config = match (config, &dev) {
        (Some(config), _) => config,
        (None, Some(dev)) => dev::default_config(dev.data_dir().join("agent")),
        (None, None) => anyhow::bail!("no configuration file"),
    };
    if let Some(dev) = &dev {
        dev.adopt(&mut config);
    }
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
    // The embedded control plane stopping by itself (its store failed) stops the agent too,
    // with an error, so that it is restarted (decision 33).
    let dev_failed = dev.as_ref().map(D::failed);
    let mut dev_failed = std::pin::pin!(async move {
        match dev_failed {
            Some(failed) => failed.await,
            None => std::future::pending().await,
        }
    });
    let mut dev_failure = None;
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                match NotifyState::monotonic_usec_now() {
                    Ok(now) => notify(&[NotifyState::Reloading, now]),
                    Err(_) => notify(&[NotifyState::Reloading]),
                }
                // Reading and checking the file is blocking work: off the runtime threads.
                match path {
                    Some(path) => {
                        let file = path.to_path_buf();
                        match tokio::task::spawn_blocking(move || config::load(&file)).await {
                            Ok(loaded) => reload(loaded, &daemon, dev.as_ref()),
                            Err(error) => tracing::error!(%error, "configuration reload did not finish"),
                        }
                    }
                    None => tracing::warn!("running on --dev defaults: there is no file to reload"),
                }
                notify(&[NotifyState::Ready]);
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            why = &mut dev_failed => {
                dev_failure = Some(why);
                break;
            }
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
    if let Some(why) = dev_failure {
        anyhow::bail!("the --dev control plane's Raft has stopped ({why}); exiting");
    }
    if let Some(dev) = dev {
        dev.stop().await?;
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
    dev: Option<&impl DevMode>,
) {
    match loaded {
        Ok((mut config, warnings)) => {
            if let Some(dev) = dev {
                dev.adopt(&mut config);
            }
            for warning in warnings {
                tracing::warn!("{}", warning.to_string().trim_end());
            }
            daemon.reload(&config);
            crate::metrics::reload(true);
        }
        Err(diagnostics) => {
            for diagnostic in &diagnostics {
                tracing::error!("{}", diagnostic.to_string().trim_end());
            }
            crate::metrics::reload(false);
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
