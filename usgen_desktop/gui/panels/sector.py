"""Sector (the probe's fan, its field of view) on the canvas, and whole-label transforms.

Adds to the Tools menu: the Fan handles tool (S) that shows the fan or rectangle with handles
to drag (apex, inner/outer radius, both angles; or the rectangle's corners) and draws a new one
by dragging when the document has none; and the "Fan (field of view)" submenu: "Detect the
fan" (fit it from the image), "Detect the fan in all images" (worker, then a review grid of
overlays where doubtful fits come first), "Apply the fan to the labels" (Enter with the tool:
clip anatomy to the fan and fill it with the sector label, one undo step), "New …" per probe
type; and "Transform label…". The geometry is kept in the document's tags so it is saved; a
fan fixed by hand is remembered for its scanner layout in the project's sector_layouts.json.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PySide6.QtCore import QEvent, QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QAction, QColor, QIcon, QKeySequence, QPainter, QPen, QPixmap, QPolygonF
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QPushButton,
    QVBoxLayout,
)

from usgen_desktop.core.deform import transform_label
from usgen_desktop.core.document import Document
from usgen_desktop.core.labels import LabelMap
from usgen_desktop.core.sector import (
    AUTO_APPLY,
    LAYOUTS_FILE,
    LayoutMemory,
    Sector,
    SectorFit,
    apply_sector,
    detect_sector,
)
from usgen_desktop.core.tasks import CancelToken, Progress, ProgressFn, no_progress
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


def set_detected(doc: Document, fit: SectorFit) -> None:
    """Show a detected fan for editing; the detector's own fan is kept beside it, so a later
    hand fix can be remembered for the scanner layout."""
    set_sector(doc, fit.sector)
    if fit.detected is not None:
        doc.tags["sector_detected"] = fit.detected.to_dict()


def hand_fixed(doc: Document) -> tuple[Sector, Sector] | None:
    """(detected, fixed) when the user changed the detected fan by hand, else None."""
    s, raw = sector_of(doc), doc.tags.get("sector_detected")
    if s is None or not isinstance(raw, dict):
        return None
    try:
        detected = Sector.from_dict(raw)
    except (TypeError, ValueError):
        return None
    if detected.to_dict() == s.to_dict():
        return None
    return detected, s


# -- the fans fixed by hand, per scanner layout, kept in the project folder -----------------
def layouts_path(window) -> Path | None:  # noqa: ANN001
    project = getattr(window, "project", None)
    return Path(project.folder) / LAYOUTS_FILE if project is not None else None


def load_memory(window) -> LayoutMemory:  # noqa: ANN001
    path = layouts_path(window)
    if path is None or not path.is_file():
        return LayoutMemory()
    try:
        return LayoutMemory.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return LayoutMemory()  # a damaged file costs the remembered fixes, never the project


def remember_fix(window, doc: Document) -> bool:  # noqa: ANN001
    """Keep a hand-fixed fan for its scanner layout (saved at once); True when there was one."""
    pair = hand_fixed(doc)
    path = layouts_path(window)
    if pair is None or path is None:
        return False
    memory = load_memory(window)
    memory.remember(doc.shape, *pair)
    try:
        from usgen_desktop.io.atomic import write_text_atomic

        write_text_atomic(path, memory.to_json())
    except OSError:
        return False
    return True


# -- every image at once ----------------------------------------------------------------------
def detect_all(images: list[tuple[str, np.ndarray, str | None]], memory: LayoutMemory,
               progress: ProgressFn = no_progress,
               cancel: CancelToken | None = None) -> dict[str, SectorFit]:
    """The fan of every (uid, image, probe prior); a plain function for the worker thread."""
    out: dict[str, SectorFit] = {}
    for k, (uid, image, probe) in enumerate(images):
        if cancel is not None:
            cancel.raise_if_cancelled()
        out[uid] = detect_sector(image, probe=probe, memory=memory)
        progress(Progress(k + 1, len(images), "Detecting the fan"))
    return out


def _probe_prior(doc: Document) -> str | None:
    # A schema with a sector label is a fan schema (HC18, echo): its probe is a fair prior.
    return doc.schema.probe if doc.schema.sector_id is not None else None


REVIEW_THUMB = 150


def overlay_thumbnail(doc: Document, sector: Sector | None, ok: bool) -> QPixmap:
    """The image shrunk to a tile with the fan's outline: green when trusted, orange to check."""
    from usgen_desktop.gui.gallery import rgb_to_qimage

    assert doc.image is not None
    gray = doc.image.to_uint8()
    h, w = gray.shape
    f = REVIEW_THUMB / max(h, w)
    small = cv2.resize(gray, (max(1, round(w * f)), max(1, round(h * f))),
                       interpolation=cv2.INTER_AREA)
    rgb = np.ascontiguousarray(np.repeat(small[..., None], 3, axis=2))
    if sector is not None:
        pts = np.rint(sector.outline(96) * f).astype(np.int32)
        cv2.polylines(rgb, [pts], True, (80, 220, 80) if ok else (255, 150, 0), 2)
    return QPixmap.fromImage(rgb_to_qimage(rgb))


class FanReviewDialog(QDialog):
    """Every image's detected fan as an overlay tile: trusted ones checked, doubtful ones
    first and unchecked. The user fixes a doubtful one in the editor (double-click: the
    dialog stays open); a fix is remembered for its scanner layout and fills in every other
    image of that layout. "Apply to checked" writes the fans into the label maps."""

    def __init__(self, window, docs: list[Document], fits: dict[str, SectorFit]) -> None:  # noqa: ANN001
        super().__init__(window)
        self.window_ = window
        self.setWindowTitle("Review the detected fans")
        self.resize(820, 600)
        self.docs = sorted(docs, key=lambda d: (fits[d.uid].confidence, d.name))
        self.fits = fits
        self.state: dict[str, str] = {}  # uid -> "trusted" | "check" | "yours" | "layout"
        for d in self.docs:
            fit = fits[d.uid]
            self.state[d.uid] = ("layout" if fit.remembered else
                                 "trusted" if fit.confidence >= AUTO_APPLY else "check")
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.list = QListWidget()
        self.list.setViewMode(QListView.ViewMode.IconMode)
        self.list.setIconSize(QSize(REVIEW_THUMB, REVIEW_THUMB))
        self.list.setGridSize(QSize(REVIEW_THUMB + 24, REVIEW_THUMB + 40))
        self.list.setResizeMode(QListView.ResizeMode.Adjust)
        self.list.setMovement(QListView.Movement.Static)
        self.list.setWordWrap(True)
        self.list.setSelectionMode(QListWidget.SelectionMode.ExtendedSelection)
        self.list.itemDoubleClicked.connect(lambda it: self.fix(it.data(Qt.ItemDataRole.UserRole)))
        # the dark theme drew an unchecked box in the background's colour: give it an edge
        self.list.setStyleSheet("QListWidget::indicator { width: 14px; height: 14px; }"
                                "QListWidget::indicator:unchecked { border: 1px solid #9aa0a6;"
                                " background: #202226; }"
                                "QListWidget::indicator:checked { border: 1px solid #50c050;"
                                " background: #2f7d32; }")
        self.tiles: dict[str, QListWidgetItem] = {}
        for d in self.docs:
            tile = QListWidgetItem()
            tile.setData(Qt.ItemDataRole.UserRole, d.uid)
            tile.setFlags(tile.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            self.list.addItem(tile)
            self.tiles[d.uid] = tile
        self.fix_button = QPushButton("Fix in the editor")
        self.fix_button.setToolTip("Open the selected image with the fan's handles (or "
                                   "double-click a tile); drag them, then come back here")
        self.fix_button.clicked.connect(self._fix_selected)
        self.apply_button = QPushButton("")
        self.apply_button.setDefault(True)
        self.apply_button.clicked.connect(self.apply_checked)
        close = QPushButton("Close")
        close.clicked.connect(self.reject)
        bar = QHBoxLayout()
        bar.addWidget(self.fix_button)
        bar.addStretch(1)
        bar.addWidget(self.apply_button)
        bar.addWidget(close)
        lay = QVBoxLayout(self)
        lay.addWidget(self.summary)
        lay.addWidget(self.list, 1)
        lay.addLayout(bar)
        self.list.itemChanged.connect(lambda _it: self._update_summary())
        for d in self.docs:
            self._draw(d)
        self._update_summary()

    # -- tiles ------------------------------------------------------------------------------
    def _draw(self, doc: Document) -> None:
        tile = self.tiles[doc.uid]
        state = self.state[doc.uid]
        fit = self.fits[doc.uid]
        ok = state != "check"
        self.list.blockSignals(True)
        tile.setIcon(QIcon(overlay_thumbnail(doc, sector_of(doc), ok)))
        caption = {"trusted": f"{fit.confidence:.0%}", "check": f"check · {fit.confidence:.0%}",
                   "yours": "fixed by you", "layout": "as you fixed it"}[state]
        tile.setText(f"{doc.name}\n{caption}")
        tile.setToolTip(
            f"{doc.name}: " + {
                "trusted": f"found with {fit.confidence:.0%} confidence",
                "check": f"only {fit.confidence:.0%} confidence: check it (double-click to fix)",
                "yours": "you fixed this fan; images of the same layout take it",
                "layout": "the same scanner layout as a fan you fixed"}[state])
        tile.setCheckState(Qt.CheckState.Checked if ok else Qt.CheckState.Unchecked)
        self.list.blockSignals(False)

    def checked(self) -> list[Document]:
        return [d for d in self.docs
                if self.tiles[d.uid].checkState() == Qt.CheckState.Checked]

    def _update_summary(self) -> None:
        n, n_check = len(self.docs), sum(s == "check" for s in self.state.values())
        n_on = len(self.checked())
        self.summary.setText(
            f"The fan of {n} image{'s' if n != 1 else ''}. "
            + (f"<b>{n_check} to check</b> (orange, first): double-click one to fix it in the "
               "editor; a fix also holds for every image of the same scanner layout."
               if n_check else "All were found with confidence; look them over, then apply."))
        self.apply_button.setText(f"Apply to checked ({n_on})")
        self.apply_button.setEnabled(n_on > 0)

    # -- the user's fixes -------------------------------------------------------------------
    def fix(self, uid: str) -> None:
        """Open the image in the editor with the fan's handles; the dialog stays open."""
        w = self.window_
        w.open_document(uid)
        if "sector" in getattr(w, "tools", {}):
            w.select_tool("sector")
        w.raise_()
        w.activateWindow()

    def _fix_selected(self) -> None:
        items = self.list.selectedItems() or ([self.list.currentItem()]
                                              if self.list.currentItem() else [])
        if items:
            self.fix(items[0].data(Qt.ItemDataRole.UserRole))

    def refresh(self) -> None:
        """Take in the fans fixed in the editor: each is remembered for its layout, and the
        images of that layout not fixed by hand take it."""
        fixed_any = False
        for d in self.docs:
            if hand_fixed(d) is not None and self.state[d.uid] != "yours":
                remember_fix(self.window_, d)
                self.state[d.uid] = "yours"
                fixed_any = True
                self._draw(d)
        if fixed_any:
            memory = load_memory(self.window_)
            for d in self.docs:
                if self.state[d.uid] in ("yours", "layout"):
                    continue
                detected = self.fits[d.uid].detected or self.fits[d.uid].sector
                mine = memory.recall(d.shape, detected)
                if mine is not None:
                    set_sector(d, mine)
                    self.state[d.uid] = "layout"
                    self._draw(d)
        self._update_summary()

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt API
        if event.type() == QEvent.Type.ActivationChange and self.isActiveWindow():
            self.refresh()  # back from the editor
        super().changeEvent(event)

    def apply_checked(self) -> int:
        """Write the checked images' fans into their label maps (one undo step each)."""
        self.refresh()
        docs = self.checked()
        for d in docs:
            apply_to_labels(d)
            self.window_.refresh_document(d)
        left = len(self.docs) - len(docs)
        self.window_.statusBar().showMessage(
            f"Applied the fan to {len(docs)} image{'s' if len(docs) != 1 else ''}"
            + (f"; {left} left as they were." if left else "."), 8000)
        self.accept()
        return len(docs)


class FanBatch:
    """Tools › Fan › Detect the fan in all images: worker, then the review grid."""

    def __init__(self, window: QMainWindow) -> None:
        self.window = window
        self.handle = None
        self.dialog: FanReviewDialog | None = None

    def start(self, docs: list[Document] | None = None, show: bool = True):  # noqa: ANN201
        from usgen_desktop.gui.worker import run_task

        w = self.window
        project = getattr(w, "project", None)
        docs = [d for d in (docs if docs is not None else getattr(project, "documents", []))
                if d.image is not None]
        if not docs:
            w.show_error("There is no image to detect a fan in; import scans first.")
            return None
        images = [(d.uid, d.image.to_uint8(), _probe_prior(d)) for d in docs]
        memory = load_memory(w)
        w.statusBar().showMessage(f"Detecting the fan in {len(docs)} images…")

        def done(fits: dict[str, SectorFit]) -> None:
            self.handle = None
            for d in docs:
                set_detected(d, fits[d.uid])
            w.canvas.update()
            self.dialog = FanReviewDialog(w, docs, fits)
            if show:
                self.dialog.show()  # not modal: the user fixes tiles in the editor meanwhile

        def progress(p: Progress) -> None:
            w.statusBar().showMessage(f"Detecting the fan… {p.done} of {p.total}")

        self.handle = run_task(w, detect_all, images, memory, title="fan detection",
                               on_done=done, on_progress=progress)
        return self.handle


class SectorTool(CanvasTool):
    name = "sector"
    title = "Fan handles"
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
    # "Fan" beside the tool "Sector": the menu had "Sector" twice (the tool and this submenu)
    menu = window.tools_menu.addMenu("&Fan (field of view)")
    window.fan_menu = menu
    batch = FanBatch(window)
    window.fan_batch = batch

    def current() -> Document | None:
        return window.current_document()

    def detect() -> None:
        doc = current()
        if doc is None or doc.image is None:
            window.show_error("Detecting the fan needs an image; draw one with Fan handles (S).")
            return
        fit = detect_sector(doc.image.to_uint8(), probe=_probe_prior(doc),
                            memory=load_memory(window))
        set_detected(doc, fit)
        window.select_tool("sector")
        how = ("as you fixed it for this scanner layout" if fit.remembered
               else f"fit {fit.confidence:.0%}" + (", please check it"
                                                   if fit.confidence < AUTO_APPLY else ""))
        window.statusBar().showMessage(
            f"Found a {fit.kind} fan ({how}); drag the handles, then Enter to apply it to the "
            "labels.", 8000)
        window.canvas.update()

    def apply() -> None:
        doc = current()
        if sector_of(doc) is None:
            window.show_error("There is no fan to apply: detect or draw one first.")
            return
        remember_fix(window, doc)  # a hand fix then holds for the whole scanner layout
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

    window.act_detect_sector = add("&Detect the fan", detect, "Ctrl+Shift+D")
    window.act_detect_all_fans = add("Detect the fan in &all images…", lambda: batch.start())
    window.act_apply_sector = add("&Apply the fan to the labels", apply, "Ctrl+Shift+A")
    menu.addSeparator()
    for kind, text in (("linear", "New &linear sector"), ("curvilinear", "New &curvilinear fan"),
                       ("phased", "New &phased-array fan")):
        add(text, lambda k=kind: new(k))
    window.act_transform_label = add("T&ransform label…", transform, "Ctrl+T",
                                     into=window.tools_menu)
    return tool
