//! Files that hold a token secret: read only when no one but the owner can read them, created
//! with owner-only permissions. Never logs the secret.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::tokens;

/// Why a secret file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file could not be read or written.
    #[error("cannot use the token file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// Others than its owner may read or write it.
    #[error("the token file {path} is readable by others (mode {mode:o}); run `chmod 600 {path}`")]
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
    let secret = text.trim().to_string();
    tokens::check_secret(&secret).map_err(|reason| SecretFileError::Unusable {
        path: path.to_path_buf(),
        reason,
    })?;
    Ok(secret)
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
    let secret = tokens::new_secret();
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
