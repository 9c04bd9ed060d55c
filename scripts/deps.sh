#!/usr/bin/env bash
# Installs the Debian packages herd needs to build and test. Does nothing when
# they are all present. Run as root (or with sudo available).
set -euo pipefail
pkgs=(build-essential cmake pkg-config liburing-dev libbpf-dev libmsgpack-dev
      liblmdb-dev libcmocka-dev libjson-c-dev python3
      python3-numpy # scripts/kv-kl.py (KV cache types against llama.cpp)
      clang libclang-rt-14-dev # clang + libFuzzer runtime: scripts/fuzz.sh
      bpftool libelf-dev zlib1g-dev # eBPF counters: clang -target bpf, bpftool (vmlinux.h, skeleton), libbpf
      gnuplot-nox # herd bench --report: the figures (PNG and SVG)
      python3-msgpack # the Python client (python/herd)
      libsystemd-dev # herdd: socket activation (sd_listen_fds), sd_notify
      libmicrohttpd-dev libjs-chart.js # herdd's HTTP face and its dashboard's charts
      chromium curl) # the dashboard's test: headless Chromium, curl for its load
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node and npm for the HTTP tests (the openai and ollama npm clients):
# Debian's, unless a node with its own npm is installed already
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q "${missing[@]}"
