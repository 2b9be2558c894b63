# Sourced by every vm-test scenario (see README.md for the API and the result line format).
# Results go to the serial console as "VMTEST RESULT <scenario> <check> PASS|FAIL <detail>".
# The harness fails the run on any FAIL, on a scenario that reports nothing, and on any
# canary made by canary_new that shows up anywhere on the console.

VMTEST_SCENARIO=${VMTEST_SCENARIO:-unnamed}
VMTEST_PODS=/run/pods
VMTEST_RESULTS=0
mkdir -p "$VMTEST_PODS"

# --- results ----------------------------------------------------------------------------

# result CHECK PASS|FAIL DETAIL...: prints one result line (details on one line).
result() {
	_check=$1 _verdict=$2
	shift 2
	VMTEST_RESULTS=$((VMTEST_RESULTS + 1))
	echo "VMTEST RESULT $VMTEST_SCENARIO $_check $_verdict $(echo "$*" | tr '\n' ' ')"
}
pass() { _c=$1; shift; result "$_c" PASS "$@"; }
fail() { _c=$1; shift; result "$_c" FAIL "$@"; }

# metric NAME VALUE UNIT: a measured figure, printed as "VMTEST METRIC <scenario> NAME VALUE UNIT".
metric() { echo "VMTEST METRIC $VMTEST_SCENARIO $1 $2 $3"; }

# info TEXT...: free text for the log (the parser ignores it).
info() { echo "VMTEST INFO $VMTEST_SCENARIO $*"; }

# expect CHECK PATTERN CMD...: runs CMD; PASS if its combined output contains PATTERN (a grep -E
# pattern), else FAIL. The output (never secret: probes print only sizes and FOUND/NOTFOUND) is
# the detail. Returns 0 on PASS.
expect() {
	_check=$1 _pattern=$2
	shift 2
	_out=$("$@" 2>&1)
	_rc=$?
	if echo "$_out" | grep -qE -- "$_pattern"; then
		result "$_check" PASS "rc=$_rc $_out"
		return 0
	fi
	result "$_check" FAIL "want /$_pattern/ got rc=$_rc $_out"
	return 1
}

# expect_eq CHECK WANT CMD...: PASS if CMD's combined output is exactly WANT.
expect_eq() {
	_check=$1 _want=$2
	shift 2
	_out=$("$@" 2>&1)
	_rc=$?
	if [ "$_out" = "$_want" ]; then
		result "$_check" PASS "rc=$_rc $_out"
		return 0
	fi
	result "$_check" FAIL "want '$_want' got rc=$_rc $_out"
	return 1
}

# expect_ok CHECK CMD...: PASS if a probe prints "OK ..." (and exits 0).
expect_ok() {
	_check=$1
	shift
	_out=$("$@" 2>&1)
	_rc=$?
	case "$_out" in
	OK*) [ $_rc = 0 ] && { result "$_check" PASS "$_out"; return 0; } ;;
	esac
	result "$_check" FAIL "want OK got rc=$_rc $_out"
	return 1
}

# expect_err CHECK ERRNO CMD...: PASS if a probe prints "ERR ERRNO" (e.g. EACCES, EPERM).
expect_err() {
	_check=$1 _errno=$2
	shift 2
	_out=$("$@" 2>&1)
	_rc=$?
	case "$_out" in
	"ERR $_errno"*) result "$_check" PASS "$_out"; return 0 ;;
	esac
	result "$_check" FAIL "want ERR $_errno got rc=$_rc $_out"
	return 1
}

# bench_ns KIND N [ARG]: runs `bench KIND N [ARG]` (KIND open|environ|forkexec) and prints
# its ns_per_op only; status 1 (and prints the probe's ERR line) if it fails.
bench_ns() {
	_out=$(bench "$@" 2>&1)
	case "$_out" in
	"OK BENCH "*) echo "$_out" | sed -n 's/.*ns_per_op=\([0-9]*\).*/\1/p' ;;
	*) echo "$_out"; return 1 ;;
	esac
}

# wait_for SECONDS CMD...: retries CMD every 0.1 s until it succeeds; returns 1 on timeout.
wait_for() {
	_deadline=$(($1 * 10))
	shift
	_i=0
	while ! "$@" >/dev/null 2>&1; do
		_i=$((_i + 1))
		[ $_i -ge $_deadline ] && return 1
		sleep 0.1
	done
	return 0
}

# canary_new: prints a fresh random canary. Never echo it: the host fails the run if any
# canary appears on the console.
canary_new() {
	echo "SRCANARY$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
}

# --- simulated pods ---------------------------------------------------------------------
# A pod NAME has one container. Its state lives in /run/pods/NAME/ (files: uid, cid, cgroup,
# kubelet_dir, pid, shim, log, owner). Inside the container the workload is PID 1.

_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# pod_start NAME [KEY=VALUE]... CMD [ARGS...]: starts a simulated pod, kubelet/containerd style
# (with POD_GUARD_MODE=enforce|audit set, copy-self writes it to guard-mode next to vault-env;
# with POD_INIT_SECONDS=S, waits S seconds between preparing the volumes and starting CMD):
#   /var/lib/kubelet/pods/<uid>/volumes/kubernetes.io~empty-dir/vault-env/    (tmpfs, holds a
#       copy of vault-env; mounted at /vault in the container)
#   /var/lib/kubelet/pods/<uid>/volumes/kubernetes.io~projected/kube-api-access-x/token
#       (tmpfs, token -> ..data/token -> ..<timestamp>/token; mounted read-only at
#       /var/run/secrets/kubernetes.io/serviceaccount)
#   cgroup /sys/fs/cgroup/kubepods.slice/kubepods-pod<uid_>.slice/cri-containerd-<cid>.scope
#   new pid, mount, uts and ipc namespaces; environment: PATH, HOSTNAME=NAME and the KEY=VALUEs.
# The container's stdout and stderr go to /run/pods/NAME/log. Returns once the container's
# PID 1 exists (use pod_wait_log to wait for the app itself). Prints nothing.
pod_start() {
	_name=$1
	shift
	_dir=$VMTEST_PODS/$_name
	if [ -e "$_dir" ]; then
		fail "pod_start:$_name" "pod exists"
		return 1
	fi
	mkdir -p "$_dir"
	echo "$VMTEST_SCENARIO" >"$_dir/owner"
	_h=$(_hex 16)
	_uid=$(echo "$_h" | sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12})$/\1-\2-\3-\4-\5/')
	_cid=$(_hex 32)
	_kdir=/var/lib/kubelet/pods/$_uid
	_ed=$_kdir/volumes/kubernetes.io~empty-dir/vault-env
	_sa=$_kdir/volumes/kubernetes.io~projected/kube-api-access-x
	_cg=/sys/fs/cgroup/kubepods.slice/kubepods-pod$(echo "$_uid" | tr - _).slice/cri-containerd-$_cid.scope
	mkdir -p "$_ed" "$_sa" "$_cg"
	mount -t tmpfs -o size=64m tmpfs "$_ed"
	mount -t tmpfs -o size=1m tmpfs "$_sa"
	# The injector's init container: `vault-env copy-self` installs vault-env and, given
	# STRONGROOM_GUARD_MODE (the webhook copies the pod's annotation there), the guard-mode file.
	if [ -n "${POD_GUARD_MODE:-}" ]; then
		STRONGROOM_GUARD_MODE=$POD_GUARD_MODE /opt/vault-env/vault-env copy-self "$_ed" 2>"$_dir/init.log"
	else
		/opt/vault-env/vault-env copy-self "$_ed" 2>"$_dir/init.log"
	fi || {
		fail "pod_start:$_name" "copy-self: $(head -c 300 "$_dir/init.log")"
		return 1
	}
	# The kubelet's atomic-writer layout: token -> ..data/token, ..data -> ..<timestamp>/.
	# The token is a canary too: it must never reach the console.
	_ts=..$(date +%Y_%m_%d_%H_%M_%S).$(_hex 4)
	mkdir "$_sa/$_ts"
	canary_new >"$_sa/$_ts/token"
	echo default >"$_sa/$_ts/namespace"
	echo "-----BEGIN CERTIFICATE-----" >"$_sa/$_ts/ca.crt"
	chmod 0644 "$_sa/$_ts/token" "$_sa/$_ts/namespace" "$_sa/$_ts/ca.crt"
	ln -s "$_ts" "$_sa/..data"
	for _f in token namespace ca.crt; do ln -s "..data/$_f" "$_sa/$_f"; done
	# Volumes are ready (the injector's init container is done); the app container starts after
	# POD_INIT_SECONDS (default 0), the gap a kubelet leaves between the two.
	[ "${POD_INIT_SECONDS:-0}" != 0 ] && sleep "$POD_INIT_SECONDS"
	echo "$_uid" >"$_dir/uid"
	echo "$_cid" >"$_dir/cid"
	echo "$_cg" >"$_dir/cgroup"
	echo "$_kdir" >"$_dir/kubelet_dir"
	echo "${POD_RUNTIME:-podsim}" >"$_dir/runtime"
	case "${POD_RUNTIME:-podsim}" in
	podsim)
		podsim start -c "$_cg" -p "$_dir/pid" -H "$_name" \
			-b "$_ed:/vault" -r "$_sa:/var/run/secrets/kubernetes.io/serviceaccount" \
			-- "$@" >"$_dir/log" 2>&1 &
		;;
	crun)
		_crun_bundle "$_dir/bundle" "$_name" "$_cg" "$_ed" "$_sa" "$@"
		crun run --bundle "$_dir/bundle" --pid-file "$_dir/pid" "$_name" >"$_dir/log" 2>&1 &
		;;
	*)
		fail "pod_start:$_name" "unknown POD_RUNTIME $POD_RUNTIME"
		return 1
		;;
	esac
	echo $! >"$_dir/shim"
	if ! wait_for 10 test -s "$_dir/pid"; then
		fail "pod_start:$_name" "container did not start: $(tail -c 300 "$_dir/log")"
		return 1
	fi
	return 0
}

# _crun_bundle DIR NAME CGROUP EMPTYDIR SA_DIR CMD...: an OCI bundle for crun: empty rootfs with
# /bin and /probes bound read-only, the same volumes, namespaces and cgroup as podsim.
_json_str() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
_crun_bundle() {
	_b=$1 _n=$2 _cgp=${3#/sys/fs/cgroup} _edir=$4 _sadir=$5
	shift 5
	_args="" _env="$(_json_str PATH=/probes:/bin), $(_json_str "HOSTNAME=$_n")"
	while [ $# -gt 0 ]; do
		case "$1" in
		[A-Za-z_]*=*) _env="$_env, $(_json_str "$1")" && shift ;;
		*) break ;;
		esac
	done
	for _a in "$@"; do _args="$_args${_args:+, }$(_json_str "$_a")"; done
	_caps='"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
		"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
		"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"'
	mkdir -p "$_b/rootfs"
	cat >"$_b/config.json" <<JSON
{
  "ociVersion": "1.0.2",
  "process": {
    "terminal": false,
    "user": { "uid": 0, "gid": 0 },
    "args": [ $_args ],
    "env": [ $_env ],
    "cwd": "/",
    "capabilities": { "bounding": [ $_caps ], "effective": [ $_caps ], "permitted": [ $_caps ] }
  },
  "root": { "path": "rootfs" },
  "hostname": "$_n",
  "mounts": [
    { "destination": "/proc", "type": "proc", "source": "proc" },
    { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755", "size=65536k"] },
    { "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"] },
    { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"] },
    { "destination": "/bin", "type": "bind", "source": "/bin", "options": ["rbind", "ro"] },
    { "destination": "/probes", "type": "bind", "source": "/probes", "options": ["rbind", "ro"] },
    { "destination": "/vault", "type": "bind", "source": "$_edir", "options": ["rbind", "rw"] },
    { "destination": "/var/run/secrets/kubernetes.io/serviceaccount", "type": "bind", "source": "$_sadir", "options": ["rbind", "ro"] }
  ],
  "linux": {
    "cgroupsPath": "$_cgp",
    "namespaces": [ { "type": "pid" }, { "type": "mount" }, { "type": "ipc" }, { "type": "uts" } ]
  }
}
JSON
}

# pod_start_app NAME CANARY: pod_start NAME VAULT_ADDR=https://vault.vault.svc:8200 CANARY=CANARY
# /vault/vault-env /probes/canary_app (as injected: the webhook sets VAULT_ADDR; with no vault:
# references vault-env execs the app without contacting Vault),
# then waits (30 s) until the app reports READY. Returns 1 (with a FAIL) if it does not.
pod_start_app() {
	pod_start "$1" VAULT_ADDR=https://vault.vault.svc:8200 "CANARY=$2" \
		/vault/vault-env /probes/canary_app || return 1
	if ! pod_wait_log "$1" "CANARY_APP READY" 30; then
		fail "pod_start_app:$1" "app not ready: $(tail -c 300 "$VMTEST_PODS/$1/log")"
		return 1
	fi
	return 0
}

# pod_rotate_token NAME: the kubelet's token rotation: a new ..<timestamp>/ directory with a new
# token (a new inode), then ..data swapped atomically to it; the old directory is removed.
pod_rotate_token() {
	_sa=$(dirname "$(pod_token "$1")")
	_old=$(readlink "$_sa/..data")
	_ts=..$(date +%Y_%m_%d_%H_%M_%S).$(_hex 4)
	mkdir "$_sa/$_ts"
	canary_new >"$_sa/$_ts/token"
	cp "$_sa/$_old/namespace" "$_sa/$_old/ca.crt" "$_sa/$_ts/"
	chmod 0644 "$_sa/$_ts/token"
	ln -s "$_ts" "$_sa/..data_tmp"
	rename_path "$_sa/..data_tmp" "$_sa/..data" >/dev/null || return 1
	rm -rf "${_sa:?}/$_old"
}

# pod_exec NAME [KEY=VALUE]... CMD [ARGS...]: runs CMD as a `kubectl exec` session: joins the
# pod's cgroup, then its ipc, uts, pid and mount namespaces, forks and execs CMD (an outsider:
# not a descendant of the workload). Output and exit status are CMD's. A crun pod is entered
# with `crun exec` instead.
pod_exec() {
	_dir=$VMTEST_PODS/$1
	_pname=$1
	shift
	if [ "$(cat "$_dir/runtime")" = crun ]; then
		# K=V values must not contain blanks here (they are passed word-split to --env).
		_envargs="--env PATH=/probes:/bin --env HOSTNAME=$_pname"
		while [ $# -gt 0 ]; do
			case "$1" in
			[A-Za-z_]*=*) _envargs="$_envargs --env $1" && shift ;;
			*) break ;;
			esac
		done
		# shellcheck disable=SC2086
		crun exec $_envargs "$_pname" "$@"
		return
	fi
	podsim exec -c "$(cat "$_dir/cgroup")" -t "$(cat "$_dir/pid")" -- "$@"
}

# pod_pid NAME: host PID of the container's PID 1 (the workload; PID 1 inside the pod).
pod_pid() { cat "$VMTEST_PODS/$1/pid"; }
# pod_uid / pod_cid NAME: the pod UID and the 64-hex container id.
pod_uid() { cat "$VMTEST_PODS/$1/uid"; }
pod_cid() { cat "$VMTEST_PODS/$1/cid"; }
# pod_cgroup NAME: the container's cgroup directory; pod_cgroup_id NAME: its inode, which is
# what bpf_get_current_cgroup_id() returns for the container's processes.
pod_cgroup() { cat "$VMTEST_PODS/$1/cgroup"; }
pod_cgroup_id() { stat -c %i "$(pod_cgroup "$1")"; }
# pod_kubelet_dir NAME: /var/lib/kubelet/pods/<uid>; pod_vault_env NAME and pod_token NAME:
# host paths of the pod's vault-env copy and service-account token.
pod_kubelet_dir() { cat "$VMTEST_PODS/$1/kubelet_dir"; }
pod_vault_env() { echo "$(pod_kubelet_dir "$1")/volumes/kubernetes.io~empty-dir/vault-env/vault-env"; }
pod_token() { echo "$(pod_kubelet_dir "$1")/volumes/kubernetes.io~projected/kube-api-access-x/token"; }
# pod_log NAME: the container's output so far.
pod_log() { cat "$VMTEST_PODS/$1/log"; }

# pod_wait_log NAME PATTERN [SECONDS]: waits (default 10 s) until the log matches PATTERN
# (grep -E); pod_wait_log_count NAME PATTERN COUNT [SECONDS]: until it matches COUNT lines.
pod_wait_log() { wait_for "${3:-10}" grep -qE -- "$2" "$VMTEST_PODS/$1/log"; }
pod_wait_log_count() {
	wait_for "${4:-10}" _log_count_at_least "$VMTEST_PODS/$1/log" "$2" "$3"
}
_log_count_at_least() { [ "$(grep -cE -- "$2" "$1")" -ge "$3" ]; }

# pod_stop NAME: kills the container (SIGKILL to its PID 1 ends the whole pid namespace),
# waits for the shim, unmounts the volumes and removes the cgroups and directories.
pod_stop() {
	_dir=$VMTEST_PODS/$1
	[ -d "$_dir" ] || return 0
	[ -s "$_dir/pid" ] && kill -KILL "$(cat "$_dir/pid")" 2>/dev/null
	[ -s "$_dir/shim" ] && wait_for 10 _gone "$(cat "$_dir/shim")"
	[ "$(cat "$_dir/runtime" 2>/dev/null)" = crun ] && crun delete -f "$1" >/dev/null 2>&1
	_kdir=$(cat "$_dir/kubelet_dir")
	umount "$_kdir/volumes/kubernetes.io~empty-dir/vault-env" 2>/dev/null
	umount "$_kdir/volumes/kubernetes.io~projected/kube-api-access-x" 2>/dev/null
	rm -rf "$_kdir"
	_cg=$(cat "$_dir/cgroup")
	[ -d "$_cg" ] && wait_for 5 rmdir "$_cg"
	rmdir "$(dirname "$_cg")" 2>/dev/null
	rm -rf "$_dir"
	return 0
}
_gone() { ! kill -0 "$1" 2>/dev/null; }

# --- background daemons (e.g. the guard agent) ----------------------------------------------
# daemon_start NAME CMD [ARGS...]: runs CMD in the background (outside any pod), output to
# /run/daemons/NAME.log. daemon_stop NAME [SIGNAL]: signals it (default TERM) and waits up to
# 10 s, then KILLs. daemon_log NAME: its output. Daemons still running when the scenario ends
# are stopped. daemon_pid NAME: its PID.
VMTEST_DAEMONS=/run/daemons
daemon_start() {
	_name=$1
	shift
	mkdir -p "$VMTEST_DAEMONS"
	"$@" >"$VMTEST_DAEMONS/$_name.log" 2>&1 &
	echo $! >"$VMTEST_DAEMONS/$_name.pid"
	echo "$VMTEST_SCENARIO" >"$VMTEST_DAEMONS/$_name.owner"
}
daemon_pid() { cat "$VMTEST_DAEMONS/$1.pid"; }
daemon_log() { cat "$VMTEST_DAEMONS/$1.log"; }
daemon_stop() {
	[ -f "$VMTEST_DAEMONS/$1.pid" ] || return 0
	_pid=$(cat "$VMTEST_DAEMONS/$1.pid")
	kill "-${2:-TERM}" "$_pid" 2>/dev/null
	if ! wait_for 10 _gone "$_pid"; then
		kill -KILL "$_pid" 2>/dev/null
		wait_for 5 _gone "$_pid"
	fi
	rm -f "$VMTEST_DAEMONS/$1.pid" "$VMTEST_DAEMONS/$1.owner"
	return 0
}
# daemon_wait_log NAME PATTERN [SECONDS]: waits (default 10 s) until its log matches PATTERN.
daemon_wait_log() { wait_for "${3:-10}" grep -qE -- "$2" "$VMTEST_DAEMONS/$1.log"; }

# --- scenario runner (called by /init) ----------------------------------------------------

vmtest_cleanup() {
	# The scenario's own hook first (e.g. unpin the guard's programs), then its daemons, then
	# its pods.
	command -v scenario_cleanup >/dev/null 2>&1 && scenario_cleanup
	for _pidfile in "$VMTEST_DAEMONS"/*.pid; do
		[ -f "$_pidfile" ] || continue
		_d=$(basename "$_pidfile" .pid)
		[ "$(cat "$VMTEST_DAEMONS/$_d.owner" 2>/dev/null)" = "$VMTEST_SCENARIO" ] && daemon_stop "$_d"
	done
	for _pdir in "$VMTEST_PODS"/*/; do
		[ -f "$_pdir/owner" ] && [ "$(cat "$_pdir/owner")" = "$VMTEST_SCENARIO" ] &&
			pod_stop "$(basename "$_pdir")"
	done
	return 0
}

vmtest_main() {
	trap vmtest_cleanup EXIT
	trap 'fail timeout "scenario killed by its time limit"; exit 124' TERM
	. "$1"
	[ "$VMTEST_RESULTS" -gt 0 ] || fail results "the scenario reported no result"
	return 0
}
