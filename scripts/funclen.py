#!/usr/bin/env python3
"""Lists C functions longer than a bound (default 80 lines, braces included).

The SIMD kernel files (kernels/*_avx2.c, kernels/*_avx512.c) are exempt: their
unrolled loops read better whole. Functions are found in the project's style:
the signature starts at column 0 and the body's braces stand alone at column 0.
Exit status 1 when any function is over the bound, so CTest can run it.

usage: scripts/funclen.py [--max N] [--all] [ROOT]
  --all   print every function over the bound, SIMD files included, no failure
"""
import os
import re
import subprocess
import sys


def functions(path):
    lines = open(path, encoding="utf-8", errors="replace").read().split("\n")
    i = 0
    while i < len(lines):
        if lines[i] == "{":
            j, sig = i - 1, ""
            while j >= 0 and lines[j] and not lines[j].startswith(("}", "#", "/*", " *")):
                sig = lines[j] + " " + sig
                if not lines[j].startswith((" ", "\t")):
                    break
                j -= 1
            k = i + 1
            while k < len(lines) and lines[k] != "}":
                k += 1
            m = re.search(r"(\w+)\s*\(", sig)
            if m and "=" not in sig.split("(")[0]:
                yield m.group(1), j + 1, k - j
            i = k
        i += 1


def main(argv):
    bound, show_all, root = 80, False, "."
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == "--max":
            bound = int(args.pop(0))
        elif a == "--all":
            show_all = True
        else:
            root = a
    out = subprocess.run(["git", "ls-files", "*.c", "*.h"], cwd=root, capture_output=True,
                         text=True, check=True).stdout.split()
    simd = re.compile(r"^kernels/.*_(avx2|avx512)\.c$")
    rows = []
    for f in out:
        exempt = bool(simd.match(f))
        if exempt and not show_all:
            continue
        for name, line, n in functions(os.path.join(root, f)):
            if n > bound:
                rows.append((n, f"{f}:{line}", name, exempt))
    rows.sort(reverse=True)
    for n, where, name, exempt in rows:
        print(f"{n:5d}  {where}  {name}{'  (SIMD, exempt)' if exempt else ''}")
    bad = [r for r in rows if not r[3]]
    if bad and not show_all:
        print(f"{len(bad)} function(s) over {bound} lines", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
