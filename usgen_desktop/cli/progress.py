"""The tqdm progress bar that batch sub-commands (export, deform) draw on stderr."""

from __future__ import annotations

import sys


def progress_bar(desc: str, quiet: bool, unit: str = "pair"):
    """A progress callback drawing a tqdm bar on stderr, and a function to close it.

    The bar appears with the first report that has a total: a step that reports nothing (a
    project read at once) used to leave a stray "reading: 0pair [00:00, ?pair/s]" line."""
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    bars: list = []

    def update(p) -> None:
        if quiet or p.total <= 0:
            return
        if not bars:
            # In a log (not a terminal) a bar that redraws every item floods the file.
            bars.append(tqdm(total=p.total, desc=desc, unit=f" {unit}", file=sys.stderr,
                             mininterval=0.2 if tty else 10.0, dynamic_ncols=tty,
                             leave=not tty))
        bar = bars[0]
        if bar.total != p.total:
            bar.total = p.total
        if p.done > bar.n:
            bar.update(p.done - bar.n)

    def close() -> None:
        if bars:
            bars[0].close()

    return update, close
