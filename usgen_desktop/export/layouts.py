"""Where each export format puts its files, and the dataset descriptions it writes.

``folder``: ``images/<case>.png`` + ``masks/<case>.png`` with the schema's own ids, plus the
schema as ``labels.json`` and an ITK-SNAP label file.
``nnunet``: nnU-Net v2 ``DatasetNNN_Name/imagesTr/<case>_0000.png`` + ``labelsTr/<case>.png`` and
``dataset.json`` (channel_names, labels name -> consecutive id, numTraining, file_ending).
``decathlon``: ``imagesTr/<case>.png`` + ``labelsTr/<case>.png`` and a Medical-Decathlon
``dataset.json`` (labels id -> name, training list), which MONAI's ``load_decathlon_datalist``
reads. nnU-Net and Decathlon exports remap the schema's ids to consecutive ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from usgen_desktop.core.labels import Label, LabelSchema

FORMATS = ("folder", "nnunet", "decathlon")
_DATASET_RE = re.compile(r"^Dataset\d{3}_[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class Layout:
    """Paths of one export format, relative to the dataset folder."""

    fmt: str
    image_dir: str
    label_dir: str
    image_suffix: str  # appended to the case id
    remap: bool  # consecutive label ids

    def image_rel(self, case: str) -> str:
        return f"{self.image_dir}/{case}{self.image_suffix}.png"

    def label_rel(self, case: str) -> str:
        return f"{self.label_dir}/{case}.png"

    @property
    def dirs(self) -> tuple[str, str]:
        return (self.image_dir, self.label_dir)


LAYOUTS = {
    "folder": Layout("folder", "images", "masks", "", remap=False),
    "nnunet": Layout("nnunet", "imagesTr", "labelsTr", "_0000", remap=True),
    "decathlon": Layout("decathlon", "imagesTr", "labelsTr", "", remap=True),
}


def dataset_folder(out_dir: Path, fmt: str, name: str, dataset_id: int) -> Path:
    """The folder the export writes into.

    nnU-Net expects ``nnUNet_raw/DatasetNNN_Name``: ``out_dir`` is taken as that folder when its
    name already has this form, else the dataset folder is made inside it.
    """
    out_dir = Path(out_dir)
    if fmt != "nnunet" or _DATASET_RE.match(out_dir.name):
        return out_dir
    if _DATASET_RE.match(str(name)):
        return out_dir / str(name)
    return out_dir / f"Dataset{dataset_id:03d}_{safe_name(name) or 'USGen'}"


def safe_name(text: str) -> str:
    """A file-system and nnU-Net friendly identifier (letters, digits, '_', '-')."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", str(text)).strip("_")


def case_ids(names: list[str], taken: set[str] | None = None) -> list[str]:
    """Unique, file-safe case ids in order (``benign (1)`` -> ``benign_1``), avoiding ``taken``."""
    used = {t.lower() for t in taken or ()}
    out = []
    for i, name in enumerate(names):
        # Long names are cut (with a hash of the whole, so they stay distinct): a case id
        # plus "_0000.png" and a temporary suffix must fit a file system's 255-byte names.
        from usgen_desktop.paths import shorten_name

        base = shorten_name(safe_name(name), 100) or f"case_{i:04d}"
        # nnU-Net reads a trailing _NNNN as the channel: keep case ids from ending that way.
        if re.search(r"_\d{4}$", base):
            base += "_c"
        case, n = base, 1
        while case.lower() in used:  # lower: case-insensitive file systems (macOS, Windows)
            n += 1
            case = f"{base}_{n}"
        used.add(case.lower())
        out.append(case)
    return out


@dataclass(frozen=True)
class LabelMapping:
    """Schema ids -> exported ids (identity for the folder format) and exported names."""

    to_export: dict[int, int]
    names: dict[int, str]  # exported id -> name
    lut: np.ndarray  # 256 uint8 lookup table

    @classmethod
    def build(cls, schema: LabelSchema, used_ids: set[int], consecutive: bool) -> LabelMapping:
        """Consecutive exports declare only the ids the exported maps use (a class that never
        occurs would be a dead output channel in nnU-Net); folder exports keep every schema id.
        """
        if consecutive:
            ids = sorted(set(used_ids) | {0})
        else:
            ids = sorted(set(schema.ids) | set(used_ids) | {0})
        names: dict[int, str] = {}
        to_export: dict[int, int] = {}
        for new, old in enumerate(ids):
            target = new if consecutive else old
            to_export[old] = target
            lab = schema.get(old)
            name = lab.name if lab else f"label {old}"
            if name in names.values():  # nnU-Net maps names to ids: they must be unique
                name = f"{name} ({old})"
            names[target] = name
        if consecutive:
            names[0] = "background"  # nnU-Net requires id 0 to be called background
        lut = np.zeros(256, np.uint8)
        for old, new in to_export.items():
            lut[old] = new
        return cls(to_export, names, lut)

    def apply(self, data: np.ndarray) -> np.ndarray:
        return self.lut[data]

    @property
    def is_identity(self) -> bool:
        return all(k == v for k, v in self.to_export.items())

    def schema_for_export(self, schema: LabelSchema) -> LabelSchema:
        """The schema in the exported id space (so a re-import keeps names and colours)."""
        labels = []
        for old, new in sorted(self.to_export.items(), key=lambda kv: kv[1]):
            lab = schema.get(old) or Label(old, self.names[new], (255, 255, 0))
            labels.append(Label(new, self.names[new] if new == 0 else lab.name, lab.color,
                                lab.visible, lab.tissue))
        sector = schema.sector_id
        return LabelSchema(
            name=schema.name,
            labels=tuple(labels),
            sector_id=self.to_export.get(sector) if sector is not None else None,
            classes=schema.classes,
            class_tissue={
                k: {self.to_export[i]: t for i, t in v.items() if i in self.to_export}
                for k, v in schema.class_tissue.items()
            },
            probe=schema.probe,
        )


def dataset_json(fmt: str, name: str, mapping: LabelMapping, cases: list[str],
                 layout: Layout, description: str = "") -> dict[str, Any] | None:
    """The ``dataset.json`` of an nnU-Net v2 or Decathlon export (None for folders)."""
    if fmt == "nnunet":
        return {
            "channel_names": {"0": "US"},
            "labels": {mapping.names[i]: i for i in sorted(mapping.names)},
            "numTraining": len(cases),
            "file_ending": ".png",
            "name": name,
            "description": description or "Exported by USGen Desktop",
            "overwrite_image_reader_writer": "NaturalImage2DIO",
        }
    if fmt == "decathlon":
        return {
            "name": name,
            "description": description or "Exported by USGen Desktop",
            "modality": {"0": "US"},
            "labels": {str(i): mapping.names[i] for i in sorted(mapping.names)},
            "numTraining": len(cases),
            "numTest": 0,
            "training": [
                {"image": f"./{layout.image_rel(c)}", "label": f"./{layout.label_rel(c)}"}
                for c in cases
            ],
            "test": [],
        }
    return None
