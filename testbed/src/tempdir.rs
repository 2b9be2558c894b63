//! Temp dirs for test servers, removed on drop, and swept when a previous test process was
//! killed before it could remove its own (`SIGKILL` runs no destructors).

use std::path::Path;

use crate::error::{Error, Result};

/// Creates `$TMPDIR/testbed-<kind>-<pid>-XXXXXX`, first removing `testbed-*` dirs left behind by
/// test processes that no longer exist.
pub(crate) fn create(kind: &str) -> Result<tempfile::TempDir> {
    let tmp = std::env::temp_dir();
    sweep(&tmp);
    tempfile::Builder::new()
        .prefix(&format!("testbed-{kind}-{}-", std::process::id()))
        .tempdir_in(&tmp)
        .map_err(Error::fs("create temp dir", tmp))
}

fn sweep(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("testbed-")) else {
            continue;
        };
        // rest = "<kind>-<pid>-<random>"
        let mut parts = rest.splitn(3, '-');
        let (Some(_kind), Some(pid), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            // Best effort: another sweeper may race us; leftovers are harmless.
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
