"""`usgen assist` (masks from clicks, for scripts) and `usgen train assist` (fine-tuning).

    usgen assist --images DIR --points POINTS.csv --out DIR [--model MODEL_DIR] [--device cpu]
    usgen train assist --data DATASET --out MODEL_DIR [--init-from MODEL_DIR] [--resume]
                       [--steps N] [--batch B] [--lr LR]

POINTS.csv has the columns ``image,x,y,inside``: ``image`` a file name relative to DIR, ``x,y``
pixel coordinates (column, row), ``inside`` 1 or 0. Rows of one image are its clicks, in file
order. One mask per image goes to ``OUT/masks/<image stem>.png`` (0/255, the image's size).
Every row is checked before any work starts, so a bad file costs nothing.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from usgen_desktop.errors import DatasetError, UsgenError

COLUMNS = ("image", "x", "y", "inside")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "assist", help="masks from clicks (the Smart tool for scripts)",
        description="Outline one structure per image from its clicks with the click-to-mask "
        "model; writes OUT/masks/<image stem>.png (0/255, the image's size).")
    p.add_argument("--images", required=True, type=Path, metavar="DIR")
    p.add_argument("--points", required=True, type=Path, metavar="POINTS.csv",
                   help="columns image,x,y,inside; an image's rows are its clicks, in order")
    p.add_argument("--out", required=True, type=Path, metavar="DIR")
    p.add_argument("--model", type=Path, default=None, metavar="MODEL_DIR",
                   help="an assist model folder (default: the shipped models/assist-default)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps (default cpu)")
    p.set_defaults(func=run)


def add_train_parser(kinds: argparse._SubParsersAction) -> None:
    """`usgen train assist`: registered by the train command next to sdm and lora."""
    a = kinds.add_parser(
        "assist", help="fine-tune the Smart tool's click-to-mask model on your masks",
        description="Train the click-to-mask model on the painted labels of a dataset folder "
        "or USGen project (every label but background and sector is one object), with "
        "simulated clicks. The output folder works in the Smart tool and `usgen assist`.")
    a.add_argument("--data", required=True, type=Path, metavar="DATASET")
    a.add_argument("--out", required=True, type=Path, metavar="MODEL_DIR")
    a.add_argument("--init-from", type=Path, default=None, metavar="MODEL_DIR",
                   help="start from this model (default: the shipped models/assist-default "
                   "when installed, else random weights)")
    a.add_argument("--scratch", action="store_true", help="start from random weights")
    a.add_argument("--steps", type=int, default=300, help="optimizer steps (default 300)")
    a.add_argument("--batch", type=int, default=4, help="images per step (default 4)")
    a.add_argument("--lr", type=float, default=3e-4, help="learning rate (default 3e-4)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--resume", action="store_true", help="continue the run in MODEL_DIR")
    a.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    a.set_defaults(func=run_train)


# -- usgen assist ----------------------------------------------------------------------------
def read_points(path: Path, images: Path) -> dict[str, list[tuple[float, float, bool]]]:
    """Clicks per image file name, in file order; a DatasetError names the first bad row."""
    if not path.is_file():
        raise DatasetError(f"'{path}' does not exist.")
    out: dict[str, list[tuple[float, float, bool]]] = {}
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"'{path}' lacks the column(s) {', '.join(missing)}; "
                               "it needs image,x,y,inside.")
        for n, row in enumerate(reader, start=2):
            name = (row["image"] or "").strip()
            try:
                x, y = float(row["x"]), float(row["y"])
            except (TypeError, ValueError):
                raise DatasetError(f"'{path}' line {n}: x and y must be numbers "
                                   f"(got '{row['x']}', '{row['y']}').") from None
            inside = (row["inside"] or "").strip()
            if inside not in ("0", "1"):
                raise DatasetError(f"'{path}' line {n}: inside must be 1 or 0 "
                                   f"(got '{inside}').")
            if not name or not (images / name).is_file():
                raise DatasetError(f"'{path}' line {n}: image '{name}' is not in '{images}'.")
            out.setdefault(name, []).append((x, y, inside == "1"))
    if not out:
        raise DatasetError(f"'{path}' has no rows.")
    return out


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from usgen_desktop.assist.clicks import Click
    from usgen_desktop.io.atomic import write_png_atomic
    from usgen_desktop.io.images import read_image

    points = read_points(args.points, args.images)
    model = _open_model(args.model, args.device)
    from usgen_desktop.assist.predict import segment

    stems: dict[str, str] = {}
    for name in points:
        stem = Path(name).stem
        if stem in stems:
            raise DatasetError(f"'{name}' and '{stems[stem]}' would both write masks/{stem}.png.")
        stems[stem] = name
    masks = args.out / "masks"
    masks.mkdir(parents=True, exist_ok=True)
    for name, clicks in points.items():
        image = read_image(args.images / name)
        h, w = image.height, image.width
        for x, y, _ in clicks:
            if not (0 <= x < w and 0 <= y < h):
                print(f"usgen: warning: click ({x:g}, {y:g}) lies outside '{name}' "
                      f"({w}x{h}); it is used as given.", file=sys.stderr)
        mask = segment(model, image.to_uint8(), [Click(x, y, i) for x, y, i in clicks])
        write_png_atomic(masks / f"{Path(name).stem}.png", np.where(mask, 255, 0).astype(np.uint8))
    print(f"Wrote {len(points)} mask(s) to {masks}")
    return 0


def _open_model(folder: Path | None, device: str):  # noqa: ANN202
    from usgen_desktop.assist.predict import open_model
    from usgen_desktop.paths import models_dir

    folder = folder or models_dir() / "assist-default"
    if device != "cpu":
        from usgen_desktop.synthesis.devices import pick_device

        device = pick_device(device)
    return open_model(folder, device=device)


# -- usgen train assist ----------------------------------------------------------------------
def run_train(args: argparse.Namespace) -> int:
    from usgen_desktop.assist.data import samples_from_documents
    from usgen_desktop.assist.model import is_assist_folder
    from usgen_desktop.assist.train import TrainOptions, has_checkpoint, train_assist
    from usgen_desktop.cli.train_cmd import _Bar, _with_sigint
    from usgen_desktop.core.tasks import CancelToken
    from usgen_desktop.errors import Cancelled
    from usgen_desktop.io.datasets import open_dataset
    from usgen_desktop.paths import models_dir

    if args.resume and not has_checkpoint(args.out):
        raise UsgenError(f"'{args.out}' holds no run to resume (no checkpoint/ in it).")
    init = args.init_from
    if init is None and not args.scratch and not args.resume:
        shipped = models_dir() / "assist-default"
        init = shipped if is_assist_folder(shipped) else None
    if init is not None and not is_assist_folder(init):
        raise UsgenError(f"'{init}' is not an assist model folder (no usgen_model.json of "
                         "kind 'assist').")
    samples = samples_from_documents(open_dataset(args.data).documents)
    if not samples:
        raise DatasetError(f"'{args.data}' has no image with a painted label to learn from.")
    opts = TrainOptions(steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
                        checkpoint_every=50, balance_sources=False)
    cancel = CancelToken()
    bar = _Bar(args.steps, args.quiet)
    restore = _with_sigint(cancel)
    try:
        res = train_assist(samples, args.out, opts, init_from=init, resume=args.resume,
                           progress=bar, cancel=cancel)
    except Cancelled:
        print(f"Stopped; continue with --resume. The model so far is in {args.out}.",
              file=sys.stderr)
        return 130
    finally:
        restore()
        bar.close()
    first, last = (res.losses[0], res.losses[-1]) if res.losses else (float("nan"),) * 2
    print(f"Trained {res.steps} steps on {len(samples)} object(s) in {res.seconds / 60:.1f} min "
          f"(loss {first:.3f} -> {last:.3f}); model in {args.out}")
    return 0
