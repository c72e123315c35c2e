//! The `hyphae` command line: argument types and one module per subcommand.
//! `main` only parses arguments and maps the outcome to an exit code.

pub mod schema;
pub mod validate;

use clap::{Parser, Subcommand};

/// hyphae operator CLI.
#[derive(Debug, Parser)]
#[command(name = "hyphae", version, about = "Operate a hyphae service mesh")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check policy files (or directories of them) without applying anything.
    Validate(validate::ValidateArgs),
    /// Print the JSON Schema of policy documents, for editor completion.
    Schema(schema::SchemaArgs),
}

/// How a command ended, as the process exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Success,
    /// Exit 1: the input had errors.
    Invalid,
}

/// Runs a parsed command, writing to `out`.
pub fn run(cli: Cli, out: &mut dyn std::io::Write) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Validate(args) => validate::run(&args, out),
        Command::Schema(args) => schema::run(&args, out),
    }
}
