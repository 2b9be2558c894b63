# Baseline without the guard: a simulated pod starts through /vault/vault-env, lives in its own
# namespaces and cgroup, and an exec session (pod_exec) can read everything the guard scenarios
# must then deny. Proves the probes and pod_exec work, so a denial later means enforcement.
# vmtest: needs=

canary=$(canary_new)
pod_start_app app "$canary" || exit 1
pass pod_started "app running through /vault/vault-env"
host_pid=$(pod_pid app)

# The workload really went through the pod's vault-env copy and is now the app, as PID 1.
expect_eq exe_is_canary_app /probes/canary_app readlink "/proc/$host_pid/exe"
expect vault_env_in_pod '^OK bytes=[1-9]' pod_exec app open_file /vault/vault-env
expect_eq app_is_pid1_in_pod /probes/canary_app pod_exec app readlink /proc/1/exe

# What the workload may do to itself and its children (the guard must keep allowing this).
expect app_self_checks \
	'round=1 self_environ=OK:FOUND own_pid_environ=OK:FOUND child_environ=OK:FOUND ptrace_child=OK vm_readv_child=OK' \
	grep 'round=1' "$VMTEST_PODS/app/log"

# Namespaces and cgroup: the exec session sees the pod's, not the node's.
node_pidns=$(readlink /proc/self/ns/pid)
app_pidns=$(readlink "/proc/$host_pid/ns/pid")
if [ "$app_pidns" != "$node_pidns" ]; then
	pass app_own_pid_namespace "$app_pidns"
else
	fail app_own_pid_namespace "same as the node: $app_pidns"
fi
for ns in pid mnt uts ipc; do
	expect_eq "exec_joins_${ns}_ns" "$(readlink "/proc/$host_pid/ns/$ns")" pod_exec app readlink "/proc/self/ns/$ns"
done
cgroup_line="0::$(pod_cgroup app | sed 's|^/sys/fs/cgroup||')"
expect_eq app_in_pod_cgroup "$cgroup_line" cat "/proc/$host_pid/cgroup"
expect_eq exec_in_pod_cgroup "$cgroup_line" pod_exec app cat /proc/self/cgroup
case "$cgroup_line" in
*"/kubepods.slice/kubepods-pod"*"_"*".slice/cri-containerd-"*".scope") pass cgroup_is_kubepods_layout "$cgroup_line" ;;
*) fail cgroup_is_kubepods_layout "$cgroup_line" ;;
esac
expect_eq hostname_is_pod app pod_exec app hostname
# runc exec style: the session's parent is outside the pod, so it is no descendant of PID 1.
expect_eq exec_session_is_outsider 0 pod_exec app sh -c 'cut -d" " -f4 /proc/self/stat'

# The exec session reaches everything (the guard will deny these to outsiders).
expect exec_read_environ '^OK bytes=[0-9]+ FOUND$' pod_exec app read_environ 1 "$canary"
expect_ok exec_read_mem pod_exec app read_mem 1
expect_ok exec_read_maps pod_exec app read_maps 1
expect_ok exec_ptrace_attach pod_exec app ptrace_attach 1
expect_ok exec_ptrace_seize pod_exec app ptrace_seize 1
expect_ok exec_vm_readv pod_exec app vm_readv 1
expect_ok exec_pidfd_getfd pod_exec app pidfd_getfd 1 1
expect_ok exec_open_token pod_exec app open_file /var/run/secrets/kubernetes.io/serviceaccount/token
# The token follows the kubelet's atomic-writer layout and survives a rotation (new inode).
token=/var/run/secrets/kubernetes.io/serviceaccount/token
inode_before=$(pod_exec app stat -L -c %i "$token")
if pod_rotate_token app; then
	inode_after=$(pod_exec app stat -L -c %i "$token")
	if [ -n "$inode_after" ] && [ "$inode_after" != "$inode_before" ]; then
		pass token_rotated "inode $inode_before -> $inode_after"
	else
		fail token_rotated "inode $inode_before -> $inode_after"
	fi
	expect_ok exec_open_rotated_token pod_exec app open_file "$token"
else
	fail token_rotated "pod_rotate_token failed"
fi
expect exec_runs_vault_env "^OK ran$" pod_exec app VAULT_ADDR=https://vault.vault.svc:8200 \
	exec_file /vault/vault-env /probes/echo_ok
expect_ok node_read_environ read_environ "$host_pid" "$canary"

# The workload is still healthy after being traced, and re-runs its checks on SIGUSR1.
kill -USR1 "$host_pid"
if pod_wait_log app 'round=2 self_environ=OK:FOUND own_pid_environ=OK:FOUND child_environ=OK:FOUND ptrace_child=OK vm_readv_child=OK' 20; then
	pass app_rerun_on_sigusr1 "round 2 all OK"
else
	fail app_rerun_on_sigusr1 "$(tail -n 2 "$VMTEST_PODS/app/log")"
fi

# A second pod cannot see the first one's processes (separate pid namespaces).
other=$(canary_new)
pod_start_app other "$other" || exit 1
expect_err other_pod_cannot_see_app ENOENT pod_exec other read_environ "$host_pid" "$canary"
expect_ok other_pod_reads_own_app pod_exec other read_environ 1 "$other"

# Nothing secret in the container logs either.
if grep -q SRCANARY "$VMTEST_PODS/app/log" "$VMTEST_PODS/other/log"; then
	fail no_canary_in_pod_logs "a canary is in a pod log"
else
	pass no_canary_in_pod_logs ""
fi

pod_stop app
pod_stop other
if [ -e "$(dirname "$(echo "$cgroup_line" | sed 's|^0::|/sys/fs/cgroup|')")" ] || kill -0 "$host_pid" 2>/dev/null; then
	fail pod_stop_cleans_up "cgroup or process left"
else
	pass pod_stop_cleans_up ""
fi
