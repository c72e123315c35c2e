//! `hyphae-agent`: the agent every host runs. It embeds no control plane; `--dev` hands the
//! process over to `hyphae-agent-dev` (decision 51). The work is in the library.

fn main() -> std::process::ExitCode {
    hyphae_agent::cli::main::<hyphae_agent::dev::Elsewhere>()
}
