"""Safetensors only: model weights are loaded from ``.safetensors`` files, never from pickles.

A ``.bin``/``.pt``/``.ckpt`` file is a Python pickle, and loading one can run code hidden in it.
The backends and trainers pass ``use_safetensors=True`` to every ``from_pretrained`` and call
``require_safetensors`` first, so a folder holding only pickles gets one sentence saying so
instead of a library's warning ("Defaulting to unsafe serialization") and a pickle load.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from usgen_desktop.errors import ModelError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def require_safetensors(folder: Path, parts: Iterable[str] = ("",), what: str = "model") -> None:
    """Raise ModelError when a part of ``folder`` that holds weights has them only as pickles.

    ``parts`` are the subfolders that carry weights (``""``: the folder itself); a part with
    neither kind of file is left to the loader, which names what is missing.
    """
    folder = Path(folder)
    for part in parts:
        sub = folder / part if part else folder
        if not sub.is_dir():
            continue
        names = [p.name for p in sub.iterdir() if p.is_file()]
        has_safe = any(n.endswith(".safetensors") for n in names)
        pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
        if pickles and not has_safe:
            where = f"'{sub}'"
            raise ModelError(
                f"The {what} weights in {where} are only pickle files ({', '.join(pickles[:2])}); "
                "USGen loads .safetensors files only, since a pickle can run code when loaded "
                "(convert them with diffusers' save_pretrained(safe_serialization=True))."
            )
