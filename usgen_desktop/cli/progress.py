"""The tqdm progress bar that batch sub-commands (export, deform) draw on stderr."""

from __future__ import annotations

import sys


def progress_bar(desc: str, quiet: bool, unit: str = "pair"):
    """A progress callback drawing a tqdm bar on stderr, and a function to close it."""
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    # In a log (not a terminal) a bar that redraws every item floods the file: redraw rarely.
    bar = tqdm(total=0, desc=desc, unit=unit, file=sys.stderr, disable=quiet,
               mininterval=0.2 if tty else 10.0, dynamic_ncols=tty, leave=not tty)

    def update(p) -> None:
        if bar.total != p.total:
            bar.total = p.total
        if p.done > bar.n:
            bar.update(p.done - bar.n)

    return update, bar.close
