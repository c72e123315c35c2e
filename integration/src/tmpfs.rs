//! A size-limited tmpfs mounted over a folder for as long as a test holds it, so a test can
//! fill a disk for real (a store that fails its writes). Mounting needs root: without it,
//! [`Tmpfs::mount`] says so and the test skips, instead of failing. Never leaves a mount behind.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// A disk size ([`Tmpfs::mount`]) with room for a few writes of a control-plane node and not
/// many more.
pub const SMALL_DISK: &str = "2m";

/// A mounted tmpfs; dropping it unmounts it.
#[derive(Debug)]
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` bytes (`mount -o size=`, e.g. `2m`) on `dir`, created if
    /// missing. `Ok(None)` when this process is not root and cannot mount: the caller skips,
    /// and should print why.
    pub fn mount(dir: &Path, size: &str) -> Result<Option<Tmpfs>, Error> {
        if !rustix::process::geteuid().is_root() {
            return Ok(None);
        }
        let failed = |reason: String| Error::Mount {
            path: dir.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| failed(e.to_string()))?;
        if !output.status.success() {
            return Err(failed(
                String::from_utf8_lossy(&output.stderr).trim().to_string(),
            ));
        }
        Ok(Some(Tmpfs {
            dir: dir.to_path_buf(),
        }))
    }

    /// Where it is mounted.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Gives the disk `size` bytes (`mount -o remount,size=`), keeping what it holds: a full
    /// disk that an operator makes room on.
    pub fn resize(&self, size: &str) -> Result<(), Error> {
        let failed = |reason: String| Error::Mount {
            path: self.dir.display().to_string(),
            reason,
        };
        let output = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .output()
            .map_err(|e| failed(e.to_string()))?;
        if !output.status.success() {
            return Err(failed(
                String::from_utf8_lossy(&output.stderr).trim().to_string(),
            ));
        }
        Ok(())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a process of the test holds a file): detach it now, gone once freed.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}
