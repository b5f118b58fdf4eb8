"""The ultrasound image of a document: grayscale pixels plus what is known about them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from usgen_desktop.errors import ImageReadError


@dataclass
class UltrasoundImage:
    """Grayscale pixels (uint8 or uint16, HxW), where they came from, and their spacing.

    ``was_color`` records that the source was RGB(A) and was converted, so a user can be told
    (BUSI holds colour Doppler overlays). ``pixel_spacing`` is (row, column) in millimetres.
    """

    pixels: np.ndarray
    source: Path | None = None
    was_color: bool = False
    pixel_spacing: tuple[float, float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        px = np.asarray(self.pixels)
        if px.ndim == 3 and px.shape[2] in (3, 4):
            px = to_gray(px)
            self.was_color = True
        if px.ndim != 2 or px.size == 0:
            raise ImageReadError(f"An image must be 2-D grayscale; got shape {px.shape}.")
        if px.dtype not in (np.uint8, np.uint16):
            px = _rescale_to_uint16(px)
        self.pixels = np.ascontiguousarray(px)

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def bit_depth(self) -> int:
        return 16 if self.pixels.dtype == np.uint16 else 8

    def to_uint8(self) -> np.ndarray:
        """8-bit pixels for display and for 8-bit exports (16-bit stretched min-max)."""
        return to_uint8(self.pixels)


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of an RGB(A) array, keeping the dtype."""
    rgb = rgb[..., :3].astype(np.float32)
    gray = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(np.rint(gray), 0, 65535 if rgb.max() > 255 else 255).astype(
        np.uint16 if rgb.max() > 255 else np.uint8
    )


def to_uint8(px: np.ndarray) -> np.ndarray:
    if px.dtype == np.uint8:
        return px
    px = px.astype(np.float32)
    lo, hi = float(px.min()), float(px.max())
    if hi <= lo:
        return np.zeros(px.shape, np.uint8)
    return np.clip((px - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def _rescale_to_uint16(px: np.ndarray) -> np.ndarray:
    px = np.asarray(px)
    if px.dtype == bool:
        return (px.astype(np.uint8)) * 255
    if np.issubdtype(px.dtype, np.integer) and px.min() >= 0 and px.max() <= 255:
        return px.astype(np.uint8)
    if np.issubdtype(px.dtype, np.integer) and px.min() >= 0 and px.max() <= 65535:
        return px.astype(np.uint16)
    f = px.astype(np.float64)
    if not np.isfinite(f).all():
        f = np.nan_to_num(f)
    lo, hi = float(f.min()), float(f.max())
    if hi <= lo:
        return np.zeros(px.shape, np.uint8)
    return np.clip((f - lo) / (hi - lo) * 65535.0, 0, 65535).astype(np.uint16)
