//! The binary interface shared with the BPF program: `#[repr(C)]` mirrors of `bpf/guard.h`.
//!
//! Every struct and constant in `guard.h` has its twin here and nowhere else; the size
//! assertions at the bottom fail the build if the two drift apart.
#![allow(
    unsafe_code,
    reason = "aya::Pod is an unsafe marker trait: these plain C structs may be read from raw map bytes"
)]

/// Audit mode: allow, but record.
pub const MODE_AUDIT: u32 = 1;
/// Enforce mode: deny and record.
pub const MODE_ENFORCE: u32 = 2;

/// Hook id: `lsm/ptrace_access_check`.
pub const HOOK_PTRACE_ACCESS_CHECK: u32 = 1;
/// Hook id: `lsm/bprm_check_security` (exec of the injector).
pub const HOOK_BPRM_CHECK_SECURITY: u32 = 2;
/// Hook id: `lsm/file_open` (service-account token).
pub const HOOK_FILE_OPEN: u32 = 3;
/// Hook id: `lsm/task_kill` (core-dumping signals).
pub const HOOK_TASK_KILL: u32 = 4;
/// Pseudo-hook id: a protected lineage started (`tp_btf/sched_process_exec`).
pub const HOOK_LINEAGE_START: u32 = 5;

/// Decision: denied.
pub const DECISION_DENY: u32 = 1;
/// Decision: would have been denied, allowed by audit mode.
pub const DECISION_AUDIT: u32 = 2;
/// Decision: allowed (informational events).
pub const DECISION_ALLOW: u32 = 3;

/// `ContainerState::flags` (written by the BPF side only): reserved by an injector exec check
/// for `owner_tgid`.
pub const CONTAINER_PENDING: u32 = 1;
/// `ContainerState::flags`: lineage root claimed (first exec in the container).
pub const CONTAINER_ACTIVE: u32 = 2;
/// `ContainerState::flags`: a lineage insert failed; the container fails closed.
pub const CONTAINER_DEGRADED: u32 = 4;

/// `GuardConfig::flags`: trust host tasks (initial PID namespace, outside kubepods).
pub const CONFIG_HOST_BYPASS: u32 = 1;

/// Index in the `stats` per-CPU array: events dropped because the ring buffer was full.
pub const STAT_RINGBUF_DROPPED: u32 = 0;
/// Index in the `stats` per-CPU array: lineage inserts that failed (map full).
pub const STAT_LINEAGE_FULL: u32 = 1;
/// Index in the `stats` per-CPU array: container reservations that failed (map full).
pub const STAT_CONTAINERS_FULL: u32 = 2;
/// Number of entries in the `stats` array.
pub const STAT_MAX: u32 = 4;

/// Index in the `guard_state` array: containers the BPF side has marked degraded so far
/// (never reset; while 0, `ptrace_access_check` skips the degraded-container lookup).
pub const STATE_DEGRADED: u32 = 0;
/// Number of entries in the `guard_state` array.
pub const STATE_MAX: u32 = 1;

/// The `token_filter` array holds `2^TOKEN_FILTER_BITS_LOG2` bits (see
/// [`InodeKey::token_filter_slot`]).
pub const TOKEN_FILTER_BITS_LOG2: u32 = 18;
/// Multiplier of the token filter's hash (2^64 / golden ratio).
pub const TOKEN_FILTER_MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;
/// Number of `u64` words in the `token_filter` array.
pub const TOKEN_FILTER_WORDS: u32 = 1 << (TOKEN_FILTER_BITS_LOG2 - 6);

/// Length of a kernel `comm`.
pub const COMM_LEN: usize = 16;

/// Key of the `injectors` and `tokens` maps (`struct inode_key`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InodeKey {
    /// Inode number.
    pub ino: u64,
    /// Kernel `dev_t` (`MAJOR << 20 | MINOR`), see [`kernel_dev`].
    pub dev: u32,
    /// Padding, always 0.
    pub pad: u32,
}

impl InodeKey {
    /// The word index and bit mask of this inode in the `token_filter` array, computed as
    /// `token_filter_bit()` in `guard.bpf.c` does: the top bits of
    /// `(ino ^ dev << 32) * TOKEN_FILTER_MULTIPLIER`.
    pub fn token_filter_slot(&self) -> (u32, u64) {
        let hash = (self.ino ^ (u64::from(self.dev) << 32)).wrapping_mul(TOKEN_FILTER_MULTIPLIER);
        let bit = (hash >> (64 - TOKEN_FILTER_BITS_LOG2)) as u32;
        (bit >> 6, 1u64 << (bit & 63))
    }
}

/// Value of the `injectors` and `tokens` maps (`struct inode_policy`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InodePolicy {
    /// `MODE_*`, already the stricter of node and pod.
    pub mode: u32,
    /// Padding, always 0.
    pub pad: u32,
    /// Agent-chosen pod id.
    pub pod_tag: u64,
}

/// Value of the `lineage` map keyed by global tgid (`struct lineage_entry`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LineageEntry {
    /// Group leader's `start_time` (monotonic ns); 0 for entries backfilled by the agent.
    pub start_time: u64,
    /// Cgroup id of the container the lineage started in.
    pub container_cg: u64,
}

/// Value of the `container_state` map keyed by cgroup id (`struct container_state`): the
/// kernel's bookkeeping of a container.
///
/// Written by the BPF side only. A map update replaces the whole value, so the agent never
/// rewrites an existing entry (it could erase a flag the kernel set after the agent read it,
/// e.g. [`CONTAINER_DEGRADED`]); it only creates missing entries (backfill) and deletes the
/// entries of cgroups that are gone. What the agent decides lives in [`ContainerPolicy`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContainerState {
    /// `CONTAINER_*` bits.
    pub flags: u32,
    /// Task that reserved the entry or rooted the lineage.
    pub owner_tgid: u32,
}

/// Value of the `policies` map keyed by cgroup id (`struct container_policy`): how a
/// container is protected; no entry means not protected (lineage tracked only).
///
/// Owned by the agent. The BPF side only creates a missing entry (from the policy of the
/// injector a lineage member ran, which the agent wrote) and never rewrites one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContainerPolicy {
    /// `MODE_*`.
    pub mode: u32,
    /// Padding, always 0.
    pub pad: u32,
    /// Agent-chosen pod id.
    pub pod_tag: u64,
}

impl From<InodePolicy> for ContainerPolicy {
    fn from(policy: InodePolicy) -> Self {
        Self {
            mode: policy.mode,
            pad: 0,
            pod_tag: policy.pod_tag,
        }
    }
}

/// The single entry of the `guard_config` array (`struct guard_config`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardConfig {
    /// Cgroup id of the kubepods tree root, 0 if none.
    pub kubepods_cg: u64,
    /// Level of that cgroup in the v2 hierarchy.
    pub kubepods_level: u32,
    /// `CONFIG_*` bits.
    pub flags: u32,
}

/// One ring-buffer record (`struct guard_event`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawEvent {
    /// `bpf_ktime_get_boot_ns()`.
    pub ktime_ns: u64,
    /// Cgroup id of the acting task.
    pub subject_cg: u64,
    /// Cgroup id of the target task, 0 when none.
    pub target_cg: u64,
    /// Protected lineage concerned, 0 when none.
    pub lineage_cg: u64,
    /// Inode of the file (file hooks).
    pub inode: u64,
    /// Kernel `dev_t` of the file (file hooks).
    pub dev: u32,
    /// `HOOK_*`.
    pub hook: u32,
    /// `DECISION_*`.
    pub decision: u32,
    /// Subject tgid (initial PID namespace).
    pub subject_pid: u32,
    /// Subject thread id.
    pub subject_tid: u32,
    /// Subject uid (initial user namespace).
    pub subject_uid: u32,
    /// Target tgid, 0 when none.
    pub target_pid: u32,
    /// Ptrace mode or signal number.
    pub detail: u32,
    /// Subject `comm`, NUL-padded.
    pub subject_comm: [u8; COMM_LEN],
    /// Target `comm`, NUL-padded.
    pub target_comm: [u8; COMM_LEN],
}

impl RawEvent {
    /// Decodes one ring-buffer record; `None` if it is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let raw = bytes.get(..size_of::<Self>())?;
        let mut event = Self::default();
        let mut cursor = Cursor(raw);
        event.ktime_ns = cursor.u64();
        event.subject_cg = cursor.u64();
        event.target_cg = cursor.u64();
        event.lineage_cg = cursor.u64();
        event.inode = cursor.u64();
        event.dev = cursor.u32();
        event.hook = cursor.u32();
        event.decision = cursor.u32();
        event.subject_pid = cursor.u32();
        event.subject_tid = cursor.u32();
        event.subject_uid = cursor.u32();
        event.target_pid = cursor.u32();
        event.detail = cursor.u32();
        event.subject_comm = cursor.comm();
        event.target_comm = cursor.comm();
        Some(event)
    }

    /// Encodes the record as the BPF program lays it out (native endian); used by tests.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(size_of::<Self>());
        for v in [
            self.ktime_ns,
            self.subject_cg,
            self.target_cg,
            self.lineage_cg,
            self.inode,
        ] {
            out.extend_from_slice(&v.to_ne_bytes());
        }
        for v in [
            self.dev,
            self.hook,
            self.decision,
            self.subject_pid,
            self.subject_tid,
            self.subject_uid,
            self.target_pid,
            self.detail,
        ] {
            out.extend_from_slice(&v.to_ne_bytes());
        }
        out.extend_from_slice(&self.subject_comm);
        out.extend_from_slice(&self.target_comm);
        out
    }
}

/// Reads fixed-size native-endian fields off a slice whose length was checked up front.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let (head, tail) = self.0.split_at(N.min(self.0.len()));
        out[..head.len()].copy_from_slice(head);
        self.0 = tail;
        out
    }
    fn u64(&mut self) -> u64 {
        u64::from_ne_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_ne_bytes(self.take())
    }
    fn comm(&mut self) -> [u8; COMM_LEN] {
        self.take()
    }
}

/// Converts a userspace `st_dev` (glibc encoding) to the kernel's internal `dev_t`
/// (`MAJOR << 20 | MINOR`), which is what `inode->i_sb->s_dev` holds.
pub fn kernel_dev(st_dev: u64) -> u32 {
    let major = libc::major(st_dev);
    let minor = libc::minor(st_dev);
    (major << 20) | (minor & 0xf_ffff)
}

/// Text form of a `comm` array (up to the first NUL, lossy UTF-8).
pub fn comm_str(comm: &[u8; COMM_LEN]) -> String {
    let end = comm.iter().position(|b| *b == 0).unwrap_or(COMM_LEN);
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

// SAFETY: plain `#[repr(C)]` structs of integers with explicit padding fields, valid for any
// bit pattern, exactly as the BPF program lays them out.
unsafe impl aya::Pod for InodeKey {}
// SAFETY: as above.
unsafe impl aya::Pod for InodePolicy {}
// SAFETY: as above.
unsafe impl aya::Pod for LineageEntry {}
// SAFETY: as above.
unsafe impl aya::Pod for ContainerState {}
// SAFETY: as above.
unsafe impl aya::Pod for ContainerPolicy {}
// SAFETY: as above.
unsafe impl aya::Pod for GuardConfig {}

const _: () = assert!(size_of::<InodeKey>() == 16);
const _: () = assert!(size_of::<InodePolicy>() == 16);
const _: () = assert!(size_of::<LineageEntry>() == 16);
const _: () = assert!(size_of::<ContainerState>() == 8);
const _: () = assert!(size_of::<ContainerPolicy>() == 16);
const _: () = assert!(size_of::<GuardConfig>() == 16);
const _: () = assert!(size_of::<RawEvent>() == 8 * 5 + 4 * 8 + 2 * COMM_LEN);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_event_roundtrip_bytes_preserves_fields() {
        let mut event = RawEvent {
            ktime_ns: 1,
            subject_cg: 2,
            target_cg: 3,
            lineage_cg: 4,
            inode: 5,
            dev: 6,
            hook: HOOK_FILE_OPEN,
            decision: DECISION_DENY,
            subject_pid: 9,
            subject_tid: 10,
            subject_uid: 11,
            target_pid: 12,
            detail: 13,
            ..RawEvent::default()
        };
        event.subject_comm[..2].copy_from_slice(b"sh");
        event.target_comm[..3].copy_from_slice(b"app");
        let bytes = event.to_bytes();
        assert_eq!(bytes.len(), size_of::<RawEvent>());
        assert_eq!(RawEvent::from_bytes(&bytes), Some(event));
        assert_eq!(comm_str(&event.subject_comm), "sh");
    }

    #[test]
    fn raw_event_short_record_is_rejected() {
        assert_eq!(RawEvent::from_bytes(&[0u8; 20]), None);
    }

    #[test]
    fn kernel_dev_converts_userspace_encoding() {
        // tmpfs-style anonymous device 0:45 and a block device 259:1.
        assert_eq!(kernel_dev(libc::makedev(0, 45)), 45);
        assert_eq!(kernel_dev(libc::makedev(259, 1)), (259 << 20) | 1);
        assert_eq!(kernel_dev(libc::makedev(8, 300)), (8 << 20) | 300);
    }

    #[test]
    fn token_filter_slot_matches_the_bpf_computation() {
        // Expected values computed with the C expression of guard.bpf.c.
        let key = |ino, dev| InodeKey { ino, dev, pad: 0 };
        assert_eq!(key(5, 45).token_filter_slot(), (1906, 1 << 52));
        assert_eq!(
            key(12_345_678, (259 << 20) | 1).token_filter_slot(),
            (2839, 1 << 41)
        );
        assert_eq!(key(0, 0).token_filter_slot(), (0, 1));
        assert!(key(u64::MAX, u32::MAX).token_filter_slot().0 < TOKEN_FILTER_WORDS);
    }

    #[test]
    fn comm_str_full_length_without_nul_is_kept() {
        assert_eq!(comm_str(b"0123456789abcdef"), "0123456789abcdef");
    }
}
