#!/usr/bin/env bash
# The engine's speed table: TinyLlama-shape demo models (random weights) in
# Q4_0, Q8_0 and Q4_K_M, single-stream generation and prompt processing, and
# aggregate generation for 16 and 69 sequences (64-token prompts, 32 new
# tokens each). One JSON object per line on stdout.
# usage: scripts/bench-engine.sh [THREADS] [MODEL_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-0}
dir=${2:-models}
bash scripts/build.sh build >&2
mkdir -p "$dir"
for t in Q4_0 Q8_0 Q4_K_M; do
	m="$dir/tinyllama-1.1b-demo-$(echo "$t" | tr 'A-Z' 'a-z').gguf"
	[ -f "$m" ] || ./build/herd mkmodel --shape tinyllama-1.1b -t "$t" -o "$m" >&2
	./build/herd bench -m "$m" -t "$threads" -p 128 -n 64 -r 5 --json
done
m="$dir/tinyllama-1.1b-demo-q4_0.gguf"
for b in 16 69; do
	./build/herd bench -m "$m" -t "$threads" -b "$b" -p 64 -n 32 -r 3 --json
done
