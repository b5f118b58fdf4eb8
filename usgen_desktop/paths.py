"""Where resources, the shipped models and the user's data live."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _install_root() -> Path:
    # PyInstaller unpacks data next to the executable (sys._MEIPASS); a source checkout has
    # resources/ and models/ beside the package.
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        return Path(frozen)
    return Path(__file__).resolve().parent.parent


def resources_dir() -> Path:
    return Path(os.environ.get("USGEN_RESOURCES", _install_root() / "resources"))


def models_dir() -> Path:
    return Path(os.environ.get("USGEN_MODELS", _install_root() / "models"))


def user_data_dir() -> Path:
    """Projects, autosaves and settings: the platform's standard folder, never the install."""
    env = os.environ.get("USGEN_DATA_DIR")
    if env:
        return Path(env)
    from platformdirs import user_data_dir as _udd

    return Path(_udd("usgen-desktop", "USGen"))


def user_config_dir() -> Path:
    env = os.environ.get("USGEN_CONFIG_DIR")
    if env:
        return Path(env)
    from platformdirs import user_config_dir as _ucd

    return Path(_ucd("usgen-desktop", "USGen"))


# -- names from data, and folders they must stay in -------------------------------------------
# A document's name, a manifest's ``name``, a project's uid or a Decathlon path comes from a file
# somebody else made. Every writer turns such a name into a file name with ``safe_filename`` (or
# ``unique_filenames``) and every write/read target built from data is checked with
# ``inside``: this is the one place that decides what may reach the file system.

MAX_NAME_BYTES = 150  # a component of at most 255 bytes leaves room for suffixes and temp names
_FORBIDDEN = set('/\\:*?"<>|')
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                     *(f"LPT{i}" for i in range(1, 10))}


def shorten_name(text: str, max_bytes: int) -> str:
    """``text`` cut to ``max_bytes`` of UTF-8, with a short hash of the whole so that two long
    names that share a beginning stay different."""
    import hashlib

    if len(text.encode("utf-8")) <= max_bytes:
        return text
    tag = "-" + hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    keep = max_bytes - len(tag)
    cut = text.encode("utf-8")[:keep].decode("utf-8", "ignore")
    return cut.rstrip(" .") + tag


def safe_filename(name: object, fallback: str = "item", max_bytes: int = MAX_NAME_BYTES) -> str:
    """One file-name component made from a name found in data.

    Path separators, NUL and other control characters, and characters Windows forbids become
    ``_``; leading dots (``..``, hidden files) and trailing dots and spaces go; reserved
    device names (``CON``, ``NUL``...) get a ``_`` in front; long names are cut with a hash.
    Letters of any script are kept. An empty result is ``fallback``. Ordinary names such as
    ``benign (10)`` come back unchanged.
    """
    import unicodedata

    text = unicodedata.normalize("NFC", "" if name is None else str(name))
    text = "".join(
        "_" if c in _FORBIDDEN or unicodedata.category(c).startswith("C") else c for c in text
    )
    text = text.strip(" ").lstrip(".").rstrip(" .")
    if not text:
        text = fallback
    if text.split(".")[0].upper() in _WINDOWS_RESERVED:
        text = "_" + text
    return shorten_name(text, max_bytes)


def unique_filenames(names: list[object], fallback: str = "item",
                     max_bytes: int = MAX_NAME_BYTES) -> list[str]:
    """``safe_filename`` of each name, made unique (ignoring case, for macOS and Windows) by
    ``_2``, ``_3``... in order, so two documents never write over each other's files."""
    used: set[str] = set()
    out = []
    for name in names:
        base = safe_filename(name, fallback, max_bytes)
        cand, n = base, 1
        while cand.lower() in used:
            n += 1
            cand = f"{base}_{n}"
        used.add(cand.lower())
        out.append(cand)
    return out


def inside(root: Path, path: Path | str, what: str = "The path") -> Path:
    """``path`` (relative paths are taken from ``root``) resolved, when it lies in ``root``;
    else an UnsafePathError naming it. Used for every write built from a name and for every
    read a data file points to (a Decathlon list, a project entry)."""
    from usgen_desktop.errors import UnsafePathError

    text = str(path)
    if "\x00" in text or any(ord(c) < 32 for c in text):
        raise UnsafePathError(f"{what} {text!r} is not a valid file name.")
    base = Path(root).resolve()
    target = (base / text).resolve()
    if target != base and base not in target.parents:
        raise UnsafePathError(f"{what} '{text}' points outside '{root}'.")
    return target
