//! The control plane `--dev` embeds: the same `RunningNode` as `hyphae-control-plane`, alone,
//! in the agent's process. The only file of the agent that may import the control-plane crate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use hyphae_control_plane::config::NodeConfig;
use hyphae_control_plane::daemon::{RunningNode, Start};
use hyphae_control_plane::join_tokens::JoinToken;
use hyphae_control_plane::secret_file;
use hyphae_control_plane::state::Command;
use hyphae_policies::tls;
use hyphae_policies::{AgentConfigSpec, AgentJoin, ControlPlaneConfigSpec};

use crate::config::AgentConfig;

/// The file in the dev data directory that holds the admin token's secret (mode 0600): an
/// existing one is kept, so a `--dev-data-dir` keeps its token across restarts.
pub const BOOTSTRAP_TOKEN_FILE: &str = "admin-token";

/// The file in the dev data directory that holds the agent's join token (mode 0600), made at
/// every start: the agent joins its own dev cluster like any host, with a token and the
/// root's fingerprint.
pub const JOIN_TOKEN_FILE: &str = "agent-join-token";

/// Longest the dev control plane may take to elect itself before the agent starts anyway.
pub const LEADERSHIP_WAIT: Duration = Duration::from_secs(10);

/// The embedded control plane, with the temporary directory it owns (if any).
pub struct DevControlPlane {
    running: RunningNode,
    /// Removed when the control plane stops.
    _temporary: Option<tempfile::TempDir>,
    data_dir: PathBuf,
    /// What the agent joins with.
    join: AgentJoin,
}

impl DevControlPlane {
    /// Starts a one-node cluster on `listen`, keeping its data in `data_dir` (a temporary
    /// directory, removed at exit, when `None`), and waits until it leads.
    pub async fn start(listen: SocketAddr, data_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let (temporary, data_dir) = match data_dir {
            Some(dir) => (None, dir),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("hyphae-dev-")
                    .tempdir()
                    .context("cannot create a temporary directory for the dev control plane")?;
                let path = dir.path().to_path_buf();
                (Some(dir), path)
            }
        };
        let config = NodeConfig {
            name: "dev".to_string(),
            spec: ControlPlaneConfigSpec {
                id: 1,
                listen,
                data_dir: data_dir.join("control-plane"),
                ..ControlPlaneConfigSpec::default()
            },
        };
        let token_file = data_dir.join(BOOTSTRAP_TOKEN_FILE);
        let (bootstrap_secret, _) = secret_file::read_or_create(&token_file)
            .context("cannot keep the dev control plane's admin token")?;
        let start = Start::Init {
            bootstrap_secret,
            root: None,
        };
        let running = RunningNode::start(config, start)
            .await
            .context("cannot start the dev control plane")?;
        let mut metrics = running.node.raft.metrics();
        let leads = metrics.wait_for(|m| m.current_leader == Some(m.id));
        if tokio::time::timeout(LEADERSHIP_WAIT, leads).await.is_err() {
            tracing::warn!("the dev control plane has not elected itself yet; starting anyway");
        }
        tracing::info!(
            address = %running.address,
            data = %data_dir.display(),
            admin_token_file = %token_file.display(),
            ca_file = %running.node.tls.files.dir().join("ca.pem").display(),
            "dev control plane ready; the CLI takes its admin token with HYPHAE_TOKEN_FILE=<admin_token_file> and its root with HYPHAE_CA_FILE=<ca_file>"
        );
        let join = agent_join(&running, &data_dir).await?;
        Ok(DevControlPlane {
            running,
            _temporary: temporary,
            data_dir,
            join,
        })
    }

    /// The address agents and the CLI reach it at.
    pub fn address(&self) -> SocketAddr {
        self.running.address
    }

    /// The directory it (and, without a config file, the agent) keeps data in.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Points `config` at this control plane (replacing any it named).
    pub fn adopt(&self, config: &mut AgentConfig) {
        config.spec.control_plane = vec![self.address().to_string()];
        config.spec.join = self.join.clone();
        // The certificate lives as long as this control plane's data, whose root signed it.
        config.spec.tls_dir = Some(self.data_dir.join("agent-tls"));
        // So does the state saved from it: in the default `/var/lib/hyphae` a host's real
        // agent would start from a dev cluster's state. A `dataDir` the file names is kept.
        if config.spec.data_dir == AgentConfigSpec::default().data_dir {
            config.spec.data_dir = self.data_dir.join("agent");
        }
    }

    /// Resolves, with the reason, once its Raft has stopped by itself (a storage failure);
    /// its port has stopped serving by then, and the agent should exit with an error.
    /// The future borrows nothing.
    pub fn failed(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        self.running.failed()
    }

    /// Stops serving and shuts Raft down.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.running.stop().await
    }
}

/// A single-use join token for the dev agent, stored through Raft like any, its secret in an
/// owner-only file, with the root's fingerprint.
async fn agent_join(
    running: &RunningNode,
    data_dir: &std::path::Path,
) -> anyhow::Result<AgentJoin> {
    let node = &running.node;
    let roots = node
        .tls
        .files
        .load()
        .context("cannot read the dev cluster's root")?;
    let root = tls::certificates(&roots.roots)?;
    let fingerprint = tls::fingerprint(root[0].as_ref());
    let secret = secret_file::new_secret();
    let token = JoinToken {
        name: format!("dev-agent-{:08x}", rand::random::<u32>()),
        hash: hyphae_control_plane::tokens::hash(&secret),
        expires_at_ms: hyphae_control_plane::tokens::now_ms() + JOIN_TOKEN_TTL.as_millis() as u64,
        uses_left: 1,
        site: None,
        control_plane: false,
        revision: 0,
    };
    let write = node.raft.client_write(Command::CreateJoinToken { token });
    tokio::time::timeout(LEADERSHIP_WAIT, write)
        .await
        .context("the dev control plane did not store the agent's join token in time")?
        .map_err(|error| anyhow::anyhow!("cannot store the agent's join token: {error}"))?;
    let token_file = data_dir.join(JOIN_TOKEN_FILE);
    secret_file::write_pem(&token_file, &format!("{secret}\n"))?;
    Ok(AgentJoin {
        ca_fingerprint: Some(fingerprint),
        token_file: Some(token_file),
    })
}

/// How long the dev agent's join token works.
const JOIN_TOKEN_TTL: Duration = Duration::from_secs(600);

impl super::DevMode for DevControlPlane {
    const EMBEDS: bool = true;

    async fn start(listen: SocketAddr, data_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        DevControlPlane::start(listen, data_dir).await
    }

    fn data_dir(&self) -> &std::path::Path {
        DevControlPlane::data_dir(self)
    }

    fn adopt(&self, config: &mut AgentConfig) {
        DevControlPlane::adopt(self, config);
    }

    fn failed(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        DevControlPlane::failed(self)
    }

    async fn stop(self) -> anyhow::Result<()> {
        DevControlPlane::stop(self).await
    }
}
