"""A small layout helper the Generate and Train panels share."""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QWidget


def tight_row(main: QWidget, side: QWidget) -> QHBoxLayout:
    """``main`` stretched beside ``side`` with no margins (a form row: path + "…", etc.)."""
    row = QHBoxLayout()
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(main, 1)
    row.addWidget(side)
    return row
