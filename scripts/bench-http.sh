#!/usr/bin/env bash
# HTTP streaming overhead against the socket (a benchmark, not a test): one
# herdd with HTTP on, driven in turn by 16 concurrent streams over the Unix
# socket (`herd bench serve --stream`: N `herd agent` processes, libherd)
# and by 16 concurrent streaming clients of POST /v1/completions
# (scripts/bench_http_client.py, SSE), the same greedy token prompts of P
# tokens and G new tokens, K requests per stream, alternating for R rounds.
# Prints one JSON object: every run and the medians of gen_tok_s and TTFT
# p50/p95 per transport, and HTTP/socket ratios. Run it under
# `flock /work/locks/bench.lock` on a shared machine.
#
# usage: scripts/bench-http.sh [--model FILE] [--streams 16] [--requests 4]
#                              [--prompt-len 32] [--gen-len 32] [--rounds 3]
#                              [--threads T] [--build DIR]
#   --model FILE   GGUF model (default: the mini shape, made in a temp dir;
#                  `herd mkmodel --shape tinyllama-1.1b -t Q4_0 -o FILE` for TinyLlama's)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
model= streams=16 requests=4 plen=32 glen=32 rounds=3 threads=0 build=build
while [ $# -gt 0 ]; do
	case $1 in
	--model) model=$2; shift 2 ;;
	--streams) streams=$2; shift 2 ;;
	--requests) requests=$2; shift 2 ;;
	--prompt-len) plen=$2; shift 2 ;;
	--gen-len) glen=$2; shift 2 ;;
	--rounds) rounds=$2; shift 2 ;;
	--threads) threads=$2; shift 2 ;;
	--build) build=$2; shift 2 ;;
	-h|--help) sed -n '2,17p' "$0"; exit 0 ;;
	*) echo "bench-http: unknown argument '$1'" >&2; exit 1 ;;
	esac
done
herd=$root/$build/herd herdd=$root/$build/herdd herdctl=$root/$build/herdctl
. "$root/scripts/bench-lib.sh"
bench_need bench-http "$herd" "$herdd" "$herdctl"
work=$(mktemp -d /tmp/herd-bench-http-XXXXXX)
name=bh$$ broker=
cleanup() {
	[ -n "$broker" ] && kill "$broker" 2>/dev/null && wait "$broker" 2>/dev/null || true
	rm -f /dev/shm/herd."$name".* 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
[ -n "${BENCH_HTTP_DEBUG:-}" ] && set -x
if [ -z "$model" ]; then
	model=$work/mini.gguf
	"$herd" mkmodel --shape mini -t Q4_0 -o "$model" >&2
fi
echo '{"http": {"listen": "127.0.0.1:0"}, "max_batch_size": 32}' >"$work/herd.json"
"$herdd" --config "$work/herd.json" --socket "$work/herd.sock" --state-dir "$work/state" \
	--model "$name=$model" --threads "$threads" >"$work/herdd.log" 2>&1 &
broker=$!
url=
for _ in $(seq 1 1200); do
	url=$(grep -o 'http: listening on http://[0-9.:]*' "$work/herdd.log" | sed 's/.*on //' || true)
	[ -n "$url" ] && "$herdctl" --socket "$work/herd.sock" status >/dev/null 2>&1 && break
	kill -0 "$broker" 2>/dev/null || { cat "$work/herdd.log" >&2; exit 1; }
	sleep 0.1
done
n_vocab=$("$herdctl" --socket "$work/herd.sock" --json models | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["n_vocab"])')
for r in $(seq 1 "$rounds"); do
	"$herd" bench serve --socket "$work/herd.sock" --model-name "$name" --agents "$streams" \
		--requests "$requests" --prompt-len "$plen" --gen-len "$glen" --stream >"$work/socket.$r.json"
	python3 "$root/scripts/bench_http_client.py" "$url" "$name" --streams "$streams" \
		--requests "$requests" --prompt-len "$plen" --gen-len "$glen" --n-vocab "$n_vocab" >"$work/http.$r.json"
done
python3 - "$work" "$rounds" "$model" "$streams" "$requests" "$plen" "$glen" <<'PY'
import json, statistics, sys
work, rounds, model = sys.argv[1], int(sys.argv[2]), sys.argv[3]
runs = {t: [json.load(open(f"{work}/{t}.{r}.json")) for r in range(1, rounds + 1)] for t in ("socket", "http")}
def med(t, f):
    return statistics.median(f(x) for x in runs[t])
summ = {}
for t in runs:
    summ[t] = {"gen_tok_s": med(t, lambda x: x["gen_tok_s"]),
               "ttft_ms_p50": med(t, lambda x: x["ttft_ms"]["p50"]),
               "ttft_ms_p95": med(t, lambda x: x["ttft_ms"]["p95"]),
               "tpot_ms_p50": med(t, lambda x: x["tpot_ms"]["p50"]),
               "errors": sum(x.get("errors", 0) for x in runs[t])}
out = {"model": model, "streams": int(sys.argv[4]), "requests_per_stream": int(sys.argv[5]),
       "prompt_len": int(sys.argv[6]), "gen_len": int(sys.argv[7]), "rounds": rounds,
       "median": summ,
       "http_over_socket": {k: (summ["http"][k] / summ["socket"][k] if summ["socket"][k] else None)
                            for k in ("gen_tok_s", "ttft_ms_p50", "ttft_ms_p95", "tpot_ms_p50")},
       "runs": {t: [{k: x[k] for k in ("gen_tok_s", "ttft_ms", "tpot_ms", "wall_s") if k in x} for x in runs[t]]
                for t in runs}}
print(json.dumps(out, indent=1))
PY
