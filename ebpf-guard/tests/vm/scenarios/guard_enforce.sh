# Enforce mode: an exec session into an injected pod is denied every way to the workload's
# secrets (environ, mem, maps, ptrace attach/seize, process_vm_readv, pidfd_getfd, running
# vault-env again, the service-account token, a core-dumping signal), while the workload
# keeps full access to itself and its children, the node keeps its runtime access, and a
# second, unprotected pod stays fully accessible from its own exec session.
# vmtest: needs=guard
# vmtest: timeout=180

. /vmtest/guard.sh

expect guard_probe '^bpf LSM usable$' ebpf-guard probe

# An ordinary pod, not injected (no vault-env in its emptyDir), started before the guard.
other_canary=$(canary_new)
pod_start other "CANARY=$other_canary" /probes/canary_app || exit 1
rm -f "$(pod_vault_env other)"
pod_wait_log other "CANARY_APP READY" 30 || fail other_ready "$(tail -c 300 "$VMTEST_PODS/other/log")"

guard_start enforce

canary=$(canary_new)
pod_start_app app "$canary" || exit 1
guard_wait_protected app
app_pid=$(pod_pid app)
token=/var/run/secrets/kubernetes.io/serviceaccount/token

# The exec session (an outsider in the pod's namespaces and cgroup) is denied.
expect_err exec_read_environ EACCES pod_exec app read_environ 1 "$canary"
expect_err exec_read_mem EACCES pod_exec app read_mem 1
expect_err exec_read_maps EACCES pod_exec app read_maps 1
expect_err exec_ptrace_attach EPERM pod_exec app ptrace_attach 1
expect_err exec_ptrace_seize EPERM pod_exec app ptrace_seize 1
expect_err exec_vm_readv EPERM pod_exec app vm_readv 1
expect_err exec_pidfd_getfd EPERM pod_exec app pidfd_getfd 1 1
expect_err exec_runs_vault_env EPERM pod_exec app exec_file /vault/vault-env /probes/echo_ok
expect_err exec_open_token EACCES pod_exec app open_file "$token"
# A shell in the session is an outsider too, and so are its children (trust never flows
# to re-parented or forked outsiders).
expect_err exec_shell_child_environ EACCES pod_exec app sh -c "read_environ 1 $canary"
expect exec_kill_segv 'ermitted' pod_exec app kill -SEGV 1
if kill -0 "$app_pid" 2>/dev/null; then pass app_survives_segv_attempt ""; else fail app_survives_segv_attempt "app died"; fi
# Harmless signals still reach the app from the session (e.g. reload on HUP/USR1).
pod_exec app kill -USR1 1
if pod_wait_log app 'round=2 self_environ=OK:FOUND own_pid_environ=OK:FOUND child_environ=OK:FOUND ptrace_child=OK vm_readv_child=OK' 20; then
	pass workload_self_and_child_access "round 2 all OK under enforcement"
else
	fail workload_self_and_child_access "$(tail -n 2 "$VMTEST_PODS/app/log")"
fi
expect workload_first_round_ok 'round=1 self_environ=OK:FOUND own_pid_environ=OK:FOUND child_environ=OK:FOUND ptrace_child=OK vm_readv_child=OK' \
	grep 'round=1' "$VMTEST_PODS/app/log"

# The node (container runtime, kubelet: initial PID namespace, outside kubepods) keeps access;
# podsim exec itself depends on it to open the pod's /proc/PID/ns/* files.
expect_ok node_read_environ read_environ "$app_pid" "$canary"

# The unprotected pod is fully accessible from its own exec session.
expect_ok other_exec_read_environ pod_exec other read_environ 1 "$other_canary"
expect_ok other_exec_read_mem pod_exec other read_mem 1
expect_ok other_exec_ptrace_attach pod_exec other ptrace_attach 1
expect_ok other_exec_ptrace_seize pod_exec other ptrace_seize 1
expect_ok other_exec_vm_readv pod_exec other vm_readv 1
expect_ok other_exec_open_token pod_exec other open_file "$token"
# The protected pod's app is still invisible to the other pod (its own PID namespace).
expect_err other_cannot_see_app ENOENT pod_exec other read_environ "$app_pid" "$canary"

# Every denial was recorded, as JSON, with the pod's identity.
log=/run/daemons/guard.log
uid=$(pod_uid app)
cid=$(pod_cid app)
for hook_comm in ptrace_access_check:read_environ ptrace_access_check:ptrace_attach \
	ptrace_access_check:vm_readv bprm_check_security:exec_file file_open:open_file task_kill:kill; do
	hook=${hook_comm%%:*}
	comm=${hook_comm#*:}
	line=$(grep "\"hook\":\"$hook\",\"decision\":\"deny\",\"subject\":{[^}]*\"comm\":\"$comm\"" "$log" | head -n 1)
	case "$line" in
	*"\"node\":\"vmtest-node\""*"\"pod\":\"$uid\""*"\"container\":\"$cid\""*) pass "event:$hook:$comm" "recorded" ;;
	*) fail "event:$hook:$comm" "missing or wrong identity: $(echo "$line" | head -c 300)" ;;
	esac
done
if wget -qO- http://127.0.0.1:9090/metrics | grep -qE '^strongroom_guard_events_total\{hook="ptrace_access_check",decision="deny"\} [1-9]'; then
	pass metrics_count_denials ""
else
	fail metrics_count_denials "$(wget -qO- http://127.0.0.1:9090/metrics | grep events_total | head -c 400)"
fi
if grep -q SRCANARY "$log"; then fail no_canary_in_guard_log "canary in agent output"; else pass no_canary_in_guard_log ""; fi
