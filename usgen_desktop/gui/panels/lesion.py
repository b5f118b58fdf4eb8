"""Add a lesion (paper 001): click a scan, get a proposed lesion mask, re-roll or touch it up,
accept it, and have the image inpainted inside it.

The Add-lesion tool (M, for mass) proposes, at the clicked point, a lesion of the class and
size chosen in the Lesion dock (``core.lesions``: shapes learned from this project's own masks
of that class when it has enough, else the statistics shipped for its labels), inside the
tissue or the fan and off other labels. The proposal is shown over the scan, not yet in the
label map: R (or Re-roll) draws another shape at the same place, a drag paints more of it with
the brush size, Shift+drag erases, Esc drops it. Enter (or Accept) writes it into the label map
as one undo step and, with "Inpaint the image" on, asks the Generate panel to regenerate the
image inside the lesion (sdm inpainting); the new image reaches the gallery like any other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPen, QPolygonF
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDockWidget,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from usgen_desktop.core.document import Document
from usgen_desktop.core.lesions import (
    LesionModel,
    allowed_region,
    inpaint_region,
    lesion_label,
    lesion_model_for,
)
from usgen_desktop.errors import UsgenError
from usgen_desktop.gui.tools import CanvasTool, Mods

if TYPE_CHECKING:
    from usgen_desktop.gui.canvas import Canvas

SIZES = {"class": None, "small": -0.8, "medium": 0.0, "large": 0.8}  # z of the class's log area
SIZE_TEXT = {"class": "Typical for the class (drawn)", "small": "Small", "medium": "Medium",
             "large": "Large"}
FIT_CAP = 200  # masks read to fit a project's own shapes (evenly spaced): about a second
INPAINT_MARGIN = 6  # px around the lesion the image may change, as the Generate panel's default
DRAG_PX = 4.0  # a press that moves farther than this (widget px) edits; less is a click


class LesionTool(CanvasTool):
    """Propose, edit and accept one lesion at a time (see the module's docstring)."""

    name = "lesion"
    title = "Add lesion"
    icon = "fa5s.plus-circle"
    shortcut = "M"  # a mass, in BI-RADS words (L is the label lock)
    tooltip = ("click a scan to propose a lesion of the class chosen in the Lesion dock; R "
               "re-rolls, drag paints, Shift+drag erases, Enter accepts, Esc drops it")

    def __init__(self) -> None:
        self.klass: str | None = None
        self.size = "class"
        self.seed = 0
        self.mask: np.ndarray | None = None  # the proposal being edited (bool, image size)
        self.asked: tuple[float, float] | None = None
        self.source = ""  # what the shapes were learned from
        self.models: Any = None  # (doc, klass) -> LesionModel; set by the panel
        self.notify: Any = lambda text: None  # status for the panel
        self.report: Any = lambda text: None  # an error sentence for the user
        self.accepted: Any = lambda doc, mask, klass: None  # after Accept (inpainting)
        self.on_activate: Any = lambda: None  # shows the Lesion dock
        self._doc: Document | None = None
        self._allowed: tuple[tuple[str, int], np.ndarray] | None = None
        self._press: tuple[float, float] | None = None
        self._last: tuple[float, float] | None = None
        self._editing = False
        self._outline: list[np.ndarray] = []
        self._box: tuple[int, int, int, int] | None = None  # y0, y1, x0, x1 of the mask

    # -- proposing ----------------------------------------------------------------------
    def allowed(self, doc: Document) -> np.ndarray:
        key = (doc.uid, doc.revision)
        if self._allowed is None or self._allowed[0] != key:
            image = doc.image.to_uint8() if doc.image is not None else None
            self._allowed = (key, allowed_region(doc.labels.data, doc.schema.sector_id, image))
        return self._allowed[1]

    def propose(self, canvas: Canvas, x: float, y: float) -> bool:
        """A new proposal at (x, y) with the current class, size and seed."""
        doc = canvas.document
        if doc is None:
            return False
        try:
            if not self.klass:
                raise UsgenError("Choose the lesion's class in the Lesion dock first.")
            model: LesionModel = self.models(doc, self.klass)
            z = SIZES.get(self.size)
            area = None
            if z is not None:
                cm = model.class_model(self.klass)
                area = float(np.clip(np.exp(cm.log_area_mean + z * cm.log_area_std),
                                     *cm.area_range))
            prop = model.propose(doc.shape, self.klass, self.seed, center=(x, y),
                                 area_fraction=area, allowed=self.allowed(doc))
        except UsgenError as exc:
            self.report(str(exc))
            return False
        old = self.overlay_rect(canvas)
        self._doc = doc
        self.asked = (x, y)
        self.source = model.source
        self._set_mask(prop.mask)
        self._repaint(canvas, old)
        moved = np.hypot(prop.center[0] - x, prop.center[1] - y) > 2
        learned = ("this project's masks" if model.source == "this project's masks"
                   else f"the '{doc.schema.name}' statistics shipped with USGen")
        self.notify(f"{self.klass}, {100 * prop.area_fraction:.1f} % of the image, seed "
                    f"{self.seed}{' (moved to fit the tissue)' if moved else ''}; shapes from "
                    f"{learned}.")
        return True

    def reroll(self, canvas: Canvas) -> bool:
        """Another shape (the next seed) at the same place."""
        if self.asked is None:
            self.report("Click the scan where the lesion goes first.")
            return False
        self.seed += 1
        return self.propose(canvas, *self.asked)

    def accept(self, canvas: Canvas) -> bool:
        """Write the proposal into the label map (one undo step) and hand it on."""
        doc = canvas.document
        if doc is None or self.mask is None or doc is not self._doc or not self.mask.any():
            self.report("There is no lesion to accept: click the scan to propose one.")
            return False
        label = lesion_label(doc.schema, canvas.active_label)
        y0, y1, x0, x1 = self._box or (0, doc.shape[0], 0, doc.shape[1])
        region = doc.labels.data[y0:y1, x0:x1]
        free = region == 0
        if doc.schema.sector_id is not None:
            free |= region == doc.schema.sector_id
        values = region.copy()
        written = np.zeros(doc.shape, bool)
        written[y0:y1, x0:x1] = self.mask[y0:y1, x0:x1] & free
        values[written[y0:y1, x0:x1]] = label
        doc.set_region((y0, y1, x0, x1), values, "lesion")
        canvas.strokeFinished.emit()
        klass = self.klass
        self.discard(canvas)
        self.seed += 1  # the next click proposes another shape
        self.notify(f"Accepted the {klass} lesion (Ctrl+Z undoes it).")
        self.accepted(doc, written, klass)
        return True

    def discard(self, canvas: Canvas) -> None:
        old = self.overlay_rect(canvas)
        self.mask = None
        self._box = None
        self._outline = []
        self._repaint(canvas, old)

    def _set_mask(self, mask: np.ndarray) -> None:
        self.mask = mask
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            self._box, self._outline = None, []
            return
        self._box = (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        self._outline = [c[:, 0, :] for c in contours]

    # -- input ----------------------------------------------------------------------------
    def press(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        self._press = (x, y)
        self._last = (x, y)
        self._editing = False

    def move(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        if self._press is None or self.mask is None or canvas.document is not self._doc:
            return
        if not self._editing:
            dist = np.hypot(x - self._press[0], y - self._press[1]) * canvas.scale
            if dist <= DRAG_PX:
                return
            self._editing = True
        erase = bool(mods & Qt.KeyboardModifier.ShiftModifier)
        old = self.overlay_rect(canvas)
        m = self.mask.astype(np.uint8)
        r = max(1, int(round(canvas.brush_size / 2)))
        a = (int(round(self._last[0])), int(round(self._last[1])))
        b = (int(round(x)), int(round(y)))
        cv2.line(m, a, b, 0 if erase else 1, 2 * r)
        cv2.circle(m, b, r, 0 if erase else 1, -1)
        self._last = (x, y)
        self._set_mask(m.astype(bool))
        self._repaint(canvas, old)

    def release(self, canvas: Canvas, x: float, y: float, mods: Mods) -> None:
        pressed, self._press = self._press, None
        if self._editing:
            self._editing = False
            return
        if pressed is not None:
            self.propose(canvas, x, y)

    def key_press(self, canvas: Canvas, key: int, mods: Mods) -> bool:
        if key == Qt.Key.Key_R:
            self.reroll(canvas)
            return True
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.mask is not None:
            self.accept(canvas)
            return True
        if key == Qt.Key.Key_Escape and self.mask is not None:
            self.discard(canvas)
            return True
        return False

    def activate(self, canvas: Canvas) -> None:
        self.on_activate()

    def deactivate(self, canvas: Canvas) -> None:
        self.discard(canvas)

    # -- drawing --------------------------------------------------------------------------
    def overlay_rect(self, canvas: Canvas) -> QRectF | None:
        if self._box is None:
            return None
        y0, y1, x0, x1 = self._box
        a = canvas.image_to_widget(x0 - 1, y0 - 1)
        b = canvas.image_to_widget(x1 + 1, y1 + 1)
        return QRectF(a, b).normalized().adjusted(-4, -4, 4, 4)

    def _repaint(self, canvas: Canvas, old: QRectF | None) -> None:
        for r in (old, self.overlay_rect(canvas)):
            if r is not None:
                canvas.update(r.toAlignedRect())

    def paint(self, canvas: Canvas, painter: QPainter) -> None:
        if self.mask is None or self._box is None or canvas.document is not self._doc:
            return
        y0, y1, x0, x1 = self._box
        color = QColor(*canvas.active_color()) if canvas.active_label else QColor(255, 70, 70)
        sub = self.mask[y0:y1, x0:x1]
        rgba = np.zeros((*sub.shape, 4), np.uint8)
        rgba[sub] = (color.red(), color.green(), color.blue(), 90)
        img = QImage(rgba.data, sub.shape[1], sub.shape[0], 4 * sub.shape[1],
                     QImage.Format.Format_RGBA8888)
        # pixel (col, row) is centred at (col, row): its square spans +-0.5
        tl = canvas.image_to_widget(x0 - 0.5, y0 - 0.5)
        br = canvas.image_to_widget(x1 - 0.5, y1 - 0.5)
        painter.drawImage(QRectF(tl, br), img)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        for pts in self._outline:
            poly = QPolygonF([canvas.image_to_widget(float(px), float(py)) for px, py in pts])
            if len(pts):
                poly.append(QPointF(poly[0]))
            painter.setPen(QPen(QColor(0, 0, 0, 200), 3, Qt.PenStyle.SolidLine))
            painter.drawPolyline(poly)
            painter.setPen(QPen(color.lighter(140), 1.5, Qt.PenStyle.DashLine))
            painter.drawPolyline(poly)


class LesionPanel(QWidget):
    """The Lesion dock: class, size, re-roll / accept / drop, and whether to inpaint."""

    def __init__(self, window: QMainWindow, tool: LesionTool) -> None:
        super().__init__()
        self.setObjectName("LesionPanel")
        self.window_ = window
        self.tool = tool
        self._cache: dict[tuple, LesionModel] = {}
        self.klass = QComboBox()
        self.klass.setToolTip("The kind of lesion to propose; shapes are learned per class")
        self.size = QComboBox()
        for key, text in SIZE_TEXT.items():
            self.size.addItem(text, key)
        self.size.setToolTip("How large, from this class's lesions: small, medium and large are "
                             "its 21st, 50th and 79th percentile areas")
        self.reroll_button = QPushButton("Re-roll (R)")
        self.accept_button = QPushButton("Accept (Enter)")
        self.drop_button = QPushButton("Drop (Esc)")
        self.inpaint = QCheckBox("Inpaint the image inside it (sdm)")
        self.inpaint.setChecked(True)
        self.inpaint.setToolTip("After Accept, regenerate the image inside the lesion with the "
                                "sdm model; the result appears in the gallery")
        self.info = QLabel("Choose the tool (M) and click a scan where the lesion goes.")
        self.info.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Class", self.klass)
        form.addRow("Size", self.size)
        buttons = QHBoxLayout()
        for b in (self.reroll_button, self.accept_button, self.drop_button):
            buttons.addWidget(b)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addWidget(self.inpaint)
        lay.addWidget(self.info)
        lay.addStretch(1)

        tool.models = self.model_for
        tool.notify = self.info.setText
        tool.report = self._report
        tool.accepted = self._accepted
        self.klass.currentIndexChanged.connect(self._class_changed)
        self.size.currentIndexChanged.connect(self._size_changed)
        self.reroll_button.clicked.connect(lambda: self._on_canvas(tool.reroll))
        self.accept_button.clicked.connect(lambda: self._on_canvas(tool.accept))
        self.drop_button.clicked.connect(lambda: self._on_canvas(tool.discard))
        signal = getattr(window, "currentDocumentChanged", None)
        if signal is not None:
            signal.connect(lambda _doc: self.refresh_classes())
        self.refresh_classes()

    def _on_canvas(self, fn: Any) -> None:
        canvas = getattr(self.window_, "canvas", None)
        if canvas is not None:
            fn(canvas)

    def _report(self, sentence: str) -> None:
        show = getattr(self.window_, "show_error", None)
        if callable(show):
            show(sentence)
        self.info.setText(sentence)

    def _class_changed(self, *_: Any) -> None:
        self.tool.klass = self.klass.currentData()
        self._propose_again()

    def _size_changed(self, *_: Any) -> None:
        self.tool.size = self.size.currentData() or "class"
        self._propose_again()

    def _propose_again(self) -> None:
        """A proposal on screen follows a new class or size at once, at the same place."""
        canvas = getattr(self.window_, "canvas", None)
        if canvas is not None and self.tool.mask is not None and self.tool.asked is not None:
            self.tool.propose(canvas, *self.tool.asked)

    def _documents(self) -> list[Document]:
        project = getattr(self.window_, "project", None)
        return list(getattr(project, "documents", []) or [])

    def model_for(self, doc: Document, klass: str) -> LesionModel:
        """The shape model for ``klass``: this project's own masks when they hold enough of
        that class, else the shipped statistics (cached per project and schema)."""
        key = (id(getattr(self.window_, "project", None)), doc.schema.name, klass)
        if key not in self._cache:
            sid = doc.schema.sector_id
            with_lesion = [d for d in self._documents() if not d.provenance and d.klass
                           and bool(((d.labels.data != 0) & (d.labels.data != sid)).any())]
            step = max(1, len(with_lesion) // FIT_CAP)
            items = [(d.labels.data, d.klass) for d in with_lesion[::step]]
            self._cache[key] = lesion_model_for(doc.schema, items, klass)
        return self._cache[key]

    def refresh_classes(self) -> None:
        """The classes a lesion may be: the schema's image classes but "normal", and any the
        shipped statistics know."""
        doc = self.window_.current_document() if hasattr(self.window_, "current_document") \
            else None
        schema = doc.schema if doc is not None else getattr(
            getattr(self.window_, "project", None), "schema", None)
        names: list[str] = []
        if schema is not None:
            from usgen_desktop.core.lesions import shipped_lesion_model

            names = [c for c in schema.classes if c != "normal"]
            try:
                shipped = shipped_lesion_model(schema.name)
            except UsgenError:
                shipped = None
            names += [c for c in (shipped.classes if shipped else {}) if c not in names]
        current = self.klass.currentData()
        self.klass.blockSignals(True)
        self.klass.clear()
        for name in names or ["lesion"]:
            self.klass.addItem(name, name)
        want = current if current in names else ("malignant" if "malignant" in names else None)
        if want is not None:
            self.klass.setCurrentIndex(self.klass.findData(want))
        self.klass.blockSignals(False)
        self._class_changed()

    def _accepted(self, doc: Document, mask: np.ndarray, klass: str | None) -> None:
        if not self.inpaint.isChecked() or not mask.any():
            return
        if doc.image is None:  # a label map awaiting generation: nothing to inpaint into
            self.info.setText(f"Accepted the {klass} lesion; this label map has no image to "
                              "inpaint, so Generate makes the whole image.")
            return
        from usgen_desktop.gui.panels.generate import GeneratePanel

        panel = self.window_.findChild(GeneratePanel)
        if panel is None:
            self.info.setText("Accepted; the Generate panel is not loaded, so the image was "
                              "not inpainted.")
            return
        if panel.inpaint_region_of(doc, inpaint_region(mask, None, INPAINT_MARGIN),
                                   klass) is not None:
            self.info.setText(f"Accepted; inpainting the {klass} lesion (see the gallery).")


def install(window: QMainWindow) -> LesionPanel:
    """The Add-lesion tool and its Lesion dock (shown when the tool is chosen)."""
    tool = LesionTool()
    panel = LesionPanel(window, tool)
    dock = QDockWidget("Lesion", window)
    dock.setObjectName("LesionDock")
    dock.setWidget(panel)
    # the left column has room under the image list; the right one is full (labels, generate)
    window.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, dock)
    dock.hide()

    def show_dock() -> None:
        if not dock.isVisible():
            dock.show()
            # tall enough for the form and two lines of status, not the default sliver
            window.resizeDocks([dock], [panel.sizeHint().height() + 40],
                               Qt.Orientation.Vertical)

    tool.on_activate = show_dock
    window.register_tool(tool)
    return panel
