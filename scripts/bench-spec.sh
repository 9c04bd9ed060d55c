#!/usr/bin/env bash
# Prompt-lookup speculative decoding (model/spec.h): greedy generation with
# `herd run --draft 0` (plain) and `--draft N` on copying workloads; one JSON
# line per workload with the median generation speed of each over R runs,
# the speed-up, the drafted / accepted tokens and whether both printed the
# same bytes (they must).
#
#   bash scripts/bench-spec.sh [BUILD_DIR] [RUNS]     (env: DRAFT, THREADS)
#
# Workloads (random weights copy nothing on purpose, so the copying is
# either the trained model's own or a prompt built from the model's output):
#  - story:   ../shared/fixtures/real/stories260K-F32.gguf (trained), the
#             first 32 tokens of four of its own sampled streams (calib.tokens
#             rows 10-13), 400 new tokens: greedy small models repeat
#             phrases of what they wrote.
#  - retell:  the same model; prompt = a whole 120-token stream followed by its
#             first 8 tokens again (a story, then its retelling begins).
#  - cycle:   the TinyLlama-shape Q4_0 demo model (random weights, the cost
#             of a 1.1B model); prompt = the model's own 160-token greedy
#             continuation of "Once upon a time" (read back as tokens), so the
#             continuation copies the cycle greedy decoding has settled in.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build}
R=${2:-3}
DRAFT=${DRAFT:-8}
THREADS=${THREADS:-2}
FIX=../shared/fixtures/real
TL=${HERD_DEMO_MODEL:-models/tinyllama-1.1b-demo-q4_0.gguf}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# stream rows / slices of calib.tokens ([64][128] int32) into token files
python3 - "$FIX/calib.tokens" "$tmp" <<'PY'
import struct, sys
src, out = sys.argv[1], sys.argv[2]
data = open(src, "rb").read()
rows = [struct.unpack_from("<128i", data, 512 * r) for r in range(64)]
def put(name, toks):
    open(f"{out}/{name}", "wb").write(struct.pack(f"<{len(toks)}i", *toks))
for i in range(4):
    put(f"story{i}.tokens", rows[10 + i][:32])
    put(f"retell{i}.tokens", rows[20 + i][:120] + rows[20 + i][:8])
PY

# median tok/s of `herd run ... --draft D` over R runs; the text of the last
# run in $tmp/out.D, its draft counters in $tmp/drafts.D
run() { # model tokens n draft
	local v=()
	for _ in $(seq "$R"); do
		"$B/herd" run -m "$1" --prompt-tokens "$2" -n "$3" --temp 0 --draft "$4" -t "$THREADS" \
			>"$tmp/out.$4" 2>"$tmp/err.$4"
		v+=("$(sed -n 's/.*generated [0-9]* tokens in [0-9.]* s (\([0-9.]*\) tok\/s).*/\1/p' "$tmp/err.$4")")
	done
	grep -o 'drafted, [0-9]* accepted\|drafts [0-9]*, [0-9]* tokens' "$tmp/err.$4" | tr -dc '0-9 \n' >"$tmp/drafts.$4" || true
	printf '%s\n' "${v[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

workload() { # name model n tokens...
	local name=$1 model=$2 n=$3
	shift 3
	local plain=0 spec=0 same=true drafted=0 accepted=0 k=0
	for t in "$@"; do
		p=$(run "$model" "$t" "$n" 0)
		s=$(run "$model" "$t" "$n" "$DRAFT")
		cmp -s "$tmp/out.0" "$tmp/out.$DRAFT" || same=false
		read -r _ d <<<"$(sed -n 1p "$tmp/drafts.$DRAFT")" || true
		read -r a <<<"$(sed -n 2p "$tmp/drafts.$DRAFT")" || true
		drafted=$((drafted + ${d:-0}))
		accepted=$((accepted + ${a:-0}))
		plain=$(awk -v x="$plain" -v y="$p" 'BEGIN {print x + y}')
		spec=$(awk -v x="$spec" -v y="$s" 'BEGIN {print x + y}')
		k=$((k + 1))
	done
	awk -v w="$name" -v m="$(basename "$model")" -v k="$k" -v n="$n" -v dr="$DRAFT" -v p="$plain" \
		-v s="$spec" -v d="$drafted" -v a="$accepted" -v same="$same" -v r="$R" -v th="$THREADS" 'BEGIN {
		printf "{\"workload\":\"%s\",\"model\":\"%s\",\"prompts\":%d,\"gen_tokens\":%d,\"draft\":%d,\"runs\":%d,\"threads\":%d,", w, m, k, n, dr, r, th
		printf "\"plain_tok_s\":%.1f,\"spec_tok_s\":%.1f,\"speedup\":%.3f,", p / k, s / k, (p > 0 ? s / p : 0)
		printf "\"drafted\":%d,\"accepted\":%d,\"accept_rate\":%.3f,\"identical\":%s}\n", d, a, d ? a / d : 0, same
	}'
}

workload story "$FIX/stories260K-F32.gguf" 400 "$tmp"/story{0,1,2,3}.tokens
workload retell "$FIX/stories260K-F32.gguf" 120 "$tmp"/retell{0,1,2,3}.tokens
if [ -f "$TL" ]; then
	"$B/herd" run -m "$TL" -p "Once upon a time" -n 160 --temp 0 --draft 0 -t "$THREADS" 2>/dev/null |
		head -c -1 >"$tmp/cycle.txt"
	"$B/herd" tokenize -m "$TL" "Once upon a time$(cat "$tmp/cycle.txt")" |
		python3 -c 'import struct, sys; t = [int(x) for x in sys.stdin.read().split()]; sys.stdout.buffer.write(struct.pack(f"<{len(t)}i", *t))' \
		>"$tmp/cycle.tokens"
	workload cycle "$TL" 128 "$tmp/cycle.tokens"
fi
