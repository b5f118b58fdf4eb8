"""Small widget helpers the Generate and Train panels share."""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QMessageBox, QWidget


def tight_row(main: QWidget, side: QWidget) -> QHBoxLayout:
    """``main`` stretched beside ``side`` with no margins (a form row: path + "…", etc.)."""
    row = QHBoxLayout()
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(main, 1)
    row.addWidget(side)
    return row


def report_error(window: QWidget, title: str, sentence: str) -> None:
    """The window's own ``show_error`` when it has one (tests record there), else a box."""
    show = getattr(window, "show_error", None)
    if callable(show):
        show(sentence)
    else:
        QMessageBox.warning(window, title, sentence)
