"""The fan detector on the drawn test set of scanner screens (tests/fan_set.py): IoU against
the drawn truth, confidence where it misses, and time per image.

    .venv/bin/python benchmarks/bench_sector.py

No real data: the screens are drawn in code (3 probe kinds, 6 sizes, 11 kinds of clutter),
so the figures are the same on every machine except the time.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fan_set import fan_cases, hard_cases, iou  # noqa: E402
from usgen_desktop.core.sector import AUTO_APPLY, detect_sector  # noqa: E402


def main() -> None:
    for label, cases in (("drawn set", fan_cases()), ("hard cases", hard_cases())):
        ious, confs, times = [], [], []
        for case in cases:
            t0 = time.perf_counter()
            fit = detect_sector(case.image)
            times.append(time.perf_counter() - t0)
            ious.append(iou(fit.mask, case.truth))
            confs.append(fit.confidence)
        ious_a, confs_a = np.array(ious), np.array(confs)
        off = ious_a < 0.9
        print(f"{label}: {len(cases)} screens, IoU mean {ious_a.mean():.3f} worst "
              f"{ious_a.min():.3f}; {int(off.sum())} below 0.9, of which "
              f"{int((confs_a[off] >= AUTO_APPLY).sum())} at or above AUTO_APPLY "
              f"({AUTO_APPLY}); {int((confs_a < AUTO_APPLY).sum())} sent to review; "
              f"median {1000 * statistics.median(times):.0f} ms/image")


if __name__ == "__main__":
    main()
