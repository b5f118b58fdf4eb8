"""Label maps (uint8 ids per pixel) and label schemas (what each id means and looks like)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from usgen_desktop.errors import MaskMismatchError, UsgenError

MAX_LABEL_ID = 255
# the class prompts of seeds/000 and 002, used by Stable Diffusion backends when neither the
# request nor the schema (``LabelSchema.prompts``) gives one
DEFAULT_PROMPTS: dict[str | None, str] = {
    "benign": "ultrasound image of breast with a benign lesion",
    "malignant": "ultrasound image of breast with a malignant lesion",
    "normal": "ultrasound image of normal breast tissue",
    None: "ultrasound image",
}


@dataclass(frozen=True)
class Tissue:
    """Acoustic properties of one label, used by the speckle simulator.

    ``echogenicity`` is the mean backscatter amplitude relative to normal tissue (1.0);
    ``density`` scatterers per resolution cell (>= ~10 gives fully developed speckle);
    ``attenuation`` in dB/cm/MHz; ``posterior`` is the gain multiplier applied in the column
    below the region (< 1 shadowing, > 1 enhancement); ``core`` darkens the region's interior
    (0 none, 1 fully anechoic core); ``outside`` marks pixels outside the imaged field (black).
    """

    echogenicity: float = 1.0
    density: float = 12.0
    attenuation: float = 0.5
    posterior: float = 1.0
    core: float = 0.0
    outside: bool = False


@dataclass(frozen=True)
class Label:
    id: int
    name: str
    color: tuple[int, int, int]
    visible: bool = True
    tissue: Tissue = field(default_factory=Tissue)


@dataclass(frozen=True)
class LabelSchema:
    """The meaning of each label id in a project: names, colours, visibility, tissue presets.

    ``sector_id`` names the id of the probe's field of view when the schema has one; id 0 then
    means "outside the fan". ``classes`` are image-level tags (e.g. BUSI's normal/benign/
    malignant); ``class_tissue`` overrides label tissue per class (a malignant lesion shadows).
    ``prompts`` maps a class to the text prompt Stable Diffusion backends use for it (the
    radiology-style class prompts of seeds/002), so a project keeps its own wording.
    """

    name: str
    labels: tuple[Label, ...]
    sector_id: int | None = None
    classes: tuple[str, ...] = ()
    class_tissue: dict[str, dict[int, Tissue]] = field(default_factory=dict)
    probe: str = "linear"  # linear | curvilinear | phased: default geometry for new masks
    prompts: dict[str, str] = field(default_factory=dict)  # class -> text prompt

    # -- lookups -----------------------------------------------------------------------
    def __post_init__(self) -> None:
        ids = [lab.id for lab in self.labels]
        if len(set(ids)) != len(ids):
            raise UsgenError(f"Label schema '{self.name}' uses the same id twice.")
        if any(not 0 <= i <= MAX_LABEL_ID for i in ids):
            raise UsgenError(f"Label schema '{self.name}' has an id outside 0-255.")
        if 0 not in ids:
            raise UsgenError(f"Label schema '{self.name}' needs a label with id 0 (background).")

    def by_id(self, label_id: int) -> Label:
        for lab in self.labels:
            if lab.id == label_id:
                return lab
        raise KeyError(label_id)

    def get(self, label_id: int) -> Label | None:
        try:
            return self.by_id(label_id)
        except KeyError:
            return None

    @property
    def ids(self) -> list[int]:
        return [lab.id for lab in self.labels]

    @property
    def foreground(self) -> list[Label]:
        return [lab for lab in self.labels if lab.id != 0]

    def tissue_for(self, label_id: int, klass: str | None = None) -> Tissue:
        if klass and klass in self.class_tissue and label_id in self.class_tissue[klass]:
            return self.class_tissue[klass][label_id]
        lab = self.get(label_id)
        return lab.tissue if lab else Tissue()

    def lut(self) -> np.ndarray:
        """A 256x4 RGBA lookup table (uint8): hidden labels and id 0 are transparent."""
        table = np.zeros((256, 4), np.uint8)
        for lab in self.labels:
            if lab.id == 0 or not lab.visible:
                continue
            table[lab.id, :3] = lab.color
            table[lab.id, 3] = 255
        return table

    # -- edits return new schemas (frozen) ---------------------------------------------
    def with_label(self, label: Label) -> LabelSchema:
        others = [lab for lab in self.labels if lab.id != label.id]
        return replace(self, labels=tuple(sorted([*others, label], key=lambda x: x.id)))

    def renamed(self, label_id: int, name: str) -> LabelSchema:
        return self.with_label(replace(self.by_id(label_id), name=name))

    def recoloured(self, label_id: int, color: tuple[int, int, int]) -> LabelSchema:
        return self.with_label(replace(self.by_id(label_id), color=tuple(int(c) for c in color)))

    def with_visibility(self, label_id: int, visible: bool) -> LabelSchema:
        return self.with_label(replace(self.by_id(label_id), visible=visible))

    def prompt_for(self, klass: str | None) -> str | None:
        """The schema's own prompt for ``klass`` (None when it sets none)."""
        return self.prompts.get(klass) if klass else None

    def prompt_or_default(self, klass: str | None) -> str:
        """The schema's prompt for ``klass``, else the built-in one, else a generic one."""
        return (self.prompt_for(klass) or DEFAULT_PROMPTS.get(klass)
                or f"ultrasound image, {klass}")

    def with_prompt(self, klass: str, text: str | None) -> LabelSchema:
        """A schema whose prompt for ``klass`` is ``text`` (empty or None removes it)."""
        prompts = {k: v for k, v in self.prompts.items() if k != klass}
        if text and text.strip():
            prompts[str(klass)] = text.strip()
        return replace(self, prompts=prompts)

    # -- JSON --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "probe": self.probe,
            "sector_id": self.sector_id,
            "classes": list(self.classes),
            "labels": [
                {
                    "id": lab.id,
                    "name": lab.name,
                    "color": list(lab.color),
                    "visible": lab.visible,
                    "tissue": asdict(lab.tissue),
                }
                for lab in self.labels
            ],
            "class_tissue": {
                k: {str(i): asdict(t) for i, t in v.items()} for k, v in self.class_tissue.items()
            },
            **({"prompts": dict(self.prompts)} if self.prompts else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelSchema:
        try:
            labels = tuple(
                Label(
                    id=int(x["id"]),
                    name=str(x["name"]),
                    color=tuple(int(c) for c in x.get("color", (255, 255, 0)))[:3],  # type: ignore[arg-type]
                    visible=bool(x.get("visible", True)),
                    tissue=Tissue(**x.get("tissue", {})),
                )
                for x in d["labels"]
            )
            class_tissue = {
                k: {int(i): Tissue(**t) for i, t in v.items()}
                for k, v in d.get("class_tissue", {}).items()
            }
            return cls(
                name=str(d.get("name", "custom")),
                labels=tuple(sorted(labels, key=lambda x: x.id)),
                sector_id=d.get("sector_id"),
                classes=tuple(d.get("classes", ())),
                class_tissue=class_tissue,
                probe=str(d.get("probe", "linear")),
                prompts={str(k): str(v) for k, v in (d.get("prompts") or {}).items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UsgenError(f"The label schema is not valid ({exc}).") from exc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> LabelSchema:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise UsgenError(f"The label schema file is not valid JSON ({exc.msg}).") from exc

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> LabelSchema:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


def preset_names() -> list[str]:
    """Names of the label-schema presets shipped in resources/schemas."""
    from usgen_desktop.paths import resources_dir

    return sorted(p.stem for p in (resources_dir() / "schemas").glob("*.json"))


def load_preset(name: str) -> LabelSchema:
    """A shipped preset: ``busi`` (breast lesion), ``hc18`` (fetal head + sector), ``echo``."""
    from usgen_desktop.paths import resources_dir

    path = resources_dir() / "schemas" / f"{name}.json"
    if not path.exists():
        raise UsgenError(
            f"There is no label preset named '{name}' (known: {', '.join(preset_names())})."
        )
    return LabelSchema.load(path)


def default_schema_for(n_labels: int) -> LabelSchema:
    """A generic schema when a dataset brings no description: background + numbered labels."""
    palette = [(255, 64, 64), (64, 200, 255), (255, 200, 0), (120, 255, 120), (255, 100, 255)]
    labels = [Label(0, "background", (0, 0, 0))]
    for i in range(1, max(1, n_labels) + 1):
        labels.append(Label(i, f"label {i}", palette[(i - 1) % len(palette)]))
    return LabelSchema(name="generic", labels=tuple(labels))


class LabelMap:
    """A 2-D uint8 array of label ids, one per image pixel."""

    __slots__ = ("data",)

    def __init__(self, data: np.ndarray) -> None:
        arr = np.asarray(data)
        if arr.ndim != 2:
            raise MaskMismatchError(f"A label map must be 2-D; this one has shape {arr.shape}.")
        if arr.dtype != np.uint8:
            if arr.size and (arr.min() < 0 or arr.max() > MAX_LABEL_ID):
                raise MaskMismatchError("Label ids must lie between 0 and 255.")
            arr = arr.astype(np.uint8)
        self.data = np.ascontiguousarray(arr)

    @classmethod
    def empty(cls, height: int, width: int) -> LabelMap:
        return cls(np.zeros((height, width), np.uint8))

    @property
    def shape(self) -> tuple[int, int]:
        return self.data.shape  # type: ignore[return-value]

    def ids(self) -> list[int]:
        return [int(i) for i in np.unique(self.data)]

    def copy(self) -> LabelMap:
        return LabelMap(self.data.copy())

    def check_fits(self, height: int, width: int, what: str = "the image") -> None:
        if self.shape != (height, width):
            raise MaskMismatchError(
                f"The mask is {self.shape[1]}x{self.shape[0]} pixels but {what} is "
                f"{width}x{height}."
            )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelMap) and np.array_equal(self.data, other.data)

    def __repr__(self) -> str:
        return f"LabelMap({self.shape[1]}x{self.shape[0]}, ids={self.ids()})"
