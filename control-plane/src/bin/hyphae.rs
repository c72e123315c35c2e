//! `hyphae`: the operator CLI. Parses arguments and maps outcomes to exit codes; the work is in
//! the library's `cli` module.

use std::process::ExitCode;

use clap::Parser;
use hyphae_control_plane::cli::{self, Cli, Outcome};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cli::run(cli, &mut out) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Invalid) => ExitCode::from(1),
        // Whoever read the output stopped early (`hyphae get | head -1`): nothing went wrong.
        Err(error)
            if error.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("hyphae: error: {error:#}");
            ExitCode::from(2)
        }
    }
}
