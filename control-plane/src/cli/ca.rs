//! `hyphae ca`: the cluster's root certificate and the fingerprint joining hosts pin.

use anyhow::{Context, Result};
use clap::Args;

use super::{Outcome, ServerArgs};
use crate::wire::CaView;

/// Arguments of `hyphae ca`.
#[derive(Debug, Args)]
pub struct CaArgs {
    /// Print the root certificate (PEM) instead of its fingerprint.
    #[arg(long)]
    pub pem: bool,
    /// Where the control plane is.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Runs `hyphae ca`.
pub fn run(args: &CaArgs, out: &mut dyn std::io::Write) -> Result<Outcome> {
    let answer = args.server.client()?.expect_ok("GET", "/v1/ca", "")?;
    let ca: CaView = serde_json::from_value(answer)
        .context("the control plane's CA is not in the expected form")?;
    if args.pem {
        out.write_all(ca.cert_pem.as_bytes())?;
    } else {
        writeln!(out, "sha256:{}", ca.fingerprint)?;
    }
    Ok(Outcome::Success)
}
