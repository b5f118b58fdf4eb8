"""Opening a dataset folder as documents, whatever layout it comes in.

Detected automatically (first match wins):

* ``nnunet_v2`` / ``decathlon``: ``dataset.json`` + ``imagesTr/`` (+ ``labelsTr/``)
* ``image_mask_folders``: ``images/`` + ``masks/`` (or ``labels/``) matched by file stem; a mask
  may be named ``<stem>.png`` or ``<stem>_mask.png``
* ``class_folders``: ``<class>/images`` + ``<class>/masks`` (class kept as tag ``class``)
* ``busi_download``: ``Dataset_BUSI_with_GT/<class>/<name>.png`` + ``<name>_mask.png`` with extra
  ``_mask_1``, ``_mask_2`` files OR-ed into one lesion mask
* ``hc18``: ``NNN_HC.png`` + ``NNN_HC_Annotation.png`` (an ellipse outline, filled here)
* ``image_mask_pairs``: images and ``<stem>_mask`` files side by side in one folder
* ``images_only``: a folder of images without masks (empty label maps)
* ``single_image``: one image file (with ``<stem>_mask.*`` beside it if there is one)
* ``usgen_project``: a USGen project folder (``project.json``), opened through ``Project.open``

An optional ``usgen.json`` in the root, ``{"schema": "busi", "classes": {"<stem>": "benign"}}``,
names the label schema (a preset name or a schema dict) and the class of each image. A
``manifest.csv`` (columns ``image``, ``class``, ``group`` (else ``subject``/``patient``), ``pixel_mm``)
adds tags and spacing.
A file that cannot be read becomes one sentence in ``problems``; the rest opens.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from usgen_desktop.core.document import Document
from usgen_desktop.core.labels import (
    Label,
    LabelMap,
    LabelSchema,
    default_schema_for,
    load_preset,
)
from usgen_desktop.core.tasks import CancelToken, Progress, ProgressFn, no_progress
from usgen_desktop.errors import DatasetError, MaskMismatchError, UsgenError
from usgen_desktop.io.images import is_image_file, read_image, suffix_of
from usgen_desktop.io.masks import fill_outline, read_mask, read_masks_or

SIDECAR = "usgen.json"
BUSI_CLASSES = ("normal", "benign", "malignant")
_MASK_RE = re.compile(
    r"^(?P<stem>.+?)(?P<kind>_mask(?:_\d+)?|_annotation|_seg|_label|_labels|_gt)$", re.I
)
_MASK_DIRS = ("masks", "mask", "labels", "labelsTr", "annotations", "gt", "ground_truth")
_SPLIT_NAMES = {"train", "training", "training_set", "test", "test_set", "testing", "val",
                "valid", "validation", "validation_set"}
_HC18_RE = re.compile(r"^\d+(?:_\d+)?HC$", re.I)


@dataclass
class ImportResult:
    """What ``open_dataset`` found: documents, one sentence per bad file, layout and schema."""

    documents: list[Document]
    problems: list[str]
    layout: str
    schema: LabelSchema
    root: Path | None = None


@dataclass
class _Item:
    """One planned document: its image, its mask files and its tags."""

    image: Path | None
    masks: list[Path] = field(default_factory=list)
    name: str = ""
    tags: dict[str, Any] = field(default_factory=dict)
    outline: bool = False  # masks are drawn outlines to fill (HC18)
    binary: bool = True  # several masks are OR-ed into label 1 (BUSI)
    provenance: dict[str, Any] = field(default_factory=dict)
    note: str | None = None  # a problem to report once the image has opened


@dataclass
class _Plan:
    items: list[_Item]
    layout: str
    schema: LabelSchema | None  # None: build a generic one from the ids found
    problems: list[str] = field(default_factory=list)
    root: Path | None = None


# -- public entry --------------------------------------------------------------------------
def open_dataset(
    path: Path, progress: ProgressFn = no_progress, cancel: CancelToken | None = None
) -> ImportResult:
    """Open a dataset folder (or one image file) in any layout USGen recognises."""
    # Absolute, so the source recorded in projects and export manifests stays meaningful.
    path = Path(path).expanduser().absolute()
    if not path.exists():
        raise DatasetError(f"'{path}' does not exist.")
    from usgen_desktop.io.project import Project, is_project

    if is_project(path):
        # A USGen project folder opens as what it is, not as its images/ + labels/ files.
        project = Project.open(path)
        progress(Progress(len(project.documents), len(project.documents), project.name))
        return ImportResult(list(project.documents), list(project.problems), "usgen_project",
                            project.schema, path)
    plan = _plan(path)
    if not plan.items:
        raise DatasetError(f"'{path}' holds no images USGen can read.")
    docs, problems = _load(plan, progress, cancel)
    if not docs and problems:
        # Nothing opened: one sentence, not a list of problems and then "nothing to export".
        if len(plan.items) == 1:
            raise DatasetError(problems[-1])
        raise DatasetError(
            f"None of the {len(plan.items)} images in '{path}' could be read; the first "
            f"problem: {problems[0][:1].lower()}{problems[0][1:]}"
        )
    schema = _final_schema(plan, docs)
    for doc in docs:
        doc.schema = schema
    return ImportResult(docs, plan.problems + problems, plan.layout, schema, plan.root)


# -- planning: decide the layout from file names only (fast) ---------------------------
def _plan(path: Path) -> _Plan:
    if path.is_file():
        return _plan_single(path)
    root = path
    sidecar = _read_sidecar(root)
    plan = _plan_folder(root, depth=0)
    if plan is None:
        entries = _visible(root)
        if not entries:
            raise DatasetError(f"The folder '{root}' is empty.")
        subdirs = [p.name for p in entries if p.is_dir()]
        if subdirs:
            raise DatasetError(
                f"'{root}' holds no images USGen can read, neither directly nor in class "
                f"folders; open one of its subfolders ({', '.join(subdirs[:4])}"
                f"{', ...' if len(subdirs) > 4 else ''})."
            )
        raise DatasetError(f"'{root}' holds no images USGen can read.")
    plan.root = plan.root or root
    _apply_csv(plan, root)
    _apply_usgen_export(plan, plan.root)
    if sidecar:
        _apply_sidecar(plan, sidecar, root)
    if plan.schema is None:
        plan.schema = _guess_preset(plan)
    return plan


def _visible(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        raise DatasetError(f"Could not list '{folder}' ({exc.strerror or exc}).") from exc


def _plan_folder(root: Path, depth: int) -> _Plan | None:
    if (root / "dataset.json").is_file() and (root / "imagesTr").is_dir():
        from usgen_desktop.io.nnunet_reader import plan_nnunet

        return _Plan(*plan_nnunet(root), root=root)
    if (root / "images").is_dir():
        items, problems = _scan_pair_dirs(root, klass=_class_of_folder(root))
        return _Plan(items, "image_mask_folders", None, problems, root)
    if (root / "masks").is_dir() and not any(is_image_file(p) for p in _visible(root)):
        # Label maps waiting for generation (e.g. the output of `usgen deform`).
        items = [
            _Item(None, [p], _stem(p), {})
            for p in sorted(_visible(root / "masks"), key=lambda q: _natural(q.name))
            if is_image_file(p)
        ]
        return _Plan(items, "label_maps_only", None, [], root)
    entries = _visible(root)
    files = [p for p in entries if is_image_file(p)]
    dirs = [p for p in entries if p.is_dir()]
    if files:
        items, problems, kind = _scan_flat(root, klass=_class_of_folder(root))
        return _Plan(items, kind, load_preset("hc18") if kind == "hc18" else None, problems, root)
    if not dirs:
        return None
    items: list[_Item] = []
    problems: list[str] = []
    flat_classes = 0
    kinds: set[str] = set()
    skipped: list[str] = []
    for d in dirs:
        if (d / "images").is_dir():
            its, probs = _scan_pair_dirs(d, klass=d.name)
        elif any(is_image_file(p) for p in _visible(d)):
            its, probs, kind = _scan_flat(d, klass=d.name)
            kinds.add(kind)
            flat_classes += 1
        else:
            skipped.append(d.name)
            continue
        if d.name.lower() in _SPLIT_NAMES:
            # train/test folders are a split, not a class of image.
            for it in its:
                it.tags.pop("class", None)
                it.tags["split"] = d.name
        items += its
        problems += probs
    if items:
        problems += [
            f"The subfolder '{name}' holds no images of its own; open it by itself to import it."
            for name in skipped if any(_visible(root / name))
        ]
        if kinds and kinds <= {"hc18", "images_only"} and "hc18" in kinds:
            return _Plan(items, "hc18", load_preset("hc18"), problems, root)
        busi = root.name.lower() == "dataset_busi_with_gt" or (
            flat_classes and {d.name.lower() for d in dirs} <= set(BUSI_CLASSES)
        )
        return _Plan(items, "busi_download" if busi else "class_folders", None, problems, root)
    if depth == 0 and len(dirs) == 1:
        # A wrapper folder (the BUSI zip unpacks to <dir>/Dataset_BUSI_with_GT/...).
        inner = _plan_folder(dirs[0], depth + 1)
        if inner is not None:
            return inner
    return None


def _class_of_folder(folder: Path) -> str | None:
    """A BUSI class folder opened on its own still tags its images with the class."""
    return folder.name.lower() if folder.name.lower() in BUSI_CLASSES else None


def _split_mask_name(path: Path) -> tuple[str, str] | None:
    """(image stem, kind) when the file name says it is a mask, else None."""
    stem = _stem(path)
    m = _MASK_RE.match(stem)
    return (m.group("stem"), m.group("kind").lower()) if m else None


def _stem(path: Path) -> str:
    """The name without its format suffix (``a.nii.gz`` -> ``a``; ``IM0001`` stays whole)."""
    suffix = suffix_of(path)
    return path.name[: -len(suffix)] if suffix else path.name


def _scan_flat(folder: Path, klass: str | None) -> tuple[list[_Item], list[str], str]:
    """Images and ``<stem>_mask*`` / ``<stem>_Annotation`` files side by side in one folder."""
    images: dict[str, Path] = {}
    masks: dict[str, list[Path]] = {}
    outline = False
    for p in _visible(folder):
        if not is_image_file(p):
            continue
        split = _split_mask_name(p)
        if split:
            stem, kind = split
            masks.setdefault(stem, []).append(p)
            outline |= kind == "_annotation"
        else:
            images[_stem(p)] = p
    problems = [
        f"The mask '{ms[0].name}' has no matching image; it was skipped."
        for stem, ms in sorted(masks.items()) if stem not in images
    ]
    tags = {"class": klass} if klass else {}
    items = [
        _Item(img, sorted(masks.get(stem, []), key=_mask_order), stem, dict(tags), outline=outline)
        for stem, img in sorted(images.items(), key=lambda kv: _natural(kv[0]))
    ]
    if not masks:
        kind = "images_only"
    elif outline:
        kind = "hc18" if all(_HC18_RE.match(i.name.replace("_", "")) for i in items) else \
            "image_mask_pairs"
    else:
        kind = "image_mask_pairs"
    return items, problems, kind


def _scan_pair_dirs(folder: Path, klass: str | None) -> tuple[list[_Item], list[str]]:
    """``images/`` + ``masks/`` matched by stem (``<stem>`` or ``<stem>_mask``)."""
    image_dir = folder / "images"
    mask_dir = next((folder / n for n in _MASK_DIRS if (folder / n).is_dir()), None)
    masks: dict[str, list[Path]] = {}
    if mask_dir is not None:
        for p in _visible(mask_dir):
            if not is_image_file(p):
                continue
            split = _split_mask_name(p)
            masks.setdefault(split[0] if split else _stem(p), []).append(p)
    items, problems = [], []
    tags = {"class": klass} if klass else {}
    stems = set()
    for p in sorted(_visible(image_dir), key=lambda q: _natural(q.name)):
        if not is_image_file(p):
            continue
        stem = _stem(p)
        stems.add(stem)
        item = _Item(p, sorted(masks.get(stem, []), key=_mask_order), stem, dict(tags))
        if mask_dir is not None and not item.masks:
            item.note = f"'{p.name}' has no mask; it opens with an empty label map."
        items.append(item)
    problems += [
        f"The mask '{ms[0].name}' has no matching image; it was skipped."
        for stem, ms in sorted(masks.items()) if stem not in stems
    ]
    return items, problems


def _mask_order(p: Path) -> tuple:
    return _natural(p.name)


def _natural(name: str) -> tuple:
    """Sort key so 'benign (2)' comes before 'benign (10)'."""
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name))


def _plan_single(path: Path) -> _Plan:
    if not is_image_file(path):
        from usgen_desktop.io.images import read_array

        read_array(path)  # raises the right one-sentence error (unsupported, corrupt, ...)
    sidecar = _read_sidecar(path.parent)
    masks = sorted(
        (p for p in _visible(path.parent)
         if p != path and is_image_file(p) and (_split_mask_name(p) or ("", ""))[0] == _stem(path)),
        key=_mask_order,
    )
    outline = any(_split_mask_name(p)[1] == "_annotation" for p in masks)  # type: ignore[index]
    klass = _class_of_folder(path.parent)
    plan = _Plan([_Item(path, masks, _stem(path), {"class": klass} if klass else {},
                        outline=outline)], "single_image", None, root=path.parent)
    if sidecar:
        _apply_sidecar(plan, sidecar, path.parent)
    if plan.schema is None:
        plan.schema = load_preset("hc18") if outline else _guess_preset(plan)
    return plan


# -- sidecar, CSV manifests and schema choice -------------------------------------------------
def _read_sidecar(root: Path) -> dict[str, Any] | None:
    path = root / SIDECAR
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"The dataset description '{path}' is not valid JSON.") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"The dataset description '{path}' must be a JSON object.")
    return data


def _apply_sidecar(plan: _Plan, sidecar: dict[str, Any], root: Path) -> None:
    schema = sidecar.get("schema")
    if isinstance(schema, str):
        plan.schema = load_preset(schema)
    elif isinstance(schema, dict):
        plan.schema = LabelSchema.from_dict(schema)
    classes = sidecar.get("classes") or {}
    if not isinstance(classes, dict):
        raise DatasetError(f"'classes' in '{root / SIDECAR}' must map image names to classes.")
    for item in plan.items:
        klass = classes.get(item.name) or (item.image and classes.get(item.image.name))
        if klass:
            item.tags["class"] = str(klass)


def _apply_csv(plan: _Plan, root: Path) -> None:
    """Tags and spacing from CSV files in the root (``manifest.csv``, HC18's pixel-size CSV)."""
    rows: dict[str, dict[str, str]] = {}
    for csv_path in sorted(root.glob("*.csv")):
        try:
            with open(csv_path, newline="", encoding="utf-8-sig") as fh:
                for row in csv.DictReader(fh):
                    key = row.get("image") or row.get("filename") or row.get("file")
                    if key:
                        rows.setdefault(key.replace("\\", "/"), {}).update(row)
                        rows.setdefault(Path(key).name, {}).update(row)
        except (OSError, UnicodeDecodeError, csv.Error):
            plan.problems.append(f"The table '{csv_path.name}' could not be read; ignored.")
    if not rows:
        return
    for item in plan.items:
        if item.image is None:
            continue
        try:
            rel = item.image.relative_to(root).as_posix()
        except ValueError:
            rel = item.image.name
        row = rows.get(rel) or rows.get(item.image.name)
        if not row:
            continue
        # a patient's images belong together when data is held out: without a group column,
        # HC18's "subject" (or a "patient" column) is the group
        group = row.get("group") or row.get("subject") or row.get("patient")
        if group:
            item.tags["group"] = group
        if row.get("class") and "class" not in item.tags:
            item.tags["class"] = row["class"]
        mm = row.get("pixel_mm") or row.get("pixel size(mm)") or row.get("pixel_size_mm")
        if mm:
            try:
                value = float(mm)
            except ValueError:
                value = float("nan")
            if math.isfinite(value) and 0 < value < 1000:
                item.provenance["_pixel_mm"] = value
            else:
                plan.problems.append(
                    f"The pixel size (pixel_mm) '{mm}' of '{item.image.name}' in the table is "
                    "not a positive number of millimetres; it was ignored."
                )


def _apply_usgen_export(plan: _Plan, root: Path) -> None:
    """A folder USGen exported: its schema file and manifest give back names, classes, tags.

    Without USGen's schema file, an ITK-SNAP label description in the root names the labels.
    """
    schema_file = root / "usgen_schema.json"
    if plan.schema is None and schema_file.is_file():
        try:
            plan.schema = LabelSchema.load(schema_file)
        except UsgenError:
            plan.problems.append("The file 'usgen_schema.json' is damaged; it was ignored.")
    if plan.schema is None:
        plan.schema = _itksnap_schema_in(root, plan.problems)
    path = root / "manifest.jsonl"
    if not path.is_file():
        return
    by_case: dict[str, dict[str, Any]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        plan.problems.append("The file 'manifest.jsonl' could not be read; it was ignored.")
        return
    unusable = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            unusable += 1
            continue
        if isinstance(rec, dict) and isinstance(rec.get("case"), (str, int)) and rec["case"] != "":
            by_case[str(rec["case"])] = rec
        else:
            unusable += 1
    if unusable:
        plan.problems.append(
            f"{unusable} line{'s' if unusable > 1 else ''} of 'manifest.jsonl' "
            f"{'are' if unusable > 1 else 'is'} not a record with a 'case'; skipped."
        )
    for item in plan.items:
        rec = by_case.get(item.name)
        if rec is None:
            continue
        tags = dict(rec["tags"]) if isinstance(rec.get("tags"), dict) else {}
        if isinstance(rec.get("class"), (str, int)) and rec["class"] != "":
            tags["class"] = str(rec["class"])
        item.tags = {**tags, **item.tags}
        # A display name only: writers make file names from it with paths.safe_filename.
        name = rec.get("name")
        if isinstance(name, (str, int, float)) and str(name).strip():
            item.name = display_name(name)
        if isinstance(rec.get("provenance"), dict):
            item.provenance.update(rec["provenance"])


def _itksnap_schema_in(root: Path, problems: list[str]) -> LabelSchema | None:
    from usgen_desktop.io.masks import read_itksnap_labels

    for txt in sorted(root.glob("*.txt")):
        try:
            with open(txt, encoding="utf-8", errors="replace") as fh:
                head = fh.read(400)
        except OSError:
            continue
        if "label description" not in head.lower():
            continue
        try:
            return read_itksnap_labels(txt)
        except UsgenError as exc:
            problems.append(f"{str(exc).rstrip('.')}; the label names were not used.")
    return None


def _guess_preset(plan: _Plan) -> LabelSchema | None:
    classes = {str(i.tags.get("class", "")).lower() for i in plan.items} - {""}
    if classes and classes <= set(BUSI_CLASSES):
        return load_preset("busi")
    if plan.items and all(_HC18_RE.match(i.name.replace("_", "")) for i in plan.items):
        return load_preset("hc18")
    return None


def _final_schema(plan: _Plan, docs: list[Document]) -> LabelSchema:
    counts = np.zeros(256, bool)
    for d in docs:
        counts |= np.bincount(d.labels.data.ravel(), minlength=256) > 0
    ids = [int(i) for i in np.flatnonzero(counts) if i > 0]
    schema = plan.schema or default_schema_for(max(ids) if ids else 1)
    generic = default_schema_for(max(ids) if ids else 1)
    for i in ids:
        if schema.get(i) is None:
            # A mask uses an id the schema does not name: add it rather than hide pixels.
            schema = schema.with_label(generic.get(i) or Label(i, f"label {i}", (255, 255, 0)))
    classes = sorted({str(d.tags["class"]) for d in docs if d.tags.get("class")}, key=_natural)
    missing = [c for c in classes if c not in schema.classes]
    if missing:
        schema = replace(schema, classes=tuple(schema.classes) + tuple(missing))
    return schema


# -- loading ------------------------------------------------------------------------------
def _load(plan: _Plan, progress: ProgressFn, cancel: CancelToken | None
          ) -> tuple[list[Document], list[str]]:
    total = len(plan.items)
    progress(Progress(0, total, "Opening images"))
    docs: list[Document] = []
    problems: list[str] = []

    def work(item: _Item) -> Document | str:
        if cancel is not None and cancel.cancelled:
            return ""
        try:
            return _load_item(item, plan.schema)
        except MaskMismatchError as exc:
            return f"{str(exc).rstrip('.')}; the pair was skipped."
        except UsgenError as exc:
            return str(exc)
        except (OSError, ValueError, MemoryError) as exc:
            name = item.image.name if item.image else item.name
            return f"'{name}' could not be opened ({exc})."
        except Exception as exc:  # a decoder's own error on a hostile file: skip and count it
            name = item.image.name if item.image else item.name
            return f"'{name}' could not be opened ({type(exc).__name__}); it was skipped."

    # Decoding releases the GIL, so a few threads open a large folder noticeably faster.
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        for n, result in enumerate(pool.map(work, plan.items), 1):
            if cancel is not None:
                cancel.raise_if_cancelled()
            if isinstance(result, Document):
                docs.append(result)
                if plan.items[n - 1].note:
                    problems.append(plan.items[n - 1].note)
            elif result:
                problems.append(result)
            progress(Progress(n, total, plan.items[n - 1].name))
    return docs, problems


def display_name(name: object) -> str:
    """A name from data as the app shows it: text without control characters (NUL, line
    breaks), at most 200 characters. File names are made from it by ``paths.safe_filename``."""
    text = "".join(c if c.isprintable() else " " for c in str(name)).strip()
    return text[:200] or "unnamed"


def _load_item(item: _Item, schema: LabelSchema | None = None) -> Document:
    notes: list[str] = []
    doc = _load_item_noted(item, schema, notes)
    if notes:
        item.note = " ".join(([item.note] if item.note else []) + notes)
    return doc


def _load_item_noted(item: _Item, schema: LabelSchema | None, notes: list[str]) -> Document:
    if item.image is None:  # a label map with no image yet
        labels = read_mask(item.masks[0], None, schema=schema, notes=notes)
        return Document(labels=labels, schema=_PLACEHOLDER, image=None, name=item.name,
                        tags=dict(item.tags),
                        provenance={k: v for k, v in item.provenance.items()
                                    if not k.startswith("_")})
    image = read_image(item.image)
    if image.pixel_spacing is None and "_pixel_mm" in item.provenance:
        mm = item.provenance["_pixel_mm"]
        image.pixel_spacing = (mm, mm)
    shape = image.shape
    if not item.masks:
        labels = LabelMap.empty(*shape)
    elif item.outline:
        outline = read_masks_or(item.masks, shape).data
        labels = LabelMap(fill_outline(outline).astype(np.uint8))
    elif len(item.masks) > 1 and item.binary:
        labels = read_masks_or(item.masks, shape)
    else:
        labels = read_mask(item.masks[0], shape, schema=schema, notes=notes)
    tags = dict(item.tags)
    if item.masks:
        image.meta["mask_files"] = [str(p) for p in item.masks]
        tags["annotated"] = True  # an empty mask file is an annotation too ("no lesion")
    provenance = {k: v for k, v in item.provenance.items() if not k.startswith("_")}
    doc = Document(
        labels=labels,
        schema=_PLACEHOLDER,
        image=image,
        name=item.name,
        tags=tags,
        provenance=provenance,
    )
    return doc


# Replaced by the final schema once every document is loaded (ids seen decide a generic one).
_PLACEHOLDER = default_schema_for(1)
