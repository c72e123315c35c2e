//! `hyphae-agent --dev`: a single-node control plane inside the agent's own process, so one
//! command gives a working mesh on a laptop or a lone edge box. It is the same control plane as
//! `hyphae-control-plane` (Raft, storage, admin API, registry, watch streams), just alone.
//! Built only with the `dev` cargo feature (`embedded`); without it, `not_built` stands in
//! and `--dev` fails with an error saying so. The data path never imports the control plane.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use hyphae_policies::{AgentConfigSpec, Listeners};

use crate::config::AgentConfig;

#[cfg(feature = "dev")]
pub mod embedded;
#[cfg(not(feature = "dev"))]
pub mod not_built;

#[cfg(feature = "dev")]
pub use embedded::DevControlPlane;
#[cfg(not(feature = "dev"))]
pub use not_built::DevControlPlane;

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
