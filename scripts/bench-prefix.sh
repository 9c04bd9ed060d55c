#!/usr/bin/env bash
# Prefix sharing benchmark (a benchmark, not a test): N agent processes
# (`herd agent` in its load mode) send one greedy request each at the same
# time, every prompt being one shared system prompt of P tokens followed by
# the agent's own Q-token question; run once with "prefix_cache": true and once with false
# on the same model file and broker settings. Prints one JSON object: time to
# first token (broker-measured, arrival to first token, and client-measured)
# p50/p95, prompt tokens evaluated and served from the cache (herdctl status),
# and the p50 ratio off/on. With --rounds R the pair runs R times, on and off
# alternating (a machine shared with other work changes speed over minutes:
# pairs side by side see the same load), and the report adds every round's
# figures and the median ratio.
#
# usage: scripts/bench-prefix.sh [--agents N] [--model FILE] [--threads T]
#                               [--max-batch B] [--max-tokens N] [--rounds R]
#                               [--config FILE]
#                               [--shared-len P] [--question-len Q] [--build DIR]
#   --agents N        agent processes (default 69)
#   --model FILE      GGUF model (default models/tinyllama-1.1b-demo-q4_0.gguf, made if missing)
#   --threads T       broker compute threads (default 0: every CPU)
#   --max-batch B     broker batch size (default: the broker's)
#   --max-tokens N    new tokens per request (default 8)
#   --shared-len P    tokens of the shared system prompt (default 200)
#   --question-len Q  tokens of each agent's own question (default 32)
#   --rounds R        on/off pairs (default 1)
#   --config FILE     more broker settings (a JSON object merged under prefix_cache)
#   --build DIR       build directory (default build)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
agents=69 model=$root/models/tinyllama-1.1b-demo-q4_0.gguf threads=0 max_batch= max_tokens=8
shared=200 question=32 build=build rounds=1 config=
while [ $# -gt 0 ]; do
	case $1 in
	--agents) agents=$2; shift 2 ;;
	--model) model=$2; shift 2 ;;
	--threads) threads=$2; shift 2 ;;
	--max-batch) max_batch=$2; shift 2 ;;
	--max-tokens) max_tokens=$2; shift 2 ;;
	--shared-len) shared=$2; shift 2 ;;
	--question-len) question=$2; shift 2 ;;
	--build) build=$2; shift 2 ;;
	--rounds) rounds=$2; shift 2 ;;
	--config) config=$2; shift 2 ;;
	-h|--help) sed -n '2,27p' "$0"; exit 0 ;;
	*) echo "bench-prefix: unknown argument '$1'" >&2; exit 1 ;;
	esac
done
herd=$root/$build/herd herdd=$root/$build/herdd herdctl=$root/$build/herdctl
. "$root/scripts/bench-lib.sh"
bench_need bench-prefix "$herd" "$herdd" "$herdctl"
bench_demo_model "$herd" "$model"
work=$(mktemp -d /tmp/herd-bench-prefix-XXXXXX)
name=bp$$
broker=
cleanup() {
	[ -n "$broker" ] && kill "$broker" 2>/dev/null && wait "$broker" 2>/dev/null || true
	"$herdctl" rm --force "$(cat "$work/segment" 2>/dev/null || echo none)" >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

# run MODE(on|off): one broker, N agents at once, results in $work/MODE.*
run() {
	local mode=$1 sock=$work/$1.sock flag=true
	[ "${mode#off}" != "$mode" ] && flag=false
	python3 -c 'import json,sys; c=json.load(open(sys.argv[1])) if sys.argv[1] else {}; c["prefix_cache"]=sys.argv[2]=="true"; print(json.dumps(c))' \
		"$config" "$flag" >"$work/$mode.json"
	local bargs=(--config "$work/$mode.json" --socket "$sock" --model "$name=$model" --state-dir "$work"
		--threads "$threads")
	[ -n "$max_batch" ] && bargs+=(--max-batch "$max_batch")
	"$herdd" "${bargs[@]}" >"$work/$mode.log" 2>&1 &
	broker=$!
	bench_wait_broker bench-prefix "$herdctl" "$sock" "$broker" "$work/$mode.log"
	"$herdctl" --socket "$sock" --json models | python3 -c \
		'import json,sys; print(json.load(sys.stdin)[0]["segment"])' >"$work/segment"
	local pids=() i
	for ((i = 0; i < agents; i++)); do
		"$herd" agent --socket "$sock" --model "$name" --index "$i" --requests 1 \
			--max-tokens "$max_tokens" --stream-frac 1 --agents "$agents" \
			--prompt-len "$question" --shared-len "$shared" --shared-frac 1 \
			>"$work/$mode.agent$i" 2>&1 &
		pids+=($!)
	done
	for p in "${pids[@]}"; do wait "$p" || true; done
	"$herdctl" --socket "$sock" --json status >"$work/$mode.status"
	kill "$broker"; wait "$broker" 2>/dev/null || true; broker=
}

for ((r = 1; r <= rounds; r++)); do
	echo "== round $r: prefix_cache on ($agents agents)" >&2
	run on$r
	echo "== round $r: prefix_cache off ($agents agents)" >&2
	run off$r
done

python3 - "$work" "$agents" "$model" "$max_tokens" "$rounds" "${max_batch:-default}" <<'EOF'
import glob, json, sys
work, agents, model, max_tokens = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
rounds, max_batch = int(sys.argv[5]), sys.argv[6]
def pct(v, p):
    v = sorted(v)
    return round(v[min(len(v) - 1, int(p / 100.0 * len(v)))], 1) if v else None
def summary(mode):
    reqs = []
    for f in glob.glob(f"{work}/{mode}.agent*"):
        for line in open(f, errors="replace"):
            try:
                j = json.loads(line)
            except ValueError:
                continue
            if j.get("ev") == "req":
                reqs.append(j)
    ok = [r for r in reqs if r.get("ok")]
    st = json.load(open(f"{work}/{mode}.status"))
    bf = [r["broker_first_ms"] for r in ok if r["broker_first_ms"] >= 0]
    cf = [r["ttft_ms"] for r in ok if r.get("ttft_ms", -1) >= 0]
    return {"requests_ok": len(ok), "requests_failed": len(reqs) - len(ok) + agents - len(reqs),
            "ttft_p50_ms": pct(bf, 50), "ttft_p95_ms": pct(bf, 95),
            "client_first_p50_ms": pct(cf, 50), "client_first_p95_ms": pct(cf, 95),
            "latency_p50_ms": pct([r["latency_ms"] for r in ok], 50),
            "n_prompt_avg": round(sum(r["n_prompt"] for r in ok) / max(1, len(ok)), 1),
            "n_cached_avg": round(sum(r.get("n_cached", 0) for r in ok) / max(1, len(ok)), 1),
            "tokens_prompt": st.get("tokens_prompt"), "prefix_hit_tokens": st.get("prefix_hit_tokens"),
            "prefix_lookups": st.get("prefix_lookups"), "prefix_pages_cached": st.get("prefix_pages_cached")}
def ratio(on, off):
    return round(off["ttft_p50_ms"] / on["ttft_p50_ms"], 2) if on["ttft_p50_ms"] and off["ttft_p50_ms"] else None
runs = [(summary(f"on{r}"), summary(f"off{r}")) for r in range(1, rounds + 1)]
on, off = runs[0]
out = {"bench": "prefix", "agents": agents, "model": model, "max_tokens": max_tokens, "max_batch": max_batch,
       "on": on, "off": off, "ttft_p50_ratio_off_on": ratio(on, off)}
if rounds > 1:
    rs = sorted(ratio(a, b) or 0 for a, b in runs)
    out["rounds"] = [{"on": a, "off": b, "ttft_p50_ratio_off_on": ratio(a, b)} for a, b in runs]
    out["ttft_p50_ratio_median"] = rs[len(rs) // 2] if len(rs) % 2 else round((rs[len(rs) // 2 - 1] + rs[len(rs) // 2]) / 2, 2)
print(json.dumps(out))
EOF
