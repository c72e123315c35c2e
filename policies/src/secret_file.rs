//! Files that hold a secret (a token, a private key): read only when no one but the owner can read them, created
//! with owner-only permissions. Never logs the secret.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a secret file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file could not be read or written.
    #[error("cannot use the secret file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// Others than its owner may read or write it.
    #[error("the secret file {path} is readable by others (mode {mode:o}); run `chmod 600 {path}`")]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// It does not hold a usable secret.
    #[error("the token file {path} does not hold a usable secret: {reason}")]
    Unusable {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Reads the secret in `path` (surrounding white space ignored), refusing a file that group or
/// others may access, one another user owns, or a symbolic link. The checks and the read use
/// one open handle, so the file cannot be swapped in between.
pub fn read(path: &Path) -> Result<String, SecretFileError> {
    let secret = read_owner_only(path)?.trim().to_string();
    check_secret(&secret).map_err(|reason| SecretFileError::Unusable {
        path: path.to_path_buf(),
        reason,
    })?;
    Ok(secret)
}

/// Reads a private key (PEM) from `path` under the same checks as [`read`].
pub fn read_pem(path: &Path) -> Result<String, SecretFileError> {
    read_owner_only(path)
}

/// Writes `text` (a private key, PEM) to `path`, owner-only, through a staged file renamed in
/// place, so a reader sees the old key or the new one, never half of one.
pub fn write_pem(path: &Path, text: &str) -> Result<(), SecretFileError> {
    let io = |source| SecretFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let staged = path.with_extension("new");
    let _ = std::fs::remove_file(&staged);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&staged)
        .map_err(io)?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&staged, path))
        .map_err(io)
}

/// Fewest characters a token secret may have.
pub const MIN_SECRET_CHARS: usize = 32;

/// Whether `secret` can be a token secret: long enough, printable ASCII without spaces (it
/// travels in a header and sits in files).
pub fn check_secret(secret: &str) -> Result<(), String> {
    if secret.chars().count() < MIN_SECRET_CHARS {
        return Err(format!(
            "a token secret needs at least {MIN_SECRET_CHARS} characters"
        ));
    }
    if !secret.chars().all(|c| c.is_ascii_graphic()) {
        return Err("a token secret may hold only printable ASCII without spaces".to_string());
    }
    Ok(())
}

/// Prefix of generated secrets, so a leaked one is recognisable in a scan.
pub const SECRET_PREFIX: &str = "hyphae_";

/// A new random secret: the prefix and 256 random bits in hex.
pub fn new_secret() -> String {
    let bits: [u8; 32] = rand::random();
    let hex: String = bits.iter().map(|b| format!("{b:02x}")).collect();
    format!("{SECRET_PREFIX}{hex}")
}

fn read_owner_only(path: &Path) -> Result<String, SecretFileError> {
    let io = |source| SecretFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(io)?;
    let metadata = file.metadata().map_err(io)?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::Exposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    let me = rustix::process::geteuid().as_raw();
    if metadata.uid() != me {
        return Err(SecretFileError::Unusable {
            path: path.to_path_buf(),
            reason: format!(
                "it belongs to user {}, not to this process's user {me}",
                metadata.uid()
            ),
        });
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io)?;
    Ok(text)
}

/// The secret in `path`, or a new random one written there (mode 0600) when the file does not
/// exist. Returns the secret and whether it was created.
pub fn read_or_create(path: &Path) -> Result<(String, bool), SecretFileError> {
    if path.exists() {
        return read(path).map(|secret| (secret, false));
    }
    let io = |source| SecretFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let secret = new_secret();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(io)?;
    file.write_all(format!("{secret}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io)?;
    Ok((secret, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_secret_reads_back_and_an_exposed_file_is_refused() {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let path = dir.path().join("nested/token");
        let (secret, created) = read_or_create(&path).expect("create");
        assert!(created);
        assert_eq!(read_or_create(&path).expect("read back"), (secret, false));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(read(&path), Err(SecretFileError::Exposed { .. })));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).expect("a symbolic link");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(
            matches!(read(&link), Err(SecretFileError::Io { .. })),
            "links are refused"
        );
        let short = dir.path().join("short");
        std::fs::write(&short, "abc").expect("write");
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(matches!(
            read(&short),
            Err(SecretFileError::Unusable { .. })
        ));
    }
}
