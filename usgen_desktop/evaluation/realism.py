"""Realism: can a small CNN trained from scratch tell real from synthetic images?

Group-wise k-fold cross-validation; the ROC AUC of the out-of-fold scores is the number
(0.5: indistinguishable, 1.0: always told apart). ``seeds/001_*`` reports 0.563 with ResNet101.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from usgen_desktop.core.tasks import CancelToken
from usgen_desktop.evaluation.prepare import group_folds

Tick = Callable[[int, int, str], None]


def _no_tick(done: int, total: int, message: str) -> None:
    pass


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks, so ties count one half)."""
    from scipy.stats import rankdata

    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(scores: Sequence[float], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold, from (0, 0) to (1, 1)."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, bool)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    tpr = np.r_[0.0, tps / max(1, y.sum())]
    fpr = np.r_[0.0, fps / max(1, (~y).sum())]
    return fpr, tpr


def _train_and_score(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, epochs: int,
                     seed: int, batch: int, tick: Callable[[], None],
                     cancel: CancelToken | None) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    from usgen_desktop.evaluation.nets import build_classifier

    torch.manual_seed(seed)
    model = build_classifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    xt = torch.from_numpy(x_tr).unsqueeze(1)
    yt = torch.from_numpy(y_tr.astype(np.float32))
    model.train()
    for _ in range(epochs):
        perm = rng.permutation(len(x_tr))
        for i in range(0, len(perm), batch):
            if cancel is not None:
                cancel.raise_if_cancelled()
            idx = torch.from_numpy(perm[i : i + batch])
            xb = xt[idx]
            if rng.random() < 0.5:
                xb = xb.flip(-1)
            loss = F.binary_cross_entropy_with_logits(model(xb).squeeze(1), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tick()
    model.eval()
    with torch.inference_mode():
        return model(torch.from_numpy(x_te).unsqueeze(1)).squeeze(1).numpy().astype(np.float64)


def realism_auc(
    real: np.ndarray,
    synthetic: np.ndarray,
    real_groups: Sequence[str] | None = None,
    synthetic_groups: Sequence[str] | None = None,
    folds: int = 5,
    epochs: int = 8,
    seed: int = 0,
    batch: int = 16,
    tick: Tick = _no_tick,
    cancel: CancelToken | None = None,
) -> dict[str, Any]:
    """Cross-validated ROC AUC of a real (0) vs synthetic (1) classifier on float images
    (N x H x W). The larger set is subsampled to the size of the smaller one so that the
    classifier cannot win by guessing the majority; groups keep near-duplicates (and a
    synthetic image made from a real image's label map, when it carries that image's group)
    inside one fold."""
    rng = np.random.default_rng(seed)
    n = min(len(real), len(synthetic))
    if n < 2:
        return {"skipped": "Realism AUC needs at least two real and two synthetic images."}
    ri = np.sort(rng.choice(len(real), n, replace=False))
    si = np.sort(rng.choice(len(synthetic), n, replace=False))
    rg = list(real_groups) if real_groups is not None else [f"r{i}" for i in range(len(real))]
    sg = (list(synthetic_groups) if synthetic_groups is not None
          else [f"s{i}" for i in range(len(synthetic))])
    x = np.concatenate([real[ri], synthetic[si]]).astype(np.float32)
    y = np.r_[np.zeros(n, np.int64), np.ones(n, np.int64)]
    groups = [rg[i] for i in ri] + [sg[i] for i in si]
    fold_idx = group_folds(groups, folds, seed)
    k = len(fold_idx)
    per_fold_steps = epochs * -(-(2 * n - 2 * n // k) // batch)
    total = k * per_fold_steps
    done = [0]

    def one() -> None:
        done[0] += 1
        tick(min(done[0], total), total, f"realism classifier, fold {done[0] * k // max(1, total) + 1} of {k}")

    scores = np.zeros(len(x), np.float64)
    fold_aucs = []
    for f, test in enumerate(fold_idx):
        train = np.setdiff1d(np.arange(len(x)), test)
        scores[test] = _train_and_score(x[train], y[train], x[test], epochs, seed + f, batch,
                                        one, cancel)
        fold_aucs.append(roc_auc(scores[test], y[test]))
    fpr, tpr = roc_curve(scores, y)
    finite = [a for a in fold_aucs if np.isfinite(a)]
    return {
        # the mean of per-fold AUCs: each fold's model ranks only its own test images, so
        # differences in calibration between fold models do not blur the number
        "auc": float(np.mean(finite)) if finite else roc_auc(scores, y),
        "pooled_auc": roc_auc(scores, y),
        "fold_auc": [float(a) for a in fold_aucs],
        "folds": k,
        "epochs": epochs,
        "n_per_class": int(n),
        "roc_fpr": [round(float(v), 5) for v in fpr],
        "roc_tpr": [round(float(v), 5) for v in tpr],
    }
