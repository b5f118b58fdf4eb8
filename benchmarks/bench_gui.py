"""GUI speed: start-up to window shown, and the cost of one brush mouse-move (with repaint).

Run: ``.venv/bin/python benchmarks/bench_gui.py [--quick]`` (offscreen Qt, no display needed).

* Start-up: ``python -m usgen_desktop --project P --exit-after-show`` in a subprocess, wall
  time from spawn to exit (median of N), against a reference measured in the same run: a
  bare QApplication + QMainWindow shown and closed.
* Brush: a 20 px brush dragged across a 1024x1024 and a 4096x4096 image; each mouse-move
  event is sent to the canvas and the resulting repaint processed before the clock stops.
  Reference in the same run: the same stroke with a "naive" canvas that re-colours the whole
  overlay and repaints the whole widget on every event.
* BUSI import (when ``../shared/data/busi`` exists): the whole folder through the GUI's import,
  then the first autosave and a save.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
_TMP = tempfile.mkdtemp(prefix="usgen_bench_gui_")
os.environ["USGEN_DATA_DIR"] = str(Path(_TMP) / "data")
os.environ["USGEN_CONFIG_DIR"] = str(Path(_TMP) / "config")

import numpy as np  # noqa: E402

REFERENCE_STARTUP = """
import time; t0 = time.perf_counter()
from PySide6.QtWidgets import QApplication, QMainWindow
app = QApplication([]); w = QMainWindow(); w.resize(1280, 820); w.show(); app.processEvents()
w.close()
"""


def make_project(folder: Path, n: int = 20, size: int = 320):
    from usgen_desktop.core.document import Document
    from usgen_desktop.core.image import UltrasoundImage
    from usgen_desktop.core.labels import LabelMap, load_preset
    from usgen_desktop.io.project import Project

    schema = load_preset("busi")
    project = Project.create(folder, schema, name="bench")
    rng = np.random.default_rng(0)
    docs = []
    for i in range(n):
        img = np.clip(rng.rayleigh(60, (size, size)), 0, 255).astype(np.uint8)
        lab = np.zeros((size, size), np.uint8)
        lab[size // 3: size // 2, size // 3: size // 2] = 1
        docs.append(Document(LabelMap(lab), schema, UltrasoundImage(img), name=f"case{i}"))
    project.add(docs)
    project.save()
    return project


def bench_startup(runs: int) -> dict[str, float]:
    proj = Path(_TMP) / "startup_project"
    make_project(proj)
    env = dict(os.environ)
    env["QT_QPA_PLATFORM"] = "offscreen"
    app_t, ref_t = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "usgen_desktop", "--project", str(proj),
                        "--exit-after-show"], check=True, env=env, cwd=REPO,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        app_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", REFERENCE_STARTUP], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ref_t.append(time.perf_counter() - t0)
    return {"app_s": statistics.median(app_t), "ref_s": statistics.median(ref_t),
            "app_worst_s": max(app_t)}


def bench_brush(size: int, moves: int, naive: bool = False, zoom: float | None = None
                ) -> dict[str, float]:
    """Median and worst ms per brush mouse-move (event + repaint) on a size x size image."""
    from PySide6.QtCore import QEvent, QPointF, Qt
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    from usgen_desktop.core.document import Document
    from usgen_desktop.core.image import UltrasoundImage
    from usgen_desktop.core.labels import LabelMap, load_preset
    from usgen_desktop.gui.main_window import MainWindow
    from usgen_desktop.io.project import Project

    app = QApplication.instance() or QApplication([])
    schema = load_preset("busi")
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (size, size), dtype=np.uint8)
    doc = Document(LabelMap.empty(size, size), schema, UltrasoundImage(img), name="big")
    project = Project(Path(_TMP) / f"brush{size}{naive}", schema, documents=[doc])
    win = MainWindow(project, load_panels=False)
    win.resize(1280, 820)
    win.show()
    app.processEvents()
    canvas = win.canvas
    canvas.fit()
    if zoom is not None:  # zoom about the stroke's middle so the stroke stays in view
        canvas.set_zoom(zoom)
        mid = canvas.image_to_widget(size * 0.5, size * 0.3)
        canvas.pan_by(canvas.width() / 2 - mid.x(), canvas.height() / 2 - mid.y())
    canvas.set_brush_size(20)
    win.select_tool("brush")
    if naive:
        # The reference: re-colour everything and repaint the whole widget on every change.
        doc.unsubscribe(canvas._on_document_changed)

        def full(_box):  # noqa: ANN001
            canvas._recolour(None)
            canvas.update()

        doc.subscribe(full)
    app.processEvents()

    def send(kind, x: float, y: float) -> None:  # noqa: ANN001
        pos = canvas.image_to_widget(x, y)
        btn = Qt.MouseButton.LeftButton
        buttons = Qt.MouseButton.NoButton if kind == QEvent.Type.MouseButtonRelease else btn
        ev = QMouseEvent(kind, QPointF(pos), canvas.mapToGlobal(QPointF(pos)),
                         btn if kind != QEvent.Type.MouseMove else Qt.MouseButton.NoButton,
                         buttons, Qt.KeyboardModifier.NoModifier)
        QApplication.sendEvent(canvas, ev)

    times = []
    y = size * 0.3
    # 3 image px per event at 100 %: a quick hand stroke at ~100 events/s
    span = size * 0.4 if zoom is None else min(size * 0.4, 3.0 * moves, canvas.width() * 0.8)
    step = span / moves
    send(QEvent.Type.MouseButtonPress, size * 0.3, y)
    app.processEvents()
    for i in range(1, moves + 1):
        x = size * 0.3 + i * step
        yy = y + 0.05 * span * np.sin(i / 7)
        t0 = time.perf_counter()
        send(QEvent.Type.MouseMove, x, yy)
        app.processEvents()  # the queued repaint of the changed rectangle happens here
        times.append((time.perf_counter() - t0) * 1000)
    send(QEvent.Type.MouseButtonRelease, x, yy)
    app.processEvents()
    painted = int((doc.labels.data == 1).sum())
    win.ask_save_changes = lambda: "discard"
    win.close()
    win.deleteLater()
    app.processEvents()
    if painted == 0:
        raise RuntimeError("the benchmark stroke painted nothing")
    return {"median_ms": statistics.median(times), "worst_ms": max(times),
            "p95_ms": float(np.percentile(times, 95))}


def bench_autosave(size: int, runs: int = 5) -> float:
    """Median ms of one autosave tick after a brush dab on a size x size label map.

    The timer skips ticks while the mouse is down, so this is a pause between strokes only.
    """
    from usgen_desktop.core.document import Document
    from usgen_desktop.core.image import UltrasoundImage
    from usgen_desktop.core.labels import LabelMap, load_preset
    from usgen_desktop.io.project import Project

    schema = load_preset("busi")
    lab = np.zeros((size, size), np.uint8)
    lab[size // 4: size // 2, size // 4: size // 2] = 1
    img = np.random.default_rng(0).integers(0, 255, (size, size), dtype=np.uint8)
    doc = Document(LabelMap(lab), schema, UltrasoundImage(img))
    project = Project.create(Path(_TMP) / f"autosave{size}", schema)
    project.add([doc])
    project.save()
    times = []
    for i in range(runs):
        doc.paint_disk((100 + 30 * i, 100), 10, 1)
        t0 = time.perf_counter()
        project.autosave()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def bench_busi_import(root: Path) -> dict[str, float] | None:
    busi = root / "busi"
    if not busi.is_dir():
        return None
    from PySide6.QtWidgets import QApplication

    from usgen_desktop.core.labels import load_preset
    from usgen_desktop.gui import project_io
    from usgen_desktop.gui.main_window import MainWindow
    from usgen_desktop.io.project import Project

    app = QApplication.instance() or QApplication([])
    problems: list[str] = []
    project_io.show_problems = lambda parent, title, intro, probs: problems.extend(probs)
    project = Project.create(Path(_TMP) / "busi_project", load_preset("busi"), name="BUSI")
    win = MainWindow(project, load_panels=False)
    win.show()
    app.processEvents()
    t0 = time.perf_counter()
    docs = win.import_paths([busi])  # into a clean project: includes saving the import
    t_import = time.perf_counter() - t0
    # then one edit, as while annotating: what the autosave timer and Ctrl+S cost
    doc = win.current_document()
    doc.paint_disk((doc.shape[1] / 2, doc.shape[0] / 2), 10, 1)
    t0 = time.perf_counter()
    win.autosaver.tick()
    t_autosave = time.perf_counter() - t0
    t0 = time.perf_counter()
    win.save()
    t_save = time.perf_counter() - t0
    win.close()
    return {"n": len(docs), "problems": len(problems), "import_s": t_import,
            "autosave_s": t_autosave, "save_s": t_save}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs (a smoke test)")
    args = ap.parse_args()
    runs, moves = (2, 40) if args.quick else (5, 200)
    print("machine: 2-core CPU, no GPU, torch 2.13 CPU; Qt platform "
          f"{os.environ.get('QT_QPA_PLATFORM')} (start-up always offscreen)")
    st = bench_startup(runs)
    print(f"start-up to window shown: median {st['app_s']:.2f} s (worst {st['app_worst_s']:.2f})"
          f"; bare QMainWindow reference {st['ref_s']:.2f} s; ratio {st['app_s'] / st['ref_s']:.1f}x")
    for size in (1024, 4096):
        for zoom, zname in ((None, "fit"), (1.0, "100 %")):
            fast = bench_brush(size, moves, zoom=zoom)
            slow = bench_brush(size, max(10, moves // 4), naive=True, zoom=zoom)
            print(f"brush move {size}x{size} at {zname}: median {fast['median_ms']:.2f} ms, "
                  f"p95 {fast['p95_ms']:.2f}, worst {fast['worst_ms']:.2f} ms | naive full "
                  f"re-colour + repaint: median {slow['median_ms']:.1f} ms "
                  f"(ratio {slow['median_ms'] / fast['median_ms']:.0f}x)")
    for size in (2048, 4096):
        print(f"autosave tick after one dab, {size}x{size}: median {bench_autosave(size):.0f} ms "
              "(runs between strokes only)")
    data = (REPO / ".." / "shared" / "data").resolve()
    busi = bench_busi_import(data)
    if busi is None:
        print("BUSI import: skipped (../shared/data/busi not found)")
    else:
        print(f"BUSI import through the GUI: {busi['n']} images in {busi['import_s']:.1f} s "
              f"(read + save into the project), {busi['problems']} problems; then one edit: "
              f"autosave {busi['autosave_s'] * 1000:.0f} ms, Ctrl+S {busi['save_s'] * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
