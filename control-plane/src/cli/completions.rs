//! `hyphae completions SHELL`: prints a shell completion script generated from the same argument
//! definitions the CLI parses with, so completion can never offer a command that does not exist.

use clap::{Args, CommandFactory, ValueEnum};

use super::{Cli, Outcome};

/// Arguments of `hyphae completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Shells we generate completions for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// Bash: `source <(hyphae completions bash)`, or save it under
    /// `/usr/share/bash-completion/completions/hyphae`.
    Bash,
    /// Zsh: save it as `_hyphae` in a directory on `$fpath`.
    Zsh,
    /// Fish: save it as `~/.config/fish/completions/hyphae.fish`.
    Fish,
}

impl Shell {
    fn generator(self) -> clap_complete::Shell {
        match self {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
        }
    }
}

/// Runs `hyphae completions`.
pub fn run(args: &CompletionsArgs, out: &mut dyn std::io::Write) -> anyhow::Result<Outcome> {
    let mut command = Cli::command();
    let name = command.get_name().to_string();
    clap_complete::generate(args.shell.generator(), &mut command, name, out);
    Ok(Outcome::Success)
}
