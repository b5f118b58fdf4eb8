"""Lesion proposals against BUSI's real masks ("add a lesion", paper 001).

Fits the lesion shape model on a train split of BUSI (by near-duplicate ``group``, so copies
of one frame never sit on both sides), proposes as many lesions per class as the held-out split
has, on the held-out images' own sizes, and compares the distributions of area, solidity,
aspect (height / width), boundary roughness and orientation with the held-out real lesions:
two-sample Kolmogorov-Smirnov statistic and the 1-Wasserstein distance (in the statistic's own
units). The floor is the same distance between the train and held-out *real* lesions (two
samples of the same thing); an ellipse of the class's median area and aspect is the baseline a
shape model must beat.

Then proposals on every BUSI normal scan: none may fail to find room or leave the tissue.

``--write-shipped`` refits on all of BUSI and writes ``resources/lesions/busi.json``
(statistics only, no pixels). Skips cleanly when the data are not there.

    .venv/bin/python benchmarks/bench_lesions.py [--write-shipped] [--proposals-per-lesion 2]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from usgen_desktop.core.lesions import (
    STAT_NAMES,
    allowed_region,
    fit_lesion_model,
    lesion_components,
    shape_stats,
)
from usgen_desktop.errors import UsgenError

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "busi"
if not DATA.is_dir():
    DATA = Path("/work/shared/data/busi")
CLASSES = ("benign", "malignant")


def load_busi() -> list[dict]:
    rows = list(csv.DictReader(open(DATA / "manifest.csv", encoding="utf-8")))
    out = []
    for r in rows:
        if r["class"] not in CLASSES:
            continue
        img = Path(r["image"])
        mask = cv2.imread(str(DATA / img.parent.parent / "masks" / f"{img.stem}_mask.png"),
                          cv2.IMREAD_GRAYSCALE)
        out.append({"class": r["class"], "group": r["group"], "mask": (mask > 0)})
    return out


def split_by_group(rows: list[dict], held_out: float = 0.25, seed: int = 0):
    groups = sorted({r["group"] for r in rows})
    rng = np.random.default_rng(seed)
    test = set(rng.permutation(groups)[: int(round(held_out * len(groups)))])
    return [r for r in rows if r["group"] not in test], [r for r in rows if r["group"] in test]


def real_stats(rows: list[dict], klass: str) -> dict[str, np.ndarray]:
    vals = {k: [] for k in STAT_NAMES}
    for r in rows:
        if r["class"] != klass:
            continue
        for comp in lesion_components(r["mask"]):
            for k, v in shape_stats(comp).items():
                vals[k].append(v)
    return {k: np.asarray(v) for k, v in vals.items()}


def ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (largest gap between the two CDFs)."""
    grid = np.concatenate([a, b])
    fa = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    fb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())


def w1(a: np.ndarray, b: np.ndarray) -> float:
    """1-Wasserstein distance between two samples (area between the quantile functions)."""
    q = np.linspace(0, 1, 201)[1:-1]
    return float(np.mean(np.abs(np.quantile(a, q) - np.quantile(b, q))))


def ellipse_stats(shapes: list[tuple[int, int]], area: float, aspect: float,
                  n: int) -> dict[str, np.ndarray]:
    vals = {k: [] for k in STAT_NAMES}
    for i in range(n):
        h, w = shapes[i % len(shapes)]
        a = np.sqrt(area * h * w / (np.pi * aspect))  # half-width
        m = np.zeros((h, w), np.uint8)
        cv2.ellipse(m, (w // 2, h // 2), (max(1, int(a)), max(1, int(a * aspect))), 0, 0, 360,
                    1, -1)
        for k, v in shape_stats(m).items():
            vals[k].append(v)
    return {k: np.asarray(v) for k, v in vals.items()}


def on_normal_scans(model, per_class: int = 3) -> str:
    """Proposals on every BUSI normal scan at the class's usual place: how many fail, how many
    lie wholly inside the tissue mask, how many had to move to fit."""
    files = sorted((DATA / "normal" / "images").glob("*.png"))
    n = fails = inside = moved = 0
    t0 = time.perf_counter()
    for i, f in enumerate(files):
        img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        allowed = allowed_region(np.zeros_like(img), None, img)
        for klass in CLASSES:
            for s in range(per_class):
                n += 1
                try:
                    p = model.propose(img.shape, klass, 100 * i + s, allowed=allowed)
                except UsgenError:
                    fails += 1
                    continue
                inside += bool(allowed[p.mask].all())
                moved += bool(np.hypot(p.center[0] - p.asked_at[0],
                                       p.center[1] - p.asked_at[1]) > 2)
    ms = (time.perf_counter() - t0) / max(n, 1) * 1000
    return (f"{n} proposals on {len(files)} normal scans: {fails} found no room, {inside} wholly "
            f"inside the tissue, {moved} moved to fit; {ms:.0f} ms each with the tissue mask")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write-shipped", action="store_true")
    ap.add_argument("--proposals-per-lesion", type=int, default=2)
    args = ap.parse_args()
    if not (DATA / "manifest.csv").is_file():
        print(f"skip: BUSI is not at {DATA}")
        return 0
    rows = load_busi()
    if args.write_shipped:
        model = fit_lesion_model(((r["mask"], r["class"]) for r in rows),
                                 source="BUSI (Al-Dhabyani et al. 2020), all benign and "
                                        "malignant masks; statistics only")
        out = ROOT / "resources" / "lesions" / "busi.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(model.to_json() + "\n", encoding="utf-8")
        print(f"wrote {out} ({', '.join(f'{k}: {v.n}' for k, v in model.classes.items())})")
    train, test = split_by_group(rows)
    t0 = time.perf_counter()
    model = fit_lesion_model(((r["mask"], r["class"]) for r in train), source="train split")
    fit_s = time.perf_counter() - t0
    print(f"BUSI: {len(train)} train / {len(test)} held-out images (split by group); "
          f"fit {fit_s:.2f} s")
    print("| class | statistic | real held-out median | proposals median | KS (W1) proposals "
          "| KS (W1) real train | KS ellipse |")
    print("|---|---|---|---|---|---|---|")
    for klass in CLASSES:
        held = real_stats(test, klass)
        ref = real_stats(train, klass)
        shapes = [r["mask"].shape for r in test if r["class"] == klass]
        n = len(held["area"]) * args.proposals_per_lesion
        prop = {k: [] for k in STAT_NAMES}
        t0 = time.perf_counter()
        for i in range(n):
            p = model.propose(shapes[i % len(shapes)], klass, seed=i)
            for k, v in shape_stats(p.mask).items():
                prop[k].append(v)
        per = (time.perf_counter() - t0) / n * 1000
        prop = {k: np.asarray(v) for k, v in prop.items()}
        ell = ellipse_stats(shapes, float(np.median(ref["area"])), float(np.median(ref["aspect"])),
                            n)
        for k in STAT_NAMES:
            print(f"| {klass} (n={len(held[k])} real, {n} proposed) | {k} | "
                  f"{np.median(held[k]):.3f} | {np.median(prop[k]):.3f} | "
                  f"{ks(prop[k], held[k]):.2f} ({w1(prop[k], held[k]):.3f}) | "
                  f"{ks(ref[k], held[k]):.2f} ({w1(ref[k], held[k]):.3f}) | "
                  f"{ks(ell[k], held[k]):.2f} |")
        print(f"  {klass}: {per:.1f} ms per proposal", file=sys.stderr)
    print(on_normal_scans(model))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
