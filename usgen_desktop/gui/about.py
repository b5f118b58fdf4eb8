"""Help > About: version, torch build, device found, Qt, licences and citations.

The text itself comes from :func:`usgen_desktop.licenses.about_text` (Qt-free, tested without a
display); this module only lays it out. "Copy" puts the whole text on the clipboard, which is
what a bug report needs.
"""

from __future__ import annotations

import PySide6
from PySide6.QtCore import Qt, qVersion
from PySide6.QtGui import QFont, QGuiApplication, QPixmap
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QVBoxLayout,
    QWidget,
)

from usgen_desktop.licenses import about_text, runtime_info


def qt_info() -> dict[str, str]:
    return {"qt": qVersion(), "pyside6": PySide6.__version__}


class AboutDialog(QDialog):
    """A header with the facts people ask for, and the full text (licences, citations) below."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from usgen_desktop.paths import resources_dir

        self.setWindowTitle("About USGen Desktop")
        self.setObjectName("AboutDialog")
        info = runtime_info(qt_info())
        self.text = about_text(qt_info())

        head = QHBoxLayout()
        icon = resources_dir() / "icons" / "usgen-128.png"
        if icon.exists():
            pic = QLabel()
            pic.setPixmap(QPixmap(str(icon)).scaled(
                96, 96, Qt.AspectRatioMode.KeepAspectRatio,
                Qt.TransformationMode.SmoothTransformation))
            head.addWidget(pic, 0, Qt.AlignmentFlag.AlignTop)
        self.summary = QLabel(
            f"<h2>USGen Desktop {info['usgen']}</h2>"
            f"<p>torch {info['torch']} ({info['torch_build']} build)<br>"
            f"Device found: <b>{info['device']}</b><br>"
            f"Qt {info.get('qt', '?')}, PySide6 {info.get('pyside6', '?')}, "
            f"Python {info['python']}</p>"
            "<p>Synthetic images are for research and training data, never for diagnosis.</p>"
        )
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        head.addWidget(self.summary, 1)

        self.details = QPlainTextEdit(self.text)
        self.details.setReadOnly(True)
        self.details.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        mono = QFont("monospace")
        mono.setStyleHint(QFont.StyleHint.Monospace)
        mono.setPointSizeF(max(7.0, self.font().pointSizeF() - 1))
        self.details.setFont(mono)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.copy_button = buttons.addButton("Copy", QDialogButtonBox.ButtonRole.ActionRole)
        self.copy_button.setToolTip("Copy this text (versions, device) for a bug report")
        self.copy_button.clicked.connect(self.copy_to_clipboard)
        buttons.rejected.connect(self.reject)
        buttons.accepted.connect(self.accept)

        lay = QVBoxLayout(self)
        lay.addLayout(head)
        lay.addWidget(self.details, 1)
        lay.addWidget(buttons)
        self.resize(720, 560)

    def copy_to_clipboard(self) -> None:
        QGuiApplication.clipboard().setText(self.text)


def show_about(parent: QWidget | None = None, block: bool = True) -> AboutDialog | None:
    """Open the About box over ``parent``: modal, freed when closed; with ``block`` False it
    is shown without waiting and returned (tests, scripted screenshots)."""
    dlg = AboutDialog(parent)
    if not block:
        dlg.show()
        return dlg
    dlg.exec()
    dlg.deleteLater()
    return None
