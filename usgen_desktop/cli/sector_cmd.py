"""`usgen sector detect`: find the probe's field of view in images.

    usgen sector detect IMAGE_OR_DATASET --out DIR

Writes, per image, ``<name>_sector.png`` (0/255 mask), ``<name>_overlay.png`` (the fitted
outline on the image) and one ``sectors.json`` with the fitted geometry and confidence (fits
below ``AUTO_APPLY`` are listed for review). ``--layouts FILE`` applies the fans a user fixed
by hand in the GUI, per scanner layout. With
``--labels-out DIR`` it also writes the dataset's label maps with the sector applied, ready for
``usgen deform --masks DIR`` (the sector then stays fixed while the anatomy deforms).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from usgen_desktop.cli.argtypes import int_range


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sector", help="detect the probe's field of view (fan or rectangle)",
        description="Detect the imaged region of ultrasound images and fit a fan or rectangle.",
    )
    sub = p.add_subparsers(dest="sector_command", metavar="ACTION")
    d = sub.add_parser("detect", help="fit the sector of an image or every image of a dataset")
    d.add_argument("source", type=Path, metavar="IMAGE_OR_DATASET")
    d.add_argument("--out", required=True, type=Path, metavar="DIR")
    d.add_argument("--no-overlay", action="store_true", help="skip the overlay pictures")
    d.add_argument("--probe", choices=("auto", "linear", "curvilinear", "phased"),
                   default="auto", help="the probe, when known: linear fits only rectangles, "
                   "a fan probe prefers fans (default: decide per image)")
    d.add_argument("--labels-out", type=Path, metavar="DIR", default=None,
                   help="also write each image's label map with the sector applied (anatomy "
                   "outside the fan cleared, the rest of the fan given the sector label) to "
                   "DIR/masks, a label-map dataset that `usgen deform --masks DIR` reads")
    d.add_argument("--layouts", type=Path, metavar="FILE", default=None,
                   help="the fans you fixed by hand, per scanner layout (a project's "
                   "sector_layouts.json, written by the GUI): an image of the same size whose "
                   "detected fan matches one gets your fan")
    d.add_argument("--sector-id", type=int_range(1, 255), default=None, metavar="ID",
                   help="label id of the sector for --labels-out (default: the schema's)")
    d.set_defaults(func=run_detect)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_detect(args: argparse.Namespace) -> int:
    from dataclasses import replace

    import cv2
    import numpy as np

    from usgen_desktop.cli.argtypes import out_folder
    from usgen_desktop.core.labels import Label
    from usgen_desktop.core.sector import AUTO_APPLY, LayoutMemory, apply_sector, detect_sector
    from usgen_desktop.errors import UsgenError
    from usgen_desktop.io import open_dataset
    from usgen_desktop.io.atomic import write_bytes_atomic, write_png_atomic, write_text_atomic
    from usgen_desktop.paths import inside, unique_filenames

    memory = None
    if args.layouts is not None:
        try:
            memory = LayoutMemory.from_json(args.layouts.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsgenError(f"Could not read the layouts file '{args.layouts}' "
                             f"({getattr(exc, 'strerror', None) or exc}).") from exc
    result = open_dataset(args.source)
    for problem in result.problems:
        print(f"usgen: {problem}", file=sys.stderr)
    docs = [d for d in result.documents if d.image is not None]
    if not docs:
        raise UsgenError(f"'{args.source}' holds no images to detect a sector in.")
    out = out_folder(args.out)
    sid = args.sector_id if args.sector_id is not None else result.schema.sector_id
    schema = result.schema
    if args.labels_out is not None:
        if sid is None:
            raise UsgenError("The dataset's label schema has no sector label; say which id to "
                             "use with --sector-id.")
        if not 1 <= sid <= 255:
            raise UsgenError(f"The schema's sector id {sid} is not between 1 and 255.")
        if schema.get(sid) is None:
            schema = schema.with_label(Label(sid, "sector", (60, 140, 255)))
        schema = replace(schema, sector_id=sid)
        out_folder(args.labels_out, "--labels-out")
        labels_masks = out_folder(args.labels_out / "masks", "The folder")
    records = {}
    classes = {}
    # File names from document names (data): made safe and unique in one place, and every
    # target checked to stay in the folder the user chose.
    stems = unique_filenames([d.name for d in docs], fallback="image")
    for doc, stem in zip(docs, stems, strict=True):
        img = doc.image.to_uint8()
        fit = detect_sector(img, probe=None if args.probe == "auto" else args.probe,
                            memory=memory)
        write_png_atomic(inside(out, f"{stem}_sector.png", "A sector file"),
                         fit.mask.astype(np.uint8) * 255)
        if args.labels_out is not None:
            labelled = apply_sector(doc.labels, fit.mask, sid)
            write_png_atomic(inside(labels_masks, f"{stem}.png", "A label file"), labelled.data)
            if doc.klass:
                classes[stem] = doc.klass
        if not args.no_overlay:
            rgb = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
            pts = np.rint(fit.sector.outline(128)).astype(np.int32)
            cv2.polylines(rgb, [pts], True, (255, 220, 0), max(1, img.shape[0] // 200))
            ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            write_bytes_atomic(inside(out, f"{stem}_overlay.png", "An overlay file"),
                               buf.tobytes())
        records[stem] = {**fit.sector.to_dict(), "confidence": round(fit.confidence, 4),
                         "remembered": fit.remembered,
                         "review": fit.confidence < AUTO_APPLY}
    write_text_atomic(out / "sectors.json", json.dumps(records, indent=2))
    if args.labels_out is not None:
        sidecar = {"schema": schema.to_dict(), "classes": classes}
        write_text_atomic(args.labels_out / "usgen.json", json.dumps(sidecar, indent=2))
    kinds = {}
    for r in records.values():
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    noun = "image" if len(records) == 1 else "images"
    review = sorted(n for n, r in records.items() if r["review"])
    print(f"usgen: sectors of {len(records)} {noun} in {args.out} "
          f"({', '.join(f'{v} {k}' for k, v in sorted(kinds.items()))})", file=sys.stderr)
    if review:
        print(f"usgen: {len(review)} fit{'s' if len(review) != 1 else ''} below "
              f"{AUTO_APPLY:.0%} confidence; check their overlays: "
              + ", ".join(review[:10]) + (" …" if len(review) > 10 else ""), file=sys.stderr)
    return 0
