"""Click to mask: how many clicks, how fast, and does the GUI stall?

Quality (the standard protocol of interactive segmentation). On the held-out splits that no
training saw (BUSI lesions: ``models/sdm-default/dev_split.txt``, 20 % of near-duplicate groups;
HC18 heads: ``models/sdm-hc18/dev_split.txt``, 20 % of subjects), a simulated user clicks at the
centre of the largest error region, up to 20 clicks; NoC@85 / NoC@90 (mean clicks to reach that
IoU, 20 when never) and mean IoU after 1, 3 and 5 clicks. The no-learning baseline, GrabCut from
the same clicks, runs in the same process on the same images.

Latency. Seconds per click (one forward pass plus resizing back) on images of 512² and 1024²,
median and worst, and the one-off cost of opening a session on an image.

GUI stall. A 10 ms QTimer on the GUI thread while clicks are computed in the worker thread the
Smart tool uses, against the same clicks computed on the GUI thread.

    .venv/bin/python benchmarks/bench_assist.py [--model models/assist-default] [--limit N]
    .venv/bin/python benchmarks/bench_assist.py --skip-quality      # latency and stall only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

SHARED = next((p / "shared" / "data" for p in (ROOT.parent, ROOT.parent.parent)
               if (p / "shared" / "data").is_dir()), ROOT.parent / "shared" / "data")
SPLITS = {"busi": ROOT / "models" / "sdm-default" / "dev_split.txt",
          "hc18": ROOT / "models" / "sdm-hc18" / "dev_split.txt"}


def quality(model, sets: dict, limit: int | None, max_clicks: int,
            methods: tuple[str, ...] = ("network", "grabcut"),
            which: tuple[str, ...] = ("busi", "hc18"), subset: int = 30) -> dict:
    from usgen_desktop.assist.evaluate import (
        GrabCutMethod,
        NetworkMethod,
        click_curve,
        summarise,
    )

    out: dict = {}
    for key in (f"{w}_test" for w in which):
        samples = sets[key][:limit] if limit else sets[key]
        # GrabCut at <= 160 px, 3 iterations: at full size it took ~6 s a click on this
        # shared CPU, too slow for 20 clicks on every held-out image
        chosen = {"network": lambda: NetworkMethod(model),
                  "grabcut": lambda: GrabCutMethod(iterations=3, max_side=160)}
        for label in methods:
            method = chosen[label]()
            t0 = time.perf_counter()
            curves = [click_curve(method, s.image, s.mask, s.name, max_clicks=max_clicks,
                                  stop_at=0.90) for s in samples]
            res = summarise(curves)
            res["seconds"] = time.perf_counter() - t0
            out[f"{key}/{label}"] = res
            if subset and len(curves) > subset:  # the images a slower baseline was run on
                out[f"{key}/{label}/first{subset}"] = summarise(curves[:subset])
            out[f"{key}/{label}/per_image"] = {c.name: c.noc(0.90) for c in curves}
            for name, r in ((label, res), (f"{label}/first{subset}",
                                             out.get(f"{key}/{label}/first{subset}"))):
                if r:
                    print(f"{key:10s} {name:16s} " + " ".join(f"{k}={v:.3f}" for k, v in r.items()),
                          flush=True)
    return out


def latency(model, sets: dict, sizes=(512, 1024), images: int = 5, clicks: int = 5) -> dict:
    import cv2

    from usgen_desktop.assist.clicks import Click, next_click
    from usgen_desktop.assist.predict import AssistSession

    out: dict = {}
    pool = (sets["busi_test"][: images // 2 + 1] + sets["hc18_test"][: images // 2])[:images]
    for size in sizes:
        per_click, opens, cpu, first = [], [], [], []
        for s in pool:
            img = cv2.resize(s.image, (size, size), interpolation=cv2.INTER_LINEAR)
            gt = cv2.resize(s.mask.astype(np.uint8), (size, size),
                            interpolation=cv2.INTER_NEAREST) > 0
            t0 = time.perf_counter()
            session = AssistSession(model, img)
            opens.append(time.perf_counter() - t0)
            pred = np.zeros_like(gt)
            for k in range(clicks):
                c = next_click(gt, pred)
                if c is None:
                    break
                t0, c0 = time.perf_counter(), time.process_time()
                pred = session.add_click(Click(c[0], c[1], c[2]))
                per_click.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
                if k == 0:  # refine_first: the first click may look twice
                    first.append(per_click[-1])
        # CPU seconds as well as wall: on a shared machine the wall time is mostly waiting
        out[size] = {"median_s": statistics.median(per_click), "worst_s": max(per_click),
                     "cpu_median_s": statistics.median(cpu), "cpu_worst_s": max(cpu),
                     "first_click_median_s": statistics.median(first),
                     "open_median_s": statistics.median(opens), "clicks": len(per_click)}
        print(f"latency {size}²: " + " ".join(f"{k}={v:.4f}" for k, v in out[size].items()),
              flush=True)
    return out


def stall(model, sets: dict, clicks: int = 20, size: int = 1024) -> dict:
    """Worst GUI-thread stall while clicks run in the worker, vs on the GUI thread."""
    import cv2
    from PySide6.QtWidgets import QApplication

    from benchmarks.bench_gui_stall import StallMeter
    from usgen_desktop.assist.clicks import Click
    from usgen_desktop.assist.predict import AssistSession
    from usgen_desktop.gui.worker import run_task

    app = QApplication.instance() or QApplication([])
    s = sets["busi_test"][0]
    img = cv2.resize(s.image, (size, size))
    session = AssistSession(model, img)
    ys, xs = np.nonzero(cv2.resize(s.mask.astype(np.uint8), (size, size)))
    pts = [Click(float(xs[i]), float(ys[i]), True) for i in
           np.random.default_rng(0).integers(len(xs), size=clicks)]

    def one_click(click, progress=None, cancel=None):  # noqa: ANN001, ANN202
        return session.add_click(click)

    meter = StallMeter()
    out: dict = {}
    for mode in ("idle", "worker", "blocking"):
        session.reset()
        meter.start()
        t_end = time.perf_counter() + 0.3
        while time.perf_counter() < t_end:  # let the timer settle
            app.processEvents()
            time.sleep(0.001)
        for c in pts:
            if mode == "idle":
                t1 = time.perf_counter() + 0.05
                while time.perf_counter() < t1:
                    app.processEvents()
                    time.sleep(0.001)
            elif mode == "worker":
                done: list = []
                run_task(None, one_click, c, title="smart", on_done=done.append,
                         on_failed=done.append)
                while not done:
                    app.processEvents()
                    time.sleep(0.001)
            else:
                one_click(c)
                app.processEvents()
        meter.stop()
        out[mode] = {"worst_stall_ms": meter.worst_stall_ms, "p99_gap_ms": meter.p99_gap_ms}
        print(f"stall {mode}: " + " ".join(f"{k}={v:.1f}" for k, v in out[mode].items()),
              flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "assist-default")
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--limit", type=int, default=None, help="images per held-out set")
    ap.add_argument("--max-clicks", type=int, default=20)
    ap.add_argument("--methods", default="network,grabcut",
                    help="which methods the quality part measures (comma-separated)")
    ap.add_argument("--sets", default="busi,hc18", help="held-out sets to measure")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-stall", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args()

    import torch

    from usgen_desktop.assist.data import shared_samples
    from usgen_desktop.assist.predict import open_model

    torch.set_num_threads(1)
    if not (args.data / "busi" / "manifest.csv").is_file():
        print(f"no shared data under {args.data}: skipped")
        return 0
    model = open_model(args.model)
    sets = shared_samples(args.data, SPLITS)
    print({k: len(v) for k, v in sets.items()}, flush=True)
    results: dict = {"model": str(args.model), "load_avg": os.getloadavg()}
    if not args.skip_quality:
        results["quality"] = quality(model, sets, args.limit, args.max_clicks,
                                     tuple(args.methods.split(",")),
                                     tuple(args.sets.split(",")))
    if not args.skip_latency:
        results["latency"] = latency(model, sets)
    if not args.skip_stall:
        results["stall"] = stall(model, sets)
    results["load_avg_end"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
