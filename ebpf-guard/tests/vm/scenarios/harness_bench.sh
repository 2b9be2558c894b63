# The overhead benchmark works and gives the unguarded baseline (guard scenarios measure the
# same loops with the guard loaded and compare).
# vmtest: needs=

for kind in open forkexec; do
	case $kind in
	open) set -- open 20000 ;;
	forkexec) set -- forkexec 300 /probes/nop ;;
	esac
	if ns=$(bench_ns "$@"); then
		metric "${kind}_ns_per_op" "$ns" ns/op
		pass "bench_$kind" "$ns ns/op"
	else
		fail "bench_$kind" "$ns"
	fi
done
expect_ratio_at_most ratio_helper_accepts_equal 100 100 1.05
if expect_ratio_at_most ratio_helper_rejects_slower 106 100 1.05 >/dev/null; then
	fail ratio_helper_rejects_slower "1.06 accepted against 1.05"
else
	pass ratio_helper_rejects_slower ""
fi
