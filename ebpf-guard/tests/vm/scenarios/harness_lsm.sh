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
