"""Argument types that check a value's range in the parser, so a bad value is refused with the
allowed range before any work starts (``usgen deform: error: argument --grid: ...``, exit 2).

Each factory returns a function for ``add_argument(type=...)``; its ``ArgumentTypeError`` text is
one sentence that argparse prints after the option's name.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path


def _fmt(v: float) -> str:
    return f"{v:g}"


def int_range(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """A whole number in [lo, hi] (either bound may be open-ended)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{value} is out of range; {_range(lo, hi)}")
        return value

    parse.__name__ = "whole number"
    return parse


def float_range(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
                hi_open: bool = False) -> Callable[[str], float]:
    """A finite number in the interval given (``lo_open``: lo itself excluded)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(
                f"'{text}' is not a finite number; {_interval(lo, hi, lo_open, hi_open)}")
        bad_lo = lo is not None and (value <= lo if lo_open else value < lo)
        bad_hi = hi is not None and (value >= hi if hi_open else value > hi)
        if bad_lo or bad_hi:
            raise argparse.ArgumentTypeError(
                f"{_fmt(value)} is out of range; {_interval(lo, hi, lo_open, hi_open)}")
        return value

    parse.__name__ = "number"
    return parse


def positive_float(hi: float | None = None) -> Callable[[str], float]:
    return float_range(0.0, hi, lo_open=True)


def fraction(include_one: bool = False) -> Callable[[str], float]:
    """A share strictly above 0 and below 1 (or up to 1 with ``include_one``)."""
    return float_range(0.0, 1.0, lo_open=True, hi_open=not include_one)


def _range(lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        return f"it must lie between {lo} and {hi}"
    if lo is not None:
        return f"it must be at least {lo}"
    return f"it must be at most {hi}"


def _interval(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    parts = []
    if lo is not None:
        parts.append(f"above {_fmt(lo)}" if lo_open else f"at least {_fmt(lo)}")
    if hi is not None:
        parts.append(f"below {_fmt(hi)}" if hi_open else f"at most {_fmt(hi)}")
    return "it must be " + " and ".join(parts) if parts else "it must be finite"


def channel_list(max_levels: int = 6, lo: int = 8, hi: int = 1024) -> Callable[[str], tuple]:
    """UNet channels per level, e.g. ``16,32,64``: 1 to ``max_levels`` multiples of 8 in
    [lo, hi] (the network's group normalisation splits channels into groups of 8)."""

    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(c) for c in str(text).split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"'{text}' is not a list of channel counts such as 16,32,64") from None
        if not 1 <= len(values) <= max_levels or any(
                v < lo or v > hi or v % 8 for v in values):
            raise argparse.ArgumentTypeError(
                f"'{text}' is out of range; give 1 to {max_levels} channel counts, each a "
                f"multiple of 8 from {lo} to {hi}, e.g. 16,32,64,128")
        return values

    parse.__name__ = "channel list"
    return parse


def out_folder(path: Path, what: str = "--out") -> Path:
    """``path`` ready as an output folder (created if needed), or one UsgenError sentence: a
    file in the way, or a folder USGen may not write to."""
    import errno
    import os

    from usgen_desktop.errors import ExportError

    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ExportError(f"{what} '{path}' is a file, not a folder; choose a folder.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTDIR):
            raise ExportError(
                f"{what} '{path}' cannot be made: a file is in the way.") from exc
        raise ExportError(f"Could not create {what} '{path}' ({exc.strerror or exc}).") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise ExportError(f"USGen may not write to {what} '{path}' (permission denied); "
                          "choose another folder.")
    return path
