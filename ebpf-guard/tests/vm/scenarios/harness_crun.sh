# The same baseline through crun (Debian's crun 1.8, a real OCI runtime): `crun run` starts the
# pod, `crun exec` is the exec session. Higher fidelity than podsim; pods choose it with
# POD_RUNTIME=crun.
# vmtest: needs=

POD_RUNTIME=crun
canary=$(canary_new)
pod_start_app capp "$canary" || exit 1
POD_RUNTIME=podsim
host_pid=$(pod_pid capp)
expect_eq crun_app_is_canary_app /probes/canary_app readlink "/proc/$host_pid/exe"
expect crun_app_self_checks \
	'round=1 self_environ=OK:FOUND own_pid_environ=OK:FOUND child_environ=OK:FOUND ptrace_child=OK vm_readv_child=OK' \
	grep 'round=1' "$VMTEST_PODS/capp/log"
expect_eq crun_app_in_pod_cgroup "0::$(pod_cgroup capp | sed 's|^/sys/fs/cgroup||')" cat "/proc/$host_pid/cgroup"
expect_eq crun_exec_in_pod_cgroup "0::$(pod_cgroup capp | sed 's|^/sys/fs/cgroup||')" pod_exec capp cat /proc/self/cgroup
expect_eq crun_exec_joins_pid_ns "$(readlink "/proc/$host_pid/ns/pid")" pod_exec capp readlink /proc/self/ns/pid
expect_eq crun_exec_sees_app_as_pid1 /probes/canary_app pod_exec capp readlink /proc/1/exe
expect crun_exec_read_environ '^OK bytes=[0-9]+ FOUND$' pod_exec capp read_environ 1 "$canary"
expect_ok crun_exec_ptrace_attach pod_exec capp ptrace_attach 1
expect_ok crun_exec_open_token pod_exec capp open_file /var/run/secrets/kubernetes.io/serviceaccount/token
expect crun_exec_runs_vault_env '^OK ran$' pod_exec capp VAULT_ADDR=https://vault.vault.svc:8200 \
	exec_file /vault/vault-env /probes/echo_ok
pod_stop capp
if kill -0 "$host_pid" 2>/dev/null || [ -d "$VMTEST_PODS/capp" ]; then
	fail crun_pod_stop "process or state left"
else
	pass crun_pod_stop ""
fi
