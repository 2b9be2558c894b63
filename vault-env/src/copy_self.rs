//! `vault-env copy-self DIR`: copies the running executable to `DIR/vault-env` atomically, so
//! the injected init container needs neither a shell nor `cp`.
//!
//! The copy is written to a temporary file in `DIR` (same file system), flushed to disk,
//! made `0555` and renamed over the target; the directory is then synced. A reader of
//! `DIR/vault-env` sees either the old file or the whole new one, never a partial copy.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The file name the copy gets in the target directory.
pub const TARGET_NAME: &str = "vault-env";

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
    copy_file(Path::new("/proc/self/exe"), dir).map_err(|error| match error {
        Step::Source(source) => CopyError::OpenSelf(source),
        Step::Other(error) => error,
    })
}

enum Step {
    Source(io::Error),
    Other(CopyError),
}

fn copy_file(source: &Path, dir: &Path) -> Result<PathBuf, Step> {
    let mut input = File::open(source).map_err(Step::Source)?;
    let target = dir.join(TARGET_NAME);
    let temp = dir.join(format!(".{TARGET_NAME}.{}.tmp", std::process::id()));
    let mut output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(|source| {
            Step::Other(CopyError::Create {
                path: temp.clone(),
                source,
            })
        })?;
    let written = (|| {
        io::copy(&mut input, &mut output)?;
        output.sync_all()?;
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o555))?;
        drop(output);
        std::fs::rename(&temp, &target)?;
        // The rename is durable only once the directory entry is.
        File::open(dir)?.sync_all()
    })();
    if let Err(source) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(Step::Other(CopyError::Write {
            path: target,
            source,
        }));
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
}
