"""The Smart tool: click inside (left) or outside (right) a structure and the network outlines it.

Each click goes to the worker thread (``gui/worker.run_task``), which loads the model the first
time (lazily: start-up never pays for it) and runs one forward pass; the canvas shows the
proposed mask over the image in the active label's colour as soon as it comes back, so the
event loop never waits on the network. Clicks made while a pass runs queue up and go in the
next one, in order. Enter accepts the proposal as one undoable stroke of the active label
(clipped to the probe's field of view where the image has one), Esc discards it, Backspace
takes back the last click. The brush and eraser refine the result afterwards as usual.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPen

from usgen_desktop.assist.apply import clip_to_sector
from usgen_desktop.assist.clicks import Click
from usgen_desktop.gui.tools import CanvasTool, Mods
from usgen_desktop.gui.worker import TaskHandle, report_error, run_task

if TYPE_CHECKING:
    from usgen_desktop.gui.canvas import Canvas

DEFAULT_MODEL = "assist-default"
_models: dict[str, Any] = {}
_models_lock = threading.Lock()


def default_model_dir() -> Path:
    from usgen_desktop.paths import models_dir

    return models_dir() / DEFAULT_MODEL


def cached_model(folder: Path) -> Any:
    """The model in ``folder``, loaded once per process (in whichever thread asks first)."""
    key = str(Path(folder).resolve())
    with _models_lock:
        if key not in _models:
            from usgen_desktop.assist.predict import open_model

            _models[key] = open_model(Path(folder))
        return _models[key]


class _Session:
    """The network session of one proposal; only the single task in flight touches it."""

    def __init__(self, image: np.ndarray, model_dir: Path) -> None:
        self.image = image
        self.model_dir = model_dir
        self.session: Any = None


def predict_clicks(state: _Session, clicks: list[Click], progress: Any = None,
                   cancel: Any = None) -> np.ndarray:
    """Worker task: feed ``clicks`` to the session in order; the mask after the last one."""
    if state.session is None:
        from usgen_desktop.assist.predict import AssistSession

        state.session = AssistSession(cached_model(state.model_dir), state.image)
    mask = None
    for c in clicks:
        mask = state.session.add_click(c)
    return mask


class SmartTool(CanvasTool):
    """Click to mask (see the module docstring)."""

    name = "smart"
    title = "Smart"
    icon = "fa5s.magic"
    shortcut = "A"
    tooltip = ("click inside (left) or outside (right) a structure to outline it; Enter "
               "accepts, Esc discards, Backspace takes back a click")
    cursor = Qt.CursorShape.CrossCursor

    def __init__(self, model_dir: Path | None = None) -> None:
        self.model_dir = Path(model_dir) if model_dir else default_model_dir()
        self.clicks: list[Click] = []
        self.mask: np.ndarray | None = None  # the proposal shown, image size
        self._queue: list[Click] = []
        self._state: _Session | None = None
        self._doc: Any = None
        self._handle: TaskHandle | None = None
        self._generation = 0
        self._qimage: QImage | None = None
        self._qbuf: np.ndarray | None = None

    # -- state -----------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._handle is not None

    def set_model_dir(self, folder: Path, canvas: Canvas | None = None) -> None:
        """Use another model from the next proposal on (the current one is discarded)."""
        self.model_dir = Path(folder)
        if canvas is not None:
            self.discard(canvas)

    def discard(self, canvas: Canvas) -> None:
        """Forget the proposal and its clicks (a pass in flight is ignored when it returns)."""
        self._generation += 1
        self.clicks, self._queue, self.mask = [], [], None
        self._state, self._doc, self._handle = None, None, None
        self._qimage = self._qbuf = None
        canvas.update()

    def accept(self, canvas: Canvas) -> bool:
        """Write the proposal into the active label as one undo step; True when it changed."""
        doc, mask = canvas.document, self.mask
        changed = False
        if doc is not None and mask is not None and doc is self._doc:
            changed = doc.paint_mask(mask, canvas.active_label, "smart") is not None
        self.discard(canvas)
        if changed:
            canvas.strokeFinished.emit()
        return changed

    # -- input -----------------------------------------------------------------------------
    def press(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        self.add_click(canvas, Click(x, y, True))

    def secondary_press(self, canvas: Canvas, x: float, y: float, mods: Mods) -> bool:
        self.add_click(canvas, Click(x, y, False))
        return True

    def add_click(self, canvas: Canvas, click: Click) -> None:
        doc = canvas.document
        if doc is None:
            return
        h, w = doc.shape
        if not (-0.5 <= click.x < w - 0.5 and -0.5 <= click.y < h - 0.5):
            return
        if doc.image is None:
            report_error(canvas.window(), "Smart tool",
                         "The Smart tool needs an image; this label map has none yet.")
            return
        if doc is not self._doc:
            self.discard(canvas)
            self._doc = doc
            self._state = _Session(doc.image.to_uint8(), self.model_dir)
        self.clicks.append(click)
        self._queue.append(click)
        canvas.update()
        self._kick(canvas)

    def _kick(self, canvas: Canvas) -> None:
        if self._handle is not None or not self._queue or self._state is None:
            return
        batch, self._queue = self._queue, []
        gen = self._generation
        self._handle = run_task(
            canvas.window(), predict_clicks, self._state, batch, title="Smart tool",
            on_done=lambda mask: self._on_result(canvas, gen, mask),
            on_failed=lambda sentence: self._on_failed(canvas, gen, sentence))

    def _on_result(self, canvas: Canvas, gen: int, mask: np.ndarray | None) -> None:
        if gen != self._generation:
            return
        self._handle = None
        if mask is not None and self._doc is not None:
            self._show(canvas, clip_to_sector(mask, self._doc))
        self._kick(canvas)

    def _on_failed(self, canvas: Canvas, gen: int, sentence: str) -> None:
        if gen != self._generation:
            return
        self.discard(canvas)
        report_error(canvas.window(), "Smart tool", sentence)

    def undo_click(self, canvas: Canvas) -> None:
        """Take back the last click (only between passes: the session is the worker's then)."""
        if self.busy or not self.clicks or self._state is None or self._state.session is None:
            return
        self.clicks.pop()
        self._show(canvas, clip_to_sector(self._state.session.undo_click(), self._doc))
        if not self.clicks:
            self.mask = None

    def key_press(self, canvas: Canvas, key: int, mods: Mods) -> bool:
        if not self.clicks:
            return False
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.accept(canvas)
            return True
        if key == Qt.Key.Key_Escape:
            self.discard(canvas)
            return True
        if key == Qt.Key.Key_Backspace:
            self.undo_click(canvas)
            return True
        return False

    def deactivate(self, canvas: Canvas) -> None:
        self.discard(canvas)

    # -- drawing ---------------------------------------------------------------------------
    def _show(self, canvas: Canvas, mask: np.ndarray) -> None:
        self.mask = mask
        r, g, b = canvas.active_color()
        h, w = mask.shape
        buf = np.zeros((h, w, 4), np.uint8)
        alpha = 150
        # premultiplied BGRA: the proposal in the label's colour, its border opaque
        buf[mask] = (b * alpha // 255, g * alpha // 255, r * alpha // 255, alpha)
        inner = mask.copy()
        inner[1:, :] &= mask[:-1, :]
        inner[:-1, :] &= mask[1:, :]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        buf[mask & ~inner] = (255, 255, 255, 255)
        self._qbuf = buf
        self._qimage = QImage(buf.data, w, h, 4 * w, QImage.Format.Format_ARGB32_Premultiplied)
        canvas.update()

    def paint(self, canvas: Canvas, painter: QPainter) -> None:
        doc = canvas.document
        if doc is None or doc is not self._doc:
            return
        if self._qimage is not None:
            h, w = doc.shape
            o, s = canvas.offset, canvas.scale
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, s < 1.0)
            painter.drawImage(QRectF(o.x(), o.y(), w * s, h * s), self._qimage)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        for c in self.clicks:
            p: QPointF = canvas.image_to_widget(c.x, c.y)
            painter.setPen(QPen(QColor(0, 0, 0, 220), 2))
            painter.setBrush(QColor(60, 220, 90) if c.inside else QColor(235, 60, 60))
            painter.drawEllipse(p, 5.5, 5.5)
