"""Calibrate the texture gain of a shipped model's refiner on *training*-split label maps.

    .venv/bin/python scripts/calibrate_refiner.py --dataset busi [--maps 40] [--write]
    .venv/bin/python scripts/calibrate_refiner.py --dataset hc18 [--maps 40] [--write]

The base model draws each map (25 DPM++ steps at the model's recommended guidance, as the app
does), the image is enlarged to the map's size, the refiner adds its texture at gain 1, and
``refiner.calibrate_gain`` picks the gain that gives the finest octave (¼–½ cycle per pixel) real
power against the training images themselves. Run it after ``calibrate_guidance.py``: a lower
guidance draws a softer layout, which wants more gain. ``--write`` stores it in the refiner's
``usgen_model.json`` (``recommended.gain``, with the ratios under ``training.calibration``). The
dev split is never looked at; ``benchmarks/bench_fullsize.py`` measures the result on it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from train_default import SHIPPED as MODELS  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", choices=sorted(MODELS), required=True)
    ap.add_argument("--model", type=Path, default=None, help="default: the shipped model")
    ap.add_argument("--maps", type=int, default=40, help="training label maps to draw")
    ap.add_argument("--write", action="store_true", help="store the gain in the refiner")
    args = ap.parse_args()

    import torch
    from train_default import training_maps

    from usgen_desktop.synthesis.training.refiner import calibrate_model

    torch.set_num_threads(1)
    model = args.model or MODELS[args.dataset]
    picked = training_maps(args.dataset, args.maps)
    t0 = time.time()

    def tick(p) -> None:
        print(f"  {p.message} ({time.time() - t0:.0f} s)", flush=True)

    gain, info = calibrate_model(
        model, [(d.image.to_uint8(), d.labels, d.tags.get("class")) for d in picked], seed=7,
        progress=tick, write=args.write)
    print(json.dumps({"gain": gain, **info}, indent=1))
    if args.write:
        print(f"wrote gain {gain} into {model}/refiner/usgen_model.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
