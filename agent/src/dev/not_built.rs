//! What stands in for the embedded control plane in an agent built without the `dev` feature:
//! `--dev` fails at once with an error that says how to get it. It never starts anything.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::AgentConfig;

/// The embedded control plane, absent from this build: the type has no values, so every
/// method after a failed [`DevControlPlane::start`] is unreachable.
pub enum DevControlPlane {}

/// Why `--dev` cannot run here, and what to do instead.
#[derive(Debug, thiserror::Error)]
#[error(
    "--dev embeds a control plane, and this hyphae-agent was built without one (cargo feature \
     `dev`); rebuild with `--features dev`, or run hyphae-control-plane and list it under \
     `controlPlane:` in the agent's configuration"
)]
pub struct NotBuilt;

impl DevControlPlane {
    /// Always fails: this build has no control plane to embed.
    pub async fn start(_listen: SocketAddr, _data_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        Err(NotBuilt.into())
    }

    /// The address agents and the CLI reach it at.
    pub fn address(&self) -> SocketAddr {
        match *self {}
    }

    /// The directory it keeps data in.
    pub fn data_dir(&self) -> &Path {
        match *self {}
    }

    /// Points `config` at this control plane.
    pub fn adopt(&self, _config: &mut AgentConfig) {
        match *self {}
    }

    /// Resolves once its Raft has stopped by itself.
    pub fn failed(&self) -> std::future::Pending<String> {
        match *self {}
    }

    /// Stops it.
    pub async fn stop(self) -> anyhow::Result<()> {
        match self {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dev_without_the_feature_says_how_to_get_it() {
        let error = match DevControlPlane::start(crate::dev::DEFAULT_LISTEN, None).await {
            Ok(never) => match never {},
            Err(error) => error.to_string(),
        };
        assert!(error.contains("--features dev"), "{error}");
    }
}
