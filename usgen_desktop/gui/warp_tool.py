"""The warp tool: drag a point and the labels around it follow with a smooth falloff.

One drag is one undo step (the document groups every ``set_region`` between press and
release into one stroke). The radius is the brush size times two, so ``[`` and ``]`` change it.
Shift+drag on a label moves that label as a whole; Ctrl+drag rotates it (left/right) and scales
it (up makes it larger): the on-canvas handles for "move this lesion, make it larger".
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QColor, QPainter, QPen

from usgen_desktop.core.deform import WarpStroke, transform_label
from usgen_desktop.core.document import union_box
from usgen_desktop.gui.tools import Mods, RoundOutlineTool

if TYPE_CHECKING:
    from usgen_desktop.gui.canvas import Canvas


class WarpTool(RoundOutlineTool):
    name = "warp"
    title = "Warp"
    icon = "fa5s.hand-point-up"
    shortcut = "W"
    tooltip = ("drag labels with a smooth falloff; [ and ] change the radius; Shift+drag moves "
               "a label as a whole, Ctrl+drag rotates (left/right) and scales (up/down) it")
    cursor = Qt.CursorShape.CrossCursor

    def __init__(self) -> None:
        self._last: tuple[float, float] | None = None
        self._stroke: WarpStroke | None = None
        # whole-label transform: (label id, fill id, press point, snapshot, "move" | "turn")
        self._whole: tuple[int, int, tuple[float, float], np.ndarray, str] | None = None
        self._whole_box: tuple[int, int, int, int] | None = None
        self._hover: tuple[float, float] | None = None

    @staticmethod
    def radius(canvas: Canvas) -> float:
        return max(4.0, canvas.brush_size * 2.0)

    def press(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        doc = canvas.document
        if doc is None:
            return
        sid = doc.schema.sector_id
        h, w = doc.shape
        xi, yi = int(math.floor(x)), int(math.floor(y))
        under = int(doc.labels.data[yi, xi]) if 0 <= xi < w and 0 <= yi < h else 0
        shift = bool(mods & Qt.KeyboardModifier.ShiftModifier)
        ctrl = bool(mods & Qt.KeyboardModifier.ControlModifier)
        if (shift or ctrl) and under not in (0, sid):
            fill = sid if sid is not None and bool((doc.labels.data == sid).any()) else 0
            self._whole = (under, fill, (x, y), doc.labels.data.copy(),
                           "move" if shift else "turn")
            self._whole_box = None
            doc.begin_stroke("move label" if shift else "rotate/scale label")
            return
        doc.begin_stroke("warp")
        self._last = (x, y)
        self._stroke = WarpStroke(doc.labels.data, self.radius(canvas), sid)

    def move(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        self._move_outline(canvas, x, y)
        doc = canvas.document
        if doc is not None and self._whole is not None:
            self._transform_whole(doc, x, y)
            return
        if doc is None or self._last is None or self._stroke is None:
            return
        # The stroke resamples the press-time labels through the accumulated field, so many
        # small mouse moves add up to the same smooth warp as one long one.
        res = self._stroke.drag(self._last, (x, y))
        self._last = (x, y)
        if res is not None:
            box, values = res
            doc.set_region(box, values, "warp")

    def release(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        doc = canvas.document
        self._last = None
        self._stroke = None
        self._whole = None
        self._whole_box = None
        if doc is not None and doc.in_stroke:
            doc.end_stroke()
            canvas.strokeFinished.emit()

    def _transform_whole(self, doc, x: float, y: float) -> None:  # noqa: ANN001
        """Redo the whole-label transform from the press-time snapshot for the drag so far."""
        assert self._whole is not None
        label, fill, (px, py), snap, mode = self._whole
        dx, dy = x - px, y - py
        if mode == "move":
            res = transform_label(snap, label, dx=dx, dy=dy, fill_id=fill)
        else:  # 0.5 degree per pixel sideways; 1 % larger per pixel upwards
            res = transform_label(snap, label, angle_deg=0.5 * dx,
                                  scale=float(np.clip(math.exp(-0.01 * dy), 0.1, 10.0)),
                                  fill_id=fill)
        new = snap.copy()
        box = None
        if res is not None:
            box, values = res
            new[box[0]:box[1], box[2]:box[3]] = values
        # Also restore what an earlier step of this drag changed and this one does not.
        region = union_box(box, self._whole_box)
        self._whole_box = box
        if region is not None:
            y0, y1, x0, x1 = region
            doc.set_region(region, new[y0:y1, x0:x1], "move label")

    def outline_radius(self, canvas: Canvas) -> float:
        return self.radius(canvas)

    def paint(self, canvas: Canvas, painter: QPainter) -> None:
        if self._hover is None:
            return
        c = canvas.image_to_widget(*self._hover)
        r = self.radius(canvas) * canvas.scale
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.setPen(QPen(QColor(0, 0, 0, 160), 3, Qt.PenStyle.SolidLine))
        painter.drawEllipse(c, r, r)
        painter.setPen(QPen(QColor(120, 220, 255), 1.5, Qt.PenStyle.DashLine))
        painter.drawEllipse(c, r, r)
        painter.drawEllipse(c, r / 2, r / 2)
        painter.drawPoint(QPointF(c))
