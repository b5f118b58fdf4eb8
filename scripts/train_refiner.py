"""Train the texture refiners of the shipped models on the shared data's *training* images only
(the names in ``models/<model>/train_split.txt``; the dev split stays unseen for evaluation).

    .venv/bin/python scripts/train_refiner.py --dataset busi --out /work/ckpt/refiner-busi [--resume]
    .venv/bin/python scripts/train_refiner.py --dataset hc18 --out /work/ckpt/refiner-hc18 [--resume]
    .venv/bin/python scripts/train_refiner.py --export /work/ckpt/refiner-busi --to models/sdm-default/refiner

Labels are not used: the refiner learns from images alone. Runs checkpoint often and resume.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared" / "data"
from train_default import SHIPPED as MODELS  # noqa: E402


def image_paths(dataset: str, split: str = "train") -> list[Path]:
    """The shared data's images named in the shipped model's split file."""
    names = [ln.strip() for ln in (MODELS[dataset] / f"{split}_split.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    if dataset == "busi":
        found = {p.stem: p for p in (SHARED / "busi").glob("*/images/*.png")}
    else:
        found = {p.stem: p for p in (SHARED / "hc18").glob("*/images/*.png")}
    missing = [n for n in names if n not in found]
    if missing:
        raise SystemExit(f"{len(missing)} images of the split are missing, e.g. {missing[0]}")
    return [found[n] for n in names]


def read_gray(paths: list[Path]):
    import cv2

    return [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dataset", choices=sorted(MODELS), default="busi")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--export", type=Path, help="a run folder whose latest checkpoint to export")
    ap.add_argument("--to", type=Path, help="where --export writes the refiner folder")
    args = ap.parse_args(argv)
    if args.export:
        from usgen_desktop.synthesis.training.refiner import export_checkpoint
        from usgen_desktop.synthesis.training.sdm import latest_checkpoint

        ck = latest_checkpoint(args.export)
        if ck is None:
            raise SystemExit(f"no checkpoint in {args.export}")
        export_checkpoint(ck, args.to)
        print(f"exported {ck} -> {args.to}")
        return 0
    if not SHARED.is_dir():
        print("../shared/data is not here; nothing to train on.")
        return 0
    import torch

    from usgen_desktop.synthesis.training.refiner import RefinerTrainConfig, train_refiner

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    paths = image_paths(args.dataset)
    imgs = read_gray(paths)
    cfg = RefinerTrainConfig(steps=args.steps, batch=args.batch)
    data = {"busi": "BUSI (Al-Dhabyani et al. 2020)", "hc18": "HC18 (van den Heuvel et al. 2018)"}
    t0 = time.time()
    last = [t0]

    def progress(p) -> None:
        if p.done % 50 == 0 or time.time() - last[0] > 120:
            last[0] = time.time()
            print(f"{time.strftime('%H:%M:%S')} {p.message} ({time.time() - t0:.0f} s)", flush=True)

    res = train_refiner(imgs, args.out, cfg, progress=progress, resume=args.resume,
                        info={"data": f"{data[args.dataset]}, training split of "
                                      f"{MODELS[args.dataset].name} ({len(imgs)} images, no labels)",
                              "script": "scripts/train_refiner.py"})
    print(f"done: {res.step} steps in {res.seconds:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
