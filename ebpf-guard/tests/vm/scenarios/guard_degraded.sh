# Fail closed survives the agent. The lineage map is full before the pod starts, so the
# kernel cannot track the pod's init and marks the container degraded: from then on every
# task outside the (empty) lineage is an outsider for every process of the container. The
# agent then rewrites the container's policy (the pod asks for enforce through its
# guard-mode file, later stops asking) and is restarted; the kernel's degraded flag must
# survive each of these agent writes, and the exec session must stay denied under enforce.
# (The agent once wrote back the whole container value it had read, which could erase a flag
# the kernel set in between; now the kernel's flags live in a map the agent never rewrites.)
# vmtest: needs=guard
# vmtest: timeout=180

. /vmtest/guard.sh

guard_start audit

# Leave no room in the lineage map (keys above any pid, so no real task is affected).
expect fill_lineage_map '^OK filled=[1-9][0-9]*$' bpf_map fill "$GUARD_PIN/maps/lineage"

canary=$(canary_new)
# The gap lets the agent register the pod's vault-env before it runs.
POD_INIT_SECONDS=1 pod_start_app app "$canary" || exit 1
guard_wait_protected app
cg=$(pod_cgroup_id app)
mode_file="$(dirname "$(pod_vault_env app)")/guard-mode"
token=/var/run/secrets/kubernetes.io/serviceaccount/token

# state_flags / policy_mode: the kernel's flags and the agent's mode for the pod's container.
state_flags() { bpf_map u32 "$GUARD_PIN/maps/container_state" "$cg" 0 | sed -n 's/^OK u32=//p'; }
policy_mode() { bpf_map u32 "$GUARD_PIN/maps/policies" "$cg" 0 | sed -n 's/^OK u32=//p'; }
# check_degraded CHECK: the kernel's degraded flag (4) is still set.
check_degraded() {
	_f=$(state_flags)
	if [ -n "$_f" ] && [ $((_f & 4)) = 4 ]; then pass "$1" "flags=$_f"; else fail "$1" "flags=$_f"; fi
}
# wait_mode CHECK MODE: the agent's policy for the container reaches MODE (1 audit, 2 enforce).
mode_is() { [ "$(policy_mode)" = "$1" ]; }
wait_mode() {
	if wait_for 10 mode_is "$2"; then
		pass "$1" "mode=$2"
	else
		fail "$1" "mode=$(policy_mode), want $2"
	fi
}
# expect_denied SUFFIX: an exec session is refused everything on the untracked workload.
expect_denied() {
	expect_err "exec_read_environ$1" EACCES pod_exec app read_environ 1 "$canary"
	expect_err "exec_ptrace_attach$1" EPERM pod_exec app ptrace_attach 1
	expect_err "exec_vm_readv$1" EPERM pod_exec app vm_readv 1
	expect_err "exec_open_token$1" EACCES pod_exec app open_file "$token"
}

lineage_full_metric() { wget -qO- "http://$GUARD_ADDR/metrics" | grep '^strongroom_guard_lineage_full [1-9]'; }
if wait_for 10 lineage_full_metric; then
	pass lineage_full_counted "$(lineage_full_metric)"
else
	fail lineage_full_counted "$(wget -qO- "http://$GUARD_ADDR/metrics" 2>&1 | grep lineage_full)"
fi
check_degraded kernel_marked_degraded
wait_mode policy_audit 1
# The workload is in no lineage: only the degraded flag makes it a protected target.
expect_err untracked_workload ENOENT bpf_map u32 "$GUARD_PIN/maps/lineage" "$(pod_pid app)" 0
# Audit mode: allowed and recorded.
expect exec_read_environ_audit 'OK .*FOUND$' pod_exec app read_environ 1 "$canary"

# The pod asks for enforce: the agent replaces the container's policy.
echo enforce >"$mode_file"
wait_mode policy_enforce 2
check_degraded degraded_after_mode_change
expect_denied ""

# A restarted agent (pinned maps reused, startup repair, backfill, a full reconcile).
daemon_stop guard
guard_start audit _restart
wait_mode policy_enforce_restart 2
check_degraded degraded_after_restart
expect_denied _restart

# The pod stops asking for enforce: the agent relaxes the policy to the node's audit; the
# kernel's flag is still untouched (and the container still treated as degraded).
rm -f "$mode_file"
wait_mode policy_audit_again 1
check_degraded degraded_after_relax
expect exec_read_environ_relaxed 'OK .*FOUND$' pod_exec app read_environ 1 "$canary"
sleep 1
expect audit_event_untracked_target '"decision":"audit"' \
	sh -c "grep '\"hook\":\"ptrace_access_check\"' $GUARD_LOG | grep '\"comm\":\"read_environ\"' | tail -n 1"
