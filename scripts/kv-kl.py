#!/usr/bin/env python3
"""KL divergence of herd's logits against llama-perplexity's, per KV cache type.

llama-perplexity --kl-divergence-base FILE saves, for each chunk of n_ctx
tokens (BOS first), the log-probabilities it computed at positions
n_ctx/2 .. n_ctx-2 (16-bit quantized, per row scale and minimum). This script
feeds herd the same chunks (`herd logits --tokens`, with --kv-type) and prints
one JSON object per herd KV type: the mean / max KL(llama.cpp || herd) over the
same positions, and how often the top token agrees; with --self-ref F16 the
KL of herd's KV type against herd's own f16 KV as well.

usage: kv-kl.py HERD MODEL LLAMA.kld [--kv-types f16,q8_0,q4_0] [--chunks N]
"""
import argparse, json, os, struct, subprocess, sys, tempfile

import numpy as np


def read_kld(path):
    with open(path, "rb") as f:
        if f.read(8) != b"_logits_":
            sys.exit(f"{path}: not a llama-perplexity log-probability file")
        n_ctx, n_vocab, n_chunk = struct.unpack("<Iii", f.read(12))
        toks = np.frombuffer(f.read(4 * n_ctx * n_chunk), dtype="<i4").reshape(n_chunk, n_ctx)
        nv = 2 * ((n_vocab + 1) // 2) + 4
        first = n_ctx // 2
        rows = n_ctx - 1 - first
        lp = []
        for _ in range(n_chunk):
            raw = np.frombuffer(f.read(2 * nv * rows), dtype="<u2").reshape(rows, nv)
            hdr = raw[:, :4].copy().view("<f4")  # scale, min_log_prob
            lp.append(hdr[:, 1:2] + hdr[:, 0:1] * raw[:, 4:4 + n_vocab].astype(np.float32))
        return n_ctx, n_vocab, toks, first, lp


def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def kl(ref_lp, ours_lp):
    p = np.exp(ref_lp)
    p /= p.sum(axis=1, keepdims=True)  # the 16-bit rows sum to 1 only nearly
    return (p * (np.log(p) - ours_lp)).sum(axis=1)


def herd_logits(herd, model, chunk, kv, tmp):
    tp, out = os.path.join(tmp, "chunk.tokens"), os.path.join(tmp, "out.logits")
    chunk.astype("<i4").tofile(tp)
    subprocess.run([herd, "logits", "-m", model, "--tokens", tp, "--len", str(len(chunk)), "-o", out,
                    "--kv-type", kv],
                   check=True, stderr=subprocess.DEVNULL)
    return np.fromfile(out, dtype="<f4").reshape(len(chunk), -1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("herd"), ap.add_argument("model"), ap.add_argument("kld")
    ap.add_argument("--kv-types", default="f16,q8_0,q4_0")
    ap.add_argument("--chunks", type=int, default=0)
    a = ap.parse_args()
    n_ctx, n_vocab, toks, first, lp = read_kld(a.kld)
    n_chunk = len(lp) if a.chunks <= 0 else min(a.chunks, len(lp))
    kvs = a.kv_types.split(",")
    own = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kv in kvs:
            kls, agree, self_kls = [], 0, []
            own[kv] = []
            for c in range(n_chunk):
                chunk = toks[c].copy()
                chunk[0] = 1  # llama-perplexity puts BOS first in every chunk
                ours = log_softmax(herd_logits(a.herd, a.model, chunk, kv, tmp)[first:n_ctx - 1])
                own[kv].append(ours)
                kls.append(kl(lp[c], ours))
                agree += int((lp[c].argmax(axis=1) == ours.argmax(axis=1)).sum())
                if kv != "f16" and "f16" in own:
                    self_kls.append(kl(own["f16"][c], ours))
            k = np.concatenate(kls)
            r = {"kv_type": kv, "reference": os.path.basename(a.kld), "chunks": n_chunk,
                 "positions": int(k.size), "mean_kl": float(k.mean()), "max_kl": float(k.max()),
                 "top1_agree": agree / k.size}
            if self_kls:
                s = np.concatenate(self_kls)
                r["mean_kl_vs_herd_f16"] = float(s.mean())
                r["max_kl_vs_herd_f16"] = float(s.max())
            print(json.dumps(r))


if __name__ == "__main__":
    main()
