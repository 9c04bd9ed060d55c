#!/bin/sh
# usage: check_deb.sh BUILD_DIR
# Builds the .deb with `cpack -G DEB`, checks its control fields and
# contents, installs it with dpkg -i (the maintainer script makes the herd
# user and group), starts the installed /usr/bin/herdd on a mini model and
# talks to it with the installed herdctl, herd and Python client, then
# purges the package and checks that it is gone. Changes the machine, so it
# runs only as root with dpkg, and never over a herd package that was
# installed before it: exits 77 then.
set -eu
build=$1
[ "$(id -u)" -eq 0 ] || { echo "not root: skipped"; exit 77; }
for tool in dpkg dpkg-deb dpkg-query cpack; do
	command -v "$tool" >/dev/null 2>&1 || { echo "$tool not found: skipped"; exit 77; }
done
if dpkg-query -W -f='${Status}' herd 2>/dev/null | grep -q "installed"; then
	echo "a herd package is installed already: not replacing it; skipped"
	exit 77
fi
tmp=$(mktemp -d /tmp/herd-deb-XXXXXX)
pid=
model=deb$$
installed=
# dpkg refuses to run while another dpkg or apt holds its lock: wait for it
dpkg_locked() {
	n=0
	while ! "$@" >"$tmp/dpkg.out" 2>&1; do
		grep -qi "lock" "$tmp/dpkg.out" && [ $n -lt 60 ] || { cat "$tmp/dpkg.out"; return 1; }
		n=$((n + 1))
		sleep 2
	done
}
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	[ -n "$installed" ] && dpkg_locked dpkg --purge herd
	rm -f /dev/shm/herd.$model.*
	rm -rf "$tmp"
}
trap cleanup EXIT

# the package
(cd "$tmp" && cpack -G DEB --config "$build/CPackConfig.cmake" -B "$tmp/pkg" >"$tmp/cpack.log" 2>&1) ||
	{ cat "$tmp/cpack.log"; exit 1; }
deb=$(ls "$tmp"/pkg/herd_*.deb)
deps=$(dpkg-deb -f "$deb" Depends)
for d in liblmdb0 liburing2 libbpf1 libsystemd0 libmicrohttpd12 libmsgpackc2 libjson-c5 libc6; do
	echo "$deps" | grep -q "\\b$d\\b" || { echo "Depends lacks $d: $deps"; exit 1; }
	dpkg-query -W -f='${Status}' "$d" 2>/dev/null | grep -q "install ok installed" ||
		{ echo "dependency $d is not installed (scripts/deps.sh installs it)"; exit 1; }
done
dpkg-deb -c "$deb" >"$tmp/contents"
for f in ./usr/bin/herdd ./usr/bin/herdctl ./usr/bin/herd ./usr/lib/libherd.so.0.1.0 \
	./usr/include/herd/herd.h ./usr/lib/pkgconfig/herd.pc ./usr/lib/cmake/herd/herdConfig.cmake \
	./usr/share/man/man8/herdd.8 ./usr/lib/systemd/system/herdd.service \
	./usr/lib/systemd/system/herd.socket ./usr/lib/sysusers.d/herd.conf \
	./usr/lib/tmpfiles.d/herd.conf ./etc/herd/herd.json ./usr/lib/python3/dist-packages/herd/client.py; do
	grep -q " $f\$" "$tmp/contents" || grep -q " $f -> " "$tmp/contents" ||
		{ echo "the .deb lacks $f"; exit 1; }
done
dpkg-deb --ctrl-tarfile "$deb" | tar -t | grep -q conffiles || { echo "no conffiles"; exit 1; }

# install
installed=1
dpkg_locked dpkg -i "$deb"
dpkg-query -W -f='${Status}' herd | grep -q "install ok installed" || { echo "not installed"; exit 1; }
if command -v systemd-sysusers >/dev/null 2>&1; then
	getent group herd >/dev/null || { echo "postinst made no herd group"; exit 1; }
	getent passwd herd >/dev/null || { echo "postinst made no herd user"; exit 1; }
fi
grep -q "^ExecStart=/usr/bin/herdd --config /etc/herd/herd.json " /usr/lib/systemd/system/herdd.service
# the shipped configuration parses; it names no model yet, and herdd says so
rc=0
/usr/bin/herdd --config /etc/herd/herd.json --socket "$tmp/none.sock" >"$tmp/none.log" 2>&1 || rc=$?
[ $rc -eq 1 ] && grep -q "no model configured" "$tmp/none.log" ||
	{ echo "herdd on the shipped config: exit $rc"; cat "$tmp/none.log"; exit 1; }

# the installed broker serves
/usr/bin/herd mkmodel --shape mini -t Q8_0 -o "$tmp/mini.gguf" --seed 11 >/dev/null 2>&1
sock=$tmp/herd.sock
/usr/bin/herdd --model "$model=$tmp/mini.gguf" --socket "$sock" --state-dir "$tmp/state" \
	--threads 2 >"$tmp/herdd.log" 2>&1 &
pid=$!
i=0
until /usr/bin/herdctl --socket "$sock" status >"$tmp/status" 2>/dev/null; do
	i=$((i + 1))
	[ $i -lt 300 ] && kill -0 "$pid" 2>/dev/null || { echo "installed herdd does not serve"; cat "$tmp/herdd.log"; exit 1; }
	sleep 0.1
done
grep -q "^socket  *$sock\$" "$tmp/status" || { echo "herdctl status:"; cat "$tmp/status"; exit 1; }
out=$(/usr/bin/herd bench serve --socket "$sock" --model-name "$model" --agents 2 --requests 1 \
	--gen-len 4 --prompt-len 8 2>/dev/null)
echo "$out" | grep -q '"requests_ok":2,' || { echo "bench serve through the installed herdd: $out"; exit 1; }
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c "import msgpack" 2>/dev/null; then
	/usr/bin/python3 -c "
import herd, sys
assert herd.__file__.startswith('/usr/lib/python3/dist-packages/'), herd.__file__
with herd.connect(sys.argv[1]) as c:
    r = c.generate('Hello', max_tokens=4)
    assert r.n_gen == 4 and r.reason == 'length', r
" "$sock"
fi
kill -TERM "$pid"
wait "$pid" || { echo "installed herdd did not stop cleanly"; exit 1; }
pid=

# purge
dpkg_locked dpkg --purge herd
installed=
! dpkg-query -W -f='${Status}' herd 2>/dev/null | grep -q "install ok installed" || { echo "still installed"; exit 1; }
for f in /usr/bin/herdd /usr/lib/libherd.so.0 /etc/herd/herd.json /usr/lib/systemd/system/herdd.service; do
	[ ! -e "$f" ] || { echo "$f left after purge"; exit 1; }
done
echo "the .deb builds, installs, serves through the installed herdd and purges cleanly"
