#!/usr/bin/env python3
"""Plots the size/quality table scripts/quant_curve.sh prints (markdown, on
stdin or a file) as an SVG: file bytes against mean KL (log scale), llama.cpp's
points apart from herd's. usage: quant_plot.py TABLE.md OUT.svg"""
import math
import re
import sys


def rows(lines):
    for line in lines:
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if len(cells) < 4 or not re.fullmatch(r'\d+', cells[1]):
            continue
        yield cells[0].replace('*', ''), int(cells[1]), float(cells[3])


def main():
    pts = list(rows(open(sys.argv[1])))
    W, H, L, B = 760, 460, 70, 50
    xs = [p[1] for p in pts]
    x0, x1 = min(xs) * 0.95, max(xs) * 1.05
    y0, y1 = math.log10(min(p[2] for p in pts if p[2] > 0) / 2), math.log10(max(p[2] for p in pts) * 2)
    X = lambda v: L + (v - x0) / (x1 - x0) * (W - L - 20)
    Y = lambda v: H - B - (math.log10(max(v, 1e-6)) - y0) / (y1 - y0) * (H - B - 20)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<line x1="{L}" y1="{H-B}" x2="{W-20}" y2="{H-B}" stroke="black"/>',
           f'<line x1="{L}" y1="20" x2="{L}" y2="{H-B}" stroke="black"/>',
           f'<text x="{W/2}" y="{H-12}" text-anchor="middle">file bytes</text>',
           f'<text x="16" y="{H/2}" transform="rotate(-90 16 {H/2})" text-anchor="middle">mean KL to F32 (log)</text>']
    for e in range(math.ceil(y0), math.floor(y1) + 1):
        out.append(f'<text x="{L-6}" y="{Y(10**e)+4}" text-anchor="end">1e{e}</text>')
        out.append(f'<line x1="{L}" y1="{Y(10**e)}" x2="{W-20}" y2="{Y(10**e)}" stroke="#ddd"/>')
    for v in range(int(x0 // 100000 + 1) * 100000, int(x1), 100000):
        out.append(f'<text x="{X(v)}" y="{H-B+14}" text-anchor="middle">{v//1000}k</text>')
    out.append(f'<line x1="{X(304224)}" y1="20" x2="{X(304224)}" y2="{H-B}" stroke="#999" stroke-dasharray="4"/>')
    out.append(f'<line x1="{L}" y1="{Y(0.05)}" x2="{W-20}" y2="{Y(0.05)}" stroke="#999" stroke-dasharray="4"/>')
    out.append(f'<text x="{X(304224)+4}" y="32">Q4_K_M size</text><text x="{W-24}" y="{Y(0.05)-4}" text-anchor="end">KL 0.05</text>')
    for name, size, kl in pts:
        color = '#c0392b' if 'llama.cpp' in name else '#2471a3'
        out.append(f'<circle cx="{X(size):.1f}" cy="{Y(kl):.1f}" r="4" fill="{color}"><title>{name}: {size} bytes, KL {kl}</title></circle>')
    out.append(f'<circle cx="{L+20}" cy="30" r="4" fill="#c0392b"/><text x="{L+28}" y="34">llama.cpp types (and standard GGUF types it refuses)</text>')
    out.append(f'<circle cx="{L+20}" cy="46" r="4" fill="#2471a3"/><text x="{L+28}" y="50">herd</text>')
    out.append('</svg>')
    open(sys.argv[2], 'w').write('\n'.join(out) + '\n')


if __name__ == '__main__':
    main()
