"""The canvas: the image with its coloured label overlay, zoom and pan, and the active tool.

The canvas owns no label data. It keeps two display buffers: the image as a 32-bit QImage
(made once per document) and the overlay as a premultiplied ARGB QImage over a numpy array.
When the document reports a changed box, only that box is re-coloured through the schema's
lookup table and only its widget rectangle is repainted, which keeps painting smooth on
4096x4096 images. Paint events draw only the exposed part of each buffer.
"""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPointF, QRect, QRectF, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QImage,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QResizeEvent,
    QWheelEvent,
)
from PySide6.QtWidgets import QWidget

from usgen_desktop.core.document import Box, Document
from usgen_desktop.gui.tools import CanvasTool

MIN_SCALE, MAX_SCALE = 0.02, 64.0
WHEEL_STEP = 1.2  # zoom factor of one wheel notch


def gray_to_qimage(gray: np.ndarray) -> tuple[QImage, np.ndarray]:
    """An RGB32 QImage of 8-bit gray pixels and the array that backs it (keep both alive).

    RGB32 rather than Grayscale8: Qt draws 32-bit images scaled without converting the whole
    image on every paint event.
    """
    h, w = gray.shape
    buf = np.empty((h, w, 4), np.uint8)
    buf[..., 0] = gray
    buf[..., 1] = gray
    buf[..., 2] = gray
    buf[..., 3] = 255
    img = QImage(buf.data, w, h, 4 * w, QImage.Format.Format_RGB32)
    return img, buf


def bgra_lut(schema_lut: np.ndarray) -> np.ndarray:
    """The schema's RGBA lookup table reordered and premultiplied for ARGB32 (BGRA in memory)."""
    rgba = schema_lut.astype(np.uint16)
    a = rgba[:, 3:4]
    out = np.empty_like(schema_lut)
    out[:, :3] = (rgba[:, [2, 1, 0]] * a // 255).astype(np.uint8)
    out[:, 3] = schema_lut[:, 3]
    return out


class Canvas(QWidget):
    """Shows one Document and turns mouse input into document edits through the active tool.

    Signals: ``cursorMoved(object)`` gives ``(col, row)`` under the mouse or None;
    ``zoomChanged(float)`` the scale (1.0 = 100 %); ``strokeFinished()`` after an edit ends
    (the image list refreshes its thumbnail then).
    """

    cursorMoved = Signal(object)
    zoomChanged = Signal(float)
    strokeFinished = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent, True)
        self.setMinimumSize(200, 200)
        self.document: Document | None = None
        self.tool: CanvasTool | None = None
        self.active_label = 1
        self.brush_size = 12.0  # diameter in image pixels
        self.opacity = 0.5
        self.show_labels = True
        self.scale = 1.0
        self.offset = QPointF(0, 0)  # widget position of the image's top-left corner
        self._fit_mode = True  # refit on resize until the user zooms or pans
        self._image: QImage | None = None
        self._image_buf: np.ndarray | None = None
        self._overlay: QImage | None = None
        self._overlay_buf: np.ndarray | None = None
        self._lut = np.zeros((256, 4), np.uint8)
        self._pan_from: QPointF | None = None
        self._space = False
        self._tool_down = False
        self.background = QColor(38, 40, 44)
        self.empty_hint = ("No image open.\n\nFile › Import images… (Ctrl+O), a folder or dataset "
                           "(Ctrl+Shift+O),\nor drop files here.")

    # -- document ------------------------------------------------------------------------
    def set_document(self, doc: Document | None) -> None:
        """Show ``doc`` (None clears the canvas) and fit it to the window."""
        if self.tool is not None:
            # A half-drawn polygon or a held stroke belongs to the old document: drop it.
            self._tool_down = False
            self.tool.deactivate(self)
            self.tool.activate(self)
        if self.document is not None:
            self.document.unsubscribe(self._on_document_changed)
        self.document = doc
        self._image = self._image_buf = None
        self._overlay = self._overlay_buf = None
        if doc is not None:
            if doc.image is not None:
                self._image, self._image_buf = gray_to_qimage(doc.image.to_uint8())
            h, w = doc.shape
            self._overlay_buf = np.zeros((h, w, 4), np.uint8)
            self._overlay = QImage(
                self._overlay_buf.data, w, h, 4 * w, QImage.Format.Format_ARGB32_Premultiplied
            )
            self._lut = bgra_lut(doc.schema.lut())
            self._recolour(None)
            doc.subscribe(self._on_document_changed)
        self.fit()

    def _on_document_changed(self, box: Box | None) -> None:
        doc = self.document
        if doc is None:
            return
        if box is None:  # the schema (colours, visibility) may have changed
            self._lut = bgra_lut(doc.schema.lut())
        self._recolour(box)
        if box is None:
            self.update()
        else:
            self.update(self.box_to_widget(box))

    def _recolour(self, box: Box | None) -> None:
        """Re-colour the overlay buffer from label ids, only inside ``box`` when given."""
        if self.document is None or self._overlay_buf is None:
            return
        data = self.document.labels.data
        if box is None:
            np.take(self._lut, data, axis=0, out=self._overlay_buf)
        else:
            y0, y1, x0, x1 = box
            self._overlay_buf[y0:y1, x0:x1] = self._lut[data[y0:y1, x0:x1]]

    def refresh(self) -> None:
        """Re-read the whole label map and schema (after an outside change without notice)."""
        self._on_document_changed(None)

    def reload(self) -> None:
        """Rebuild from the document, image included (e.g. it just got a generated image);
        the view stays where it is unless the size changed."""
        doc = self.document
        if doc is None:
            return
        keep = (self.scale, QPointF(self.offset), self._fit_mode)
        shape = self._overlay_buf.shape[:2] if self._overlay_buf is not None else None
        self.set_document(doc)
        if shape == doc.shape and not keep[2]:
            self._fit_mode = False
            self._set_view(keep[0], keep[1])

    def active_color(self) -> tuple[int, int, int]:
        doc = self.document
        lab = doc.schema.get(self.active_label) if doc is not None else None
        return lab.color if lab is not None else (255, 255, 0)

    # -- coordinates ---------------------------------------------------------------------
    def widget_to_image(self, p: QPointF) -> tuple[float, float]:
        """Image coordinates of a widget point, pixel-centre convention (pixel c at x = c)."""
        return ((p.x() - self.offset.x()) / self.scale - 0.5,
                (p.y() - self.offset.y()) / self.scale - 0.5)

    def image_to_widget(self, x: float, y: float) -> QPointF:
        return QPointF(self.offset.x() + (x + 0.5) * self.scale,
                       self.offset.y() + (y + 0.5) * self.scale)

    def pixel_at(self, x: float, y: float) -> tuple[int, int]:
        """The (col, row) of the pixel containing image point (x, y)."""
        return int(math.floor(x + 0.5)), int(math.floor(y + 0.5))

    def box_to_widget(self, box: Box) -> QRect:
        y0, y1, x0, x1 = box
        s, o = self.scale, self.offset
        return QRectF(o.x() + x0 * s, o.y() + y0 * s, (x1 - x0) * s, (y1 - y0) * s) \
            .toAlignedRect().adjusted(-2, -2, 2, 2)

    # -- view ----------------------------------------------------------------------------
    def fit(self) -> None:
        """Scale the image to fill the widget, centred."""
        self._fit_mode = True
        if self.document is None:
            self.update()
            return
        h, w = self.document.shape
        s = min(max(1, self.width() - 8) / w, max(1, self.height() - 8) / h)
        self._set_view(s, QPointF((self.width() - w * s) / 2, (self.height() - h * s) / 2))

    def zoom_by(self, factor: float, anchor: QPointF | None = None) -> None:
        """Zoom by ``factor`` keeping the image point under ``anchor`` (widget) in place."""
        if anchor is None:
            anchor = QPointF(self.width() / 2, self.height() / 2)
        new = min(MAX_SCALE, max(MIN_SCALE, self.scale * factor))
        f = new / self.scale
        off = QPointF(anchor.x() - (anchor.x() - self.offset.x()) * f,
                      anchor.y() - (anchor.y() - self.offset.y()) * f)
        self._fit_mode = False
        self._set_view(new, off)

    def set_zoom(self, scale: float) -> None:
        self.zoom_by(scale / self.scale)

    def pan_by(self, dx: float, dy: float) -> None:
        self._fit_mode = False
        self._set_view(self.scale, self.offset + QPointF(dx, dy))

    def _set_view(self, scale: float, offset: QPointF) -> None:
        changed = scale != self.scale
        self.scale, self.offset = scale, offset
        self.update()
        if changed:
            self.zoomChanged.emit(scale)

    def set_opacity(self, opacity: float) -> None:
        self.opacity = min(1.0, max(0.0, float(opacity)))
        self.update()

    def set_show_labels(self, show: bool) -> None:
        self.show_labels = bool(show)
        self.update()

    def set_tool(self, tool: CanvasTool | None) -> None:
        if self.tool is tool:
            return
        if self.tool is not None:
            self.tool.deactivate(self)
        self._tool_down = False
        self.tool = tool
        if tool is not None:
            tool.activate(self)
        self._update_cursor()

    def set_brush_size(self, size: float) -> None:
        self.brush_size = min(512.0, max(1.0, float(size)))
        self.update()

    def _update_cursor(self) -> None:
        if self._pan_from is not None:
            self.setCursor(Qt.CursorShape.ClosedHandCursor)
        elif self._space:
            self.setCursor(Qt.CursorShape.OpenHandCursor)
        elif self.tool is not None:
            self.setCursor(self.tool.cursor)
        else:
            self.unsetCursor()

    # -- painting ------------------------------------------------------------------------
    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        exposed = QRectF(event.rect())
        p.fillRect(exposed, self.background)
        doc = self.document
        if doc is None:
            p.setPen(QColor(150, 154, 160))
            p.drawText(QRectF(self.rect()), Qt.AlignmentFlag.AlignCenter, self.empty_hint)
        else:
            h, w = doc.shape
            s, o = self.scale, self.offset
            # The image pixels under the exposed rectangle, widened by 2 so smoothing at the
            # edges of a partial repaint samples the same neighbours as a full one.
            sx0 = max(0, int(math.floor((exposed.left() - o.x()) / s)) - 2)
            sy0 = max(0, int(math.floor((exposed.top() - o.y()) / s)) - 2)
            sx1 = min(w, int(math.ceil((exposed.right() - o.x()) / s)) + 2)
            sy1 = min(h, int(math.ceil((exposed.bottom() - o.y()) / s)) + 2)
            if sx1 > sx0 and sy1 > sy0:
                src = QRectF(sx0, sy0, sx1 - sx0, sy1 - sy0)
                dst = QRectF(o.x() + sx0 * s, o.y() + sy0 * s, (sx1 - sx0) * s, (sy1 - sy0) * s)
                p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, s < 1.0)
                if self._image is not None:
                    p.drawImage(dst, self._image, src)
                else:  # a label map waiting for generation: plain black under the labels
                    p.fillRect(dst, Qt.GlobalColor.black)
                if self.show_labels and self._overlay is not None and self.opacity > 0:
                    p.setOpacity(self.opacity)
                    p.drawImage(dst, self._overlay, src)
                    p.setOpacity(1.0)
        if self.tool is not None:
            self.tool.paint(self, p)
        p.end()

    # -- input ---------------------------------------------------------------------------
    def _img(self, event: QMouseEvent | QWheelEvent) -> tuple[float, float]:
        return self.widget_to_image(event.position())

    def _report_cursor(self, x: float, y: float) -> None:
        doc = self.document
        if doc is None:
            self.cursorMoved.emit(None)
            return
        col, row = self.pixel_at(x, y)
        h, w = doc.shape
        self.cursorMoved.emit((col, row) if 0 <= col < w and 0 <= row < h else None)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.setFocus(Qt.FocusReason.MouseFocusReason)
        btn = event.button()
        if btn == Qt.MouseButton.MiddleButton or (btn == Qt.MouseButton.LeftButton and self._space):
            self._pan_from = event.position()
            self._update_cursor()
            return
        if btn == Qt.MouseButton.LeftButton and self.tool is not None:
            if self.tool.edits and self.document is None:
                return
            self._tool_down = True
            x, y = self._img(event)
            self.tool.press(self, x, y, event.modifiers())
        elif btn == Qt.MouseButton.RightButton and self.tool is not None:
            if self.document is not None:
                x, y = self._img(event)
                self.tool.secondary_press(self, x, y, event.modifiers())

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        x, y = self._img(event)
        if self._pan_from is not None:
            d = event.position() - self._pan_from
            self._pan_from = event.position()
            self.pan_by(d.x(), d.y())
        elif self.tool is not None:
            if self._tool_down:
                self.tool.move(self, x, y, event.modifiers())
            else:
                self.tool.hover(self, x, y, event.modifiers())
        self._report_cursor(x, y)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._pan_from is not None and event.button() in (
            Qt.MouseButton.MiddleButton, Qt.MouseButton.LeftButton
        ):
            self._pan_from = None
            self._update_cursor()
            return
        if event.button() == Qt.MouseButton.LeftButton and self._tool_down and self.tool:
            self._tool_down = False
            x, y = self._img(event)
            self.tool.release(self, x, y, event.modifiers())

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton and self.tool is not None:
            if self.tool.edits and self.document is None:
                return
            x, y = self._img(event)
            self.tool.double_click(self, x, y, event.modifiers())

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.zoom_by(WHEEL_STEP ** steps, event.position())
        event.accept()

    def leaveEvent(self, event) -> None:  # noqa: ANN001
        self.cursorMoved.emit(None)
        self.update()  # hide the brush outline
        super().leaveEvent(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = True
            self._update_cursor()
            return
        if self.tool is not None and self.tool.key_press(self, event.key(), event.modifiers()):
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = False
            self._update_cursor()
            return
        super().keyReleaseEvent(event)

    def resizeEvent(self, event: QResizeEvent) -> None:
        if self._fit_mode:
            self.fit()
        super().resizeEvent(event)

    def focusOutEvent(self, event) -> None:  # noqa: ANN001
        self._space = False
        self._update_cursor()
        super().focusOutEvent(event)
