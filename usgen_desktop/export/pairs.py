"""Export image/label pairs as a training dataset, atomically and resumably.

Every pair's two files are written under temporary names and renamed; only then does its line
go into ``manifest.jsonl``. So a cancelled, killed or failed export leaves complete pairs only,
and running the same export again on the folder resumes: it skips the pairs already listed and
writes the rest. A finished export is never overwritten unless the caller says so.
"""

from __future__ import annotations

import errno
import json
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from usgen_desktop.core.document import Document
from usgen_desktop.core.labels import LabelSchema
from usgen_desktop.core.tasks import CancelToken, Progress, ProgressFn, no_progress
from usgen_desktop.errors import Cancelled, ExportError
from usgen_desktop.export.layouts import (
    FORMATS,
    LAYOUTS,
    LabelMapping,
    Layout,
    case_ids,
    dataset_folder,
    dataset_json,
)
from usgen_desktop.io.atomic import (
    dumps_json,
    is_temp_name,
    write_png_pair_atomic,
    write_text_atomic,
)
from usgen_desktop.io.jsonl import read_jsonl

MANIFEST = "manifest.jsonl"
MARKER = ".usgen-export.json"  # says which export made the folder and whether it finished
SCHEMA_FILE = "usgen_schema.json"
_OWN_FILES = (MANIFEST, MARKER, SCHEMA_FILE, "dataset.json", "labels.json", "labels.txt")
# both ways to say it, so the sentence fits the CLI and the export dialog alike
_ALLOW_OVERWRITE = ("replace it (--overwrite on the command line, 'Replace an existing export' "
                    "in the export dialog)")
_OWN_DIRS = ("images", "masks", "imagesTr", "labelsTr", "imagesTs", "labelsTs")


# The rule for which images are exported, stated to the user by the export dialog and the CLI.
LABELLED_RULE = (
    "An image is exported when it is labelled: a label is drawn on it, or a mask file came "
    "with it even if empty (a normal image, e.g. BUSI's 'normal': no lesion), or it was "
    "generated from its label map. Images that never had a mask are left out."
)


def is_labelled(doc: Document) -> bool:
    """:data:`LABELLED_RULE` for one document (the same test in the GUI and ``usgen export``)."""
    return doc.is_labelled


@dataclass
class ExportReport:
    """What an export did: pairs now in the folder, where, and what was left out and why."""

    count: int
    out_dir: Path
    skipped: list[str] = field(default_factory=list)
    written: int = 0  # pairs written by this run
    resumed: int = 0  # complete pairs found from an earlier, interrupted run
    fmt: str = "folder"
    label_mapping: dict[int, int] = field(default_factory=dict)

    @property
    def manifest(self) -> Path:
        return self.out_dir / MANIFEST


def export_pairs(
    docs: Iterable[Document],
    out_dir: Path,
    fmt: str = "folder",
    schema: LabelSchema | None = None,
    dataset_name: str = "USGen",
    overwrite: bool = False,
    progress: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
    dataset_id: int = 500,
) -> ExportReport:
    """Write the documents that have both an image and a label map as a paired dataset.

    ``fmt`` is ``folder`` (images/ + masks/), ``nnunet`` (nnU-Net v2 raw dataset; ``out_dir`` is
    ``nnUNet_raw`` or the ``DatasetNNN_Name`` folder itself) or ``decathlon``. A folder that
    holds a finished export or other files raises :class:`ExportError` unless ``overwrite``;
    a folder left by an interrupted export of the same format is resumed.
    """
    if fmt not in FORMATS:
        raise ExportError(f"Unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}.")
    layout = LAYOUTS[fmt]
    docs = list({d.uid: d for d in docs}.values())  # a document selected twice exports once
    pairs = [d for d in docs if d.image is not None and is_labelled(d)]
    skipped = [f"'{d.name}' has no image yet, so it has no pair to export." for d in docs
               if d.image is None]
    skipped += [f"'{d.name}' was never labelled (no mask file, nothing drawn), so it is left "
                "out." for d in docs if d.image is not None and not is_labelled(d)]
    if not docs:
        raise ExportError("There are no documents to export.")
    if not pairs:
        raise ExportError(
            f"None of the {len(docs)} selected documents has both an image and a label map; "
            "nothing to export (images that never had a mask count as unlabelled)."
        )
    schema = schema or pairs[0].schema
    target = dataset_folder(Path(out_dir), fmt, dataset_name, dataset_id)

    # One pass over each label map: the ids it uses (for the mapping and the manifest).
    present: dict[str, list[int]] = {}
    for k, d in enumerate(pairs):
        if cancel is not None and k % 64 == 0:
            cancel.raise_if_cancelled()
        counts = np.bincount(d.labels.data.ravel(), minlength=256)
        present[d.uid] = [int(i) for i in np.flatnonzero(counts)]
    used = {i for ids in present.values() for i in ids}
    mapping = LabelMapping.build(schema, used, consecutive=layout.remap)
    mapping_key = {str(k): v for k, v in mapping.to_export.items()}

    done = _prepare_target(target, layout, overwrite, mapping_key)
    # A resumed export recognises finished pairs by document id, or, for a dataset opened
    # again (new ids), by source file and name.
    done_keys = {k for rec in done for k in _record_keys(rec)}
    fresh = [d for d in pairs if not (_doc_keys(d) & done_keys)]
    cases = dict(zip(
        (d.uid for d in fresh),
        case_ids([d.name for d in fresh], taken={r["case"] for r in done}), strict=True,
    ))
    records = list(done)
    report = ExportReport(0, target, skipped, 0, len(done), fmt,
                          dict(mapping.to_export))
    total = len(done) + len(fresh)
    progress(Progress(len(done), total, "Exporting pairs"))
    try:
        with open(target / MANIFEST, "a", encoding="utf-8") as manifest:
            for doc in fresh:
                if cancel is not None:
                    cancel.raise_if_cancelled()
                case = cases[doc.uid]
                _write_pair(target, layout, case, doc, mapping)
                rec = _record(case, doc, layout, schema, mapping, fmt, present[doc.uid])
                # The line goes in only after both files exist under their final names.
                manifest.write(dumps_json(rec, indent=None) + "\n")
                manifest.flush()
                records.append(rec)
                report.written += 1
                progress(Progress(len(records), total, doc.name))
        _finish(target, fmt, dataset_name, mapping, schema, layout, records, complete=True)
    except (Cancelled, KeyboardInterrupt):
        # Describe the complete pairs so far, so even a cancelled folder trains as it is.
        try:
            _finish(target, fmt, dataset_name, mapping, schema, layout, records, complete=False)
        except OSError:
            pass
        raise
    except OSError as exc:
        raise ExportError(_os_sentence(exc, target)) from exc
    report.count = len(records)
    return report


def _doc_keys(doc: Document) -> set[tuple]:
    keys: set[tuple] = {("uid", doc.uid)}
    if doc.image is not None and doc.image.source:
        keys.add(("source", str(doc.image.source), doc.name))
    return keys


def _record_keys(rec: dict[str, Any]) -> set[tuple]:
    keys: set[tuple] = set()
    if rec.get("uid"):
        keys.add(("uid", rec["uid"]))
    if rec.get("source"):
        keys.add(("source", str(rec["source"]), rec.get("name")))
    return keys


# -- target folder ----------------------------------------------------------------------------
def _prepare_target(target: Path, layout: Layout, overwrite: bool,
                    mapping_key: dict[str, int]) -> list[dict[str, Any]]:
    """Make the folder ready; returns the complete pairs of an interrupted export to resume."""
    if target.exists() and not target.is_dir():
        raise ExportError(f"The export target '{target}' is a file, not a folder.")
    done: list[dict[str, Any]] = []
    if target.is_dir() and any(target.iterdir()):
        marker = _read_marker(target)
        resumable = (
            marker is not None and not marker.get("complete")
            and marker.get("format") == layout.fmt
        )
        if overwrite:
            _clear_own_files(target)
        elif resumable:
            if marker.get("label_mapping") != mapping_key:
                raise ExportError(
                    f"The unfinished export in '{target}' used other label ids; choose another "
                    f"folder or {_ALLOW_OVERWRITE}."
                )
            done = _complete_records(target, layout)
        else:
            raise ExportError(
                f"The folder '{target}' is not empty; choose an empty folder or "
                f"{_ALLOW_OVERWRITE}."
            )
    try:
        target.mkdir(parents=True, exist_ok=True)
        for d in layout.dirs:
            (target / d).mkdir(exist_ok=True)
        write_text_atomic(target / MARKER, dumps_json({
            "app": "usgen-desktop", "format": layout.fmt, "complete": False,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "label_mapping": mapping_key,
        }))
        # A clean manifest of the complete pairs (a kill may have cut its last line short).
        write_text_atomic(
            target / MANIFEST, "".join(dumps_json(r, indent=None) + "\n" for r in done)
        )
    except OSError as exc:
        raise ExportError(_os_sentence(exc, target)) from exc
    return done


def _read_marker(target: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((target / MARKER).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _complete_records(target: Path, layout: Layout) -> list[dict[str, Any]]:
    """Manifest lines whose two files exist; stray files of unfinished pairs are removed."""
    records: list[dict[str, Any]] = []
    try:
        lines = read_jsonl(target / MANIFEST)
    except OSError:
        lines = []
    for rec in lines:
        case = rec.get("case")
        # Only the files this layout writes for the case: a line naming any other path (an
        # edited or hostile manifest) is not a finished pair.
        if (isinstance(case, str) and case and rec.get("image") == layout.image_rel(case)
                and rec.get("label") == layout.label_rel(case) and "/" not in case
                and (target / rec["image"]).is_file() and (target / rec["label"]).is_file()):
            records.append(rec)
    keep = {rec["image"] for rec in records} | {rec["label"] for rec in records}
    for d in layout.dirs:
        folder = target / d
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            rel = f"{d}/{p.name}"
            if p.is_file() and (is_temp_name(p) or rel not in keep):
                p.unlink(missing_ok=True)
    return records


def _clear_own_files(target: Path) -> None:
    """Remove what an export writes (never anything else a user keeps in the folder)."""
    try:
        for d in _OWN_DIRS:
            if (target / d).is_dir():
                shutil.rmtree(target / d)
        for f in _OWN_FILES:
            (target / f).unlink(missing_ok=True)
    except OSError as exc:
        raise ExportError(_os_sentence(exc, target)) from exc


# -- one pair ---------------------------------------------------------------------------------
def _write_pair(target: Path, layout: Layout, case: str, doc: Document,
                mapping: LabelMapping) -> None:
    from usgen_desktop.paths import inside

    assert doc.image is not None
    # case ids are made safe by case_ids; checked here too, as every writer does
    image_path = inside(target, layout.image_rel(case), "An exported image")
    label_path = inside(target, layout.label_rel(case), "An exported label map")
    labels = doc.labels.data if mapping.is_identity else mapping.apply(doc.labels.data)
    # The pair becomes visible whole; its manifest line comes after.
    write_png_pair_atomic(image_path, doc.image.pixels, label_path, labels)


def _record(case: str, doc: Document, layout: Layout, schema: LabelSchema,
            mapping: LabelMapping, fmt: str, ids: list[int]) -> dict[str, Any]:
    img = doc.image
    assert img is not None
    rec: dict[str, Any] = {
        "case": case,
        "uid": doc.uid,
        "name": doc.name,
        "image": layout.image_rel(case),
        "label": layout.label_rel(case),
        # an inpainted image's source is the image it kept outside the region
        "source": str(img.source) if img.source else doc.provenance.get("source"),
        "mask_source": img.meta.get("mask_files"),
        "class": doc.tags.get("class"),
        "tags": doc.tags,
        "schema": {
            "name": schema.name,
            "labels": {str(i): n for i, n in sorted(mapping.names.items())},
        },
        "label_mapping": {str(k): v for k, v in mapping.to_export.items()},
        "labels_present": [int(mapping.lut[i]) for i in ids],
        "height": img.height,
        "width": img.width,
        "bit_depth": img.bit_depth,
        "pixel_spacing": list(img.pixel_spacing) if img.pixel_spacing else None,
        "was_color": img.was_color,
        "parent": doc.parent,
        "format": fmt,
    }
    if doc.provenance:
        rec["provenance"] = doc.provenance  # seed, backend, model hash, parameters
    return rec


# -- dataset description ----------------------------------------------------------------------
def _finish(target: Path, fmt: str, name: str, mapping: LabelMapping, schema: LabelSchema,
            layout: Layout, records: list[dict[str, Any]], complete: bool) -> None:
    cases = [r["case"] for r in records]
    desc = dataset_json(fmt, name, mapping, cases, layout)
    if desc is not None:
        write_text_atomic(target / "dataset.json", dumps_json(desc))
    exported = mapping.schema_for_export(schema)
    write_text_atomic(target / SCHEMA_FILE, exported.to_json(), fsync=False)
    if fmt == "folder":
        from usgen_desktop.io.masks import write_itksnap_labels

        write_itksnap_labels(exported, target / "labels.txt")
    marker = _read_marker(target) or {}
    marker.update({"complete": complete, "pairs": len(records),
                   "finished" if complete else "stopped": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    write_text_atomic(target / MARKER, dumps_json(marker))


def _os_sentence(exc: OSError, target: Path) -> str:
    if exc.errno == errno.ENOSPC:
        return f"The disk holding '{target}' is full; complete pairs so far were kept."
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"USGen may not write to '{target}' (permission denied); choose another folder."
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"The export target '{target}' cannot be a folder because a file is in the way."
    reason = exc.strerror or str(exc)
    return f"Could not write the export to '{target}' ({reason})."


__all__ = ["LABELLED_RULE", "MANIFEST", "ExportReport", "export_pairs", "is_labelled"]
