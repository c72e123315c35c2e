//! `hyphae-agent`: arguments, then the library does the work.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The hyphae agent.
#[derive(Debug, Parser)]
#[command(name = "hyphae-agent", version, about = "The hyphae per-host agent")]
struct Args {
    /// The agent's configuration file (one `AgentConfig` document).
    #[arg(
        long,
        short,
        value_name = "FILE",
        default_value = "/etc/hyphae/agent.yaml"
    )]
    config: PathBuf,
    /// Check the configuration file, print a summary and exit (0 when valid, 1 otherwise).
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match hyphae_agent::config::load(&args.config) {
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
            "ok: node `{}` in site `{}`: {} local service(s), {} upstream(s), {} static service(s), {} control-plane address(es)",
            config.node,
            config.spec.site,
            config.spec.services.len(),
            config.spec.upstreams.len(),
            config.spec.static_services.len(),
            config.spec.control_plane.len(),
        );
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "hyphae-agent: configuration is valid, but this build has no data plane yet; \
         run with --check to validate configuration files"
    );
    ExitCode::from(2)
}
