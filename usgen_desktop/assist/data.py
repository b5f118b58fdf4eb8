"""Training and evaluation samples for the click-to-mask network: one image and one object mask.

Samples come from a USGen dataset or project (every label present in a document, except the
background and the sector, is one object) or from the shared BUSI / HC18 folders. Numpy only.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from usgen_desktop.errors import DatasetError

MAX_SIDE = 512  # samples are stored with their longer side at most this (training grids are 256)


@dataclass
class Sample:
    """One object to segment: a grayscale image, its mask, and where it came from."""

    image: np.ndarray  # (h, w) uint8
    mask: np.ndarray  # (h, w) bool
    name: str
    source: str = ""  # e.g. "busi", "hc18", "project"
    group: str = ""  # near-duplicate group or subject: splits never cut through one


def _shrink(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = image.shape
    s = MAX_SIDE / max(h, w)
    if s >= 1.0:
        return image, mask
    size = (max(1, round(w * s)), max(1, round(h * s)))
    img = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    m = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    return img, m


def to_gray_u8(pixels: np.ndarray) -> np.ndarray:
    """Any image array (gray or RGB(A), any integer or float range) as (h, w) uint8."""
    a = np.asarray(pixels)
    if a.ndim == 3:
        a = a[..., :3].astype(np.float32).mean(axis=2)
    if a.dtype == np.uint8:
        return a
    a = a.astype(np.float32)
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    if lo >= 0 and hi <= 255 and hi > 1.0:
        return np.clip(a, 0, 255).astype(np.uint8)
    return np.clip((a - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)


def samples_from_documents(docs: Sequence[Any], min_pixels: int = 16) -> list[Sample]:
    """One sample per (document, painted label) pair; background and sector labels skipped."""
    out: list[Sample] = []
    for doc in docs:
        if doc.image is None:
            continue
        data = doc.labels.data
        skip = {0}
        if doc.schema.sector_id is not None:
            skip.add(int(doc.schema.sector_id))
        image = to_gray_u8(doc.image.pixels)
        for lab in np.unique(data):
            if int(lab) in skip:
                continue
            mask = data == lab
            if np.count_nonzero(mask) < min_pixels:
                continue
            img, m = _shrink(image, mask)
            out.append(Sample(img, m, f"{doc.name}#{int(lab)}", "project",
                              str(doc.tags.get("group", doc.name))))
    return out


def _read_gray(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise DatasetError(f"'{path}' could not be read as an image.")
    return img


def _held_out(split_file: Path) -> set[str]:
    lines = split_file.read_text(encoding="utf-8").splitlines()
    return {ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")}


def shared_samples(data_root: Path, split_files: dict[str, Path]) -> dict[str, list[Sample]]:
    """BUSI lesions (images with a non-empty mask) and HC18 heads from ``data_root``, split.

    ``split_files`` maps 'busi' and 'hc18' to the held-out list of the shipped generators
    (``models/sdm-default/dev_split.txt``, ``models/sdm-hc18/dev_split.txt``: 20 % of BUSI's
    near-duplicate groups, 20 % of HC18's subjects). Returns keys 'busi_train', 'busi_test',
    'hc18_train', 'hc18_test'. Raises DatasetError if a group straddles the split."""
    out: dict[str, list[Sample]] = {k: [] for k in
                                     ("busi_train", "busi_test", "hc18_train", "hc18_test")}
    for source, column in (("busi", "group"), ("hc18", "subject")):
        root = data_root / source
        held = _held_out(split_files[source])
        with open(root / "manifest.csv", newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        groups_seen: dict[str, set[bool]] = {}
        for row in rows:
            rel = Path(row["image"])
            stem = rel.stem
            mask_path = root / rel.parent.parent / "masks" / f"{stem}_mask.png"
            mask = _read_gray(mask_path) > 127
            if not mask.any():
                continue  # BUSI 'normal': nothing to click on
            test = stem in held
            groups_seen.setdefault(row[column], set()).add(test)
            img, m = _shrink(_read_gray(root / rel), mask)
            out[f"{source}_{'test' if test else 'train'}"].append(
                Sample(img, m, stem, source, row[column]))
        straddle = [g for g, sides in groups_seen.items() if len(sides) > 1]
        if straddle:
            raise DatasetError(f"{source}: group '{straddle[0]}' is on both sides of the split.")
    return out


def normalise_image(grid: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Standardise a grid image over its valid pixels (mean 0, sd 1); padding stays 0.

    Per image, so a darker scanner or a different gain does not move the network's input."""
    v = valid > 0
    vals = grid[v]
    if vals.size == 0:
        return np.zeros_like(grid, dtype=np.float32)
    mean = float(vals.mean())
    sd = float(vals.std()) + 1.0  # +1 grey level: flat images do not blow up
    out = (grid.astype(np.float32) - mean) / sd
    out[~v] = 0.0
    return out


def object_box(mask: np.ndarray, points: Sequence[tuple[float, float]] = (), expand: float = 1.4,
               min_side: int = 48) -> tuple[int, int, int, int] | None:
    """The zoom-in region (x0, y0, x1, y1) around a mask and points, each side ``expand`` times.

    RITM's zoom-in: once there is a first answer, the network looks at a crop around it, so a
    small lesion fills the grid instead of a few of its pixels. None when the region would cover
    most of the image anyway (or there is nothing to zoom on)."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    xs = np.concatenate([xs.astype(np.float64), [p[0] for p in points]])
    ys = np.concatenate([ys.astype(np.float64), [p[1] for p in points]])
    if xs.size == 0:
        return None
    cx, cy = (xs.min() + xs.max() + 1) / 2.0, (ys.min() + ys.max() + 1) / 2.0
    side = max(min_side, 0.2 * max(h, w))
    bw = max((xs.max() - xs.min() + 1) * expand, side)
    bh = max((ys.max() - ys.min() + 1) * expand, side)
    x0, x1 = max(0, round(cx - bw / 2)), min(w, round(cx + bw / 2))
    y0, y1 = max(0, round(cy - bh / 2)), min(h, round(cy + bh / 2))
    if (x1 - x0) * (y1 - y0) >= 0.7 * h * w or x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return int(x0), int(y0), int(x1), int(y1)


def zoom_crop(sample: Sample, rng: np.random.Generator) -> Sample:
    """A random crop around the object, as the zoom-in at inference sees it (see object_box)."""
    box = object_box(sample.mask, expand=float(rng.uniform(1.25, 2.2)))
    if box is None:
        return sample
    x0, y0, x1, y1 = box
    h, w = sample.mask.shape
    dx = round(float(rng.uniform(-0.12, 0.12)) * (x1 - x0))
    dy = round(float(rng.uniform(-0.12, 0.12)) * (y1 - y0))
    dx = min(max(dx, -x0), w - x1)
    dy = min(max(dy, -y0), h - y1)
    x0, x1, y0, y1 = x0 + dx, x1 + dx, y0 + dy, y1 + dy
    return Sample(sample.image[y0:y1, x0:x1], sample.mask[y0:y1, x0:x1], sample.name,
                  sample.source, sample.group)


def augment(sample: Sample, size: int, rng: np.random.Generator, strength: float = 1.0
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A randomly zoomed, rotated, flipped, shifted and re-contrasted copy on the ``size`` grid.

    Returns (normalised image, mask bool, valid float32). ``strength`` 0 gives the plain
    letterbox that inference uses (``clicks.Letterbox``). The object keeps a few grid pixels."""
    h0, w0 = sample.image.shape
    base = size / max(h0, w0)
    for _ in range(4):
        s = base * float(np.exp(rng.uniform(-0.25, 0.25) * strength))
        # shrink with area averaging first (as inference does), then warp at scale 1: a
        # bilinear warp that shrinks would alias the speckle the network must read
        w, h = max(1, round(w0 * s)), max(1, round(h0 * s))
        src = cv2.resize(sample.image.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
        msk = cv2.resize(sample.mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        if strength == 0:
            img = np.zeros((size, size), np.float32)
            mask = np.zeros((size, size), bool)
            valid = np.zeros((size, size), np.float32)
            hh, ww = min(h, size), min(w, size)
            img[:hh, :ww] = src[:hh, :ww]
            mask[:hh, :ww] = msk[:hh, :ww] > 0
            valid[:hh, :ww] = 1.0
            break
        m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), float(rng.uniform(-12, 12) * strength),
                                    1.0)
        shift = rng.uniform(-0.12, 0.12, size=2) * size * strength
        m[0, 2] += shift[0]
        m[1, 2] += shift[1]
        if rng.random() < 0.5:
            m = m @ np.array([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        img = cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0)
        mask = cv2.warpAffine(msk, m, (size, size), flags=cv2.INTER_NEAREST, borderValue=0) > 0
        valid = cv2.warpAffine(np.ones((h, w), np.float32), m, (size, size),
                               flags=cv2.INTER_NEAREST, borderValue=0.0)
        if np.count_nonzero(mask) >= 12:
            break
        strength = 0.0  # the object fell off the grid: fall back to the plain letterbox
    if strength > 0:
        gamma = float(np.exp(rng.uniform(-0.35, 0.35) * strength))
        img = 255.0 * (np.clip(img, 0, 255) / 255.0) ** gamma
        img = img * float(rng.uniform(0.85, 1.15)) + float(rng.normal(0, 4))
        if rng.random() < 0.3:
            img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.4, 1.2)))
    return normalise_image(img, valid), mask, valid
