"""Training data for the generators: (image, label map, class) triples, resized once, augmented
per batch with the same geometric transform for image and labels (nearest on labels).

Torch-free on purpose: the same helpers serve the sdm trainer, the LoRA trainer and the scripts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from usgen_desktop.core.labels import LabelMap, LabelSchema, default_schema_for
from usgen_desktop.errors import DatasetError

Triple = tuple[np.ndarray, Any, str | None]  # image uint8 HxW, LabelMap or uint8 HxW, class


@dataclass
class PreparedData:
    """Every pair resized to the training size, as stacked uint8 arrays (small: 1,400 pairs at
    128² take 45 MB), plus the class names in index order."""

    images: np.ndarray  # (N, H, W) uint8
    labels: np.ndarray  # (N, H, W) uint8
    class_idx: np.ndarray  # (N,) int64; len(classes) = no class
    classes: list[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _gray(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 3:
        img = img[..., :3].mean(axis=2)
    if img.dtype != np.uint8:
        lo, hi = float(img.min()), float(img.max())
        img = (img - lo) / (hi - lo + 1e-8) * 255.0 if (hi > 255 or lo < 0) else img
        img = np.clip(img, 0, 255).astype(np.uint8)
    return img


def prepare(
    data: Iterable[Triple], size: tuple[int, int], classes: Sequence[str] | None = None
) -> PreparedData:
    """Resize every pair to ``size`` (area for images, nearest for labels); classes not in
    ``classes`` (or None) map to the "no class" index."""
    import cv2

    imgs, labs, cls_names = [], [], []
    for img, lab, klass in data:
        img = _gray(img)
        lab = lab.data if isinstance(lab, LabelMap) else np.asarray(lab, np.uint8)
        if img.shape != lab.shape:
            raise DatasetError(
                f"An image is {img.shape[1]}x{img.shape[0]} but its label map is "
                f"{lab.shape[1]}x{lab.shape[0]}."
            )
        imgs.append(cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA))
        labs.append(cv2.resize(lab, (size[1], size[0]), interpolation=cv2.INTER_NEAREST))
        cls_names.append(klass)
    if not imgs:
        raise DatasetError("The training set holds no image/label pairs.")
    if classes is None:
        classes = sorted({c for c in cls_names if c})
    classes = list(classes)
    idx = np.array([classes.index(c) if c in classes else len(classes) for c in cls_names])
    return PreparedData(np.stack(imgs), np.stack(labs), idx.astype(np.int64), classes)


def schema_from_labels(labels: np.ndarray) -> LabelSchema:
    """A generic schema covering every id seen, for data that brings no schema."""
    ids = [int(i) for i in np.unique(labels)]
    return default_schema_for(max(1, max(ids)))


def augment(
    img: np.ndarray, lab: np.ndarray, rng: np.random.Generator, strength: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """A random left-right flip and a small affine (rotation ±5°, scale 0.92-1.08, shift 4 %),
    the same for image and labels. Never an up-down flip: depth runs down in ultrasound, and
    shadows and gain follow it."""
    import cv2

    h, w = img.shape
    if rng.random() < 0.5:
        img, lab = img[:, ::-1], lab[:, ::-1]
    if strength > 0 and rng.random() < 0.8:
        ang = rng.uniform(-5, 5) * strength
        sc = 1.0 + rng.uniform(-0.08, 0.08) * strength
        tx, ty = rng.uniform(-0.04, 0.04, 2) * strength * np.array([w, h])
        m = cv2.getRotationMatrix2D((w / 2, h / 2), ang, sc)
        m[:, 2] += (tx, ty)
        # reflect rather than black borders: black would teach the model an edge no scan has.
        # Lanczos, not bilinear: a bilinear warp of a 128² BUSI image takes away about 40 % of
        # the power in the finest half-octave of speckle (-0.21 log10; Lanczos -0.10), and a
        # model trained on such images draws speckle that is too smooth
        img = cv2.warpAffine(np.ascontiguousarray(img), m, (w, h), flags=cv2.INTER_LANCZOS4,
                             borderMode=cv2.BORDER_REFLECT_101)
        lab = cv2.warpAffine(np.ascontiguousarray(lab), m, (w, h), flags=cv2.INTER_NEAREST,
                             borderMode=cv2.BORDER_REFLECT_101)
    return np.ascontiguousarray(img), np.ascontiguousarray(lab)


def from_dataset(path: str | Path) -> tuple[list[Triple], LabelSchema | None]:
    """Load a dataset folder through ``usgen_desktop.io.open_dataset`` into triples; the class
    comes from each document's ``tags["class"]`` when the layout has one."""
    try:
        from usgen_desktop.io import open_dataset  # type: ignore[attr-defined]
    except ImportError as exc:  # the dataset readers are another module of the app
        raise DatasetError("This build cannot read datasets (usgen_desktop.io is missing).") from exc
    res = open_dataset(Path(path))
    # open_dataset returns an ImportResult (documents + the dataset's schema)
    docs = getattr(res, "documents", res)
    schema = getattr(res, "schema", None)
    triples: list[Triple] = []
    for doc in docs:
        img = doc.image
        if img is None:  # a label map still waiting for its image teaches nothing
            continue
        img = img.to_uint8() if hasattr(img, "to_uint8") else np.asarray(img)
        tags = getattr(doc, "tags", {}) or {}
        triples.append((img, doc.labels, tags.get("class")))
        if schema is None:
            schema = getattr(doc, "schema", None)
    if not triples:
        raise DatasetError(f"The dataset '{path}' holds no image/label pairs.")
    return triples, schema
