# Setup shared by the guard scenarios: `. /vmtest/guard.sh` after the header lines (lib.sh is
# already loaded). Brings up loopback (the agent listens on 127.0.0.1) and defines the agent
# helpers below plus a default scenario_cleanup (stop the agent, unpin everything), which a
# scenario may redefine after sourcing this file.

GUARD_PIN=/sys/fs/bpf/strongroom
GUARD_ADDR=127.0.0.1:9090
GUARD_LOG=$VMTEST_DAEMONS/guard.log

ip link set lo up 2>/dev/null

# guard_ready: the agent answers /readyz with "enforcing ...".
guard_ready() { wget -qO- "http://$GUARD_ADDR/readyz" 2>/dev/null | grep -q '^enforcing'; }

# guard_start MODE [CHECK_SUFFIX] [RESCAN_MS]: starts the agent (node mode MODE, the kubelet
# layout under /var/lib/kubelet, rescan every RESCAN_MS, default 100) as daemon "guard" and
# waits (30 s) until it is ready: PASS guard_ready<CHECK_SUFFIX>, or FAIL and exit.
guard_start() {
	daemon_start guard ebpf-guard run --mode "$1" --node-name vmtest-node \
		--kubelet-root /var/lib/kubelet --pin-dir "$GUARD_PIN" --listen "$GUARD_ADDR" \
		--rescan-ms "${3:-100}"
	if wait_for 30 guard_ready; then
		pass "guard_ready$2" "$(wget -qO- "http://$GUARD_ADDR/readyz" 2>&1)"
	else
		fail "guard_ready$2" "$(tail -c 600 "$GUARD_LOG")"
		exit 1
	fi
}

# guard_wait_protected POD: waits (10 s) until the agent reports the pod's container
# protected (by the kernel's lineage start or by its own marking): PASS protected:POD, or
# FAIL and exit.
guard_wait_protected() {
	_id=$(pod_cgroup_id "$1")
	if daemon_wait_log guard "container protected cgroup=$_id( |\$)" 10; then
		pass "protected:$1" "cgroup=$_id"
	else
		fail "protected:$1" "$(tail -c 600 "$GUARD_LOG")"
		exit 1
	fi
}

# guard_stop: stops the agent and unpins its links and maps (the programs detach).
guard_stop() {
	daemon_stop guard
	ebpf-guard detach --pin-dir "$GUARD_PIN" >/dev/null 2>&1
}

scenario_cleanup() { guard_stop; }
