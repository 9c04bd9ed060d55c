#!/usr/bin/env python3
"""Writes kernels/iq_tables.c: the codebooks of ggml's i-quant types, copied
as data from llama.cpp's ggml/src/ggml-common.h (MIT licence).

    python3 scripts/gen_iq_tables.py /path/to/ggml-common.h > kernels/iq_tables.c

The values are the format's definition (a file quantized by llama.cpp only
decodes with exactly these grids); the code that uses them is herd's own.
"""
import re
import sys

TABLES = [  # (ggml name, herd name, C type, count)
    ("ksigns_iq2xs", "kern_iq_ksigns", "uint8_t", 128),
    ("iq2xxs_grid", "kern_iq2xxs_grid", "uint64_t", 256),
    ("iq2xs_grid", "kern_iq2xs_grid", "uint64_t", 512),
    ("iq2s_grid", "kern_iq2s_grid", "uint64_t", 1024),
    ("iq3xxs_grid", "kern_iq3xxs_grid", "uint32_t", 256),
    ("iq3s_grid", "kern_iq3s_grid", "uint32_t", 512),
    ("iq1s_grid", "kern_iq1s_grid", "uint64_t", 2048),
]


def table(src, name):
    m = re.search(r"GGML_TABLE_BEGIN\(\w+,\s*%s,\s*\w+\)(.*?)GGML_TABLE_END\(\)" % name, src, re.S)
    if not m:
        sys.exit("table %s not found" % name)
    return [v for v in re.split(r"[\s,]+", m.group(1)) if v]


def main():
    src = open(sys.argv[1]).read()
    out = [
        "/* Codebooks of ggml's i-quant types (IQ2_XXS IQ2_XS IQ2_S IQ3_XXS IQ3_S",
        " * IQ1_S/IQ1_M), copied as data from llama.cpp's ggml/src/ggml-common.h",
        " * (MIT licence, build 4748, February 2025) by scripts/gen_iq_tables.py.",
        " * Do not edit: regenerate. Grid entries pack 8 (or 4) element",
        " * magnitudes as bytes, element 0 in the lowest byte; ksigns[k] is the",
        " * 7-bit sign pattern k with its parity as bit 7. */",
        "#include \"iquant.h\"",
        "",
    ]
    for gname, hname, ctype, count in TABLES:
        vals = table(src, gname)
        if len(vals) != count:
            sys.exit("%s: %d values, expected %d" % (gname, len(vals), count))
        per = 16 if ctype == "uint8_t" else (8 if ctype == "uint32_t" else 4)
        out.append("const %s %s[%d] = {" % (ctype, hname, count))
        for i in range(0, count, per):
            out.append("\t" + ", ".join(vals[i:i + per]) + ",")
        out.append("};")
        out.append("")
    sys.stdout.write("\n".join(out))


if __name__ == "__main__":
    main()
