# Sourced by the HTTP tests: a real herdd on the mini model with HTTP on a
# free loopback port, and the npm packages they need installed into the
# build directory. Usage: http_lib_start BUILD_DIR [CONFIG_JSON]; sets
# HERDD_PID, HTTP_URL, WORK, MODEL; http_lib_stop (trap) kills it.
set -euo pipefail

http_lib_skip() { echo "SKIP: $*" >&2; exit 77; }

# npm packages into $1/npm-http (once; the lock keeps parallel tests apart).
http_lib_npm() {
	local build=$1; shift
	command -v node >/dev/null 2>&1 || http_lib_skip "node is not installed"
	command -v npm >/dev/null 2>&1 || http_lib_skip "npm is not installed"
	NPM_DIR=$build/npm-http
	mkdir -p "$NPM_DIR"
	(
		flock 9
		local need=0
		for p in "$@"; do [ -d "$NPM_DIR/node_modules/${p%@*}" ] || need=1; done
		if [ $need = 1 ]; then
			[ -f "$NPM_DIR/package.json" ] || echo '{"name": "herd-http-tests", "private": true}' > "$NPM_DIR/package.json"
			npm install --prefix "$NPM_DIR" --no-audit --no-fund --silent "$@" >&2 ||
				http_lib_skip "npm install $* failed (no registry?)"
		fi
	) 9>"$NPM_DIR/.lock"
}

http_lib_stop() {
	if [ -n "${HERDD_PID:-}" ]; then
		kill "$HERDD_PID" 2>/dev/null || true
		wait "$HERDD_PID" 2>/dev/null || true
	fi
	if [ -n "${WORK:-}" ] && [ -d "$WORK" ]; then
		[ -n "${HERD_TEST_VERBOSE:-}" ] && cat "$WORK/herdd.log" >&2
		rm -rf "$WORK"
	fi
	# the images this run published (its model's name is unique)
	[ -n "${MODEL:-}" ] && rm -f /dev/shm/herd."$MODEL".* 2>/dev/null
	return 0
}

http_lib_start() {
	local build=$1 conf=${2:-'{}'}
	[ -x "$build/herdd" ] && [ -x "$build/herd" ] || http_lib_skip "herdd not built in $build"
	WORK=$(mktemp -d /tmp/herd-http-XXXXXX)
	MODEL=mini$$
	trap http_lib_stop EXIT
	"$build/herd" mkmodel --shape mini -t Q4_0 -o "$WORK/mini.gguf" >/dev/null
	python3 - "$conf" "$WORK/herd.json" <<'PY'
import json, sys
c = json.loads(sys.argv[1])
c.setdefault("http", {}).setdefault("listen", "127.0.0.1:0")
open(sys.argv[2], "w").write(json.dumps(c))
PY
	"$build/herdd" --config "$WORK/herd.json" --socket "$WORK/herd.sock" --state-dir "$WORK/state" \
		--model "$MODEL=$WORK/mini.gguf" --threads 2 >"$WORK/herdd.log" 2>&1 &
	HERDD_PID=$!
	local i
	for i in $(seq 1 600); do
		HTTP_URL=$(grep -o 'http: listening on http://[0-9.:]*' "$WORK/herdd.log" | sed 's/.*on //' || true)
		[ -n "$HTTP_URL" ] && break
		kill -0 "$HERDD_PID" 2>/dev/null || { cat "$WORK/herdd.log" >&2; echo "herdd died" >&2; exit 1; }
		sleep 0.05
	done
	[ -n "$HTTP_URL" ] || { cat "$WORK/herdd.log" >&2; echo "herdd did not listen" >&2; exit 1; }
	export HTTP_URL MODEL
}
