#!/usr/bin/env python3
"""`herd bench --report` and `herd bench serve --report` on the mini model.

usage: check_bench_report.py HERD_BIN MODEL

Runs both benchmarks with a swept variable (batch sizes, agent counts) and
checks the report directory: bench.json holds one run per value with raw
samples, every figure named in report.md exists as a real PNG (signature,
IHDR with a non-zero size, IEND) and as an SVG that parses as XML with an
<svg> root and drawn paths, and its data file has a row per run. Exits 77
when gnuplot or the model is missing."""
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

SVG_NS = "{http://www.w3.org/2000/svg}"


def check_png(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: no PNG signature"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13, f"{path}: first chunk is not IHDR"
    w, h = struct.unpack(">II", data[16:24])
    assert w > 100 and h > 100, f"{path}: {w}x{h}"
    assert data.endswith(b"IEND\xaeB`\x82"), f"{path}: no IEND chunk at the end"


def check_svg(path, min_paths):
    root = ET.parse(path).getroot()
    assert root.tag == SVG_NS + "svg", f"{path}: root is {root.tag}"
    paths = root.findall(f".//{SVG_NS}path")
    assert len(paths) >= min_paths, f"{path}: {len(paths)} paths"
    text = " ".join("".join(t.itertext()) for t in root.iter(SVG_NS + "text"))
    return text


def check_report(d, x_key, xs, sample_keys):
    runs = json.load(open(os.path.join(d, "bench.json")))
    assert [r[x_key] for r in runs] == xs, f"{d}: runs {[r[x_key] for r in runs]}"
    for r in runs:
        for k in sample_keys:
            s = r["samples"][k]
            assert s and all(isinstance(v, (int, float)) and v >= 0 for v in s), f"{k}: {s[:5]}"
    md = open(os.path.join(d, "report.md")).read()
    figs = re.findall(r"!\[[^\]]+\]\(([\w.]+)\.svg\)", md)
    want = {f"{k}_cdf" for k in sample_keys} | {"throughput", "memory"}
    assert want <= set(figs), f"report.md figures {figs}, want {sorted(want)}"
    assert md.count("\n|") >= 2 + len(xs), "report.md: no row per run"
    for name in figs:
        check_png(os.path.join(d, name + ".png"))
        text = check_svg(os.path.join(d, name + ".svg"), 3)
        assert text.strip(), f"{name}.svg has no text (title, axes)"
        rows = [l for l in open(os.path.join(d, name + ".dat")) if l.strip() and l[0] != "#"]
        assert len(rows) >= len(xs), f"{name}.dat: {len(rows)} rows"
    for name in ("throughput", "memory"):
        xs_dat = [float(l.split()[0]) for l in open(os.path.join(d, name + ".dat")) if l[0] != "#"]
        assert xs_dat == [float(x) for x in xs], f"{name}.dat x column {xs_dat}"
    return runs


def main():
    herd, model = sys.argv[1], sys.argv[2]
    if not shutil.which("gnuplot"):
        print("gnuplot not found (apt-get install gnuplot-nox): skipped")
        return 77
    if not os.path.exists(model):
        print(f"{model} missing: skipped")
        return 77
    tmp = tempfile.mkdtemp(prefix="herd-report-")
    try:
        d = os.path.join(tmp, "engine", "sub")  # made with its parents
        subprocess.run([herd, "bench", "-m", model, "-p", "8", "-n", "6", "-r", "1", "-b", "1,3",
                        "--no-probe", "--report", d], check=True, stdout=subprocess.DEVNULL)
        runs = check_report(d, "batch", [1, 3], ["decode_step_ms"])
        assert len(runs[1]["samples"]["decode_step_ms"]) == 6
        d = os.path.join(tmp, "serve")
        out = subprocess.run([herd, "bench", "serve", "-m", model, "--agents", "1,2", "--requests",
                              "2", "--gen-len", "4", "--prompt-len", "6:10", "--stream",
                              "--report", d], check=True, stdout=subprocess.PIPE, text=True).stdout
        lines = [json.loads(l) for l in out.splitlines() if l.strip()]
        assert [l["agents"] for l in lines] == [1, 2] and all("samples" not in l for l in lines)
        runs = check_report(d, "agents", [1, 2], ["latency_ms", "ttft_ms", "tpot_ms"])
        for r in runs:
            assert len(r["samples"]["latency_ms"]) == r["requests_ok"] == 2 * r["agents"]
        bad = subprocess.run([herd, "bench", "serve", "--agents", "1,,2"], stderr=subprocess.PIPE,
                             text=True)
        assert bad.returncode == 2 and "--agents" in bad.stderr, bad.stderr
        print("bench reports: JSON, markdown, PNG and SVG figures for both benchmarks")
        return 0
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    sys.exit(main())
