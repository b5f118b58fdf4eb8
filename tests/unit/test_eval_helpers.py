"""Tiny documents made in code for the evaluation tests (no files, no downloads)."""

from __future__ import annotations

import numpy as np

from usgen_desktop.core.document import Document
from usgen_desktop.core.image import UltrasoundImage
from usgen_desktop.core.labels import LabelMap, load_preset


def lesion_doc(i: int, size: int = 32, seed: int = 0, noise: str = "rayleigh",
               group: str | None = None, klass: str = "benign", parent: str | None = None
               ) -> Document:
    """A speckly image with a dark ellipse where its label map says 1."""
    import cv2

    rng = np.random.default_rng(seed * 10_000 + i)
    mask = np.zeros((size, size), np.uint8)
    cx, cy = rng.integers(size // 3, 2 * size // 3, 2)
    ax = int(rng.integers(size // 8, size // 4))
    cv2.ellipse(mask, (int(cx), int(cy)), (ax, max(2, ax * 2 // 3)), int(rng.integers(0, 180)),
                0, 360, 1, -1)
    if noise == "rayleigh":
        img = np.clip(rng.rayleigh(70, (size, size)), 0, 255)
        img[mask > 0] *= 0.25
    else:  # "uniform": a different texture and brightness, easy to tell apart
        img = rng.uniform(150, 255, (size, size))
        img[mask > 0] *= 0.6
    tags = {"class": klass}
    if group is not None:
        tags["group"] = group
    return Document(labels=LabelMap(mask), schema=load_preset("busi"),
                    image=UltrasoundImage(img.astype(np.uint8)), name=f"img{i}.png", tags=tags,
                    parent=parent)


def lesion_set(n: int, size: int = 32, seed: int = 0, noise: str = "rayleigh",
               groups: int | None = None) -> list[Document]:
    """``n`` documents; with ``groups`` they share that many near-duplicate groups."""
    return [lesion_doc(i, size, seed, noise, None if groups is None else f"g{i % groups}")
            for i in range(n)]
