# The guest kernel runs the BPF LSM and can load BPF programs at all.
# vmtest: needs=

lsm=$(cat /sys/kernel/security/lsm)
case ",$lsm," in
*,bpf,*) pass lsm_has_bpf "$lsm" ;;
*) fail lsm_has_bpf "$lsm" ;;
esac

for fs in /sys/fs/cgroup/cgroup.controllers /sys/fs/bpf /sys/kernel/btf/vmlinux; do
	if [ -e "$fs" ]; then pass "present:$fs" ""; else fail "present:$fs" "missing"; fi
done

# Yama restricts ptrace to descendants unless the tracer has CAP_SYS_PTRACE; the probes run as
# root, so a ptrace denial in a guard scenario comes from the guard, not Yama.
info "yama ptrace_scope=$(cat /proc/sys/kernel/yama/ptrace_scope)"
expect_eq exec_session_has_cap_sys_ptrace yes sh -c \
	'caps=$(sed -n "s/^CapEff:\t//p" /proc/self/status); [ $(( 0x$caps >> 19 & 1 )) = 1 ] && echo yes'

# bpftool (from the host, with its libraries) works in the guest and the kernel offers LSM
# programs and the helpers the guard relies on.
features=$(bpftool feature probe kernel 2>&1)
for want in "eBPF program_type lsm is available" "eBPF map_type ringbuf is available" \
	"eBPF map_type task_storage is available"; do
	check=$(echo "$want" | sed 's/eBPF //; s/ is available//; s/ /:/g')
	if echo "$features" | grep -qF "$want"; then pass "$check" "$want"; else fail "$check" "not in bpftool feature probe"; fi
done
