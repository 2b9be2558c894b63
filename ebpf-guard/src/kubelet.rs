//! Discovery of protected pods from the kubelet's on-disk layout.
//!
//! An injected pod has the vault-env binary the webhook's init container copied into its
//! emptyDir, `<kubelet-root>/pods/<uid>/volumes/kubernetes.io~empty-dir/vault-env/vault-env`,
//! and its service-account token in the projected volume,
//! `<kubelet-root>/pods/<uid>/volumes/kubernetes.io~projected/kube-api-access-*/token`.
//! The kubelet replaces tokens through `..data` symlinks, so the token's inode changes over
//! time: the agent rescans and re-registers.
//!
//! An optional `guard-mode` file next to the binary (`enforce` or `audit`, written by the
//! injector's init container from the pod's `strongroom.dev/guard-mode` annotation) sets
//! the pod's mode where no API server is configured.
//!
//! # Security
//! Paths under the kubelet root are created by the kubelet; file contents under the pod's
//! volumes are pod-controlled, so the mode file is parsed strictly and can only make the
//! guard stricter than the node's mode, never weaker.
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use crate::abi::{InodeKey, kernel_dev};
use crate::config::Mode;

/// Directory of the vault-env emptyDir inside a pod directory.
pub const INJECTOR_DIR: &str = "volumes/kubernetes.io~empty-dir/vault-env";
/// File name of the injector binary inside that directory.
pub const INJECTOR_FILE: &str = "vault-env";
/// File name of the optional per-pod mode file inside that directory.
pub const MODE_FILE: &str = "guard-mode";
/// Directory of projected volumes inside a pod directory.
pub const PROJECTED_DIR: &str = "volumes/kubernetes.io~projected";
/// Prefix of the default service-account token volume.
pub const TOKEN_VOLUME_PREFIX: &str = "kube-api-access-";

/// What the guard must protect for one injected pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtectedPod {
    /// Pod uid (the directory name under `pods/`).
    pub uid: String,
    /// The injector binary and its inode.
    pub injector: (PathBuf, InodeKey),
    /// Every service-account token file and its current inode.
    pub tokens: Vec<(PathBuf, InodeKey)>,
    /// Mode requested by the pod (mode file), if any.
    pub mode: Option<Mode>,
}

/// Scans `<kubelet_root>/pods/*` for injected pods. Pods without the injector binary are
/// not protected and not returned. A missing `pods` directory is an empty node.
pub fn scan(kubelet_root: &Path) -> io::Result<BTreeMap<String, ProtectedPod>> {
    let pods_dir = kubelet_root.join("pods");
    let entries = match fs::read_dir(&pods_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e),
    };
    let mut pods = BTreeMap::new();
    for entry in entries.flatten() {
        let uid = entry.file_name().to_string_lossy().into_owned();
        if !is_pod_uid(&uid) {
            continue;
        }
        if let Some(pod) = scan_pod(&entry.path(), uid.clone()) {
            pods.insert(uid, pod);
        }
    }
    Ok(pods)
}

fn scan_pod(pod_dir: &Path, uid: String) -> Option<ProtectedPod> {
    let injector_dir = pod_dir.join(INJECTOR_DIR);
    let injector_path = injector_dir.join(INJECTOR_FILE);
    let injector_key = inode_key(&injector_path).ok()?;
    let mode = fs::read_to_string(injector_dir.join(MODE_FILE))
        .ok()
        .and_then(|text| Mode::parse(text.trim()));
    let mut tokens = Vec::new();
    if let Ok(volumes) = fs::read_dir(pod_dir.join(PROJECTED_DIR)) {
        for volume in volumes.flatten() {
            if !volume
                .file_name()
                .to_string_lossy()
                .starts_with(TOKEN_VOLUME_PREFIX)
            {
                continue;
            }
            let token = volume.path().join("token");
            if let Ok(key) = inode_key(&token) {
                tokens.push((token, key));
            }
        }
    }
    tokens.sort();
    Some(ProtectedPod {
        uid,
        injector: (injector_path, injector_key),
        tokens,
        mode,
    })
}

/// The inode key of a file, following symlinks (tokens are `..data` symlinks); only
/// regular files qualify.
pub fn inode_key(path: &Path) -> io::Result<InodeKey> {
    let meta = fs::metadata(path)?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(InodeKey {
        ino: meta.ino(),
        dev: kernel_dev(meta.dev()),
        pad: 0,
    })
}

/// Pod uids are RFC 4122 UUIDs; anything else under `pods/` is ignored.
fn is_pod_uid(name: &str) -> bool {
    name.len() == 36
        && name.chars().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A stable 64-bit tag for a pod uid (FNV-1a), used to match tokens with lineages in the
/// kernel and to name the pod in events.
pub fn pod_tag(uid: &str) -> u64 {
    uid.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0f0e0d0c-0000-1111-2222-333344445555";

    fn pod(root: &Path, uid: &str) -> PathBuf {
        let dir = root.join("pods").join(uid);
        fs::create_dir_all(&dir).expect("mkdir pod");
        dir
    }

    fn add_injector(pod_dir: &Path) {
        let dir = pod_dir.join(INJECTOR_DIR);
        fs::create_dir_all(&dir).expect("mkdir emptyDir");
        fs::write(dir.join(INJECTOR_FILE), b"\x7fELF").expect("write injector");
    }

    /// Lays out a token the way the kubelet's atomic writer does: `token -> ..data/token`,
    /// `..data -> ..<timestamp>`.
    fn add_token(pod_dir: &Path, volume: &str, generation: &str) -> PathBuf {
        let vol = pod_dir.join(PROJECTED_DIR).join(volume);
        let ts = vol.join(format!("..{generation}"));
        fs::create_dir_all(&ts).expect("mkdir token generation");
        fs::write(ts.join("token"), b"header.payload.sig").expect("write token");
        let data = vol.join("..data");
        let _ = fs::remove_file(&data);
        std::os::unix::fs::symlink(format!("..{generation}"), &data).expect("..data link");
        let token = vol.join("token");
        if fs::symlink_metadata(&token).is_err() {
            std::os::unix::fs::symlink("..data/token", &token).expect("token link");
        }
        token
    }

    #[test]
    fn scan_injected_pod_finds_injector_and_token() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = pod(root.path(), UID);
        add_injector(&dir);
        let token = add_token(&dir, "kube-api-access-x7k2p", "2026_11_29_20_00_00.1");
        add_token(&dir, "other-projected", "2026_11_29_20_00_00.1");

        let pods = scan(root.path()).expect("scan");
        let found = pods.get(UID).expect("pod found");
        assert_eq!(
            found.injector.1,
            inode_key(&dir.join(INJECTOR_DIR).join(INJECTOR_FILE)).expect("stat")
        );
        assert_eq!(
            found.tokens.len(),
            1,
            "only kube-api-access-* volumes: {found:?}"
        );
        assert_eq!(found.tokens[0].0, token);
        assert_eq!(found.mode, None);
    }

    #[test]
    fn scan_rotated_token_reports_new_inode() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = pod(root.path(), UID);
        add_injector(&dir);
        add_token(&dir, "kube-api-access-abcde", "gen1");
        let before = scan(root.path()).expect("scan")[UID].tokens[0].1;
        add_token(&dir, "kube-api-access-abcde", "gen2");
        let after = scan(root.path()).expect("scan")[UID].tokens[0].1;
        assert_ne!(before, after);
    }

    #[test]
    fn scan_pod_without_injector_is_not_protected() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = pod(root.path(), UID);
        add_token(&dir, "kube-api-access-abcde", "gen1");
        assert!(scan(root.path()).expect("scan").is_empty());
    }

    #[test]
    fn scan_ignores_non_uid_directories_and_missing_root() {
        let root = tempfile::tempdir().expect("tempdir");
        add_injector(&pod(root.path(), "not-a-uid"));
        assert!(scan(root.path()).expect("scan").is_empty());
        assert!(scan(&root.path().join("absent")).expect("scan").is_empty());
    }

    #[test]
    fn scan_mode_file_is_parsed_strictly() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = pod(root.path(), UID);
        add_injector(&dir);
        fs::write(dir.join(INJECTOR_DIR).join(MODE_FILE), "audit\n").expect("write mode");
        assert_eq!(
            scan(root.path()).expect("scan")[UID].mode,
            Some(Mode::Audit)
        );
        fs::write(dir.join(INJECTOR_DIR).join(MODE_FILE), "off").expect("write mode");
        assert_eq!(scan(root.path()).expect("scan")[UID].mode, None);
    }

    #[test]
    fn pod_tag_distinct_uids_differ() {
        assert_ne!(
            pod_tag(UID),
            pod_tag("0f0e0d0c-0000-1111-2222-333344445556")
        );
        assert_eq!(pod_tag(UID), pod_tag(UID));
    }
}
