#!/usr/bin/env bash
# The official npm clients of OpenAI (`openai`) and Ollama (`ollama`),
# driven by node against a real herdd on the mini model: streaming and
# not, with a bearer token. Exits 77 without node/npm or the registry.
#   tests/http_clients.sh BUILD_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:?usage: http_clients.sh BUILD_DIR}" && pwd)
. "$here/http_lib.sh"
http_lib_npm "$build" openai@4.95.0 ollama@0.6.4
export HERD_TOKEN=clients-test-token-0123456789
http_lib_start "$build" '{"http": {"tokens": [{"name": "npm", "token": "'$HERD_TOKEN'"}]}}'
NPM_DIR=$NPM_DIR node "$here/http_clients.cjs"
