"""The Qt binding itself: a PySide6 that breaks Python's reference counts would crash the editor.

PySide6 6.12.0 released one reference to ``True`` on every signal delivered to a Python slot;
on Python 3.11 the app then died with "bool_dealloc" after a few hundred to a few thousand
signals (a minute of moving the mouse over the canvas). pyproject excludes that release.
"""

from __future__ import annotations

import gc
import sys

import pytest
from PySide6.QtCore import QObject, Signal

pytestmark = pytest.mark.gui


class _Emitter(QObject):
    plain = Signal()
    value = Signal(object)


def test_signal_delivery_keeps_reference_counts(qtbot):
    em = _Emitter()
    got = []
    em.plain.connect(lambda: got.append(1))
    em.value.connect(got.append)
    # Garbage left by earlier tests (a window's dicts hold True) freed by a collection in the
    # middle of the loop lowers the count too: collect first, and not during the loop.
    gc.collect()
    gc.disable()
    try:
        before_true, before_false = sys.getrefcount(True), sys.getrefcount(False)
        for i in range(100):  # few enough not to crash a broken binding, enough to show a leak
            em.plain.emit()
            em.value.emit((i, i))
    finally:
        gc.enable()
    assert len(got) == 200
    assert sys.getrefcount(True) - before_true >= 0, "the Qt binding releases True per signal"
    assert sys.getrefcount(False) - before_false >= 0
