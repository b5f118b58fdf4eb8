"""Random and interactive deformation of label maps: many plausible maps from a few real ones.

Affine (rotation, translation, scale, shear) and elastic (a smooth field from a coarse grid of
random control-point displacements) warps, always resampled nearest-neighbour so ids stay ids.
Defaults follow the echocardiography reference work (seeds/004): +-5 deg, 5 % shift, scale
0.8-1.05, shear 5 deg, 10x10 control points, 30 px at 256 px scaled with the image. The sector
(field of view) stays fixed and the deformed anatomy is clipped to it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from usgen_desktop.core.labels import LabelMap
from usgen_desktop.core.tasks import CancelToken, Progress, ProgressFn, no_progress
from usgen_desktop.errors import UsgenError

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class DeformParams:
    """Ranges of the random deformation; ``max_disp_px`` is at 256 px, scaled with size."""

    rotation_deg: float = 5.0
    translate_frac: float = 0.05
    scale: tuple[float, float] = (0.8, 1.05)
    shear_deg: float = 5.0
    grid: tuple[int, int] = (10, 10)
    max_disp_px: float = 30.0
    affine: bool = True
    elastic: bool = True
    keep_sector: bool = True

    def validate(self) -> None:
        """Raise a one-sentence UsgenError for ranges a user can get wrong."""
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise UsgenError("The scale range must be positive with its minimum not above its "
                             f"maximum (got {lo} to {hi}).")
        for name, v in (("rotation", self.rotation_deg), ("translation", self.translate_frac),
                        ("shear", self.shear_deg), ("elastic displacement", self.max_disp_px)):
            if v < 0:
                raise UsgenError(f"The maximum {name} cannot be negative (got {v}).")
        if self.translate_frac > 1:
            raise UsgenError("The maximum shift is a fraction of the image size: at most 1.")
        if self.shear_deg >= 80:
            raise UsgenError("The maximum shear must be under 80 degrees.")
        if min(self.grid) < 4:
            raise UsgenError("The elastic grid needs at least 4 control points per side.")

    @classmethod
    def identity(cls) -> DeformParams:
        return cls(affine=False, elastic=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scale"], d["grid"] = list(self.scale), list(self.grid)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeformParams:
        d = dict(d)
        if "scale" in d:
            d["scale"] = tuple(d["scale"])
        if "grid" in d:
            d["grid"] = tuple(int(g) for g in d["grid"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def variant_seed(base_seed: int, source: str, index: int) -> int:
    """The seed of variant ``index`` of ``source``: independent of batch order and sharding."""
    digest = hashlib.sha256(f"{int(base_seed)}:{source}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _affine_matrix(params: DeformParams, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A 2x3 matrix mapping OUTPUT pixel coordinates to INPUT ones (for cv2.remap-style use)."""
    rot = math.radians(rng.uniform(-params.rotation_deg, params.rotation_deg))
    shear = math.radians(rng.uniform(-params.shear_deg, params.shear_deg))
    lo, hi = params.scale
    s = rng.uniform(lo, hi)
    tx = rng.uniform(-params.translate_frac, params.translate_frac) * w
    ty = rng.uniform(-params.translate_frac, params.translate_frac) * h
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    # forward: x' = R * Sh * S * (x - c) + c + t
    R = np.array([[math.cos(rot), -math.sin(rot)], [math.sin(rot), math.cos(rot)]])
    Sh = np.array([[1.0, math.tan(shear)], [0.0, 1.0]])
    A = R @ Sh @ (s * np.eye(2))
    inv = np.linalg.inv(A)
    c = np.array([cx, cy])
    t = np.array([tx, ty])
    # inverse: x = inv (x' - c - t) + c
    offset = c - inv @ (c + t)
    return np.hstack([inv, offset[:, None]])


def _bspline_basis(n: int, size: int) -> np.ndarray:
    """(size, n) weights of ``n`` cubic B-spline control points spread over ``size`` pixels.

    As in TorchIO's elastic deformation (which the reference work used): the outer control
    points sit one spacing outside the image, so the field is smooth up to the border.
    """
    n = max(4, int(n))
    spacing = max(1.0, (size - 1) / (n - 3))
    t = (np.arange(size, dtype=np.float64)[:, None] / spacing) + 1 - np.arange(n)[None, :]
    a = np.abs(t)
    return np.where(a < 1, 2 / 3 - a**2 + a**3 / 2,
                    np.where(a < 2, (2 - a) ** 3 / 6, 0.0)).astype(np.float32)


def _elastic_field(
    params: DeformParams, rng: np.random.Generator, h: int, w: int
) -> tuple[np.ndarray, np.ndarray]:
    """A smooth displacement field (dx, dy) from random control-point displacements.

    A cubic B-spline over the grid (TorchIO's model) rather than interpolating the control
    values: interpolation passes through every random value and folds the map where two
    neighbours point in opposite directions, which split labels in a third of the variants.
    The outer ring of control points is locked (zero), so the image border stays put.
    Displacement scales with the image per axis (30 px at 256 px).
    """
    gy, gx = (max(4, int(g)) for g in params.grid)
    by, bx = _bspline_basis(gy, h), _bspline_basis(gx, w)
    out = []
    for scale in (w / 256.0, h / 256.0):
        disp = params.max_disp_px * scale
        c = rng.uniform(-disp, disp, size=(gy, gx)).astype(np.float32)
        c[0, :] = c[-1, :] = c[:, 0] = c[:, -1] = 0.0
        # cv2.gemm, not numpy's @: OpenBLAS wakes its thread pool for this product, which on
        # a busy 2-core machine cost 60-80 ms instead of well under 1 ms.
        out.append(cv2.gemm(cv2.gemm(by, c, 1, None, 0), bx, 1, None, 0, flags=cv2.GEMM_2_T))
    return out[0], out[1]


def deform_label_map(
    label_map: LabelMap,
    params: DeformParams,
    seed: int,
    sector_id: int | None = None,
) -> LabelMap:
    """One random deformation of ``label_map`` (nearest-neighbour; same seed, same result).

    With a ``sector_id`` and ``keep_sector``, the field of view (every non-zero pixel) stays
    where it is; only the anatomy inside moves and is clipped to it, and pixels of the fan
    that lose their anatomy become sector again.
    """
    data = label_map.data
    h, w = data.shape
    if not params.affine and not params.elastic:
        return label_map.copy()
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    map_x, map_y = xx, yy
    if params.affine:
        M = _affine_matrix(params, rng, h, w).astype(np.float32)
        map_x = M[0, 0] * xx + M[0, 1] * yy + M[0, 2]
        map_y = M[1, 0] * xx + M[1, 1] * yy + M[1, 2]
    if params.elastic:
        dx, dy = _elastic_field(params, rng, h, w)
        # compose: sample the affine-warped map at the elastically displaced position
        sx = np.clip(xx + dx, 0, w - 1)
        sy = np.clip(yy + dy, 0, h - 1)
        map_x = cv2.remap(map_x, sx, sy, cv2.INTER_LINEAR)
        map_y = cv2.remap(map_y, sx, sy, cv2.INTER_LINEAR)

    # A map without any sector pixels (e.g. HC18 before its fan was drawn) has no fov to keep.
    keep_sector = params.keep_sector and sector_id is not None and bool((data == sector_id).any())
    if keep_sector:
        fov = data != 0
        anatomy = np.where(data == sector_id, 0, data).astype(np.uint8)
        moved = cv2.remap(anatomy, map_x, map_y, cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        out = np.where(fov, np.where(moved != 0, moved, sector_id), 0).astype(np.uint8)
    else:
        out = cv2.remap(data, map_x, map_y, cv2.INTER_NEAREST,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return LabelMap(out)


def _source_stats(source: LabelMap, ignore: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """(id, pixel count, connected pieces) of each checked label of the source map."""
    stats = []
    for lid in source.ids():
        if lid in ignore:
            continue
        src = (source.data == lid).astype(np.uint8)
        stats.append((lid, int(src.sum()), cv2.connectedComponents(src, connectivity=8)[0] - 1))
    return stats


def check_variant(
    source: LabelMap, variant: LabelMap, ignore: tuple[int, ...] = (0,), min_fraction: float = 0.05,
    source_stats: list[tuple[int, int, int]] | None = None,
) -> list[str]:
    """Sentences describing labels that vanished, shrank to a sliver, or split into pieces.
    ``source_stats`` (from ``_source_stats``) saves measuring the same source again for each
    of its variants."""
    if source_stats is None:
        source_stats = _source_stats(source, ignore)
    problems: list[str] = []
    for lid, src_sum, n_src in source_stats:
        var = variant.data == lid
        if not var.any():
            problems.append(f"label {lid} vanished")
            continue
        var_sum = int(var.sum())
        if var_sum < min_fraction * src_sum:
            problems.append(f"label {lid} shrank to {100 * var_sum / src_sum:.0f} %")
        n_var = cv2.connectedComponents(var.astype(np.uint8), connectivity=8)[0] - 1
        if n_var > n_src:
            problems.append(f"label {lid} split into {n_var} pieces (was {n_src})")
    return problems


@dataclass
class Variant:
    label_map: LabelMap
    seed: int
    index: int
    problems: list[str] = field(default_factory=list)


def make_variants(
    label_map: LabelMap,
    n: int,
    params: DeformParams,
    seed: int,
    sector_id: int | None = None,
    skip_bad: bool = True,
    source: str = "",
    progress: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
    max_tries: int = 10,
    drop_bad: bool = False,
) -> list[Variant]:
    """``n`` variants of one label map; with ``skip_bad``, variants whose labels vanished or
    split are redrawn (next seed) up to ``max_tries`` times each; one still bad after that is
    kept with its problems, or left out with ``drop_bad`` (then fewer than ``n`` come back;
    ``Variant.index`` says which)."""
    out: list[Variant] = []
    ignore = (0,) if sector_id is None else (0, sector_id)
    stats = _source_stats(label_map, ignore)  # the same for every variant and retry
    for i in range(n):
        if cancel is not None:
            cancel.raise_if_cancelled()
        best: Variant | None = None
        for attempt in range(max_tries if skip_bad else 1):
            s = variant_seed(seed, source, i * 1000 + attempt)
            v = deform_label_map(label_map, params, s, sector_id)
            probs = check_variant(label_map, v, ignore=ignore, source_stats=stats)
            best = Variant(v, s, i, probs)
            if not probs:
                break
        assert best is not None
        if not (drop_bad and best.problems):
            out.append(best)
        progress(Progress(i + 1, n, f"variant {i + 1} of {n}"))
    return out


# -- interactive ---------------------------------------------------------------------------
def _falloff(d2: np.ndarray, r: float) -> np.ndarray:
    """(1 - s^2)^2 for s = distance / r < 1, else 0: smooth, and exactly zero past the radius
    so nothing outside the brush circle moves."""
    s2 = np.minimum(d2 / (r * r), 1.0)
    return ((1.0 - s2) ** 2).astype(np.float32)


class WarpStroke:
    """One warp drag on the canvas, from mouse press to release.

    Keeps the label map as it was at the press and the accumulated backward displacement,
    and resamples that snapshot once per mouse move. Resampling the current labels at every
    move instead would round each small increment to whole pixels, so the soft edge of the
    falloff (moves under half a pixel) would never move at all.
    """

    def __init__(self, label_data: np.ndarray, radius: float, sector_id: int | None = None):
        self.original = np.ascontiguousarray(label_data).copy()
        self.radius = max(2.0, float(radius))
        # The backward map is stored only over the box the drag has reached so far (identity
        # elsewhere): full-size maps would cost 128 MB and a stall at press on a 4096² image.
        self._box: Box = (0, 0, 0, 0)
        self.map_x = np.zeros((0, 0), np.float32)
        self.map_y = np.zeros((0, 0), np.float32)
        self.sector_id = sector_id
        self._fov = self.original != 0
        # The sector (field of view) never moves: only the anatomy on it does.
        self._keep_sector = sector_id is not None and bool((self.original == sector_id).any())
        self._anatomy = (np.where(self.original == sector_id, 0, self.original).astype(np.uint8)
                         if self._keep_sector else self.original)

    def _step(self, start: tuple[float, float], end: tuple[float, float]) -> Box | None:
        h, w = self.original.shape
        dx, dy = end[0] - start[0], end[1] - start[1]
        r = self.radius
        x1, y1 = end
        by0, by1 = max(0, int(np.floor(y1 - r))), min(h, int(np.ceil(y1 + r)) + 1)
        bx0, bx1 = max(0, int(np.floor(x1 - r))), min(w, int(np.ceil(x1 + r)) + 1)
        if by0 >= by1 or bx0 >= bx1:
            return None
        yy, xx = np.mgrid[by0:by1, bx0:bx1].astype(np.float32)
        f = _falloff((xx - x1) ** 2 + (yy - y1) ** 2, r)
        # Backward map: what lands at p came from p - d * f(|p - end|); composing with the
        # field so far keeps every later move relative to the snapshot.
        # float32 always: numpy float64 drag points would promote, and cv2.remap wants float32
        sx = np.clip(xx - np.float32(dx) * f, 0, w - 1).astype(np.float32, copy=False)
        sy = np.clip(yy - np.float32(dy) * f, 0, h - 1).astype(np.float32, copy=False)
        # The stored maps must cover every point sampled (up to |d| outside the step's box).
        m = int(math.ceil(math.hypot(dx, dy))) + 2
        self._grow((max(0, by0 - m), min(h, by1 + m), max(0, bx0 - m), min(w, bx1 + m)))
        oy, ox = self._box[0], self._box[2]
        new_x = cv2.remap(self.map_x, sx - ox, sy - oy, cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
        new_y = cv2.remap(self.map_y, sx - ox, sy - oy, cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
        self.map_x[by0 - oy : by1 - oy, bx0 - ox : bx1 - ox] = new_x
        self.map_y[by0 - oy : by1 - oy, bx0 - ox : bx1 - ox] = new_y
        return (by0, by1, bx0, bx1)

    def _grow(self, box: Box) -> None:
        """Extend the stored maps to cover ``box``; new parts start as the identity."""
        y0, y1, x0, x1 = self._box
        if y1 > y0 and box[0] >= y0 and box[1] <= y1 and box[2] >= x0 and box[3] <= x1:
            return
        u = box if y1 <= y0 else (min(y0, box[0]), max(y1, box[1]),
                                  min(x0, box[2]), max(x1, box[3]))
        yy, xx = np.mgrid[u[0] : u[1], u[2] : u[3]].astype(np.float32)
        if y1 > y0:
            xx[y0 - u[0] : y1 - u[0], x0 - u[2] : x1 - u[2]] = self.map_x
            yy[y0 - u[0] : y1 - u[0], x0 - u[2] : x1 - u[2]] = self.map_y
        self._box, self.map_x, self.map_y = u, xx, yy

    def drag(
        self, start_xy: tuple[float, float], end_xy: tuple[float, float]
    ) -> tuple[Box, np.ndarray] | None:
        """Move the labels at ``start_xy`` to ``end_xy``; the changed box and its new values."""
        dx, dy = end_xy[0] - start_xy[0], end_xy[1] - start_xy[1]
        dist = math.hypot(dx, dy)
        if dist < 1e-6:
            return None
        # The falloff folds the map over itself past ~0.65 r per step: take shorter steps.
        n = max(1, math.ceil(dist / (0.5 * self.radius)))
        box: Box | None = None
        for k in range(n):
            a = (start_xy[0] + dx * k / n, start_xy[1] + dy * k / n)
            b = (start_xy[0] + dx * (k + 1) / n, start_xy[1] + dy * (k + 1) / n)
            step = self._step(a, b)
            if step is not None:
                box = step if box is None else (min(box[0], step[0]), max(box[1], step[1]),
                                                min(box[2], step[2]), max(box[3], step[3]))
        if box is None:
            return None
        return box, self.values(box)

    def values(self, box: Box) -> np.ndarray:
        """The warped labels inside ``box``."""
        y0, y1, x0, x1 = box
        self._grow(box)
        oy, ox = self._box[0], self._box[2]
        mx = self.map_x[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
        my = self.map_y[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
        moved = cv2.remap(self._anatomy, mx, my, cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_REPLICATE)
        if not self._keep_sector:
            return moved
        fov = self._fov[y0:y1, x0:x1]
        return np.where(fov, np.where(moved != 0, moved, self.sector_id), 0).astype(np.uint8)


def warp_drag(
    label_data: np.ndarray,
    start_xy: tuple[float, float],
    end_xy: tuple[float, float],
    radius: float,
    sector_id: int | None = None,
) -> tuple[Box, np.ndarray] | None:
    """Labels around ``start_xy`` follow the drag to ``end_xy`` with a smooth falloff.

    Returns the changed box and its new values (apply with Document.set_region, one undo
    step per drag), or None when nothing changes. The sector itself does not move. For a drag
    made of many mouse moves use one ``WarpStroke`` per press (smoother, see there).
    """
    res = WarpStroke(label_data, radius, sector_id).drag(start_xy, end_xy)
    if res is None:
        return None
    box, new = res
    y0, y1, x0, x1 = box
    if np.array_equal(new, label_data[y0:y1, x0:x1]):
        return None
    return res


def transform_label(
    label_data: np.ndarray,
    label_id: int,
    dx: float = 0.0,
    dy: float = 0.0,
    angle_deg: float = 0.0,
    scale: float = 1.0,
    fill_id: int = 0,
) -> tuple[Box, np.ndarray] | None:
    """Move, rotate and scale one label as a whole about its centroid.

    The label's old pixels become ``fill_id`` (background, or the sector id in a fan); other
    labels stay on top where the moved label would cover them. With a non-zero ``fill_id``
    (a fan), id 0 is outside the field of view and the moved label is clipped to the fan.
    """
    mask = label_data == label_id
    if not mask.any():
        return None
    h, w = label_data.shape
    ys, xs = np.nonzero(mask)
    cy, cx = float(ys.mean()), float(xs.mean())
    M = cv2.getRotationMatrix2D((cx, cy), -angle_deg, scale)
    M[0, 2] += dx
    M[1, 2] += dy
    moved = cv2.warpAffine(mask.astype(np.uint8), M, (w, h), flags=cv2.INTER_NEAREST) > 0
    new = label_data.copy()
    new[mask] = fill_id
    free = (new == fill_id) | ((new == 0) & (fill_id == 0))
    new[moved & free] = label_id
    changed = new != label_data
    if not changed.any():
        return None
    rows = np.flatnonzero(changed.any(axis=1))
    cols = np.flatnonzero(changed.any(axis=0))
    box = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
    y0, y1, x0, x1 = box
    return box, new[y0:y1, x0:x1]
