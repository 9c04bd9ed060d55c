#!/usr/bin/env bash
# Builds herd twice (normal, then AddressSanitizer + UndefinedBehaviorSanitizer)
# and runs the whole test suite on each. Installs what it needs.
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
exit $status
