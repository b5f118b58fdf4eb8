"""A small live loss curve painted with QPainter (no plotting library in the app).

Raw losses are noisy, so the widget draws them faint and a running average over them strong.
With many more points than pixels it bins them per pixel column (min/max band for the raw
values, mean for the line), so a 100,000-step run repaints as fast as a 100-step one.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPen, QPolygonF
from PySide6.QtWidgets import QSizePolicy, QWidget


class LossHistory:
    """(step, loss) points appended from the worker thread and read by the GUI thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._steps: list[int] = []
        self._losses: list[float] = []

    def append(self, step: int, loss: float) -> None:
        with self._lock:
            self._steps.append(int(step))
            self._losses.append(float(loss))

    def extend(self, steps: list[int], losses: list[float]) -> None:
        with self._lock:
            self._steps.extend(int(s) for s in steps)
            self._losses.extend(float(v) for v in losses)

    def clear(self) -> None:
        with self._lock:
            self._steps.clear()
            self._losses.clear()

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            return np.asarray(self._steps, np.float64), np.asarray(self._losses, np.float64)

    def __len__(self) -> int:
        return len(self._losses)


def smooth(values: np.ndarray, weight: float = 0.9) -> np.ndarray:
    """Bias-corrected exponential moving average (what TensorBoard's smoothing slider does)."""
    values = np.asarray(values, np.float64)
    if len(values) == 0:
        return values
    from scipy.signal import lfilter  # a C loop: 100,000 points in about a millisecond

    acc = lfilter([1 - weight], [1, -weight], values)
    return acc / (1 - weight ** np.arange(1, len(values) + 1))


class LossPlot(QWidget):
    """The loss curve of a training run; ``log_y`` plots the loss on a log scale."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.history = LossHistory()
        self.log_y = True
        self.smoothing = 0.9
        self.setMinimumSize(200, 120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self._cache_n = -1
        self._cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(320, 180)

    def set_log_y(self, on: bool) -> None:
        self.log_y = bool(on)
        self.update()

    def set_points(self, steps: Any, losses: Any) -> None:
        self.history.clear()
        self.history.extend(list(steps), list(losses))
        self.refresh()

    def clear(self) -> None:
        self.history.clear()
        self.refresh()

    def refresh(self) -> None:
        """Repaint if new points arrived (call from a progress signal or a timer)."""
        if len(self.history) != self._cache_n:
            self.update()

    def _data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(self.history)
        if self._cache is None or n != self._cache_n:
            steps, losses = self.history.snapshot()
            ok = np.isfinite(losses)
            steps, losses = steps[ok], losses[ok]
            self._cache = (steps, losses, smooth(losses, self.smoothing) if len(losses) else losses)
            self._cache_n = n
        return self._cache

    # -- painting -------------------------------------------------------------------------
    def paintEvent(self, _event: Any) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        p.fillRect(self.rect(), pal.base())
        fm = p.fontMetrics()
        text_color = pal.text().color()
        left = fm.horizontalAdvance("0.000e-00") + 6
        plot = QRectF(left, 6, max(10, self.width() - left - 8),
                      max(10, self.height() - fm.height() - 14))
        grid = QColor(text_color)
        grid.setAlpha(50)
        p.setPen(QPen(grid, 1))
        p.drawRect(plot)
        steps, losses, smoothed = self._data()
        if len(losses) == 0:
            p.setPen(text_color)
            p.drawText(plot, Qt.AlignmentFlag.AlignCenter, "The loss curve appears here")
            return
        ys_raw = self._y(losses)
        ys_smooth = self._y(smoothed)
        lo = float(np.nanmin(ys_raw))
        hi = float(np.nanmax(ys_raw))
        if not math.isfinite(lo) or not math.isfinite(hi):
            return
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5, hi + 0.5
        pad = (hi - lo) * 0.05
        lo, hi = lo - pad, hi + pad
        x0, x1 = float(steps[0]), float(steps[-1])
        if x1 <= x0:
            x1 = x0 + 1.0

        def px(s: np.ndarray) -> np.ndarray:
            return plot.left() + (s - x0) / (x1 - x0) * plot.width()

        def py(v: np.ndarray) -> np.ndarray:
            return plot.bottom() - (v - lo) / (hi - lo) * plot.height()

        # horizontal grid lines with their loss values
        p.setPen(QPen(grid, 1, Qt.PenStyle.DotLine))
        for k in range(1, 4):
            y = plot.top() + plot.height() * k / 4
            p.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
        p.setPen(text_color)
        ticks = [hi - (hi - lo) * k / 4 for k in range(5)]
        labels = tick_labels([10**v if self.log_y else v for v in ticks])
        for k, label in enumerate(labels):
            y = plot.top() + plot.height() * k / 4
            p.drawText(QRectF(0, y - fm.height() / 2, left - 4, fm.height()),
                       Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, label)
        p.drawText(QRectF(plot.left(), plot.bottom() + 2, plot.width(), fm.height()),
                   Qt.AlignmentFlag.AlignLeft, f"step {int(x0)}")
        p.drawText(QRectF(plot.left(), plot.bottom() + 2, plot.width(), fm.height()),
                   Qt.AlignmentFlag.AlignRight, f"{int(x1)}")
        p.drawText(QRectF(plot.left(), plot.bottom() + 2, plot.width(), fm.height()),
                   Qt.AlignmentFlag.AlignHCenter,
                   f"loss {self._fmt(float(smoothed[-1]))}" + (" (log)" if self.log_y else ""))

        p.setClipRect(plot)
        raw_color = QColor(pal.highlight().color())
        raw_color.setAlpha(70)
        xs = px(steps)
        cols = int(plot.width())
        if len(xs) > 2 * cols:
            # bin per pixel column: a band from min to max raw, and the mean of the smooth line
            bins = np.clip((xs - plot.left()).astype(int), 0, cols - 1)
            order = np.argsort(bins, kind="stable")
            b_sorted = bins[order]
            starts = np.flatnonzero(np.r_[True, b_sorted[1:] != b_sorted[:-1]])
            ymin = np.minimum.reduceat(ys_raw[order], starts)
            ymax = np.maximum.reduceat(ys_raw[order], starts)
            ymean = np.add.reduceat(ys_smooth[order], starts) / np.diff(np.r_[starts, len(order)])
            bx = b_sorted[starts] + plot.left()
            band = QPainterPath()
            band.moveTo(bx[0], py(ymax[:1])[0])
            for x, y in zip(bx, py(ymax), strict=True):
                band.lineTo(x, y)
            for x, y in zip(bx[::-1], py(ymin)[::-1], strict=True):
                band.lineTo(x, y)
            band.closeSubpath()
            p.fillPath(band, raw_color)
            line_x, line_y = bx, py(ymean)
        else:
            p.setPen(QPen(raw_color, 1))
            p.drawPolyline(_poly(xs, py(ys_raw)))
            line_x, line_y = xs, py(ys_smooth)
        p.setPen(QPen(pal.highlight().color(), 2))
        p.drawPolyline(_poly(line_x, line_y))

    def _y(self, v: np.ndarray) -> np.ndarray:
        if not self.log_y:
            return v
        return np.log10(np.maximum(v, 1e-12))

    @staticmethod
    def _fmt(v: float, digits: int = 3) -> str:
        if v == 0 or 1e-2 <= abs(v) < 1e4:
            return f"{v:.{digits}g}"
        return f"{v:.{digits - 1}e}"


def tick_labels(values: list[float]) -> list[str]:
    """Labels with just enough digits that neighbouring ticks read differently (a flat loss
    curve spans 0.7711 to 0.7719, which three digits would print five times as 0.771)."""
    for digits in range(3, 8):
        labels = [LossPlot._fmt(v, digits) for v in values]
        if len(set(labels)) == len(labels):
            return labels
    return labels


def _poly(xs: np.ndarray, ys: np.ndarray) -> QPolygonF:
    return QPolygonF([QPointF(float(x), float(y)) for x, y in zip(xs, ys, strict=True)])
