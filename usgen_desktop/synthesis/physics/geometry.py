"""Probe geometry for the speckle simulator: beam space <-> image frame.

A linear probe images a rectangle: beam space (depth, line) is the image grid itself. A
curvilinear or phased probe images a fan: beam space is polar (radius from the apex, angle), so
speckle simulated with a fixed lateral beam width in angle widens with depth once mapped back to
the image, as on real scans. The fan is estimated from the label map (the pixels that are not
"outside"): its two straight side edges meet at the apex.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class Geometry:
    """Where the beams run. ``kind`` is ``linear`` or ``sector``; for a sector, ``apex`` is
    (x, y) in image pixels (it may lie above the image), angles are measured from the image's
    downward vertical (positive to the right), radii in pixels."""

    kind: str
    shape: tuple[int, int]  # image (height, width)
    apex: tuple[float, float] = (0.0, 0.0)
    theta: tuple[float, float] = (0.0, 0.0)
    radius: tuple[float, float] = (0.0, 0.0)

    @property
    def beam_shape(self) -> tuple[int, int]:
        """(samples along each beam, number of beams)."""
        if self.kind == "linear":
            return self.shape
        r0, r1 = self.radius
        t0, t1 = self.theta
        n_r = max(8, int(np.ceil(r1 - r0)) + 1)
        # Sample the deepest arc at one beam per pixel, so nothing is undersampled.
        n_t = max(8, int(np.ceil(r1 * (t1 - t0))) + 1)
        return n_r, n_t

    @property
    def depth_px(self) -> float:
        """Imaged depth in image pixels (for mm-per-pixel)."""
        return float(self.shape[0]) if self.kind == "linear" else float(self.radius[1] - self.radius[0])


def linear(shape: tuple[int, int]) -> Geometry:
    return Geometry("linear", (int(shape[0]), int(shape[1])))


def estimate(fan: np.ndarray) -> Geometry:
    """``fit`` with a small cache: a batch makes several images per label map, and the fit is
    up to half the cost of an image at 512² (the key is a digest of the mask's bits)."""
    import hashlib

    fan = np.asarray(fan, bool)
    key = (fan.shape, hashlib.blake2b(np.packbits(fan).tobytes(), digest_size=16).digest())
    return _estimate_cached(key, fan)


_CACHE: dict[tuple, Geometry] = {}
_CACHE_SIZE = 16


def _estimate_cached(key: tuple, fan: np.ndarray) -> Geometry:
    g = _CACHE.get(key)
    if g is None:
        g = fit(fan)
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)), None)  # oldest first (dicts keep insertion order)
        _CACHE[key] = g
    return g


def fit(fan: np.ndarray) -> Geometry:
    """Fit the probe geometry to a boolean field-of-view mask (True inside the fan).

    Uses ``core.sector``'s fit (robust edges, fan vs rectangle by overlap) and falls back to a
    plain two-line fit. No outside pixels, or side edges that do not converge, give linear.
    """
    h, w = fan.shape
    if fan.all() or not fan.any():
        return linear((h, w))
    try:
        from usgen_desktop.core.sector import detect_sector

        sec = detect_sector(np.where(fan, 200, 0).astype(np.uint8)).sector
    except Exception:  # noqa: BLE001 - an odd mask falls back to the simple fit below
        sec = None
    if sec is not None:
        if not sec.is_fan:
            return linear((h, w))
        t0, t1 = np.radians(sec.start_angle), np.radians(sec.end_angle)
        yy, xx = np.nonzero(fan)
        r = np.hypot(xx - sec.apex_x, yy - sec.apex_y)
        pad_t = 1.5 / max(float(r.max()), 1.0)
        return Geometry(
            "sector", (h, w), (float(sec.apex_x), float(sec.apex_y)),
            (float(min(t0, t1)) - pad_t, float(max(t0, t1)) + pad_t),
            (max(0.0, float(r.min()) - 1.5), float(r.max()) + 1.5),
        )
    return _estimate_simple(fan)


def _estimate_simple(fan: np.ndarray) -> Geometry:
    h, w = fan.shape
    rows = np.flatnonzero(fan.any(axis=1))
    top, bottom = int(rows[0]), int(rows[-1])
    span = bottom - top
    if span < 8:
        return linear((h, w))
    # Side edges from the middle of the fan's height: the top and bottom arcs are not edges.
    ys = np.arange(top + int(0.15 * span), top + int(0.85 * span) + 1)
    sub = fan[ys]
    has = sub.any(axis=1)
    ys, sub = ys[has], sub[has]
    left = sub.argmax(axis=1).astype(float)
    right = (w - 1 - sub[:, ::-1].argmax(axis=1)).astype(float)
    # Rows where the fan touches the image border are clipped by the image, not by the probe.
    ok_l, ok_r = left > 0, right < w - 1
    if ok_l.sum() < 4 or ok_r.sum() < 4:
        return linear((h, w))
    al, bl = np.polyfit(ys[ok_l], left[ok_l], 1)
    ar, br = np.polyfit(ys[ok_r], right[ok_r], 1)
    if ar - al < 0.05:  # parallel edges: a (cropped) linear probe
        return linear((h, w))
    y_apex = (bl - br) / (ar - al)
    x_apex = al * y_apex + bl
    if y_apex > top + 0.5 * span:  # edges cross below the fan: not a fan
        return linear((h, w))
    t0, t1 = float(np.arctan(al)), float(np.arctan(ar))
    yy, xx = np.nonzero(fan)
    r = np.hypot(xx - x_apex, yy - y_apex)
    pad_t = 1.5 / max(float(r.max()), 1.0)  # a beam and a half of margin on each side
    return Geometry(
        "sector", (h, w), (float(x_apex), float(y_apex)),
        (t0 - pad_t, t1 + pad_t), (max(0.0, float(r.min()) - 1.5), float(r.max()) + 1.5),
    )


@lru_cache(maxsize=8)
def beam_to_image_maps(g: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap maps that sample beam space at every image pixel (for scan conversion)."""
    h, w = g.shape
    n_r, n_t = g.beam_shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xx - np.float32(g.apex[0]), yy - np.float32(g.apex[1])
    r = np.sqrt(dx * dx + dy * dy)
    t = np.arctan2(dx, dy)
    row = (r - g.radius[0]) * ((n_r - 1) / (g.radius[1] - g.radius[0]))
    col = (t - g.theta[0]) * ((n_t - 1) / (g.theta[1] - g.theta[0]))
    return col.astype(np.float32), row.astype(np.float32)


@lru_cache(maxsize=8)
def image_to_beam_maps(g: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap maps that sample the image at every beam-space sample."""
    n_r, n_t = g.beam_shape
    r = np.linspace(g.radius[0], g.radius[1], n_r, dtype=np.float32)[:, None]
    t = np.linspace(g.theta[0], g.theta[1], n_t, dtype=np.float32)[None, :]
    x = g.apex[0] + r * np.sin(t)
    y = g.apex[1] + r * np.cos(t)
    return x.astype(np.float32), y.astype(np.float32)


def to_beam(image_frame: np.ndarray, g: Geometry, nearest: bool) -> np.ndarray:
    """Resample an image-frame array (labels with ``nearest``) into beam space."""
    if g.kind == "linear":
        return image_frame
    import cv2

    mx, my = image_to_beam_maps(g)
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.remap(image_frame, mx, my, interp, borderMode=cv2.BORDER_REPLICATE)


def to_image(beam: np.ndarray, g: Geometry) -> np.ndarray:
    """Scan conversion: beam space back to the image frame (bilinear)."""
    if g.kind == "linear":
        return beam
    import cv2

    mx, my = beam_to_image_maps(g)
    return cv2.remap(beam, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=0)
