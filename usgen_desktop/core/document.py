"""A document: one ultrasound image (or none yet), its label map, schema and undo history.

The canvas turns mouse events into calls on a document; the document owns the data. Every
edit method returns the box it changed ``(y0, y1, x0, x1)`` so a view repaints only that.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from usgen_desktop.core.history import History, StrokeAtom, make_atom
from usgen_desktop.core.image import UltrasoundImage
from usgen_desktop.core.labels import LabelMap, LabelSchema

Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (end exclusive)
_TILE = 64


def union_box(a: Box | None, b: Box | None) -> Box | None:
    if a is None:
        return b
    if b is None:
        return a
    return (min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]))


@dataclass
class Document:
    """An image with its label map. ``image`` is None for a label map that awaits generation."""

    labels: LabelMap
    schema: LabelSchema
    image: UltrasoundImage | None = None
    name: str = "untitled"
    tags: dict[str, Any] = field(default_factory=dict)  # e.g. {"class": "benign"}
    uid: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    parent: str | None = None  # uid of the document a variant or synthetic image came from
    provenance: dict[str, Any] = field(default_factory=dict)  # for generated images
    history: History = field(default_factory=History)
    edit_lock: int | None = None  # "edit only this label": see _writable
    revision: int = 0  # bumped on every change; autosave compares it

    def __post_init__(self) -> None:
        if self.image is not None:
            self.labels.check_fits(self.image.height, self.image.width)
        self._stroke_tiles: dict[tuple[int, int], np.ndarray] | None = None
        self._stroke_name = "edit"
        self._listeners: list[Callable[[Box | None], None]] = []

    # -- basics ------------------------------------------------------------------------
    @classmethod
    def blank(cls, height: int, width: int, schema: LabelSchema, **kw: Any) -> Document:
        return cls(labels=LabelMap.empty(height, width), schema=schema, **kw)

    @property
    def shape(self) -> tuple[int, int]:
        return self.labels.shape

    @property
    def klass(self) -> str | None:
        return self.tags.get("class")

    @property
    def has_mask(self) -> bool:
        return bool(self.labels.data.any())

    @property
    def is_labelled(self) -> bool:
        """Whether the label map is an annotation to train on (the one rule of the GUI's and
        the CLI's export, ``export.pairs.LABELLED_RULE``): any label drawn, or a mask file
        came with the image even if it is empty (BUSI's normal images: no lesion), or the
        image was generated from it (exact by construction). An image that never had a
        mask is not labelled; exporting it with an empty mask would teach "no lesion"."""
        return (self.has_mask or bool(self.tags.get("annotated"))
                or bool(self.provenance.get("backend")))

    def subscribe(self, fn: Callable[[Box | None], None]) -> None:
        """Call ``fn(box)`` after every change (box None means everything may have changed)."""
        self._listeners.append(fn)

    def unsubscribe(self, fn: Callable[[Box | None], None]) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def _changed(self, box: Box | None) -> None:
        self.revision += 1
        for fn in list(self._listeners):
            fn(box)

    # -- strokes -----------------------------------------------------------------------
    def begin_stroke(self, name: str = "stroke") -> None:
        """Start grouping edits into one undo step (a mouse press)."""
        if self._stroke_tiles is not None:
            self.end_stroke()
        self._stroke_tiles = {}
        self._stroke_name = name

    def end_stroke(self) -> StrokeAtom | None:
        """Close the current stroke (mouse release); pushes one atom if anything changed."""
        tiles = self._stroke_tiles
        self._stroke_tiles = None
        if not tiles:
            return None
        data = self.labels.data
        ty = [t[0] for t in tiles]
        tx = [t[1] for t in tiles]
        y0, x0 = min(ty) * _TILE, min(tx) * _TILE
        y1 = min(data.shape[0], (max(ty) + 1) * _TILE)
        x1 = min(data.shape[1], (max(tx) + 1) * _TILE)
        after = data[y0:y1, x0:x1]
        before = after.copy()
        for (iy, ix), tile in tiles.items():
            sy, sx = iy * _TILE - y0, ix * _TILE - x0
            before[sy : sy + tile.shape[0], sx : sx + tile.shape[1]] = tile
        atom = make_atom(before, after, self._stroke_name)
        if atom is None:
            return None
        by0, by1, bx0, bx1 = atom.box
        atom = StrokeAtom((by0 + y0, by1 + y0, bx0 + x0, bx1 + x0), atom.before, atom.after,
                          atom.label)
        self.history.push(atom)
        return atom

    @property
    def in_stroke(self) -> bool:
        return self._stroke_tiles is not None

    def _remember(self, box: Box) -> None:
        """Keep the original values of every tile the box touches (once per stroke)."""
        tiles = self._stroke_tiles
        if tiles is None:
            return
        data = self.labels.data
        y0, y1, x0, x1 = box
        for iy in range(y0 // _TILE, (y1 - 1) // _TILE + 1):
            for ix in range(x0 // _TILE, (x1 - 1) // _TILE + 1):
                if (iy, ix) not in tiles:
                    tiles[(iy, ix)] = data[
                        iy * _TILE : (iy + 1) * _TILE, ix * _TILE : (ix + 1) * _TILE
                    ].copy()

    def _writable(self, region: np.ndarray, new_label: int) -> np.ndarray:
        """Which pixels of ``region`` an edit may change, given the "edit only this label" lock.

        With the lock on label L, painting L changes only background (0, or the sector label
        inside the fan) and L itself; erasing clears only L. Other labels are never touched.
        """
        lock = self.edit_lock
        if lock is None:
            return np.ones(region.shape, bool)
        free = region == 0
        if self.schema.sector_id is not None and lock != self.schema.sector_id:
            free |= region == self.schema.sector_id
        if new_label == 0 or new_label == self.schema.sector_id:
            return region == lock
        return free | (region == lock)

    def _apply(self, box: Box | None, mask: np.ndarray | None, label: int, name: str) -> Box | None:
        """Set ``label`` where ``mask`` (shaped like the box) is true; handles lock and undo."""
        if box is None or mask is None or not mask.any():
            return None
        own_stroke = self._stroke_tiles is None
        if own_stroke:
            self.begin_stroke(name)
        y0, y1, x0, x1 = box
        region = self.labels.data[y0:y1, x0:x1]
        sel = mask & self._writable(region, label) & (region != label)
        if sel.any():
            self._remember(box)
            region[sel] = label
        if own_stroke:
            self.end_stroke()
        if not sel.any():
            return None
        self._changed(box)
        return box

    def _clip(self, y0: int, y1: int, x0: int, x1: int) -> Box | None:
        h, w = self.shape
        y0, y1, x0, x1 = max(0, y0), min(h, y1), max(0, x0), min(w, x1)
        if y0 >= y1 or x0 >= x1:
            return None
        return (y0, y1, x0, x1)

    # -- edit operations ---------------------------------------------------------------
    def paint_line(
        self, p0: tuple[float, float], p1: tuple[float, float], radius: float, label: int
    ) -> Box | None:
        """A round brush dragged from ``p0`` to ``p1`` (x, y in image pixels); radius >= 0.5."""
        r = max(0.5, float(radius))
        xs, ys = (p0[0], p1[0]), (p0[1], p1[1])
        box = self._clip(
            int(np.floor(min(ys) - r)), int(np.ceil(max(ys) + r)) + 1,
            int(np.floor(min(xs) - r)), int(np.ceil(max(xs) + r)) + 1,
        )
        if box is None:
            return None
        y0, y1, x0, x1 = box
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        shift = 4  # sub-pixel precision for cv2 drawing
        s = 1 << shift
        a = (int(round((p0[0] - x0) * s)), int(round((p0[1] - y0) * s)))
        b = (int(round((p1[0] - x0) * s)), int(round((p1[1] - y0) * s)))
        if r < 1.0:
            mask[int(np.clip(round(p1[1] - y0), 0, y1 - y0 - 1)),
                 int(np.clip(round(p1[0] - x0), 0, x1 - x0 - 1))] = 1
        else:
            cv2.circle(mask, a, int(round(r * s)), 1, -1, cv2.LINE_8, shift)
            cv2.circle(mask, b, int(round(r * s)), 1, -1, cv2.LINE_8, shift)
            if a != b:
                cv2.line(mask, a, b, 1, max(1, int(round(2 * r))), cv2.LINE_8, shift)
        return self._apply(box, mask.astype(bool), label, "brush" if label else "erase")

    def paint_disk(self, center: tuple[float, float], radius: float, label: int) -> Box | None:
        return self.paint_line(center, center, radius, label)

    def fill_polygon(self, points: Sequence[tuple[float, float]], label: int) -> Box | None:
        """Fill the polygon (or lasso path) through ``points`` (x, y) with ``label``."""
        if len(points) < 3:
            return None
        pts = np.asarray(points, np.float64)
        box = self._clip(
            int(np.floor(pts[:, 1].min())), int(np.ceil(pts[:, 1].max())) + 1,
            int(np.floor(pts[:, 0].min())), int(np.ceil(pts[:, 0].max())) + 1,
        )
        if box is None:
            return None
        y0, y1, x0, x1 = box
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        local = np.rint((pts - [x0, y0]) * 16).astype(np.int32)
        cv2.fillPoly(mask, [local], 1, cv2.LINE_8, 4)
        return self._apply(box, mask.astype(bool), label, "polygon")

    def flood_fill(self, x: int, y: int, label: int) -> Box | None:
        """Fill the 4-connected region of equal id around (x, y) with ``label``."""
        h, w = self.shape
        if not (0 <= x < w and 0 <= y < h):
            return None
        data = self.labels.data
        if data[y, x] == label:
            return None
        region = (data == data[y, x]).astype(np.uint8)
        n, comp = cv2.connectedComponents(region, connectivity=4)
        mask = comp == comp[y, x]
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        box = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
        y0, y1, x0, x1 = box
        return self._apply(box, mask[y0:y1, x0:x1], label, "fill")

    def paint_mask(self, mask: np.ndarray, label: int, name: str = "mask") -> Box | None:
        """Set ``label`` wherever the image-sized boolean ``mask`` is true, as one undo step
        (the smart tool's accepted result); honours the edit lock like the brush."""
        mask = np.asarray(mask, bool)
        if mask.shape != self.shape:
            raise ValueError("the mask does not fit the label map")
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            return None
        cols = np.flatnonzero(mask.any(axis=0))
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        return self._apply((y0, y1, x0, x1), mask[y0:y1, x0:x1], label, name)

    def set_region(self, box: Box, values: np.ndarray, name: str = "edit") -> Box | None:
        """Replace the box with ``values`` (used by warp and whole-label transforms); undoable.

        Ignores the edit lock: these tools move a label as a whole.
        """
        y0, y1, x0, x1 = box
        region = self.labels.data[y0:y1, x0:x1]
        if region.shape != values.shape:
            raise ValueError("values do not fit the box")
        changed = region != values
        if not changed.any():
            return None
        own_stroke = self._stroke_tiles is None
        if own_stroke:
            self.begin_stroke(name)
        self._remember(box)
        region[changed] = values[changed]
        if own_stroke:
            self.end_stroke()
        self._changed(box)
        return box

    def replace_labels(self, new: LabelMap, name: str = "replace") -> Box | None:
        """Swap in a whole new label map of the same size as one undo step."""
        new.check_fits(*self.shape, what="the current label map")
        h, w = self.shape
        return self.set_region((0, h, 0, w), new.data, name)

    # -- undo --------------------------------------------------------------------------
    def undo(self) -> Box | None:
        if self.in_stroke:
            self.end_stroke()
        atom = self.history.undo(self.labels.data)
        if atom is None:
            return None
        self._changed(atom.box)
        return atom.box

    def redo(self) -> Box | None:
        atom = self.history.redo(self.labels.data)
        if atom is None:
            return None
        self._changed(atom.box)
        return atom.box

    def set_schema(self, schema: LabelSchema) -> None:
        self.schema = schema
        self._changed(None)
