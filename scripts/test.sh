#!/usr/bin/env bash
# Builds herd twice (normal, then AddressSanitizer + UndefinedBehaviorSanitizer)
# and runs the whole test suite on each, then builds the libFuzzer targets
# with clang and runs each for a few seconds. Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
status=0
for variant in normal sanitize; do
	dir=build-test-$variant
	args=()
	[ "$variant" = sanitize ] && args=(-DHERD_SANITIZE=ON)
	echo "== $variant build"
	bash scripts/build.sh "$dir" "${args[@]}"
	echo "== $variant tests"
	# Each test's own thread pools use every core; run two at a time.
	if ! ctest --test-dir "$dir" --output-on-failure -j "$jobs"; then
		status=1
	fi
done
# libFuzzer targets (tests/fuzz), ~10 s each on a working copy of the seeds;
# skipped (never passed) when clang's fuzzer runtime is missing.
echo "== fuzz build and runs"
fuzz_rc=0
HERD_FUZZ_BUILD=build-test-fuzz bash scripts/fuzz.sh all "${HERD_FUZZ_SECONDS:-10}" || fuzz_rc=$?
if [ "$fuzz_rc" -eq 77 ]; then
	echo "== fuzz: SKIPPED (no libFuzzer runtime)"
elif [ "$fuzz_rc" -ne 0 ]; then
	echo "== fuzz: FAILED"
	status=1
fi
exit $status
