"""Downstream utility: a small U-Net trained on real only, real + synthetic and synthetic
only, each scored by Dice on the same held-out *real* images.

Every arm gets the same budget of optimiser steps and the same seed, so the arms differ only
in the images they learn from.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from usgen_desktop.core.tasks import CancelToken
from usgen_desktop.evaluation.dice import image_scores, paired_bootstrap, set_dice
from usgen_desktop.evaluation.prepare import EvalSet

Tick = Callable[[int, int, str], None]  # (done, total, message)
ARMS = ("real_only", "real_plus_synthetic", "synthetic_only")


def _no_tick(done: int, total: int, message: str) -> None:
    pass


@dataclass
class TrainedSegmenter:
    """A trained U-Net (CPU, eval mode) and how it was trained."""

    model: Any
    n_classes: int
    steps: int
    seconds: float
    final_loss: float
    parameters: int


def _set_seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def batch_order(n: int, steps: int, batch_size: int, seed: int) -> np.ndarray:
    """Indices of ``steps`` batches drawn epoch by epoch (each epoch a fresh permutation)."""
    rng = np.random.default_rng(seed)
    need = steps * batch_size
    chunks, have = [], 0
    while have < need:
        chunks.append(rng.permutation(n))
        have += n
    return np.concatenate(chunks)[:need].reshape(steps, batch_size)


def train_segmenter(
    train: EvalSet,
    n_classes: int,
    steps: int,
    batch_size: int = 8,
    lr: float = 2e-3,
    seed: int = 0,
    base: int = 16,
    tick: Tick = _no_tick,
    cancel: CancelToken | None = None,
) -> TrainedSegmenter:
    """Train a U-Net for exactly ``steps`` optimiser steps (cross-entropy + soft Dice,
    Adam with cosine decay, random horizontal flips)."""
    import torch
    import torch.nn.functional as F

    from usgen_desktop.evaluation.nets import build_unet, count_parameters

    if len(train) == 0:
        raise ValueError("no training images")
    _set_seed(seed)
    model = build_unet(n_classes, base)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    order = batch_order(len(train), steps, min(batch_size, max(1, len(train))), seed)
    flips = np.random.default_rng(seed + 1).random(order.shape) < 0.5
    images = torch.from_numpy(train.images)
    masks = torch.from_numpy(train.masks.astype(np.int64))
    model.train()
    t0 = time.perf_counter()
    loss_value = float("nan")
    for s, (idx, flip) in enumerate(zip(order, flips, strict=True)):
        if cancel is not None:
            cancel.raise_if_cancelled()
        x = images[idx].unsqueeze(1).clone()
        y = masks[idx].clone()
        fl = torch.from_numpy(flip)
        x[fl] = x[fl].flip(-1)
        y[fl] = y[fl].flip(-1)
        logits = model(x)
        ce = F.cross_entropy(logits, y)
        prob = logits.softmax(1)
        onehot = F.one_hot(y, n_classes).permute(0, 3, 1, 2).float()
        inter = (prob * onehot).sum((0, 2, 3))
        denom = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
        soft_dice = (2 * inter + 1.0) / (denom + 1.0)
        loss = ce + (1.0 - soft_dice[1:].mean() if n_classes > 1 else 0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_value = float(loss.detach())
        tick(s + 1, steps, f"step {s + 1}/{steps}, loss {loss_value:.3f}")
    model.eval()
    return TrainedSegmenter(model, n_classes, steps, time.perf_counter() - t0, loss_value,
                            count_parameters(model))


def predict(seg: TrainedSegmenter, images: np.ndarray, batch_size: int = 32,
            cancel: CancelToken | None = None) -> np.ndarray:
    """Label maps (class indices, uint8) predicted for float images N x H x W."""
    import torch

    out = np.zeros(images.shape, np.uint8)
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            if cancel is not None:
                cancel.raise_if_cancelled()
            x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])).unsqueeze(1)
            out[i : i + batch_size] = seg.model(x).argmax(1).numpy().astype(np.uint8)
    return out


def _mean_over_seeds(per_seed: list[np.ndarray]) -> np.ndarray:
    """Per-image Dice averaged over seeds; NaN stays NaN for images without a label."""
    stack = np.stack(per_seed)
    ok = np.isfinite(stack)
    total = np.where(ok, stack, 0.0).sum(0)
    count = ok.sum(0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def downstream_utility(
    real_train: EvalSet,
    synthetic: EvalSet,
    real_test: EvalSet,
    n_classes: int,
    steps: int,
    batch_size: int = 8,
    lr: float = 2e-3,
    seed: int = 0,
    base: int = 16,
    tick: Tick = _no_tick,
    cancel: CancelToken | None = None,
    arms: tuple[str, ...] = ARMS,
    repeats: int = 1,
) -> tuple[dict[str, Any], dict[str, TrainedSegmenter]]:
    """Train each arm with the same step budget and seeds; Dice of each on ``real_test``.

    With ``repeats`` > 1 every arm is trained once per seed (``seed``, ``seed + 1000``, ...)
    and the numbers are averaged over seeds (``per_seed`` and ``std_over_seeds`` show the
    spread). ``comparison`` gives, for each arm against real only, the mean per-image Dice
    difference with a group-bootstrap 95 % interval: an interval that holds 0 means the data
    cannot tell the arms apart. Returns the metrics and the first seed's models (the
    real-only one is reused for mask fidelity)."""
    sets = {
        "real_only": real_train,
        "real_plus_synthetic": EvalSet.concat(real_train, synthetic) if len(synthetic) else None,
        "synthetic_only": synthetic if len(synthetic) else None,
    }
    labels = list(range(1, n_classes))
    repeats = max(1, int(repeats))
    metrics: dict[str, Any] = {}
    models: dict[str, TrainedSegmenter] = {}
    scores: dict[str, list[np.ndarray]] = {}
    todo = [a for a in arms if sets[a] is not None]
    runs = [(r, arm) for r in range(repeats) for arm in todo]
    per_run: dict[str, list[dict[str, Any]]] = {a: [] for a in todo}
    for k, (r, arm) in enumerate(runs):
        data = sets[arm]
        assert data is not None

        def arm_tick(done: int, total: int, msg: str, k: int = k, arm: str = arm,
                     r: int = r) -> None:
            rep = f" (seed {r + 1} of {repeats})" if repeats > 1 else ""
            tick(k * steps + done, len(runs) * steps,
                 f"U-Net {arm.replace('_', ' ')}{rep}: {msg}")

        seg = train_segmenter(data, n_classes, steps, batch_size, lr, seed + 1000 * r, base,
                              arm_tick, cancel)
        pred = predict(seg, real_test.images, cancel=cancel)
        d = set_dice(pred, real_test.masks, labels)
        d.update(seconds=round(seg.seconds, 2), final_loss=round(seg.final_loss, 4))
        per_run[arm].append(d)
        scores.setdefault(arm, []).append(image_scores(pred, real_test.masks, labels))
        if r == 0:
            models[arm] = seg
    for arm in todo:
        runs_ = per_run[arm]
        means = [x["mean"] for x in runs_]
        d = {
            "mean": float(np.nanmean(means)),
            "per_label": {k: float(np.nanmean([x["per_label"][k] for x in runs_]))
                          for k in runs_[0]["per_label"]},
            "global": {k: float(np.nanmean([x["global"][k] for x in runs_]))
                       for k in runs_[0]["global"]},
            "n_images": runs_[0]["n_images"],
            "train_images": len(sets[arm]),  # type: ignore[arg-type]
            "steps": steps,
            "seeds": [seed + 1000 * r for r in range(repeats)],
            "per_seed": means,
            "std_over_seeds": float(np.std(means)) if repeats > 1 else None,
            "seconds": round(sum(x["seconds"] for x in runs_), 2),
            "final_loss": runs_[-1]["final_loss"],
            "parameters": models[arm].parameters,
        }
        metrics[arm] = d
    if "real_only" in scores:
        ref = _mean_over_seeds(scores["real_only"])
        comparison = {}
        for arm in todo:
            if arm == "real_only":
                continue
            other = _mean_over_seeds(scores[arm])
            comparison[f"{arm}_minus_real_only"] = paired_bootstrap(ref, other,
                                                                    real_test.groups, seed=seed)
        metrics["comparison"] = comparison
    return metrics, models
