"""How long does the GUI event loop stall while images are generated?

A QTimer fires every 10 ms on the GUI thread and records the gaps between its ticks; the worst
gap beyond 10 ms is the longest the app was frozen. Three conditions, each run a few times:

* idle       - the timer alone (the reference: what the machine itself adds);
* worker     - a generation through the Generate panel (worker thread, live preview, results
               streaming into the gallery), the way a user runs it;
* blocking   - the same generation called directly on the GUI thread (what the app would
               do without the worker), for contrast.

Generation uses the speckle backend when it is installed, else a CPU-bound stand-in with the
same per-step callback (numpy filtering plus some pure-Python work that holds the GIL). The
label maps come from ../shared/data (BUSI masks) when present, else an ellipse drawn in code.

    .venv/bin/python benchmarks/bench_gui_stall.py [--runs 5] [--count 8] [--size 256]
    .venv/bin/python benchmarks/bench_gui_stall.py --backend sdm --size 128 --steps 10 --count 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import types
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

TICK_MS = 10


def label_maps(size: int, n: int) -> list[np.ndarray]:
    """Binary lesion masks: BUSI's when the shared data is there, else drawn ellipses."""
    import cv2

    masks: list[np.ndarray] = []
    data = ROOT.parent / "shared" / "data" / "busi" / "benign" / "masks"  # "<name>_mask.png"
    if data.is_dir():
        for p in sorted(data.glob("*.png"))[:n]:
            m = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
            if m is not None:
                masks.append((cv2.resize(m, (size, size), interpolation=cv2.INTER_NEAREST) > 0)
                             .astype(np.uint8))
    while len(masks) < n:
        m = np.zeros((size, size), np.uint8)
        k = len(masks)
        cv2.ellipse(m, (size // 2, size // 2), (size // 5 + k, size // 7), 10 * k, 0, 360, 1, -1)
        masks.append(m)
    return masks


def install_fake_backend(steps: int) -> str:
    """A stand-in generator: per step a Gaussian filter (numpy, releases the GIL) and a
    pure-Python loop (holds it), so it stresses the GUI thread as a real sampler would."""
    import cv2

    from usgen_desktop.core.tasks import Progress
    from usgen_desktop.errors import Cancelled
    from usgen_desktop.synthesis import request as req_mod

    class Fake:
        name, model_hash, device = "fake", "fake", "cpu"
        steps_per_item = steps

        def generate(self, label_map, klass, seed, request, map_index, step, cancel):
            rng = np.random.default_rng(seed)
            x = rng.random(label_map.shape, np.float32)
            for i in range(steps):
                if cancel.cancelled:
                    raise Cancelled("stopped")
                x = cv2.GaussianBlur(x, (0, 0), 1.5) + 0.1 * rng.random(x.shape, np.float32)
                acc = 0
                for j in range(100_000):  # GIL-holding work, as Python-side sampler code is
                    acc += j * j
                img = np.clip(x / x.max() * 255, 0, 255).astype(np.uint8)
                step(Progress(i + 1, steps, "", img))
            return img

    mod = types.ModuleType("bench_fake_backend")
    mod.load = lambda request: Fake()
    sys.modules["bench_fake_backend"] = mod
    req_mod.BACKENDS["fake"] = "bench_fake_backend"
    return "fake"


def prepare_sdm(size: int, steps: int) -> str:
    """An sdm model folder: the shipped default when installed, else a randomly initialised
    one of the default architecture (same compute per step; the images are noise)."""
    import tempfile

    from usgen_desktop.core.labels import load_preset
    from usgen_desktop.paths import models_dir
    from usgen_desktop.synthesis.backends import sdm

    try:
        import usgen_desktop.synthesis.devices  # noqa: F401
    except ImportError:  # before devices.py lands: CPU only, which is what this machine has
        dev = types.ModuleType("usgen_desktop.synthesis.devices")
        dev.pick_device = lambda pref="auto": "cpu"
        dev.is_oom = lambda exc: "out of memory" in str(exc).lower()
        sys.modules["usgen_desktop.synthesis.devices"] = dev
    shipped = models_dir() / sdm.DEFAULT_MODEL_NAME
    if shipped.is_dir():
        return str(shipped)
    folder = Path(tempfile.mkdtemp(prefix="bench-sdm-"))
    cfg = sdm.SdmConfig(size=(size, size), schema=load_preset("busi"),
                        classes=["benign", "malignant", "normal"])
    sdm.save_model(sdm.build_unet(cfg), cfg, folder)
    return str(folder)


class StallMeter:
    """Records the gaps between ticks of a 10 ms timer on the GUI thread."""

    def __init__(self) -> None:
        from PySide6.QtCore import QTimer

        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)
        self.gaps: list[float] = []
        self._last = 0.0

    def start(self) -> None:
        self.gaps = []
        self._last = time.perf_counter()
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append((now - self._last) * 1000.0)
        self._last = now

    @property
    def worst_stall_ms(self) -> float:
        return max(0.0, max(self.gaps, default=0.0) - TICK_MS)

    @property
    def p99_gap_ms(self) -> float:
        return float(np.percentile(self.gaps, 99)) if self.gaps else 0.0


def make_window(masks: list[np.ndarray]):
    """The real main window when it is built, with one document per mask; else a stub."""
    from usgen_desktop.core.document import Document
    from usgen_desktop.core.labels import LabelMap, load_preset

    schema = load_preset("busi")
    docs = [Document(labels=LabelMap(m), schema=schema, name=f"mask{i}", tags={"class": "benign"})
            for i, m in enumerate(masks)]
    from PySide6.QtCore import Signal
    from PySide6.QtWidgets import QLabel, QMainWindow

    class StubWindow(QMainWindow):
        currentDocumentChanged = Signal(object)

        def __init__(self) -> None:
            super().__init__()
            self.project = types.SimpleNamespace(documents=docs, schema=schema)
            self.setCentralWidget(QLabel("canvas"))

        def current_document(self):  # noqa: ANN202
            return docs[0]

        def add_documents(self, new, select=True):  # noqa: ANN001, ANN202
            docs.extend(new)

        def show_error(self, msg):  # noqa: ANN001, ANN202
            print("error:", msg)

    return StubWindow(), docs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--count", type=int, default=8, help="images per run")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20, help="steps of the stand-in backend")
    ap.add_argument("--backend", default="auto", help="speckle | sdm | fake | auto")
    ap.add_argument("--gil-switch-ms", type=float, default=None,
                    help="force the interpreter's GIL switch interval (the worker lowers it to "
                         "1 ms; pass 5 to measure Python's default)")
    args = ap.parse_args()
    if args.gil_switch_ms is not None:
        from usgen_desktop.gui import worker

        worker.GIL_SWITCH_INTERVAL_S = args.gil_switch_ms / 1000.0
        sys.setswitchinterval(args.gil_switch_ms / 1000.0)

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    from usgen_desktop.gui.panels import generate as gen_panel
    from usgen_desktop.synthesis.request import run as run_request

    backend = args.backend
    if backend == "auto":
        try:
            import usgen_desktop.synthesis.backends.speckle  # noqa: F401

            backend = "speckle"
        except ImportError:
            backend = "fake"
    if backend == "fake":
        install_fake_backend(args.steps)
    model = prepare_sdm(args.size, args.steps) if backend == "sdm" else ""

    masks = label_maps(args.size, 1)
    window, docs = make_window(masks)
    panel = gen_panel.install(window)
    window.resize(1280, 820)
    window.show()
    idx = panel.backend.findData(backend)
    if idx < 0:  # the stand-in is not in the panel's list: add it for the benchmark
        panel.backend.addItem(backend, backend)
        idx = panel.backend.findData(backend)
    panel.backend.setCurrentIndex(idx)
    if model:
        panel.model_dir.setText(model)
        panel.steps.setValue(args.steps)
        panel.device.setCurrentText("cpu")
    panel.count.setValue(args.count)
    panel.scope.setCurrentIndex(panel.scope.findData("current"))
    meter = StallMeter()

    def wait_until(cond, timeout=600.0) -> None:
        t_end = time.perf_counter() + timeout
        while not cond() and time.perf_counter() < t_end:
            app.processEvents()
            time.sleep(0.001)

    # warm up: imports, backend load, first paint
    panel.generate()
    wait_until(lambda: not panel.running)
    panel.gallery.clear()

    rows: dict[str, list[tuple[float, float, float]]] = {"idle": [], "worker": [], "blocking": []}
    for r in range(args.runs):
        # worker: a user clicking Generate
        meter.start()
        t0 = time.perf_counter()
        panel.seed.setValue(r)
        panel.generate()
        wait_until(lambda: not panel.running)
        secs = time.perf_counter() - t0
        app.processEvents()
        meter.stop()
        rows["worker"].append((meter.worst_stall_ms, meter.p99_gap_ms, secs))
        n_items = len(panel.gallery.items)
        panel.gallery.clear()
        # idle reference, for as long as the generation took
        meter.start()
        wait_until(lambda: False, timeout=secs)
        meter.stop()
        rows["idle"].append((meter.worst_stall_ms, meter.p99_gap_ms, secs))
        # blocking: the same request run on the GUI thread
        request = panel.build_request([docs[0]], seed=r)
        meter.start()
        t0 = time.perf_counter()
        done: list = []

        def block(req=request, out=done) -> None:
            out.append(run_request(req))

        QTimer.singleShot(20, block)
        wait_until(lambda out=done: bool(out))
        app.processEvents()
        meter.stop()
        rows["blocking"].append((meter.worst_stall_ms, meter.p99_gap_ms,
                                 time.perf_counter() - t0))
        print(f"run {r + 1}: worker {rows['worker'][-1][0]:.1f} ms worst stall "
              f"({n_items} images in {secs:.2f} s), idle {rows['idle'][-1][0]:.1f} ms, "
              f"blocking {rows['blocking'][-1][0]:.1f} ms", flush=True)

    print(f"\nbackend {backend}, {args.count} images of {args.size}x{args.size} per run, "
          f"{args.runs} runs, timer {TICK_MS} ms, GIL switch interval "
          f"{sys.getswitchinterval() * 1000:.0f} ms")
    print(f"{'condition':<10} {'median worst stall':>19} {'worst of runs':>14} "
          f"{'median p99 gap':>15} {'median run s':>13}")
    ref = statistics.median(x[0] for x in rows["idle"])
    for name, vals in rows.items():
        worst = [v[0] for v in vals]
        print(f"{name:<10} {statistics.median(worst):>16.1f} ms {max(worst):>11.1f} ms "
              f"{statistics.median(v[1] for v in vals):>12.1f} ms "
              f"{statistics.median(v[2] for v in vals):>12.2f}")
    med_worker = statistics.median(v[0] for v in rows["worker"])
    med_block = statistics.median(v[0] for v in rows["blocking"])
    print(f"\nworker / idle worst stall: {med_worker / max(ref, 0.1):.1f}x; "
          f"blocking / worker: {med_block / max(med_worker, 0.1):.0f}x")
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
