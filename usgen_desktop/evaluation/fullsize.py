"""Realism where a clinician looks: at the images' own pixels, not after shrinking them.

Shrinking to 64² or 128² before measuring hides exactly what makes an enlarged image look
"painted" at 1:1: the missing speckle grain. Here both measures work on crops taken at the
images' own resolution:

- a critic (the evaluation's small CNN, trained from scratch, group-wise cross-validated) on
  square crops, so it sees every pixel; its AUC per class comes from the same out-of-fold scores;
- power per octave up to the finest (¼–½ cycle per pixel), synthetic over real.

Both are also taken for a *control*: real images sent through the app's own resize path (shrink
to the base model's size, bicubic back), the best an enlarge-only generator could do. A measure
that cannot tell the control from real images could not show the generator failing either.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from usgen_desktop.core.tasks import CancelToken
from usgen_desktop.evaluation.realism import _train_and_score, roc_auc
from usgen_desktop.evaluation.spectrum import band_power_ratio

Tick = Callable[[int, int, str], None]


def _no_tick(done: int, total: int, message: str) -> None:
    pass


def _gray_u8(img: Any) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim == 3:
        a = a[..., :3].mean(axis=2)
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    return a


def native_crops(images: Sequence[np.ndarray], size: int = 128, per_image: int = 4,
                 seed: int = 0, min_signal: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """``per_image`` square crops of ``size`` pixels from each image at its own resolution, as
    floats in [-1, 1] (N x size x size), and the index of the image each came from. A crop is
    taken where at least ``min_signal`` of its pixels are not black (the fan's outside and
    anonymisation boxes are the same in real and synthetic images and would only dilute the
    measure); images smaller than a crop are reflected to its size."""
    rng = np.random.default_rng(seed)
    out, owner = [], []
    for k, img in enumerate(images):
        a = _gray_u8(img)
        h, w = a.shape
        if h < size or w < size:
            a = np.pad(a, ((0, max(0, size - h)), (0, max(0, size - w))), mode="reflect")
            h, w = a.shape
        lit = (a > 4).astype(np.float64)
        integral = np.pad(lit.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        for _ in range(per_image):
            best, best_frac = (0, 0), -1.0
            for _try in range(25):
                y = int(rng.integers(0, h - size + 1))
                x = int(rng.integers(0, w - size + 1))
                frac = (integral[y + size, x + size] - integral[y, x + size]
                        - integral[y + size, x] + integral[y, x]) / (size * size)
                if frac > best_frac:
                    best, best_frac = (y, x), frac
                if frac >= min_signal:
                    break
            y, x = best
            out.append(a[y:y + size, x:x + size].astype(np.float32) / 127.5 - 1.0)
            owner.append(k)
    return np.stack(out) if out else np.zeros((0, size, size), np.float32), np.array(owner)


def critic(
    real: Sequence[np.ndarray],
    synthetic: Sequence[np.ndarray],
    real_groups: Sequence[str],
    synthetic_groups: Sequence[str],
    real_classes: Sequence[str | None] | None = None,
    synthetic_classes: Sequence[str | None] | None = None,
    crop: int = 128,
    per_image: int = 4,
    folds: int = 5,
    epochs: int = 10,
    seed: int = 0,
    tick: Tick = _no_tick,
    cancel: CancelToken | None = None,
) -> dict[str, Any]:
    """Cross-validated AUC of a real (0) vs synthetic (1) critic on native-resolution crops;
    an image's crops (and a synthetic image made from a real image's label map, when it carries
    that image's group) stay in one fold. The image's score is the mean of its crops' scores."""
    from usgen_desktop.evaluation.prepare import group_folds

    rng = np.random.default_rng(seed)
    n = min(len(real), len(synthetic))
    if n < 4:
        return {"skipped": "The full-size critic needs at least four real and four synthetic images."}
    ri = np.sort(rng.choice(len(real), n, replace=False))
    si = np.sort(rng.choice(len(synthetic), n, replace=False))
    xr, orr = native_crops([real[i] for i in ri], crop, per_image, seed)
    xs, osy = native_crops([synthetic[i] for i in si], crop, per_image, seed + 1)
    x = np.concatenate([xr, xs])
    y = np.r_[np.zeros(len(xr), np.int64), np.ones(len(xs), np.int64)]
    img_of = np.r_[orr, n + osy]  # image index 0..2n-1 of each crop
    groups_img = [str(real_groups[i]) for i in ri] + [str(synthetic_groups[i]) for i in si]
    classes_img = ([real_classes[i] for i in ri] if real_classes is not None else [None] * n) + \
                  ([synthetic_classes[i] for i in si] if synthetic_classes is not None else [None] * n)
    y_img = np.r_[np.zeros(n, np.int64), np.ones(n, np.int64)]
    fold_imgs = group_folds(groups_img, folds, seed)
    k = len(fold_imgs)
    batch = 16
    per_fold = epochs * -(-(len(x) - len(x) // k) // batch)
    total, done = k * per_fold, [0]

    def one() -> None:
        done[0] += 1
        tick(min(done[0], total), total, "full-size critic")

    crop_scores = np.zeros(len(x))
    fold_aucs = []
    img_scores = np.zeros(2 * n)
    for f, test_imgs in enumerate(fold_imgs):
        test = np.isin(img_of, test_imgs)
        crop_scores[test] = _train_and_score(x[~test], y[~test], x[test], epochs, seed + f, batch,
                                             one, cancel)
        for i in test_imgs:
            img_scores[i] = crop_scores[img_of == i].mean()
        fold_aucs.append(roc_auc(img_scores[test_imgs], y_img[test_imgs]))
    finite = [a for a in fold_aucs if np.isfinite(a)]
    per_class = {}
    for c in sorted({c for c in classes_img if c}):
        sel = np.array([ci == c for ci in classes_img])
        if y_img[sel].min() == 0 and y_img[sel].max() == 1:
            per_class[c] = round(roc_auc(img_scores[sel], y_img[sel]), 4)
    return {
        "auc": round(float(np.mean(finite)), 4) if finite else round(roc_auc(img_scores, y_img), 4),
        "pooled_auc": round(roc_auc(img_scores, y_img), 4),
        "crop_auc": round(roc_auc(crop_scores, y), 4),
        "fold_auc": [round(float(a), 4) for a in fold_aucs],
        "per_class_auc": per_class,
        "crop": crop, "crops_per_image": per_image, "n_per_class": int(n), "folds": k,
        "epochs": epochs,
    }


def octaves(real: Sequence[np.ndarray], synthetic: Sequence[np.ndarray], crop: int = 128,
            per_image: int = 4, seed: int = 0) -> dict[str, Any]:
    """Synthetic-to-real power per octave on native-resolution crops; the finest band is ¼–½
    cycle per pixel."""
    xr, _ = native_crops(real, crop, per_image, seed)
    xs, _ = native_crops(synthetic, crop, per_image, seed + 1)
    out = band_power_ratio(xr, xs)
    if "bands" in out:
        out["unit"] = f"cycles per {crop} px (native pixels)"
        out["cycles_per_pixel"] = [[round(lo / crop, 4), round(hi / crop, 4)]
                                   for lo, hi in out["bands"]]
    return out


def through_resize_path(images: Sequence[np.ndarray], base_size: tuple[int, int]) -> list[np.ndarray]:
    """Real images as an enlarge-only generator at ``base_size`` would give them at best (the
    refiner's training degradation without its softening)."""
    from usgen_desktop.synthesis.backends.refiner import degrade

    return [degrade(_gray_u8(i), base_size) for i in images]


def fullsize_realism(
    real: Sequence[np.ndarray],
    synthetic: Sequence[np.ndarray],
    real_groups: Sequence[str],
    synthetic_groups: Sequence[str],
    real_classes: Sequence[str | None] | None = None,
    synthetic_classes: Sequence[str | None] | None = None,
    base_size: tuple[int, int] = (128, 128),
    crop: int = 128,
    per_image: int = 4,
    folds: int = 5,
    epochs: int = 10,
    seed: int = 0,
    control: bool = True,
    tick: Tick = _no_tick,
    cancel: CancelToken | None = None,
) -> dict[str, Any]:
    """The critic and the octaves for the synthetic images and (``control``) for the real ones
    sent through the app's resize path, overall and per class."""
    real = [_gray_u8(i) for i in real]
    synthetic = [_gray_u8(i) for i in synthetic]
    parts = 2 if control else 1

    def part(k: int) -> Tick:  # the critics share one stage of the caller's progress bar
        def tick_k(done: int, total: int, message: str) -> None:
            tick(k * total + done, parts * total, message)
        return tick_k

    out: dict[str, Any] = {
        "note": ("crops at the images' own pixels; control = real images shrunk to the base "
                 f"size {base_size[1]}x{base_size[0]} and enlarged back (bicubic) as the app does"),
        "critic": critic(real, synthetic, real_groups, synthetic_groups, real_classes,
                         synthetic_classes, crop, per_image, folds, epochs, seed, part(0), cancel),
        "octaves": octaves(real, synthetic, crop, per_image, seed),
    }
    def of_class(images: Sequence[np.ndarray], tags, c: str) -> list[np.ndarray]:
        return [im for im, k in zip(images, tags or [], strict=False) if k == c]

    classes = sorted({c for c in (real_classes or []) if c})
    per_class = {}
    for c in classes:
        r, s = of_class(real, real_classes, c), of_class(synthetic, synthetic_classes, c)
        if r and s:
            per_class[c] = {"octaves": octaves(r, s, crop, per_image, seed)}
    if control:
        ctl = through_resize_path(real, base_size)  # once: the per-class rows reuse it
        out["control"] = {
            "critic": critic(real, ctl, real_groups, real_groups, real_classes, real_classes,
                             crop, per_image, folds, epochs, seed, part(1), cancel),
            "octaves": octaves(real, ctl, crop, per_image, seed),
        }
        for c in per_class:
            per_class[c]["control_octaves"] = octaves(of_class(real, real_classes, c),
                                                      of_class(ctl, real_classes, c), crop,
                                                      per_image, seed)
    for c, v in out["critic"].get("per_class_auc", {}).items():
        per_class.setdefault(c, {})["critic_auc"] = v
    if control:
        for c, v in out["control"]["critic"].get("per_class_auc", {}).items():
            per_class.setdefault(c, {})["control_critic_auc"] = v
    out["per_class"] = per_class
    return out
