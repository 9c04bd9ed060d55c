#!/usr/bin/env python3
"""N concurrent streamed requests from Python (herd.aio) against a running
herdd; one JSON object: tokens/s, TTFT and TPOT percentiles, measured in the
client as `herd bench serve --stream` measures them in its agents.

usage: bench_streams.py --socket PATH [--model NAME] [--streams 16]
                        [--connections 16] [--prompt-len 32] [--gen-len 32] [--seed 1]

Prompts are token ids (random, one per stream, so no two requests merge),
greedy, response cache off. --connections C spreads the streams over C
connections (default: one each, as herd bench serve's agent processes)."""
import argparse
import asyncio
import json
import random
import time

import herd.aio


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, max(0, int(q * len(v) + 0.999999) - 1))] if v else 0.0


async def one(c, toks, gen_len, out):
    t0 = time.monotonic()
    times = []
    s = c.stream(None, tokens=toks, max_tokens=gen_len, cache=False)
    async for _ in s:  # as libherd's agents: every piece's arrival
        times.append(time.monotonic())
    ttft = (times[0] - t0) * 1e3 if times else 0.0
    tpot = (times[-1] - times[0]) * 1e3 / (len(times) - 1) if len(times) > 1 else 0.0
    out.append({"n_gen": s.result.n_gen, "ttft_ms": ttft, "tpot_ms": tpot, "latency_ms": (time.monotonic() - t0) * 1e3})


async def main(a):
    rng = random.Random(a.seed)
    clients = [await herd.aio.connect(a.socket, name=f"py-bench-{i}") for i in range(a.connections)]
    model = a.model or clients[0].default_model()
    n_vocab = next(m.n_vocab for m in clients[0].models() if m.name == model)
    prompts = [[rng.randrange(3, n_vocab) for _ in range(a.prompt_len)] for _ in range(a.streams)]
    out = []
    t0 = time.monotonic()
    await asyncio.gather(*(one(clients[i % a.connections], p, a.gen_len, out)
                           for i, p in enumerate(prompts)))
    wall = time.monotonic() - t0
    for c in clients:
        await c.close()
    gen = sum(r["n_gen"] for r in out)
    rep = {"client": "python herd.aio", "streams": a.streams, "connections": a.connections,
           "prompt_len": a.prompt_len, "gen_len": a.gen_len, "wall_s": wall, "gen_tokens": gen,
           "gen_tok_s": gen / wall if wall > 0 else 0.0}
    for k in ("ttft_ms", "tpot_ms", "latency_ms"):
        v = [r[k] for r in out]
        rep[k] = {"n": len(v), "p50": pct(v, 0.5), "p95": pct(v, 0.95), "p99": pct(v, 0.99)}
    print(json.dumps(rep))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--socket", required=True)
    p.add_argument("--model")
    p.add_argument("--streams", type=int, default=16)
    p.add_argument("--connections", type=int, default=0)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--gen-len", type=int, default=32)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    if not 1 <= a.streams <= 4096 or a.connections < 0 or a.prompt_len < 1 or a.gen_len < 1:
        p.error("--streams in [1, 4096], --prompt-len and --gen-len >= 1")
    a.connections = min(a.connections or a.streams, a.streams)
    asyncio.run(main(a))
