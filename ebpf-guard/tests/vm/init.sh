#!/bin/busybox sh
# PID 1 of the vm-test guest (see README.md). Stage 1 copies the initramfs into a tmpfs and
# switch_roots into it (crun's pivot_root fails from an initramfs); stage 2 mounts the kernel
# filesystems, runs the scenarios named in VMTEST_SCENARIOS and powers off.
# Every line the host parses starts with "VMTEST ".

if [ "$1" != stage2 ]; then
	/bin/busybox mkdir -p /proc /sys /dev /newroot
	/bin/busybox --install -s /bin
	mount -t proc proc /proc
	mount -t devtmpfs devtmpfs /dev
	echo "VMTEST INFO init started uptime=$(cut -d' ' -f1 /proc/uptime)"
	# Kernel messages would interleave with result lines: only emergencies reach the console.
	echo 1 >/proc/sys/kernel/printk
	mount -t tmpfs -o mode=0755,size=80% tmpfs /newroot
	for entry in /*; do
		case "$entry" in /proc | /sys | /dev | /newroot) continue ;; esac
		cp -a "$entry" /newroot/
	done
	mkdir -p /newroot/proc /newroot/sys /newroot/dev /newroot/tmp /newroot/run
	umount /proc
	umount /dev
	exec switch_root /newroot /init stage2
	echo "VMTEST FATAL switch_root failed"
	poweroff -f
fi

export PATH=/probes:/bin:/usr/local/bin:/usr/bin:/usr/sbin
export HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpffs /sys/fs/bpf
mount -t securityfs securityfs /sys/kernel/security
mount -t debugfs debugfs /sys/kernel/debug
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
# Controllers for child cgroups (the pod slices), as a kubelet node has them.
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
	echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
done
# The kubelet creates the kubepods tree at start (systemd cgroup driver layout).
mkdir -p /sys/fs/cgroup/kubepods.slice
hostname vmtest-node
exec </dev/console >/dev/console 2>&1

echo "VMTEST BOOTED uptime=$(cut -d' ' -f1 /proc/uptime) kernel=$(uname -r)"
echo "VMTEST LSM $(cat /sys/kernel/security/lsm)"
echo "VMTEST INFO guard=${VMTEST_GUARD:-0} clock=${VMTEST_CLOCK:-real}"

for name in $(echo "${VMTEST_SCENARIOS:-}" | tr ',' ' '); do
	script=/vmtest/scenarios/$name.sh
	echo "VMTEST SCENARIO $name START uptime=$(cut -d' ' -f1 /proc/uptime)"
	if [ ! -f "$script" ]; then
		echo "VMTEST RESULT $name script FAIL no such scenario in the guest"
		echo "VMTEST SCENARIO $name END 127 uptime=$(cut -d' ' -f1 /proc/uptime)"
		continue
	fi
	# Each scenario runs in its own shell so a crash or `exit` ends only that scenario;
	# lib.sh's cleanup stops the scenario's pods whatever happens.
	# "# vmtest: timeout=SECONDS" in the script overrides the default of 120 s. On timeout the
	# scenario's process group gets SIGTERM (lib.sh reports a FAIL, cleans up and exits 124),
	# then SIGKILL 15 s later.
	limit=$(sed -n 's/^# vmtest: timeout=\([0-9]*\).*/\1/p' "$script" | head -n 1)
	VMTEST_SCENARIO=$name setsid sh -c ". /vmtest/lib.sh; vmtest_main $script" &
	scenario_pid=$!
	setsid sh -c "sleep ${limit:-120}; kill -TERM -$scenario_pid; sleep 15; kill -KILL -$scenario_pid" \
		>/dev/null 2>&1 &
	watchdog_pid=$!
	wait "$scenario_pid"
	rc=$?
	kill -KILL -"$watchdog_pid" 2>/dev/null
	echo "VMTEST SCENARIO $name END $rc uptime=$(cut -d' ' -f1 /proc/uptime)"
done

echo "VMTEST DONE uptime=$(cut -d' ' -f1 /proc/uptime)"
sync
poweroff -f
