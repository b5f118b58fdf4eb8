"""Speckle backend speed, against pymust (SIMUS) on a comparable phantom, and the pictures.

    .venv/bin/python benchmarks/bench_speckle.py              # speed at 256² and 512²
    .venv/bin/python benchmarks/bench_speckle.py --pymust     # + one SIMUS image (~30 s+)
    .venv/bin/python benchmarks/bench_speckle.py --pictures   # docs/images/speckle_{busi,hc18}.png

Speed: median of several runs of ``backend.generate`` (a BUSI lesion map, and an HC18-like fan
map, which adds scan conversion). pymust: the same lesion map as an echogenicity image turned
into scatterers (``genscat``), one plane-wave transmit (``txdelay(param, 0)``) of an L11-5v
linear array, ``simus`` RF, ``rf2iq``, delay-and-sum (``dasmtx``), ``bmode``: one image, timed
end to end, and the ratio to the speckle backend measured in the same run. Pictures: one BUSI
and one HC18 label map from ``../shared/data`` (skipped when it is missing), the real image
next to the simulated one. Those two PNGs contain images from the shared data: they must stay
outside the repository (move them to /tmp; never commit them). The committed
``docs/images/speckle_demo_*.png`` show the demo's synthetic label maps instead.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"


def lesion_map(size: int) -> np.ndarray:
    import cv2

    m = np.zeros((size, size), np.uint8)
    cv2.ellipse(m, (size // 2, int(size * 0.4)), (size // 6, size // 9), 10, 0, 360, 1, -1)
    return m


def fan_map(size: int) -> np.ndarray:
    import cv2

    from usgen_desktop.core.sector import Sector

    fan = Sector.fan((size / 2, -0.5 * size), 0.6 * size, 1.45 * size, -27, 27).rasterize(
        (size, size))
    m = np.where(fan, 2, 0).astype(np.uint8)
    head = np.zeros_like(m)
    cv2.ellipse(head, (size // 2, int(size * 0.55)), (size // 4, size // 5), 25, 0, 360, 1, -1)
    m[(head > 0) & fan] = 1
    return m


def time_backend(labels: np.ndarray, schema_name: str, klass: str | None,
                 repeats: int) -> list[float]:
    from usgen_desktop.core.labels import LabelMap, load_preset
    from usgen_desktop.core.tasks import CancelToken, no_progress
    from usgen_desktop.synthesis.request import GenerationRequest, load_backend

    lm = LabelMap(labels)
    req = GenerationRequest([lm], load_preset(schema_name), backend="speckle")
    backend = load_backend(req)
    backend.generate(lm, klass, 0, req, 0, no_progress, CancelToken())  # warm caches/imports
    out = []
    for k in range(repeats):
        t0 = time.perf_counter()
        backend.generate(lm, klass, k + 1, req, 0, no_progress, CancelToken())
        out.append(time.perf_counter() - t0)
    return out


def pymust_image(labels: np.ndarray, depth_mm: float = 40.0) -> tuple[np.ndarray, float, int]:
    """One SIMUS plane-wave image of the label map's echogenicity; (image, seconds, scatterers)."""
    import pymust

    from usgen_desktop.core.labels import load_preset

    schema = load_preset("busi")
    echo = np.array([schema.tissue_for(i, "benign").echogenicity for i in range(2)])[labels]
    t0 = time.perf_counter()
    param = pymust.getparam("L11-5v")
    param.fs = 4 * param.fc
    h_m = depth_mm * 1e-3
    w_m = h_m * labels.shape[1] / labels.shape[0]
    # echogenicity image (z down, x across), in dB for genscat's 40 dB input convention
    img = 20 * np.log10(np.maximum(echo, 1e-2))
    img = (img - img.min()) / max(1e-6, float(img.max() - img.min()))
    xs, _, zs, rc = pymust.genscat([w_m, h_m], param, img, 40)
    zs = zs + 2e-3  # start 2 mm below the probe face
    dels = pymust.txdelay(param, 0)
    rf, _ = pymust.simus(xs, zs, rc, dels, param)
    iq = pymust.rf2iq(rf, param)
    xi, zi = np.meshgrid(np.linspace(-w_m / 2, w_m / 2, labels.shape[1]),
                         np.linspace(2e-3, h_m + 2e-3, labels.shape[0]))
    mtx = pymust.dasmtx(1j * np.array(iq.shape), xi, zi, dels, param)
    bf = (mtx @ iq.flatten(order="F")).reshape(xi.shape, order="F")
    bm = pymust.bmode(bf, 40)
    return np.asarray(bm, np.uint8), time.perf_counter() - t0, int(xs.size)


# -- pictures -------------------------------------------------------------------------------
def _label(img: np.ndarray, text: str) -> np.ndarray:
    import cv2

    out = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    cv2.putText(out, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                cv2.LINE_AA)
    return out


def _overlay(img: np.ndarray, labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    import cv2

    base = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR).astype(np.float32)
    rgba = lut[labels]
    a = rgba[..., 3:4].astype(np.float32) / 255 * 0.45
    base = base * (1 - a) + rgba[..., 2::-1].astype(np.float32) * a
    return base.astype(np.uint8)


def picture(real: np.ndarray, labels: np.ndarray, schema_name: str, klass: str | None,
            out: Path, params: dict | None = None, seeds: tuple[int, ...] = (1, 2)) -> None:
    """real | label map | simulated (two seeds), side by side, labelled."""
    import cv2

    from usgen_desktop.core.labels import LabelMap, load_preset
    from usgen_desktop.synthesis.request import GenerationRequest, run

    schema = load_preset(schema_name)
    sims = []
    for s in seeds:
        req = GenerationRequest([LabelMap(labels)], schema, classes=[klass], seed=s,
                                params=dict(params or {}))
        sims.append(run(req)[0].image)
    gap = np.zeros((real.shape[0], 4, 3), np.uint8)
    tiles = [_label(real, "real"), gap,
             cv2.putText(_overlay(np.zeros_like(real), labels, schema.lut()), "label map",
                         (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                         cv2.LINE_AA)]
    for s, im in zip(seeds, sims, strict=True):
        tiles += [gap, _label(im, f"speckle, seed {s}")]
    cv2.imwrite(str(out), np.concatenate(tiles, 1), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


def busi_example() -> tuple[np.ndarray, np.ndarray, str] | None:
    import cv2

    base = DATA / "busi" / "benign"
    name = "benign (10).png"
    if not (base / "images" / name).is_file():
        return None
    img = cv2.imread(str(base / "images" / name), cv2.IMREAD_GRAYSCALE)
    mask = cv2.imread(str(base / "masks" / name.replace(".png", "_mask.png")),
                      cv2.IMREAD_GRAYSCALE)
    return img, (mask > 0).astype(np.uint8), "benign"


def hc18_example() -> tuple[np.ndarray, np.ndarray, float] | None:
    import csv

    import cv2

    from usgen_desktop.core.labels import LabelMap
    from usgen_desktop.core.sector import apply_sector, detect_sector

    base = DATA / "hc18" / "head"
    name = "000_HC"
    if not (base / "images" / f"{name}.png").is_file():
        return None
    img = cv2.imread(str(base / "images" / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
    head = cv2.imread(str(base / "masks" / f"{name}_mask.png"), cv2.IMREAD_GRAYSCALE) > 0
    fan = detect_sector(img).mask
    labels = apply_sector(LabelMap(head.astype(np.uint8)), fan, 2).data
    pixel_mm = 0.2
    with open(DATA / "hc18" / "manifest.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["image"].endswith(f"{name}.png"):
                pixel_mm = float(row["pixel_mm"])
    return img, labels, pixel_mm


def make_pictures() -> None:
    out = ROOT / "docs" / "images"
    out.mkdir(parents=True, exist_ok=True)
    busi = busi_example()
    if busi is None:
        print("skip pictures: ../shared/data is missing")
        return
    img, labels, klass = busi
    picture(img, labels, "busi", klass, out / "speckle_busi.png")
    hc = hc18_example()
    if hc is not None:
        img, labels, pixel_mm = hc
        # the real scan's depth: the fan's radial extent in pixels x the pixel size
        from usgen_desktop.core.labels import LabelMap
        from usgen_desktop.core.sector import sector_from_labels

        sec = sector_from_labels(LabelMap(labels), 2)
        depth_px = (sec.outer_radius - sec.inner_radius) if sec is not None and sec.is_fan \
            else labels.shape[0]
        picture(img, labels, "hc18", None, out / "speckle_hc18.png",
                params={"depth_mm": round(depth_px * pixel_mm, 1)})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--pymust", action="store_true", help="also one pymust SIMUS image")
    ap.add_argument("--pymust-size", type=int, default=256)
    ap.add_argument("--pymust-depth-mm", type=float, default=20.0,
                    help="phantom depth (scatterer count grows with its area)")
    ap.add_argument("--pictures", action="store_true", help="write docs/images/speckle_*.png")
    args = ap.parse_args()
    print("machine: 2-core CPU, no GPU, torch 2.13 CPU (the speckle backend uses no torch)")
    medians = {}
    for size in (256, 512):
        for what, labels, schema, klass in (
            ("busi lesion, linear", lesion_map(size), "busi", "benign"),
            ("hc18 head, curvilinear fan", fan_map(size), "hc18", None),
        ):
            ts = time_backend(labels, schema, klass, args.repeats)
            med = statistics.median(ts)
            medians[(size, what)] = med
            print(f"{size}x{size} {what:28s} median {med * 1000:7.1f} ms  "
                  f"{1 / med:6.1f} images/s  (min {min(ts) * 1000:.1f}, max "
                  f"{max(ts) * 1000:.1f}, n={len(ts)})")
    if args.pymust:
        try:
            import pymust  # noqa: F401
        except ImportError:
            print("pymust: not installed (pip install -c constraints.txt pymust)")
        else:
            size = args.pymust_size
            img, secs, n = pymust_image(lesion_map(size), args.pymust_depth_mm)
            ref = medians.get((size, "busi lesion, linear")) or statistics.median(
                time_backend(lesion_map(size), "busi", "benign", args.repeats))
            print(f"pymust SIMUS {size}x{size}, 1 plane-wave transmit, {n} scatterers: "
                  f"{secs:.1f} s; speckle backend {ref * 1000:.1f} ms; ratio {secs / ref:.0f}x")
            import cv2

            cv2.imwrite("/tmp/usgen_pymust.png", img)
            print("pymust image: /tmp/usgen_pymust.png")
    if args.pictures:
        make_pictures()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
