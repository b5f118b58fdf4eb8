"""The warp tool: drag a point and the labels around it follow with a smooth falloff.

One drag is one undo step (the document groups every ``set_region`` between press and
release into one stroke). The radius is the brush size times two, so ``[`` and ``]`` change it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPen

from usgen_desktop.core.deform import WarpStroke
from usgen_desktop.gui.tools import CanvasTool, Mods

if TYPE_CHECKING:
    from usgen_desktop.gui.canvas import Canvas


class WarpTool(CanvasTool):
    name = "warp"
    title = "Warp"
    icon = "fa5s.hand-point-up"
    shortcut = "W"
    tooltip = "drag labels with a smooth falloff; [ and ] change the radius"
    cursor = Qt.CursorShape.CrossCursor

    def __init__(self) -> None:
        self._last: tuple[float, float] | None = None
        self._stroke: WarpStroke | None = None
        self._hover: tuple[float, float] | None = None

    @staticmethod
    def radius(canvas: Canvas) -> float:
        return max(4.0, canvas.brush_size * 2.0)

    def press(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        doc = canvas.document
        if doc is None:
            return
        doc.begin_stroke("warp")
        self._last = (x, y)
        self._stroke = WarpStroke(doc.labels.data, self.radius(canvas), doc.schema.sector_id)

    def move(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        self._move_outline(canvas, x, y)
        doc = canvas.document
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
        if doc is not None and doc.in_stroke:
            doc.end_stroke()
            canvas.strokeFinished.emit()

    def hover(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        self._move_outline(canvas, x, y)

    def deactivate(self, canvas: Canvas) -> None:
        self.release(canvas, 0, 0, Mods.NoModifier)
        old = self.overlay_rect(canvas)
        self._hover = None
        if old is not None:
            canvas.update(old.toAlignedRect())

    def _move_outline(self, canvas: Canvas, x: float, y: float) -> None:
        old = self.overlay_rect(canvas)
        self._hover = (x, y)
        new = self.overlay_rect(canvas)
        for r in (old, new):
            if r is not None:
                canvas.update(r.toAlignedRect())

    def overlay_rect(self, canvas: Canvas) -> QRectF | None:
        if self._hover is None:
            return None
        c = canvas.image_to_widget(*self._hover)
        r = self.radius(canvas) * canvas.scale + 3
        return QRectF(c.x() - r, c.y() - r, 2 * r, 2 * r)

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
