#!/bin/sh
# usage: check_systemd.sh BUILD_DIR
# The systemd side of herd, with real systemd tools:
#  1. `systemd-analyze verify` on herdd.service and herd.socket as `cmake
#     --install` writes them (their ExecStart names the installed herdd,
#     Documentation= the installed man page);
#  2. socket activation: systemd-socket-activate binds a socket and passes it
#     to herdd as fd 3 (LISTEN_FDS=1, LISTEN_PID); herdd serves it (herdctl
#     status and a generation through it), logs that it did, leaves the
#     socket file (systemd's) in place and its mode as systemd made it;
#  3. two passed sockets are refused with a message naming the problem.
# Exits 77 when systemd-analyze or systemd-socket-activate is missing.
set -eu
build=$1
for tool in systemd-analyze systemd-socket-activate cmake; do
	command -v "$tool" >/dev/null 2>&1 || { echo "$tool not found: skipped"; exit 77; }
done
tmp=$(mktemp -d /tmp/herd-systemd-XXXXXX)
pid=
model=sd$$
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -f /dev/shm/herd.$model.*
	rm -rf "$tmp"
}
trap cleanup EXIT
p=$tmp/prefix
cmake --install "$build" --prefix "$p" >/dev/null

# 1. the units
units=$p/lib/systemd/system
out=$(MANPATH=$p/share/man systemd-analyze verify "$units/herd.socket" "$units/herdd.service" 2>&1) ||
	{ echo "systemd-analyze verify failed: $out"; exit 1; }
[ -z "$out" ] || { echo "systemd-analyze verify warned: $out"; exit 1; }
grep -q '^Service=herdd.service$' "$units/herd.socket"
grep -q '^Type=notify$' "$units/herdd.service"

# 2. socket activation with a real passed descriptor
"$p/bin/herd" mkmodel --shape mini -t Q8_0 -o "$tmp/mini.gguf" --seed 11 >/dev/null 2>&1
sock=$tmp/run/herd.sock
mkdir -p "$tmp/run"
systemd-socket-activate -l "$sock" "$p/bin/herdd" --model "$model=$tmp/mini.gguf" \
	--state-dir "$tmp/state" --threads 2 >"$tmp/log" 2>&1 &
pid=$!
i=0
while [ ! -S "$sock" ]; do
	i=$((i + 1))
	[ $i -lt 300 ] || { echo "systemd-socket-activate made no socket"; cat "$tmp/log"; exit 1; }
	sleep 0.1
done
mode=$(stat -c %a "$sock")
# the first connection makes systemd-socket-activate exec herdd on fd 3
st=$("$p/bin/herdctl" --socket "$sock" --json status) ||
	{ echo "herdctl status through the passed socket failed"; cat "$tmp/log"; exit 1; }
echo "$st" | grep -q "\"socket\": *\"$sock\"" || { echo "status names another socket: $st"; exit 1; }
grep -q "socket activation: serving the socket systemd passed ($sock)" "$tmp/log" ||
	{ echo "herdd did not adopt the passed socket"; cat "$tmp/log"; exit 1; }
[ "$(stat -c %a "$sock")" = "$mode" ] || { echo "herdd changed the passed socket's mode"; exit 1; }
out=$(HERD_SOCKET=$sock "$p/bin/herdctl" --json models) || { echo "herdctl models failed"; exit 1; }
echo "$out" | grep -q "\"name\": *\"$model\"" || { echo "models: $out"; exit 1; }
# a generation through it: one agent process, one request
out=$("$p/bin/herd" bench serve --socket "$sock" --model-name "$model" --agents 1 --requests 1 \
	--gen-len 4 --prompt-len 8 2>"$tmp/bench.err") || { echo "generation failed: $out"; cat "$tmp/bench.err"; exit 1; }
echo "$out" | grep -q '"requests_ok":1,' || { echo "bench serve: $out"; exit 1; }
kill -TERM "$pid"
wait "$pid" || { echo "herdd did not stop cleanly on SIGTERM"; cat "$tmp/log"; exit 1; }
pid=
[ -S "$sock" ] || { echo "herdd removed the socket systemd owns"; exit 1; }

# 3. two passed sockets: refused, with the reason
systemd-socket-activate -l "$tmp/run/a.sock" -l "$tmp/run/b.sock" "$p/bin/herdd" \
	--model "$model=$tmp/mini.gguf" --state-dir "$tmp/state" >"$tmp/log2" 2>&1 &
pid=$!
i=0
while [ ! -S "$tmp/run/b.sock" ]; do
	i=$((i + 1))
	[ $i -lt 300 ] || { echo "systemd-socket-activate made no sockets"; exit 1; }
	sleep 0.1
done
"$p/bin/herdctl" --socket "$tmp/run/a.sock" status >/dev/null 2>&1 || true
rc=0
wait "$pid" || rc=$?
pid=
[ $rc -eq 1 ] || { echo "herdd with two passed sockets exited $rc"; cat "$tmp/log2"; exit 1; }
grep -q "systemd passed 2 descriptors; herdd serves one socket" "$tmp/log2" ||
	{ echo "no clear message for two sockets"; cat "$tmp/log2"; exit 1; }
echo "systemd: units verify; herdd serves a passed socket and refuses two"
