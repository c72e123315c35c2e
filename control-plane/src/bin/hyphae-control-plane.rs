//! `hyphae-control-plane`: arguments, logging, runtime and signals; the node itself is in the
//! library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use hyphae_control_plane::daemon::{RunningNode, Start};
use hyphae_control_plane::pki::JoinTicket;
use hyphae_control_plane::{config, secret_file};
use tokio::signal::unix::{SignalKind, signal};

/// A hyphae control-plane node.
#[derive(Debug, Parser)]
#[command(
    name = "hyphae-control-plane",
    version,
    about = "A hyphae control-plane node (Raft)"
)]
struct Args {
    /// The node's configuration: one `ControlPlaneConfig` document.
    #[arg(
        long,
        short,
        value_name = "FILE",
        default_value = "/etc/hyphae/control-plane.yaml"
    )]
    config: PathBuf,
    /// Start a new cluster with the configured members, if this node is not in one yet. Run it
    /// on one node, once.
    #[arg(long)]
    init: bool,
    /// With `--init`: the owner-only file holding the bootstrap admin token's secret. Created
    /// with a new random secret when missing (default: `bootstrap-admin-token` in the data
    /// directory); an existing file's secret is used as it is.
    #[arg(long, value_name = "FILE", requires = "init")]
    bootstrap_token_file: Option<PathBuf>,
    /// With `--init`: start the cluster with the operator's root from this directory
    /// (`ca.pem`, `ca-key.pem` owner-only; `hyphae ca create` makes one) instead of a new one.
    #[arg(long, value_name = "DIR", requires = "init")]
    ca_dir: Option<PathBuf>,
    /// Join a cluster: the owner-only file holding a control-plane join token's secret
    /// (`hyphae token create --control-plane`). Used only by a node without a certificate yet;
    /// it asks the nodes under `spec.members`.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "init",
        requires = "ca_fingerprint"
    )]
    join_token_file: Option<PathBuf>,
    /// With `--join-token-file`: the SHA-256 fingerprint of the cluster's root certificate
    /// (`hyphae ca`), which the node pins before it trusts anything the cluster says.
    #[arg(long, value_name = "HEX", requires = "join_token_file")]
    ca_fingerprint: Option<String>,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match config::load(&args.config) {
        Ok(config) => config,
        Err(diagnostics) => {
            for diagnostic in diagnostics {
                eprint!("{diagnostic}");
            }
            return ExitCode::from(1);
        }
    };
    if args.check {
        println!(
            "ok: node `{}` (id {}) listening on {}, {} initial member(s)",
            config.name,
            config.spec.id,
            config.spec.listen,
            config.spec.members.len()
        );
        return ExitCode::SUCCESS;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("HYPHAE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=error"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if std::io::stderr().is_terminal() {
        logs.init();
    } else {
        logs.json().init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hyphae-control-plane: cannot start the runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let start = if args.init {
        let path = args
            .bootstrap_token_file
            .unwrap_or_else(|| config.spec.data_dir.join(BOOTSTRAP_TOKEN_FILE));
        let root = match args
            .ca_dir
            .as_deref()
            .map(hyphae_control_plane::ca::load_dir)
        {
            None => None,
            Some(Ok(root)) => Some(root),
            Some(Err(error)) => {
                eprintln!("hyphae-control-plane: {error:#}");
                return ExitCode::from(1);
            }
        };
        match bootstrap_secret(&path) {
            Ok(bootstrap_secret) => Start::Init {
                bootstrap_secret,
                root,
            },
            Err(error) => {
                eprintln!("hyphae-control-plane: {error}");
                return ExitCode::from(1);
            }
        }
    } else {
        let ticket = match (&args.join_token_file, &args.ca_fingerprint) {
            (Some(path), Some(fingerprint)) => match secret_file::read(path) {
                Ok(secret) => Some(JoinTicket {
                    secret,
                    ca_fingerprint: fingerprint.clone(),
                }),
                Err(error) => {
                    eprintln!("hyphae-control-plane: {error}");
                    return ExitCode::from(1);
                }
            },
            _ => None,
        };
        Start::Join { ticket }
    };
    match runtime.block_on(run(config, start)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("hyphae-control-plane: {error:#}");
            ExitCode::from(1)
        }
    }
}

/// Default name of the bootstrap admin token's file, in the data directory.
const BOOTSTRAP_TOKEN_FILE: &str = "bootstrap-admin-token";

/// The bootstrap admin token's secret from `path`, or a new one written there. A new secret
/// is shown on the terminal when there is one (never in the logs).
fn bootstrap_secret(path: &std::path::Path) -> Result<String, secret_file::SecretFileError> {
    let (secret, created) = secret_file::read_or_create(path)?;
    if created {
        eprintln!(
            "hyphae-control-plane: the bootstrap admin token is in {} (mode 0600); use it with HYPHAE_TOKEN_FILE={}, create named admin tokens with `hyphae acl token create`, then `hyphae acl token revoke bootstrap`",
            path.display(),
            path.display()
        );
        if std::io::stdout().is_terminal() {
            println!("bootstrap admin token (shown once): {secret}");
        }
    }
    Ok(secret)
}

async fn run(config: config::NodeConfig, start: Start) -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let running = RunningNode::start(config, start).await?;
    let (address, id) = (running.address, running.node.config.spec.id);
    println!(
        "{}",
        serde_json::json!({ "ready": { "listen": address, "id": id } })
    );
    tracing::info!(%address, id, "control-plane node ready");
    notify(&[sd_notify::NotifyState::Ready]);
    // A node whose Raft core stopped exits (below), so pinging while the process runs is
    // enough: the pings prove the runtime is alive.
    let watchdog = sd_notify::watchdog_enabled().map(|interval| {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval / 2);
            loop {
                ticks.tick().await;
                notify(&[sd_notify::NotifyState::Watchdog]);
            }
        })
    });
    let failure = tokio::select! {
        _ = terminate.recv() => None,
        _ = interrupt.recv() => None,
        why = running.failed() => Some(why),
    };
    notify(&[sd_notify::NotifyState::Stopping]);
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    if let Some(why) = failure {
        // No clean shutdown: Raft is gone and the port already stopped serving (decision 33).
        anyhow::bail!("Raft has stopped ({why}); exiting so that systemd restarts this node");
    }
    tracing::info!("shutting down");
    running.stop().await
}

/// Tells systemd about a state change when it is watching (`NOTIFY_SOCKET` set).
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "cannot notify systemd");
    }
}
