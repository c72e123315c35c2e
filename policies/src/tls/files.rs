//! Where a host keeps its TLS material: one folder (owner-only) with the roots it trusts
//! (`ca.pem`), its chain, leaf first (`node.pem`), and its private key (`node-key.pem`,
//! owner-only, read only when no one else can). Each file is replaced through a staged file
//! renamed in place, so a reader never sees half of one.

use std::path::{Path, PathBuf};

use crate::secret_file::{self, SecretFileError};

const ROOTS_FILE: &str = "ca.pem";
const CHAIN_FILE: &str = "node.pem";
const KEY_FILE: &str = "node-key.pem";

/// What could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// A public file.
    #[error("cannot use {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The key file.
    #[error(transparent)]
    Key(#[from] SecretFileError),
}

/// The texts of a host's TLS files.
#[derive(Clone, PartialEq, Eq)]
pub struct Material {
    /// The roots, PEM.
    pub roots: String,
    /// The chain, leaf first, PEM.
    pub chain: String,
    /// The private key, PEM.
    pub key: String,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Material")
            .field("roots", &self.roots.len())
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// A host's TLS folder.
#[derive(Debug, Clone)]
pub struct CertificateFiles {
    dir: PathBuf,
}

impl CertificateFiles {
    /// The folder `dir` (created on the first save).
    pub fn new(dir: PathBuf) -> CertificateFiles {
        CertificateFiles { dir }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a certificate was saved here.
    pub fn exist(&self) -> bool {
        self.dir.join(CHAIN_FILE).exists()
    }

    /// Reads the three files.
    pub fn load(&self) -> Result<Material, FilesError> {
        let read = |name: &str| {
            let path = self.dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| FilesError::Io { path, source })
        };
        Ok(Material {
            roots: read(ROOTS_FILE)?,
            chain: read(CHAIN_FILE)?,
            key: secret_file::read_pem(&self.dir.join(KEY_FILE))?,
        })
    }

    /// Writes the key, then the chain, then the roots when given (a renewal keeps them).
    pub fn save(&self, roots: Option<&str>, chain: &str, key: &str) -> Result<(), FilesError> {
        create_private_dir(&self.dir)?;
        secret_file::write_pem(&self.dir.join(KEY_FILE), key)?;
        self.write_public(CHAIN_FILE, chain)?;
        if let Some(roots) = roots {
            self.write_public(ROOTS_FILE, roots)?;
        }
        Ok(())
    }

    /// Writes an owner-only file next to the others (a root's key, say).
    pub fn save_private(&self, name: &str, text: &str) -> Result<(), FilesError> {
        create_private_dir(&self.dir)?;
        Ok(secret_file::write_pem(&self.dir.join(name), text)?)
    }

    /// Reads an owner-only file next to the others, if it is there.
    pub fn load_private(&self, name: &str) -> Option<String> {
        secret_file::read_pem(&self.dir.join(name)).ok()
    }

    /// Removes an owner-only file next to the others; a missing one is fine.
    pub fn remove_private(&self, name: &str) -> Result<(), FilesError> {
        let path = self.dir.join(name);
        match std::fs::remove_file(&path) {
            Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
                Err(FilesError::Io { path, source })
            }
            _ => Ok(()),
        }
    }

    fn write_public(&self, name: &str, text: &str) -> Result<(), FilesError> {
        let path = self.dir.join(name);
        let staged = self.dir.join(format!("{name}.new"));
        std::fs::write(&staged, text)
            .and_then(|()| std::fs::rename(&staged, &path))
            .map_err(|source| FilesError::Io { path, source })
    }
}

fn create_private_dir(dir: &Path) -> Result<(), FilesError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| FilesError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_material_loads_back_and_a_renewal_keeps_the_roots() {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let files = CertificateFiles::new(dir.path().join("tls"));
        assert!(!files.exist());
        files.save(Some("roots"), "chain", "key").expect("save");
        assert!(files.exist());
        files.save(None, "chain 2", "key 2").expect("renew");
        assert_eq!(
            files.load().expect("load"),
            Material {
                roots: "roots".into(),
                chain: "chain 2".into(),
                key: "key 2".into()
            }
        );
    }
}
