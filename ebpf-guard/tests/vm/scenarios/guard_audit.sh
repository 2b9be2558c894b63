# Audit mode: the exec session's attempts all succeed, and each produces exactly one audit
# event (JSON on the agent's stdout) with node, pod, container, hook, decision, subject
# pid/comm/uid and target pid/comm. A pod asking for enforce (guard-mode file written by
# the injector's init container) is enforced anyway: the stricter of node and pod wins.
# vmtest: needs=guard
# vmtest: timeout=180

. /vmtest/guard.sh

guard_start audit

canary=$(canary_new)
pod_start_app app "$canary" || exit 1
guard_wait_protected app
app_pid=$(pod_pid app)
token=/var/run/secrets/kubernetes.io/serviceaccount/token

# The same attempts as in guard_enforce all succeed (the canary is FOUND but never printed).
expect exec_read_environ 'OK .*FOUND$' pod_exec app read_environ 1 "$canary"
expect_ok exec_read_mem pod_exec app read_mem 1
expect_ok exec_read_maps pod_exec app read_maps 1
expect_ok exec_ptrace_attach pod_exec app ptrace_attach 1
expect_ok exec_ptrace_seize pod_exec app ptrace_seize 1
expect_ok exec_vm_readv pod_exec app vm_readv 1
expect_ok exec_pidfd_getfd pod_exec app pidfd_getfd 1 1
# Allowed: vault-env runs and execs its command (no vault: references, so no login).
expect exec_runs_vault_env '^OK ran$' pod_exec app VAULT_ADDR=https://vault.vault.svc:8200 \
	exec_file /vault/vault-env /probes/echo_ok
expect_ok exec_open_token pod_exec app open_file "$token"

# Give the agent a moment to drain the ring buffer (it polls every 20 ms).
sleep 1
log=/run/daemons/guard.log
uid=$(pod_uid app)
cid=$(pod_cid app)

# audit_events HOOK COMM [PTRACE_MODE]: the audit lines for one attempt.
audit_events() {
	_p="\"hook\":\"$1\",\"decision\":\"audit\",\"subject\":{[^}]*\"comm\":\"$2\""
	if [ -n "$3" ]; then
		grep "$_p" "$log" | grep "\"ptrace_mode\":$3}"
	else
		grep "$_p" "$log"
	fi
}
# check_one CHECK HOOK COMM MODE TARGET(yes|no)
check_one() {
	_lines=$(audit_events "$2" "$3" "$4")
	_n=$(printf '%s' "$_lines" | grep -c .)
	if [ "$_n" != 1 ]; then
		fail "$1" "want exactly 1 audit event for $2/$3 mode=$4, got $_n"
		return
	fi
	_want="\"node\":\"vmtest-node\",\"pod\":\"$uid\",\"pod_uid\":\"$uid\",\"container\":\"$cid\",\"hook\":\"$2\",\"decision\":\"audit\",\"subject\":\\{\"pid\":[0-9]+,\"tid\":[0-9]+,\"comm\":\"$3\",\"uid\":0\\}"
	if [ "$5" = yes ]; then
		_want="$_want,\"target\":\\{\"pid\":$app_pid,\"comm\":\"canary_app\"\\}"
	fi
	if printf '%s' "$_lines" | grep -qE "^\{\"time\":\"[0-9T:.-]+Z\",$_want"; then
		pass "$1" "$(printf '%s' "$_lines" | sed 's/"time":"[^"]*",//' | head -c 400)"
	else
		fail "$1" "fields differ: $(printf '%s' "$_lines" | head -c 400)"
	fi
}
# Ptrace access modes: READ|FSCREDS=9 (environ, maps), ATTACH|FSCREDS=10 (mem),
# ATTACH|REALCREDS=18 (ptrace attach/seize, process_vm_readv, pidfd_getfd).
check_one audit_event_environ ptrace_access_check read_environ 9 yes
check_one audit_event_mem ptrace_access_check read_mem 10 yes
check_one audit_event_maps ptrace_access_check read_maps 9 yes
check_one audit_event_ptrace_attach ptrace_access_check ptrace_attach 18 yes
check_one audit_event_ptrace_seize ptrace_access_check ptrace_seize 18 yes
check_one audit_event_vm_readv ptrace_access_check vm_readv 18 yes
check_one audit_event_pidfd_getfd ptrace_access_check pidfd_getfd 18 yes
check_one audit_event_vault_env bprm_check_security exec_file "" no
check_one audit_event_token file_open open_file "" no
# read_mem and vm_readv also read /proc/PID/maps first: that is their second (and last) event.
for comm in read_mem vm_readv; do
	n=$(grep -c "\"decision\":\"audit\",\"subject\":{[^}]*\"comm\":\"$comm\"" "$log")
	if [ "$n" = 2 ]; then pass "audit_events_total:$comm" "maps + access"; else fail "audit_events_total:$comm" "got $n"; fi
done
if grep -q '"decision":"deny"' "$log"; then
	fail audit_mode_denies_nothing "$(grep '"decision":"deny"' "$log" | head -c 300)"
else
	pass audit_mode_denies_nothing ""
fi
if wget -qO- http://127.0.0.1:9090/metrics | grep -qE '^strongroom_guard_events_total\{hook="ptrace_access_check",decision="audit"\} (9|[1-9][0-9]+)'; then
	pass metrics_count_audits ""
else
	fail metrics_count_audits "$(wget -qO- http://127.0.0.1:9090/metrics | grep events_total | head -c 400)"
fi

# Per-pod mode: a pod asking for enforce is enforced on an audit node. The mode file is the
# one the init container's copy-self writes from STRONGROOM_GUARD_MODE.
strict_canary=$(canary_new)
POD_GUARD_MODE=enforce
pod_start_app strict "$strict_canary" || exit 1
unset POD_GUARD_MODE
if [ "$(cat "$(dirname "$(pod_vault_env strict)")/guard-mode")" = enforce ]; then
	pass copy_self_wrote_guard_mode ""
else
	fail copy_self_wrote_guard_mode "$(ls -l "$(dirname "$(pod_vault_env strict)")")"
fi
strict_denied() { pod_exec strict read_environ 1 "$strict_canary" | grep -q '^ERR EACCES'; }
if wait_for 10 strict_denied; then
	pass pod_enforce_beats_node_audit "$(pod_exec strict read_environ 1 "$strict_canary")"
else
	fail pod_enforce_beats_node_audit "$(pod_exec strict read_environ 1 "$strict_canary")"
fi
expect_err pod_enforce_ptrace EPERM pod_exec strict ptrace_attach 1
# ...while the audit pod next to it still only records.
expect_ok audit_pod_still_audit pod_exec app ptrace_attach 1
if grep -q SRCANARY "$log"; then fail no_canary_in_guard_log "canary in agent output"; else pass no_canary_in_guard_log ""; fi
