#!/usr/bin/env bash
# Builds herd twice (normal, then AddressSanitizer + UndefinedBehaviorSanitizer)
# and runs the whole test suite on each, then builds the libFuzzer targets
# with clang and runs each for a few seconds. Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
status=0
# Totals over both builds and the fuzz runs, for the closing line.
passed=0 failed=0 skipped=0
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
count() { # ctest's summary in $1: adds to the totals
	local total nfail nskip
	total=$(sed -n 's/.* tests failed out of \([0-9]*\).*/\1/p' "$1" | tail -1)
	nfail=$(sed -n 's/.*tests passed, \([0-9]*\) tests failed out of.*/\1/p' "$1" | tail -1)
	nskip=$(grep -c '(Skipped)' "$1" || true)
	total=${total:-0} nfail=${nfail:-0}
	passed=$((passed + total - nfail - nskip))
	failed=$((failed + nfail))
	skipped=$((skipped + nskip))
}
for variant in normal sanitize; do
	dir=build-test-$variant
	args=()
	[ "$variant" = sanitize ] && args=(-DHERD_SANITIZE=ON)
	echo "== $variant build"
	bash scripts/build.sh "$dir" "${args[@]}"
	echo "== $variant tests"
	# Each test's own thread pools use every core; run two at a time.
	if ! ctest --test-dir "$dir" --output-on-failure -j "$jobs" 2>&1 | tee "$logs/$variant"; then
		status=1
	fi
	count "$logs/$variant"
done
# libFuzzer targets (tests/fuzz), ~10 s each on a working copy of the seeds;
# skipped (never passed) when clang's fuzzer runtime is missing.
echo "== fuzz build and runs"
fuzz_rc=0
HERD_FUZZ_BUILD=build-test-fuzz bash scripts/fuzz.sh all "${HERD_FUZZ_SECONDS:-10}" 2>&1 |
	tee "$logs/fuzz" || fuzz_rc=$?
if [ "$fuzz_rc" -eq 77 ]; then
	echo "== fuzz: SKIPPED (no libFuzzer runtime)"
	skipped=$((skipped + 4))
elif [ "$fuzz_rc" -ne 0 ]; then
	echo "== fuzz: FAILED"
	status=1
fi
if [ "$fuzz_rc" -ne 77 ]; then
	passed=$((passed + $(grep -c '^fuzz [a-z]*: PASSED' "$logs/fuzz" || true)))
	failed=$((failed + $(grep -c '^fuzz [a-z]*: FAILED' "$logs/fuzz" || true)))
	skipped=$((skipped + $(grep -c '^fuzz [a-z]*: SKIPPED' "$logs/fuzz" || true)))
fi
[ "$status" -eq 0 ] || [ "$failed" -gt 0 ] || failed=1
echo "herd: $passed passed, $failed failed, $skipped skipped"
exit $status
