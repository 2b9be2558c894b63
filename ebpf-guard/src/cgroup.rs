//! Cgroup v2 identities: from a cgroup id (what `bpf_get_current_cgroup_id()` returns, the
//! inode of the cgroup directory) to the pod and container it belongs to.
//!
//! Both kubelet cgroup drivers are understood:
//! systemd `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope`
//! and cgroupfs `kubepods/burstable/pod<uid>/<id>`.
//!
//! # Security
//! Cgroup names are chosen by the container runtime and kubelet, not by workloads, but a
//! privileged pod could create cgroups; parsed names only enrich audit events and never
//! decide access.
use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// Where a cgroup sits in the kubelet's tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupIdentity {
    /// Pod uid (dashes), if the cgroup is inside a pod.
    pub pod_uid: Option<String>,
    /// Container id (hex), if the cgroup is a container's.
    pub container_id: Option<String>,
    /// Path relative to the cgroup root.
    pub path: String,
}

/// Parses a cgroup path (relative to the v2 root) into pod uid and container id.
pub fn identify(relative: &str) -> CgroupIdentity {
    let mut identity = CgroupIdentity {
        path: relative.to_owned(),
        ..CgroupIdentity::default()
    };
    let mut after_pod = false;
    for component in relative.split('/').filter(|c| !c.is_empty()) {
        if let Some(uid) = pod_uid_of(component) {
            identity.pod_uid = Some(uid);
            after_pod = true;
            continue;
        }
        if after_pod {
            identity.container_id = Some(container_id_of(component));
        }
    }
    identity
}

/// `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid_with_underscores>.slice` (systemd).
fn pod_uid_of(component: &str) -> Option<String> {
    let name = component.strip_suffix(".slice").unwrap_or(component);
    let at = name.rfind("pod")?;
    let prefix = &name[..at];
    if !(prefix.is_empty() || prefix.ends_with('-')) {
        return None;
    }
    let uid = name[at + 3..].replace('_', "-");
    let plausible = uid.len() >= 8
        && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        && uid.chars().any(|c| c.is_ascii_hexdigit());
    plausible.then_some(uid)
}

/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope` or a bare `<id>`.
fn container_id_of(component: &str) -> String {
    let name = component.strip_suffix(".scope").unwrap_or(component);
    match name.rfind('-') {
        Some(at) if name[at + 1..].chars().all(|c| c.is_ascii_hexdigit()) => {
            name[at + 1..].to_owned()
        }
        _ => name.to_owned(),
    }
}

/// Finds the cgroup v2 mount point in `/proc/self/mountinfo` (`/sys/fs/cgroup` on unified
/// hosts, `/sys/fs/cgroup/unified` on hybrid ones).
pub fn find_cgroup2_root() -> io::Result<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    parse_cgroup2_root(&mountinfo)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no cgroup2 mount"))
}

fn parse_cgroup2_root(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        (fstype == "cgroup2").then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

/// The id (directory inode) of a cgroup.
pub fn cgroup_id(path: &Path) -> io::Result<u64> {
    Ok(fs::metadata(path)?.ino())
}

/// The kubepods tree root under `root`: `kubepods.slice` or `kubepods`, with its id and level
/// (the v2 root is level 0).
pub fn find_kubepods(root: &Path) -> Option<(PathBuf, u64, u32)> {
    ["kubepods.slice", "kubepods"].iter().find_map(|name| {
        let path = root.join(name);
        let id = cgroup_id(&path).ok()?;
        path.is_dir().then_some((path, id, 1))
    })
}

/// A cache of cgroup id → identity, refreshed by walking the tree.
#[derive(Debug)]
pub struct CgroupIndex {
    root: PathBuf,
    by_id: HashMap<u64, CgroupIdentity>,
}

impl CgroupIndex {
    /// An empty index over the v2 hierarchy mounted at `root`.
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            by_id: HashMap::new(),
        }
    }

    /// Re-walks the whole tree (depth-limited).
    pub fn refresh(&mut self) {
        let mut by_id = HashMap::new();
        walk(&self.root, &self.root, 0, &mut by_id);
        self.by_id = by_id;
    }

    /// Identity of a cgroup id, refreshing once on a miss.
    pub fn resolve(&mut self, id: u64) -> Option<CgroupIdentity> {
        if !self.by_id.contains_key(&id) {
            self.refresh();
        }
        self.by_id.get(&id).cloned()
    }

    /// Identity of a cgroup id as of the last refresh.
    pub fn get(&self, id: u64) -> Option<&CgroupIdentity> {
        self.by_id.get(&id)
    }

    /// Every cgroup known since the last refresh.
    pub fn entries(&self) -> impl Iterator<Item = (u64, &CgroupIdentity)> {
        self.by_id.iter().map(|(id, identity)| (*id, identity))
    }

    /// Whether a cgroup id is currently known (after the last refresh).
    pub fn contains(&self, id: u64) -> bool {
        self.by_id.contains_key(&id)
    }

    /// All known cgroups of one pod: (id, identity).
    pub fn pod_cgroups(&self, pod_uid: &str) -> Vec<(u64, CgroupIdentity)> {
        self.by_id
            .iter()
            .filter(|(_, identity)| identity.pod_uid.as_deref() == Some(pod_uid))
            .map(|(id, identity)| (*id, identity.clone()))
            .collect()
    }

    /// Absolute path of a known cgroup.
    pub fn path_of(&self, identity: &CgroupIdentity) -> PathBuf {
        self.root.join(&identity.path)
    }
}

const MAX_DEPTH: usize = 10;

fn walk(root: &Path, dir: &Path, depth: usize, out: &mut HashMap<u64, CgroupIdentity>) {
    let Ok(meta) = fs::metadata(dir) else { return };
    let relative = dir
        .strip_prefix(root)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.insert(meta.ino(), identify(&relative));
    if depth >= MAX_DEPTH {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(root, &entry.path(), depth + 1, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identify_systemd_driver_path_yields_pod_and_container() {
        let id = identify(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod8a1b2c3d_1111_2222_3333_444455556666.slice/cri-containerd-0123abcd.scope",
        );
        assert_eq!(
            id.pod_uid.as_deref(),
            Some("8a1b2c3d-1111-2222-3333-444455556666")
        );
        assert_eq!(id.container_id.as_deref(), Some("0123abcd"));
    }

    #[test]
    fn identify_cgroupfs_driver_path_yields_pod_and_container() {
        let id = identify("kubepods/besteffort/pod8a1b2c3d-1111-2222-3333-444455556666/deadbeef");
        assert_eq!(
            id.pod_uid.as_deref(),
            Some("8a1b2c3d-1111-2222-3333-444455556666")
        );
        assert_eq!(id.container_id.as_deref(), Some("deadbeef"));
    }

    #[test]
    fn identify_pod_level_cgroup_has_no_container() {
        let id = identify("kubepods/pod8a1b2c3d-1111-2222-3333-444455556666");
        assert!(id.pod_uid.is_some());
        assert_eq!(id.container_id, None);
    }

    #[test]
    fn identify_host_cgroup_has_no_pod() {
        let id = identify("system.slice/kubelet.service");
        assert_eq!(
            id,
            CgroupIdentity {
                path: "system.slice/kubelet.service".into(),
                ..CgroupIdentity::default()
            }
        );
        assert_eq!(identify("init.scope").pod_uid, None);
    }

    #[test]
    fn parse_cgroup2_root_hybrid_host_finds_unified() {
        let mountinfo = "30 25 0:26 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755\n\
                         31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_cgroup2_root(mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            parse_cgroup2_root("1 2 0:3 / /proc rw - proc proc rw\n"),
            None
        );
    }

    #[test]
    fn cgroup_index_real_tree_resolves_created_container_cgroup() {
        let Ok(root) = find_cgroup2_root() else {
            return;
        };
        let base = root.join(format!("strongroom-cg-test-{}", std::process::id()));
        let leaf = base.join("kubepods/pod0f0e0d0c-0000-1111-2222-333344445555/cafe01");
        if fs::create_dir_all(&leaf).is_err() {
            return; // not root or no writable cgroup2: nothing to test here
        }
        let id = cgroup_id(&leaf).expect("stat created cgroup");
        let mut index = CgroupIndex::new(root.clone());
        let identity = index.resolve(id);
        // Remove deepest first; cgroup directories must be rmdir'ed one by one.
        let mut dir = leaf.clone();
        while dir.starts_with(&base) {
            let _ = fs::remove_dir(&dir);
            dir = match dir.parent() {
                Some(parent) => parent.to_owned(),
                None => break,
            };
        }
        let identity = identity.expect("created cgroup is indexed");
        assert_eq!(
            identity.pod_uid.as_deref(),
            Some("0f0e0d0c-0000-1111-2222-333344445555")
        );
        assert_eq!(identity.container_id.as_deref(), Some("cafe01"));
    }
}
