#!/usr/bin/env bash
# Python client overhead (a benchmark, not a test): one broker, S streamed
# greedy requests at once, sent alternately by S `herd agent` processes
# (libherd, through `herd bench serve --socket --stream`) and by the Python
# client (python/examples/bench_streams.py: herd.aio, one connection per
# stream), R rounds. Both measure TTFT and TPOT at token arrival in the
# client. Prints one JSON line per run, then one with the medians of each
# side and the ratios python/libherd.
#
# usage: scripts/bench-python.sh [--streams 16] [--rounds 3] [--gen-len 32] [--prompt-len 32]
#                               [--model FILE] [--threads T] [--build DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
streams=16 rounds=3 gen=32 plen=32 model=$root/models/tinyllama-1.1b-demo-q4_0.gguf threads=0 build=build
while [ $# -gt 0 ]; do
	case $1 in
	--streams) streams=$2; shift 2 ;;
	--rounds) rounds=$2; shift 2 ;;
	--gen-len) gen=$2; shift 2 ;;
	--prompt-len) plen=$2; shift 2 ;;
	--model) model=$2; shift 2 ;;
	--threads) threads=$2; shift 2 ;;
	--build) build=$2; shift 2 ;;
	-h|--help) sed -n '2,12p' "$0"; exit 0 ;;
	*) echo "bench-python: unknown argument '$1'" >&2; exit 1 ;;
	esac
done
herd=$root/$build/herd herdd=$root/$build/herdd herdctl=$root/$build/herdctl
py=/usr/bin/python3
[ -x "$py" ] || py=python3
. "$root/scripts/bench-lib.sh"
bench_need bench-python "$herd" "$herdd" "$herdctl"
bench_demo_model "$herd" "$model"
work=$(mktemp -d /tmp/herd-bench-python-XXXXXX)
name=bpy$$
broker=
cleanup() {
	[ -n "$broker" ] && kill "$broker" 2>/dev/null && wait "$broker" 2>/dev/null || true
	rm -f /dev/shm/herd.$name.*
	rm -rf "$work"
}
trap cleanup EXIT
sock=$work/herd.sock
"$herdd" --model "$name=$model" --socket "$sock" --state-dir "$work/state" --threads "$threads" \
	--max-batch "$streams" 2>"$work/herdd.log" &
broker=$!
bench_wait_broker bench-python "$herdctl" "$sock" "$broker" "$work/herdd.log"
for r in $(seq "$rounds"); do
	"$herd" bench serve --socket "$sock" --model-name "$name" --agents "$streams" --requests 1 \
		--gen-len "$gen" --prompt-len "$plen" --stream 2>>"$work/bench.err" |
		sed 's/^{/{"client":"libherd agents",/' | tee -a "$work/runs"
	PYTHONPATH=$root/python "$py" "$root/python/examples/bench_streams.py" --socket "$sock" \
		--model "$name" --streams "$streams" --gen-len "$gen" --prompt-len "$plen" --seed "$r" |
		tee -a "$work/runs"
done
"$py" - "$work/runs" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
out = {}
for side, key in (("libherd agents", "c"), ("python herd.aio", "py")):
    rs = [r for r in runs if r["client"] == side]
    out[key] = {"gen_tok_s": statistics.median(r["gen_tok_s"] for r in rs),
                "ttft_p50_ms": statistics.median(r["ttft_ms"]["p50"] for r in rs),
                "tpot_p50_ms": statistics.median(r["tpot_ms"]["p50"] for r in rs)}
out["ratio_py_over_c"] = {k: out["py"][k] / out["c"][k] if out["c"][k] else 0 for k in out["c"]}
print(json.dumps({"summary": out, "rounds": len(runs) // 2}))
PY
