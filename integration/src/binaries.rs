//! Where the workspace's binaries are for a caller that is not their own package's test (the
//! multi-process tests here, which run every crate's binaries). A package's own tests use
//! `env!("CARGO_BIN_EXE_<name>")` instead.

use std::path::{Path, PathBuf};

/// The binary `name` in the target directory the running test was built in
/// (`target/<profile>/`). Panics with what to run when it is not built: `cargo xtask test`
/// and `cargo test --workspace` build every binary before any test runs.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its own path");
    // target/<profile>/deps/<test> → target/<profile>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (cargo xtask test does)",
        path.display()
    );
    path
}
