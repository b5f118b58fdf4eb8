"""Sector (field of view) on the canvas, and whole-label transforms.

Adds to the Tools menu: the Sector tool (S) that shows the fan or rectangle with handles to
drag (apex, inner/outer radius, both angles; or the rectangle's corners) and draws a new one by
dragging when the document has none; "Detect sector" (fit it from the image); "Apply sector to
labels" (Enter with the tool: clip anatomy to the fan and fill it with the sector label, one
undo step); "New sector" per probe type; and "Transform label…" (move, rotate, scale the active
label as a whole, one undo step). The geometry is kept in the document's tags so it is saved.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QAction, QColor, QKeySequence, QPainter, QPen, QPolygonF
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QMainWindow,
)

from usgen_desktop.core.deform import transform_label
from usgen_desktop.core.document import Document
from usgen_desktop.core.labels import LabelMap
from usgen_desktop.core.sector import Sector, apply_sector, detect_sector
from usgen_desktop.gui.tools import CanvasTool, Mods

if TYPE_CHECKING:
    from usgen_desktop.gui.canvas import Canvas

HANDLE_PX = 7  # handle half-size in screen pixels


def sector_of(doc: Document | None) -> Sector | None:
    if doc is None or not isinstance(doc.tags.get("sector"), dict):
        return None
    try:
        return Sector.from_dict(doc.tags["sector"])
    except (TypeError, ValueError):
        return None


def set_sector(doc: Document, sector: Sector | None) -> None:
    if sector is None:
        doc.tags.pop("sector", None)
    else:
        doc.tags["sector"] = sector.to_dict()
    doc.revision += 1  # the project saves tags with the document


class SectorTool(CanvasTool):
    name = "sector"
    title = "Sector"
    icon = "fa5s.wifi"
    shortcut = "S"
    tooltip = "drag the fan's handles; drag on an empty map to draw one; Enter applies it"
    cursor = Qt.CursorShape.ArrowCursor
    edits = True

    def __init__(self) -> None:
        self.kind = "curvilinear"  # for drawing a new sector
        self._drag: str | None = None  # handle name, or "draw"
        self._anchor: tuple[float, float] | None = None

    # -- helpers ---------------------------------------------------------------------------
    def _handle_at(self, canvas: Canvas, x: float, y: float) -> str | None:
        s = sector_of(canvas.document)
        if s is None:
            return None
        p = canvas.image_to_widget(x, y)
        for name, (hx, hy) in s.handles().items():
            q = canvas.image_to_widget(hx, hy)
            if abs(q.x() - p.x()) <= HANDLE_PX + 2 and abs(q.y() - p.y()) <= HANDLE_PX + 2:
                return name
        return None

    def _drawn(self, x0: float, y0: float, x1: float, y1: float) -> Sector:
        if self.kind == "linear":
            return Sector.rectangle(x0, y0, x1, y1)
        r = max(2.0, math.hypot(x1 - x0, y1 - y0))
        half = max(5.0, min(85.0, abs(math.degrees(math.atan2(x1 - x0, max(1e-3, y1 - y0))))))
        inner = 0.0 if self.kind == "phased" else 0.3 * r
        return Sector.fan((x0, y0), inner, r, -half, half, self.kind)

    # -- input -----------------------------------------------------------------------------
    def press(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        doc = canvas.document
        if doc is None:
            return
        self._drag = self._handle_at(canvas, x, y)
        if self._drag is None and sector_of(doc) is None:
            self._drag = "draw"
            self._anchor = (x, y)

    def move(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        doc = canvas.document
        if doc is None or self._drag is None:
            return
        if self._drag == "draw":
            assert self._anchor is not None
            set_sector(doc, self._drawn(*self._anchor, x, y))
        else:
            s = sector_of(doc)
            if s is not None:
                set_sector(doc, s.with_handle_moved(self._drag, x, y))
        canvas.update()

    def release(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        self._drag = None
        self._anchor = None

    def hover(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        on = self._handle_at(canvas, x, y) is not None
        canvas.setCursor(Qt.CursorShape.SizeAllCursor if on else self.cursor)

    def key_press(self, canvas: Canvas, key: int, mods: Mods) -> bool:
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            return apply_to_labels(canvas.document) is not None
        if key == Qt.Key.Key_Delete and canvas.document is not None:
            set_sector(canvas.document, None)
            canvas.update()
            return True
        return False

    # -- drawing ---------------------------------------------------------------------------
    def paint(self, canvas: Canvas, painter: QPainter) -> None:
        s = sector_of(canvas.document)
        if s is None:
            return
        pts = [canvas.image_to_widget(float(px), float(py)) for px, py in s.outline(96)]
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.setPen(QPen(QColor(0, 0, 0, 170), 3))
        painter.drawPolygon(QPolygonF(pts))
        painter.setPen(QPen(QColor(255, 210, 40), 1.5, Qt.PenStyle.DashLine))
        painter.drawPolygon(QPolygonF(pts))
        painter.setPen(QPen(QColor(0, 0, 0), 1))
        painter.setBrush(QColor(255, 210, 40))
        for hx, hy in s.handles().values():
            c = canvas.image_to_widget(hx, hy)
            painter.drawRect(QRectF(c.x() - HANDLE_PX / 2 - 1, c.y() - HANDLE_PX / 2 - 1,
                                    HANDLE_PX + 2, HANDLE_PX + 2))
        if s.is_fan:
            a = canvas.image_to_widget(s.apex_x, s.apex_y)
            painter.setPen(QPen(QColor(255, 210, 40, 120), 1, Qt.PenStyle.DotLine))
            for ang in (s.start_angle, s.end_angle):
                r = s.inner_radius
                q = canvas.image_to_widget(s.apex_x + r * math.sin(math.radians(ang)),
                                           s.apex_y + r * math.cos(math.radians(ang)))
                painter.drawLine(QPointF(a), QPointF(q))


def apply_to_labels(doc: Document | None) -> tuple | None:
    """Rasterise the document's sector into its label map (one undo step)."""
    s = sector_of(doc)
    if doc is None or s is None:
        return None
    sid = doc.schema.sector_id
    mask = s.rasterize(doc.shape)
    if sid is None:
        # No sector label in this schema: only clip anatomy to the field of view.
        data = doc.labels.data.copy()
        data[~mask] = 0
        return doc.replace_labels(LabelMap(data), "apply sector")
    return doc.replace_labels(apply_sector(doc.labels, mask, sid), "apply sector")


class TransformDialog(QDialog):
    """Move, rotate and scale one label as a whole."""

    def __init__(self, parent, label_name: str) -> None:  # noqa: ANN001
        super().__init__(parent)
        self.setWindowTitle(f"Transform '{label_name}'")
        form = QFormLayout(self)
        self.dx = QDoubleSpinBox(minimum=-4096, maximum=4096, suffix=" px")
        self.dy = QDoubleSpinBox(minimum=-4096, maximum=4096, suffix=" px")
        self.angle = QDoubleSpinBox(minimum=-180, maximum=180, suffix=" °")
        self.scale = QDoubleSpinBox(minimum=0.1, maximum=5.0, value=1.0, singleStep=0.05)
        for text, w in (("Move right", self.dx), ("Move down", self.dy),
                        ("Rotate (clockwise)", self.angle), ("Scale", self.scale)):
            form.addRow(text, w)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def values(self) -> dict[str, float]:
        return {"dx": self.dx.value(), "dy": self.dy.value(), "angle_deg": self.angle.value(),
                "scale": self.scale.value()}


def transform_active_label(doc: Document, label_id: int, **kw: float) -> tuple | None:
    fill = doc.schema.sector_id if doc.schema.sector_id is not None and (
        doc.labels.data == doc.schema.sector_id).any() else 0
    res = transform_label(doc.labels.data, label_id, fill_id=fill, **kw)
    if res is None:
        return None
    box, values = res
    return doc.set_region(box, values, "transform label")


def install(window: QMainWindow) -> SectorTool:
    from usgen_desktop.gui.warp_tool import WarpTool

    tool = SectorTool()
    window.register_tool(tool)
    window.register_tool(WarpTool())
    menu = window.tools_menu.addMenu("Sec&tor")

    def current() -> Document | None:
        return window.current_document()

    def detect() -> None:
        doc = current()
        if doc is None or doc.image is None:
            window.show_error("Detecting a sector needs an image; draw one with the Sector tool.")
            return
        # A schema with a sector label is a fan schema (HC18, echo): its probe is a fair prior.
        prior = doc.schema.probe if doc.schema.sector_id is not None else None
        fit = detect_sector(doc.image.to_uint8(), probe=prior)
        set_sector(doc, fit.sector)
        window.select_tool("sector")
        window.statusBar().showMessage(
            f"Found a {fit.kind} field of view (fit {fit.confidence:.0%}); drag the handles, "
            "then Enter to apply it to the labels.", 8000)
        window.canvas.update()

    def apply() -> None:
        doc = current()
        if sector_of(doc) is None:
            window.show_error("There is no sector to apply: detect or draw one first.")
            return
        apply_to_labels(doc)
        window.canvas.strokeFinished.emit()

    def new(kind: str) -> None:
        doc = current()
        if doc is None:
            return
        tool.kind = kind
        set_sector(doc, Sector.default_for(kind, *doc.shape))
        window.select_tool("sector")
        window.canvas.update()

    def transform() -> None:
        doc = current()
        if doc is None:
            return
        lid = window.canvas.active_label
        lab = doc.schema.get(lid)
        if lab is None or not (doc.labels.data == lid).any():
            window.show_error("The active label is not in this label map; pick one that is.")
            return
        dlg = TransformDialog(window, lab.name)
        if dlg.exec() == QDialog.DialogCode.Accepted:
            transform_active_label(doc, lid, **dlg.values())
            window.canvas.strokeFinished.emit()

    def add(text: str, slot, shortcut: str | None = None, into=None) -> QAction:  # noqa: ANN001
        act = QAction(text, window)
        if shortcut:
            act.setShortcut(QKeySequence(shortcut))
        act.triggered.connect(lambda _c=False: slot())
        (into or menu).addAction(act)
        window.addAction(act)
        return act

    window.act_detect_sector = add("&Detect sector", detect, "Ctrl+Shift+D")
    window.act_apply_sector = add("&Apply sector to labels", apply, "Ctrl+Shift+A")
    menu.addSeparator()
    for kind, text in (("linear", "New &linear sector"), ("curvilinear", "New &curvilinear fan"),
                       ("phased", "New &phased-array fan")):
        add(text, lambda k=kind: new(k))
    window.act_transform_label = add("T&ransform label…", transform, "Ctrl+T",
                                     into=window.tools_menu)
    return tool
