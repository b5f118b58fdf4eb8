"""Planning the import of an nnU-Net v2 or Medical-Decathlon style dataset folder.

nnU-Net v2: ``dataset.json`` with ``labels`` (name -> id), ``file_ending``, ``channel_names``;
images ``imagesTr/<case>_0000<ending>``, labels ``labelsTr/<case><ending>``; test images in
``imagesTs``. Decathlon: ``dataset.json`` with ``labels`` (id -> name) and a ``training`` list of
``{"image", "label"}`` paths.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from usgen_desktop.core.labels import Label, LabelSchema, default_schema_for
from usgen_desktop.errors import DatasetError, UsgenError
from usgen_desktop.io.images import is_image_file, suffix_of

_CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")


def plan_nnunet(root: Path) -> tuple[list, str, LabelSchema | None, list[str]]:
    """(items, layout, schema, problems) for a dataset folder holding ``dataset.json``."""
    from usgen_desktop.io.datasets import _Item, _natural

    try:
        meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as exc:
        raise DatasetError(f"The file '{root / 'dataset.json'}' is not valid JSON.") from exc
    problems: list[str] = []
    schema = _schema_from(root, meta, problems)
    items: list[Any] = []
    if "file_ending" not in meta and isinstance(meta.get("training"), list):
        layout = "decathlon"
        skipped = 0
        for entry in meta["training"]:
            if not isinstance(entry, dict) or "image" not in entry:
                skipped += 1
                continue
            try:
                # Paths in dataset.json are the dataset's own files: '../' or an absolute path
                # would import (and export) a file from anywhere on the computer.
                image = _listed_path(root, entry["image"], "image")
                label = entry.get("label")
                masks = [_listed_path(root, label, "label")] if label else []
            except UsgenError as exc:
                problems.append(f"{str(exc).rstrip('.')}; that entry of dataset.json was skipped.")
                continue
            case = _strip_suffix(image.name)
            items.append(_Item(image, masks, case, {"split": "train"}, binary=False))
        if skipped:
            problems.append(f"{skipped} entries of the training list in dataset.json are not "
                            "{\"image\": ..., \"label\": ...} records; they were skipped.")
        missing = [i for i in items if not i.image.exists()]
        for it in missing:
            problems.append(f"The image '{it.image.name}' listed in dataset.json is missing.")
        items = [i for i in items if i.image.exists()]
    else:
        layout = "nnunet_v2"
        ending = str(meta.get("file_ending") or ".png")
        channels = meta.get("channel_names") or meta.get("modality") or {"0": "?"}
        if isinstance(channels, dict) and len(channels) > 1:
            problems.append(
                f"The dataset has {len(channels)} channels; USGen opens channel 0 of each case."
            )
        for split, images_dir, labels_dir in (("train", "imagesTr", "labelsTr"),
                                              ("test", "imagesTs", None)):
            folder = root / images_dir
            if not folder.is_dir():
                continue
            for p in sorted(folder.iterdir(), key=lambda q: _natural(q.name)):
                if not (is_image_file(p) and p.name.endswith(ending)):
                    continue
                m = _CHANNEL_RE.match(p.name[: -len(ending)])
                if not m:
                    problems.append(
                        f"'{p.name}' does not follow nnU-Net's <case>_0000{ending} naming; skipped."
                    )
                    continue
                if m.group("ch") != "0000":
                    continue
                case = m.group("case")
                masks = []
                if labels_dir:
                    label = root / labels_dir / f"{case}{ending}"
                    if label.is_file():
                        masks = [label]
                    else:
                        problems.append(f"Case '{case}' has no label file; it opens unlabelled.")
                items.append(_Item(p, masks, case, {"split": split},
                                   binary=False))
    return items, layout, schema, problems


def _listed_path(root: Path, value: Any, what: str) -> Path:
    """A path listed in dataset.json, when it is a file name inside the dataset ``root``."""
    from usgen_desktop.paths import inside

    if not isinstance(value, str) or not value.strip():
        raise UsgenError(f"The {what} entry {json.dumps(value)[:60]} in dataset.json is not a "
                         "file name")
    try:
        return inside(root, value, f"The {what} path listed in dataset.json")
    except UsgenError as exc:
        raise UsgenError(str(exc).replace(f"points outside '{root}'",
                                          "points outside the dataset folder")) from exc


def _strip_suffix(name: str) -> str:
    return name[: -len(suffix_of(Path(name)))] if suffix_of(Path(name)) else name


def _schema_from(root: Path, meta: dict[str, Any], problems: list[str]) -> LabelSchema | None:
    """The exporter's own schema file if present, else one built from ``labels``."""
    own = root / "usgen_schema.json"
    if own.is_file():
        try:
            return LabelSchema.load(own)
        except UsgenError:
            problems.append("The file 'usgen_schema.json' is damaged; labels come from dataset.json.")
    labels = meta.get("labels")
    if not isinstance(labels, dict) or not labels:
        return None
    pairs: list[tuple[int, str]] = []
    for key, value in labels.items():
        try:
            if isinstance(value, (int, float)) or (isinstance(value, str) and value.isdigit()
                                                   and not str(key).isdigit()):
                pairs.append((int(value), str(key)))  # nnU-Net v2: name -> id
            elif str(key).lstrip("-").isdigit():
                pairs.append((int(key), str(value)))  # Decathlon: id -> name
            elif isinstance(value, list):
                problems.append(
                    f"Label '{key}' is a region (several ids); USGen opens the ids as they are."
                )
        except (TypeError, ValueError):
            continue
    pairs = [(i, n) for i, n in pairs if 0 <= i <= 255]
    if not pairs:
        return None
    generic = default_schema_for(max(i for i, _ in pairs) or 1)
    built = {0: Label(0, "background", (0, 0, 0))}
    for i, name in pairs:
        base = generic.get(i) or Label(i, name, (255, 255, 0))
        built[i] = Label(i, name, base.color)
    return LabelSchema(name=root.name, labels=tuple(built[i] for i in sorted(built)))
