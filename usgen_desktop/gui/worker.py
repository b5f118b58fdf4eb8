"""One worker for every long task (generate, train, export, variants, evaluate).

A long task is a plain function ``fn(*args, progress=..., cancel=..., **kwargs)`` (see
``core/tasks.py``). :class:`TaskWorker` runs it in a ``QThread`` and reports back only through
signals, so no widget is ever touched from the worker thread (the superqt pattern:
``thread.started -> run``; when the task ends ``thread.quit`` and ``deleteLater``).

Typical use from a panel::

    handle = run_task(self, generate_fn, request, title="Generate", on_done=self._show)
    self.progress_widget.attach(handle)   # bar, ETA, message, Cancel button

Cancel is cooperative: ``handle.cancel()`` sets the task's :class:`CancelToken`, the task
checks it between steps and returns (or raises ``Cancelled``) keeping what it finished.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from usgen_desktop.core.tasks import CancelToken, Progress
from usgen_desktop.errors import Cancelled, OutOfMemoryError, UsgenError

log = logging.getLogger(__name__)

# A progress signal at most every 50 ms (<= 20/s) and a preview image at most every 100 ms:
# a sampler can step hundreds of times a second and each queued signal costs the GUI a repaint.
PROGRESS_INTERVAL_S = 0.05
PREVIEW_INTERVAL_S = 0.10

# A task's pure-Python code holds the GIL for up to the interpreter's switch interval (5 ms by
# default) before the GUI thread may run; at 1 ms the GUI's worst stall during a generation fell
# from ~7 to ~4 ms at equal throughput on a machine that was not oversubscribed
# (docs/bench/gui_stall.md).
GIL_SWITCH_INTERVAL_S = 0.001

OOM_SENTENCE = (
    "The device ran out of memory; try fewer images at once, a smaller size, or the CPU."
)


def log_file() -> Path:
    """Where unexpected errors' tracebacks go (never shown to the user as a dialog)."""
    from usgen_desktop.paths import user_data_dir

    return user_data_dir() / "logs" / "usgen.log"


def _log_traceback(title: str, exc: BaseException) -> Path | None:
    path = log_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {title} ===\n")
            fh.write("".join(traceback.format_exception(exc)))
        return path
    except OSError:  # a read-only home must not turn one error into two
        log.exception("could not write the error log")
        return None


def _is_out_of_memory(exc: BaseException) -> bool:
    # torch.cuda.OutOfMemoryError subclasses RuntimeError; MPS and CPU allocators raise a
    # plain RuntimeError whose text says so. Checked by name so this module never imports torch.
    if type(exc).__name__ == "OutOfMemoryError" or isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def error_sentence(title: str, exc: BaseException) -> tuple[str, BaseException]:
    """The one sentence a user sees for ``exc`` and the (possibly translated) error.

    A ``UsgenError`` is the user's to fix and speaks for itself; running out of memory becomes
    an :class:`OutOfMemoryError`; anything else is a bug: its traceback goes to the log file.
    """
    if isinstance(exc, UsgenError):
        return str(exc), exc
    if _is_out_of_memory(exc):
        oom = OutOfMemoryError(OOM_SENTENCE)
        return str(oom), oom
    path = _log_traceback(title, exc)
    where = f" (details in {path})" if path else ""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"Unexpected error: {text}{where}.", exc


class TaskWorker(QObject):
    """Runs ``fn(*args, progress=..., cancel=..., **kwargs)`` once, in whatever thread it
    lives in, and reports through signals (all delivered queued to the GUI thread).

    Exactly one of ``finished`` (the return value), ``failed`` (one sentence) or ``cancelled``
    (what was finished: the return value, or None when the task raised ``Cancelled``) is
    emitted, always after the last ``progress``; ``ended`` follows it for bookkeeping.
    With ``item_kwarg`` the task gets a callback under that name whose every call emits
    ``item`` (finished pieces of a batch, delivered before ``finished``).
    ``error`` carries the exception object just before ``failed`` so a caller can offer a
    fallback (e.g. retry on the CPU after an :class:`OutOfMemoryError`).
    """

    started = Signal()
    progress = Signal(object)
    preview = Signal(object)
    finished = Signal(object)
    failed = Signal(str)
    error = Signal(object)
    cancelled = Signal(object)
    item = Signal(object)
    ended = Signal()

    def __init__(
        self,
        fn: Callable[..., Any],
        *args: Any,
        title: str = "task",
        token: CancelToken | None = None,
        item_kwarg: str | None = None,
        progress_interval: float = PROGRESS_INTERVAL_S,
        preview_interval: float = PREVIEW_INTERVAL_S,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        if item_kwarg:
            # the task hands over each finished item (e.g. ``run(..., on_result=)``) as it goes,
            # so results stream into the GUI instead of arriving all at the end
            self.kwargs[item_kwarg] = self.item.emit
        self.title = title
        self.token = token or CancelToken()
        self._progress_interval = progress_interval
        self._preview_interval = preview_interval
        self._last_progress_t = -1e9
        self._last_preview_t = -1e9
        self._pending: Progress | None = None
        self._pending_preview: Any = None

    # -- called from the worker thread --------------------------------------------------
    def _on_progress(self, p: Progress) -> None:
        """The task's progress callback: throttled, and a preview image split off."""
        now = time.monotonic()
        if p.preview is not None:
            self._pending_preview = p.preview
            if now - self._last_preview_t >= self._preview_interval:
                self._last_preview_t = now
                self.preview.emit(self._pending_preview)
                self._pending_preview = None
            p = Progress(p.done, p.total, p.message)  # don't ship big arrays twice
        self._pending = p
        # the first and the final report always go out, the rest at most every interval
        last = p.total > 0 and p.done >= p.total
        if last or now - self._last_progress_t >= self._progress_interval:
            self._flush()
            self._last_progress_t = now

    def _flush(self) -> None:
        if self._pending is not None:
            self.progress.emit(self._pending)
            self._pending = None

    @Slot()
    def run(self) -> None:
        """Run the task to its end; never lets an exception escape into Qt."""
        self.started.emit()
        try:
            value = self.fn(*self.args, progress=self._on_progress, cancel=self.token,
                            **self.kwargs)
        except Cancelled:
            self._flush_all()
            self.cancelled.emit(None)
        except BaseException as exc:  # noqa: BLE001 - every error becomes one sentence
            self._flush_all()
            sentence, err = error_sentence(self.title, exc)
            self.error.emit(err)
            self.failed.emit(sentence)
        else:
            self._flush_all()
            if self.token.cancelled:
                self.cancelled.emit(value)
            else:
                self.finished.emit(value)
        finally:
            self.ended.emit()

    def _flush_all(self) -> None:
        # the last preview matters most (it is the finished image); send what was held back
        if self._pending_preview is not None:
            self.preview.emit(self._pending_preview)
            self._pending_preview = None
        self._flush()

    def cancel(self) -> None:
        """Ask the task to stop at its next check (thread-safe)."""
        self.token.cancel()


_ACTIVE: set[TaskHandle] = set()  # keeps running threads alive until they end


class TaskHandle(QObject):
    """A running task: its worker, thread and cancel token. Signals mirror the worker's and
    are re-emitted from the GUI thread, so connecting to a handle is always safe (connecting
    a plain function to the worker's own signals would run it in the worker thread)."""

    started = Signal()
    progress = Signal(object)
    preview = Signal(object)
    finished = Signal(object)
    failed = Signal(str)
    # the same sentence, after every slot of ``failed`` has run: run_task shows it to the user
    # here, because a modal box would otherwise hold back the progress row's own "failed" state
    report = Signal(str)
    error = Signal(object)
    cancelled = Signal(object)
    item = Signal(object)
    ended = Signal()

    def __init__(self, worker: TaskWorker, title: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.worker = worker
        self.token = worker.token
        self.thread = QThread()
        self.thread.setObjectName(f"usgen-{title}")
        self.started_at = time.monotonic()
        self.outcome: str | None = None  # "finished" | "failed" | "cancelled"
        self.result: Any = None
        self.exception: BaseException | None = None
        self._running = False
        worker.moveToThread(self.thread)
        # Relay: the handle lives in the GUI thread, so these are queued connections.
        worker.started.connect(self.started)
        worker.progress.connect(self.progress)
        worker.preview.connect(self.preview)
        worker.item.connect(self.item)
        worker.finished.connect(self._on_finished)
        worker.failed.connect(self._on_failed)
        worker.error.connect(self._on_error)
        worker.cancelled.connect(self._on_cancelled)
        self.thread.started.connect(worker.run)
        # Direct: quit must not wait for the GUI loop, which may itself be blocked in wait().
        worker.ended.connect(self.thread.quit, Qt.ConnectionType.DirectConnection)
        worker.ended.connect(worker.deleteLater)
        self.thread.finished.connect(self._on_thread_finished)

    def start(self) -> TaskHandle:
        if sys.getswitchinterval() > GIL_SWITCH_INTERVAL_S:
            sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        _ACTIVE.add(self)
        self._running = True
        self.started_at = time.monotonic()
        self.thread.start()
        return self

    # -- state --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._running

    def cancel(self) -> None:
        self.token.cancel()

    def wait(self, msecs: int = 30_000) -> bool:
        """Block until the thread has ended (for tests and shutdown); True if it did."""
        return bool(self.thread.wait(msecs))

    # -- relays (GUI thread) ------------------------------------------------------------
    def _on_finished(self, value: object) -> None:
        self.outcome, self.result = "finished", value
        self.finished.emit(value)

    def _on_error(self, exc: object) -> None:
        self.exception = exc if isinstance(exc, BaseException) else None
        self.error.emit(exc)

    def _on_failed(self, sentence: str) -> None:
        self.outcome = "failed"
        self.failed.emit(sentence)
        self.report.emit(sentence)

    def _on_cancelled(self, value: object) -> None:
        self.outcome, self.result = "cancelled", value
        self.cancelled.emit(value)

    def _on_thread_finished(self) -> None:
        # finished is emitted from the ending thread; wait() returns at once and makes sure it
        # has really stopped before Python may drop the last reference to the QThread.
        self.thread.wait()
        self._running = False
        _ACTIVE.discard(self)
        self.ended.emit()


def run_task(
    parent: QObject | None,
    fn: Callable[..., Any],
    *args: Any,
    title: str = "task",
    on_done: Callable[[Any], None] | None = None,
    on_failed: Callable[[str], None] | None = None,
    on_cancelled: Callable[[Any], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_preview: Callable[[Any], None] | None = None,
    on_item: Callable[[Any], None] | None = None,
    item_kwarg: str | None = None,
    **kwargs: Any,
) -> TaskHandle:
    """Start ``fn(*args, progress=, cancel=, **kwargs)`` in a worker thread; return its handle.

    Without ``on_failed`` the sentence goes to ``parent.show_error`` (the main window's), or
    to a warning box. ``item_kwarg`` names the task's per-item callback argument (e.g.
    ``"on_result"`` for ``synthesis.request.run``); each item reaches ``on_item``. Callbacks
    run in the GUI thread.
    """
    worker = TaskWorker(fn, *args, title=title, item_kwarg=item_kwarg, **kwargs)
    handle = TaskHandle(worker, title)
    if on_item is not None:
        handle.item.connect(on_item)
    if on_done is not None:
        handle.finished.connect(on_done)
    if on_cancelled is not None:
        handle.cancelled.connect(on_cancelled)
    if on_progress is not None:
        handle.progress.connect(on_progress)
    if on_preview is not None:
        handle.preview.connect(on_preview)
    handle.report.connect(on_failed if on_failed is not None else _default_error_sink(parent, title))
    return handle.start()


def report_error(target: object, title: str, sentence: str) -> None:
    """``target.show_error`` when it has one (the main window; tests record there), else a
    warning box over ``target`` when it is a widget."""
    show_error = getattr(target, "show_error", None)
    if callable(show_error):
        show_error(sentence)
        return
    widget = target if isinstance(target, QWidget) else None
    QMessageBox.warning(widget, title, sentence)


def _default_error_sink(parent: QObject | None, title: str) -> Callable[[str], None]:
    ref = weakref.ref(parent) if parent is not None else None

    def show(sentence: str) -> None:
        report_error(ref() if ref is not None else None, title.capitalize(), sentence)

    return show


def active_tasks() -> list[TaskHandle]:
    return [h for h in _ACTIVE if h.running]


def shutdown_all(timeout_ms: int = 5000) -> bool:
    """Cancel every running task and wait for the threads (call when the app quits)."""
    handles = list(_ACTIVE)
    for h in handles:
        h.cancel()
    ok = True
    for h in handles:
        ok = h.wait(timeout_ms) and ok
    return ok


def format_eta(seconds: float | None) -> str:
    """``'12 s left'``, ``'3 min 05 s left'``, ``'1 h 02 min left'``, or '' when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return ""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s left"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s left"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min left"


class EtaEstimator:
    """Remaining time from the rate since the first report (which excludes model loading)."""

    def __init__(self) -> None:
        self._t0: float | None = None
        self._done0 = 0

    def reset(self) -> None:
        self._t0 = None
        self._done0 = 0

    def update(self, done: int, total: int, now: float | None = None) -> float | None:
        now = time.monotonic() if now is None else now
        if self._t0 is None or done < self._done0:
            self._t0, self._done0 = now, done
            return None
        units = done - self._done0
        if units <= 0 or total <= 0:
            return None
        rate = units / max(1e-9, now - self._t0)
        return max(0.0, (total - done) / rate)


class TaskProgressWidget(QWidget):
    """Progress bar, message, ETA and a Cancel button for one task at a time."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._handle: TaskHandle | None = None
        self._eta = EtaEstimator()
        self.bar = QProgressBar()
        self.bar.setTextVisible(True)
        self.message = QLabel("")
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # a failure sentence can be long: wrap it, or the label widens its dock past the window
        self.message.setWordWrap(True)
        self.eta_label = QLabel("")
        self.eta_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop after the current step; finished results are kept (Esc)")
        self.cancel_button.clicked.connect(self.cancel)
        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.addWidget(self.bar, 1)
        top.addWidget(self.cancel_button)
        bottom = QHBoxLayout()
        bottom.setContentsMargins(0, 0, 0, 0)
        bottom.addWidget(self.message, 1)
        bottom.addWidget(self.eta_label)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addLayout(top)
        lay.addLayout(bottom)
        self._idle()

    @property
    def handle(self) -> TaskHandle | None:
        return self._handle

    def attach(self, handle: TaskHandle, message: str = "Starting…") -> None:
        """Follow ``handle`` until it ends."""
        self._handle = handle
        self._eta.reset()
        self.bar.setRange(0, 0)  # busy until the first report (model loading)
        self.message.setText(message)
        self.eta_label.setText("")
        self.cancel_button.setEnabled(True)
        self.cancel_button.setText("Cancel")
        # bound methods, not lambdas: Qt drops them by itself if this widget is destroyed
        # while the task still runs (a closed window), instead of calling into a dead widget
        handle.progress.connect(self._on_progress)
        handle.finished.connect(self._on_finished)
        handle.cancelled.connect(self._on_cancelled)
        handle.failed.connect(self._end)
        self.setVisible(True)

    def _on_finished(self, _value: object) -> None:
        self._end("Done.")

    def _on_cancelled(self, _value: object) -> None:
        self._end("Cancelled; finished results were kept.")
        # an empty bar: "51 %" beside "Cancelled" read as if half of it were still to come
        self.bar.setValue(0)

    def clear(self) -> None:
        """Back to the empty state (a new project: the last task's "Done." is not its)."""
        if self._handle is not None and self._handle.running:
            return
        self._handle = None
        self.message.setText("")
        self._idle()

    def cancel(self) -> None:
        if self._handle is not None and self._handle.running:
            self._handle.cancel()
            self.cancel_button.setEnabled(False)
            self.cancel_button.setText("Stopping…")

    def _on_progress(self, p: Progress) -> None:
        if p.total > 0:
            if self.bar.maximum() != p.total:
                self.bar.setRange(0, p.total)
            self.bar.setValue(min(p.done, p.total))
        if p.message:
            self.message.setText(p.message)
        self.eta_label.setText(format_eta(self._eta.update(p.done, p.total)))

    def _end(self, text: str) -> None:
        if self.bar.maximum() == 0:
            self.bar.setRange(0, 1)
        if text == "Done.":
            self.bar.setValue(self.bar.maximum())
        self.message.setText(text)
        self.eta_label.setText("")
        self.cancel_button.setEnabled(False)
        self.cancel_button.setText("Cancel")
        self._handle = None
        # the bar and message stay as they ended (a full bar and "Done.") until the next task:
        # resetting the bar a few seconds later left "0 %" above "Done."

    def _idle(self) -> None:
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.cancel_button.setEnabled(False)
        self.eta_label.setText("")
