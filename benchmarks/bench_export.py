"""Export speed: pairs per second for the folder and nnU-Net formats.

Runs on synthetic 512x512 pairs and, when ``../shared/data/busi`` exists next to the repo, on
the real BUSI pairs (opening the folder is timed too). The reference is a bare loop of
``cv2.imwrite`` for the same image and mask files, measured in the same run: the ratio shows
what atomic writes, the manifest and label remapping cost on top of PNG encoding.

    .venv/bin/python benchmarks/bench_export.py [--pairs 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from usgen_desktop.core.document import Document  # noqa: E402
from usgen_desktop.core.image import UltrasoundImage  # noqa: E402
from usgen_desktop.core.labels import LabelMap, load_preset  # noqa: E402
from usgen_desktop.export import export_pairs  # noqa: E402
from usgen_desktop.io import Project, open_dataset  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "busi"


def synthetic_docs(n: int, size: int = 512) -> list[Document]:
    rng = np.random.default_rng(0)
    schema = load_preset("busi")
    docs = []
    for i in range(n):
        img = np.clip(rng.rayleigh(60, (size, size)), 0, 255).astype(np.uint8)
        mask = np.zeros((size, size), np.uint8)
        cv2.ellipse(mask, (size // 2, size // 2), (size // 5, size // 7), 15 + i, 0, 360, 1, -1)
        docs.append(Document(labels=LabelMap(mask), schema=schema, image=UltrasoundImage(img),
                             name=f"case {i}", tags={"class": "benign"}))
    return docs


def reference_write(docs: list[Document], out: Path) -> None:
    """The floor: write the same PNGs with plain cv2.imwrite, nothing else."""
    (out / "i").mkdir(parents=True)
    (out / "m").mkdir()
    for k, d in enumerate(docs):
        cv2.imwrite(str(out / "i" / f"{k}.png"), d.image.pixels, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        cv2.imwrite(str(out / "m" / f"{k}.png"), d.labels.data, [cv2.IMWRITE_PNG_COMPRESSION, 1])


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        tmp = Path(tempfile.mkdtemp(prefix="usgen-bench-"))
        try:
            t0 = time.perf_counter()
            fn(tmp / "out")
            times.append(time.perf_counter() - t0)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return times


def bench(label: str, docs: list[Document], repeats: int) -> None:
    n = len(docs)
    ref = statistics.median(timed(lambda out: reference_write(docs, out), repeats))
    print(f"\n{label}: {n} pairs, median of {repeats} runs")
    print(f"  {'reference cv2.imwrite':<24} {n / ref:8.1f} pairs/s   ratio 1.00")
    for fmt in ("folder", "nnunet", "decathlon"):
        t = statistics.median(timed(lambda out, f=fmt: export_pairs(docs, out, f), repeats))
        print(f"  {'export ' + fmt:<24} {n / t:8.1f} pairs/s   ratio {ref / t:.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print("export benchmark (machine: see docs/bench/export.md)")
    bench("synthetic 512x512", synthetic_docs(args.pairs), args.repeats)
    if not DATA.is_dir():
        print(f"\n{DATA} not found: skipping the BUSI run.")
        return 0
    opens = []
    result = None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        result = open_dataset(DATA)
        opens.append(time.perf_counter() - t0)
    assert result is not None
    n = len(result.documents)
    t = statistics.median(opens)
    print(f"\nopen {DATA.name}: {n} pairs in {t:.2f} s median ({n / t:.0f} pairs/s), "
          f"layout {result.layout}, {len(result.problems)} problems")
    bench(f"BUSI ({DATA})", result.documents, args.repeats)
    bench_project(result.documents, result.schema)
    return 0


def bench_project(docs: list[Document], schema) -> None:
    """The project store on the same documents: first save, reopen, one-edit save/autosave."""
    tmp = Path(tempfile.mkdtemp(prefix="usgen-bench-"))
    try:
        t0 = time.perf_counter()
        project = Project.create(tmp / "p", schema)
        project.add(docs)
        project.save()
        t_save = time.perf_counter() - t0
        t0 = time.perf_counter()
        reopened = Project.open(tmp / "p")
        t_open = time.perf_counter() - t0
        doc = reopened.documents[0]
        times_auto, times_save = [], []
        for k in range(5):
            doc.paint_disk((20 + k, 20), 5, 1)
            t0 = time.perf_counter()
            reopened.autosave()
            times_auto.append(time.perf_counter() - t0)
            doc.paint_disk((30 + k, 30), 5, 1)
            t0 = time.perf_counter()
            reopened.save()
            times_save.append(time.perf_counter() - t0)
        print(f"\nproject store, {len(docs)} documents: first save {t_save:.2f} s, open "
              f"{t_open:.2f} s; after one edit: autosave {statistics.median(times_auto) * 1e3:.1f}"
              f" ms, save {statistics.median(times_save) * 1e3:.1f} ms (medians of 5)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
