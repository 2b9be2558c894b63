// SPDX-License-Identifier: GPL-2.0
/*
 * Strongroom ebpf-guard: BPF LSM program (C, CO-RE).
 *
 * Trust ("lineage"): the first task to exec in a container cgroup (under the
 * kubepods tree) is the container's own init; it becomes the root of that
 * container's lineage, and every process later forked by a lineage member
 * joins it. This is established in the kernel at container start, so it does
 * not depend on how fast the agent notices a new pod. Without a kubepods tree
 * (tests), only an exec of a registered injector starts a lineage.
 *
 * What it protects: the lineage of an injected container. A container becomes
 * protected (it gets a `policies` entry: mode and pod) when a lineage member
 * execs a registered injector binary (vault-env, registered by the agent in
 * `injectors` by inode), or when the agent marks the containers of a pod whose
 * injector it found on disk. Unprotected containers (no policy) are untouched.
 *
 * Who writes what (see guard.h): the kernel's own bookkeeping of a container
 * (claimed, reserved, owner, degraded) lives in `container_state`, which only
 * this program writes; the agent's policy lives in `policies`, where this
 * program only creates missing entries. A map update replaces a whole value, so
 * sharing one value would let the agent's rewrite of a mode erase a flag set
 * here in between (the degraded flag: a container that must fail closed would
 * silently stop doing so).
 *
 * Against whom: outsiders, i.e. every task that is not in the same lineage and
 * is not a host task. An exec session (runc/crun exec, kubectl debug with a
 * shared PID namespace, nsenter into the PID namespace) joins the container
 * from outside and is therefore never in the lineage, whatever its cgroup,
 * namespaces, uid or comm.
 *
 * Host tasks are bypassed narrowly: a task in the initial PID namespace that is
 * not under the kubepods cgroup tree (container runtimes, kubelet, cAdvisor);
 * they open /proc/<pid>/ns/ files and friends through the same check. hostPID pods
 * and debug containers live under kubepods and are not bypassed.
 *
 * Lineage state is a tgid-keyed hash guarded by the group leader's start time
 * (PID reuse). Trust is inherited at fork from the forking task, never from
 * real_parent, so orphans re-parented to a protected init stay untrusted.
 * Every map that trust depends on fails closed: a failed lineage insert marks
 * the whole container degraded, and then every non-lineage task is denied.
 *
 * Mode is per container (copied from the injector's policy, already the
 * stricter of node and pod): enforce denies, audit allows and records.
 *
 * Cost: every hook runs on hot kernel paths (each open, exec, fork and exit),
 * so the common case (the task is not an outsider, the file is not a token)
 * returns after a handful of plain loads: fields are read through BTF pointers
 * (no bpf_probe_read calls) and the cheapest test comes first. file_open tests
 * a bitmap of token inodes (`token_filter`, an array lookup the verifier
 * inlines) before any hash lookup; ptrace_access_check looks at the target's
 * cgroup only once some container has degraded (`guard_state`); the
 * tracepoints test lineage membership or the host bypass before reading the
 * exec'd file. The slow paths (events, failures) keep bpf_probe_read for
 * fields whose pointers the 6.1 verifier treats as RCU-protected.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "guard.h"

char LICENSE[] SEC("license") = "GPL";

#define EPERM 1
#define EACCES 13
#define PTRACE_MODE_NOAUDIT 0x04

#define MAX_LINEAGE 65536
#define MAX_CONTAINERS 8192
#define MAX_INODES 4096

/* The token pre-filter: 2^GUARD_TOKEN_FILTER_BITS_LOG2 bits in u64 words. */
#define TOKEN_FILTER_WORDS (1u << (GUARD_TOKEN_FILTER_BITS_LOG2 - 6))

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_LINEAGE);
	__type(key, __u32);
	__type(value, struct lineage_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lineage SEC(".maps");

/* Kernel-owned bookkeeping per container cgroup; the agent never rewrites an entry. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_CONTAINERS);
	__type(key, __u64);
	__type(value, struct container_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} container_state SEC(".maps");

/* Agent-owned protection per container cgroup; this program only creates missing entries. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_CONTAINERS);
	__type(key, __u64);
	__type(value, struct container_policy);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} policies SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_INODES);
	__type(key, struct inode_key);
	__type(value, struct inode_policy);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} injectors SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_INODES);
	__type(key, struct inode_key);
	__type(value, struct inode_policy);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tokens SEC(".maps");

/*
 * Pre-filter of `tokens`, maintained by the agent: the bit token_filter_bit()
 * names is set for every registered token before the token is inserted, and
 * cleared only once no registered token maps to it. A clear bit therefore
 * proves "not a token"; a set bit only sends the open to the exact lookup.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TOKEN_FILTER_WORDS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} token_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct guard_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} guard_config SEC(".maps");

/* Sticky global state written by the BPF side (indexes GUARD_STATE_*). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GUARD_STATE_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} guard_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, GUARD_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} events SEC(".maps");

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		*v += 1;
}

/* Slow paths only: `cgroups` is RCU-protected, which bpf_probe_read handles on every kernel. */
static __always_inline __u64 task_cgroup_id(struct task_struct *t)
{
	return BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, id);
}

/* The file's inode as the maps name it: three plain loads through BTF pointers. */
static __always_inline struct inode_key file_key(struct file *f)
{
	struct inode *inode = f->f_inode;
	struct inode_key k = {};
	k.ino = inode->i_ino;
	k.dev = inode->i_sb->s_dev;
	return k;
}

/* The bit of `token_filter` for an inode (the agent computes the same, see abi.rs). */
static __always_inline __u32 token_filter_bit(const struct inode_key *k)
{
	__u64 h = (k->ino ^ ((__u64)k->dev << 32)) * GUARD_TOKEN_FILTER_MULTIPLIER;
	return (__u32)(h >> (64 - GUARD_TOKEN_FILTER_BITS_LOG2));
}

/* False only if `k` is certainly not a registered token. */
static __always_inline bool maybe_token(const struct inode_key *k)
{
	__u32 bit = token_filter_bit(k);
	__u32 word = bit >> 6;
	__u64 *bits = bpf_map_lookup_elem(&token_filter, &word);
	/* A missing word cannot happen (array, key in range); fail towards the exact check. */
	return !bits || (*bits & (1ULL << (bit & 63)));
}

/* False only if no container was ever marked degraded (fail closed without the map). */
static __always_inline bool maybe_degraded(void)
{
	__u32 idx = GUARD_STATE_DEGRADED;
	__u64 *n = bpf_map_lookup_elem(&guard_state, &idx);
	return !n || *n;
}

/* Fail closed: nobody outside the lineage may touch this container any more. The global
 * count goes first, so a reader that sees the container flag also sees the count. */
static __always_inline void mark_degraded(struct container_state *cs)
{
	__u32 idx = GUARD_STATE_DEGRADED;
	__u64 *n = bpf_map_lookup_elem(&guard_state, &idx);
	if (n)
		__sync_fetch_and_add(n, 1);
	__sync_fetch_and_or(&cs->flags, GUARD_CONTAINER_DEGRADED);
}

/*
 * Protects container `cg` with an injector's policy unless it already has one (from the
 * agent, which owns policies, or from an earlier injector exec): an existing policy is
 * never rewritten here. False only if there is none and none can be created (map full).
 */
static __always_inline bool ensure_policy(__u64 cg, const struct inode_policy *pol)
{
	if (bpf_map_lookup_elem(&policies, &cg))
		return true;
	struct container_policy fresh = {
		.mode = pol->mode,
		.pod_tag = pol->pod_tag,
	};
	if (bpf_map_update_elem(&policies, &cg, &fresh, BPF_NOEXIST) == 0)
		return true;
	/* EEXIST: another creator won the race, which is as good. */
	if (bpf_map_lookup_elem(&policies, &cg))
		return true;
	stat_inc(GUARD_STAT_CONTAINERS_FULL);
	return false;
}

/* The lineage entry of `t`'s thread group, if it is protected and not a reused PID. */
static __always_inline struct lineage_entry *lineage_of(struct task_struct *t)
{
	__u32 tgid = t->tgid;
	struct lineage_entry *e = bpf_map_lookup_elem(&lineage, &tgid);
	if (!e)
		return NULL;
	/* start_time 0: backfilled by the agent for a process older than the guard. */
	if (e->start_time && e->start_time != t->group_leader->start_time)
		return NULL;
	return e;
}

/* Host bypass: current is in the initial PID namespace and outside the kubepods tree. */
static __always_inline bool current_is_host(struct task_struct *cur)
{
	__u32 zero = 0;
	struct guard_config *cfg = bpf_map_lookup_elem(&guard_config, &zero);
	if (!cfg || !(cfg->flags & GUARD_CONFIG_HOST_BYPASS))
		return false;
	if (cur->thread_pid->level != 0)
		return false;
	if (cfg->kubepods_cg &&
	    bpf_get_current_ancestor_cgroup_id(cfg->kubepods_level) == cfg->kubepods_cg)
		return false;
	return true;
}

/* Current is under the kubepods cgroup tree (0 if no tree is configured). */
static __always_inline bool current_in_kubepods(void)
{
	__u32 zero = 0;
	struct guard_config *cfg = bpf_map_lookup_elem(&guard_config, &zero);
	return cfg && cfg->kubepods_cg &&
	       bpf_get_current_ancestor_cgroup_id(cfg->kubepods_level) == cfg->kubepods_cg;
}

static __always_inline void emit(struct task_struct *cur, __u32 hook, __u32 decision,
				 struct task_struct *target, __u64 lineage_cg, __u64 ino,
				 __u32 dev, __u32 detail)
{
	struct guard_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		stat_inc(GUARD_STAT_RINGBUF_DROPPED);
		return;
	}
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	ev->ktime_ns = bpf_ktime_get_boot_ns();
	ev->subject_cg = bpf_get_current_cgroup_id();
	ev->lineage_cg = lineage_cg;
	ev->inode = ino;
	ev->dev = dev;
	ev->hook = hook;
	ev->decision = decision;
	ev->subject_pid = pid_tgid >> 32;
	ev->subject_tid = (__u32)pid_tgid;
	ev->subject_uid = (__u32)bpf_get_current_uid_gid();
	ev->detail = detail;
	bpf_get_current_comm(ev->subject_comm, sizeof(ev->subject_comm));
	if (target) {
		ev->target_cg = task_cgroup_id(target);
		ev->target_pid = BPF_CORE_READ(target, tgid);
		BPF_CORE_READ_STR_INTO(&ev->target_comm, target, comm);
	} else {
		ev->target_cg = 0;
		ev->target_pid = 0;
		ev->target_comm[0] = 0;
	}
	bpf_ringbuf_submit(ev, 0);
}

/*
 * Shared decision for hooks whose object is a task: 0 to allow, -EPERM to deny.
 * Denies (or records, in audit mode) when the target is protected and current
 * is neither in the target's lineage nor a host task.
 */
static __always_inline int check_task_access(struct task_struct *target, __u32 hook,
					     __u32 detail, bool record)
{
	struct lineage_entry *tl = lineage_of(target);
	struct container_policy *cp;
	__u64 lineage_cg;

	if (tl) {
		lineage_cg = tl->container_cg;
		cp = bpf_map_lookup_elem(&policies, &lineage_cg);
		if (!cp || !cp->mode)
			return 0; /* lineage of an unprotected container */
	} else {
		/* Untracked target: protected only if its protected container is degraded,
		 * which needs some container to have degraded at all (the common case: no). */
		if (!maybe_degraded())
			return 0;
		lineage_cg = task_cgroup_id(target);
		struct container_state *cs = bpf_map_lookup_elem(&container_state, &lineage_cg);
		if (!cs || !(cs->flags & GUARD_CONTAINER_DEGRADED))
			return 0;
		cp = bpf_map_lookup_elem(&policies, &lineage_cg);
		if (!cp || !cp->mode)
			return 0;
	}
	__u32 mode = cp->mode;

	struct task_struct *cur = bpf_get_current_task_btf();
	struct lineage_entry *sl = lineage_of(cur);
	if (sl && sl->container_cg == lineage_cg)
		return 0;
	if (current_is_host(cur))
		return 0;

	__u32 decision = mode == GUARD_MODE_AUDIT ? GUARD_DECISION_AUDIT : GUARD_DECISION_DENY;
	if (record)
		emit(cur, hook, decision, target, lineage_cg, 0, 0, detail);
	return decision == GUARD_DECISION_DENY ? -EPERM : 0;
}

/**
 * guard_ptrace_access_check - LSM hook `ptrace_access_check(child, mode)`.
 *
 * Covers ptrace attach/seize, /proc/<pid>/{environ,mem,maps,auxv,fd,cwd,root,
 * exe,stack,syscall,ns}, process_vm_readv/writev, pidfd_getfd and kcmp.
 * Allows: targets outside any lineage; subjects in the target's own lineage
 * (the workload and its descendants, e.g. a child ptracing or reading its
 * parent); host tasks. Denies with -EPERM (userspace sees EACCES for /proc
 * files, EPERM for ptrace and process_vm_readv) every other subject when the
 * target's container is in enforce mode; records instead in audit mode.
 * Checks flagged PTRACE_MODE_NOAUDIT (ps reading /proc/<pid>/stat) are denied
 * without an event, as the kernel's own audit does.
 */
SEC("lsm/ptrace_access_check")
int BPF_PROG(guard_ptrace_access_check, struct task_struct *child, unsigned int mode, int ret)
{
	if (ret)
		return ret;
	return check_task_access(child, GUARD_HOOK_PTRACE_ACCESS_CHECK, mode,
				 !(mode & PTRACE_MODE_NOAUDIT));
}

/**
 * guard_task_kill - LSM hook `task_kill(p, info, sig, cred)`.
 *
 * Allows every signal that cannot make the target dump core (SIGTERM, SIGHUP,
 * SIGKILL, ... so `kubectl exec -- kill -HUP 1` still reloads an app), and
 * every signal from the target's lineage or from the host. Denies (enforce) or
 * records (audit) core-dumping signals (SIGQUIT, SIGILL, SIGTRAP, SIGABRT,
 * SIGBUS, SIGFPE, SIGSEGV, SIGXCPU, SIGXFSZ, SIGSYS) sent by outsiders to a
 * protected task, because a core file carries the environment.
 */
SEC("lsm/task_kill")
int BPF_PROG(guard_task_kill, struct task_struct *p, struct kernel_siginfo *info, int sig,
	     const struct cred *cred, int ret)
{
	if (ret)
		return ret;
	switch (sig) {
	case 3: case 4: case 5: case 6: case 7: case 8: case 11: case 24: case 25: case 31:
		return check_task_access(p, GUARD_HOOK_TASK_KILL, sig, true);
	default:
		return 0;
	}
}

/**
 * guard_bprm_check_security - LSM hook `bprm_check_security(bprm)`.
 *
 * Only concerns execs of a registered injector inode. Allows: host tasks;
 * lineage members (daemon mode, restarts inside the workload); the first
 * injector exec in a container, which reserves the container (the lineage
 * itself starts in guard_sched_process_exec once the exec has succeeded).
 * Allowed execs by lineage members and the reserving task record the
 * container's policy first (if it has none). Denies (enforce) or records
 * (audit) with -EPERM every other exec of an injector: an exec session running
 * vault-env again in a container that already has (or is starting) its
 * lineage. Fails closed: if the container cannot be reserved or its policy
 * cannot be recorded because a map is full, the exec is denied in enforce
 * mode, so a workload never runs unprotected.
 */
SEC("lsm/bprm_check_security")
int BPF_PROG(guard_bprm_check_security, struct linux_binprm *bprm, int ret)
{
	if (ret)
		return ret;
	struct inode_key key = file_key(bprm->file);
	struct inode_policy *pol = bpf_map_lookup_elem(&injectors, &key);
	if (!pol)
		return 0;
	struct task_struct *cur = bpf_get_current_task_btf();
	__u32 mode = pol->mode;
	__u64 cg;
	struct lineage_entry *sl = lineage_of(cur);
	if (sl) {
		cg = sl->container_cg;
		if (ensure_policy(cg, pol))
			return 0;
	} else {
		if (current_is_host(cur))
			return 0;
		__u32 tgid = bpf_get_current_pid_tgid() >> 32;
		cg = bpf_get_current_cgroup_id();
		bool reserved = false;
		struct container_state *cs = bpf_map_lookup_elem(&container_state, &cg);
		if (!cs) {
			struct container_state fresh = {
				.flags = GUARD_CONTAINER_PENDING,
				.owner_tgid = tgid,
			};
			reserved = bpf_map_update_elem(&container_state, &cg, &fresh,
						       BPF_NOEXIST) == 0;
			if (!reserved) {
				cs = bpf_map_lookup_elem(&container_state, &cg);
				if (!cs) {
					stat_inc(GUARD_STAT_CONTAINERS_FULL);
					cg = 0; /* no container entry: the event names none */
				}
			}
		}
		if (cs && !(cs->flags & GUARD_CONTAINER_ACTIVE) && cs->owner_tgid == tgid)
			reserved = true;
		if (reserved && ensure_policy(cg, pol))
			return 0;
		struct container_policy *cp = bpf_map_lookup_elem(&policies, &cg);
		if (cp && cp->mode > mode)
			mode = cp->mode;
	}

	__u32 decision = mode == GUARD_MODE_AUDIT ? GUARD_DECISION_AUDIT : GUARD_DECISION_DENY;
	emit(cur, GUARD_HOOK_BPRM_CHECK_SECURITY, decision, NULL, cg, key.ino, key.dev, 0);
	return decision == GUARD_DECISION_DENY ? -EPERM : 0;
}

/**
 * guard_file_open - LSM hook `file_open(file)`.
 *
 * Only concerns opens of a registered service-account token inode. Allows:
 * host tasks (the kubelet writing and rotating tokens) and members of a
 * lineage of the token's own pod. Denies with -EACCES (enforce) or records
 * (audit) every other open, so an exec session cannot log in to Vault as the
 * pod. Other containers of an injected pod are outsiders too (see README).
 * Every other open returns after the token pre-filter.
 */
SEC("lsm/file_open")
int BPF_PROG(guard_file_open, struct file *file, int ret)
{
	if (ret)
		return ret;
	struct inode_key key = file_key(file);
	if (!maybe_token(&key))
		return 0;
	struct inode_policy *pol = bpf_map_lookup_elem(&tokens, &key);
	if (!pol)
		return 0;
	struct task_struct *cur = bpf_get_current_task_btf();
	struct lineage_entry *sl = lineage_of(cur);
	if (sl) {
		__u64 lcg = sl->container_cg;
		struct container_policy *cp = bpf_map_lookup_elem(&policies, &lcg);
		if (cp && cp->pod_tag == pol->pod_tag)
			return 0;
	}
	if (current_is_host(cur))
		return 0;
	__u32 decision = pol->mode == GUARD_MODE_AUDIT ? GUARD_DECISION_AUDIT : GUARD_DECISION_DENY;
	emit(cur, GUARD_HOOK_FILE_OPEN, decision, NULL, 0, key.ino, key.dev, 0);
	return decision == GUARD_DECISION_DENY ? -EACCES : 0;
}

/*
 * Lineage start and protection, after a successful exec:
 * - the first exec in a container cgroup (under kubepods, or of a registered
 *   injector where no kubepods tree is configured) makes the task the root of
 *   the container's lineage; claiming is atomic, so a racing exec session
 *   never becomes the root;
 * - a lineage member exec'ing a registered injector marks its container
 *   protected with the injector's mode and pod unless it already has a policy
 *   (emits a lineage_start event). With the LSM hooks attached,
 *   bprm_check_security has already recorded the policy before the exec.
 * An outsider's exec (only possible in audit mode for the injector) starts nothing.
 * Host execs return after the lineage lookup and the host test.
 */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(guard_sched_process_exec, struct task_struct *p, pid_t old_pid,
	     struct linux_binprm *bprm)
{
	struct lineage_entry *pl = lineage_of(p);
	struct inode_policy *pol;
	struct inode_key key;
	__u64 cg;

	if (pl) {
		cg = pl->container_cg;
		key = file_key(bprm->file);
		pol = bpf_map_lookup_elem(&injectors, &key);
	} else {
		if (current_is_host(p))
			return 0;
		key = file_key(bprm->file);
		pol = bpf_map_lookup_elem(&injectors, &key);
		if (!pol && !current_in_kubepods())
			return 0;
		__u32 tgid = p->tgid;
		cg = bpf_get_current_cgroup_id();
		struct container_state *cs = bpf_map_lookup_elem(&container_state, &cg);
		if (!cs) {
			struct container_state fresh = {
				.flags = GUARD_CONTAINER_PENDING,
				.owner_tgid = tgid,
			};
			if (bpf_map_update_elem(&container_state, &cg, &fresh, BPF_NOEXIST) != 0 &&
			    !bpf_map_lookup_elem(&container_state, &cg)) {
				stat_inc(GUARD_STAT_CONTAINERS_FULL);
				return 0;
			}
			cs = bpf_map_lookup_elem(&container_state, &cg);
			if (!cs)
				return 0;
		}
		/* Reserved for another task by its injector exec check: not ours. */
		if ((cs->flags & GUARD_CONTAINER_PENDING) && cs->owner_tgid != tgid)
			return 0;
		/* Atomic claim: only one task ever roots a container's lineage. */
		if (__sync_fetch_and_or(&cs->flags, GUARD_CONTAINER_ACTIVE) & GUARD_CONTAINER_ACTIVE)
			return 0;
		cs->owner_tgid = tgid;
		struct lineage_entry root = {
			.start_time = p->group_leader->start_time,
			.container_cg = cg,
		};
		if (bpf_map_update_elem(&lineage, &tgid, &root, BPF_ANY) != 0) {
			stat_inc(GUARD_STAT_LINEAGE_FULL);
			mark_degraded(cs);
		}
	}

	if (!pol)
		return 0;
	if (!ensure_policy(cg, pol))
		return 0;
	emit(p, GUARD_HOOK_LINEAGE_START, GUARD_DECISION_ALLOW, p, cg, key.ino, key.dev, 0);
	return 0;
}

/* Trust inheritance: a new process forked by a lineage member joins its lineage. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(guard_sched_process_fork, struct task_struct *parent, struct task_struct *child)
{
	/* The forking task is current; `parent` may differ for CLONE_PARENT and is ignored. */
	struct task_struct *cur = bpf_get_current_task_btf();
	__u32 child_tgid = child->tgid;
	if (child_tgid == cur->tgid)
		return 0; /* a new thread: its group is already tracked */
	struct lineage_entry *pl = lineage_of(cur);
	if (!pl)
		return 0;
	struct lineage_entry entry = {
		/* A new process is its own group leader. */
		.start_time = child->start_time,
		.container_cg = pl->container_cg,
	};
	if (bpf_map_update_elem(&lineage, &child_tgid, &entry, BPF_ANY) != 0) {
		/* Fail closed: nobody outside the lineage may touch this container any more. */
		__u64 cg = entry.container_cg;
		struct container_state *cs = bpf_map_lookup_elem(&container_state, &cg);
		stat_inc(GUARD_STAT_LINEAGE_FULL);
		if (cs)
			mark_degraded(cs);
	}
	return 0;
}

/*
 * Cleanup when the last thread of a group exits. Only the task argument is
 * read: 6.18 passes an extra `group_dead` argument that 6.1 lacks, so the
 * group's death is read from signal->live instead.
 */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(guard_sched_process_exit, struct task_struct *p)
{
	if (p->signal->live.counter != 0)
		return 0; /* not the last thread of its group */
	__u32 tgid = p->tgid;
	struct lineage_entry *e = bpf_map_lookup_elem(&lineage, &tgid);
	if (e && (!e->start_time || e->start_time == p->group_leader->start_time))
		bpf_map_delete_elem(&lineage, &tgid);
	return 0;
}
