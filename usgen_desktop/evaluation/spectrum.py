"""Texture by frequency band: the power of synthetic images against real ones, octave by octave.

The realism classifier says *that* synthetic images can be told from real ones; this says at
which scale they differ. A generator that draws speckle too smooth loses power in the finest
bands first (a 128² image's 32-64 cycles per side is BUSI's speckle grain), one that draws the
wrong anatomy differs in the coarse ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def radial_power(images: np.ndarray) -> np.ndarray:
    """Mean power spectrum of square float images (N x S x S), averaged over rings of equal
    spatial frequency: entry r is the power at r cycles per image side (each image's own mean
    removed, so entry 0 is ~0)."""
    x = np.asarray(images, np.float64)
    if x.ndim != 3 or x.shape[1] != x.shape[2]:
        raise ValueError("radial_power needs square images stacked as N x S x S")
    s = x.shape[1]
    x = x - x.mean(axis=(1, 2), keepdims=True)
    power = (np.abs(np.fft.fft2(x)) ** 2).mean(axis=0)
    f = np.fft.fftfreq(s) * s
    r = np.rint(np.hypot(*np.meshgrid(f, f, indexing="ij"))).astype(int)
    return np.bincount(r.ravel(), power.ravel()) / np.maximum(1, np.bincount(r.ravel()))


def octave_bands(size: int) -> list[tuple[int, int]]:
    """[1, 2), [2, 4), ... up to size / 2 cycles per side (the Nyquist limit)."""
    bands, lo = [], 1
    while lo < size // 2:
        bands.append((lo, min(2 * lo, size // 2 + 1)))
        lo *= 2
    return bands


def band_power_ratio(real: np.ndarray, synthetic: np.ndarray) -> dict[str, Any]:
    """Synthetic-to-real power per octave band, for real and synthetic images of one square size
    (N x S x S, any scale as long as both share it)."""
    if len(real) == 0 or len(synthetic) == 0:
        return {"skipped": "The band powers need real and synthetic images."}
    size = int(np.asarray(real).shape[1])
    pr, ps = radial_power(real), radial_power(synthetic)
    bands = octave_bands(size)
    ratios = [float(ps[lo:hi].sum() / pr[lo:hi].sum()) if pr[lo:hi].sum() > 0 else float("nan")
              for lo, hi in bands]
    return {
        "size": size,
        "unit": "cycles per image side",
        "bands": [[lo, hi] for lo, hi in bands],
        "ratio": [round(v, 4) for v in ratios],
        "log10_ratio": [round(float(np.log10(v)), 4) if v > 0 else float("nan") for v in ratios],
        "finest_band_ratio": round(ratios[-1], 4) if ratios else float("nan"),
        "n": [int(len(real)), int(len(synthetic))],
    }
