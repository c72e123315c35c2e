//! `hyphae-agent --dev`: a single-node control plane inside the agent's own process, so one
//! command gives a working mesh on a laptop or a lone edge box. It is the same control plane as
//! `hyphae-control-plane` (Raft, storage, admin API, registry, watch streams), just alone.
//! Only the `hyphae-agent-dev` binary embeds it (`embedded`, cargo feature `dev`); `hyphae-agent`
//! hands a `--dev` run over to that binary, so the agent every host runs carries none of the
//! control plane's code (decision 51). The data path never imports the control plane.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use hyphae_policies::{AgentConfigSpec, Listeners};

use crate::config::AgentConfig;

#[cfg(feature = "dev")]
pub mod embedded;

#[cfg(feature = "dev")]
pub use embedded::DevControlPlane;

/// The binary that embeds the control plane, next to `hyphae-agent`.
pub const DEV_BINARY: &str = "hyphae-agent-dev";

/// What `--dev` runs beside the agent: the embedded control plane, or nothing in this binary.
pub trait DevMode: Sized {
    /// Whether this binary holds the control plane; when not, `--dev` runs [`DEV_BINARY`].
    const EMBEDS: bool;

    /// Starts a one-node cluster on `listen`, keeping its data in `data_dir` (a temporary
    /// directory, removed at exit, when `None`), and waits until it leads.
    fn start(
        listen: SocketAddr,
        data_dir: Option<PathBuf>,
    ) -> impl Future<Output = anyhow::Result<Self>>;

    /// The directory it keeps data in.
    fn data_dir(&self) -> &Path;

    /// Points `config` at this control plane.
    fn adopt(&self, config: &mut AgentConfig);

    /// Resolves once its Raft has stopped by itself.
    fn failed(&self) -> impl Future<Output = String> + Send + 'static;

    /// Stops it.
    fn stop(self) -> impl Future<Output = anyhow::Result<()>>;
}

/// The stand-in of `hyphae-agent`, which embeds no control plane: it has no values, so nothing
/// after a failed [`DevMode::start`] can run.
pub enum Elsewhere {}

impl DevMode for Elsewhere {
    const EMBEDS: bool = false;

    async fn start(_listen: SocketAddr, _data_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        anyhow::bail!("this binary embeds no control plane; run `{DEV_BINARY} --dev`")
    }

    fn data_dir(&self) -> &Path {
        match *self {}
    }

    fn adopt(&self, _config: &mut AgentConfig) {
        match *self {}
    }

    fn failed(&self) -> impl Future<Output = String> + Send + 'static {
        match *self {}
        #[allow(unreachable_code)]
        std::future::pending()
    }

    async fn stop(self) -> anyhow::Result<()> {
        match self {}
    }
}

/// Replaces this process with [`DEV_BINARY`] from the same directory, with the same arguments
/// (so the process, its pid and its signals stay the same); returns the exit code to use when
/// that cannot be done, after saying why.
pub fn run_dev_build() -> u8 {
    use std::os::unix::process::CommandExt;
    let binary = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name(DEV_BINARY),
        Err(error) => {
            eprintln!("hyphae-agent: cannot find this binary's directory for --dev: {error}");
            return 1;
        }
    };
    if !binary.exists() {
        eprintln!(
            "hyphae-agent: --dev runs {} (the agent with an embedded control plane), which is not installed; build it with `cargo build --bins` (cargo feature `dev`), or run hyphae-control-plane and list it under `controlPlane:` in the agent's configuration",
            binary.display()
        );
        return 1;
    }
    let error = std::process::Command::new(&binary)
        .args(std::env::args_os().skip(1))
        .exec();
    eprintln!("hyphae-agent: cannot run {}: {error}", binary.display());
    1
}

/// Where the dev control plane listens by default: the `hyphae` CLI's default server.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7400);

/// The agent's configuration under `--dev` when no file exists: a node called `dev` in site
/// `default`, listening on loopback only, keeping its data next to the control plane's.
pub fn default_config(data_dir: PathBuf) -> AgentConfig {
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    AgentConfig {
        node: "dev".to_string(),
        spec: AgentConfigSpec {
            data_dir,
            listeners: Listeners {
                inbound: SocketAddr::new(localhost, 4143),
                ..Listeners::default()
            },
            ..AgentConfigSpec::default()
        },
        policies: Vec::new(),
    }
}
