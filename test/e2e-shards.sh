#!/usr/bin/env bash
# Runs the e2e tests in E2E_SHARDS processes (default 2), each against a
# cluster of its own. The tests wait on their cluster most of the time (a
# sequential run leaves this 2-core machine about 80% idle), so two shards
# take a little over half the time of one.
#
# The test binary is built once. Tests are dealt longest first, each to the
# shard with the least work so far, by test/e2e/durations.txt (seconds per
# test, from a sequential `go test -v` run; a test not listed counts 20 s).
# A shard starts its cluster only once the previous shard's is up: kwokctl
# picks its ports by scanning down from the same number in every process.
# Each shard's output is printed whole when it ends; the exit status is the
# first failing shard's. A shard that ends without stopping its cluster (its
# -test.timeout panics past TestMain's cleanup) has it stopped here.
#
#   E2E_SHARDS=N    processes (default 2)
#   E2E_RUN=REGEXP  only the tests matching it (default all)
#   E2E_CHAOS=1     include TestChaos (make test does; make e2e does not)
#   E2E_TIMEOUT=D   each shard's -test.timeout (default 80m)
set -euo pipefail
cd "$(dirname "$0")/.."

shards=${E2E_SHARDS:-2}
timeout=${E2E_TIMEOUT:-80m}
work=$(mktemp -d "${TMPDIR:-/tmp}/refit-e2e-shards.XXXXXX")
pids=()
started=()
cleanup() {
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

go test -tags e2e -c -o "$work/e2e.test" ./test/e2e/
go build -o "$work/refit-cluster" ./test/cmd/refit-cluster

(cd test/e2e && "$work/e2e.test" -test.list "${E2E_RUN:-.}") | grep '^Test' > "$work/tests" || true
if [ "${E2E_CHAOS:-}" != 1 ]; then
	grep -vx 'TestChaos' "$work/tests" > "$work/tests.nochaos" || true
	mv "$work/tests.nochaos" "$work/tests"
fi
if [ ! -s "$work/tests" ]; then
	echo "e2e-shards: no test matches E2E_RUN=${E2E_RUN:-.}" >&2
	exit 1
fi

# Deal: "shard test" lines, longest test first to the least loaded shard.
awk -v shards="$shards" '
	FILENAME == ARGV[1] { secs[$1] = $2; next }
	{ t = ($1 in secs) ? secs[$1] : 20; print t, $1 }
' test/e2e/durations.txt "$work/tests" | sort -k1,1nr -k2,2 | awk -v shards="$shards" '
	{
		best = 0
		for (i = 1; i < shards; i++) if (load[i] < load[best]) best = i
		load[best] += $1
		print best, $2
	}
	END { for (i = 0; i < shards; i++) printf "e2e-shards: shard %d: about %d s of tests\n", i, load[i] > "/dev/stderr" }
' > "$work/dealt"

status=0
for ((i = 0; i < shards; i++)); do
	names=$(awk -v s="$i" '$1 == s { print $2 }' "$work/dealt" | paste -sd'|' -)
	[ -n "$names" ] || continue
	out="$work/shard-$i.log"
	: > "$out"
	(cd test/e2e && exec "$work/e2e.test" -test.run "^($names)\$" -test.count=1 -test.timeout "$timeout") > "$out" 2>&1 &
	pids+=($!)
	started+=("$i")
	echo "e2e-shards: shard $i started: $(awk -v s="$i" '$1 == s' "$work/dealt" | wc -l) tests" >&2
	# The next cluster starts once this one is up (or this shard ended).
	while kill -0 "${pids[-1]}" 2>/dev/null && ! grep -q 'ready in' "$out"; do sleep 1; done
done

for ((i = 0; i < ${#pids[@]}; i++)); do
	rc=0
	wait "${pids[$i]}" || rc=$?
	shard=${started[$i]}
	echo "=== e2e shard $shard (exit $rc)"
	cat "$work/shard-$shard.log"
	if [ "$rc" != 0 ]; then
		[ "$status" != 0 ] || status=$rc
		name=$(sed -n 's/^starting cluster "\([^"]*\)".*/\1/p' "$work/shard-$shard.log" | head -1)
		if [ -n "$name" ]; then "$work/refit-cluster" -name "$name" down >/dev/null 2>&1 || true; fi
	fi
done
pids=()
exit "$status"
