//! `cargo xtask test`: the README's test command. Installs what tests need on a fresh machine,
//! then runs every test. CI calls exactly this.

use anyhow::Result;

use crate::util;

/// Runs every test of the workspace.
pub fn run(args: &[String]) -> Result<()> {
    install_test_tools()?;
    util::run(
        util::cargo()
            .args(["test", "--workspace", "--locked"])
            .args(args),
    )
}

/// Tests today need only the Rust toolchain. Tools from apt (curl, h2load, haproxy) get
/// installed here, idempotently, when tests start to need them.
fn install_test_tools() -> Result<()> {
    Ok(())
}
