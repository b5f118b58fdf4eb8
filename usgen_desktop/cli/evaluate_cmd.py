"""``usgen evaluate``: does a synthetic set help? Dice of three U-Net arms, realism AUC,
FID/KID, mask fidelity and speckle statistics, written as metrics.json + report.html."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

from usgen_desktop.cli.argtypes import fraction, int_range
from usgen_desktop.errors import DatasetError


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="measure whether synthetic images help a segmentation model",
        description="Train a small U-Net on real only, real + synthetic and synthetic only "
        "(Dice on held-out real images, split by group), measure realism AUC, FID/KID, mask "
        "fidelity and speckle statistics, and write REPORT_DIR/report.html + metrics.json.",
    )
    p.add_argument("--real", required=True, metavar="DATASET", help="real image/mask dataset")
    p.add_argument("--synthetic", required=True, metavar="DATASET",
                   help="synthetic images with the label maps they were generated from")
    p.add_argument("--out", required=True, metavar="REPORT_DIR", help="folder for the report")
    p.add_argument("--size", type=int_range(16, 1024), default=128,
                   help="evaluation size in pixels, a multiple of 8 (default 128)")
    p.add_argument("--epochs", type=int_range(1, 10000), default=10,
                   help="U-Net epochs over the real training split; every arm gets the same "
                   "number of steps (default 10)")
    p.add_argument("--steps", type=int_range(1, 10_000_000), default=None,
                   help="optimiser steps per U-Net arm (overrides --epochs)")
    p.add_argument("--real-fraction", type=fraction(include_one=True), default=1.0,
                   help="train on this fraction of the real training groups, to measure "
                   "the scarce-data regime synthetic images are meant for (default 1)")
    p.add_argument("--batch-size", type=int_range(1, 1024), default=8)
    p.add_argument("--repeats", type=int_range(1, 100), default=1,
                   help="train every U-Net arm with this many seeds and average (default 1)")
    p.add_argument("--dev-split", metavar="FILE",
                   help="text file naming the held-out real images or groups, one per line")
    p.add_argument("--group-column", default="group",
                   help="manifest column naming near-duplicate groups (default group)")
    p.add_argument("--test-fraction", type=fraction(), default=0.2,
                   help="share of real groups held out when no --dev-split is given")
    p.add_argument("--seed", type=int_range(0, 2**31 - 1), default=0)
    p.add_argument("--folds", type=int_range(2, 100), default=5,
                   help="realism cross-validation folds, at least 2")
    p.add_argument("--realism-epochs", type=int_range(1, 10000), default=8)
    p.add_argument("--realism-size", type=int_range(16, 1024), default=None,
                   help="image size for the realism classifier (default: --size)")
    p.add_argument("--no-fid", action="store_true", help="skip FID/KID")
    p.add_argument("--no-fullsize", action="store_true",
                   help="skip the full-size critic and octaves on native-resolution crops")
    p.add_argument("--threads", type=int_range(1, 1024), default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def _open(path: str, what: str) -> list[Any]:
    from usgen_desktop.io import open_dataset

    result = open_dataset(Path(path))
    for problem in result.problems[:5]:
        print(f"usgen: {what}: {problem}", file=sys.stderr)
    docs = [d for d in result.documents if d.image is not None]
    if not docs:
        raise DatasetError(f"The {what} dataset '{path}' holds no images.")
    return docs


def _tag_groups_from_csv(docs: list[Any], root: Path, column: str) -> None:
    """Give documents the tag ``column`` from a CSV in the dataset root when the reader did
    not (it carries only the standard ``group`` column)."""
    if column == "group" or all(column in d.tags for d in docs):
        return
    rows: dict[str, str] = {}
    for path in sorted(root.glob("*.csv")):
        try:
            with open(path, newline="", encoding="utf-8-sig") as fh:
                for row in csv.DictReader(fh):
                    key = row.get("image") or row.get("filename") or row.get("file")
                    if key and row.get(column):
                        rows[Path(key).stem] = row[column]
        except (OSError, UnicodeDecodeError, csv.Error):
            continue
    if not rows:
        raise DatasetError(f"No table in '{root}' has a column named '{column}'.")
    for d in docs:
        src = getattr(d.image, "source", None)
        key = Path(src).stem if src else d.name
        if key in rows:
            d.tags[column] = rows[key]


def _printer(quiet: bool) -> Any:
    from usgen_desktop.core.tasks import Progress

    last = [-1]
    tty = sys.stderr.isatty()

    def show(p: Progress) -> None:
        if quiet:
            return
        pct = int(p.fraction * 100)
        if tty:
            print(f"\r[{pct:3d}%] {p.message[:90]:<90}", end="", file=sys.stderr, flush=True)
        elif pct // 5 != last[0] // 5:
            print(f"[{pct:3d}%] {p.message}", file=sys.stderr, flush=True)
        last[0] = pct

    return show


def run(args: argparse.Namespace) -> int:
    from usgen_desktop.evaluation import EvalConfig, evaluate

    if args.size < 16 or args.size % 8:
        raise DatasetError("--size must be a multiple of 8 and at least 16.")
    if args.realism_size is not None and (args.realism_size < 16 or args.realism_size % 8):
        raise DatasetError("--realism-size must be a multiple of 8 and at least 16.")
    if not 0.0 < args.real_fraction <= 1.0:
        raise DatasetError("--real-fraction must lie above 0 and at most 1.")
    if args.epochs < 1:
        raise DatasetError("--epochs must be at least 1.")
    dev = None
    if args.dev_split:
        try:
            dev = tuple(line.strip() for line in Path(args.dev_split).read_text(
                encoding="utf-8").splitlines() if line.strip() and not line.startswith("#"))
        except OSError as exc:
            raise DatasetError(f"The dev split file '{args.dev_split}' cannot be read "
                               f"({exc.strerror}).") from exc
    real = _open(args.real, "real")
    synthetic = _open(args.synthetic, "synthetic")
    _tag_groups_from_csv(real, Path(args.real), args.group_column)
    config = EvalConfig(size=args.size, epochs=args.epochs, batch_size=args.batch_size,
                        seed=args.seed, test_fraction=args.test_fraction,
                        seg_repeats=max(1, args.repeats), steps=args.steps,
                        real_fraction=args.real_fraction,
                        group_column=args.group_column, dev_split=dev,
                        realism_folds=args.folds, realism_epochs=args.realism_epochs,
                        realism_size=args.realism_size,
                        fid=not args.no_fid, threads=args.threads,
                        fullsize=not args.no_fullsize)
    metrics = evaluate(real, synthetic, Path(args.out), config, _printer(args.quiet))
    if not args.quiet and sys.stderr.isatty():
        print(file=sys.stderr)
    h = metrics["headline"]
    lo, hi = h["real_plus_synthetic_gain_ci95"]
    print(f"Dice real only {h['dice_real_only']:.3f} | real + synthetic "
          f"{h['dice_real_plus_synthetic']:.3f} (gain 95% CI {lo:+.3f} to {hi:+.3f}) | "
          f"synthetic only {h['dice_synthetic_only']:.3f}")
    fid = (f"FID@{h['fid_resolution']} {h['fid']:.1f} (real vs real {h['fid_real_vs_real']:.1f})"
           if not h.get("fid_skipped") else str(h["fid_skipped"]))
    print(f"Realism AUC {h['realism_auc']:.3f} | {fid} | mask fidelity "
          f"{h['mask_fidelity_dice']:.3f}")
    print(f"Report: {Path(args.out) / 'report.html'}")
    return 0
