"""Canvas tools: each turns mouse input on the canvas into calls on the current Document.

A tool receives image coordinates in the pixel-centre convention (pixel ``(col, row)`` is
centred at ``x = col, y = row``), the keyboard modifiers, and the canvas, which gives it the
document, the active label and the brush size. Tools own no label data: the canvas repaints
whatever box the document reports as changed.

Other modules add tools (the warp tool) with ``register_tool_class`` at import time, or at
run time with ``MainWindow.register_tool(tool)``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPen, QPolygonF

if TYPE_CHECKING:
    from usgen_desktop.gui.canvas import Canvas

Mods = Qt.KeyboardModifier


class CanvasTool:
    """Base of every canvas tool; the default methods do nothing.

    ``icon`` is a qtawesome name; ``shortcut`` a QKeySequence string shown in the tooltip.
    ``edits`` tools need a document and are disabled without one.
    """

    name: str = "tool"
    title: str = "Tool"
    icon: str = "fa5s.mouse-pointer"
    shortcut: str = ""
    tooltip: str = ""
    cursor: Qt.CursorShape = Qt.CursorShape.CrossCursor
    edits: bool = True

    def full_tooltip(self) -> str:
        """The tooltip with its shortcut, e.g. "Brush (B): paint the active label"."""
        key = f" ({self.shortcut})" if self.shortcut else ""
        return f"{self.title}{key}: {self.tooltip}" if self.tooltip else f"{self.title}{key}"

    # -- life cycle ----------------------------------------------------------------------
    def activate(self, canvas: Canvas) -> None:
        """Called when the tool becomes the canvas's tool."""

    def deactivate(self, canvas: Canvas) -> None:
        """Called when another tool takes over (abandon any half-made shape)."""

    # -- input (image coordinates) -------------------------------------------------------
    def press(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        """Left button pressed."""

    def move(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        """Mouse moved with the left button held."""

    def release(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        """Left button released."""

    def hover(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        """Mouse moved with no button held."""

    def double_click(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        """Left button double-clicked."""

    def secondary_press(self, canvas: Canvas, x: float, y: float, mods: Mods) -> bool:
        """Right button pressed (the Smart tool's "outside" click); True when used."""
        return False

    def key_press(self, canvas: Canvas, key: int, mods: Mods) -> bool:
        """A key the canvas did not use itself; return True when handled."""
        return False

    # -- drawing -------------------------------------------------------------------------
    def paint(self, canvas: Canvas, painter: QPainter) -> None:
        """Draw the tool's feedback (brush outline, polygon) in widget coordinates."""

    def overlay_rect(self, canvas: Canvas) -> QRectF | None:
        """The widget rectangle ``paint`` draws into (to repaint only that when it moves)."""
        return None


# ---------------------------------------------------------------------------------------
class RoundOutlineTool(CanvasTool):
    """A tool that follows the mouse with a round outline (brush, eraser, warp); only the
    outline's old and new rectangles are repainted as it moves."""

    _hover: tuple[float, float] | None = None

    def outline_radius(self, canvas: Canvas) -> float:
        """The outline's radius in image pixels."""
        return canvas.brush_size / 2.0

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
        r = self.outline_radius(canvas) * canvas.scale + 3
        return QRectF(c.x() - r, c.y() - r, 2 * r, 2 * r)


# ---------------------------------------------------------------------------------------
class BrushTool(RoundOutlineTool):
    """A round brush: drag to paint the active label with the canvas's brush size."""

    name = "brush"
    title = "Brush"
    icon = "fa5s.paint-brush"
    shortcut = "B"
    tooltip = "paint the active label; [ and ] change the size"

    def __init__(self) -> None:
        self._last: tuple[float, float] | None = None
        self._hover: tuple[float, float] | None = None

    def label_for(self, canvas: Canvas) -> int:
        return canvas.active_label

    def press(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        doc = canvas.document
        if doc is None:
            return
        doc.begin_stroke(self.name)
        self._last = (x, y)
        self._hover = (x, y)
        self._stroke(canvas, (x, y), (x, y))

    def move(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        doc = canvas.document
        self._move_outline(canvas, x, y)
        if doc is None or self._last is None:
            return
        self._stroke(canvas, self._last, (x, y))
        self._last = (x, y)

    def _stroke(self, canvas: Canvas, p0: tuple[float, float], p1: tuple[float, float]) -> None:
        canvas.document.paint_line(p0, p1, canvas.brush_size / 2.0, self.label_for(canvas))

    def release(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        doc = canvas.document
        self._last = None
        if doc is not None and doc.in_stroke:
            doc.end_stroke()
            canvas.strokeFinished.emit()

    def paint(self, canvas: Canvas, painter: QPainter) -> None:
        if self._hover is None or not canvas.underMouse():
            return
        c = canvas.image_to_widget(*self._hover)
        r = max(1.5, canvas.brush_size / 2.0 * canvas.scale)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        # Dark then light ring: visible over both bright tissue and dark cysts.
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.setPen(QPen(QColor(0, 0, 0, 200), 3))
        painter.drawEllipse(c, r, r)
        painter.setPen(QPen(QColor(255, 255, 255, 230), 1))
        painter.drawEllipse(c, r, r)


class EraserTool(BrushTool):
    """The brush that sets background (with the lock on, it clears only the locked label).

    In a schema with a sector (the probe's fan), background inside the fan is the sector
    label, not 0: there the eraser turns only the active label back into sector, so erasing
    a fetal head never punches a hole in the fan. With the sector itself active it erases
    to 0 (outside the fan).
    """

    name = "eraser"
    title = "Eraser"
    icon = "fa5s.eraser"
    shortcut = "E"
    tooltip = "erase to background; [ and ] change the size"

    def label_for(self, canvas: Canvas) -> int:
        doc = canvas.document
        sector = doc.schema.sector_id if doc is not None else None
        if sector is not None and canvas.active_label not in (0, sector):
            return sector
        return 0

    def _stroke(self, canvas: Canvas, p0: tuple[float, float], p1: tuple[float, float]) -> None:
        doc = canvas.document
        label = self.label_for(canvas)
        if label == 0:
            super()._stroke(canvas, p0, p1)
            return
        # Painting "sector" locked to the active label changes only that label's pixels.
        saved = doc.edit_lock
        doc.edit_lock = canvas.active_label
        try:
            doc.paint_line(p0, p1, canvas.brush_size / 2.0, label)
        finally:
            doc.edit_lock = saved


class FloodFillTool(CanvasTool):
    """Click to fill the connected region of equal label with the active label."""

    name = "fill"
    title = "Flood fill"
    icon = "fa5s.fill-drip"
    shortcut = "G"
    tooltip = "fill the connected region under the click with the active label"
    cursor = Qt.CursorShape.PointingHandCursor

    def press(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        doc = canvas.document
        if doc is None:
            return
        col, row = canvas.pixel_at(x, y)
        if doc.flood_fill(col, row, canvas.active_label) is not None:
            canvas.strokeFinished.emit()


class PolygonTool(CanvasTool):
    """Click corners and close with a double-click or Enter; or drag a free-hand lasso.

    Backspace removes the last corner, Escape abandons the shape. The filled shape is one
    undo step.
    """

    name = "polygon"
    title = "Polygon / lasso"
    icon = "fa5s.draw-polygon"
    shortcut = "P"
    tooltip = "click corners, double-click or Enter to fill; or drag a lasso"
    DRAG_PX = 4.0  # a press that moves farther than this (widget px) is a lasso, not a click

    def __init__(self) -> None:
        self.points: list[tuple[float, float]] = []
        self._press_at: tuple[float, float] | None = None
        self._lasso = False
        self._hover: tuple[float, float] | None = None

    def press(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        self._press_at = (x, y)
        self._lasso = False

    def move(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        old = self.overlay_rect(canvas)
        self._hover = (x, y)
        if self._press_at is not None and not self.points or self._lasso:
            dist = math.dist(self._press_at or (x, y), (x, y)) * canvas.scale
            if self._lasso or dist > self.DRAG_PX:
                if not self._lasso:
                    self._lasso = True
                    self.points = [self._press_at or (x, y)]
                self.points.append((x, y))
        self._repaint(canvas, old)

    def release(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        pressed, self._press_at = self._press_at, None
        if self._lasso:
            self._lasso = False
            self.close(canvas)
        elif pressed is not None:
            old = self.overlay_rect(canvas)
            self.points.append(pressed)
            self._repaint(canvas, old)

    def hover(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        if self.points:
            old = self.overlay_rect(canvas)
            self._hover = (x, y)
            self._repaint(canvas, old)
        else:
            self._hover = (x, y)

    def double_click(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        # A real double-click's first click already added this corner; a synthetic one
        # (accessibility tools, tests) may not have.
        self._press_at = None
        if not self.points or math.dist(self.points[-1], (x, y)) * canvas.scale > self.DRAG_PX:
            self.points.append((x, y))
        self.close(canvas)

    def key_press(self, canvas: Canvas, key: int, mods: Mods) -> bool:
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.points:
            self.close(canvas)
            return True
        if key == Qt.Key.Key_Escape and self.points:
            self.cancel(canvas)
            return True
        if key == Qt.Key.Key_Backspace and self.points:
            old = self.overlay_rect(canvas)
            self.points.pop()
            self._repaint(canvas, old)
            return True
        return False

    def close(self, canvas: Canvas) -> None:
        """Fill the shape drawn so far (needs three corners) and start afresh."""
        old = self.overlay_rect(canvas)
        pts, self.points = self.points, []
        doc = canvas.document
        if doc is not None and len(pts) >= 3:
            if doc.fill_polygon(pts, canvas.active_label) is not None:
                canvas.strokeFinished.emit()
        self._repaint(canvas, old)

    def cancel(self, canvas: Canvas) -> None:
        old = self.overlay_rect(canvas)
        self.points = []
        self._lasso = False
        self._press_at = None
        self._repaint(canvas, old)

    def deactivate(self, canvas: Canvas) -> None:
        self.cancel(canvas)

    def _repaint(self, canvas: Canvas, old: QRectF | None) -> None:
        new = self.overlay_rect(canvas)
        for r in (old, new):
            if r is not None:
                canvas.update(r.toAlignedRect())

    def _widget_points(self, canvas: Canvas) -> list[QPointF]:
        pts = [canvas.image_to_widget(x, y) for x, y in self.points]
        if self._hover is not None and self.points and not self._lasso:
            pts.append(canvas.image_to_widget(*self._hover))
        return pts

    def overlay_rect(self, canvas: Canvas) -> QRectF | None:
        pts = self._widget_points(canvas)
        if not pts:
            return None
        return QPolygonF(pts).boundingRect().adjusted(-6, -6, 6, 6)

    def paint(self, canvas: Canvas, painter: QPainter) -> None:
        pts = self._widget_points(canvas)
        if not pts:
            return
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        color = QColor(*canvas.active_color())
        painter.setPen(QPen(QColor(0, 0, 0, 180), 3))
        painter.drawPolyline(QPolygonF(pts))
        painter.setPen(QPen(color.lighter(130), 1.5))
        painter.drawPolyline(QPolygonF(pts))
        if not self._lasso:
            painter.setBrush(color)
            for p in pts[: len(self.points)]:
                painter.drawEllipse(p, 3, 3)


class PanTool(CanvasTool):
    """Drag to move the view (the middle button or Space + drag pan with any tool)."""

    name = "pan"
    title = "Pan"
    icon = "fa5s.hand-paper"
    shortcut = "H"
    tooltip = "drag to move the view"
    cursor = Qt.CursorShape.OpenHandCursor
    edits = False

    def __init__(self) -> None:
        self._anchor: tuple[float, float] | None = None

    def press(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        self._anchor = (x, y)

    def move(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        if self._anchor is None:
            return
        # Keep the grabbed image point under the cursor.
        ax, ay = self._anchor
        canvas.pan_by((x - ax) * canvas.scale, (y - ay) * canvas.scale)

    def release(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        self._anchor = None


# -- registry ---------------------------------------------------------------------------
TOOL_CLASSES: list[type[CanvasTool]] = [BrushTool, EraserTool, FloodFillTool, PolygonTool, PanTool]


def register_tool_class(cls: type[CanvasTool]) -> type[CanvasTool]:
    """Add a tool class that every new main window offers (usable as a class decorator)."""
    if cls not in TOOL_CLASSES:
        TOOL_CLASSES.append(cls)
    return cls


def default_tools() -> list[CanvasTool]:
    """One instance of every registered tool, in toolbar order."""
    return [cls() for cls in TOOL_CLASSES]
