"""Clicks, the maps the network reads them from, and the simulated clicker.

Pure numpy/OpenCV, no torch: the GUI, the CLI and the benchmark share these definitions, so a
click means the same thing in training, in evaluation and under the user's mouse.

Geometry. The network works on a square grid of ``size`` pixels. An image of any size is
*letterboxed* into it: scaled so its longer side is ``size`` (aspect kept) and placed at the top
left; the rest of the grid is padding, marked 0 in the ``valid`` channel. A click at image pixel
``(x, y)`` lands at grid pixel ``(x * scale, y * scale)``.

Click maps (the specification the tests check). Two float32 maps of the grid's shape, one for
inside (positive) clicks and one for outside (negative) clicks. Each click adds a filled disk of
``radius`` grid pixels centred on its grid position; pixels at Euclidean distance <= ``radius``
from the centre are 1.0, all others 0.0; overlapping disks stay 1.0 (a union, not a sum). A click
outside the grid draws the part of its disk that falls inside, if any.

The clicker (NoC protocol of RITM, Sofiiuk et al. 2022, and of earlier work). Given the true mask
and the current prediction, the false-negative and false-positive regions are each measured with
a distance transform whose border counts as background; the next click goes to the pixel farthest
from the boundary of its region (the centre of the largest error region), inside if the
false-negative region's maximum is larger, outside otherwise. With an empty prediction the first
click is therefore at the object's interior centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Click:
    """One click in image pixel coordinates: ``inside`` True for a positive (left) click."""

    x: float
    y: float
    inside: bool


@dataclass(frozen=True)
class Letterbox:
    """How an image of ``shape`` (h, w) sits in the network's square grid of ``size`` pixels."""

    shape: tuple[int, int]
    size: int

    @property
    def scale(self) -> float:
        return self.size / max(self.shape)

    @property
    def inner(self) -> tuple[int, int]:
        """(h, w) of the image inside the grid, at least 1 pixel each."""
        h, w = self.shape
        return max(1, round(h * self.scale)), max(1, round(w * self.scale))

    def to_grid(self, click: Click) -> tuple[float, float]:
        """Grid (x, y) of an image click; pixel centres map to pixel centres."""
        s = self.scale
        return (click.x + 0.5) * s - 0.5, (click.y + 0.5) * s - 0.5

    def image_to_grid(self, image: np.ndarray, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
        """The image (h, w) resized into the top-left of a zero ``size`` x ``size`` grid."""
        ih, iw = self.inner
        out = np.zeros((self.size, self.size), dtype=np.float32)
        out[:ih, :iw] = cv2.resize(image.astype(np.float32), (iw, ih), interpolation=interpolation)
        return out

    def valid(self) -> np.ndarray:
        """1.0 where the grid holds the image, 0.0 on the padding."""
        ih, iw = self.inner
        out = np.zeros((self.size, self.size), dtype=np.float32)
        out[:ih, :iw] = 1.0
        return out

    def grid_to_image(self, grid: np.ndarray) -> np.ndarray:
        """A grid map (e.g. probabilities) cropped to the image and resized (bilinear) to it."""
        ih, iw = self.inner
        h, w = self.shape
        return cv2.resize(grid[:ih, :iw].astype(np.float32), (w, h),
                          interpolation=cv2.INTER_LINEAR)


def click_maps(clicks: list[Click] | tuple[Click, ...], box: Letterbox,
               radius: float) -> tuple[np.ndarray, np.ndarray]:
    """The positive and negative click maps (disks of ``radius`` grid pixels; see module doc)."""
    pos = np.zeros((box.size, box.size), dtype=np.float32)
    neg = np.zeros_like(pos)
    yy, xx = np.mgrid[0:box.size, 0:box.size].astype(np.float32)
    for c in clicks:
        gx, gy = box.to_grid(c)
        disk = (xx - gx) ** 2 + (yy - gy) ** 2 <= radius * radius
        (pos if c.inside else neg)[disk] = 1.0
    return pos, neg


def grid_click_maps(points: np.ndarray, size: int, radius: float) -> np.ndarray:
    """Click maps for points already on the grid: ``points`` (n, 3) rows (x, y, inside).

    The training loop's fast path (no Letterbox); same disks as ``click_maps``. Returns (2, size,
    size): positive, negative."""
    out = np.zeros((2, size, size), dtype=np.float32)
    if len(points) == 0:
        return out
    r = int(np.ceil(radius))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    for x, y, inside in points:
        cx, cy = int(round(x)), int(round(y))
        ch = 0 if inside else 1
        ys, xs = cy + dy, cx + dx
        keep = ((dx + cx - x) ** 2 + (dy + cy - y) ** 2 <= radius * radius)
        keep &= (ys >= 0) & (ys < size) & (xs >= 0) & (xs < size)
        out[ch, ys[keep], xs[keep]] = 1.0
    return out


def _padded_dt(region: np.ndarray) -> np.ndarray:
    """Distance to the nearest pixel outside ``region``, the image border counting as outside."""
    padded = np.pad(region.astype(np.uint8), 1)
    return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]


def next_click(gt: np.ndarray, pred: np.ndarray,
               valid: np.ndarray | None = None) -> tuple[int, int, bool] | None:
    """The simulated user's next click (x, y, inside) at the centre of the largest error region.

    ``gt`` and ``pred`` are boolean masks of one shape; ``valid`` (optional) limits where the
    user may click. Returns None when the prediction has no error left."""
    gt = gt.astype(bool)
    pred = pred.astype(bool)
    fn = gt & ~pred
    fp = ~gt & pred
    if valid is not None:
        fn &= valid.astype(bool)
        fp &= valid.astype(bool)
    if not fn.any() and not fp.any():
        return None
    fn_dt = _padded_dt(fn)
    fp_dt = _padded_dt(fp)
    inside = bool(fn_dt.max() > fp_dt.max())
    dt = fn_dt if inside else fp_dt
    y, x = np.unravel_index(int(np.argmax(dt)), dt.shape)
    return int(x), int(y), inside


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    a = a.astype(bool)
    b = b.astype(bool)
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union
