"""Documents to fixed-size arrays, and splits that never put one near-duplicate group on both
sides (BUSI holds many copies of the same frame)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from usgen_desktop.errors import DatasetError


@dataclass
class EvalSet:
    """Images (float32 in 0..1, N x S x S), label maps as class indices (uint8, N x S x S),
    and what is known of each document."""

    images: np.ndarray
    masks: np.ndarray
    names: list[str]
    groups: list[str]
    classes: list[str | None]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: Sequence[int] | np.ndarray) -> EvalSet:
        idx = np.asarray(index, dtype=np.int64)
        return EvalSet(
            self.images[idx],
            self.masks[idx],
            [self.names[i] for i in idx],
            [self.groups[i] for i in idx],
            [self.classes[i] for i in idx],
        )

    @staticmethod
    def concat(a: EvalSet, b: EvalSet) -> EvalSet:
        return EvalSet(
            np.concatenate([a.images, b.images]),
            np.concatenate([a.masks, b.masks]),
            a.names + b.names,
            a.groups + b.groups,
            a.classes + b.classes,
        )


def doc_name(doc: Any) -> str:
    src = getattr(getattr(doc, "image", None), "source", None)
    return str(getattr(doc, "name", None) or (Path(src).name if src else "untitled"))


def doc_group(doc: Any, column: str = "group") -> str:
    """The document's near-duplicate group; a document without one is its own group."""
    tags = getattr(doc, "tags", {}) or {}
    g = tags.get(column)
    return str(g) if g not in (None, "") else f"doc:{doc_name(doc)}"


def label_ids_of(docs: Iterable[Any]) -> list[int]:
    """Every label id used by any document, background 0 first."""
    ids: set[int] = {0}
    for d in docs:
        ids.update(int(i) for i in np.unique(d.labels.data))
    return sorted(ids)


def to_arrays(docs: Sequence[Any], size: int, label_ids: Sequence[int],
              group_column: str = "group") -> EvalSet:
    """Resize every image (area) and label map (nearest) to ``size`` x ``size``."""
    import cv2

    lut = np.zeros(256, np.uint8)
    for k, lid in enumerate(label_ids):
        lut[int(lid)] = k
    n = len(docs)
    images = np.zeros((n, size, size), np.float32)
    masks = np.zeros((n, size, size), np.uint8)
    for i, d in enumerate(docs):
        if d.image is None:
            raise DatasetError(f"'{doc_name(d)}' has a label map but no image to evaluate.")
        px = d.image.to_uint8()
        interp = cv2.INTER_AREA if min(px.shape) >= size else cv2.INTER_LINEAR
        images[i] = cv2.resize(px, (size, size), interpolation=interp).astype(np.float32) / 255.0
        masks[i] = lut[cv2.resize(d.labels.data, (size, size), interpolation=cv2.INTER_NEAREST)]
    return EvalSet(
        images,
        masks,
        [doc_name(d) for d in docs],
        [doc_group(d, group_column) for d in docs],
        [(getattr(d, "tags", {}) or {}).get("class") for d in docs],
    )


def split_by_groups(groups: Sequence[str], chosen: set[str]) -> tuple[np.ndarray, np.ndarray]:
    """Indices (ascending) of the items whose group is in ``chosen``, and of the rest."""
    inside = np.array([g in chosen for g in groups], dtype=bool)
    return np.flatnonzero(inside).astype(np.int64), np.flatnonzero(~inside).astype(np.int64)


def group_split(groups: Sequence[str], test_fraction: float, seed: int,
                strata: Sequence[str | None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices with whole groups on one side; about ``test_fraction`` of the
    *groups* go to test (at least one group on each side when there are two or more).

    With ``strata`` (e.g. each image's class) the fraction is taken within each stratum, so
    a rare class is not left out of the test side by chance; a group whose images carry
    several classes forms a stratum of its own."""
    uniq = sorted(set(groups))
    if len(uniq) < 2:
        raise DatasetError("The real dataset needs at least two images (groups) to hold one out.")
    rng = np.random.default_rng(seed)
    stratum_of: dict[str, set[str]] = {g: set() for g in uniq}
    if strata is not None:
        for g, s in zip(groups, strata, strict=True):
            stratum_of[g].add(str(s))
    by_stratum: dict[str, list[str]] = {}
    for g in uniq:
        by_stratum.setdefault("+".join(sorted(stratum_of[g])), []).append(g)
    test_groups: set[str] = set()
    for key in sorted(by_stratum):
        members = by_stratum[key]
        order = rng.permutation(len(members))
        n_test = int(round(len(members) * test_fraction))
        test_groups.update(members[i] for i in order[:n_test])
    if not test_groups:  # tiny sets: hold out one group anyway
        test_groups = {uniq[int(rng.integers(len(uniq)))]}
    if len(test_groups) == len(uniq):
        test_groups.discard(sorted(test_groups)[0])
    test, train = split_by_groups(groups, test_groups)
    return train, test


def scarce_subset(groups: Sequence[str], fraction: float, seed: int,
                  strata: Sequence[str | None] | None = None) -> np.ndarray:
    """Sorted indices of about ``fraction`` of the groups (within each stratum): the real
    training images kept when an evaluation simulates scarce real data. The evaluation calls
    it with ``seed + 1``; ``scripts/train_default.py --train-fraction`` uses the same call so
    that a generator can be trained on exactly the images the scarce U-Net sees."""
    if not 0.0 < fraction <= 1.0:
        raise DatasetError("The real fraction must lie between 0 and 1.")
    if fraction == 1.0:
        return np.arange(len(groups))
    _drop, keep = group_split(groups, fraction, seed, strata=strata)
    return np.sort(keep)


def scarce_documents(docs: Sequence[Any], fraction: float, split_seed: int) -> np.ndarray:
    """``scarce_subset`` over documents, as ``evaluate`` calls it on its real training images
    (groups from the ``group`` column, classes as strata, ``split_seed + 1``): for scripts that
    must pick the same images from the documents themselves."""
    return scarce_subset([doc_group(d) for d in docs], fraction, split_seed + 1,
                         strata=[(getattr(d, "tags", {}) or {}).get("class") for d in docs])


def dev_split(names: Sequence[str], groups: Sequence[str], held_out: Iterable[str]
              ) -> tuple[np.ndarray, np.ndarray]:
    """Train/test indices from a list of held-out names (document names, file names or
    groups); a document whose group holds a held-out document is held out too."""
    wanted = {h.strip() for h in held_out if h.strip()}
    # a line may be a group, a document name, a file name or a path relative to the dataset
    wanted |= {Path(h).name for h in wanted} | {Path(h).stem for h in wanted}
    hit_groups = {g for nm, g in zip(names, groups, strict=True)
                  if nm in wanted or Path(nm).name in wanted or Path(nm).stem in wanted
                  or g in wanted}
    test, train = split_by_groups(groups, hit_groups)
    if len(test) == 0:
        raise DatasetError("None of the names in the dev split file matches an image of the real set.")
    if len(train) == 0:
        raise DatasetError("The dev split file holds out every real image; nothing is left to train on.")
    return train, test


def group_folds(groups: Sequence[str], k: int, seed: int) -> list[np.ndarray]:
    """``k`` index folds with each group wholly inside one fold (sizes balanced greedily)."""
    uniq = sorted(set(groups))
    k = max(2, min(k, len(uniq)))
    rng = np.random.default_rng(seed)
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    folds: list[list[int]] = [[] for _ in range(k)]
    # largest groups first into the emptiest fold keeps folds even; shuffle breaks ties
    order = sorted(rng.permutation(len(uniq)), key=lambda j: -len(members[uniq[j]]))
    for j in order:
        smallest = min(range(k), key=lambda f: len(folds[f]))
        folds[smallest].extend(members[uniq[j]])
    return [np.array(sorted(f), dtype=np.int64) for f in folds]
