#!/bin/sh
# usage: check_install.sh BUILD_DIR AGENT_SOURCE [EXTRA_CFLAGS]
# Installs the build into a temporary prefix and checks what `cmake
# --install` put there: the programs, libherd and its headers, pkg-config
# and CMake package files, man pages that render without warnings, the
# systemd units, sysusers.d and tmpfiles.d files, the service's
# configuration, the Python client. Then compiles AGENT_SOURCE against it
# with `pkg-config herd` (shared library), `pkg-config --static herd`
# (libherd.a) and a CMake project using find_package(herd) (both targets),
# and runs every program.
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
p=$tmp/prefix
for f in bin/herd bin/herdd bin/herdctl lib/libherd.a lib/libherd.so include/herd/herd.h \
	include/herd/error.h lib/pkgconfig/herd.pc lib/cmake/herd/herdConfig.cmake \
	lib/cmake/herd/herdConfigVersion.cmake lib/cmake/herd/herdTargets.cmake \
	share/man/man1/herd.1 share/man/man1/herdctl.1 share/man/man8/herdd.8 \
	lib/systemd/system/herdd.service lib/systemd/system/herd.socket lib/sysusers.d/herd.conf \
	lib/tmpfiles.d/herd.conf etc/herd/herd.json lib/python3/dist-packages/herd/__init__.py; do
	[ -e "$p/$f" ] || { echo "cmake --install did not install $f"; exit 1; }
done
for b in herd herdd herdctl; do "$p/bin/$b" --help >/dev/null || { echo "installed $b --help failed"; exit 1; }; done
grep -q "^ExecStart=$p/bin/herdd --config $p/etc/herd/herd.json " "$p/lib/systemd/system/herdd.service" ||
	{ echo "herdd.service does not run the installed herdd"; exit 1; }
if command -v man >/dev/null 2>&1; then
	for m in man1/herd.1 man1/herdctl.1 man8/herdd.8; do
		w=$(MANWIDTH=80 man --warnings -E UTF-8 -l "$p/share/man/$m" 2>&1 >/dev/null)
		[ -z "$w" ] || { echo "man page $m: $w"; exit 1; }
		MANWIDTH=80 man -E UTF-8 -l "$p/share/man/$m" 2>/dev/null | grep -q "SYNOPSIS" ||
			{ echo "man page $m renders no SYNOPSIS"; exit 1; }
	done
fi
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

# the Python client from where it was installed (Debian's python3 has msgpack)
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c "import msgpack" 2>/dev/null; then
	PYTHONPATH="$p/lib/python3/dist-packages" /usr/bin/python3 -c \
		"import herd, herd.aio; assert herd.__file__.startswith('$p/')"
fi

# find_package(herd): a CMake project of its own, both imported targets
cmake -S "$(dirname "$0")/cmake_consumer" -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$p" \
	-DAGENT_SRC="$(cd "$(dirname "$src")" && pwd)/$(basename "$src")" \
	-DCMAKE_C_FLAGS="$extra" -DCMAKE_EXE_LINKER_FLAGS="$extra" >/dev/null
cmake --build "$tmp/consumer" >/dev/null
"$tmp/consumer/agent_shared"
"$tmp/consumer/agent_static"
ldd "$tmp/consumer/agent_shared" | grep -q "$p/lib/libherd.so" ||
	{ echo "agent_shared does not use the installed libherd.so"; exit 1; }
echo "installed: programs, libherd (pkg-config shared and --static, find_package herd::herd and herd::herd_static), man pages, units, Python client"
