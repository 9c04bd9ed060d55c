#!/usr/bin/env bash
# The main job: build herd, make the TinyLlama-shape demo model (random
# weights, Q4_0) if it is missing, and generate text from it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh build
model=${HERD_DEMO_MODEL:-models/tinyllama-1.1b-demo-q4_0.gguf}
if [ ! -f "$model" ]; then
	mkdir -p "$(dirname "$model")"
	echo "== making $model (random weights in TinyLlama-1.1B's shape)"
	./build/herd mkmodel --shape tinyllama-1.1b -t Q4_0 -o "$model"
fi
echo "== herd run"
./build/herd run -m "$model" -p "Once upon a time" -n 64 --seed 42
echo "== herd bench"
./build/herd bench -m "$model" -p 128 -n 64 --json
