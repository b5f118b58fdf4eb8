"""Speckle statistics per label region, real against synthetic.

Displayed ultrasound is log-compressed; the envelope statistics of speckle theory (Rayleigh:
SNR 1.91, Nakagami m = 1) hold for the *linear* envelope. Pixels are linearised with an assumed
dynamic range: A = 10 ** ((p / 255 - 1) * DR / 20). Display-domain mean, std, SNR and skewness
are reported too, since they are what a reader sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

STATS = ("mean", "std", "snr", "skewness", "envelope_snr", "nakagami_m")
MIN_PIXELS = 32  # fewer pixels than this give no stable statistics


def region_stats(pixels: np.ndarray, dynamic_range_db: float = 60.0) -> dict[str, float]:
    """Statistics of one region's uint8 pixels (display and linearised envelope)."""
    p = np.asarray(pixels, np.float64).ravel()
    mean, std = float(p.mean()), float(p.std())
    skew = float(((p - mean) ** 3).mean() / std**3) if std > 0 else 0.0
    a = 10.0 ** ((p / 255.0 - 1.0) * dynamic_range_db / 20.0)
    a_mean, a_std = float(a.mean()), float(a.std())
    i = a**2
    i_var = float(i.var())
    return {
        "mean": mean,
        "std": std,
        "snr": mean / std if std > 0 else float("nan"),
        "skewness": skew,
        "envelope_snr": a_mean / a_std if a_std > 0 else float("nan"),
        "nakagami_m": float(i.mean() ** 2 / i_var) if i_var > 0 else float("nan"),
    }


def per_label_stats(images: Sequence[np.ndarray], label_maps: Sequence[np.ndarray],
                    label_ids: Sequence[int], dynamic_range_db: float = 60.0
                    ) -> dict[int, dict[str, Any]]:
    """For each label: the median and quartiles over images of every statistic, and a
    64-bin histogram of all its pixels (for the report's plot)."""
    out: dict[int, dict[str, Any]] = {}
    for k in label_ids:
        rows: list[dict[str, float]] = []
        hist = np.zeros(64, np.int64)
        for img, lm in zip(images, label_maps, strict=True):
            sel = lm == k
            if int(sel.sum()) < MIN_PIXELS:
                continue
            px = img[sel]
            rows.append(region_stats(px, dynamic_range_db))
            hist += np.bincount(px.astype(np.int64) // 4, minlength=64)[:64]
        if not rows:
            continue
        entry: dict[str, Any] = {"n_images": len(rows)}
        for s in STATS:
            vals = np.array([r[s] for r in rows], np.float64)
            vals = vals[np.isfinite(vals)]
            if len(vals):
                q1, med, q3 = np.percentile(vals, [25, 50, 75])
                entry[s] = {"median": float(med), "q1": float(q1), "q3": float(q3)}
        entry["histogram"] = (hist / max(1, hist.sum())).round(6).tolist()
        out[int(k)] = entry
    return out


def compare(real_docs: Sequence[Any], synthetic_docs: Sequence[Any],
            names: dict[int, str] | None = None, dynamic_range_db: float = 60.0
            ) -> dict[str, Any]:
    """Per label region, real vs synthetic statistics at each document's own resolution,
    with the synthetic/real ratio of the medians and the histogram overlap (1 = identical)."""
    ids = sorted({int(i) for d in [*real_docs, *synthetic_docs] for i in np.unique(d.labels.data)})
    real = per_label_stats([d.image.to_uint8() for d in real_docs],
                           [d.labels.data for d in real_docs], ids, dynamic_range_db)
    syn = per_label_stats([d.image.to_uint8() for d in synthetic_docs],
                          [d.labels.data for d in synthetic_docs], ids, dynamic_range_db)
    labels: dict[str, Any] = {}
    for k in ids:
        if k not in real and k not in syn:
            continue
        entry: dict[str, Any] = {"name": (names or {}).get(k, f"label {k}"),
                                 "real": real.get(k), "synthetic": syn.get(k)}
        if k in real and k in syn:
            ratio = {}
            for s in STATS:
                r, y = real[k].get(s), syn[k].get(s)
                if r and y and r["median"] not in (0.0,):
                    ratio[s] = y["median"] / r["median"]
            entry["ratio_synthetic_to_real"] = ratio
            entry["histogram_overlap"] = float(np.minimum(real[k]["histogram"],
                                                          syn[k]["histogram"]).sum())
        labels[str(k)] = entry
    return {"dynamic_range_db": dynamic_range_db, "labels": labels}
