"""Undo/redo as bounded stroke atoms: the changed box, its old and new values.

Memory is proportional to the pixels a stroke changed, not to the image: an atom keeps only
the bounding box of the change, and within it the old and new values (napari's labels undo).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StrokeAtom:
    """One undoable edit: box ``(y0, y1, x0, x1)`` with the values before and after it."""

    box: tuple[int, int, int, int]
    before: np.ndarray
    after: np.ndarray
    label: str = "edit"

    @property
    def nbytes(self) -> int:
        return self.before.nbytes + self.after.nbytes


class History:
    """A bounded undo stack of stroke atoms; a new edit clears the redo stack."""

    def __init__(self, max_steps: int = 200) -> None:
        self.max_steps = max_steps
        self._undo: deque[StrokeAtom] = deque(maxlen=max_steps)
        self._redo: list[StrokeAtom] = []

    def push(self, atom: StrokeAtom) -> None:
        self._undo.append(atom)
        self._redo.clear()

    def can_undo(self) -> bool:
        return bool(self._undo)

    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo(self, data: np.ndarray) -> StrokeAtom | None:
        if not self._undo:
            return None
        atom = self._undo.pop()
        y0, y1, x0, x1 = atom.box
        data[y0:y1, x0:x1] = atom.before
        self._redo.append(atom)
        return atom

    def redo(self, data: np.ndarray) -> StrokeAtom | None:
        if not self._redo:
            return None
        atom = self._redo.pop()
        y0, y1, x0, x1 = atom.box
        data[y0:y1, x0:x1] = atom.after
        self._undo.append(atom)
        return atom

    def clear(self) -> None:
        self._undo.clear()
        self._redo.clear()

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._undo) + sum(a.nbytes for a in self._redo)

    def __len__(self) -> int:
        return len(self._undo)


def make_atom(before_full: np.ndarray, after_full: np.ndarray, label: str) -> StrokeAtom | None:
    """The atom for a change between two full arrays, cropped to the changed box (None if equal)."""
    diff = before_full != after_full
    if not diff.any():
        return None
    rows = np.flatnonzero(diff.any(axis=1))
    cols = np.flatnonzero(diff.any(axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    return StrokeAtom(
        (y0, y1, x0, x1),
        before_full[y0:y1, x0:x1].copy(),
        after_full[y0:y1, x0:x1].copy(),
        label,
    )
