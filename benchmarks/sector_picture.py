"""The sector found on 20 HC18 and 20 BUSI images, drawn over each image in one grid PNG.

    .venv/bin/python benchmarks/sector_picture.py --out /tmp/sectors.png [--big DIR]

Reads ``../shared/data`` (relative to the repository) and skips cleanly when it is missing.
The picture shows images from the shared data, so it must stay outside the repository: pass
``--out`` to a path outside it (the default, ``docs/images/sectors.png``, must never be committed).
Each cell is numbered (H1-H20, B1-B20) and says the fitted kind and confidence, so a reader can
say which fits they would correct by hand. ``--big DIR`` also writes one full-size overlay per
image, for looking closely.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from usgen_desktop.core.sector import detect_sector

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CELL_W, CELL_H = 200, 150


def pick(folder: Path, pattern: str, n: int) -> list[Path]:
    """``n`` files spread evenly over the sorted folder (not just the first ones)."""
    files = sorted(folder.glob(pattern))
    if not files:
        return []
    idx = np.linspace(0, len(files) - 1, n).round().astype(int)
    return [files[i] for i in idx]


def overlay(gray: np.ndarray, fit, label: str, thickness: int = 1) -> np.ndarray:
    rgb = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    pts = np.rint(fit.sector.outline(160)).astype(np.int32)
    cv2.polylines(rgb, [pts], True, (0, 230, 255), thickness, cv2.LINE_AA)
    for x, y in fit.sector.handles().values():
        if 0 <= x < gray.shape[1] and 0 <= y < gray.shape[0]:
            cv2.circle(rgb, (int(round(x)), int(round(y))), 2 * thickness + 1, (0, 0, 255), -1)
    text = f"{label} {fit.kind[:5]} {fit.confidence:.2f}"
    cv2.putText(rgb, text, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(rgb, text, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (80, 255, 80), 1, cv2.LINE_AA)
    return rgb


def cell(gray: np.ndarray, fit, label: str) -> np.ndarray:
    """The overlay letterboxed into a fixed cell, keeping the image's aspect ratio."""
    h, w = gray.shape
    s = min(CELL_W / w, CELL_H / h)
    small = cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))),
                       interpolation=cv2.INTER_AREA)
    from dataclasses import replace

    sec = fit.sector
    scaled = replace(sec, apex_x=sec.apex_x * s, apex_y=sec.apex_y * s,
                     inner_radius=sec.inner_radius * s, outer_radius=sec.outer_radius * s,
                     x0=sec.x0 * s, y0=sec.y0 * s, x1=sec.x1 * s, y1=sec.y1 * s)
    small_fit = type(fit)(scaled, fit.mask, fit.confidence)
    out = np.full((CELL_H, CELL_W, 3), 40, np.uint8)
    ov = overlay(small, small_fit, label)
    y0, x0 = (CELL_H - ov.shape[0]) // 2, (CELL_W - ov.shape[1]) // 2
    out[y0 : y0 + ov.shape[0], x0 : x0 + ov.shape[1]] = ov
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "sectors.png")
    ap.add_argument("--big", type=Path, default=None, help="also write full-size overlays here")
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"skip: {DATA} not found", file=sys.stderr)
        return 0
    hc = pick(DATA / "hc18" / "head" / "images", "*.png", 20)
    busi = [p for k in ("benign", "malignant", "normal")
            for p in pick(DATA / "busi" / k / "images", "*.png", {"benign": 8}.get(k, 6))]
    cells = []
    for prefix, files in (("H", hc), ("B", busi)):
        for i, path in enumerate(files, 1):
            gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if gray is None:
                continue
            fit = detect_sector(gray)
            label = f"{prefix}{i}"
            print(f"{label}\t{path.name}\t{fit.kind}\t{fit.confidence:.3f}\t{fit.sector.to_dict()}")
            cells.append(cell(gray, fit, label))
            if args.big:
                args.big.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(args.big / f"{label}.png"), overlay(gray, fit, label))
    if not cells:
        print("skip: no images found", file=sys.stderr)
        return 0
    cols = 8
    while len(cells) % cols:
        cells.append(np.full_like(cells[0], 40))
    rows = [np.hstack(cells[i : i + cols]) for i in range(0, len(cells), cols)]
    grid = np.vstack(rows)
    # Quantised grey keeps the PNG under ~600 KB without JPEG blur on the outlines.
    grid = (grid // 8) * 8
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), grid, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
