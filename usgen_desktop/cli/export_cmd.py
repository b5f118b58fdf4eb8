"""`usgen export`: write image/mask pairs of a project or dataset folder as a training dataset.

    usgen export --from PROJECT_OR_DATASET --format nnunet --out DIR [--name NAME] [--overwrite]

Problems with single files print one line each on stderr and the rest goes on; an error that
stops the export (target not empty, not writable, nothing to export) exits with 2. Which images
are exported follows ``export.pairs.LABELLED_RULE``, the rule the GUI's export dialog states.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from usgen_desktop.cli.argtypes import int_range
from usgen_desktop.cli.progress import progress_bar

FORMAT_CHOICES = ("folder", "nnunet", "decathlon")


def _rule() -> str:
    from usgen_desktop.export.pairs import LABELLED_RULE

    return LABELLED_RULE


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export image/mask pairs (folders, nnU-Net v2, Decathlon)",
        description="Export the image/mask pairs of a USGen project or of a dataset folder "
        "(BUSI download, images/+masks/, nnU-Net, HC18, ...) as a training dataset with a "
        "manifest.jsonl. " + _rule(),
    )
    p.add_argument("--from", dest="source", required=True, type=Path, metavar="PROJECT_OR_DATASET",
                   help="a USGen project folder, a dataset folder or one image")
    p.add_argument("--format", dest="fmt", choices=FORMAT_CHOICES, default="folder",
                   help="folder: images/ + masks/; nnunet: DatasetNNN_Name for nnU-Net v2; "
                   "decathlon: dataset.json with a training list (default: folder)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="target folder (for nnunet: nnUNet_raw, or the DatasetNNN_Name folder)")
    p.add_argument("--name", default=None,
                   help="dataset name (default: the source folder's name)")
    p.add_argument("--id", dest="dataset_id", type=int_range(1, 999), default=500,
                   help="nnU-Net dataset number NNN, 1-999 (default: 500)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier export in DIR (otherwise a non-empty DIR is an error; "
                   "an interrupted export is resumed)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from usgen_desktop.errors import DatasetError
    from usgen_desktop.export import export_pairs
    from usgen_desktop.io import Project, is_project, open_dataset

    source: Path = args.source
    if not source.exists():
        raise DatasetError(f"'{source}' does not exist.")
    if is_project(source):
        project = Project.open(source)
        docs, problems, schema = project.documents, list(project.problems), project.schema
        default_name = project.name
    else:
        update, close = progress_bar("reading", args.quiet, unit="image")
        try:
            result = open_dataset(source, progress=update)
        finally:
            close()
        docs, problems, schema = result.documents, result.problems, result.schema
        default_name = (source.stem if source.is_file() else source.name) or "USGen"
    for line in problems:
        print(f"usgen: {line}", file=sys.stderr)

    update, close = progress_bar("exporting", args.quiet)
    try:
        report = export_pairs(
            docs, args.out, fmt=args.fmt, schema=schema,
            dataset_name=args.name or default_name, overwrite=args.overwrite,
            progress=update, dataset_id=args.dataset_id,
        )
    finally:
        close()
    for line in report.skipped:
        print(f"usgen: skipped: {line}", file=sys.stderr)
    resumed = f" ({report.resumed} already there from an interrupted run)" if report.resumed else ""
    print(f"Exported {report.count} pairs to {report.out_dir}{resumed}.")
    return 0
