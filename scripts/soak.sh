#!/usr/bin/env bash
# Soak benchmark (a benchmark, not a test): herdd + N agent processes for M
# minutes of mixed streamed, blocking and cancelled requests; the broker's
# RSS and PSS and the total PSS (broker + every agent, from
# /proc/<pid>/smaps_rollup) are sampled every --interval seconds into a JSON
# file, which also gets a summary: the end of the warm-up, min/max/drift of
# RSS and PSS after it (in %), requests done/failed/cancelled, the errors
# seen. The verdict "flat within 5% after warm-up" is printed as a fact; the
# exit status is non-zero only when the tool itself fails (build, model,
# broker start-up, no agent ran).
#
# usage: scripts/soak.sh [--agents 69] [--minutes 10] [--model FILE]
#          [--out FILE] [--interval 10] [--warmup-s S] [--max-tokens 24]
#          [--mix S:B:C] [--think-ms 400] [--threads T] [--no-attach]
#          [--keep-image] [--build DIR]
#
#   --model FILE   default models/tinyllama-1.1b-demo-q4_0.gguf, made with
#                  `herd mkmodel --shape tinyllama-1.1b -t Q4_0` when absent
#   --mix S:B:C    weights of streamed, blocking and cancelled requests
#                  (default 2:2:1; a cancelled request is a streamed one the
#                  agent cancels after its 2nd token)
#   --think-ms MS  each agent waits 0..MS ms before each request (default 400)
#   --warmup-s S   samples before S seconds are warm-up (default: 20% of the
#                  run, at least 20 s, at most 120 s)
#   --no-attach    agents do not map the shared image (by default each one
#                  attaches it and maps every page, as `herd demo` does: the
#                  worst case for memory accounting)
#   --keep-image   leave the shared-memory image for the next run to adopt
#
# Quick check: scripts/soak.sh --minutes 1 --agents 8
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

agents=69 minutes=10 model="" out="" interval=10 warmup="" max_tokens=24
mix=2:2:1 think_ms=400 threads="" attach=1 keep_image=0 build=build
die() { echo "soak: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
	case $1 in
	--agents) agents=${2:?}; shift ;;
	--minutes) minutes=${2:?}; shift ;;
	--model) model=${2:?}; shift ;;
	--out) out=${2:?}; shift ;;
	--interval) interval=${2:?}; shift ;;
	--warmup-s) warmup=${2:?}; shift ;;
	--max-tokens) max_tokens=${2:?}; shift ;;
	--mix) mix=${2:?}; shift ;;
	--think-ms) think_ms=${2:?}; shift ;;
	--threads) threads=${2:?}; shift ;;
	--no-attach) attach=0 ;;
	--keep-image) keep_image=1 ;;
	--build) build=${2:?}; shift ;;
	-h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) die "unexpected argument '$1' (see --help)" ;;
	esac
	shift
done
for v in agents minutes interval max_tokens think_ms; do
	[[ ${!v} =~ ^[0-9]+$ ]] || die "--${v//_/-} wants a whole number, got '${!v}'"
done
[ "$agents" -ge 1 ] && [ "$agents" -le 900 ] || die "--agents must be 1..900"
[ "$minutes" -ge 1 ] || die "--minutes must be at least 1"
[ "$interval" -ge 1 ] || die "--interval must be at least 1"
duration=$((minutes * 60))
if [ -z "$warmup" ]; then
	warmup=$((duration / 5))
	[ "$warmup" -lt 20 ] && warmup=20
	[ "$warmup" -gt 120 ] && warmup=120
fi
[ -n "$out" ] || out=$root/soak-$(date +%Y%m%d-%H%M%S).json

echo "== building ($build)" >&2
bash scripts/build.sh "$build" >&2 || { echo "soak: build failed" >&2; exit 1; }
herd=$root/$build/herd herdd=$root/$build/herdd herdctl=$root/$build/herdctl
for b in "$herd" "$herdd" "$herdctl"; do [ -x "$b" ] || { echo "soak: $b missing" >&2; exit 1; }; done

if [ -z "$model" ]; then
	model=models/tinyllama-1.1b-demo-q4_0.gguf
	if [ ! -f "$model" ]; then
		mkdir -p models
		echo "== making $model (random weights in TinyLlama-1.1B's shape)" >&2
		"$herd" mkmodel --shape tinyllama-1.1b -t Q4_0 -o "$model" >&2 || exit 1
	fi
fi
[ -r "$model" ] || { echo "soak: cannot read model $model" >&2; exit 1; }
model=$(realpath "$model")

work=$(mktemp -d /tmp/herd-soak-XXXXXX)
sock=$work/herd.sock
name=soak
broker=0
pids=()
segment=""
cleanup() {
	trap - EXIT INT TERM
	for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
	if [ "$broker" -gt 0 ]; then
		kill -TERM "$broker" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$broker" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$broker" 2>/dev/null || true
	fi
	wait 2>/dev/null || true
	if [ -n "$segment" ] && [ "$keep_image" = 0 ]; then
		rm -f "/dev/shm/${segment#/}"
	fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "soak: interrupted" >&2; exit 130' INT TERM

# RSS and PSS of a pid in kB ("0 0" once it is gone).
mem_kb() {
	awk '/^Rss:/{r=$2} /^Pss:/{p=$2} END{print (r?r:0), (p?p:0)}' "/proc/$1/smaps_rollup" 2>/dev/null ||
		echo "0 0"
}
# utime + stime of a pid in seconds.
cpu_s() {
	awk -v hz="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz}' \
		"/proc/$1/stat" 2>/dev/null || echo 0
}
# Milliseconds on the wall clock (integers: no bc needed).
now_ms() { echo $(($(date +%s%N) / 1000000)); }

echo "== starting herdd on $model" >&2
bargs=(--socket "$sock" --model "$name=$model" --state-dir "$work")
[ -n "$threads" ] && bargs+=(--threads "$threads")
"$herdd" "${bargs[@]}" >"$work/herdd.log" 2>&1 &
broker=$!
t_start=$(now_ms)
until "$herdctl" --socket "$sock" status >/dev/null 2>&1; do
	kill -0 "$broker" 2>/dev/null || { tail -20 "$work/herdd.log" >&2; echo "soak: herdd exited during start-up" >&2; exit 1; }
	sleep 0.2
done
broker_start_s=$(awk -v ms=$(($(now_ms) - t_start)) 'BEGIN{printf "%.1f", ms / 1000}')
segment=$("$herdctl" --socket "$sock" --json models | python3 -c \
	'import json,sys; m=json.load(sys.stdin); print(m[0].get("segment","") if m else "")' 2>/dev/null || true)
echo "== broker serving after ${broker_start_s}s (image ${segment:-?}); $agents agents for ${minutes} min" >&2

aargs=(--socket "$sock" --model "$name" --duration-s "$duration" --mix "$mix" --max-tokens "$max_tokens"
	--think-ms "$think_ms" --quiet --reconnect)
[ "$attach" = 1 ] && aargs+=(--attach --touch)
for i in $(seq 0 $((agents - 1))); do
	"$herd" agent "${aargs[@]}" --index "$i" >"$work/agent.$i.jsonl" 2>>"$work/agents.err" &
	pids+=($!)
done

# Samples: one JSON object per line.
samples=$work/samples.jsonl
: >"$samples"
t0=$(now_ms)
next=0
while :; do
	t=$(($(now_ms) - t0))
	if [ "$t" -ge "$next" ]; then
		read -r brss bpss < <(mem_kb "$broker")
		apss=0 arss=0 alive=0
		for p in "${pids[@]}"; do
			read -r r s < <(mem_kb "$p")
			[ "$r" -gt 0 ] && alive=$((alive + 1))
			apss=$((apss + s)) arss=$((arss + r))
		done
		printf '{"t_s":%d.%d,"broker_rss_kb":%d,"broker_pss_kb":%d,"agents_pss_kb":%d,"agents_rss_kb":%d,"total_pss_kb":%d,"agents_alive":%d,"broker_cpu_s":%s}\n' \
			$((t / 1000)) $((t % 1000 / 100)) "$brss" "$bpss" "$apss" "$arss" $((bpss + apss)) \
			"$alive" "$(cpu_s "$broker")" >>"$samples"
		printf 'soak: t=%5ds broker RSS %6d MiB PSS %6d MiB, total PSS %6d MiB, %d agents running\n' \
			$((t / 1000)) $((brss / 1024)) $((bpss / 1024)) $(((bpss + apss) / 1024)) "$alive" >&2
		next=$((next + interval * 1000))
		[ "$alive" = 0 ] && break
	fi
	kill -0 "$broker" 2>/dev/null || { echo "soak: herdd died (see below)" >&2; tail -20 "$work/herdd.log" >&2; break; }
	# every agent exited: stop sampling
	running=0
	for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && { running=1; break; }; done
	[ "$running" = 0 ] && break
	# agents finish the request they began; give them 120 s past the end
	if [ "$t" -gt $(((duration + 120) * 1000)) ]; then
		echo "soak: agents still running 120 s after the end; stopping them" >&2
		break
	fi
	sleep 0.5
done
for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
pids=()
broker_alive=0
kill -0 "$broker" 2>/dev/null && broker_alive=1
"$herdctl" --socket "$sock" --json status >"$work/status.json" 2>/dev/null || echo null >"$work/status.json"
grep -c . "$work/herdd.log" >"$work/loglines" || true

python3 - "$work" "$out" "$agents" "$duration" "$warmup" "$interval" "$mix" "$max_tokens" \
	"$think_ms" "$model" "$broker_start_s" "$broker_alive" "$attach" <<'EOF'
import glob, json, os, sys
(work, out, agents, duration, warmup, interval, mix, max_tokens, think_ms, model,
 broker_start_s, broker_alive, attach) = sys.argv[1:]
agents, duration, warmup = int(agents), int(duration), int(warmup)
samples = [json.loads(l) for l in open(os.path.join(work, "samples.jsonl")) if l.strip()]
counts = dict(ok=0, failed=0, cancelled=0, streamed=0, blocking=0, cancel_requests=0)
errors, fatal, finished = {}, 0, 0
for path in glob.glob(os.path.join(work, "agent.*.jsonl")):
    last = None
    for line in open(path, errors="replace"):
        try:
            o = json.loads(line)
        except ValueError:
            continue
        ev = o.get("ev")
        if ev in ("progress", "finished"):
            last = o
            finished += ev == "finished"
        elif ev == "req" and not o.get("ok"):
            k = "%s (%s)" % (o.get("msg", "?"), o.get("code"))
            errors[k] = errors.get(k, 0) + 1
        elif ev in ("fatal", "error"):
            fatal += ev == "fatal"
            k = "%s: %s (%s)" % (ev, o.get("msg", "?"), o.get("code"))
            errors[k] = errors.get(k, 0) + 1
    for k in counts:
        counts[k] += (last or {}).get(k, 0)
try:
    status = json.load(open(os.path.join(work, "status.json")))
except ValueError:
    status = None
# After warm-up, while the run lasts and every agent is still there.
steady = [s for s in samples if warmup <= s["t_s"] <= duration and s["agents_alive"] == agents]
def stats(key):
    v = [s[key] for s in steady]
    if not v:
        return None
    lo, hi = min(v), max(v)
    return {"first_kb": v[0], "last_kb": v[-1], "min_kb": lo, "max_kb": hi,
            "range_pct": round(100.0 * (hi - lo) / lo, 2) if lo else None,
            "drift_pct": round(100.0 * (v[-1] - v[0]) / v[0], 2) if v[0] else None}
summary = {
    "warmup_end_s": warmup, "samples": len(samples), "samples_after_warmup": len(steady),
    "broker_rss": stats("broker_rss_kb"), "broker_pss": stats("broker_pss_kb"),
    "total_pss": stats("total_pss_kb"),
    "requests": {"done": counts["ok"] - counts["cancelled"], "failed": counts["failed"],
                 "cancelled": counts["cancelled"], "streamed": counts["streamed"],
                 "blocking": counts["blocking"], "cancel_requests": counts["cancel_requests"]},
    "agents_finished": finished, "agents_fatal": fatal,
    "errors": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:20]),
    "broker_alive_at_end": broker_alive == "1",
    "broker_log_lines": int(open(os.path.join(work, "loglines")).read().strip() or 0),
}
flat = [summary[k]["range_pct"] for k in ("broker_rss", "total_pss") if summary[k]]
summary["flat_within_5pct"] = bool(flat) and all(x is not None and x <= 5.0 for x in flat)
doc = {"config": {"agents": agents, "duration_s": duration, "interval_s": int(interval),
                  "mix_stream_block_cancel": mix, "max_tokens": int(max_tokens),
                  "think_ms": int(think_ms), "model": model, "agents_attach_image": attach == "1",
                  "broker_start_s": float(broker_start_s)},
       "samples": samples, "summary": summary, "broker_status": status}
with open(out, "w") as f:
    json.dump(doc, f, indent=1)
def fmt(name, st):
    if not st:
        return "  %-12s no samples after warm-up" % name
    return ("  %-12s %8.1f .. %8.1f MiB after warm-up: range %.2f%%, drift %+.2f%% (first %.1f, last %.1f MiB)"
            % (name, st["min_kb"] / 1024, st["max_kb"] / 1024, st["range_pct"] or 0,
               st["drift_pct"] or 0, st["first_kb"] / 1024, st["last_kb"] / 1024))
r = summary["requests"]
print("soak: %d agents, %d s, mix S:B:C %s, %d samples (%d after the %d s warm-up)"
      % (agents, duration, mix, len(samples), len(steady), warmup))
print(fmt("broker RSS", summary["broker_rss"]))
print(fmt("broker PSS", summary["broker_pss"]))
print(fmt("total PSS", summary["total_pss"]))
print("  requests     %d done, %d cancelled, %d failed (%d streamed, %d blocking, %d cancel requests)"
      % (r["done"], r["cancelled"], r["failed"], r["streamed"], r["blocking"], r["cancel_requests"]))
print("  agents       %d finished, %d fatal; broker %s at the end, %d log lines"
      % (finished, fatal, "alive" if summary["broker_alive_at_end"] else "DEAD",
         summary["broker_log_lines"]))
for k, n in list(summary["errors"].items())[:5]:
    print("  error x%-5d %s" % (n, k))
print("  verdict      broker RSS and total PSS %s flat within 5%% after warm-up"
      % ("are" if summary["flat_within_5pct"] else "are NOT"))
print("  json         %s" % out)
EOF
