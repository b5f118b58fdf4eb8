"""`usgen deform`: many plausible label maps from a few real ones.

    usgen deform --masks DATASET --n 5 --seed 0 --out DIR

Writes ``DIR/masks/<source>_v<k>.png`` (index PNGs; images come later from generation), a
``usgen.json`` with the schema so ``usgen generate --masks DIR`` reads them, and
``manifest.jsonl`` (source, seed, parameters, problems). Re-running resumes: variants whose
file and manifest line exist are skipped; equal seeds give identical variants.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from usgen_desktop.cli.argtypes import float_range, int_range
from usgen_desktop.cli.progress import progress_bar


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "deform",
        help="make random affine + elastic variants of label maps",
        description="Random affine and elastic deformation of the label maps of a dataset "
        "(nearest-neighbour, ids stay ids; the sector stays fixed). Defaults follow the "
        "echocardiography reference work.",
    )
    p.add_argument("--masks", required=True, type=Path, metavar="DATASET",
                   help="a dataset or project folder whose label maps are deformed")
    p.add_argument("--n", type=int_range(1, 10000), default=5,
                   help="variants per label map, 1-10000 (default 5)")
    p.add_argument("--seed", type=int_range(0, 2**31 - 1), default=0, help="base seed (default 0)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR")
    bad = p.add_mutually_exclusive_group()
    bad.add_argument("--skip-bad", action="store_true",
                     help="leave out variants where a label still vanished or split after 10 "
                     "redraws (default: keep them, with the problem in the manifest)")
    bad.add_argument("--keep-bad", action="store_true",
                     help="keep variants where a label vanished or split, without redrawing")
    p.add_argument("--no-keep-sector", action="store_true",
                   help="deform the sector (field of view) too")
    p.add_argument("--rotation", type=float_range(0, 180), default=5.0,
                   help="max rotation, degrees (0-180)")
    p.add_argument("--translate", type=float_range(0, 1), default=0.05,
                   help="max shift, fraction of size (0-1)")
    p.add_argument("--scale-min", type=float_range(0, 10, lo_open=True), default=0.8)
    p.add_argument("--scale-max", type=float_range(0, 10, lo_open=True), default=1.05)
    p.add_argument("--shear", type=float_range(0, 80, hi_open=True), default=5.0,
                   help="max shear, degrees (0 to under 80)")
    p.add_argument("--grid", type=int_range(4, 64), default=10,
                   help="elastic control points per side (4-64)")
    p.add_argument("--max-disp", type=float_range(0, 1000), default=30.0,
                   help="max elastic displacement in px at 256 px (scaled with size; 0-1000)")
    p.add_argument("--no-affine", action="store_true")
    p.add_argument("--no-elastic", action="store_true")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from usgen_desktop.cli.argtypes import out_folder
    from usgen_desktop.core.deform import DeformParams, make_variants
    from usgen_desktop.core.tasks import Progress
    from usgen_desktop.errors import UsgenError
    from usgen_desktop.io import open_dataset
    from usgen_desktop.io.atomic import write_png_atomic, write_text_atomic
    from usgen_desktop.io.jsonl import drop_torn_line, read_jsonl
    from usgen_desktop.paths import inside, unique_filenames

    params = DeformParams(
        rotation_deg=args.rotation, translate_frac=args.translate,
        scale=(args.scale_min, args.scale_max), shear_deg=args.shear,
        grid=(args.grid, args.grid), max_disp_px=args.max_disp,
        affine=not args.no_affine, elastic=not args.no_elastic,
        keep_sector=not args.no_keep_sector,
    )
    params.validate()
    result = open_dataset(args.masks)
    for problem in result.problems:
        print(f"usgen: {problem}", file=sys.stderr)
    docs = [d for d in result.documents if d.labels.data.any()]
    if not docs:
        raise UsgenError(f"'{args.masks}' holds no label maps with any label to deform.")
    schema = result.schema
    out: Path = out_folder(args.out)
    masks_dir = out_folder(out / "masks", "The folder")
    manifest = out / "manifest.jsonl"
    try:
        # A line cut by an interrupt is dropped (that variant is redone), so the next line
        # appended is not glued to it.
        drop_torn_line(manifest)
    except OSError as exc:
        raise UsgenError(f"Could not repair '{manifest}' ({exc.strerror or exc}).") from exc
    done = {rec["file"] for rec in read_jsonl(manifest)
            if isinstance(rec.get("file"), str) and "/" not in rec["file"]
            and "\x00" not in rec["file"] and (masks_dir / rec["file"]).exists()}
    classes = {}
    write_text_atomic(out / "usgen.json", json.dumps({"schema": schema.to_dict()}, indent=2))
    update, close = progress_bar("deform", args.quiet, unit="variant")
    total = len(docs) * args.n
    n_done = n_bad = n_skipped = 0
    try:
        with manifest.open("a", encoding="utf-8") as mf:
            # File names from document names, which come from data (a manifest's "name"):
            # made safe and unique in one place, and checked to stay in masks/.
            stems = unique_filenames([d.name for d in docs], fallback="labels")
            for doc, stem in zip(docs, stems, strict=True):
                names = [f"{stem}_v{k}.png" for k in range(args.n)]
                if klass := doc.klass:
                    classes.update({n[:-4]: klass for n in names})
                if all(n in done for n in names):
                    n_done += args.n
                    update(Progress(n_done, total))
                    continue
                variants = make_variants(
                    doc.labels, args.n, params, args.seed, sector_id=schema.sector_id,
                    skip_bad=not args.keep_bad, source=doc.name, drop_bad=args.skip_bad,
                )
                n_skipped += args.n - len(variants)
                n_done += args.n - len(variants)
                for v in variants:
                    name = names[v.index]
                    n_done += 1
                    if name in done:
                        continue
                    write_png_atomic(inside(masks_dir, name, "A variant file"),
                                     v.label_map.data)
                    n_bad += bool(v.problems)
                    mf.write(json.dumps({
                        "file": name, "source": doc.name, "source_uid": doc.uid,
                        "class": doc.klass, "variant": v.index, "seed": v.seed,
                        "base_seed": args.seed, "params": params.to_dict(),
                        "problems": v.problems,
                    }) + "\n")
                    mf.flush()
                update(Progress(n_done, total))
    finally:
        close()
    sidecar = {"schema": schema.to_dict(), "classes": classes}
    write_text_atomic(out / "usgen.json", json.dumps(sidecar, indent=2))
    msg = f"usgen: {total} variants of {len(docs)} label maps in {masks_dir}"
    if n_skipped:
        msg = (f"usgen: {total - n_skipped} variants of {len(docs)} label maps in {masks_dir} "
               f"({n_skipped} left out: a label vanished or split in every redraw)")
    if n_bad:
        msg += f" ({n_bad} kept with a vanished or split label)"
    print(msg, file=sys.stderr)
    return 0
