"""The "add a lesion" picture for the docs, on the synthetic demo scan only (no BUSI pixels):
the demo's normal scan (speckle-simulated), three proposed lesions of each class made by
``usgen generate --add-lesion`` with the shipped sdm model, their outlines and masks.

    .venv/bin/python benchmarks/lesion_picture.py [--out docs/images/add_lesion_demo.png]
    .venv/bin/python benchmarks/lesion_picture.py --masks DATASET --out /elsewhere/pic.png

``--masks`` takes another dataset with a normal scan (the BUSI picture of the issue's note was
made this way from one BUSI normal scan and is kept outside the repository).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from usgen_desktop.cli.main import main as usgen
from usgen_desktop.paths import resources_dir

ROOT = Path(__file__).resolve().parents[1]
COLORS = {"benign": (80, 220, 80), "malignant": (60, 60, 255)}


def normal_only(src: Path, dst: Path) -> Path:
    """A copy of the demo with its normal scan only (the others have lesions already)."""
    (dst / "images").mkdir(parents=True)
    (dst / "masks").mkdir()
    shutil.copy(src / "images" / "normal_01.png", dst / "images")
    shutil.copy(src / "masks" / "normal_01.png", dst / "masks")
    (dst / "usgen.json").write_text(json.dumps({"schema": "busi",
                                                "classes": {"normal_01": "normal"}}))
    return dst


def tile(img: np.ndarray) -> np.ndarray:
    return np.pad(img, ((3, 3), (3, 3), (0, 0)), constant_values=40)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--masks", default=None, help="dataset with one normal scan (default: demo)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "images" / "add_lesion_demo.png"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--scale", type=float, default=0.5,
                    help="shrink the figure (speckle compresses badly: full size is 2.5 MB)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ds = Path(args.masks) if args.masks else normal_only(resources_dir() / "demo",
                                                             Path(tmp) / "ds")
        rows = []
        for klass, color in COLORS.items():
            out = Path(tmp) / klass
            code = usgen(["generate", "--masks", str(ds), "--add-lesion", klass, "--count", "3",
                          "--seed", str(args.seed), "--device", args.device, "--no-progress",
                          "--out", str(out)])
            if code:
                return code
            recs = sorted((json.loads(x) for x in (out / "manifest.jsonl").read_text()
                           .splitlines()), key=lambda r: r["case"])[:3]
            src = cv2.imread(recs[0]["source"], cv2.IMREAD_GRAYSCALE)
            images = [cv2.cvtColor(src, cv2.COLOR_GRAY2BGR)]
            outlined = [images[0].copy()]
            masks = [np.zeros_like(images[0])]
            for r in recs:
                im = cv2.cvtColor(cv2.imread(str(out / r["image"]), cv2.IMREAD_GRAYSCALE),
                                  cv2.COLOR_GRAY2BGR)
                m = (cv2.imread(str(out / r["label"]), cv2.IMREAD_UNCHANGED) > 0).astype(np.uint8)
                line = im.copy()
                cs, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
                cv2.drawContours(line, cs, -1, color, 1)
                images.append(im)
                outlined.append(line)
                masks.append(cv2.cvtColor(m * 255, cv2.COLOR_GRAY2BGR))
            for row in (images, outlined, masks):
                rows.append(np.hstack([tile(x) for x in row]))
        fig = np.vstack(rows)
        if args.scale != 1.0:
            fig = cv2.resize(fig, None, fx=args.scale, fy=args.scale,
                             interpolation=cv2.INTER_AREA)
        title = np.full((24, fig.shape[1], 3), 255, np.uint8)
        cv2.putText(title, "source | 3 proposals inpainted (sdm); rows: benign image, outline, "
                    "mask; malignant image, outline, mask", (4, 17),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(args.out, np.vstack([title, fig]), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
