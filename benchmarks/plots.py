"""PNG bar charts of the benchmark tables for docs/benchmarks.md (no matplotlib needed).

Reads the Markdown tables that the benchmark scripts print (save their output to a file) and
draws one horizontal bar per row with its value written at the bar's end, plus a dashed
target line. Bars are in table order; the docs list the rows next to each image.

    python benchmarks/quality.py > quality.log
    python benchmarks/plots.py quality.log score docs/benchmarks/quality.png --target 0.85
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nbseg._png import encode_png

# 3 × 5 pixel glyphs for numbers
FONT = {
    "0": "111101101101111",
    "1": "010110010010111",
    "2": "111001111100111",
    "3": "111001111001111",
    "4": "101101111001001",
    "5": "111100111001111",
    "6": "111100111101111",
    "7": "111001001001001",
    "8": "111101111101111",
    "9": "111101111001111",
    ".": "000000000000010",
    "-": "000000111000000",
    "%": "101001010100101",
    " ": "000000000000000",
}
COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]


def read_table(path: str | Path) -> list[dict[str, str]]:
    """The last Markdown table in a log file, as dict rows."""
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in Path(path).read_text().splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    if not blocks:
        raise SystemExit(f"no Markdown table in {path}")
    lines = blocks[-1]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(head, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[2:]]


def text(img: np.ndarray, s: str, y: int, x: int, scale: int = 2) -> None:
    for ch in s:
        glyph = FONT.get(ch, FONT[" "])
        g = np.array([int(b) for b in glyph], dtype=bool).reshape(5, 3)
        g = np.kron(g, np.ones((scale, scale), dtype=bool))
        h, w = g.shape
        if y + h <= img.shape[0] and x + w <= img.shape[1]:
            img[y : y + h, x : x + w][g] = 0
        x += w + scale


def bar_chart(values: list[float], groups: list[int], target: float | None, width=480) -> bytes:
    bar_h, gap = 16, 6
    height = len(values) * (bar_h + gap) + gap
    img = np.full((height, width, 3), 255, np.uint8)
    top = max(max(values), target or 0) * 1.15 or 1.0
    usable = width - 70
    for i, (v, g) in enumerate(zip(values, groups)):
        y = gap + i * (bar_h + gap)
        w = max(1, int(usable * max(v, 0) / top))
        img[y : y + bar_h, 4 : 4 + w] = COLORS[g % len(COLORS)]
        text(img, f"{v:.3g}", y + 3, 8 + w)
    if target is not None:
        x = 4 + int(usable * target / top)
        img[::6, x] = (0, 0, 0)
        img[1::6, x] = (0, 0, 0)
    return encode_png(img)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("log")
    ap.add_argument("column", help="numeric column to draw")
    ap.add_argument("out")
    ap.add_argument("--group", help="column whose changes switch the bar colour")
    ap.add_argument("--target", type=float)
    args = ap.parse_args(argv)
    rows = read_table(args.log)
    values = [float(r[args.column]) for r in rows]
    groups, last, g = [], None, -1
    for r in rows:
        key = r.get(args.group) if args.group else None
        if key != last:
            g, last = g + 1, key
        groups.append(g)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_bytes(bar_chart(values, groups, args.target))
    print(f"wrote {args.out} ({len(values)} bars)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
