#!/usr/bin/env bash
# Victim-latency benchmark (a benchmark, not a test): for each attack of the
# hardening issue, a fresh herdd on the model, one attacker process doing
# that attack over the raw wire protocol and one ordinary agent (the
# victim) sending 8-token requests one after the other
# (`herd abuse`, tools/herd/cmd_abuse.c). Per attack: the victim's latency
# p50/p95/max and whether every request was answered, the broker's RSS
# growth, its CPU time, its log growth and whether it survived. JSON lines
# go to --out, a table to stdout. The target of the issue: every victim
# request answered within 2 s on the TinyLlama shape whatever the attack.
# Exit status non-zero only when the tool itself fails.
#
# usage: scripts/bench-abuse.sh [--model FILE] [--seconds 15] [--grace-s 10]
#          [--attacks LIST] [--out FILE] [--config FILE] [--nofile 1024]
#          [--threads T] [--victim-tokens 8] [--keep-image] [--build DIR]
#
#   --model FILE     default models/tinyllama-1.1b-demo-q4_0.gguf (made with
#                    `herd mkmodel --shape tinyllama-1.1b -t Q4_0` when absent);
#                    `--model mini` makes and uses the small test shape
#   --attacks LIST   comma-separated (default: every one; `herd abuse --list`)
#   --seconds S      attack time per attack; the victim's last request is
#                    then waited for up to --grace-s more
#   --config FILE    herdd --config (e.g. to try limits)
#   --nofile N       the broker's descriptor limit (ulimit -n; default 1024,
#                    systemd's default soft limit) so that `conns` can reach it
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

model="" seconds=15 grace=10 attacks="" out="" config="" nofile=1024 threads="" vtok=8
keep_image=0 build=build
die() { echo "bench-abuse: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
	case $1 in
	--model) model=${2:?}; shift ;;
	--seconds) seconds=${2:?}; shift ;;
	--grace-s) grace=${2:?}; shift ;;
	--attacks) attacks=${2:?}; shift ;;
	--out) out=${2:?}; shift ;;
	--config) config=$(realpath "${2:?}"); shift ;;
	--nofile) nofile=${2:?}; shift ;;
	--threads) threads=${2:?}; shift ;;
	--victim-tokens) vtok=${2:?}; shift ;;
	--keep-image) keep_image=1 ;;
	--build) build=${2:?}; shift ;;
	-h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) die "unexpected argument '$1' (see --help)" ;;
	esac
	shift
done
for v in seconds grace nofile vtok; do
	[[ ${!v} =~ ^[0-9]+$ ]] || die "--$v wants a whole number, got '${!v}'"
done
[ -n "$out" ] || out=$root/bench-abuse-$(date +%Y%m%d-%H%M%S).jsonl

echo "== building ($build)" >&2
bash scripts/build.sh "$build" >&2 || { echo "bench-abuse: build failed" >&2; exit 1; }
herd=$root/$build/herd herdd=$root/$build/herdd herdctl=$root/$build/herdctl
for b in "$herd" "$herdd" "$herdctl"; do [ -x "$b" ] || { echo "bench-abuse: $b missing" >&2; exit 1; }; done
[ -n "$attacks" ] || attacks=$("$herd" abuse --list | awk '/^  [a-z]/{print $1}' | paste -sd, -)

work=$(mktemp -d /tmp/herd-abuse-XXXXXX)
# As root, the attacker runs as another uid (nobody, keeping group 0 so the
# socket's mode 0660 lets it in): the per-uid limits are there to protect
# one user from another, and a victim sharing the attacker's uid would share
# its connection budget too.
as_other=()
if [ "$(id -u)" -eq 0 ] && [ -z "${HERD_ABUSE_SAME_UID:-}" ]; then
	as_other=(--attacker-uid "$(id -u nobody)")
	chmod 0750 "$work"
fi
case $model in
"") model=models/tinyllama-1.1b-demo-q4_0.gguf
	if [ ! -f "$model" ]; then
		mkdir -p models
		echo "== making $model (random weights in TinyLlama-1.1B's shape)" >&2
		"$herd" mkmodel --shape tinyllama-1.1b -t Q4_0 -o "$model" >&2 || exit 1
	fi ;;
mini) model=$work/mini.gguf
	"$herd" mkmodel --shape mini -t Q4_0 -o "$model" >/dev/null || exit 1 ;;
esac
[ -r "$model" ] || { echo "bench-abuse: cannot read model $model" >&2; exit 1; }
model=$(realpath "$model")

sock=$work/herd.sock
name=abuse
broker=0
segment=""
stop_broker() {
	[ "$broker" -gt 0 ] || return 0
	kill -TERM "$broker" 2>/dev/null || true
	for _ in $(seq 100); do kill -0 "$broker" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$broker" 2>/dev/null; then
		echo "bench-abuse: herdd did not stop on SIGTERM within 10 s; killing it" >&2
		kill -KILL "$broker" 2>/dev/null || true
	fi
	wait "$broker" 2>/dev/null || true
	broker=0
	rm -f "$sock"
}
cleanup() {
	trap - EXIT INT TERM
	stop_broker
	if [ -n "$segment" ] && [ "$keep_image" = 0 ]; then rm -f "/dev/shm/${segment#/}"; fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "bench-abuse: interrupted" >&2; exit 130' INT TERM

start_broker() {
	local args=(--socket "$sock" --model "$name=$model" --state-dir "$work")
	[ -n "$config" ] && args+=(--config "$config")
	[ -n "$threads" ] && args+=(--threads "$threads")
	: >"$work/herdd.log"
	(ulimit -n "$nofile" && exec "$herdd" "${args[@]}") >>"$work/herdd.log" 2>&1 &
	broker=$!
	until "$herdctl" --socket "$sock" status >/dev/null 2>&1; do
		if ! kill -0 "$broker" 2>/dev/null; then
			tail -20 "$work/herdd.log" >&2
			echo "bench-abuse: herdd exited during start-up" >&2
			exit 1
		fi
		sleep 0.2
	done
	[ -n "$segment" ] || segment=$("$herdctl" --socket "$sock" --json models | python3 -c \
		'import json,sys; m=json.load(sys.stdin); print(m[0].get("segment","") if m else "")' 2>/dev/null || true)
}

: >"$out"
echo "== $model; ${seconds}s per attack (+ up to ${grace}s for the victim's last request)" >&2
for a in ${attacks//,/ }; do
	echo "== attack $a" >&2
	start_broker
	"$herd" abuse --socket "$sock" --model "$name" --attack "$a" --seconds "$seconds" \
		--grace-s "$grace" --broker-pid "$broker" --log "$work/herdd.log" \
		--victim-tokens "$vtok" "${as_other[@]}" >>"$out" ||
		echo "bench-abuse: herd abuse failed on $a" >&2
	stop_broker
done

python3 - "$out" "$model" "$vtok" <<'EOF'
import json, sys
out, model, vtok = sys.argv[1], sys.argv[2], sys.argv[3]
rows = [json.loads(l) for l in open(out) if l.strip()]
print("victim: %s-token requests on %s" % (vtok, model))
hdr = ("attack", "victim req", "answered", "unanswered", "failed", "p50 ms", "p95 ms", "max ms",
       "RSS +MiB", "CPU s", "log lines", "broker", "attacker")
fmt = "%-10s %10s %8s %10s %6s %8s %8s %9s %8s %6s %9s %6s  %s"
print(fmt % hdr)
for r in rows:
    v, b, a = r["victim"], r["broker"], r["attacker"]
    ok = v["unanswered"] == 0 and v["failed"] == 0 and v["connect_failed"] == 0 and v["answered"] > 0
    att = "%d frames, %d conns, %d closed, %d done, %d err" % (
        a.get("frames", 0), a.get("conns", 0), a.get("closed_by_broker", 0), a.get("done", 0),
        a.get("err", 0))
    if a.get("first_err"):
        att += " (" + a["first_err"][:60] + ")"
    print(fmt % (r["attack"], v["requests"], v["answered"],
                 "%d (%.0fs)" % (v["unanswered"], v["waiting_ms"] / 1000) if v["unanswered"] else "0",
                 v["failed"] + v["connect_failed"], "%.0f" % v["p50_ms"], "%.0f" % v["p95_ms"],
                 "%.0f%s" % (v["max_ms"], "" if ok else "!"), "%.1f" % b["rss_growth_mib"],
                 "%.1f" % b["cpu_s"], b["log_lines"], "alive" if b["alive"] else "DEAD", att))
print("(max ms with '!': some victim request was not answered, failed or could not connect;"
      " an unanswered one counts with its wait so far)")
print("json lines: %s" % out)
EOF
