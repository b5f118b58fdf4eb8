"""Lesion-shape proposals learned from a dataset's own masks ("add a lesion", paper 001).

A lesion outline is described as its radial profile seen from the centroid: the log radius at
``RADIAL_SAMPLES`` angles (image axes, y down). Its Fourier series splits what BI-RADS reads
from a shape: the low harmonics (1 to ``LOW_HARMONICS``) carry elongation and its direction
(wider than tall, or taller than wide) and lopsidedness, fitted per class as one Gaussian with a
full covariance; the high harmonics carry the boundary's roughness (lobulation, spiculation),
fitted per class as a power per harmonic and drawn with random phases. A proposal draws one
profile, scales it to the chosen area and places it at a point where it lies wholly inside the
allowed region (the breast tissue, or the probe's fan, away from other labels and the image
border), moving it to the nearest point that fits, or shrinking it when nothing does.

Proposals are deterministic per seed. A model is fitted from masks (``fit_lesion_model``) or
read from a small JSON of fitted statistics (``resources/lesions/<schema>.json``; statistics
only, no pixels), so the tool works without the dataset.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from usgen_desktop.errors import UsgenError

RADIAL_SAMPLES = 128  # angles of the radial profile (2.8 degrees apart)
LOW_HARMONICS = 4  # harmonics with a joint Gaussian: shape and its direction
MAX_HARMONIC = 48  # harmonics above this carry pixel noise only
MIN_LESION_PX = 24  # smaller connected components of a mask are specks, not lesions
BORDER_PX = 2  # a proposal keeps this far from the image's edge
FORMAT = "usgen-lesion-model/1"
STAT_NAMES = ("area", "solidity", "aspect", "roughness", "orientation")


# -- measuring outlines -----------------------------------------------------------------
def lesion_components(mask: np.ndarray, min_px: int = MIN_LESION_PX) -> list[np.ndarray]:
    """The connected lesions of a mask (8-connected, at least ``min_px`` pixels), largest
    first, each a bool array of the mask's size."""
    m = (np.asarray(mask) > 0).astype(np.uint8)
    n, comp, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    order = sorted(range(1, n), key=lambda i: -stats[i, cv2.CC_STAT_AREA])
    return [comp == i for i in order if stats[i, cv2.CC_STAT_AREA] >= min_px]


def _outline(mask: np.ndarray) -> np.ndarray:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    return max(contours, key=cv2.contourArea)


def shape_stats(mask: np.ndarray) -> dict[str, float]:
    """What a radiologist reads from one lesion's outline, measured the same way on real and
    proposed masks: ``area`` (fraction of the image), ``solidity`` (area / convex hull area;
    1 for an oval, lower for lobulated or spiculated), ``aspect`` (bounding-box height /
    width; > 1 is "taller than wide"), ``roughness`` (outline length / hull outline length - 1)
    and ``orientation`` (the major axis's tilt from horizontal, 0-90 degrees)."""
    m = np.asarray(mask) > 0
    area = float(m.sum())
    if area == 0:
        raise ValueError("empty mask")
    c = _outline(m)
    hull = cv2.convexHull(c)
    hull_px = np.zeros(m.shape, np.uint8)
    cv2.fillPoly(hull_px, [hull], 1)
    hull_area = max(float(hull_px.sum()), area)
    _, _, w, h = cv2.boundingRect(c)
    per = cv2.arcLength(c, True)
    hull_per = max(cv2.arcLength(hull, True), 1e-6)
    mo = cv2.moments(m.astype(np.uint8), binaryImage=True)
    angle = 0.5 * np.degrees(np.arctan2(2 * mo["mu11"], mo["mu20"] - mo["mu02"]))
    tilt = abs(angle) if abs(angle) <= 90 else 180 - abs(angle)
    return {
        "area": area / m.size,
        "solidity": area / hull_area,
        "aspect": h / max(w, 1),
        "roughness": max(0.0, per / hull_per - 1.0),
        "orientation": float(tilt),
    }


def radial_profile(mask: np.ndarray, samples: int = RADIAL_SAMPLES
                   ) -> tuple[float, float, np.ndarray] | None:
    """(centroid x, centroid y, radius per angle) of one lesion: along each ray from the
    centroid, the distance to the outermost lesion pixel (so a non-convex outline is read as
    the star-shaped outline around it). None for a lesion too small to read."""
    m = np.asarray(mask) > 0
    ys, xs = np.nonzero(m)
    if len(xs) < MIN_LESION_PX:
        return None
    cx, cy = float(xs.mean()), float(ys.mean())
    rmax = float(np.hypot(xs - cx, ys - cy).max()) + 2.0
    t = np.arange(0.0, rmax, 0.5)
    theta = 2 * np.pi * np.arange(samples) / samples
    px = np.rint(cx + np.cos(theta)[:, None] * t[None]).astype(int)
    py = np.rint(cy + np.sin(theta)[:, None] * t[None]).astype(int)
    inside = (px >= 0) & (px < m.shape[1]) & (py >= 0) & (py < m.shape[0])
    hit = np.zeros(px.shape, bool)
    hit[inside] = m[py[inside], px[inside]]
    last = np.where(hit.any(axis=1), hit.shape[1] - 1 - np.argmax(hit[:, ::-1], axis=1), 0)
    radii = np.maximum(t[last] + 0.5, 0.5)
    return cx, cy, radii


def profile_harmonics(radii: np.ndarray) -> np.ndarray:
    """Complex Fourier coefficients 1..MAX_HARMONIC of the log radius (its mean removed)."""
    lr = np.log(np.asarray(radii, float))
    c = np.fft.rfft(lr - lr.mean()) / len(lr)
    return c[1:MAX_HARMONIC + 1]


_NOISE: np.ndarray | None = None


def reading_noise(mean_radius: float) -> np.ndarray:
    """The power per high harmonic that reading a *perfectly smooth* outline off a pixel grid
    adds (the staircase), for a lesion of ``mean_radius`` pixels: measured once on rasterised
    circles and scaled as 1 / radius^2. Subtracted when fitting, since a proposal gets its own
    staircase when it is rasterised."""
    global _NOISE
    if _NOISE is None:
        rows = []
        for i, r in enumerate(np.linspace(6, 60, 19)):
            m = np.zeros((int(2 * r + 12),) * 2, np.uint8)
            c = int((r + 6) * 16) + (i * 5) % 16
            cv2.circle(m, (c, c + (i * 3) % 16), int(r * 16), 1, -1, cv2.LINE_8, 4)
            prof = radial_profile(m)
            if prof is not None:
                rows.append(np.abs(profile_harmonics(prof[2])[LOW_HARMONICS:]) ** 2 * r * r)
        _NOISE = np.mean(rows, axis=0)
    return _NOISE / max(float(mean_radius), 1.0) ** 2


# -- the model ----------------------------------------------------------------------------
@dataclass
class ClassShapeModel:
    """The fitted shape statistics of one class's lesions."""

    n: int
    low_mean: list[float]  # Re, Im of harmonics 1..LOW_HARMONICS
    low_cov: list[list[float]]
    high_power: list[float]  # share of each harmonic LOW_HARMONICS+1..MAX_HARMONIC (sum 1)
    log_rough_mean: float  # log of a lesion's total power in those harmonics
    log_rough_std: float
    log_area_mean: float  # natural log of the area as a fraction of the image
    log_area_std: float
    area_range: tuple[float, float]  # 2nd and 98th percentiles of the area fraction
    center_mean: tuple[float, float]  # centroid (x / width, y / height)
    center_std: tuple[float, float]
    stats: dict[str, dict[str, float]] = field(default_factory=dict)  # summaries, for people

    def to_dict(self) -> dict[str, Any]:
        """Plain floats at full precision (what proposals are drawn from round-trips exactly);
        the summaries for people are rounded to 4 significant digits."""
        def f(x: Any) -> Any:
            return [f(v) for v in x] if isinstance(x, (list, tuple)) else float(x)

        return {
            "n": self.n, "low_mean": f(self.low_mean), "low_cov": f(self.low_cov),
            "high_power": f(self.high_power), "log_rough_mean": f(self.log_rough_mean),
            "log_rough_std": f(self.log_rough_std), "log_area_mean": f(self.log_area_mean),
            "log_area_std": f(self.log_area_std), "area_range": f(self.area_range),
            "center_mean": f(self.center_mean), "center_std": f(self.center_std),
            "stats": {k: {q: float(f"{v:.4g}") for q, v in d.items()}
                      for k, d in self.stats.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassShapeModel:
        low = 2 * LOW_HARMONICS
        m = cls(
            n=int(d["n"]), low_mean=[float(v) for v in d["low_mean"]],
            low_cov=[[float(v) for v in row] for row in d["low_cov"]],
            high_power=[float(v) for v in d["high_power"]],
            log_rough_mean=float(d["log_rough_mean"]), log_rough_std=float(d["log_rough_std"]),
            log_area_mean=float(d["log_area_mean"]), log_area_std=float(d["log_area_std"]),
            area_range=(float(d["area_range"][0]), float(d["area_range"][1])),
            center_mean=(float(d["center_mean"][0]), float(d["center_mean"][1])),
            center_std=(float(d["center_std"][0]), float(d["center_std"][1])),
            stats=dict(d.get("stats", {})),
        )
        if (len(m.low_mean) != low or np.asarray(m.low_cov).shape != (low, low)
                or len(m.high_power) != MAX_HARMONIC - LOW_HARMONICS):
            raise ValueError("harmonics do not match this version")
        return m


@dataclass
class LesionProposal:
    """One proposed lesion: its mask (bool, the image's size), outline (x, y) and how it was
    made, so that a manifest can say where the new lesion is."""

    mask: np.ndarray
    outline: np.ndarray
    klass: str
    seed: int
    center: tuple[float, float]  # where it was placed (x, y)
    asked_at: tuple[float, float]  # where it was asked for
    area_fraction: float  # of the image, after any shrinking to fit

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), end exclusive."""
        ys, xs = np.nonzero(self.mask)
        return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1

    def region(self) -> dict[str, Any]:
        """The manifest's description of the lesion: bbox, area in pixels and as a fraction,
        where it was placed."""
        return {**region_summary(self.mask),
                "center": [round(self.center[0], 2), round(self.center[1], 2)]}


@dataclass
class LesionModel:
    """Per-class lesion shape models; ``source`` says what they were fitted on."""

    classes: dict[str, ClassShapeModel]
    source: str = ""

    # -- saving ---------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "source": self.source,
                           "harmonics": [RADIAL_SAMPLES, LOW_HARMONICS, MAX_HARMONIC],
                           "classes": {k: v.to_dict() for k, v in self.classes.items()}},
                          indent=1)

    @classmethod
    def from_json(cls, text: str, where: str = "the lesion model") -> LesionModel:
        try:
            d = json.loads(text)
            if d.get("format") != FORMAT:
                raise ValueError("format")
            classes = {str(k): ClassShapeModel.from_dict(v) for k, v in d["classes"].items()}
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
            raise UsgenError(f"{where} is not a lesion shape model USGen can read ({exc}).") \
                from None
        return cls(classes, str(d.get("source", "")))

    @classmethod
    def load(cls, path: Path) -> LesionModel:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsgenError(f"Could not read '{path}' ({exc.strerror or exc}).") from None
        return cls.from_json(text, f"'{path}'")

    def class_model(self, klass: str) -> ClassShapeModel:
        if klass not in self.classes:
            known = ", ".join(sorted(self.classes)) or "none"
            raise UsgenError(f"There is no lesion shape model for class '{klass}' "
                             f"(known: {known}).")
        return self.classes[klass]

    # -- proposing ------------------------------------------------------------------------
    def sample_outline(self, klass: str, seed: int) -> np.ndarray:
        """A radial profile (``RADIAL_SAMPLES`` radii, unit mean log radius) of ``klass``."""
        cm = self.class_model(klass)
        rng = np.random.default_rng(int(seed))
        low = rng.multivariate_normal(np.asarray(cm.low_mean), np.asarray(cm.low_cov),
                                      method="cholesky")
        total = float(np.exp(rng.normal(cm.log_rough_mean, cm.log_rough_std)))
        power = np.asarray(cm.high_power) * total
        high = np.sqrt(power / 2) * (rng.standard_normal(len(power))
                                     + 1j * rng.standard_normal(len(power)))
        spec = np.zeros(RADIAL_SAMPLES // 2 + 1, complex)
        spec[1:LOW_HARMONICS + 1] = low[0::2] + 1j * low[1::2]
        spec[LOW_HARMONICS + 1:MAX_HARMONIC + 1] = high
        return np.exp(np.fft.irfft(spec * RADIAL_SAMPLES, n=RADIAL_SAMPLES))

    def sample_area(self, klass: str, seed: int) -> float:
        """An area fraction drawn from the class's (log-normal) sizes, within its usual range."""
        cm = self.class_model(klass)
        rng = np.random.default_rng([int(seed), 1])
        a = float(np.exp(rng.normal(cm.log_area_mean, cm.log_area_std)))
        return float(np.clip(a, *cm.area_range))

    def sample_center(self, klass: str, seed: int, allowed: np.ndarray) -> tuple[float, float]:
        """A point (x, y) where this class's lesions usually sit (depth and side), inside
        ``allowed`` (the nearest allowed pixel when the draw falls outside)."""
        cm = self.class_model(klass)
        rng = np.random.default_rng([int(seed), 2])
        h, w = allowed.shape
        x = float(np.clip(rng.normal(cm.center_mean[0], cm.center_std[0]), 0.05, 0.95)) * w
        y = float(np.clip(rng.normal(cm.center_mean[1], cm.center_std[1]), 0.05, 0.95)) * h
        return _nearest_true(allowed, x, y) or (x, y)

    def propose(self, shape: tuple[int, int], klass: str, seed: int,
                center: tuple[float, float] | None = None, area_fraction: float | None = None,
                allowed: np.ndarray | None = None) -> LesionProposal:
        """A lesion of ``klass`` for an image of ``shape`` (h, w), deterministic per ``seed``.

        ``center`` (x, y) is where the user clicked (None: where this class's lesions usually
        are); ``area_fraction`` its size as a fraction of the image (None: drawn from the
        class's sizes); ``allowed`` the pixels it may cover (default: the image less a thin
        border). The lesion is moved to the nearest point where it fits wholly inside
        ``allowed``, and shrunk when it fits nowhere; a ``UsgenError`` says so when even a
        small one does not fit."""
        h, w = int(shape[0]), int(shape[1])
        region = (np.ones((h, w), bool) if allowed is None else np.asarray(allowed, bool).copy())
        if region.shape != (h, w):
            raise ValueError("allowed region does not match the image")
        region[:BORDER_PX] = region[-BORDER_PX:] = False
        region[:, :BORDER_PX] = region[:, -BORDER_PX:] = False
        if not region.any():
            raise UsgenError("There is no room for a lesion: the image has no tissue "
                             "free of other labels.")
        radii = self.sample_outline(klass, seed)
        area = self.sample_area(klass, seed) if area_fraction is None else float(area_fraction)
        asked = center if center is not None else self.sample_center(klass, seed, region)
        theta = 2 * np.pi * np.arange(RADIAL_SAMPLES) / RADIAL_SAMPLES
        unit = np.stack([np.cos(theta) * radii, np.sin(theta) * radii], axis=1)
        unit_area = 0.5 * abs(np.sum(unit[:, 0] * np.roll(unit[:, 1], -1)
                                     - np.roll(unit[:, 0], -1) * unit[:, 1]))
        target = max(area * h * w, float(MIN_LESION_PX))
        for _ in range(12):
            outline = unit * np.sqrt(target / unit_area)
            kernel, anchor = _rasterise_local(outline)
            spot = _fitting_center(region, kernel, anchor, asked)
            if spot is not None:
                cx, cy = spot
                mask = np.zeros((h, w), bool)
                ys, xs = np.nonzero(kernel)  # its box's empty margin may hang over the edge
                mask[ys + cy - anchor[1], xs + cx - anchor[0]] = True
                mask &= region  # already inside (checked); a guard all the same
                pts = outline + [cx + 0.0, cy + 0.0]
                return LesionProposal(mask=mask, outline=pts, klass=klass, seed=int(seed),
                                      center=(float(cx), float(cy)),
                                      asked_at=(float(asked[0]), float(asked[1])),
                                      area_fraction=float(mask.mean()))
            target *= 0.7
            if target < MIN_LESION_PX:
                break
        raise UsgenError("There is no room for a lesion of that size here: the tissue free "
                         "of other labels is too small; choose a smaller size or another image.")


def _rasterise_local(outline: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """The outline (around 0, 0) filled into its own box; anchor = where (0, 0) falls."""
    x0 = int(np.floor(outline[:, 0].min())) - 1
    y0 = int(np.floor(outline[:, 1].min())) - 1
    x1 = int(np.ceil(outline[:, 0].max())) + 2
    y1 = int(np.ceil(outline[:, 1].max())) + 2
    box = np.zeros((y1 - y0, x1 - x0), np.uint8)
    pts = np.rint((outline - [x0, y0]) * 16).astype(np.int32)
    cv2.fillPoly(box, [pts], 1, cv2.LINE_8, 4)
    ys, xs = np.nonzero(box)
    if len(xs) == 0:  # a sub-pixel outline: one pixel
        box[-y0, -x0] = 1
    return box.astype(bool), (-x0, -y0)


def _fitting_center(region: np.ndarray, kernel: np.ndarray, anchor: tuple[int, int],
                    asked: tuple[float, float]) -> tuple[int, int] | None:
    """The pixel nearest ``asked`` where the kernel, anchored there, covers only ``region``."""
    kh, kw = kernel.shape
    ax, ay = anchor
    h, w = region.shape
    if kh > h or kw > w:
        return None
    x, y = int(round(asked[0])), int(round(asked[1]))
    if _covers_only(region, kernel, x - ax, y - ay):
        return x, y  # fits where it was asked: the usual case, no search
    # count the forbidden pixels under the kernel for every anchor position (an FFT
    # correlation: exact to rounding); outside the image counts as forbidden
    bad = np.ones((h + 2 * kh, w + 2 * kw), np.float32)
    bad[kh:kh + h, kw:kw + w] = ~region
    hits = cv2.filter2D(bad, -1, kernel.astype(np.float32), anchor=(ax, ay),
                        borderType=cv2.BORDER_CONSTANT)
    ok = hits[kh:kh + h, kw:kw + w] < 0.5
    # filter2D's anchor shifts the window; check the candidate exactly before trusting it
    return _nearest_true(ok, asked[0], asked[1], verify=lambda x, y: _covers_only(
        region, kernel, x - ax, y - ay))


def _covers_only(region: np.ndarray, kernel: np.ndarray, x0: int, y0: int) -> bool:
    """Whether every pixel of ``kernel`` placed with its box's corner at (x0, y0) lies inside
    the image and on ``region`` (the box's empty margin may hang over the edge)."""
    ys, xs = np.nonzero(kernel)
    ys, xs = ys + y0, xs + x0
    h, w = region.shape
    if ys.min() < 0 or xs.min() < 0 or ys.max() >= h or xs.max() >= w:
        return False
    return bool(region[ys, xs].all())


def _nearest_true(ok: np.ndarray, x: float, y: float, verify: Any = None
                  ) -> tuple[int, int] | None:
    ys, xs = np.nonzero(ok)
    if len(xs) == 0:
        return None
    d2 = (xs - x) ** 2 + (ys - y) ** 2
    near = np.argpartition(d2, min(63, len(d2) - 1))[:64] if len(d2) > 64 else np.arange(len(d2))
    order = near[np.lexsort((near, d2[near]))]  # nearest first; ties by position: stable
    for i in order if verify is not None else order[:1]:
        cx, cy = int(xs[i]), int(ys[i])
        if verify is None or verify(cx, cy):
            return cx, cy
    return None


# -- where a lesion may go ----------------------------------------------------------------
def tissue_mask(image: np.ndarray) -> np.ndarray:
    """The imaged tissue of a scan: not the black frame, text strips or the dark outside of a
    fan. The largest bright-enough connected region after smoothing, with its holes filled
    (dark cysts inside tissue are tissue), pulled in a little from its edge."""
    img = np.asarray(image)
    if img.ndim == 3:
        img = img[..., :3].mean(axis=2)
    img = img.astype(np.float32)
    if img.max() > 255:
        img = img * (255.0 / img.max())
    h, w = img.shape
    sigma = max(1.0, 0.012 * max(h, w))
    blur = cv2.GaussianBlur(img, (0, 0), sigma)
    level = max(6.0, 0.12 * float(np.median(blur[blur > 2])) if (blur > 2).any() else 6.0)
    fg = (blur > level).astype(np.uint8)
    n, comp, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=4)
    if n <= 1:
        return np.zeros((h, w), bool)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    tissue = (comp == biggest).astype(np.uint8)
    # fill holes: whatever background cannot be reached from the border is inside
    pad = np.pad(1 - tissue, 1, constant_values=1).astype(np.uint8)
    cv2.floodFill(pad, None, (0, 0), 2)
    tissue = (pad[1:-1, 1:-1] != 2).astype(np.uint8)
    r = max(1, int(round(0.01 * max(h, w))))
    tissue = cv2.erode(tissue, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2))
    return tissue.astype(bool)


def allowed_region(labels: np.ndarray, sector_id: int | None = None,
                   image: np.ndarray | None = None) -> np.ndarray:
    """Where a new lesion may lie: inside the fan when the label map has one (a schema with a
    sector), else on background; never over another label; inside the imaged tissue when
    there is an image."""
    lab = np.asarray(labels)
    if sector_id is not None and (lab == sector_id).any():
        region = lab == sector_id
    else:
        region = lab == 0
    if image is not None:
        tissue = tissue_mask(image)
        if (tissue & region).any():
            region &= tissue
    return region


def inpaint_region(labels: np.ndarray, sector_id: int | None, margin: int) -> np.ndarray:
    """Where inpainting may change the image (uint8 0/1): every labelled pixel (not background,
    not the fan of the sector) grown by ``margin`` pixels so the new tissue blends into the
    old. Shared by the Generate panel's inpainting and ``usgen generate --inpaint``."""
    lab = np.asarray(labels)
    region = lab != 0
    if sector_id is not None:
        region &= lab != sector_id
    region = region.astype(np.uint8)
    if margin > 0 and region.any():
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
        region = cv2.dilate(region, k)
    return region


def region_summary(region: np.ndarray) -> dict[str, Any]:
    """What a manifest records of an inpainted region: bbox (x0, y0, x1, y1, end exclusive),
    area in pixels and as a fraction of the image."""
    ys, xs = np.nonzero(np.asarray(region))
    if len(xs) == 0:
        return {"bbox": None, "area_px": 0, "area_fraction": 0.0}
    return {"bbox": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1],
            "area_px": int(len(xs)), "area_fraction": round(len(xs) / np.asarray(region).size, 6)}


def lesion_label(schema: Any, preferred: int | None = None) -> int:
    """The label id a new lesion is painted with: ``preferred`` when it is a foreground,
    non-sector label of the schema, else the schema's first such label."""
    sid = getattr(schema, "sector_id", None)
    ids = [lab.id for lab in schema.labels if lab.id not in (0, sid)]
    if not ids:
        raise UsgenError(f"The label schema '{schema.name}' has no label for a lesion.")
    return preferred if preferred in ids else ids[0]


# -- fitting ------------------------------------------------------------------------------
def _summary(values: Iterable[float]) -> dict[str, float]:
    v = np.asarray(list(values), float)
    q = np.percentile(v, [5, 25, 50, 75, 95])
    return {"mean": float(v.mean()), "p05": q[0], "p25": q[1], "median": q[2], "p75": q[3],
            "p95": q[4]}


@dataclass
class _Read:
    """One real lesion as read for fitting."""

    low: np.ndarray  # Re, Im of harmonics 1..LOW_HARMONICS
    high: np.ndarray  # |c_k|^2 of the higher harmonics
    mean_r: float
    area: float
    center: tuple[float, float]
    stats: dict[str, float]


def read_lesions(masks: Iterable[np.ndarray]) -> list[_Read]:
    """Every connected lesion of every mask (each the size of its image), read for fitting."""
    out = []
    for mask in masks:
        h, w = np.asarray(mask).shape[:2]
        for comp in lesion_components(mask):
            prof = radial_profile(comp)
            if prof is None:
                continue
            cx, cy, radii = prof
            c = profile_harmonics(radii)
            out.append(_Read(
                low=np.stack([c[:LOW_HARMONICS].real, c[:LOW_HARMONICS].imag], 1).ravel(),
                high=np.abs(c[LOW_HARMONICS:]) ** 2, mean_r=float(np.exp(np.log(radii).mean())),
                area=float(comp.sum() / (h * w)), center=(cx / w, cy / h),
                stats=shape_stats(comp)))
    return out


def noise_floor(lesions: list[_Read], quantile: float = 50.0) -> np.ndarray:
    """Power per high harmonic (times radius^2) that reading an outline off the pixel grid
    adds: the median of the dataset's own lesions, harmonic by harmonic (annotators' polygons,
    resizing and the staircase all add to it; on BUSI the benign outlines carry little more),
    and never below that of a perfect rasterised circle."""
    circle = reading_noise(1.0)
    if not lesions:
        return circle
    scaled = np.asarray([r.high * r.mean_r ** 2 for r in lesions])
    return np.maximum(np.percentile(scaled, quantile, axis=0), circle)


def fit_class(lesions: list[_Read], floor: np.ndarray) -> ClassShapeModel | None:
    """Fit one class from its lesions; ``floor`` is the reading noise (see ``noise_floor``),
    taken off the high harmonics since a proposal gets its own when it is rasterised. None
    when fewer than 3 lesions are readable."""
    if len(lesions) < 3:
        return None
    low = np.asarray([r.low for r in lesions])
    cov = np.cov(low, rowvar=False) + np.eye(low.shape[1]) * 1e-6
    hp = np.asarray([np.maximum(r.high - floor / max(r.mean_r, 1.0) ** 2, 0.0)
                     for r in lesions])
    spectrum = hp.sum(0) + 1e-12
    lrough = np.log(hp.sum(1) + 1e-5)
    areas = np.asarray([r.area for r in lesions])
    la = np.log(areas)
    lo, hi = np.percentile(areas, [2, 98])
    cxs = [r.center[0] for r in lesions]
    cys = [r.center[1] for r in lesions]
    return ClassShapeModel(
        n=len(lesions), low_mean=low.mean(0).tolist(), low_cov=cov.tolist(),
        high_power=(spectrum / spectrum.sum()).tolist(),
        log_rough_mean=float(lrough.mean()), log_rough_std=float(max(lrough.std(), 1e-3)),
        log_area_mean=float(la.mean()), log_area_std=float(max(la.std(), 1e-3)),
        area_range=(float(lo), float(hi)),
        center_mean=(float(np.mean(cxs)), float(np.mean(cys))),
        center_std=(float(max(np.std(cxs), 0.01)), float(max(np.std(cys), 0.01))),
        stats={k: _summary([r.stats[k] for r in lesions]) for k in STAT_NAMES},
    )


def fit_lesion_model(items: Iterable[tuple[np.ndarray, str | None]], source: str = "",
                     label_ids: Iterable[int] | None = None) -> LesionModel:
    """Fit a model from (label map, class) pairs: per class, from the pixels of
    ``label_ids`` (default: every non-zero id). Classes with fewer than 3 lesions are left
    out; maps with no class count as class "lesion"."""
    ids = None if label_ids is None else list(label_ids)
    per: dict[str, list[np.ndarray]] = {}
    for labels, klass in items:
        lab = np.asarray(labels)
        mask = lab != 0 if ids is None else np.isin(lab, ids)
        if mask.any():
            per.setdefault(klass or "lesion", []).append(mask)
    read = {k: read_lesions(masks) for k, masks in sorted(per.items())}
    floor = noise_floor([r for rs in read.values() for r in rs])
    classes = {}
    for k, rs in read.items():
        fitted = fit_class(rs, floor)
        if fitted is not None:
            classes[k] = fitted
    return LesionModel(classes, source)


def shipped_lesion_model(schema_name: str) -> LesionModel | None:
    """The statistics shipped for a schema (``resources/lesions/<name>.json``), if any."""
    from usgen_desktop.paths import resources_dir

    path = resources_dir() / "lesions" / f"{schema_name}.json"
    return LesionModel.load(path) if path.is_file() else None


def lesion_model_for(schema: Any, items: Iterable[tuple[np.ndarray, str | None]] = (),
                     klass: str | None = None, min_lesions: int = 10) -> LesionModel:
    """The model to propose ``klass`` with: fitted from ``items`` (the project's own label
    maps and classes) when they hold at least ``min_lesions`` lesions of that class, else the
    statistics shipped for the schema. A UsgenError names the class when neither knows it."""
    sid = getattr(schema, "sector_id", None)
    fg = [lab.id for lab in schema.labels if lab.id not in (0, sid)]
    own = fit_lesion_model(items, source="this project's masks", label_ids=fg)
    shipped = shipped_lesion_model(schema.name)
    if klass is None:
        if own.classes and min(c.n for c in own.classes.values()) >= min_lesions:
            return own
        return shipped or own
    if klass in own.classes and own.classes[klass].n >= min_lesions:
        return own
    if shipped is not None and klass in shipped.classes:
        return shipped
    if klass in own.classes:
        return own
    known = sorted(set(own.classes) | set(shipped.classes if shipped else ()))
    raise UsgenError(
        f"No lesion shapes of class '{klass}' are known: the masks have none and no statistics "
        f"ship for the '{schema.name}' labels (known classes: {', '.join(known) or 'none'}).")
