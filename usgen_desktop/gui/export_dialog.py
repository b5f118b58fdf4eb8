"""The export dialog: format, target folder, dataset name and which documents to export.

``ExportDialog.export()`` does the work (tests call it directly): it runs
``export.export_pairs`` under a progress dialog with Cancel and returns its report; an
existing export is never replaced unless the user ticks "Replace an existing export".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from usgen_desktop.core.document import Document
from usgen_desktop.errors import Cancelled, UsgenError
from usgen_desktop.gui.project_io import run_with_progress

FORMATS = [
    ("folder", "images/ + masks/ folders (MONAI, any tool)"),
    ("nnunet", "nnU-Net v2 dataset (imagesTr/, labelsTr/, dataset.json)"),
    ("decathlon", "Medical Segmentation Decathlon (dataset.json)"),
]


FORMAT_NAMES = {"folder": "images/ + masks/ folders", "nnunet": "an nnU-Net v2 dataset",
                "decathlon": "a Decathlon dataset"}


def describe_report(report: Any) -> str:
    """A short summary of an ``ExportReport`` for the user."""
    fmt = FORMAT_NAMES.get(getattr(report, "fmt", ""), "a dataset")
    count = int(getattr(report, "count", 0))
    written = int(getattr(report, "written", count))
    resumed = int(getattr(report, "resumed", 0))
    text = f"Exported {count} pair{'s' if count != 1 else ''} as {fmt} to {report.out_dir}."
    if resumed:
        text += f" {resumed} were already there from an interrupted export; {written} were added."
    skipped = list(getattr(report, "skipped", []) or [])
    if skipped:
        text += f"\n\nLeft out ({len(skipped)}):\n" + "\n".join(f"• {p}" for p in skipped[:15])
        if len(skipped) > 15:
            text += f"\n… and {len(skipped) - 15} more"
    return text


class ExportDialog(QDialog):
    """Choose how and what to export, then export with progress and show the result."""

    def __init__(self, parent: QWidget | None, project, selected: list[str] | None = None,  # noqa: ANN001
                 settings: QSettings | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export image/mask pairs")
        self.setMinimumWidth(560)
        self.project = project
        self.selected = list(selected or [])
        self.settings = settings
        self.report: Any = None

        self.format = QComboBox()
        self.format.setAccessibleName("Export format")
        for key, text in FORMATS:
            self.format.addItem(text, key)
        self.folder = QLineEdit()
        self.folder.setAccessibleName("Target folder")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        self.name = QLineEdit()
        self.name.setAccessibleName("Dataset name")
        self.name.setToolTip("For nnU-Net: Dataset<NNN>_<name>; the number is added if missing")
        self.dataset_id = QSpinBox()
        self.dataset_id.setRange(1, 999)
        self.dataset_id.setValue(500)
        self.dataset_id.setAccessibleName("nnU-Net dataset number")
        self.dataset_id.setToolTip("nnU-Net's DatasetNNN number (500 and up are free for you)")
        self.format.currentIndexChanged.connect(
            lambda _i: self.dataset_id.setEnabled(self.format.currentData() == "nnunet"))
        self.all_masked = QRadioButton()
        self.only_selected = QRadioButton()
        group = QButtonGroup(self)
        group.addButton(self.all_masked)
        group.addButton(self.only_selected)
        self.overwrite = QCheckBox("Replace an existing export in that folder")
        self._fill_defaults()

        row = QHBoxLayout()
        row.addWidget(self.folder, 1)
        row.addWidget(browse)
        form = QFormLayout()
        form.addRow("&Format", self.format)
        target = QLabel("&Target folder")
        target.setBuddy(self.folder)  # a row holding a layout gets no buddy by itself
        form.addRow(target, row)
        form.addRow("Dataset &name", self.name)
        form.addRow("nnU-Net dataset &number", self.dataset_id)
        which = QVBoxLayout()
        which.addWidget(self.all_masked)
        which.addWidget(self.only_selected)
        form.addRow("Export", which)
        form.addRow("", self.overwrite)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("&Export")
        self.buttons.accepted.connect(self._on_export)
        self.buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        from usgen_desktop.export.pairs import LABELLED_RULE

        # the one rule (the same in `usgen export`), said where the user chooses
        self.rule = QLabel(LABELLED_RULE + " Every export also writes manifest.jsonl (one "
                           "line per pair).")
        self.rule.setWordWrap(True)
        lay.addWidget(self.rule)
        self.waiting = QLabel("")
        self.waiting.setWordWrap(True)
        waiting = [d for d in self.project.documents if d.image is None]
        if waiting:
            n = len(waiting)
            self.waiting.setText(
                f"<b>{n} label map{'s' if n != 1 else ''} (e.g. kept variants) "
                f"{'have' if n != 1 else 'has'} no image yet</b> and cannot be exported: "
                "generate images for them first (Generate › For: label maps without images), "
                "then accept the results.")
        self.waiting.setVisible(bool(waiting))
        lay.addWidget(self.waiting)
        lay.addWidget(self.buttons)

    def _fill_defaults(self) -> None:
        docs = self.project.documents
        n_masked = sum(1 for d in docs if d.image is not None and d.is_labelled)
        n_sel = len(self.selected)
        self.all_masked.setText(f"&All labelled images ({n_masked})")
        self.only_selected.setText(f"&Selected images ({n_sel})")
        self.only_selected.setEnabled(n_sel > 0)
        (self.only_selected if n_sel > 1 else self.all_masked).setChecked(True)
        name = "".join(c if c.isalnum() else "_" for c in self.project.name).strip("_")
        self.name.setText(name or "USGen")
        last = self.settings.value("export/last_dir", "") if self.settings else ""
        base = Path(str(last)) if last else Path.home()
        self.folder.setText(str(base / (name or "export")))
        fmt = self.settings.value("export/format", "nnunet") if self.settings else "nnunet"
        idx = self.format.findData(fmt)
        self.format.setCurrentIndex(max(0, idx))
        self.dataset_id.setEnabled(self.format.currentData() == "nnunet")

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Export to", self.folder.text())
        if path:
            self.folder.setText(path)

    def documents(self) -> list[Document]:
        """What the chosen option exports: pairs only (an image and a label map)."""
        docs = self.project.documents
        if self.only_selected.isChecked():
            wanted = set(self.selected)
            return [d for d in docs if d.uid in wanted and d.image is not None]
        return [d for d in docs if d.image is not None and d.is_labelled]

    def export(self) -> Any:
        """Export now; returns the report (raises UsgenError/Cancelled for the caller)."""
        from usgen_desktop.errors import ExportError
        from usgen_desktop.export import export_pairs

        docs = self.documents()
        if not docs:
            raise ExportError("There is nothing to export: no chosen image is labelled yet.")
        folder = self.folder.text().strip()
        if not folder:
            raise ExportError("Choose a folder to export to.")
        fmt = self.format.currentData()
        self.report = run_with_progress(
            self, f"Exporting {len(docs)} pairs…", export_pairs, docs, Path(folder).expanduser(),
            fmt=fmt, schema=self.project.schema, dataset_name=self.name.text().strip() or "USGen",
            overwrite=self.overwrite.isChecked(), dataset_id=self.dataset_id.value(),
        )
        if self.settings is not None:
            self.settings.setValue("export/last_dir", str(Path(folder).expanduser().parent))
            self.settings.setValue("export/format", fmt)
        return self.report

    def _on_export(self) -> None:
        try:
            report = self.export()
        except Cancelled as exc:
            QMessageBox.information(self, "Export cancelled", str(exc))
            return
        except UsgenError as exc:
            QMessageBox.warning(self, "Export", str(exc))
            return
        QMessageBox.information(self, "Export finished", describe_report(report))
        self.accept()
