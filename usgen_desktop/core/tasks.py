"""Progress callbacks and cooperative cancellation shared by every long task.

Every long task (export, deform batch, generate, train, evaluate) is a plain function taking
``progress`` and ``cancel``; the GUI worker and the CLI both drive it through these.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from usgen_desktop.errors import Cancelled


@dataclass(frozen=True)
class Progress:
    """One progress report: ``done`` of ``total`` units, a short message, an optional preview."""

    done: int
    total: int
    message: str = ""
    preview: Any = None  # e.g. a uint8 numpy image of the sample as it denoises

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, self.done / self.total)


ProgressFn = Callable[[Progress], None]


def no_progress(_: Progress) -> None:
    """A progress callback that ignores every report."""


class CancelToken:
    """A thread-safe flag a long task checks between steps; ``raise_if_cancelled`` stops it."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("Cancelled by the user; finished items were kept.")
