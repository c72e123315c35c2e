//! Short-lived commands a test runs to completion (a client script, a syntax check) and needs to
//! have succeeded. Long-running children are [`crate::process`]'s business.

use std::process::{Command, Output};

/// Runs `command` (described as `what` in failures) to completion and returns its output;
/// fails the test, showing its stderr, when it cannot start or exits non-zero.
pub fn succeeds(what: &str, command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {what}: {error}"));
    assert!(
        output.status.success(),
        "{what} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
