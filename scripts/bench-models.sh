#!/usr/bin/env bash
# The model cache manager under load: 69 agent processes over three
# TinyLlama-shape models (random weights, Q4_0, three seeds: three distinct
# images) with max_memory_mb holding two of them, once with predictive
# preloading and once without. Each agent sends R greedy requests of N
# tokens (distinct prompts per agent), thinking 0..T ms between requests
# (first without prediction, which also records the agents' history, then
# with it). PATTERN lockstep (the default): every agent follows the same
# model pattern, request j to model j mod 3 (a pipeline: chat, then
# summariser, then coder, ...), so the next model is predictable and the
# previous one goes idle: prediction can load the next one while the
# current one serves. PATTERN phase: agent i starts at model i mod 3, so
# all three models are wanted at every moment (nothing to predict into). One JSON object per line on stdout per mode: requests/s, failed
# requests, loads, evictions, preloads, preload hits, wasted preloads,
# switches that found their model cold, latency p50/p95 (ms, as the agents
# measured them).
# usage: scripts/bench-models.sh [REQUESTS_PER_AGENT=4] [MAX_TOKENS=8] [THINK_MS=300] [MODEL_DIR=models]
#        [PATTERN=lockstep|phase]
set -euo pipefail
cd "$(dirname "$0")/.."
reqs=${1:-4}
ntok=${2:-8}
think=${3:-300}
dir=${4:-models}
pattern=${5:-lockstep}
case "$pattern" in lockstep|phase) ;; *) echo "bench-models: PATTERN is lockstep or phase" >&2; exit 2;; esac
agents=69
kv_mb=256
[ -x build/herdd ] || bash scripts/build.sh build >&2
mkdir -p "$dir"
files=()
for s in 1 2 3; do
	m="$dir/tinyllama-1.1b-demo-q4_0-seed$s.gguf"
	[ -f "$m" ] || ./build/herd mkmodel --shape tinyllama-1.1b -t Q4_0 --seed "$s" -o "$m" >&2
	files+=("$(realpath "$m")")
done
file_mb=$(( $(stat -c %s "${files[0]}") / 1048576 ))
# two models (image ~ file size, plus the KV pool) and a margin; not three
budget=$(( 2 * (file_mb + kv_mb) + 128 ))

work=$(mktemp -d /tmp/herd-bench-models-XXXXXX)
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
	for n in bma bmb bmc; do
		for seg in /dev/shm/herd.$n.*; do [ -e "$seg" ] && ./build/herdctl rm "${seg#/dev/shm/}" >/dev/null 2>&1 || true; done
	done
	rm -rf "$work"
}
trap cleanup EXIT

# One state directory for both runs: the run with prediction starts with the
# history (transitions, affinities) the first run recorded, as a restarted
# broker would; the first run's broker records it whether or not it predicts.
run_mode() { # $1: true|false (prediction)
	local predict=$1 sock="$work/herd.sock" state="$work/state"
	cat >"$work/herd.json" <<EOF
{"socket": "$sock", "state_dir": "$state", "max_memory_mb": $budget, "kv_cache_mb": $kv_mb,
 "preload": $predict, "preload_confidence": 0.6, "max_batch_size": 32,
 "models": [{"name": "bma", "file": "${files[0]}"}, {"name": "bmb", "file": "${files[1]}"},
            {"name": "bmc", "file": "${files[2]}"}]}
EOF
	./build/herdd --config "$work/herd.json" 2>"$work/herdd-$predict.log" &
	pid=$!
	for _ in $(seq 200); do [ -S "$sock" ] && ./build/herdctl --socket "$sock" status >/dev/null 2>&1 && break; sleep 0.05; done
	local t0 t1 apids=()
	t0=$(date +%s.%N)
	for i in $(seq 0 $((agents - 1))); do
		local phase=$i
		[ "$pattern" = lockstep ] && phase=0
		./build/herd agent --socket "$sock" --model bma,bmb,bmc --index "$i" --phase "$phase" --name "agent$i" \
			--requests "$reqs" --max-tokens "$ntok" --think-ms "$think" --json \
			>"$work/agent-$predict-$i.out" 2>/dev/null &
		apids+=($!)
	done
	wait "${apids[@]}" || true
	t1=$(date +%s.%N)
	./build/herdctl --socket "$sock" --json cache >"$work/cache-$predict.json"
	kill "$pid"
	wait "$pid" || true
	pid=
	python3 - "$work" "$predict" "$t0" "$t1" "$agents" "$budget" "$pattern" "$reqs" "$ntok" "$think" <<'PY'
import json, sys, glob
work, predict, t0, t1, agents, budget = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
pattern, reqs, ntok, think = sys.argv[7], int(sys.argv[8]), int(sys.argv[9]), int(sys.argv[10])
lat, failed = [], 0
for f in glob.glob(f"{work}/agent-{predict}-*.out"):
    for line in open(f):
        try:
            o = json.loads(line)
        except ValueError:
            continue
        if o.get("ev") == "req":
            if o.get("ok"):
                lat.append(o["latency_ms"])
            else:
                failed += 1
c = json.load(open(f"{work}/cache-{predict}.json"))
lat.sort()
pct = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else None
wall = t1 - t0
print(json.dumps({"bench": "models", "pattern": pattern, "predict": predict == "true", "agents": agents,
    "requests_per_agent": reqs, "max_tokens": ntok, "think_ms": think,
    "models": 3, "budget_mb": budget, "requests": len(lat), "failed": failed,
    "wall_s": round(wall, 2), "requests_per_s": round(len(lat) / wall, 2),
    "loads": c["loads"], "demand_loads": c["demand_loads"], "evictions": c["evictions"],
    "preloads": c["preloads"], "preload_hits": c["preload_hits"],
    "preload_wasted": c["preload_wasted"], "switch_misses": c["switch_misses"],
    "predictions": c["predictions"], "prediction_hits": c["prediction_hits"],
    "p50_ms": pct(0.50), "p95_ms": pct(0.95)}))
PY
}

run_mode false
run_mode true
