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


def image_scores(preds: np.ndarray, targets: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """One Dice per image: the mean over the labels its target holds (NaN if it holds none),
    so that two models can be compared image by image."""
    out = np.full(len(targets), np.nan)
    for i, (p, t) in enumerate(zip(preds, targets, strict=True)):
        vals = [dice(p == k, t == k) for k in labels if (t == k).any()]
        if vals:
            out[i] = float(np.mean(vals))
    return out


def paired_bootstrap(a: np.ndarray, b: np.ndarray, groups: Sequence[str], n_boot: int = 2000,
                     seed: int = 0) -> dict[str, float]:
    """Mean of ``b - a`` over images scored by both, with a 95 % interval from resampling
    whole groups (near-duplicates move together, so the interval is not too narrow)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if not ok.any():
        return {"diff": float("nan"), "ci95_low": float("nan"), "ci95_high": float("nan"),
                "n_images": 0}
    d = (b - a)[ok]
    g = np.asarray(groups)[ok]
    uniq, inv = np.unique(g, return_inverse=True)
    sums = np.bincount(inv, weights=d, minlength=len(uniq))
    counts = np.bincount(inv, minlength=len(uniq)).astype(np.float64)
    rng = np.random.default_rng(seed)
    draw = rng.integers(0, len(uniq), (n_boot, len(uniq)))
    boot = sums[draw].sum(1) / counts[draw].sum(1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"diff": float(d.mean()), "ci95_low": float(lo), "ci95_high": float(hi),
            "n_images": int(ok.sum()), "n_groups": int(len(uniq))}
