"""`usgen merge`: check the shards of a generation run and merge their manifests into one.

    usgen merge DIR [DIR ...] [--out DIR] [--allow-missing] [--check]

A cluster runs ``usgen generate --shard I/N`` N times (a Slurm job array, Ray tasks), either
into one shared folder (the usual case: shards append to one ``manifest.jsonl``) or into one
folder per shard. This step runs after them all: it reads each folder's run file
(``generate.json``, which must be the same run), knows from it how many items the run has, and
reports the items no shard finished (missing: exit 2 with one sentence unless
``--allow-missing``) and the items more than one shard wrote (duplicates: harmless when their
records and files agree, an error when they differ). It then writes one ``manifest.jsonl``
sorted by item, without duplicates (in place, or into ``--out`` with the files copied there),
and brings ``dataset.json``'s case count up to date. ``--check`` reports without writing.

No torch here: merging 100,000 pairs needs a file system, not a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from usgen_desktop.cli.generate_cmd import MANIFEST, RUN_FILE


@dataclass
class MergeReport:
    """What a merge found: ``total`` items in the run, ``present`` distinct items finished."""

    total: int
    present: int
    missing: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)  # agreeing copies, merged into one
    folder: Path | None = None
    names: list[str] = field(default_factory=list)
    per_mask: int = 1

    def describe(self, items: list[int], limit: int = 5) -> str:
        """``case3 #1, case7 #0, … (12 in all)``: which label map and repeat each item is."""
        def one(i: int) -> str:
            m, r = divmod(i, max(1, self.per_mask))
            name = self.names[m] if m < len(self.names) else "?"
            return f"item {i} ({name} #{r})"

        shown = ", ".join(one(i) for i in items[:limit])
        return shown + (f", … ({len(items)} in all)" if len(items) > limit else "")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge", help="check the shards of a generation run and merge their manifests",
        description="After `usgen generate --shard I/N` ran on a cluster: report missing and "
        "duplicate items and write one manifest.jsonl sorted by item (in place for shards that "
        "shared one folder, or into --out for one folder per shard). Exit 2 when items are "
        "missing, unless --allow-missing.",
    )
    p.add_argument("folders", nargs="+", type=Path, metavar="DIR",
                   help="the shared output folder, or each shard's folder")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="merge into this folder (copies the pairs); default: the one DIR given")
    p.add_argument("--allow-missing", action="store_true",
                   help="merge what is there even when items are missing (exit 0)")
    p.add_argument("--check", action="store_true", help="only report; write nothing")
    p.set_defaults(func=run)


def run_folder(folder: Path) -> Path:
    """The folder holding the run file: ``folder`` itself, or its one nnU-Net dataset folder
    (``--format nnunet`` writes into ``OUT/Dataset501_USGenSynthetic``)."""
    from usgen_desktop.errors import ExportError

    folder = Path(folder).expanduser()
    if (folder / RUN_FILE).is_file():
        return folder
    inner = sorted(p for p in folder.glob("*") if (p / RUN_FILE).is_file())
    if len(inner) == 1:
        return inner[0]
    if not folder.is_dir():
        raise ExportError(f"The folder '{folder}' does not exist.")
    raise ExportError(
        f"'{folder}' holds no generation run ({RUN_FILE} is missing); name the folder that "
        "`usgen generate --out` wrote."
    )


def _signature(folder: Path) -> dict[str, Any]:
    from usgen_desktop.errors import ExportError

    try:
        return json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"Could not read '{folder / RUN_FILE}' ({exc}).") from exc


def merge_runs(folders: list[Path], out: Path | None = None, allow_missing: bool = False,
               check_only: bool = False) -> MergeReport:
    """Check (and unless ``check_only`` merge) the shards in ``folders``; see the module text.
    ExportError (one sentence) for missing items unless ``allow_missing``, for shards of
    different runs, and for duplicates that disagree."""
    from usgen_desktop.errors import ExportError
    from usgen_desktop.io.jsonl import read_jsonl

    sources = [run_folder(f) for f in folders]
    sig = _signature(sources[0])
    for src in sources[1:]:
        if _signature(src) != sig:
            raise ExportError(
                f"'{src}' holds a different generation run than '{sources[0]}' (another "
                "dataset, model, seed or setting); only shards of one run can be merged."
            )
    names = list(sig.get("names") or [])
    per_mask = int(sig.get("per_mask") or 1)
    total = len(names) * per_mask
    if out is None:
        if len(sources) > 1:
            raise ExportError("Several shard folders need --out DIR to merge into.")
        dest = sources[0]
    else:
        dest = Path(out).expanduser()
        if sources[0] != Path(folders[0]).expanduser():
            dest = dest / sources[0].name  # nnU-Net: OUT/DatasetNNN_Name, as generate writes
        if dest.resolve() in {s.resolve() for s in sources} and len(sources) > 1:
            raise ExportError(f"--out '{dest}' must not be one of the shard folders.")

    chosen: dict[int, tuple[Path, dict[str, Any]]] = {}
    dups: set[int] = set()
    for src in sources:
        for rec in read_jsonl(src / MANIFEST):
            try:
                item = int(rec["item"])
                files = (src / rec["image"], src / rec["label"])
            except (KeyError, TypeError, ValueError):
                continue  # not a pair record
            if not (0 <= item < total) or not all(p.is_file() for p in files):
                continue  # a line whose files are gone counts as not finished
            if item in chosen:
                dups.add(item)
                prev_src, prev = chosen[item]
                if prev != rec or not _same_files(prev_src, prev, src, rec):
                    raise ExportError(
                        f"Item {item} was written twice with different contents ('{prev_src}' "
                        f"and '{src}'); the shards are not of one run, so merge them by hand."
                    )
                continue
            chosen[item] = (src, rec)
    report = MergeReport(total, len(chosen), sorted(set(range(total)) - set(chosen)),
                         sorted(dups), dest, names, per_mask)
    if report.missing and not allow_missing:
        raise ExportError(
            f"{len(report.missing)} of {total} items are missing from "
            f"{_where(sources)}: {report.describe(report.missing)}; run the shards that made "
            "them again (a shard resumes), or pass --allow-missing."
        )
    if check_only:
        return report
    _write_merged(sources, dest, chosen)
    return report


def _where(sources: list[Path]) -> str:
    return f"'{sources[0]}'" if len(sources) == 1 else f"{len(sources)} shard folders"


def _same_files(a_src: Path, a: dict, b_src: Path, b: dict) -> bool:
    if a_src == b_src:
        return True  # one folder: the same paths are the same files
    return all((a_src / a[k]).read_bytes() == (b_src / b[k]).read_bytes()
               for k in ("image", "label"))


def _write_merged(sources: list[Path], dest: Path, chosen: dict[int, tuple[Path, dict]]) -> None:
    from usgen_desktop.errors import ExportError
    from usgen_desktop.io.atomic import dumps_json, temp_name, write_text_atomic

    try:
        dest.mkdir(parents=True, exist_ok=True)
        for name in (RUN_FILE, "usgen_schema.json"):
            if not (dest / name).is_file() and (sources[0] / name).is_file():
                shutil.copyfile(sources[0] / name, dest / name)
        lines = []
        for item in sorted(chosen):
            src, rec = chosen[item]
            if src.resolve() != dest.resolve():
                for key in ("image", "label"):
                    target = dest / rec[key]
                    if target.is_file() and target.stat().st_size == (src / rec[key]).stat().st_size:
                        continue  # copied by an earlier, interrupted merge
                    target.parent.mkdir(parents=True, exist_ok=True)
                    tmp = temp_name(target)
                    shutil.copyfile(src / rec[key], tmp)
                    os.replace(tmp, target)
            lines.append(dumps_json(rec, indent=None))
        write_text_atomic(dest / MANIFEST, "".join(x + "\n" for x in lines))
        desc = next((s / "dataset.json" for s in sources if (s / "dataset.json").is_file()), None)
        if desc is not None:
            data = json.loads(desc.read_text(encoding="utf-8"))
            if "numTraining" in data:
                data["numTraining"] = len(chosen)
            write_text_atomic(dest / "dataset.json", dumps_json(data))
    except (OSError, ValueError) as exc:
        raise ExportError(f"Could not write the merged run to '{dest}' ({exc}).") from exc


def run(args: argparse.Namespace) -> int:
    report = merge_runs(args.folders, args.out, args.allow_missing, args.check)
    verb = "checked" if args.check else "merged"
    msg = f"usgen: {verb} {report.present} of {report.total} items"
    if not args.check:
        msg += f" into '{report.folder / MANIFEST}'"
    if report.duplicates:
        msg += (f"; {len(report.duplicates)} written twice (identical, kept once): "
                f"{report.describe(report.duplicates)}")
    if report.missing:
        msg += f"; {len(report.missing)} missing: {report.describe(report.missing)}"
    print(msg + ".", file=sys.stderr)
    return 0
