//! `hyphae-agent-dev`: the agent with a one-node control plane embedded, what
//! `hyphae-agent --dev` runs on a laptop or a lone edge box (decision 51).

fn main() -> std::process::ExitCode {
    hyphae_agent::cli::main::<hyphae_agent::dev::DevControlPlane>()
}
