//! The admin token the clusters this process starts are bootstrapped with: a random secret
//! made once per process, written to an owner-only file for the initializing node, and sent
//! by [`crate::http`]'s node helpers and [`crate::cli`]. Tests that check refusals send
//! requests without it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::OnceLock;

/// The admin token's secret for every cluster this process starts.
pub fn admin_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let bits: [u8; 32] = rand::random();
        let hex: String = bits.iter().map(|b| format!("{b:02x}")).collect();
        format!("hyphae_{hex}")
    })
}

/// The `Authorization` header value carrying [`admin_token`], for hand-built requests.
pub fn bearer() -> String {
    format!("Bearer {}", admin_token())
}

/// Writes [`admin_token`] to `path` with mode 0600 (replacing what was there), where a node
/// started with `--init --bootstrap-token-file` or an agent with `--dev` reads it.
pub fn write_token_file(path: &Path) -> std::io::Result<()> {
    write_secret_file(path, admin_token())
}

/// Writes `secret` to `path` with mode 0600, replacing what was there.
pub fn write_secret_file(path: &Path, secret: &str) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{secret}")
}
