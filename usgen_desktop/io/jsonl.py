"""Append-only ``manifest.jsonl`` files that a kill may leave with a half-written last line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of ``path``, one per line; lines that are not one (a line cut by an
    interrupt) are left out. No file gives an empty list; other read errors are raised."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


def drop_torn_line(path: Path) -> None:
    """Cut a half-written last line (a run killed mid-write), so the next line appended is not
    glued to it. Raises OSError when the file is there but cannot be cut."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return
    if not data or data.endswith(b"\n"):
        return
    with open(path, "r+b") as f:
        f.truncate(data.rfind(b"\n") + 1)
