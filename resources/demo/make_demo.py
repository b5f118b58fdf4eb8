"""Rebuild the demo dataset: label maps drawn in code, images made by the speckle backend.

    .venv/bin/python resources/demo/make_demo.py

BUSI-like breast maps (schema ``busi``: benign round/oval, malignant irregular and spiculated,
a normal scan with no lesion) go in ``resources/demo/{images,masks}`` with ``usgen.json``;
HC18-like fetal-head maps (schema ``hc18``: head ellipse inside a curvilinear fan) go in
``resources/demo/hc18/`` with their own ``usgen.json``, since one sidecar names one schema.
Everything is seeded, so running it again gives the same label maps.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # run from a source checkout

BUSI_SHAPE = (288, 320)  # height, width: BUSI images are scaled to a 320 px longer side
HC18_SHAPE = (240, 320)


def _ellipse(shape: tuple[int, int], cx: float, cy: float, ax: float, ay: float,
             angle: float) -> np.ndarray:
    import cv2

    m = np.zeros(shape, np.uint8)
    cv2.ellipse(m, (round(cx), round(cy)), (round(ax), round(ay)), angle, 0, 360, 1, -1)
    return m


def _irregular(shape: tuple[int, int], cx: float, cy: float, radius: float,
               rng: np.random.Generator, spikes: int) -> np.ndarray:
    """A lobulated outline with spicules, as malignant lesions are drawn."""
    import cv2

    n = 180
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.full(n, float(radius))
    for k in (2, 3, 5, 7):  # lobulation: a few low harmonics with random phase
        r += radius * rng.uniform(0.04, 0.12) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    for c in rng.uniform(0, 2 * np.pi, spikes):  # spicules: narrow outward spikes
        d = np.angle(np.exp(1j * (t - c)))
        r += radius * rng.uniform(0.25, 0.5) * np.exp(-(d / 0.05) ** 2)
    pts = np.stack([cx + r * np.cos(t), cy + 0.75 * r * np.sin(t)], 1)  # wider than tall
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
    return m


def busi_maps() -> list[tuple[str, str, np.ndarray]]:
    """(name, class, label map) for the breast demo."""
    h, w = BUSI_SHAPE
    rng = np.random.default_rng(20261122)
    return [
        ("benign_01", "benign", _ellipse(BUSI_SHAPE, 0.42 * w, 0.38 * h, 46, 34, 8)),
        ("benign_02", "benign", _ellipse(BUSI_SHAPE, 0.62 * w, 0.45 * h, 30, 19, -12)),
        ("malignant_01", "malignant", _irregular(BUSI_SHAPE, 0.5 * w, 0.4 * h, 44, rng, 6)),
        ("malignant_02", "malignant", _irregular(BUSI_SHAPE, 0.36 * w, 0.33 * h, 30, rng, 4)),
        ("normal_01", "normal", np.zeros(BUSI_SHAPE, np.uint8)),
    ]


def hc18_maps() -> list[tuple[str, np.ndarray]]:
    """(name, label map): 0 outside the fan, 2 the fan (sector), 1 the fetal head."""
    from usgen_desktop.core.sector import Sector

    h, w = HC18_SHAPE
    fan = Sector.fan((w / 2, -0.55 * h), 0.62 * h, 1.42 * h, -27, 27).rasterize(HC18_SHAPE)
    out = []
    for name, (cx, cy, ax, ay, ang) in {
        "head_01": (0.5 * w, 0.52 * h, 62, 50, 20),
        "head_02": (0.44 * w, 0.58 * h, 48, 39, -35),
        "head_03": (0.56 * w, 0.5 * h, 72, 58, 70),
    }.items():
        m = np.where(fan, 2, 0).astype(np.uint8)
        head = _ellipse(HC18_SHAPE, cx, cy, ax, ay, ang).astype(bool) & fan
        m[head] = 1
        out.append((name, m))
    return out


def _generate(folder: Path, schema_name: str, maps: list[tuple[str, str | None, np.ndarray]],
              seed: int) -> None:
    import cv2

    from usgen_desktop.core.labels import LabelMap, load_preset
    from usgen_desktop.synthesis.request import GenerationRequest, run

    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    request = GenerationRequest(
        label_maps=[LabelMap(m) for _, _, m in maps], schema=load_preset(schema_name),
        backend="speckle", classes=[k for _, k, _ in maps], seed=seed, steps=1,
    )
    for (name, _, mask), res in zip(maps, run(request), strict=True):
        cv2.imwrite(str(folder / "masks" / f"{name}.png"), mask,
                    [cv2.IMWRITE_PNG_COMPRESSION, 9])
        cv2.imwrite(str(folder / "images" / f"{name}.png"), res.image,
                    [cv2.IMWRITE_PNG_COMPRESSION, 9])
    sidecar = {"schema": schema_name,
               "classes": {name: k for name, k, _ in maps if k is not None}}
    (folder / "usgen.json").write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")


def main() -> int:
    _generate(HERE, "busi", busi_maps(), seed=1)
    _generate(HERE / "hc18", "hc18", [(n, None, m) for n, m in hc18_maps()], seed=2)
    size = sum(p.stat().st_size for p in HERE.rglob("*") if p.is_file())
    print(f"demo dataset written to {HERE} ({size / 1e6:.2f} MB)")
    return 0 if size < 2e6 else 1


if __name__ == "__main__":
    raise SystemExit(main())
