"""Dice overlap per label and averaged, for one image pair or a whole set."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice of two boolean masks; NaN when both are empty (the overlap is undefined)."""
    p = np.asarray(pred, bool)
    t = np.asarray(target, bool)
    denom = int(p.sum()) + int(t.sum())
    if denom == 0:
        return float("nan")
    return 2.0 * float(np.logical_and(p, t).sum()) / denom


def dice_per_label(pred: np.ndarray, target: np.ndarray, labels: Sequence[int]
                   ) -> dict[int, float]:
    """Dice of each label id between two label maps (NaN where neither has the label)."""
    return {int(k): dice(pred == k, target == k) for k in labels}


def set_dice(preds: np.ndarray, targets: np.ndarray, labels: Sequence[int]) -> dict:
    """Dice over a set of label maps (N x H x W).

    ``per_label``: mean over the images whose *target* holds the label (the usual lesion
    Dice: an image without the label cannot score it); ``global``: one Dice over all pixels
    of the set, which also charges false positives on empty images; ``mean``: the mean of
    ``per_label`` over labels, the headline number; ``n_images``: images per label.
    """
    per_label: dict[str, float] = {}
    global_: dict[str, float] = {}
    counts: dict[str, int] = {}
    for k in labels:
        scores = [dice(p == k, t == k) for p, t in zip(preds, targets, strict=True)
                  if (t == k).any()]
        counts[str(k)] = len(scores)
        per_label[str(k)] = float(np.mean(scores)) if scores else float("nan")
        global_[str(k)] = dice(preds == k, targets == k)
    finite = [v for v in per_label.values() if np.isfinite(v)]
    return {
        "mean": float(np.mean(finite)) if finite else float("nan"),
        "per_label": per_label,
        "global": global_,
        "n_images": counts,
    }
