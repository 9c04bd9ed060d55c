#!/usr/bin/env bash
# The main job: build herd, make the TinyLlama-shape demo model (random
# weights, Q4_0) if it is missing, then start the broker on it with 69 agent
# processes and print the report (requests, tokens/s, latency percentiles,
# image size, total PSS of the broker and all agents); then a single-process
# benchmark line for comparison.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh build
model=${HERD_DEMO_MODEL:-models/tinyllama-1.1b-demo-q4_0.gguf}
if [ ! -f "$model" ]; then
	mkdir -p "$(dirname "$model")"
	echo "== making $model (random weights in TinyLlama-1.1B's shape)"
	./build/herd mkmodel --shape tinyllama-1.1b -t Q4_0 -o "$model"
fi
echo "== herd demo: herdd + ${HERD_DEMO_AGENTS:-69} agent processes on $model"
./build/herd demo -m "$model" --agents "${HERD_DEMO_AGENTS:-69}" --requests-per-agent 2
echo "== herd bench (one process, no broker)"
./build/herd bench -m "$model" -p 128 -n 64 --json
