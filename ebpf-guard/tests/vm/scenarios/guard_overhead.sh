# Overhead of the guard, measured in this guest with and without it (programs detached):
# open+close of /proc/self/status, open+read of an unrelated process's /proc/PID/environ,
# and fork+exec+wait of a static binary, from the node and from inside a protected pod's
# workload (where every fork joins the lineage). Reported as ratios (guarded / unguarded);
# the target is <= 1.05, asserted here only for sanity (< 5.0): TCG timing on a shared host
# is noisy, so each figure is the fastest of three alternating rounds.
# vmtest: needs=guard
# vmtest: timeout=300

GUARD_PIN=/sys/fs/bpf/strongroom
OPEN_N=${GUARD_BENCH_OPEN_N:-5000}
FORK_N=${GUARD_BENCH_FORK_N:-100}
guard_ready() { wget -qO- http://127.0.0.1:9090/readyz 2>/dev/null | grep -q '^enforcing'; }
guard_on() {
	daemon_start guard ebpf-guard run --mode enforce --node-name vmtest-node \
		--kubelet-root /var/lib/kubelet --pin-dir "$GUARD_PIN" --listen 127.0.0.1:9090 \
		--rescan-ms 1000
	wait_for 30 guard_ready || { fail guard_ready "$(tail -c 600 /run/daemons/guard.log)"; exit 1; }
}
guard_off() {
	daemon_stop guard
	ebpf-guard detach --pin-dir "$GUARD_PIN" >/dev/null 2>&1
}
scenario_cleanup() { guard_off; }

# ns_per_op CMD...: runs a bench command, prints its ns_per_op.
ns_per_op() { "$@" | sed -n 's/^OK BENCH .* ns_per_op=\([0-9.]*\).*/\1/p'; }
# in_pod KIND N [ARGS]: runs bench as a pod's own workload (its PID 1, so the root of the
# container's lineage; the pod has an injector in its emptyDir, so the guard protects it)
# and prints its ns_per_op.
pod_round=0
in_pod() {
	pod_round=$((pod_round + 1))
	_name=bench$pod_round
	pod_start "$_name" /probes/bench "$@" || return 1
	pod_wait_log "$_name" '^(OK|ERR)' 60 || info "$_name: $(tail -c 200 "$VMTEST_PODS/$_name/log")"
	sed -n 's/^OK BENCH .* ns_per_op=\([0-9.]*\).*/\1/p' "$VMTEST_PODS/$_name/log"
	pod_stop "$_name"
}
# measure LABEL: one round of every benchmark, appended to /run/bench.LABEL
measure() {
	{
		echo "open $(ns_per_op bench open "$OPEN_N")"
		echo "environ $(ns_per_op bench environ "$OPEN_N" "$other_pid")"
		echo "forkexec $(ns_per_op bench forkexec "$FORK_N" /probes/nop)"
		echo "pod_open $(in_pod open "$OPEN_N")"
		echo "pod_forkexec $(in_pod forkexec "$FORK_N" /probes/nop)"
	} >>"/run/bench.$1"
	info "round $1: $(tail -n 5 "/run/bench.$1" | tr '\n' ' ')"
}
# best LABEL KIND: the fastest of the rounds (least disturbed by the emulator).
best() { awk -v k="$2" '$1 == k && $2 > 0 { if (m == "" || $2 < m) m = $2 } END { print m }' "/run/bench.$1"; }

ip link set lo up 2>/dev/null
rm -f /run/bench.base /run/bench.guard
# An unrelated process whose environ the node reads (not protected: only lineage lookups).
other_pid=$$

# Alternating rounds (TCG timing drifts with the host's load); a protected app runs the
# whole time, so the maps are populated while the guard is on.
canary=$(canary_new)
pod_start_app app "$canary" || exit 1
for round in 1 2 3; do
	guard_off
	measure base
	guard_on
	measure guard
done
guard_off

for kind in open environ forkexec pod_open pod_forkexec; do
	b=$(best base "$kind")
	g=$(best guard "$kind")
	if [ -z "$b" ] || [ -z "$g" ]; then
		fail "overhead:$kind" "missing figures: base=$b guard=$g"
		continue
	fi
	ratio=$(awk -v g="$g" -v b="$b" 'BEGIN { printf "%.3f", g / b }')
	metric "overhead_ratio_$kind" "$ratio" x
	metric "ns_per_op_base_$kind" "$b" ns
	metric "ns_per_op_guard_$kind" "$g" ns
	if awk -v r="$ratio" 'BEGIN { exit !(r > 0 && r < 5.0) }'; then
		pass "overhead:$kind" "ratio=$ratio base=${b}ns guard=${g}ns (target <= 1.05)"
	else
		fail "overhead:$kind" "ratio=$ratio base=${b}ns guard=${g}ns"
	fi
done
