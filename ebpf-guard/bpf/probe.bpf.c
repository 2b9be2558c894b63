// SPDX-License-Identifier: GPL-2.0
/*
 * Trivial LSM program used by `ebpf-guard probe` and at agent start: if the
 * kernel refuses to load it (no BTF, bpf not in lsm=, lockdown, EPERM on
 * trampolines), the guard cannot enforce on this node.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

/* Allows everything; exists only to be loaded. */
SEC("lsm/file_open")
int BPF_PROG(probe_file_open, struct file *file, int ret)
{
	return ret;
}
