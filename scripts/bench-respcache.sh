#!/usr/bin/env bash
# The response cache against generating: herdd on the TinyLlama-shape demo
# model with the response cache on; for each run a greedy request of
# MAX_TOKENS tokens (a new prompt each run: generated and stored), then the
# identical request again (answered from the cache). Times are libherd's,
# from sending the request to the whole answer (herd agent's latency_ms), so
# process start-up is not counted. Prints one JSON object: medians, the
# ratio, and every run.
# usage: scripts/bench-respcache.sh [RUNS] [MAX_TOKENS] [MODEL] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
max_tokens=${2:-64}
model=${3:-models/tinyllama-1.1b-demo-q4_0.gguf}
threads=${4:-2}
bash scripts/build.sh build >&2
. scripts/bench-lib.sh
bench_demo_model ./build/herd "$model"
tmp=$(mktemp -d /tmp/herd-bench-respcache-XXXXXX)
name="bench$$"
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
	for seg in /dev/shm/herd."$name".*; do [ -e "$seg" ] && rm -f "$seg"; done
	rm -rf "$tmp"
}
trap cleanup EXIT
echo '{"response_cache": {"enabled": true, "max_mb": 64, "ttl_s": 0}}' >"$tmp/herdd.json"
./build/herdd --socket "$tmp/s" --state-dir "$tmp/state" --config "$tmp/herdd.json" \
	--model "$name=$model" --threads "$threads" 2>"$tmp/herdd.log" &
pid=$!
bench_wait_broker bench-respcache ./build/herdctl "$tmp/s" "$pid" "$tmp/herdd.log"
one() { # index -> the agent's "req" line
	./build/herd agent --socket "$tmp/s" --model "$name" --index "$1" --requests 1 \
		--max-tokens "$max_tokens" --cache | grep '"ev":"req"'
}
for i in $(seq "$runs"); do
	one "$i" >>"$tmp/gen.jsonl"
	one "$i" >>"$tmp/hit.jsonl"
done
python3 - "$tmp" "$runs" "$max_tokens" "$model" "$threads" <<'PY'
import json, statistics, sys
tmp, runs, max_tokens, model, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
gen = [json.loads(l) for l in open(tmp + "/gen.jsonl")]
hit = [json.loads(l) for l in open(tmp + "/hit.jsonl")]
for g, h in zip(gen, hit):
    if not (g["ok"] and h["ok"]):
        sys.exit("a request failed: %r %r" % (g, h))
    if g["cached"] or not h["cached"] or g["text_hex"] != h["text_hex"]:
        sys.exit("unexpected: generate cached=%d, repeat cached=%d, same text %s"
                 % (g["cached"], h["cached"], g["text_hex"] == h["text_hex"]))
gm = statistics.median(g["latency_ms"] for g in gen)
hm = statistics.median(h["latency_ms"] for h in hit)
print(json.dumps({
    "bench": "respcache", "model": model, "threads": threads, "runs": runs,
    "max_tokens": max_tokens, "n_gen": [g["n_gen"] for g in gen],
    "generate_ms_median": round(gm, 3), "hit_ms_median": round(hm, 3),
    "speedup": round(gm / hm, 1) if hm > 0 else None,
    "generate_ms": [round(g["latency_ms"], 3) for g in gen],
    "hit_ms": [round(h["latency_ms"], 3) for h in hit],
}))
PY
