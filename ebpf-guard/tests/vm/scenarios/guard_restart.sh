# Agent restart: the agent is SIGKILLed and started again while an exec session keeps
# trying to read the workload's environment. Pinned links keep every program attached and
# pinned maps keep every lineage, so not a single attempt succeeds; the restarted agent
# reuses the pins (attaches nothing new) and reports denials made while it was down.
# vmtest: needs=guard
# vmtest: timeout=180

. /vmtest/guard.sh
scenario_cleanup() {
	[ -n "$hammer" ] && kill "$hammer" 2>/dev/null
	guard_stop
}

guard_start enforce ""
canary=$(canary_new)
pod_start_app app "$canary" || exit 1
guard_wait_protected app
expect_err before_kill_environ EACCES pod_exec app read_environ 1 "$canary"

# An exec session hammers the app for the whole kill/restart window.
attempts=/run/guard_restart_attempts
: >"$attempts"
(
	while [ ! -e /run/guard_restart_stop ]; do
		pod_exec app read_environ 1 "$canary" >>"$attempts" 2>&1
		pod_exec app ptrace_attach 1 >>"$attempts" 2>&1
	done
) &
hammer=$!

sleep 1
mv /run/daemons/guard.log /run/daemons/guard.first.log
first_agent=$(daemon_pid guard)
daemon_stop guard KILL
if kill -0 "$first_agent" 2>/dev/null; then
	fail agent_killed "still running"
else
	pass agent_killed "SIGKILL"
fi
links=$(ls "$GUARD_PIN/links" 2>/dev/null | wc -l)
if [ "$links" = 7 ]; then pass links_pinned_while_down "$links links"; else fail links_pinned_while_down "$links links"; fi

# While no agent runs: still enforced, every path.
expect_err down_environ EACCES pod_exec app read_environ 1 "$canary"
expect_err down_ptrace_attach EPERM pod_exec app ptrace_attach 1
expect_err down_vm_readv EPERM pod_exec app vm_readv 1
expect_err down_runs_vault_env EPERM pod_exec app exec_file /vault/vault-env /probes/echo_ok
expect_err down_open_token EACCES pod_exec app open_file /var/run/secrets/kubernetes.io/serviceaccount/token
# The workload's own lineage is still tracked: its children still reach it.
kill -USR1 "$(pod_pid app)"
if pod_wait_log app 'round=2 self_environ=OK:FOUND own_pid_environ=OK:FOUND child_environ=OK:FOUND ptrace_child=OK vm_readv_child=OK' 20; then
	pass down_workload_self_access "round 2 all OK"
else
	fail down_workload_self_access "$(tail -n 2 "$VMTEST_PODS/app/log")"
fi
sleep 1

guard_start enforce _after_restart
log=/run/daemons/guard.log
if grep -q 'attached=\[\]' "$log" && grep -qE 'reused=\[[^]]*guard_ptrace_access_check' "$log"; then
	pass restart_reuses_pins "$(grep -o 'attached=[^ ]* reused=\[[^]]*\]' "$log" | head -n 1)"
else
	fail restart_reuses_pins "$(grep 'programs in place' "$log" | head -c 400)"
fi
sleep 1
touch /run/guard_restart_stop
wait "$hammer"
hammer=
expect_err after_restart_environ EACCES pod_exec app read_environ 1 "$canary"

total=$(grep -c . "$attempts")
ok=$(grep -c '^OK' "$attempts")
denied=$(grep -cE '^ERR (EACCES|EPERM)' "$attempts")
if [ "$total" -gt 4 ] && [ "$ok" = 0 ] && [ "$denied" = "$total" ]; then
	pass enforced_throughout "$denied of $total attempts denied across kill and restart"
else
	fail enforced_throughout "total=$total ok=$ok denied=$denied $(grep -v '^ERR E' "$attempts" | head -c 300)"
fi
# Denials made while the agent was down waited in the pinned ring buffer.
if grep -q '"hook":"file_open","decision":"deny","subject":{[^}]*"comm":"open_file"' "$log"; then
	pass restarted_agent_reports_downtime_denials "token denial from the downtime logged after restart"
else
	fail restarted_agent_reports_downtime_denials "$(grep -c '"decision":"deny"' "$log") deny lines"
fi
if grep -q SRCANARY /run/daemons/guard.log /run/daemons/guard.first.log "$attempts"; then
	fail no_canary_in_output "canary leaked"
else
	pass no_canary_in_output ""
fi
