"""The generic long-task worker: signal order, errors as one sentence, cooperative cancel."""

from __future__ import annotations

import threading
import time

import pytest

from usgen_desktop.core.tasks import CancelToken, Progress
from usgen_desktop.errors import Cancelled, ModelError

pytestmark = pytest.mark.gui


def counting_task(n: int, *, progress, cancel: CancelToken, delay: float = 0.0) -> int:
    """A fake long task: n steps, each reporting progress and checking cancel."""
    done = 0
    for i in range(n):
        if cancel.cancelled:
            break
        if delay:
            time.sleep(delay)
        done = i + 1
        progress(Progress(done, n, f"step {done}"))
    return done


def test_progress_then_finished_in_order(qtbot):
    from usgen_desktop.gui.worker import run_task

    seen_threads: list[threading.Thread] = []

    def task(*, progress, cancel):
        seen_threads.append(threading.current_thread())
        return counting_task(1, progress=progress, cancel=cancel)

    handle = run_task(None, task, title="count")
    with qtbot.waitSignals([handle.progress, handle.finished], order="strict", timeout=5000):
        pass
    assert handle.wait(5000)
    assert handle.result == 1 and handle.outcome == "finished"
    assert seen_threads and seen_threads[0] is not threading.main_thread()


def test_started_progress_finished_strict_order(qtbot):
    from usgen_desktop.gui.worker import TaskHandle, TaskWorker

    # strict order means exactly this sequence, so one step gives exactly one progress signal
    handle = TaskHandle(TaskWorker(counting_task, 1, title="count"), "count")
    with qtbot.waitSignals(
        [handle.started, handle.progress, handle.finished], order="strict", timeout=5000
    ) as blocker:
        handle.start()
    assert blocker.signal_triggered
    assert handle.wait(5000) and handle.result == 1


def test_final_progress_is_never_dropped_by_the_throttle(qtbot):
    from usgen_desktop.gui.worker import run_task

    reports: list[Progress] = []
    events: list[str] = []
    handle = run_task(None, counting_task, 2000, title="many", on_progress=reports.append)
    handle.progress.connect(lambda _p: events.append("progress"))
    handle.finished.connect(lambda _v: events.append("finished"))
    with qtbot.waitSignal(handle.finished, timeout=10_000):
        pass
    assert handle.wait(5000)
    qtbot.wait(20)
    assert reports, "no progress at all"
    # 2000 steps in a few ms: the throttle keeps the GUI from seeing thousands of signals...
    assert len(reports) < 200
    # ...but the last report (done == total) always arrives, before finished
    assert reports[-1].done == reports[-1].total == 2000
    assert events[-1] == "finished" and events.count("finished") == 1


def test_usgen_error_fails_with_its_sentence(qtbot):
    from usgen_desktop.gui.worker import run_task

    def broken(*, progress, cancel):
        raise ModelError("The model folder 'x' holds no weights.")

    errors: list[str] = []
    handle = run_task(None, broken, title="load", on_failed=errors.append)
    with qtbot.waitSignal(handle.failed, timeout=5000) as blocker:
        pass
    assert blocker.args == ["The model folder 'x' holds no weights."]
    assert handle.wait(5000)
    assert isinstance(handle.exception, ModelError)


def test_progress_row_shows_the_failure_before_the_message_box(qtbot):
    """The sentence reaches the user (a modal box in the app) only after the progress row has
    ended: behind an open box it used to read "Generating 4 images…" with a busy bar."""
    from usgen_desktop.gui.worker import TaskProgressWidget, run_task

    widget = TaskProgressWidget()
    qtbot.addWidget(widget)
    seen: list[tuple[str, bool]] = []

    def broken(*, progress, cancel):
        raise ModelError("The model folder 'x' holds no weights.")

    def shown(sentence: str) -> None:
        seen.append((widget.message.text(), widget.cancel_button.isEnabled()))

    handle = run_task(None, broken, title="load", on_failed=shown)
    widget.attach(handle, "Generating 4 images…")  # attached after run_task, as panels do
    with qtbot.waitSignal(handle.ended, timeout=5000):
        pass
    assert seen == [("The model folder 'x' holds no weights.", False)]


def test_unexpected_error_is_one_sentence_and_traceback_goes_to_log(qtbot):
    from usgen_desktop.gui.worker import log_file, run_task

    def buggy(*, progress, cancel):
        return {}["missing-key"]

    handle = run_task(None, buggy, title="buggy", on_failed=lambda s: None)
    with qtbot.waitSignal(handle.failed, timeout=5000) as blocker:
        pass
    sentence = blocker.args[0]
    assert sentence.startswith("Unexpected error:")
    assert "Traceback" not in sentence and "\n" not in sentence
    text = log_file().read_text()
    assert "Traceback" in text and "missing-key" in text


def test_out_of_memory_becomes_named_error(qtbot):
    from usgen_desktop.errors import OutOfMemoryError
    from usgen_desktop.gui.worker import run_task

    def oom(*, progress, cancel):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    handle = run_task(None, oom, title="gen", on_failed=lambda s: None)
    with qtbot.waitSignal(handle.failed, timeout=5000) as blocker:
        pass
    assert "ran out of memory" in blocker.args[0]
    assert isinstance(handle.exception, OutOfMemoryError)


def test_cancel_stops_within_one_step_and_thread_ends(qtbot):
    from usgen_desktop.gui.worker import run_task

    steps_run: list[int] = []

    def slow(*, progress, cancel):
        for i in range(1000):
            cancel.raise_if_cancelled()
            time.sleep(0.02)
            steps_run.append(i)
            progress(Progress(i + 1, 1000))
        return "never"

    handle = run_task(None, slow, title="slow")
    with qtbot.waitSignal(handle.progress, timeout=5000):
        pass
    handle.cancel()
    n_at_cancel = len(steps_run)
    with qtbot.waitSignal(handle.cancelled, timeout=5000):
        pass
    assert handle.wait(5000)
    assert handle.thread.isFinished()
    assert handle.outcome == "cancelled"
    assert len(steps_run) <= n_at_cancel + 1  # stopped within one step
    qtbot.waitUntil(lambda: not handle.running, timeout=2000)


def test_cancel_keeps_what_was_finished(qtbot):
    from usgen_desktop.gui.worker import run_task

    def batch(*, progress, cancel):
        kept = []
        for i in range(500):
            if cancel.cancelled:
                break
            time.sleep(0.01)
            kept.append(i)
            progress(Progress(i + 1, 500))
        return kept

    handle = run_task(None, batch, title="batch")
    qtbot.waitUntil(lambda: handle.progress is not None and handle.running, timeout=2000)
    with qtbot.waitSignal(handle.progress, timeout=5000):
        pass
    handle.cancel()
    with qtbot.waitSignal(handle.cancelled, timeout=5000) as blocker:
        pass
    kept = blocker.args[0]
    assert isinstance(kept, list) and 0 < len(kept) < 500


def test_raised_cancelled_reports_cancelled(qtbot):
    from usgen_desktop.gui.worker import run_task

    def stops(*, progress, cancel):
        raise Cancelled("stopped")

    handle = run_task(None, stops, title="x")
    with qtbot.waitSignal(handle.cancelled, timeout=5000):
        pass
    assert handle.wait(5000)


def test_preview_is_sent_and_stripped_from_progress(qtbot):
    import numpy as np

    from usgen_desktop.gui.worker import run_task

    def denoise(*, progress, cancel):
        for i in range(3):
            progress(Progress(i + 1, 3, "denoising", np.full((8, 8), i, np.uint8)))
        return None

    previews: list = []
    reports: list[Progress] = []
    handle = run_task(None, denoise, on_preview=previews.append, on_progress=reports.append)
    with qtbot.waitSignal(handle.finished, timeout=5000):
        pass
    assert previews and previews[-1].shape == (8, 8) and int(previews[-1][0, 0]) == 2
    assert all(p.preview is None for p in reports)


def test_progress_widget_shows_eta_and_cancels(qtbot):
    from usgen_desktop.gui.worker import TaskProgressWidget, run_task

    widget = TaskProgressWidget()
    qtbot.addWidget(widget)
    handle = run_task(None, counting_task, 400, title="w", delay=0.01)
    widget.attach(handle)
    qtbot.waitUntil(lambda: widget.bar.value() >= 20, timeout=5000)
    assert widget.bar.maximum() == 400
    qtbot.waitUntil(lambda: widget.eta_label.text().endswith("left"), timeout=5000)
    qtbot.mouseClick(widget.cancel_button, __import__("PySide6.QtCore").QtCore.Qt.LeftButton)
    with qtbot.waitSignal(handle.cancelled, timeout=5000):
        pass
    assert handle.wait(5000)
    assert "Cancelled" in widget.message.text()


def test_progress_widget_ends_full_with_done_and_stays(qtbot):
    """A finished task leaves a full bar above "Done." (a later reset showed "0 %" there)."""
    from usgen_desktop.gui.worker import TaskProgressWidget, run_task

    widget = TaskProgressWidget()
    qtbot.addWidget(widget)
    handle = run_task(None, counting_task, 5, title="w")
    widget.attach(handle)
    with qtbot.waitSignal(handle.finished, timeout=5000):
        pass
    qtbot.waitUntil(lambda: widget.message.text() == "Done.", timeout=2000)
    assert widget.bar.maximum() > 0 and widget.bar.value() == widget.bar.maximum()
    assert not widget.cancel_button.isEnabled()


def test_a_long_failure_sentence_wraps_instead_of_widening_the_panel(qtbot):
    """Seen under Xvfb: the sector refusal, one long sentence, pushed the Generate dock past
    the window's right edge."""
    from usgen_desktop.gui.worker import TaskProgressWidget

    widget = TaskProgressWidget()
    qtbot.addWidget(widget)
    widget._end("'000_HC' has no 'sector' region, and this sdm model draws everything outside "
                "it as black; detect the probe's fan first (Tools > Detect sector, then Apply "
                "sector to labels; or `usgen sector detect --labels-out`), or use the speckle "
                "backend.")
    # the label's minimum width is what the dock's layout must honour (2,129 px unwrapped)
    assert widget.message.minimumSizeHint().width() < 400


def test_eta_estimator_and_format():
    from usgen_desktop.gui.worker import EtaEstimator, format_eta

    eta = EtaEstimator()
    assert eta.update(0, 100, now=0.0) is None
    assert eta.update(10, 100, now=1.0) == pytest.approx(9.0)
    assert format_eta(9.0) == "9 s left"
    assert format_eta(125) == "2 min 05 s left"
    assert format_eta(3725) == "1 h 02 min left"
    assert format_eta(None) == ""


def test_shutdown_all_cancels_running_tasks(qtbot):
    from usgen_desktop.gui.worker import active_tasks, run_task, shutdown_all

    handle = run_task(None, counting_task, 10_000, title="long", delay=0.01)
    with qtbot.waitSignal(handle.progress, timeout=5000):
        pass
    assert handle in active_tasks()
    assert shutdown_all(5000)
    assert handle.thread.isFinished()


def test_items_stream_before_finished(qtbot):
    from usgen_desktop.gui.worker import run_task

    def batch(n, *, progress, cancel, on_result):
        for i in range(n):
            on_result(i * 10)
            progress(Progress(i + 1, n))
        return n

    events: list = []
    handle = run_task(None, batch, 3, item_kwarg="on_result", on_item=events.append)
    handle.finished.connect(lambda v: events.append(("finished", v)))
    with qtbot.waitSignal(handle.finished, timeout=5000):
        pass
    assert events == [0, 10, 20, ("finished", 3)]


def test_unknown_total_is_throttled_too(qtbot):
    from usgen_desktop.gui.worker import run_task

    def busy(*, progress, cancel):
        for i in range(3000):
            progress(Progress(i, 0, "scanning"))  # total unknown
        return None

    reports: list[Progress] = []
    handle = run_task(None, busy, on_progress=reports.append)
    with qtbot.waitSignal(handle.finished, timeout=5000):
        pass
    assert 1 <= len(reports) < 300
