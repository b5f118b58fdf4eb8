"""Deformation speed: one affine + elastic variant at 512² and 1024² (median ms), against a
plain nearest-neighbour cv2.remap of the same map measured in the same run (the floor any
resampling pays), and 1000 variants at 256² end to end through `usgen deform`.

    .venv/bin/python benchmarks/bench_deform.py [--n-cli 1000]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from usgen_desktop.core.deform import DeformParams, WarpStroke, deform_label_map
from usgen_desktop.core.labels import LabelMap
from usgen_desktop.core.sector import Sector, detect_sector

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def echo_map(size: int) -> LabelMap:
    fov = Sector.fan((size / 2, -0.1 * size), 0.2 * size, size, -35, 35).rasterize((size, size))
    d = np.where(fov, 2, 0).astype(np.uint8)
    c = size // 2
    cv2.ellipse(d, (c, c), (size // 5, size // 4), 0, 0, 360, 3, -1)
    cv2.ellipse(d, (c, c), (size // 8, size // 6), 0, 0, 360, 1, -1)
    cv2.ellipse(d, (c, int(c * 1.6)), (size // 7, size // 10), 0, 0, 360, 4, -1)
    d[~fov] = 0
    return LabelMap(d)


def time_ms(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(1000 * (time.perf_counter() - t))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-cli", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    print("| size | affine + elastic variant (median ms) | worst | plain remap (median ms) | ratio |")
    print("|---|---|---|---|---|")
    for size in (512, 1024):
        lm = echo_map(size)
        seeds = iter(range(10**6))
        var = time_ms(lambda lm=lm, seeds=seeds: deform_label_map(lm, DeformParams(), next(seeds), 2),
                      args.repeats)
        mx, my = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
        ref = time_ms(lambda lm=lm, mx=mx, my=my: cv2.remap(lm.data, mx, my, cv2.INTER_NEAREST),
                      args.repeats)
        v, r = statistics.median(var), statistics.median(ref)
        print(f"| {size}² | {v:.1f} | {max(var):.1f} | {r:.2f} | {v / r:.0f}x |")
    # The warp tool: the snapshot taken at mouse press, then one mouse move (radius 40 px).
    lm = echo_map(1024)
    press = time_ms(lambda: WarpStroke(lm.data, 40, 2), args.repeats)
    stroke = WarpStroke(lm.data, 40, 2)
    pts = iter(range(10**6))
    move = time_ms(lambda: stroke.drag((500.0 + next(pts) % 40, 500.0),
                                       (503.0 + next(pts) % 40, 501.0)), args.repeats * 4)
    print(f"\nWarp tool at 1024²: press (snapshot) median {statistics.median(press):.1f} ms, "
          f"one mouse move (radius 40 px) median {statistics.median(move):.2f} ms, "
          f"worst {max(move):.2f} ms.")
    # Sector detection on real images when the shared data is there.
    hc = sorted((DATA / "hc18" / "head" / "images").glob("*.png"))[:40]
    if hc:
        imgs = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in hc]
        it = iter(range(10**6))
        det = time_ms(lambda: detect_sector(imgs[next(it) % len(imgs)]), len(imgs))
        print(f"Sector detection on {len(imgs)} HC18 images ({imgs[0].shape[1]}x"
              f"{imgs[0].shape[0]}): median {statistics.median(det):.1f} ms, worst "
              f"{max(det):.1f} ms.")
    else:
        print(f"Sector detection on real images: skipped ({DATA} not found).")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src" / "masks"
        src.mkdir(parents=True)
        n_maps = 10
        for i in range(n_maps):
            cv2.imwrite(str(src / f"m{i}.png"), echo_map(256).data)
        (src.parent / "usgen.json").write_text('{"schema": "echo"}')
        per = max(1, args.n_cli // n_maps)
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "usgen_desktop.cli.main", "deform", "--masks",
                            str(src.parent), "--n", str(per), "--out", str(Path(tmp) / "out"),
                            "-q"], capture_output=True, text=True)
        wall = time.perf_counter() - t
        n = len(list((Path(tmp) / "out" / "masks").glob("*.png")))
        print(f"\n`usgen deform`: {n} variants at 256² (10 label maps x {per}) in {wall:.1f} s "
              f"wall, {1000 * wall / max(1, n):.1f} ms per variant incl. start-up, PNG writes "
              f"and the vanished/split check (exit {r.returncode}).")


if __name__ == "__main__":
    main()
