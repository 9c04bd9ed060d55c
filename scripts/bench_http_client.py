#!/usr/bin/env python3
"""N concurrent streaming clients of herdd's OpenAI endpoint (POST
/v1/completions with token-id prompts, greedy, stream with usage), one
process each (as `herd bench serve` runs one agent process per stream over
the socket): each sends K requests one after the other (a closed loop). Prints one JSON object: requests, generated tokens,
wall time, aggregate gen_tok_s, TTFT / TPOT / latency p50/p95/p99 in ms
(client side: TTFT = request sent to the first token's bytes, TPOT = the
gaps between later tokens). Python's standard library only.

  bench_http_client.py URL MODEL [--streams 16] [--requests 4]
                       [--prompt-len 32] [--gen-len 32] [--n-vocab 2048]
"""
import argparse
import http.client
import json
import random
import sys
import multiprocessing
import time
import urllib.parse


def pct(v, q):
    if not v:
        return 0.0
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))]


def pcts(v):
    return {"n": len(v), "p50": pct(v, 0.50), "p95": pct(v, 0.95), "p99": pct(v, 0.99)}


def one_request(conn, model, ids, gen_len, out):
    body = json.dumps({"model": model, "prompt": ids, "max_tokens": gen_len, "temperature": 0,
                       "stream": True, "stream_options": {"include_usage": True}})
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json",
                                                    "X-Herd-Agent": multiprocessing.current_process().name})
    resp = conn.getresponse()
    if resp.status != 200:
        out["errors"] += 1
        print(f"bench_http_client: HTTP {resp.status}: {resp.read()[:300]!r}", file=sys.stderr)
        return
    times, usage = [], None
    buf = b""
    while True:
        chunk = resp.read1(65536)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            data = ev[6:] if ev.startswith(b"data: ") else b""
            if not data or data == b"[DONE]":
                continue
            o = json.loads(data)
            if o.get("usage"):
                usage = o["usage"]
            elif o["choices"] and o["choices"][0].get("text"):
                times.append(time.perf_counter())
    t1 = time.perf_counter()
    if not usage:
        out["errors"] += 1
        return
    out["tokens"] += usage["completion_tokens"]
    out["ok"] += 1
    if times:
        out["ttft"].append((times[0] - t0) * 1e3)
        out["tpot"].extend((b - a) * 1e3 for a, b in zip(times, times[1:]))
    out["latency"].append((t1 - t0) * 1e3)


def client(url, model, args, seed, q, go):
    u = urllib.parse.urlparse(url)
    go.wait()  # every process is up: their start-up is not timed
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    rng = random.Random(seed)
    mine = {"ok": 0, "errors": 0, "tokens": 0, "ttft": [], "tpot": [], "latency": []}
    for _ in range(args.requests):
        ids = [rng.randrange(3, args.n_vocab) for _ in range(args.prompt_len)]
        try:
            one_request(conn, model, ids, args.gen_len, mine)
        except (OSError, http.client.HTTPException, ValueError) as e:
            print(f"bench_http_client: {type(e).__name__}: {e}", file=sys.stderr)
            mine["errors"] += 1
            conn.close()
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    q.put(mine)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("model")
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--gen-len", type=int, default=32)
    ap.add_argument("--n-vocab", type=int, default=2048)
    args = ap.parse_args()
    out = {"ok": 0, "errors": 0, "tokens": 0, "ttft": [], "tpot": [], "latency": []}
    q, go = multiprocessing.Queue(), multiprocessing.Event()
    procs = [multiprocessing.Process(target=client, name=f"bench{i}",
                                     args=(args.url, args.model, args, 1000 + i, q, go))
             for i in range(args.streams)]
    for p in procs:
        p.start()
    time.sleep(0.5)
    t0 = time.perf_counter()
    go.set()
    for _ in procs:
        mine = q.get()
        for k in ("ok", "errors", "tokens"):
            out[k] += mine[k]
        for k in ("ttft", "tpot", "latency"):
            out[k].extend(mine[k])
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    json.dump({"streams": args.streams, "requests_per_stream": args.requests,
               "prompt_len": args.prompt_len, "gen_len": args.gen_len,
               "requests_ok": out["ok"], "errors": out["errors"], "tokens_gen": out["tokens"],
               "wall_s": wall, "gen_tok_s": out["tokens"] / wall if wall > 0 else 0,
               "ttft_ms": pcts(out["ttft"]), "tpot_ms": pcts(out["tpot"]),
               "latency_ms": pcts(out["latency"])}, sys.stdout)
    print()
    return 0 if out["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
