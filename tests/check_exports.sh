#!/bin/sh
# usage: check_exports.sh LIBHERD_SO
# Fails when libherd.so exports a defined dynamic symbol that is not herd_*
# (hidden visibility plus HERD_API on the public functions keep the
# kernels, GGUF, proto and shm functions out of the ABI).
set -eu
lib=$1
command -v nm >/dev/null 2>&1 || { echo "nm not found: skipped"; exit 77; }
all=$(nm -D --defined-only "$lib")
others=$(printf '%s\n' "$all" | grep -v ' herd_' || true)
n_herd=$(printf '%s\n' "$all" | grep -c ' herd_' || true)
if [ -n "$others" ]; then
	echo "libherd exports symbols outside herd_*:"
	printf '%s\n' "$others"
	exit 1
fi
if [ "$n_herd" -eq 0 ]; then
	echo "libherd exports no herd_* function at all"
	exit 1
fi
echo "libherd exports $n_herd herd_* symbols and nothing else"
