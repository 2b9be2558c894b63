/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Types shared between the BPF program (guard.bpf.c) and the agent.
 *
 * The agent mirrors every struct and constant here in ONE Rust module,
 * `ebpf-guard/src/abi.rs`, with `#[repr(C)]` and compile-time size checks.
 * Change both together.
 */
#ifndef STRONGROOM_GUARD_H
#define STRONGROOM_GUARD_H

/* Guard modes; numerically ordered by strictness so "the stricter wins" is max(). */
#define GUARD_MODE_AUDIT 1
#define GUARD_MODE_ENFORCE 2

/* Hooks named in audit events. */
#define GUARD_HOOK_PTRACE_ACCESS_CHECK 1
#define GUARD_HOOK_BPRM_CHECK_SECURITY 2
#define GUARD_HOOK_FILE_OPEN 3
#define GUARD_HOOK_TASK_KILL 4
#define GUARD_HOOK_LINEAGE_START 5

/* Decisions named in audit events. */
#define GUARD_DECISION_DENY 1
#define GUARD_DECISION_AUDIT 2 /* would have been denied; allowed because of audit mode */
#define GUARD_DECISION_ALLOW 3 /* informational (lineage start) */

/* container_state.flags (written by the BPF side only) */
#define GUARD_CONTAINER_PENDING 1  /* reserved by an injector exec check for owner_tgid */
#define GUARD_CONTAINER_ACTIVE 2   /* lineage root claimed (first exec in the container) */
#define GUARD_CONTAINER_DEGRADED 4 /* a lineage insert failed: fail closed for the whole container */

/* guard_config.flags */
#define GUARD_CONFIG_HOST_BYPASS 1 /* host tasks (init pid ns, outside kubepods) are trusted */

/* Indexes of the per-CPU `stats` array. */
#define GUARD_STAT_RINGBUF_DROPPED 0
#define GUARD_STAT_LINEAGE_FULL 1
#define GUARD_STAT_CONTAINERS_FULL 2
#define GUARD_STAT_MAX 4

/* Indexes of the `guard_state` array (written by the BPF side, never reset). */
#define GUARD_STATE_DEGRADED 0 /* containers marked degraded so far (a fast-path gate) */
#define GUARD_STATE_MAX 1

/*
 * The `token_filter` array: 2^GUARD_TOKEN_FILTER_BITS_LOG2 bits in u64 words. The bit of
 * an inode is the top bits of (ino ^ (u64)dev << 32) * GUARD_TOKEN_FILTER_MULTIPLIER; bit b
 * is bit (b & 63) of word (b >> 6).
 */
#define GUARD_TOKEN_FILTER_BITS_LOG2 18
#define GUARD_TOKEN_FILTER_MULTIPLIER 0x9E3779B97F4A7C15ULL

#define GUARD_COMM_LEN 16

/* Key of the `injectors` and `tokens` maps: an inode as the kernel names it. */
struct inode_key {
	__u64 ino;
	__u32 dev; /* kernel dev_t: MAJOR << 20 | MINOR (not the userspace st_dev encoding) */
	__u32 _pad;
};

/* Value of the `injectors` and `tokens` maps. */
struct inode_policy {
	__u32 mode; /* GUARD_MODE_*, already the stricter of node and pod */
	__u32 _pad;
	__u64 pod_tag; /* agent-chosen id of the pod (reported in events) */
};

/* Value of the `lineage` map, keyed by the global tgid (__u32). */
struct lineage_entry {
	__u64 start_time;    /* group leader's start_time (PID reuse guard); 0 = backfilled */
	__u64 container_cg;  /* cgroup id of the container the lineage started in (lineage id) */
};

/*
 * A container's state is split by writer, so that no write can erase what the
 * other side wrote (a map update replaces the whole value):
 * - `container_state`: written only by the BPF side (flags, owner). The agent
 *   only creates an entry that does not exist yet (backfill, BPF_NOEXIST) and
 *   deletes entries whose cgroup is gone; it never writes an existing entry.
 * - `policies`: the protection (mode, pod), owned by the agent. The BPF side
 *   only creates a missing entry (BPF_NOEXIST, from the injector's policy, which
 *   the agent wrote) and never writes an existing one.
 */

/* Value of the `container_state` map, keyed by the container's cgroup id (__u64). */
struct container_state {
	__u32 flags;      /* GUARD_CONTAINER_* */
	__u32 owner_tgid; /* task whose exec reserved the entry / rooted the lineage */
};

/* Value of the `policies` map, keyed by the container's cgroup id (__u64); no entry
 * means not protected (lineage tracked only). */
struct container_policy {
	__u32 mode; /* GUARD_MODE_* */
	__u32 _pad;
	__u64 pod_tag; /* agent-chosen id of the pod */
};

/* Single-entry `config` array. */
struct guard_config {
	__u64 kubepods_cg;     /* cgroup id of the kubepods tree root, 0 if none */
	__u32 kubepods_level;  /* its level in the cgroup v2 hierarchy */
	__u32 flags;           /* GUARD_CONFIG_* */
};

/* One ring-buffer record. */
struct guard_event {
	__u64 ktime_ns;      /* bpf_ktime_get_boot_ns() */
	__u64 subject_cg;    /* cgroup id of the acting task */
	__u64 target_cg;     /* cgroup id of the target task (0 when none) */
	__u64 lineage_cg;    /* the protected lineage concerned (0 when none) */
	__u64 inode;         /* inode of the file (file hooks) */
	__u32 dev;           /* kernel dev_t of the file (file hooks) */
	__u32 hook;          /* GUARD_HOOK_* */
	__u32 decision;      /* GUARD_DECISION_* */
	__u32 subject_pid;   /* tgid, global pid namespace */
	__u32 subject_tid;
	__u32 subject_uid;
	__u32 target_pid;    /* tgid, 0 when none */
	__u32 detail;        /* ptrace mode or signal number */
	char subject_comm[GUARD_COMM_LEN];
	char target_comm[GUARD_COMM_LEN];
};

#endif
