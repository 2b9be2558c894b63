# The overhead benchmark works and gives the unguarded baseline (guard_overhead measures the
# same loops with the guard attached and detached and compares), and guard_links, the tool
# guard_overhead switches the guard with, is present and fails cleanly on a missing pin dir.
# Runs in the instruction-counted boot with guard_overhead: ns/op are instruction counts.
# vmtest: needs=
# vmtest: clock=icount

for kind in open forkexec; do
	case $kind in
	open) set -- open 2000 ;;
	forkexec) set -- forkexec 20 /probes/nop ;;
	esac
	if ns=$(bench_ns "$@"); then
		metric "${kind}_ns_per_op" "$ns" ns/op
		pass "bench_$kind" "$ns ns/op"
	else
		fail "bench_$kind" "$ns"
	fi
done
expect bench_rejects_unknown_kind '^ERR EINVAL' bench nosuch 10
expect_err guard_links_missing_dir ENOENT guard_links park /sys/fs/bpf/vmtest-no-such-links /run/vmtest-park
rmdir /run/vmtest-park 2>/dev/null
