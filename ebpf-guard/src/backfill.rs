//! Best-effort backfill for containers whose processes started before the guard was loaded.
//!
//! The kernel roots a container's lineage at the first exec it sees in the container's
//! cgroup. For a container that was already running when the programs were attached, that
//! first exec would be an exec session's, so the agent claims such containers first: it
//! creates the container entry (so no later exec can claim it) and adds the container's
//! init process and the processes descending from it as lineage members.
//!
//! Limits (documented in the README): the init is the process of the cgroup whose parent is
//! outside it and that started first; descendants are found through their current parent,
//! so an exec session's orphan re-parented to the init before the guard started would be
//! trusted. Backfilled entries carry no exact start time (the kernel's `start_time` is not
//! visible from userspace), so each inserted process is verified to still be the same one
//! (start time in clock ticks) after insertion, and exit cleanup removes entries as usual.
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;

use crate::abi::{CONTAINER_ACTIVE, ContainerPolicy, ContainerState, LineageEntry};
use crate::loader::{Guard, LoaderError};

/// One process as `/proc/<pid>/stat` describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// Parent pid.
    pub ppid: u32,
    /// Start time in clock ticks since boot.
    pub start_ticks: u64,
}

/// Parses `/proc/<pid>/stat` (the command name may contain spaces and parentheses).
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the comm: state(3) ppid(4) ... starttime(22) → indexes 0, 1, ..., 19.
    Some(ProcStat {
        ppid: fields.get(1)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

fn read_stat(proc_root: &Path, pid: u32) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?)
}

/// The trusted processes of a container: its init (the earliest-started process whose
/// parent is outside the set; first in the result) and every process descending from it
/// within the set.
pub fn trusted_tree(procs: &BTreeMap<u32, ProcStat>) -> Vec<u32> {
    let Some(init) = procs
        .iter()
        .filter(|(_, stat)| !procs.contains_key(&stat.ppid))
        .min_by_key(|(pid, stat)| (stat.start_ticks, **pid))
        .map(|(pid, _)| *pid)
    else {
        return Vec::new();
    };
    let mut trusted = vec![init];
    for &pid in procs.keys().filter(|pid| **pid != init) {
        let mut cursor = pid;
        // Bounded walk: parent chains inside one container are short, and cycles impossible.
        for _ in 0..procs.len() + 1 {
            if cursor == init {
                trusted.push(pid);
                break;
            }
            match procs.get(&cursor) {
                Some(stat) => cursor = stat.ppid,
                None => break,
            }
        }
    }
    trusted
}

/// Claims one running container: creates its entry unless the kernel (or an earlier agent)
/// already has one, then (for `mode` non-zero) its policy unless it has one, then adds its
/// trusted processes. Returns how many were added, or `None` if the container was already
/// known or is empty.
pub fn claim_container(
    guard: &mut Guard,
    cgroup_dir: &Path,
    cg: u64,
    mode: u32,
    pod_tag: u64,
    proc_root: &Path,
) -> Result<Option<usize>, LoaderError> {
    let Ok(list) = fs::read_to_string(cgroup_dir.join("cgroup.procs")) else {
        return Ok(None);
    };
    let procs: BTreeMap<u32, ProcStat> = list
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .filter_map(|pid| read_stat(proc_root, pid).map(|stat| (pid, stat)))
        .collect();
    let trusted = trusted_tree(&procs);
    let Some(&init) = trusted.first() else {
        return Ok(None);
    };
    let state = ContainerState {
        flags: CONTAINER_ACTIVE,
        owner_tgid: init,
    };
    if !guard.insert_container_if_absent(cg, state)? {
        return Ok(None);
    }
    // Before the lineage entries, so they never exist unprotected. If the kernel created a
    // policy meanwhile (an injector exec), it stays.
    if mode != 0 {
        guard.create_policy(
            cg,
            ContainerPolicy {
                mode,
                pad: 0,
                pod_tag,
            },
        )?;
    }
    let mut added = 0;
    for pid in &trusted {
        let entry = LineageEntry {
            start_time: 0,
            container_cg: cg,
        };
        guard.put_lineage(*pid, entry)?;
        // Verify after inserting: if the process is gone or its pid was reused, undo.
        if read_stat(proc_root, *pid).map(|s| s.start_ticks)
            == procs.get(pid).map(|s| s.start_ticks)
        {
            added += 1;
        } else {
            guard.remove_lineage(*pid)?;
        }
    }
    Ok(Some(added))
}

/// Claims every running container cgroup (`cgroups`: id → (dir, mode, pod tag)) that the
/// kernel does not know yet. Returns the claimed cgroup ids with the processes added.
pub fn claim_running(
    guard: &mut Guard,
    cgroups: &HashMap<u64, (std::path::PathBuf, u32, u64)>,
    proc_root: &Path,
) -> Result<Vec<(u64, usize)>, LoaderError> {
    let known = guard.containers();
    let mut claimed = Vec::new();
    for (cg, (dir, mode, tag)) in cgroups {
        if known.contains_key(cg) {
            continue;
        }
        if let Some(added) = claim_container(guard, dir, *cg, *mode, *tag, proc_root)? {
            claimed.push((*cg, added));
        }
    }
    Ok(claimed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_stat_comm_with_spaces_and_parens() {
        let line =
            "42 (my (odd) app) S 7 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 12345 1000 10";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                ppid: 7,
                start_ticks: 12345
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    fn stat(ppid: u32, start_ticks: u64) -> ProcStat {
        ProcStat { ppid, start_ticks }
    }

    #[test]
    fn trusted_tree_excludes_exec_session_processes() {
        // 100: container init (parent 10 = runtime shim, outside); 101, 102: its children;
        // 200: an exec session (parent 20 outside, started later) and its child 201.
        let procs = BTreeMap::from([
            (100, stat(10, 500)),
            (101, stat(100, 510)),
            (102, stat(101, 520)),
            (200, stat(20, 900)),
            (201, stat(200, 910)),
        ]);
        assert_eq!(trusted_tree(&procs), vec![100, 101, 102]);
    }

    #[test]
    fn trusted_tree_empty_container_trusts_nothing() {
        assert!(trusted_tree(&BTreeMap::new()).is_empty());
    }
}
