"""Small layout helpers the Generate, Train and Smart-tool panels share."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import QHBoxLayout, QPushButton, QWidget


def tight_row(main: QWidget, side: QWidget) -> QHBoxLayout:
    """``main`` stretched beside ``side`` with no margins (a form row: path + "…", etc.)."""
    row = QHBoxLayout()
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(main, 1)
    row.addWidget(side)
    return row


def run_and_use_buttons(run_text: str, use_text: str, use_tip: str, on_run: Callable[[], object],
                        on_use: Callable[[], object]
                        ) -> tuple[QPushButton, QPushButton, QHBoxLayout]:
    """A training panel's wide "run" button beside its "use the result" button (disabled until
    a run has saved something)."""
    run = QPushButton(run_text)
    run.clicked.connect(on_run)
    use = QPushButton(use_text)
    use.setToolTip(use_tip)
    use.setEnabled(False)
    use.clicked.connect(on_use)
    row = QHBoxLayout()
    row.addWidget(run, 1)
    row.addWidget(use)
    return run, use, row
