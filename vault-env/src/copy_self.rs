//! `vault-env copy-self DIR`: copies the running executable to `DIR/vault-env` atomically, so
//! the injected init container needs neither a shell nor `cp`.
//!
//! The copy is written to a temporary file in `DIR` (same file system), flushed to disk,
//! made `0555` and renamed over the target; the directory is then synced. A reader of
//! `DIR/vault-env` sees either the old file or the whole new one, never a partial copy.
//!
//! With `STRONGROOM_GUARD_MODE` set (the webhook copies the pod's `strongroom.dev/guard-mode`
//! annotation into the init container), it first writes `DIR/guard-mode` the same way: the
//! ebpf-guard agent reads that file next to the binary to learn the pod's mode. It is written
//! before the binary so the agent never sees the binary without the mode.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The file name the copy gets in the target directory.
pub const TARGET_NAME: &str = "vault-env";
/// The file holding the pod's guard mode, next to the binary (ebpf-guard's `kubelet::MODE_FILE`).
pub const GUARD_MODE_FILE: &str = "guard-mode";
/// The variable naming the pod's guard mode (`enforce` or `audit`).
pub const GUARD_MODE_ENV: &str = "STRONGROOM_GUARD_MODE";

/// A failure to copy the executable.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The running executable could not be opened.
    #[error("open the running executable /proc/self/exe")]
    OpenSelf(#[source] io::Error),
    /// The temporary file could not be created.
    #[error("create {path}")]
    Create {
        /// The temporary file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The guard mode is neither `enforce` nor `audit`.
    #[error("{GUARD_MODE_ENV} must be enforce or audit, not {0:?}")]
    InvalidGuardMode(String),
    /// Copying, syncing, chmod or rename failed.
    #[error("write {path}")]
    Write {
        /// The target.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Copies `/proc/self/exe` to `dir/vault-env` with mode 0555; returns the target path.
pub fn copy_self(dir: &Path) -> Result<PathBuf, CopyError> {
    let mut input = File::open("/proc/self/exe").map_err(CopyError::OpenSelf)?;
    install(dir, TARGET_NAME, 0o555, |output| {
        io::copy(&mut input, output).map(drop)
    })
}

/// Writes `dir/guard-mode` (mode 0444) holding `mode`, which must be `enforce` or `audit`.
pub fn write_guard_mode(dir: &Path, mode: &str) -> Result<PathBuf, CopyError> {
    // The agent only accepts these two words; anything else is a misconfigured pod.
    if !matches!(mode, "enforce" | "audit") {
        return Err(CopyError::InvalidGuardMode(mode.to_owned()));
    }
    install(dir, GUARD_MODE_FILE, 0o444, |output| {
        io::Write::write_all(output, format!("{mode}\n").as_bytes())
    })
}

/// Writes `dir/name` atomically: a temporary file in `dir` filled by `fill`, synced, given
/// `permissions` and renamed over the target; then the directory entry is synced.
fn install(
    dir: &Path,
    name: &str,
    permissions: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<PathBuf, CopyError> {
    let target = dir.join(name);
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(|source| CopyError::Create {
            path: temp.clone(),
            source,
        })?;
    let written = (|| {
        fill(&mut output)?;
        output.sync_all()?;
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(permissions))?;
        drop(output);
        std::fs::rename(&temp, &target)?;
        // The rename is durable only once the directory entry is.
        File::open(dir)?.sync_all()
    })();
    if let Err(source) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(CopyError::Write {
            path: target,
            source,
        });
    }
    Ok(target)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn copy_self_writes_identical_read_only_executable() {
        let dir = tempfile::tempdir().unwrap();
        let target = copy_self(dir.path()).unwrap();
        assert_eq!(target, dir.path().join("vault-env"));
        let me = std::fs::read("/proc/self/exe").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), me);
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o555);
        // No temporary file is left behind; a second copy replaces the first.
        copy_self(dir.path()).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["vault-env"]);
    }

    #[test]
    fn copy_self_missing_dir_names_target() {
        let err = copy_self(Path::new("/nonexistent/dir")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/dir"), "{err}");
    }

    #[test]
    fn write_guard_mode_valid_mode_writes_read_only_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = write_guard_mode(dir.path(), "audit").unwrap();
        assert_eq!(target, dir.path().join(GUARD_MODE_FILE));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "audit\n");
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o444);
        // Rewriting replaces the read-only file (rename, not open-for-write).
        write_guard_mode(dir.path(), "enforce").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "enforce\n");
    }

    #[test]
    fn write_guard_mode_unknown_mode_is_refused_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_guard_mode(dir.path(), "permissive").unwrap_err();
        assert!(err.to_string().contains("\"permissive\""), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
