#!/usr/bin/env python3
"""The Python client (python/herd) against a real herdd on a mini model.

usage: check_python_client.py HERD_BIN HERDD_BIN   (python/ on PYTHONPATH)

Blocking client: models from the welcome, greedy generate equal byte for
byte to `herd run --temp 0`, streamed pieces adding up to the same text, two
streams read side by side on one connection, cancel, stop strings, chat
(plain and streamed), admin status, the broker's errors (unknown model,
token out of the vocabulary) and argument checks. asyncio client: concurrent
generates, a stream, cancel, chat. Protocol checks against a socket server
of the test's own that sends bad frames (too long, a key missing, trailing
bytes, not a map). The package itself: pyproject.toml builds a wheel
offline (pip wheel --no-index, when pip and setuptools are present) that
installs and imports. Exits 77 without msgpack."""
import asyncio
import glob
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

try:
    import msgpack
    import herd
    import herd.aio
except ImportError as e:
    print(f"{e} (Debian: apt-get install python3-msgpack): skipped")
    sys.exit(77)

PROMPT = "Hello world"
N = 8


def as_bytes(s):
    return s.encode("utf-8", "surrogateescape")


def start_broker(herdd, model, tmp, name):
    sock = os.path.join(tmp, "herd.sock")
    log = open(os.path.join(tmp, "herdd.log"), "wb")
    p = subprocess.Popen([herdd, "--model", f"{name}={model}", "--socket", sock, "--state-dir",
                          os.path.join(tmp, "state"), "--threads", "2", "--max-batch", "8"],
                         stdout=log, stderr=log)
    for _ in range(600):
        if p.poll() is not None:
            raise SystemExit(f"herdd exited ({p.returncode}): {open(log.name).read()}")
        try:
            herd.connect(sock, timeout=5).close()
            return p, sock
        except (herd.HerdError, OSError):
            time.sleep(0.1)
    raise SystemExit("herdd did not start listening")


def check_blocking(sock, name, want):
    with herd.connect(sock, name="py-test", unicode_errors="surrogateescape") as c:
        ms = c.models()
        assert [m.name for m in ms] == [name] and ms[0].n_vocab == 2048 and ms[0].n_ctx > 0, ms
        r = c.generate(PROMPT, max_tokens=N)
        assert as_bytes(r.text) == want and r.reason == "length" and r.n_gen == N, r
        assert r.n_prompt > 1 and r.t_total_ms >= r.t_first_ms > 0, r
        s = c.stream(PROMPT, max_tokens=N)
        pieces = list(s)
        assert "".join(p.text for p in pieces) == r.text == s.result.text, (pieces, r)
        assert len(pieces) in (N, N + 1) and s.result.n_gen == N, (len(pieces), s.result)
        a, b = c.stream(PROMPT, max_tokens=N, cache=False), c.stream(PROMPT, max_tokens=N, seed=0)
        ta, tb = [], []
        for pa, pb in zip(a, b):  # read side by side: frames of the other wait in its queue
            ta.append(pa.text)
            tb.append(pb.text)
        ta += [p.text for p in a]
        tb += [p.text for p in b]
        assert "".join(ta) == "".join(tb) == r.text, (ta, tb)
        check_cancel_stop(c, r)
        check_chat(c)
        st = c.admin("status")
        assert isinstance(st, dict) and st["pid"] > 0, st
        check_errors(c, name)


def check_cancel_stop(c, r):
    s = c.stream(PROMPT, max_tokens=100000, cache=False)
    first = next(s)
    s.cancel()
    rest = list(s)
    assert s.result.reason == "cancel" and s.result.n_gen < 100000, s.result
    assert s.result.text == first.text + "".join(p.text for p in rest)
    with c.stream(PROMPT, max_tokens=100000, cache=False) as s:  # given up after one piece
        next(s)
    assert s.id not in c._queues and c.generate(PROMPT, max_tokens=N).text == r.text
    stop = r.text[3:6]
    rs = c.generate(PROMPT, max_tokens=N, stop=[stop])
    assert rs.reason == "stop" and rs.text == r.text[:r.text.index(stop)], (rs, stop)


def check_chat(c):
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi!"}]
    r = c.chat(msgs, max_tokens=6)
    s = c.chat(msgs, max_tokens=6, stream=True)
    assert s.text() == r.text and r.n_gen == 6 and r.n_prompt > 5, r
    plain = c.generate("Hi!", max_tokens=6)
    assert plain.n_prompt < r.n_prompt, (plain, r)


def check_errors(c, name):
    for kw, code in ((dict(model="no-such-model"), "HERD_E_MISSING"),
                     (dict(prompt=None, tokens=[1, 2047, 5000]), "HERD_E_RANGE")):
        try:
            c.generate(kw.pop("prompt", PROMPT), **kw)
            raise AssertionError(f"{kw}: no error")
        except herd.HerdError as e:
            assert e.name == code and e.request_id, (e, e.name)
    for kw in (dict(stop="x"), dict(max_tokens=-1), dict(temperature="hot"), dict(tokens=[1]),
               dict(seed=1 << 64)):
        try:
            c.generate(PROMPT, **kw)
            raise AssertionError(f"{kw}: accepted")
        except ValueError as e:
            assert str(e), kw
    assert c.generate(PROMPT, max_tokens=2).n_gen == 2  # the connection is still good


async def check_async(sock, want):
    async with herd.aio.connect(sock, name="py-async", unicode_errors="surrogateescape") as c:
        rs = await asyncio.gather(*(c.generate(PROMPT, max_tokens=N, cache=False)
                                    for _ in range(6)))
        assert all(as_bytes(r.text) == want for r in rs), rs
        assert len({r.id for r in rs}) == 6
        s = c.stream(PROMPT, max_tokens=N)
        assert as_bytes(await s.text()) == want and s.result.n_gen == N
        s = c.stream(PROMPT, max_tokens=100000, cache=False)
        async for _ in s:
            await s.cancel()
        assert s.result.reason == "cancel", s.result
        async with c.stream(PROMPT, max_tokens=100000, cache=False) as s:
            await s.__anext__()
        assert (await c.generate(PROMPT, max_tokens=N)).n_gen == N
        r = await c.chat([{"role": "user", "content": "Hi!"}], max_tokens=4)
        t = await c.chat_stream([{"role": "user", "content": "Hi!"}], max_tokens=4).text()
        assert r.text == t and r.n_gen == 4, (r, t)
        assert (await c.admin("status"))["pid"] > 0
        try:
            await c.generate(PROMPT, model="nope")
            raise AssertionError("no error")
        except herd.HerdError as e:
            assert e.name == "HERD_E_MISSING", e
        assert [m.name for m in c.models()]


def fake_broker(path, body):
    """A socket server that answers hello with one frame of the given bytes."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)

    def serve():
        conn, _ = srv.accept()
        with conn:
            n = struct.unpack("<I", conn.recv(4))[0]
            while n > 0:
                n -= len(conn.recv(n))
            conn.sendall(body)
            time.sleep(0.5)
        srv.close()
    t = threading.Thread(target=serve)
    t.start()
    return t


def check_protocol(tmp):
    welcome = {"t": "welcome", "v": 1, "agent": 1, "models": [], "max_frame": 1 << 20,
               "max_tokens": 4096}
    def frame(b):
        return struct.pack("<I", len(b)) + b
    cases = {
        "over the limit": struct.pack("<I", 64 << 20),
        "without its 'agent'": frame(msgpack.packb({k: v for k, v in welcome.items()
                                                    if k != "agent"})),
        "not one msgpack map": frame(msgpack.packb(welcome) + b"\xc0"),
        "not a map": frame(msgpack.packb([1, 2])),
        "wrong type": frame(msgpack.packb(dict(welcome, max_frame="big"))),
        "unknown type": frame(msgpack.packb(dict(welcome, t="bogus"))),
    }
    for i, (want, body) in enumerate(cases.items()):
        path = os.path.join(tmp, f"fake{i}.sock")
        t = fake_broker(path, body)
        try:
            herd.connect(path, timeout=10)
            raise AssertionError(f"{want}: accepted")
        except herd.ProtocolError as e:
            assert want in str(e), (want, str(e))
        t.join()
    try:
        herd.connect(os.path.join(tmp, "none.sock"))
        raise AssertionError("connected to nothing")
    except herd.HerdError as e:
        assert "no broker is running" in e.msg, e


def check_wheel(tmp):
    """pyproject.toml builds a wheel with no index, it installs and imports."""
    import importlib.util
    if not all(importlib.util.find_spec(m) for m in ("pip", "setuptools")):
        print("pip or setuptools missing: wheel not built")
        return
    src = os.path.join(tmp, "src")
    shutil.copytree(os.path.join(os.path.dirname(herd.__file__), ".."), src,
                    ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-cache-dir"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w",
                          os.path.join(tmp, "wheel"), src], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    whl = glob.glob(os.path.join(tmp, "wheel", "herd_client-*.whl"))
    assert len(whl) == 1, whl
    target = os.path.join(tmp, "site")
    subprocess.run(pip + ["install", "--no-deps", "--no-index", "--target", target, whl[0]],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = subprocess.run([sys.executable, "-c", "import herd, herd.aio; print(herd.__file__)"],
                         env=dict(os.environ, PYTHONPATH=target), check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    assert out.startswith(target), out


def main():
    herd_bin, herdd = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="herd-py-")
    name = f"py{os.getpid()}"
    broker = None
    try:
        model = os.path.join(tmp, "mini.gguf")
        subprocess.run([herd_bin, "mkmodel", "--shape", "mini", "-t", "Q8_0", "-o", model,
                        "--seed", "11"], check=True, stdout=subprocess.DEVNULL)
        want = subprocess.run([herd_bin, "run", "-m", model, "-p", PROMPT, "-n", str(N),
                               "--temp", "0"], check=True, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL).stdout
        assert want.endswith(b"\n")
        want = want[:-1]
        broker, sock = start_broker(herdd, model, tmp, name)
        check_blocking(sock, name, want)
        asyncio.run(check_async(sock, want))
        check_protocol(tmp)
        check_wheel(tmp)
        print("python client: blocking and asyncio against herdd, protocol checks")
        return 0
    finally:
        if broker is not None:
            broker.send_signal(signal.SIGTERM)
            try:
                broker.wait(60)
            except subprocess.TimeoutExpired:
                broker.kill()
                broker.wait()
        for seg in glob.glob(f"/dev/shm/herd.{name}.*"):
            os.unlink(seg)
        shutil.rmtree(tmp)


if __name__ == "__main__":
    sys.exit(main())
