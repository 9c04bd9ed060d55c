#!/usr/bin/env bash
# Runs herd's libFuzzer targets (tests/fuzz/) for a while.
# usage: scripts/fuzz.sh gguf|frame|tokenizer|config|all SECONDS
#
# Installs the packages (scripts/deps.sh), configures and builds the clang
# fuzz build dir ($HERD_FUZZ_BUILD, default build-fuzz, -DHERD_FUZZ=ON) when
# needed, then runs each target for SECONDS on its working corpus
# ($HERD_FUZZ_WORK/TARGET/corpus, default BUILD/fuzz-work: the committed seeds
# of tests/fuzz/corpus/TARGET are copied in first; what the fuzzer finds stays
# there, never in the repository). Prints executions and exec/s per target.
# Exit status: 0 all passed; 1 a target crashed (the reproducer's path is
# printed: rerun it with BUILD/fuzz_TARGET FILE) or the build failed; 77
# skipped: clang's libFuzzer runtime is missing (or, for one target, its
# vocabulary fixture). Extra libFuzzer flags: $HERD_FUZZ_FLAGS.
set -euo pipefail
cd "$(dirname "$0")/.."
usage() { echo "usage: $0 gguf|frame|tokenizer|config|all SECONDS" >&2; exit 2; }
[ $# -eq 2 ] || usage
case "$1" in gguf|frame|tokenizer|config) targets=("$1") ;;
	all) targets=(gguf frame tokenizer config) ;; *) usage ;; esac
[[ "$2" =~ ^[1-9][0-9]*$ ]] || usage
secs=$2
build=${HERD_FUZZ_BUILD:-build-fuzz}
work=${HERD_FUZZ_WORK:-$build/fuzz-work}

bash scripts/deps.sh
# libFuzzer needs clang and compiler-rt's fuzzer runtime: without them, skip.
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
	'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
	>"$probe/p.c"
if ! command -v clang >/dev/null ||
   ! clang -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" 2>"$probe/err"; then
	echo "fuzz: SKIPPED: clang with the libFuzzer runtime (libclang-rt-14-dev) is not available" >&2
	sed 's/^/  /' "$probe/err" >&2 || true
	exit 77
fi

if [ ! -f "$build/CMakeCache.txt" ]; then
	CC=clang cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DHERD_FUZZ=ON >/dev/null
fi
cmake --build "$build" --target herd_fuzz -j "$(nproc)" >"$probe/build.log" 2>&1 || {
	cat "$probe/build.log" >&2
	echo "fuzz: FAILED: building the fuzz targets in $build" >&2
	exit 1
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
failed=0 skipped=0 passed=0
for t in "${targets[@]}"; do
	bin=$build/fuzz_$t
	dir=$work/$t
	mkdir -p "$dir/corpus"
	cp -n tests/fuzz/corpus/"$t"/* "$dir/corpus/" 2>/dev/null || true
	dict=()
	[ -f "tests/fuzz/$t.dict" ] && dict=(-dict="tests/fuzz/$t.dict")
	log=$dir/last.log
	echo "== fuzz $t: ${secs}s, corpus $dir/corpus"
	rc=0
	# -error_exitcode/-timeout_exitcode: keep 77 for "skipped".
	# shellcheck disable=SC2086
	"$bin" "$dir/corpus" "${dict[@]}" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 \
		-error_exitcode=99 -timeout_exitcode=98 -print_final_stats=1 \
		-artifact_prefix="$dir/" ${HERD_FUZZ_FLAGS:-} >"$log" 2>&1 || rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
	units=$(sed -n 's/^stat::new_units_added: *//p' "$log" | tail -1)
	cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
	if [ "$rc" -eq 0 ]; then
		echo "fuzz $t: PASSED: ${execs:-?} executions in ${secs}s (${rate:-?} exec/s), $cov, ${units:-0} new corpus units"
		passed=$((passed + 1))
	elif [ "$rc" -eq 77 ] && grep -q 'SKIP' "$log"; then
		grep 'SKIP' "$log" | head -3
		echo "fuzz $t: SKIPPED"
		skipped=$((skipped + 1))
	else
		tail -n 60 "$log"
		repro=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
		echo "fuzz $t: FAILED (exit $rc) after ${execs:-?} executions; full log: $log"
		[ -n "$repro" ] && echo "fuzz $t: reproducer: $repro (rerun: $bin $repro)"
		failed=$((failed + 1))
	fi
done
echo "fuzz: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] || exit 1
[ "$passed" -gt 0 ] || exit 77
exit 0
