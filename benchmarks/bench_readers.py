"""Cost of the readers' safety checks (issue 14): the header size check, the PNG data
completeness check (one extra inflate of IDAT) and the regular-file check, per image.

    python benchmarks/bench_readers.py [REPO_ROOT] [N]

Reads the first N (default 120) BUSI images with ``read_image`` five times and prints the
median milliseconds per image. Run it once with this checkout and once with an older one
(REPO_ROOT) on the same machine to compare.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 120
sys.path.insert(0, str(root))

from usgen_desktop.io import read_image  # noqa: E402

files = sorted(Path("/work/shared/data/busi").rglob("images/*.png"))[:n]
runs = []
for _ in range(5):
    t0 = time.perf_counter()
    for f in files:
        read_image(f)
    runs.append((time.perf_counter() - t0) / len(files) * 1000)
print(f"{root}: {len(files)} BUSI PNGs, median {statistics.median(runs):.2f} ms per image "
      f"(runs {', '.join(f'{r:.2f}' for r in runs)})")
