"""Autosave: every few seconds, write what changed since the last save or autosave.

The project store does the writing (``Project.autosave``, cheap when little changed); this
timer only decides when. It skips a tick while a stroke is in progress, so an autosave never
catches half a brush stroke, and reports a failure once instead of every tick.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6.QtCore import QObject, QTimer, Signal

from usgen_desktop.errors import UsgenError

INTERVAL_MS = 3000


class Autosaver(QObject):
    """Calls ``project_fn().autosave()`` every ``interval_ms`` when the project changed."""

    saved = Signal(int)  # how many label maps were written
    failed = Signal(str)

    def __init__(self, project_fn: Callable[[], object | None], interval_ms: int = INTERVAL_MS,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._project_fn = project_fn
        self._last_state: object = None
        self._failing = False
        self.last_time: float | None = None
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.tick)

    def start(self) -> None:
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    def reset(self) -> None:
        """Forget what was autosaved (a project was opened, saved or restored)."""
        self._last_state = None
        self._failing = False

    @staticmethod
    def state_of(project) -> tuple:  # noqa: ANN001
        """A cheap fingerprint of everything autosave writes: documents and their revisions."""
        return tuple((d.uid, d.revision) for d in project.documents)

    def tick(self) -> int:
        """Autosave now if anything changed; returns how many label maps were written."""
        project = self._project_fn()
        if project is None:
            return 0
        if any(d.in_stroke for d in project.documents):
            return 0  # the mouse is still down: wait for the whole stroke
        state = self.state_of(project)
        if state == self._last_state:
            return 0
        if not project.is_dirty():
            self._last_state = state
            return 0
        try:
            n = int(project.autosave())
        except UsgenError as exc:
            if not self._failing:
                self._failing = True
                self.failed.emit(str(exc))
            return 0
        self._failing = False
        self._last_state = state
        self.last_time = time.time()
        self.saved.emit(n)
        return n
