//! Runs the `hyphae` operator CLI against a control-plane node, as an operator would: the exit
//! code and everything it printed. It judges nothing; callers assert on the outcome.

use std::fmt::Display;
use std::path::Path;

/// What one `hyphae` run did.
#[derive(Debug)]
pub struct CliOutput {
    /// Its exit code (`None` when a signal ended it).
    pub code: Option<i32>,
    /// Its stdout followed by its stderr.
    pub text: String,
}

impl CliOutput {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs `binary` (the `hyphae` CLI) with `args` against `server` (`HYPHAE_SERVER`), with the
/// admin token of the clusters this process starts (`HYPHAE_TOKEN`) and, for a node of one of
/// them, its root (`HYPHAE_CA_FILE`).
pub fn hyphae(binary: &Path, server: impl Display, args: &[&str]) -> std::io::Result<CliOutput> {
    hyphae_as(
        binary,
        server,
        Some(crate::credentials::admin_token()),
        args,
    )
}

/// Like [`hyphae`], with the token `secret` (or none: what an anonymous operator gets).
pub fn hyphae_as(
    binary: &Path,
    server: impl Display,
    secret: Option<&str>,
    args: &[&str],
) -> std::io::Result<CliOutput> {
    let server = server.to_string();
    let trust = crate::trust::of(&server);
    // A cluster in a network namespace is reached from inside it.
    let namespace = trust.as_ref().and_then(|trust| trust.namespace());
    let mut command = crate::netns::command_in(namespace, binary);
    command
        .args(args)
        .env("HYPHAE_SERVER", &server)
        .env_remove("HYPHAE_TOKEN")
        .env_remove("HYPHAE_TOKEN_FILE")
        .env_remove("HYPHAE_CA_FINGERPRINT")
        .env_remove("HYPHAE_CA_FILE");
    if let Some(trust) = &trust {
        command.env("HYPHAE_CA_FILE", &trust.roots_file);
    }
    if let Some(secret) = secret {
        command.env("HYPHAE_TOKEN", secret);
    }
    let output = command.output()?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Ok(CliOutput {
        code: output.status.code(),
        text,
    })
}
