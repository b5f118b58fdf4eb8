"""The probe's field of view: a fan (curvilinear / phased) or a rectangle (linear).

``detect_sector`` finds it in an image: threshold, clean up, and fit a parametric geometry so
that text, calipers and scanner UI around the fan are not swallowed into it. ``Sector`` is
what the user edits with handles and what rasterises into the schema's sector label.
Angles are in degrees measured from straight down (negative to the image's left).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import cv2
import numpy as np

from usgen_desktop.core.labels import LabelMap

KINDS = ("linear", "curvilinear", "phased")
# A fit at least this confident is applied without asking (batch detection); below it the
# user reviews it. On the drawn test set (tests/fan_set.py) every fit with IoU < 0.9 against
# the truth scores below it.
AUTO_APPLY = 0.8


@dataclass(frozen=True)
class Sector:
    """A linear rectangle (x0, y0, x1, y1) or a fan (apex, radii, start/end angle)."""

    kind: str = "curvilinear"
    # fan
    apex_x: float = 0.0
    apex_y: float = 0.0
    inner_radius: float = 0.0
    outer_radius: float = 0.0
    start_angle: float = -30.0
    end_angle: float = 30.0
    # rectangle (linear); for a fan, when x1 > x0, the display crop the fan is seen through
    # (scanners zoom and pan, so the imaged region is often fan AND rectangle)
    x0: float = 0.0
    y0: float = 0.0
    x1: float = 0.0
    y1: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Unknown probe geometry '{self.kind}' (use {', '.join(KINDS)}).")

    @property
    def is_fan(self) -> bool:
        return self.kind != "linear"

    @property
    def has_crop(self) -> bool:
        """A fan seen through a display crop rectangle (x0, y0, x1, y1)."""
        return self.is_fan and self.x1 > self.x0 and self.y1 > self.y0

    def with_crop(self, x0: float, y0: float, x1: float, y1: float) -> Sector:
        return replace(self, x0=min(x0, x1), y0=min(y0, y1), x1=max(x0, x1), y1=max(y0, y1))

    def _rect_mask(self, h: int, w: int) -> np.ndarray:
        mask = np.zeros((h, w), bool)
        ya, yb = int(math.ceil(self.y0 - 1e-6)), int(math.floor(self.y1 + 1e-6)) + 1
        xa, xb = int(math.ceil(self.x0 - 1e-6)), int(math.floor(self.x1 + 1e-6)) + 1
        mask[max(0, ya) : max(0, yb), max(0, xa) : max(0, xb)] = True
        return mask

    # -- construction ------------------------------------------------------------------
    @classmethod
    def rectangle(cls, x0: float, y0: float, x1: float, y1: float) -> Sector:
        return cls(kind="linear", x0=min(x0, x1), y0=min(y0, y1), x1=max(x0, x1), y1=max(y0, y1))

    @classmethod
    def fan(
        cls,
        apex: tuple[float, float],
        inner_radius: float,
        outer_radius: float,
        start_angle: float,
        end_angle: float,
        kind: str = "curvilinear",
    ) -> Sector:
        return cls(
            kind=kind,
            apex_x=float(apex[0]),
            apex_y=float(apex[1]),
            inner_radius=float(max(0.0, min(inner_radius, outer_radius))),
            outer_radius=float(max(inner_radius, outer_radius)),
            start_angle=float(min(start_angle, end_angle)),
            end_angle=float(max(start_angle, end_angle)),
        )

    @classmethod
    def default_for(cls, kind: str, height: int, width: int) -> Sector:
        """A plausible geometry filling an empty canvas (for a mask drawn with no image)."""
        if kind == "linear":
            return cls.rectangle(0.05 * width, 0.03 * height, 0.95 * width - 1, 0.97 * height - 1)
        if kind == "phased":
            return cls.fan((width / 2, 0.02 * height), 0.0, 0.95 * height, -40, 40, "phased")
        return cls.fan((width / 2, -0.45 * height), 0.5 * height, 1.4 * height, -32, 32)

    # -- geometry ----------------------------------------------------------------------
    def rasterize(self, shape: tuple[int, int]) -> np.ndarray:
        """A boolean mask of the field of view at ``shape`` (height, width)."""
        h, w = shape
        if not self.is_fan:
            return self._rect_mask(h, w)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        dx, dy = xx - self.apex_x, yy - self.apex_y
        r = np.hypot(dx, dy)
        theta = np.degrees(np.arctan2(dx, dy))
        fan = (
            (r >= self.inner_radius)
            & (r <= self.outer_radius)
            & (theta >= self.start_angle)
            & (theta <= self.end_angle)
            & (dy >= 0)
        )
        return fan & self._rect_mask(h, w) if self.has_crop else fan

    def outline(self, n: int = 64) -> np.ndarray:
        """The boundary as an (N, 2) array of (x, y) points, for drawing."""
        if not self.is_fan:
            return np.array(
                [(self.x0, self.y0), (self.x1, self.y0), (self.x1, self.y1), (self.x0, self.y1)],
                np.float64,
            )
        a = np.radians(np.linspace(self.start_angle, self.end_angle, n))
        outer = np.stack([self.apex_x + self.outer_radius * np.sin(a),
                          self.apex_y + self.outer_radius * np.cos(a)], 1)
        inner = np.stack([self.apex_x + self.inner_radius * np.sin(a[::-1]),
                          self.apex_y + self.inner_radius * np.cos(a[::-1])], 1)
        poly = np.concatenate([outer, inner])
        return _clip_polygon(poly, (self.x0, self.y0, self.x1, self.y1)) if self.has_crop else poly

    def _polar(self, radius: float, angle: float) -> tuple[float, float]:
        a = math.radians(angle)
        return (self.apex_x + radius * math.sin(a), self.apex_y + radius * math.cos(a))

    def handles(self) -> dict[str, tuple[float, float]]:
        """Named handle positions (x, y) the GUI lets the user drag."""
        if not self.is_fan:
            return {
                "top_left": (self.x0, self.y0),
                "bottom_right": (self.x1, self.y1),
                "top_right": (self.x1, self.y0),
                "bottom_left": (self.x0, self.y1),
            }
        mid = 0.5 * (self.start_angle + self.end_angle)
        out = {
            "apex": (self.apex_x, self.apex_y),
            "inner": self._polar(self.inner_radius, mid),
            "outer": self._polar(self.outer_radius, mid),
            "start": self._polar(self._side_radius(self.start_angle), self.start_angle),
            "end": self._polar(self._side_radius(self.end_angle), self.end_angle),
        }
        if self.has_crop:
            cx, cy = 0.5 * (self.x0 + self.x1), 0.5 * (self.y0 + self.y1)
            out.update({"crop_left": (self.x0, cy), "crop_right": (self.x1, cy),
                        "crop_top": (cx, self.y0), "crop_bottom": (cx, self.y1)})
        return out

    def _side_radius(self, angle: float) -> float:
        """Where on a side to put its handle: half-way along it, or for a cropped fan half-way
        along the part inside the crop. The ends of the sides of a curvilinear fan are often
        far off the image, where a handle cannot be grabbed without zooming out."""
        if not self.has_crop:
            return 0.5 * (self.inner_radius + self.outer_radius)
        a = math.radians(angle)
        d = (math.sin(a), math.cos(a))
        lo, hi = self.inner_radius, self.outer_radius
        # Liang-Barsky: clip apex + r * d, r in [lo, hi], to the crop rectangle.
        for p0, dp, b0, b1 in ((self.apex_x, d[0], self.x0, self.x1),
                               (self.apex_y, d[1], self.y0, self.y1)):
            if abs(dp) < 1e-12:
                if not b0 <= p0 <= b1:
                    return 0.5 * (self.inner_radius + self.outer_radius)
                continue
            r0, r1 = sorted(((b0 - p0) / dp, (b1 - p0) / dp))
            lo, hi = max(lo, r0), min(hi, r1)
        return 0.5 * (lo + hi) if lo <= hi else 0.5 * (self.inner_radius + self.outer_radius)

    def with_handle_moved(self, name: str, x: float, y: float) -> Sector:
        """The geometry after dragging handle ``name`` to (x, y)."""
        if not self.is_fan:
            x0, y0, x1, y1 = self.x0, self.y0, self.x1, self.y1
            if "left" in name:
                x0 = x
            if "right" in name:
                x1 = x
            if "top" in name:
                y0 = y
            if "bottom" in name:
                y1 = y
            return Sector.rectangle(x0, y0, x1, y1)
        if name == "apex":
            return replace(self, apex_x=x, apex_y=y)
        if name.startswith("crop_"):
            x0, y0, x1, y1 = self.x0, self.y0, self.x1, self.y1
            side = name[5:]
            x0, x1 = (x, x1) if side == "left" else (x0, x) if side == "right" else (x0, x1)
            y0, y1 = (y, y1) if side == "top" else (y0, y) if side == "bottom" else (y0, y1)
            return self.with_crop(x0, y0, x1, y1)
        r = math.hypot(x - self.apex_x, y - self.apex_y)
        ang = math.degrees(math.atan2(x - self.apex_x, y - self.apex_y))
        if name == "inner":
            return replace(self, inner_radius=float(min(max(0.0, r), self.outer_radius - 1)))
        if name == "outer":
            return replace(self, outer_radius=float(max(r, self.inner_radius + 1)))
        if name == "start":
            return replace(self, start_angle=float(min(ang, self.end_angle - 1)))
        if name == "end":
            return replace(self, end_angle=float(max(ang, self.start_angle + 1)))
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        keep: tuple[str, ...] = ("kind", "x0", "y0", "x1", "y1") if not self.is_fan else (
            "kind", "apex_x", "apex_y", "inner_radius", "outer_radius", "start_angle",
            "end_angle")
        if self.has_crop:
            keep += ("x0", "y0", "x1", "y1")
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items() if k in keep}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sector:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def _clip_polygon(poly: np.ndarray, rect: tuple[float, float, float, float]) -> np.ndarray:
    """Sutherland-Hodgman: the part of ``poly`` (N, 2) inside the rectangle (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = rect
    edges = ((0, x0, 1), (0, x1, -1), (1, y0, 1), (1, y1, -1))  # (axis, bound, inside sign)
    pts = [tuple(p) for p in poly]
    for axis, bound, sign in edges:
        if not pts:
            break
        src, pts = pts, []
        for i, cur in enumerate(src):
            prev = src[i - 1]
            cin = sign * (cur[axis] - bound) >= 0
            pin = sign * (prev[axis] - bound) >= 0
            if cin != pin:
                t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                pts.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
            if cin:
                pts.append(cur)
    return np.asarray(pts, np.float64).reshape(-1, 2)


@dataclass(frozen=True)
class SectorFit:
    """The result of ``detect_sector``: the geometry, its mask, and how well it fits (0-1).
    ``remembered``: the user's own fan for this scanner layout (see :class:`LayoutMemory`);
    ``detected``: what the detector found before (the layout's key)."""

    sector: Sector
    mask: np.ndarray
    confidence: float
    remembered: bool = False
    detected: Sector | None = None

    @property
    def kind(self) -> str:
        return self.sector.kind


def _background_level(gray: np.ndarray) -> float:
    """The grey level the surround does not exceed: from the darkest of the four border
    strips (at least one lies outside the fan unless the fan fills the screen). A black
    surround gives 0; a lossy export's noisy dark grey gives its level plus its noise; a strip
    that is speckled or about as bright as the image is tissue (a fan filling the screen, a
    breast scan's dark far field), so a small level."""
    h, w = gray.shape
    b = max(2, min(h, w) // 50)
    strips = [cv2.medianBlur(np.ascontiguousarray(s), 3) for s in
              (gray[:b], gray[-b:], gray[:, :b], gray[:, -b:])]
    darkest = min(strips, key=lambda s: float(np.median(s)))
    m = float(np.median(darkest))
    if m <= 8.0:
        return m
    mad = float(np.median(np.abs(darkest.astype(np.float32) - m))) * 1.4826
    # a surround is uniform; dark tissue at a border (a breast scan's far field) is speckle
    if mad <= 2.0 and m < 0.35 * float(np.percentile(gray, 90)):
        return m + 3.0 * max(1.0, mad)
    return 8.0


def _flat_bright(gray: np.ndarray) -> np.ndarray:
    """Bright pixels without speckle: grey and colour scales, gain bars, logos, filled labels.

    Speckle, even smoothed by a downscaled export, varies along every direction; a drawn
    scale is constant across it (a vertical bar along each row, a horizontal one down each
    column) and a logo or label box everywhere. Such pixels are screen furniture, not tissue,
    even where they sit two pixels from the fan (a grey bar there pulled the fitted edge
    outwards)."""
    g = gray.astype(np.float32)

    def std(kx: int, ky: int) -> np.ndarray:
        mean = cv2.boxFilter(g, -1, (kx, ky), borderType=cv2.BORDER_REPLICATE)
        sq = cv2.boxFilter(g * g, -1, (kx, ky), borderType=cv2.BORDER_REPLICATE)
        return np.sqrt(np.maximum(0.0, sq - mean * mean))

    h, w = gray.shape
    mean = cv2.boxFilter(g, -1, (5, 5), borderType=cv2.BORDER_REPLICATE)
    flat = ((mean > 40) & (np.minimum(std(5, 1), std(1, 5)) < 0.75)).astype(np.uint8)
    # Only compact, small flat patches are drawn things: smooth tissue of a heavily filtered
    # scan is flat too in places, but in ragged patches (bars, scales and logos fill their
    # bounding boxes).
    n, comp, stats, _ = cv2.connectedComponentsWithStats(flat, connectivity=8)
    keep = np.zeros(n, bool)
    for i in range(1, n):
        x, y, bw, bh, area = stats[i]
        keep[i] = 12 <= area <= 0.03 * h * w and area >= 0.6 * bw * bh
    flat = keep[comp].astype(np.uint8)
    # grown by a pixel: the window straddling a bar's edge is not flat, its rim would stay
    return cv2.dilate(flat, np.ones((3, 3), np.uint8)).astype(bool)


def _imaged_region(gray: np.ndarray) -> np.ndarray:
    """The imaged region: pixels above the surround's level where most of a neighbourhood is,
    largest component, holes filled.

    "Most of a neighbourhood" (a window about a 50th of the image wide) instead of a blur:
    lines, ticks, text strokes, calipers and TGC curves beside the fan are thinner than half a
    window and vanish, without the blur that used to weld a depth bar to the fan and close a
    loop whose inside then counted as fan. The far field of a weak scan (a few grey levels of
    speckle over an exact-zero surround) still counts: most of its pixels are above zero.
    """
    h, w = gray.shape
    level = _background_level(gray)
    above = (cv2.medianBlur(gray, 3) > level) & ~_flat_bright(gray)
    above = above.astype(np.float32)
    k = max(5, int(round(min(h, w) / 50)) | 1)
    frac = cv2.boxFilter(above, -1, (k, k), borderType=cv2.BORDER_REPLICATE)
    mask = (frac > 0.5).astype(np.uint8)
    # An opening as wide as the window removes what survived as a thin bridge or blob.
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE,
                                                                            (k, k)))
    n, comp, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
    if n <= 1:
        return np.zeros_like(mask, bool)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    region = (comp == biggest).astype(np.uint8)
    # Fill holes (anechoic fluid inside the fan): everything not reachable from outside.
    padded = np.pad(region, 1)
    ff = padded.copy()
    cv2.floodFill(ff, None, (0, 0), 2)
    return (ff != 2)[1:-1, 1:-1]


def _robust_line(
    ys: np.ndarray, xs: np.ndarray, slope: tuple[float, float], tol: float = 1.5
) -> tuple[float, float, int]:
    """Fit x = a*y + b to edge points by RANSAC, then least squares on the inliers.

    The side of a fan is the longest straight run of edge points whose slope lies in
    ``slope`` (a fan widens downwards); points on the arcs, on a vertical display crop, on UI
    boxes or on a cropped border fall out as outliers. Returns (a, b, inlier count).
    """
    n = len(ys)
    if n < 6:
        return 0.0, 0.0, 0
    rng = np.random.default_rng(0)  # deterministic: the same image gives the same fit
    best_in = np.zeros(n, bool)
    span = ys.max() - ys.min()
    for i, j in rng.integers(0, n, size=(400, 2)):
        if abs(ys[i] - ys[j]) < max(2.0, 0.1 * span):
            continue
        a = (xs[j] - xs[i]) / (ys[j] - ys[i])
        if not slope[0] <= a <= slope[1]:
            continue
        inl = np.abs(xs - (a * ys + xs[i] - a * ys[i])) < tol
        if inl.sum() > best_in.sum():
            best_in = inl
    if best_in.sum() < 6:
        return 0.0, 0.0, 0
    a, b = np.polyfit(ys[best_in], xs[best_in], 1)
    if not slope[0] <= a <= slope[1]:
        return 0.0, 0.0, 0
    return float(a), float(b), int(best_in.sum())


def _radii(region: np.ndarray, apex_x: float, apex_y: float) -> tuple[float, float]:
    """Inner and outer radius from the first and last imaged row of each column.

    Low and high percentiles rather than medians: dark tissue at the top of the fan, UI boxes
    in a corner and a crop at the image border all move single columns, in one direction.
    """
    h, w = region.shape
    cols = np.flatnonzero(region.any(axis=0))
    first = region[:, cols].argmax(axis=0)
    last = h - 1 - region[::-1, cols].argmax(axis=0)
    d_first = np.hypot(cols - apex_x, first - apex_y)
    d_last = np.hypot(cols - apex_x, last - apex_y)
    r_in = float(np.percentile(d_first, 5))
    r_out = float(np.percentile(d_last, 97))
    return r_in, max(r_out, r_in + 1)


def _apex_on_line(
    a: float, b: float, region: np.ndarray, top: int, bottom: int
) -> tuple[float, float] | None:
    """Where on the side line x = a*y + b the apex lies, from an inner or outer arc.

    With only one side of the fan in view (the other is cropped by the display), the apex is
    the point of the line from which the most top (or bottom) boundary points lie at one
    distance: the arc is a circle about the apex. None when no arc is in view.
    """
    h, w = region.shape
    cols = np.flatnonzero(region.any(axis=0))
    first = region[:, cols].argmax(axis=0).astype(np.float64)
    last = (h - 1 - region[::-1, cols].argmax(axis=0)).astype(np.float64)
    best: tuple[int, float] = (0, 0.0)
    need = max(15, int(0.25 * len(cols)))
    ts = np.arange(-6 * max(h, w), top - 2, 1.0)
    for ys, bad in ((first, first <= 1), (last, last >= h - 2)):
        keep = ~bad & (np.abs(cols - (a * ys + b)) > 3)  # not on the side line itself
        if keep.sum() < need:
            continue
        px, py = cols[keep].astype(np.float64), ys[keep]
        d = np.hypot(px[None, :] - (a * ts[:, None] + b), py[None, :] - ts[:, None])
        for k in range(len(ts)):
            counts = np.bincount(np.rint(d[k]).astype(np.int64))
            c = int(np.convolve(counts, np.ones(3, int), "same").max())
            if c > best[0]:
                best = (c, float(ts[k]))
    if best[0] < need:
        return None
    t = best[1]
    return a * t + b, t


LAYOUT_MATCH = 0.9  # IoU of two detected fans that makes them the same scanner layout


def _small_mask(sector: Sector, shape: tuple[int, int]) -> np.ndarray:
    """The sector rasterised at a quarter of the size (comparing layouts needs no more)."""
    h, w = shape
    f = min(1.0, 96 / max(h, w))
    small = Sector.from_dict({k: (float(v) * f if isinstance(v, (int, float)) and k not in
                                  ("kind", "start_angle", "end_angle") else v)
                              for k, v in sector.to_dict().items()})
    return small.rasterize((max(1, round(h * f)), max(1, round(w * f))))


@dataclass
class LayoutMemory:
    """The user's fixes of the fan, per scanner layout, so one fix holds for a dataset.

    A scanner writes every image of one setting with the same size and the same fan. When the
    user corrects a detected fan, :meth:`remember` keeps (image size, the detected fan, the
    user's fan); :meth:`recall` gives the user's fan to any image of that size whose detected
    fan overlaps either of them with IoU >= ``LAYOUT_MATCH``. Plain data: saved as JSON in the
    project folder (``LAYOUTS_FILE``) and read by ``usgen sector detect --layouts``.
    """

    entries: list[dict[str, Any]] = field(default_factory=list)

    def remember(self, shape: tuple[int, int], detected: Sector, fixed: Sector) -> None:
        """Keep the user's ``fixed`` fan for images like this one (replaces an older fix)."""
        h, w = int(shape[0]), int(shape[1])
        self.entries = [e for e in self.entries if not (
            (e["height"], e["width"]) == (h, w) and self._matches(e, (h, w), detected))]
        self.entries.append({"height": h, "width": w, "detected": detected.to_dict(),
                             "fixed": fixed.to_dict()})

    def recall(self, shape: tuple[int, int], detected: Sector) -> Sector | None:
        """The user's fan for an image of ``shape`` whose fan was detected as ``detected``."""
        h, w = int(shape[0]), int(shape[1])
        for e in reversed(self.entries):
            if (e["height"], e["width"]) == (h, w) and self._matches(e, (h, w), detected):
                return Sector.from_dict(e["fixed"])
        return None

    @staticmethod
    def _matches(entry: dict[str, Any], shape: tuple[int, int], detected: Sector) -> bool:
        mine = _small_mask(detected, shape)
        for key in ("detected", "fixed"):
            other = _small_mask(Sector.from_dict(entry[key]), shape)
            inter, union = int((mine & other).sum()), int((mine | other).sum())
            if union and inter / union >= LAYOUT_MATCH:
                return True
        return False

    def __len__(self) -> int:
        return len(self.entries)

    def to_json(self) -> str:
        import json

        return json.dumps({"version": 1, "layouts": self.entries}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> LayoutMemory:
        import json

        data = json.loads(text)
        entries = data.get("layouts", []) if isinstance(data, dict) else []
        good = [e for e in entries if isinstance(e, dict)
                and {"height", "width", "detected", "fixed"} <= set(e)]
        return cls(good)


LAYOUTS_FILE = "sector_layouts.json"


def detect_sector(image: np.ndarray, probe: str | None = None,
                  memory: LayoutMemory | None = None) -> SectorFit:
    """:func:`fit_sector`, then the user's own fan where ``memory`` holds one for this
    scanner layout (confidence 1: the user said so)."""
    fit = fit_sector(image, probe)
    if memory is not None and len(memory):
        fixed = memory.recall(fit.mask.shape, fit.sector)
        if fixed is not None:
            return SectorFit(fixed, fixed.rasterize(fit.mask.shape), 1.0, True, fit.sector)
    return SectorFit(fit.sector, fit.mask, fit.confidence, False, fit.sector)


def fit_sector(image: np.ndarray, probe: str | None = None) -> SectorFit:
    """Find the imaged region of an ultrasound image and fit a fan or a rectangle to it.

    The fan may be seen through a display crop (zoomed or panned scans): then the fit is a fan
    whose crop rectangle is the imaged region's bounding box. With both sides of the fan in
    view the apex is where they meet; with one side, it is found from an inner or outer arc;
    with no arc either, it is put far up that side, which rasterises the same region.
    ``probe`` (the schema's probe, when known) is a prior: ``linear`` fits only rectangles;
    ``curvilinear`` / ``phased`` keep a fan unless a rectangle fits clearly better.
    """
    gray = np.asarray(image)
    if gray.ndim == 3:
        gray = cv2.cvtColor(gray[..., :3].astype(np.uint8), cv2.COLOR_RGB2GRAY)
    if gray.dtype != np.uint8:
        g = gray.astype(np.float32)
        g = (g - g.min()) / max(1e-6, float(g.max() - g.min())) * 255
        gray = g.astype(np.uint8)
    h, w = gray.shape
    region = _imaged_region(gray)
    if region.sum() < 0.01 * h * w:
        full = Sector.rectangle(0, 0, w - 1, h - 1)
        return SectorFit(full, full.rasterize((h, w)), 0.0)

    rows = np.flatnonzero(region.any(axis=1))
    sub = region[rows]
    left_a = sub.argmax(axis=1).astype(np.float64)
    right_a = (w - 1 - sub[:, ::-1].argmax(axis=1)).astype(np.float64)
    ys_a = rows.astype(np.float64)
    # Edges on the image border are where the image was cropped, not the fan's side.
    lsel, rsel = left_a > 1, right_a < w - 2
    steep = math.tan(math.radians(4))  # a fan's sides diverge; vertical edges are a crop
    aL, bL, nL = _robust_line(ys_a[lsel], left_a[lsel], (-3.0, -steep))
    aR, bR, nR = _robust_line(ys_a[rsel], right_a[rsel], (steep, 3.0))
    enough = max(8, int(0.08 * h))
    top, bottom = float(rows[0]), float(rows[-1])
    # The region's extents: the outermost ones for a fan's crop (its sides reach them), and
    # robust ones for a rectangle (a few rows of UI sticking out must not widen it).
    crop = (float(np.percentile(left_a, 1)), top, float(np.percentile(right_a, 99)), bottom)
    tight = (float(np.percentile(left_a, 10)), top, float(np.percentile(right_a, 90)), bottom)

    candidates: list[Sector] = [Sector.rectangle(*tight), Sector.rectangle(*crop)]
    apex: tuple[float, float] | None = None
    if nL >= enough and nR >= enough:
        apex_y = (bR - bL) / (aL - aR)
        apex = (aL * apex_y + bL, apex_y)
    elif max(nL, nR) >= max(enough, 0.25 * (rows[-1] - rows[0])):
        # One side alone must be long: a short straight run is as likely the wall of a cyst
        # or a shadow cut by the threshold as the edge of a fan.
        a, b = (aL, bL) if nL >= nR else (aR, bR)
        apex = _apex_on_line(a, b, region, int(top), int(bottom))
        if apex is None:
            far = -8.0 * max(h, w)
            apex = (a * far + b, far)
    if apex is not None and apex[1] < bottom:
        yy, xx = np.nonzero(region)
        theta = np.degrees(np.arctan2(xx - apex[0], yy - apex[1]))
        two = nL >= enough and nR >= enough
        use_l, use_r = (True, True) if two else (nL >= nR, nR > nL)
        start = math.degrees(math.atan(aL)) if use_l else float(np.percentile(theta, 0.2))
        end = math.degrees(math.atan(aR)) if use_r else float(np.percentile(theta, 99.8))
        r_in, r_out = _radii(region, *apex)
        kind = "phased" if r_in < 0.08 * max(h, w) else "curvilinear"
        if kind == "phased":
            r_in = 0.0
        fan = Sector.fan(apex, r_in, r_out, start, end, kind)
        candidates.append(fan)
        candidates.append(fan.with_crop(*crop))

    if probe == "linear":
        candidates = [c for c in candidates if not c.is_fan]
    # A fan has more parameters than a rectangle, a crop more than a bare fan: each must earn
    # its place by fitting clearly better; a fan probe turns that around.
    fan_bonus = -0.02 if probe in ("curvilinear", "phased") else 0.01
    best, best_iou, best_score = candidates[0], -1.0, -2.0
    for cand in candidates:
        m = cand.rasterize((h, w))
        iou = float((m & region).sum()) / max(1, int((m | region).sum()))
        score = iou - (fan_bonus + 0.01 * cand.has_crop if cand.is_fan else 0.0)
        if score > best_score:
            best, best_iou, best_score = cand, iou, score
    mask = best.rasterize((h, w))
    confidence = min(max(0.0, best_iou), _edge_agreement(mask, region, _black_boxes(region)))
    if probe in ("curvilinear", "phased") and not best.is_fan:
        # The probe makes fans: a rectangle in view is a fan seen through a display crop
        # that hides its sides and arcs (HC18's zoomed scans); same pixels, the probe's kind.
        best = _fan_behind(best, probe)
    return SectorFit(best, mask, confidence)


def _fan_behind(rect: Sector, kind: str) -> Sector:
    """A fan of ``kind`` that covers the rectangle, seen through it as its display crop."""
    cx, width, height = 0.5 * (rect.x0 + rect.x1), rect.x1 - rect.x0, rect.y1 - rect.y0
    apex_y = rect.y0 - 2.0 * max(width, height)
    r_out = math.hypot(0.5 * width, rect.y1 - apex_y) + 2.0
    r_in = 0.0 if kind == "phased" else max(0.0, rect.y0 - apex_y - 2.0)
    half = math.degrees(math.atan2(0.5 * width, rect.y0 - apex_y)) + 1.0
    return Sector.fan((cx, apex_y), r_in, r_out, -half, half, kind).with_crop(
        rect.x0, rect.y0, rect.x1, rect.y1)


def _black_boxes(region: np.ndarray) -> np.ndarray:
    """Dark axis-aligned rectangles (anonymisation boxes, UI panels): what lies under them is
    unknown, so an outline passing through one is neither right nor wrong there."""
    h, w = region.shape
    dark = (~region).astype(np.uint8)
    n, comp, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=4)
    boxes = np.zeros((h, w), bool)
    for i in range(1, n):
        x, y, bw, bh, area = stats[i]
        if min(bw, bh) < 4 or area > 0.25 * h * w:
            continue
        if area >= 0.95 * bw * bh:
            boxes[y:y + bh, x:x + bw] |= comp[y:y + bh, x:x + bw] == i
    return boxes


def _edge_agreement(mask: np.ndarray, region: np.ndarray,
                    unknown: np.ndarray | None = None) -> float:
    """How much of the fitted outline runs along the imaged region's edge (0-1).

    Each point of the outline (away from the image border, where a cut fan ends anyway) is
    looked at a few pixels to either side: imaged inside and dark outside agrees; imaged
    outside (tissue cut off, or clutter the region swallowed) or dark on both sides (a fit
    running through the surround, or through a black box that hides the fan) does not. The
    area overlap alone stays high when a tenth of the outline is wrong; this does not.
    """
    h, w = mask.shape
    d = max(2, int(round(min(h, w) / 100)))
    m8 = mask.astype(np.uint8)
    edge = m8 & ~cv2.erode(m8, np.ones((3, 3), np.uint8)).astype(bool)
    border = max(d + 1, 3)
    edge[:border], edge[-border:], edge[:, :border], edge[:, -border:] = 0, 0, 0, 0
    ys, xs = np.nonzero(edge)
    if len(ys) < 20:
        return 1.0  # the outline is the image border: nothing to disagree with
    step = max(1, len(ys) // 2000)
    ys, xs = ys[::step], xs[::step]
    soft = cv2.GaussianBlur(m8.astype(np.float32), (0, 0), 2.0)
    gy, gx = np.gradient(soft)
    ny, nx = gy[ys, xs], gx[ys, xs]
    norm = np.hypot(ny, nx) + 1e-6
    ny, nx = ny / norm, nx / norm  # points inwards
    yi = np.clip(np.rint(ys + d * ny), 0, h - 1).astype(int)
    xi = np.clip(np.rint(xs + d * nx), 0, w - 1).astype(int)
    yo = np.clip(np.rint(ys - d * ny), 0, h - 1).astype(int)
    xo = np.clip(np.rint(xs - d * nx), 0, w - 1).astype(int)
    inside, outside = region[yi, xi], region[yo, xo]
    if unknown is not None:
        seen = ~(unknown[yi, xi] | unknown[yo, xo])
        if seen.sum() < 20:
            return 1.0  # the outline runs only along the border and through black boxes
        inside, outside = inside[seen], outside[seen]
    return float((inside & ~outside).mean())


def apply_sector(label_map: LabelMap, sector_mask: np.ndarray, sector_id: int) -> LabelMap:
    """Clip anatomy to the fan and give unlabelled pixels inside it the sector id."""
    data = label_map.data.copy()
    inside = np.asarray(sector_mask, bool)
    data[~inside] = 0
    data[inside & (data == 0)] = sector_id
    return LabelMap(data)


def sector_from_labels(label_map: LabelMap, sector_id: int) -> Sector | None:
    """Fit the geometry of the field of view of a label map that has a sector label."""
    fov = label_map.data != 0
    if not fov.any():
        return None
    img = np.where(fov, 200, 0).astype(np.uint8)
    return fit_sector(img).sector
