#!/usr/bin/env bash
# The dashboard (/ui) in Debian's headless Chromium driven by
# playwright-core (npm), offline: load the page while agents generate,
# wait for every chart to fill from the server-sent events, check the DOM
# and save a screenshot (DASHBOARD_PNG, default BUILD_DIR/dashboard.png;
# docs/dashboard.png is one). Exits 77 without chromium, node or npm.
#   tests/http_dashboard.sh BUILD_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:?usage: http_dashboard.sh BUILD_DIR}" && pwd)
. "$here/http_lib.sh"
[ -x /usr/bin/chromium ] || http_lib_skip "/usr/bin/chromium is not installed (apt-get install chromium)"
http_lib_npm "$build" playwright-core@1.54.0
http_lib_start "$build"
export DASHBOARD_PNG=${DASHBOARD_PNG:-$build/dashboard.png} CHROME_PROFILE=$WORK/chromium-profile
# load while the page watches: a few streams from several agents, one
# long shared opening (prefix-cache hits)
prompt=$(printf 'Once upon a time in a land far away there lived a herd of llamas. %.0s' 1 2 3 4)
( for i in $(seq 1 400); do # until the page is done (killed below)
	for a in planner coder critic; do
		curl -s -o /dev/null -H "X-Herd-Agent: $a" "$HTTP_URL/v1/completions" \
			-d '{"model": "'"$MODEL"'", "prompt": "'"$prompt"' Part '$i'", "max_tokens": 48, "stream": true}' &
	done
	wait
	sleep 0.3
  done ) &
load=$!
rc=0
NPM_DIR=$NPM_DIR node "$here/http_dashboard.cjs" || rc=$?
kill $load 2>/dev/null || true
wait $load 2>/dev/null || true
exit $rc
