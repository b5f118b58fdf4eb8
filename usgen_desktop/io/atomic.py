"""Atomic file writes: write to a temporary name in the same folder, then ``os.replace``.

A crash or kill mid-write leaves either the old file or the new one, never half of one, which
is what lets the project store and the exporters promise "complete files only".
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from usgen_desktop.errors import ImageReadError

_TMP_MARK = ".usgen-tmp"


def temp_name(path: Path) -> Path:
    """A hidden sibling of ``path`` that no reader mistakes for a finished file.

    Process and thread ids keep two writers of the same file (an autosave and a save) from
    renaming each other's half-written data.
    """
    name = path.name
    if len(name.encode("utf-8")) > 180:
        # A long (valid) file name plus the mark would pass the 255-byte limit of a name.
        import hashlib

        name = name.encode("utf-8")[:100].decode("utf-8", "ignore") + "-" + \
            hashlib.sha1(path.name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return path.with_name(f".{name}.{os.getpid()}-{threading.get_ident()}{_TMP_MARK}")


def is_temp_name(path: Path) -> bool:
    return path.name.endswith(_TMP_MARK)


def write_bytes_atomic(path: Path, data: bytes, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if fsync:
                # Only for small metadata files: image payloads skip it for speed, and a
                # process crash (not a power cut) cannot tear a renamed file anyway.
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def write_text_atomic(path: Path, text: str, fsync: bool = True) -> None:
    write_bytes_atomic(path, text.encode("utf-8"), fsync=fsync)


def _json_default(obj: Any) -> Any:
    # Provenance may hold numpy scalars/arrays or paths; store them as plain JSON.
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


def dumps_json(obj: Any, indent: int | None = 2) -> str:
    return json.dumps(obj, indent=indent, default=_json_default, ensure_ascii=False)


def encode_png(pixels: np.ndarray, compression: int = 1) -> bytes:
    """PNG bytes of a 2-D uint8 or uint16 array (16-bit stays 16-bit)."""
    arr = np.ascontiguousarray(pixels)
    if arr.dtype not in (np.uint8, np.uint16) or arr.ndim != 2:
        raise ValueError(f"cannot write {arr.dtype} array of shape {arr.shape} as a PNG")
    # Compression 1 (fastest): label maps compress well anyway and exports stay fast.
    ok, buf = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def write_png_atomic(path: Path, pixels: np.ndarray) -> None:
    write_bytes_atomic(Path(path), encode_png(pixels))


def write_png_pair_atomic(image_path: Path, image: np.ndarray, label_path: Path,
                          labels: np.ndarray) -> None:
    """Write an image PNG and its label-map PNG so that the pair becomes visible whole: both
    are encoded and written to temporary names first, then renamed back to back."""
    image_bytes = encode_png(image)  # 16-bit stays 16-bit
    label_bytes = encode_png(labels)
    tmp_image, tmp_label = temp_name(Path(image_path)), temp_name(Path(label_path))
    try:
        tmp_image.write_bytes(image_bytes)
        tmp_label.write_bytes(label_bytes)
        os.replace(tmp_image, image_path)
        os.replace(tmp_label, label_path)
    except BaseException:
        for p in (tmp_image, tmp_label):
            p.unlink(missing_ok=True)
        raise


def read_png_exact(path: Path) -> np.ndarray:
    """The stored array of a PNG the app wrote, bit depth and ids unchanged."""
    from usgen_desktop.io.images import _raster_size, check_pixel_count, check_regular_file

    path = Path(path)
    check_regular_file(path)  # a project file may have been replaced by anything
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as exc:
        raise ImageReadError(f"Could not read '{path.name}' ({exc.strerror or exc}).") from exc
    size = _raster_size(data) if data.size else None
    if size is not None:
        check_pixel_count(path, *size)
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if arr is None:
        raise ImageReadError(f"'{path.name}' is not a readable PNG (corrupt or truncated).")
    if arr.ndim == 3:
        # Stored gray by the app; a 3-channel file means somebody edited it: take channel 0.
        arr = arr[..., 0]
    return arr
