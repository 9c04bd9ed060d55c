# Sourced by the benchmark scripts (scripts/bench-*.sh): the checks and
# steps every one of them takes around a broker of its own.

# bench_need TAG BIN...: every BIN is executable, else TAG says which is
# missing and the script ends.
bench_need() {
	local tag=$1 b
	shift
	for b; do
		[ -x "$b" ] || { echo "$tag: $b missing (build first)" >&2; exit 1; }
	done
}

# bench_demo_model HERD FILE: the TinyLlama-shape Q4_0 demo model (random
# weights) at FILE, made by HERD when it is not there.
bench_demo_model() {
	[ -f "$2" ] && return 0
	mkdir -p "$(dirname "$2")"
	"$1" mkmodel --shape tinyllama-1.1b -t Q4_0 -o "$2" >&2
}

# bench_wait_broker TAG HERDCTL SOCK PID LOG: waits (60 s at most) until the
# broker PID answers `herdctl status` on SOCK; if it exits or never
# answers, TAG says so with the end of LOG and the script ends.
bench_wait_broker() {
	local tag=$1 herdctl=$2 sock=$3 pid=$4 log=$5 i
	for i in $(seq 600); do
		"$herdctl" --socket "$sock" status >/dev/null 2>&1 && return 0
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	tail -20 "$log" >&2
	echo "$tag: herdd did not start" >&2
	exit 1
}
