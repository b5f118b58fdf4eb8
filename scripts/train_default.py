"""Train the default ``sdm`` model that ships in models/sdm-default/ (and export it).

Data: ../shared/data (BUSI breast: normal/benign/malignant; HC18 fetal head with its sector).
One combined label schema whose ids match both shipped presets, so a BUSI or an HC18 label map
works as it is:

    0 = background (BUSI: breast tissue; HC18: outside the fan)
    1 = lesion (BUSI) / fetal head (HC18)
    2 = sector (HC18: tissue inside the fan with no other label)

Classes: normal, benign, malignant, fetal_head. A dev split is held out by BUSI ``group`` (near-
duplicate frames stay together) and by HC18 ``subject``; the lists are written next to the model
(splits.json) so evaluation uses the same held-out set.

Usage (resumes automatically from the newest checkpoint in --ckpt):
    nohup nice -n 5 .venv/bin/python scripts/train_default.py --ckpt /work/ckpt/sdm-default \
        > /work/ckpt/train.log 2>&1 &
    .venv/bin/python scripts/train_default.py --ckpt /work/ckpt/sdm-default --export models/sdm-default
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from usgen_desktop.core.labels import Label, LabelSchema, load_preset  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
CLASSES = ["normal", "benign", "malignant", "fetal_head"]
DEV_PERCENT = 20


def combined_schema() -> LabelSchema:
    busi, hc18 = load_preset("busi"), load_preset("hc18")
    return LabelSchema(
        name="usgen-default",
        labels=(
            Label(0, "background / outside fan", (0, 0, 0), tissue=busi.by_id(0).tissue),
            Label(1, "lesion / fetal head", busi.by_id(1).color, tissue=busi.by_id(1).tissue),
            Label(2, "sector", hc18.by_id(2).color, tissue=hc18.by_id(2).tissue),
        ),
        sector_id=2,
        classes=tuple(CLASSES),
        class_tissue=dict(busi.class_tissue),
        probe="linear",
    )


def is_dev(key: str) -> bool:
    """A stable split: a group is held out when its hash falls in the first DEV_PERCENT."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 100 < DEV_PERCENT


def hc18_sector(img: np.ndarray) -> np.ndarray:
    """The fan: convex hull of the largest bright component (the amniotic fluid inside the fan
    is as dark as the outside, so a threshold alone leaves holes)."""
    import cv2

    on = (cv2.GaussianBlur(img, (5, 5), 0) > 6).astype(np.uint8)
    on = cv2.morphologyEx(on, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    n, cc, stats, _ = cv2.connectedComponentsWithStats(on)
    if n <= 1:
        return np.ones_like(img, bool)
    big = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    pts = cv2.findNonZero((cc == big).astype(np.uint8))
    hull = cv2.convexHull(pts)
    out = np.zeros_like(img)
    cv2.fillConvexPoly(out, hull, 1)
    return out > 0


def load_data(data_dir: Path):
    """(train triples, splits dict). Cross-class duplicates are kept out of training: the same
    frame filed as benign and malignant would teach the class embedding nothing."""
    import cv2

    train, splits = [], {"busi_train": [], "busi_dev": [], "hc18_train": [], "hc18_dev": [],
                         "rule": f"hold out {DEV_PERCENT}% of BUSI groups and HC18 subjects "
                                 "by sha256(key) % 100 < 20"}
    with open(data_dir / "busi" / "manifest.csv", newline="") as f:
        for row in csv.DictReader(f):
            dev = is_dev("busi:" + row["group"])
            splits["busi_dev" if dev else "busi_train"].append(row["image"])
            if dev or row.get("cross_class_duplicate") == "1":
                continue
            ip = data_dir / "busi" / row["image"]
            mp = ip.parent.parent / "masks" / (ip.stem + "_mask.png")
            img = cv2.imread(str(ip), cv2.IMREAD_GRAYSCALE)
            mask = cv2.imread(str(mp), cv2.IMREAD_GRAYSCALE)
            if img is None or mask is None or img.shape != mask.shape:
                print("skip", ip, flush=True)
                continue
            train.append((img, (mask > 127).astype(np.uint8), row["class"]))
    with open(data_dir / "hc18" / "manifest.csv", newline="") as f:
        for row in csv.DictReader(f):
            dev = is_dev("hc18:" + row["subject"])
            splits["hc18_dev" if dev else "hc18_train"].append(row["image"])
            if dev:
                continue
            ip = data_dir / "hc18" / row["image"]
            mp = ip.parent.parent / "masks" / (ip.stem + "_mask.png")
            img = cv2.imread(str(ip), cv2.IMREAD_GRAYSCALE)
            mask = cv2.imread(str(mp), cv2.IMREAD_GRAYSCALE)
            if img is None or mask is None or img.shape != mask.shape:
                print("skip", ip, flush=True)
                continue
            lab = np.where(hc18_sector(img), 2, 0).astype(np.uint8)
            lab[mask > 127] = 1
            train.append((img, lab, "fetal_head"))
    return train, splits


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--ckpt", type=Path, default=Path("/work/ckpt/sdm-default"))
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--export", type=Path, default=None, help="export the newest checkpoint here")
    args = ap.parse_args(argv)

    from usgen_desktop.synthesis.training.data import prepare
    from usgen_desktop.synthesis.training.sdm import (
        TrainConfig,
        export_checkpoint,
        latest_checkpoint,
        train_sdm,
    )

    if args.export is not None:
        last = latest_checkpoint(args.ckpt)
        if last is None:
            print("no checkpoint in", args.ckpt)
            return 1
        export_checkpoint(last, args.export)
        split = args.ckpt / "splits.json"
        if split.exists():
            (args.export / "splits.json").write_text(split.read_text())
        print("exported", last, "->", args.export)
        return 0

    if not (args.data / "busi" / "manifest.csv").exists():
        print(f"no data at {args.data}; nothing to train")
        return 0
    t0 = time.time()
    train, splits = load_data(args.data)
    args.ckpt.mkdir(parents=True, exist_ok=True)
    (args.ckpt / "splits.json").write_text(json.dumps(splits, indent=1))
    # BUSI is what users paint on most and is smaller than HC18: show it twice as often, the
    # rare normal class three times, so each class is seen a comparable number of times
    reps = {"normal": 3, "benign": 1, "malignant": 2, "fetal_head": 1}
    counts = {c: sum(1 for t in train if t[2] == c) for c in CLASSES}
    weighted = [t for t in train for _ in range(reps[t[2]])]
    prep = prepare(weighted, (args.size, args.size), CLASSES)
    print(f"loaded {len(train)} training pairs {counts} in {time.time() - t0:.1f}s; "
          f"{len(prep)} after class balancing", flush=True)
    cfg = TrainConfig(size=args.size, steps=args.steps, batch=args.batch, lr=2e-4, warmup=200,
                      ema_decay=0.998, checkpoint_every=200, sample_every=500, keep_checkpoints=2)
    last_print = [time.time()]

    def progress(p) -> None:
        pv = p.preview or {}
        if pv.get("loss") is not None and (p.done % 20 == 0 or time.time() - last_print[0] > 60):
            last_print[0] = time.time()
            print(f"{time.strftime('%H:%M:%S')} step {p.done} loss {pv['loss']:.4f}", flush=True)

    info = {"data": "BUSI (train split, cross-class duplicates dropped) + HC18 (train split)",
            "class_repeats": reps, "class_counts": counts}
    res = train_sdm(prep, args.ckpt, cfg, progress, schema=combined_schema(),
                    resume=latest_checkpoint(args.ckpt) is not None, info=info)
    print("done", res.step, res.final_loss, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
