"""Project and import helpers for the main window: a modal progress run, the new-project
dialog, the problems dialog, and turning files or folders into documents.

Import and export run here in the GUI thread under a QProgressDialog whose Cancel sets the
task's CancelToken (the long tasks report progress often, and each report lets Qt process
events). The worker thread (gui/worker.py) can take them over later without changing them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QProgressDialog,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from usgen_desktop.core.document import Document
from usgen_desktop.core.labels import Label, LabelSchema, load_preset, preset_names
from usgen_desktop.core.tasks import CancelToken, Progress

IMAGE_FILTER = (
    "Ultrasound images (*.png *.jpg *.jpeg *.bmp *.tif *.tiff *.dcm *.nii *.nii.gz *.mhd);;"
    "All files (*)"
)


def run_with_progress(parent: QWidget | None, title: str, fn: Callable[..., Any], *args: Any,
                      **kwargs: Any) -> Any:
    """Run ``fn(*args, progress=, cancel=, **kwargs)`` modally with a progress dialog.

    Raises what ``fn`` raises (``Cancelled`` when the user pressed Cancel and the task
    honoured it). The dialog appears only for tasks longer than half a second.
    """
    dlg = QProgressDialog(title, "Cancel", 0, 0, parent)
    dlg.setWindowTitle(title.rstrip("…. "))
    dlg.setWindowModality(Qt.WindowModality.WindowModal)
    dlg.setMinimumDuration(500)
    dlg.setAutoClose(False)
    dlg.setAutoReset(False)
    token = CancelToken()
    dlg.canceled.connect(token.cancel)
    last = [0.0]

    def progress(p: Progress) -> None:
        now = time.monotonic()
        if now - last[0] < 0.05 and p.done < p.total:
            return  # repainting the dialog costs more than a small step
        last[0] = now
        dlg.setMaximum(max(0, p.total))
        dlg.setValue(min(p.done, p.total) if p.total > 0 else 0)
        if p.message:
            dlg.setLabelText(p.message)
        QApplication.processEvents()

    QApplication.setOverrideCursor(Qt.CursorShape.BusyCursor)
    try:
        return fn(*args, progress=progress, cancel=token, **kwargs)
    finally:
        QApplication.restoreOverrideCursor()
        dlg.close()
        dlg.deleteLater()


def show_problems(parent: QWidget | None, title: str, intro: str, problems: Sequence[str]) -> None:
    """One dialog listing every problem (one sentence each); the work already went on."""
    if not problems:
        return
    dlg = QDialog(parent)
    dlg.setWindowTitle(title)
    text = QPlainTextEdit("\n".join(problems))
    text.setReadOnly(True)
    text.setMinimumSize(560, 220)
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok)
    buttons.accepted.connect(dlg.accept)
    lay = QVBoxLayout(dlg)
    lay.addWidget(_label(intro))
    lay.addWidget(text, 1)
    lay.addWidget(buttons)
    dlg.exec()


def _label(text: str) -> QWidget:
    lab = QLabel(text)
    lab.setWordWrap(True)
    return lab


def schema_clashes(base: LabelSchema, extra: LabelSchema) -> list[str]:
    """One sentence per id that means different things in the two schemas."""
    out = []
    for lab in extra.labels:
        mine = base.get(lab.id)
        if lab.id != 0 and mine is not None and mine.name.lower() != lab.name.lower():
            out.append(f"Label id {lab.id} is '{lab.name}' in the imported data but "
                       f"'{mine.name}' in this project; the project's name is kept.")
    return out


def merge_schema(base: LabelSchema, extra: LabelSchema) -> LabelSchema:
    """``base`` plus the labels of ``extra`` whose ids ``base`` lacks (names/colours kept)."""
    known = set(base.ids)
    added = [lab for lab in extra.labels if lab.id not in known]
    schema = base
    for lab in added:
        schema = schema.with_label(Label(lab.id, lab.name, lab.color, lab.visible, lab.tissue))
    return schema


def documents_from_files(paths: Sequence[Path], schema: LabelSchema,
                         progress, cancel) -> tuple[list[Document], list[str]]:  # noqa: ANN001
    """One blank-mask document per readable image file; unreadable ones become problems."""
    from usgen_desktop.errors import UsgenError
    from usgen_desktop.io import read_image

    docs: list[Document] = []
    problems: list[str] = []
    for i, path in enumerate(paths):
        cancel.raise_if_cancelled()
        progress(Progress(i, len(paths), f"Reading {Path(path).name}"))
        try:
            img = read_image(Path(path))
        except UsgenError as exc:
            text = str(exc)  # most sentences name the file already
            problems.append(text if Path(path).name in text else f"{Path(path).name}: {text}")
            continue
        except (OSError, ValueError, MemoryError) as exc:  # one bad file never stops the rest
            problems.append(f"{Path(path).name}: could not be opened ({type(exc).__name__}).")
            continue
        docs.append(Document.blank(img.height, img.width, schema, image=img,
                                   name=Path(path).stem))
    progress(Progress(len(paths), len(paths), "Done"))
    return docs, problems


class NewProjectDialog(QDialog):
    """Name, folder and label preset of a new project."""

    def __init__(self, parent: QWidget | None, base_dir: Path) -> None:
        super().__init__(parent)
        self.setWindowTitle("New project")
        self.setMinimumWidth(520)
        self.base_dir = Path(base_dir)
        self.name = QLineEdit("My project")
        self.name.setAccessibleName("Project name")
        self.folder = QLineEdit()
        self.folder.setAccessibleName("Project folder")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        self.preset = QComboBox()
        self.preset.setAccessibleName("Label preset")
        for name in preset_names():
            self.preset.addItem(name)
        self._folder_edited = False
        self.name.textChanged.connect(self._sync_folder)
        self.folder.textEdited.connect(lambda _t: setattr(self, "_folder_edited", True))
        self._sync_folder(self.name.text())
        row = QHBoxLayout()
        row.addWidget(self.folder, 1)
        row.addWidget(browse)
        form = QFormLayout()
        form.addRow("&Name", self.name)
        folder_label = QLabel("&Folder")
        folder_label.setBuddy(self.folder)
        form.addRow(folder_label, row)
        form.addRow("&Labels", self.preset)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(buttons)

    def _sync_folder(self, name: str) -> None:
        if not self._folder_edited:
            safe = "".join(c if c.isalnum() or c in "-_ " else "_" for c in name).strip()
            self.folder.setText(str(self.base_dir / (safe or "project")))

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Project folder", str(self.base_dir))
        if path:
            self._folder_edited = True
            self.folder.setText(path)

    def values(self) -> tuple[Path, LabelSchema, str]:
        return Path(self.folder.text()), load_preset(self.preset.currentText()), self.name.text()


def is_project_folder(folder: Path) -> bool:
    from usgen_desktop.io.project import is_project

    return is_project(folder)


def ask_yes_no(parent: QWidget | None, title: str, text: str) -> bool:
    box = QMessageBox.question(
        parent, title, text,
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.Yes,
    )
    return box == QMessageBox.StandardButton.Yes
