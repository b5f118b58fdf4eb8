"""Make N variants of label maps (random affine + elastic), keep the good ones.

Tools › Make variants… (Ctrl+Shift+V) asks for the count and the deformation ranges (the
reference defaults), deforms the current or selected label maps in the shared worker thread
(the canvas stays usable), then shows the variants as a gallery of thumbnails to keep or
discard. Kept variants become new label-map-only documents (they wait for generation), linked
to their source (``parent``) with the seed and parameters as provenance.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QAction, QIcon, QKeySequence, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
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
    QSpinBox,
    QVBoxLayout,
)

from usgen_desktop.core.deform import DeformParams, Variant, make_variants
from usgen_desktop.core.document import Document
from usgen_desktop.core.tasks import CancelToken, Progress, ProgressFn, no_progress
from usgen_desktop.errors import UsgenError
from usgen_desktop.gui.gallery import label_colors, rgb_to_qimage

THUMB = 120


class VariantsDialog(QDialog):
    """The count, seed, scope and how much the anatomy may change, said in anatomy terms;
    the engineering numbers (degrees, pixels at 256², control points) are in the tooltips."""

    def __init__(self, parent, n_selected: int) -> None:  # noqa: ANN001
        super().__init__(parent)
        self.setWindowTitle("Make variants")
        d = DeformParams()
        form = QFormLayout(self)
        self.n = QSpinBox(minimum=1, maximum=200, value=5)
        self.n.setToolTip("How many new label maps to make from each one")
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1, value=0)
        self.seed.setToolTip("The same seed and settings make the same variants")
        self.scope = QComboBox()
        self.scope.addItems(["Current label map", f"Selected label maps ({n_selected})"])
        self.rotation = QDoubleSpinBox(minimum=0, maximum=90, value=d.rotation_deg, suffix=" °")
        self.rotation.setToolTip("Affine rotation: a random angle within ± this many degrees")
        self.translate = QDoubleSpinBox(minimum=0, maximum=50, value=100 * d.translate_frac,
                                        suffix=" % of the image")
        self.translate.setToolTip("Affine translation: up to this fraction of the image size "
                                  "in each direction")
        self.scale_min = QDoubleSpinBox(minimum=20, maximum=200, value=100 * d.scale[0],
                                        singleStep=5, suffix=" %", decimals=0)
        self.scale_max = QDoubleSpinBox(minimum=20, maximum=300, value=100 * d.scale[1],
                                        singleStep=5, suffix=" %", decimals=0)
        for box in (self.scale_min, self.scale_max):
            box.setToolTip("Affine scale factor, uniform between the two (100 % = as drawn)")
        self.shear = QDoubleSpinBox(minimum=0, maximum=45, value=d.shear_deg, suffix=" °")
        self.shear.setToolTip("Affine shear: up to this many degrees")
        self.grid = QSpinBox(minimum=4, maximum=40, value=d.grid[0])
        self.grid.setToolTip("Elastic deformation grid: this many control points per side "
                             "(more points: smaller, more local bends)")
        self.disp = QDoubleSpinBox(minimum=0, maximum=80, value=100 * d.max_disp_px / 256,
                                   suffix=" % of the image", decimals=1)
        self.disp.setToolTip("Elastic displacement: each control point moves at most this "
                             "far (30 px on a 256² map by default, scaled with the image)")
        self.keep_sector = QCheckBox("Keep the fan (sector) where it is")
        self.keep_sector.setToolTip("Only the anatomy inside the probe's fan moves")
        self.keep_sector.setChecked(True)
        self.skip_bad = QCheckBox("Redraw a variant when a structure disappears or breaks in two")
        self.skip_bad.setChecked(True)
        size = QHBoxLayout()
        size.addWidget(self.scale_min)
        size.addWidget(QLabel("to"))
        size.addWidget(self.scale_max)
        for text, w in (("Variants of each label map", self.n), ("Seed", self.seed),
                        ("For", self.scope), ("Turn the anatomy by up to", self.rotation),
                        ("Move it by up to", self.translate), ("Resize it from", size),
                        ("Slant it by up to", self.shear),
                        ("Bend its outlines by up to", self.disp),
                        ("Bends across the image", self.grid)):
            form.addRow(text, w)
        form.addRow(self.keep_sector)
        form.addRow(self.skip_bad)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Make variants")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def params(self) -> DeformParams:
        lo, hi = self.scale_min.value() / 100, self.scale_max.value() / 100
        return DeformParams(
            rotation_deg=self.rotation.value(), translate_frac=self.translate.value() / 100,
            scale=(lo, max(lo, hi)), shear_deg=self.shear.value(),
            grid=(self.grid.value(), self.grid.value()),
            max_disp_px=self._disp_px(), keep_sector=self.keep_sector.isChecked(),
        )

    def _disp_px(self) -> float:
        """The displacement at 256² the box shows (the default exactly, not its rounding)."""
        default = DeformParams().max_disp_px
        if abs(self.disp.value() - round(100 * default / 256, 1)) < 1e-6:
            return default
        return self.disp.value() / 100 * 256


@dataclass
class SourceVariants:
    source: Document
    variants: list[Variant]


def make_all(
    docs: list[Document], n: int, params: DeformParams, seed: int, skip_bad: bool,
    progress: ProgressFn = no_progress, cancel: CancelToken | None = None,
) -> list[SourceVariants]:
    """Variants of every document (a plain function: the worker runs it off the GUI thread)."""
    out: list[SourceVariants] = []
    total = len(docs) * n
    for k, doc in enumerate(docs):

        def step(p: Progress, k: int = k) -> None:
            progress(Progress(k * n + p.done, total, f"label map {k + 1} of {len(docs)}"))

        vs = make_variants(doc.labels, n, params, seed, sector_id=doc.schema.sector_id,
                           skip_bad=skip_bad, source=doc.uid, progress=step, cancel=cancel)
        out.append(SourceVariants(doc, vs))
    return out


def variant_document(src: Document, v: Variant, params: DeformParams) -> Document:
    return Document(
        labels=v.label_map, schema=src.schema, image=None, name=f"{src.name}_v{v.index}",
        tags={k: val for k, val in src.tags.items() if k in ("class", "group", "sector")},
        parent=src.uid,
        provenance={"kind": "variant", "seed": v.seed, "params": params.to_dict(),
                    "problems": v.problems, "source": src.name},
    )


def _shrink(labels: np.ndarray, size: int) -> np.ndarray:
    """The label map scaled down (nearest) to fit ``size``, or as it is when it fits."""
    h, w = labels.shape[:2]
    if max(h, w) <= size:
        return labels
    f = size / max(h, w)
    return cv2.resize(labels, (max(1, round(w * f)), max(1, round(h * f))),
                      interpolation=cv2.INTER_NEAREST)


class VariantGallery(QDialog):
    """Thumbnails of the variants, checked to keep; problems shown in the tooltip."""

    def __init__(self, parent, results: list[SourceVariants], params: DeformParams) -> None:  # noqa: ANN001
        super().__init__(parent)
        self.setWindowTitle("Variants: keep or discard")
        self.resize(760, 520)
        self.params = params
        lay = QVBoxLayout(self)
        n = sum(len(r.variants) for r in results)
        bad = sum(bool(v.problems) for r in results for v in r.variants)
        lay.addWidget(QLabel(f"{n} variants. Uncheck the ones to discard"
                             + (f"; {bad} have a vanished or split label (unchecked)." if bad
                                else ".")))
        self.list = QListWidget()
        self.list.setViewMode(QListView.ViewMode.IconMode)
        self.list.setIconSize(QSize(THUMB, THUMB))
        self.list.setResizeMode(QListView.ResizeMode.Adjust)
        self.list.setSpacing(6)
        lay.addWidget(self.list)
        self._items: list[tuple[QListWidgetItem, Document, Variant]] = []
        for r in results:
            for v in r.variants:
                # shrink the label map before colouring it: colouring every full-size
                # variant on the GUI thread only to scale it down cost ~ms per variant
                rgb = label_colors(_shrink(v.label_map.data, THUMB), r.source.schema)
                pm = QPixmap.fromImage(rgb_to_qimage(rgb)).scaled(
                    THUMB, THUMB, Qt.AspectRatioMode.KeepAspectRatio,
                    Qt.TransformationMode.FastTransformation)
                it = QListWidgetItem(QIcon(pm), f"{r.source.name} #{v.index}")
                it.setFlags(it.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                it.setCheckState(Qt.CheckState.Unchecked if v.problems else Qt.CheckState.Checked)
                it.setToolTip(f"seed {v.seed}" + (": " + "; ".join(v.problems) if v.problems
                                                   else ""))
                self.list.addItem(it)
                self._items.append((it, r.source, v))
        buttons = QDialogButtonBox()
        self.keep_btn = buttons.addButton("Keep checked", QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.addButton("Discard all", QDialogButtonBox.ButtonRole.RejectRole)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)

    def kept_documents(self) -> list[Document]:
        return [variant_document(src, v, self.params) for it, src, v in self._items
                if it.checkState() == Qt.CheckState.Checked]


class VariantsController:
    """Runs the dialog → worker → gallery flow for a main window."""

    def __init__(self, window: QMainWindow) -> None:
        self.window = window
        self.handle = None
        self.last_gallery: VariantGallery | None = None

    def start(self, docs: list[Document], n: int, params: DeformParams, seed: int,
              skip_bad: bool = True, show_gallery: bool = True):  # noqa: ANN201
        from usgen_desktop.gui.worker import run_task

        docs = [d for d in docs if d.labels.data.any()]
        if not docs:
            self.window.show_error("There is no label map with any label to deform.")
            return None
        w = self.window
        w.statusBar().showMessage(f"Making {n * len(docs)} variants…")

        def done(results: list[SourceVariants]) -> None:
            self.handle = None
            w.statusBar().showMessage("Variants ready.", 4000)
            gal = VariantGallery(w, results, params)
            self.last_gallery = gal
            if show_gallery:
                gal.finished.connect(lambda code: self._gallery_closed(gal, code))
                gal.open()

        def progress(p: Progress) -> None:
            w.statusBar().showMessage(f"Making variants… {p.done} of {p.total}")

        self.handle = run_task(w, make_all, docs, n, params, seed, skip_bad, title="variants",
                               on_done=done, on_progress=progress)
        return self.handle

    def _gallery_closed(self, gal: VariantGallery, code: int) -> None:
        if code == QDialog.DialogCode.Accepted:
            self.keep(gal.kept_documents())

    def keep(self, kept: list[Document]) -> None:
        """Add the kept variants and offer the next step: images for them (a variant without
        an image is not a pair yet, so the export leaves it out)."""
        if not kept:
            return
        self.window.add_documents(kept, select=False)
        self.window.statusBar().showMessage(
            f"Kept {len(kept)} variants as label maps waiting for images.", 6000)
        if self.ask_generate(len(kept)):
            self.generate_for(kept)

    def ask_generate(self, n: int) -> bool:
        """Whether to generate images for the kept variants now (tests replace it)."""
        from PySide6.QtWidgets import QMessageBox

        box = QMessageBox(self.window)
        box.setWindowTitle("Variants kept")
        box.setText(f"Kept {n} variant{'s' if n != 1 else ''}. They are label maps without "
                    "images: generate images for them to make pairs you can export.")
        go = box.addButton("Generate images for these variants",
                           QMessageBox.ButtonRole.AcceptRole)
        box.addButton("Later", QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(go)
        box.exec()
        return box.clickedButton() is go

    def generate_for(self, docs: list[Document]):  # noqa: ANN201
        """Start the Generate panel on exactly these label maps (its dock comes forward);
        accepted results fill the variants in, so they export as pairs."""
        panel = getattr(self.window, "generate_panel", None)
        if panel is None:
            self.window.show_error("The Generate panel is not available, so no images can be "
                                   "made for the variants.")
            return None
        i = panel.scope.findData("waiting")
        if i >= 0:
            panel.scope.setCurrentIndex(i)  # "Generate" again later means these too
        from PySide6.QtWidgets import QDockWidget

        w = panel
        while w is not None and not isinstance(w, QDockWidget):
            w = w.parentWidget()
        if w is not None:
            w.show()
            w.raise_()
        return panel.generate(docs)

    def ask(self) -> None:
        w = self.window
        doc = w.current_document()
        if doc is None:
            w.show_error("Open a label map first.")
            return
        selected = w.selected_documents()
        dlg = VariantsDialog(w, len(selected))
        if dlg.exec() != QDialog.DialogCode.Accepted:
            return
        docs = [doc] if dlg.scope.currentIndex() == 0 or not selected else selected
        params = dlg.params()
        try:
            params.validate()
        except UsgenError as exc:
            w.show_error(str(exc))
            return
        self.start(docs, dlg.n.value(), params, dlg.seed.value(), dlg.skip_bad.isChecked())


def install(window: QMainWindow) -> VariantsController:
    ctl = VariantsController(window)
    act = QAction("Make &variants…", window)
    act.setShortcut(QKeySequence("Ctrl+Shift+V"))
    act.setToolTip("Random affine + elastic variants of the label map (Ctrl+Shift+V)")
    act.triggered.connect(lambda _c=False: ctl.ask())
    window.tools_menu.addAction(act)
    window.addAction(act)
    window.variants = ctl
    window.act_make_variants = act
    return ctl

