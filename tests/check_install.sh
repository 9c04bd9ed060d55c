#!/bin/sh
# usage: check_install.sh BUILD_DIR AGENT_SOURCE [EXTRA_CFLAGS]
# Installs the build into a temporary prefix, then compiles AGENT_SOURCE
# against it with `pkg-config herd` (shared library) and with
# `pkg-config --static herd` (libherd.a), and runs both programs.
set -eu
build=$1
src=$2
extra=${3:-} # e.g. the sanitizer flags the library was built with
for tool in cc pkg-config cmake; do
	command -v "$tool" >/dev/null 2>&1 || { echo "$tool not found: skipped"; exit 77; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig"
# the .pc carries the configure-time prefix: point it at the temporary one
sed -i "s|^prefix=.*|prefix=$tmp/prefix|" "$tmp/prefix/lib/pkgconfig/herd.pc"

cc $extra -o "$tmp/agent_shared" "$src" $(pkg-config --cflags --libs herd) \
	-Wl,-rpath,"$tmp/prefix/lib"
"$tmp/agent_shared"

# --static: the same flags, with -lherd meaning libherd.a (the .so sits beside it)
libs=$(pkg-config --static --libs herd | sed "s|-lherd\\b|$tmp/prefix/lib/libherd.a|")
cc $extra -o "$tmp/agent_static" "$src" $(pkg-config --cflags herd) $libs
"$tmp/agent_static"
echo "installed libherd links through pkg-config (shared and --static)"
