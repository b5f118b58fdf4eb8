"""A small reader and writer for ITK MetaImage (``.mhd`` + raw data, or a single ``.mha``).

Enough of the format for 2-D ultrasound and 3-D volumes: the element types ITK writes, byte
order, zlib compression, spacing and multi-channel data. No SimpleITK needed.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from usgen_desktop.errors import ImageReadError

_TYPES = {
    "MET_UCHAR": np.uint8, "MET_CHAR": np.int8,
    "MET_USHORT": np.uint16, "MET_SHORT": np.int16,
    "MET_UINT": np.uint32, "MET_INT": np.int32,
    "MET_ULONG": np.uint64, "MET_LONG": np.int64,
    "MET_ULONG_LONG": np.uint64, "MET_LONG_LONG": np.int64,
    "MET_FLOAT": np.float32, "MET_DOUBLE": np.float64,
}
_NAMES = {np.dtype(v): k for k, v in reversed(list(_TYPES.items()))}


def _parse_header(text: str) -> dict[str, str]:
    header: dict[str, str] = {}
    for line in text.splitlines():
        if "=" not in line:
            continue
        key, _, value = line.partition("=")
        header[key.strip()] = value.strip()
    return header


def read_metaimage(path: Path, frame: int | None = None):
    """One 2-D image (a chosen slice of a 3-D volume, the middle one by default)."""
    from usgen_desktop.io.images import RawImage, _pick_frame

    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(f"Could not read '{path.name}' ({exc.strerror or exc}).") from exc
    # The header is text up to and including the ElementDataFile line.
    marker = blob.find(b"ElementDataFile")
    if marker < 0:
        raise ImageReadError(f"'{path.name}' is not a MetaImage header (no ElementDataFile).")
    end = blob.find(b"\n", marker)
    end = len(blob) if end < 0 else end + 1
    header = _parse_header(blob[:end].decode("latin-1"))
    try:
        dims = [int(x) for x in header["DimSize"].split()]
        dtype = np.dtype(_TYPES[header["ElementType"].upper()])
    except (KeyError, ValueError) as exc:
        raise ImageReadError(
            f"The MetaImage header '{path.name}' lacks a valid DimSize or ElementType."
        ) from exc
    try:
        channels = int(header.get("ElementNumberOfChannels", "1") or 1)
    except ValueError:
        channels = 0
    from usgen_desktop.io.images import check_pixel_count

    if not dims or min(dims) < 1 or not 1 <= channels <= 4:
        raise ImageReadError(
            f"The MetaImage header '{path.name}' gives an impossible size ({dims}, "
            f"{channels} channels)."
        )
    check_pixel_count(path, dims[0], dims[1])
    msb = (header.get("ElementByteOrderMSB") or header.get("BinaryDataByteOrderMSB") or "False")
    dtype = dtype.newbyteorder(">" if msb.lower() == "true" else "<")
    data_file = header["ElementDataFile"]
    if data_file.upper() == "LOCAL":
        raw = blob[end:]
    elif data_file.upper().startswith("LIST") or "%" in data_file:
        raise ImageReadError(f"'{path.name}' splits its data over several files; not supported.")
    else:
        from usgen_desktop.errors import UnsafePathError
        from usgen_desktop.paths import inside

        try:
            # the header names its data file; it must sit beside the header, not anywhere
            data_path = inside(path.parent, data_file, f"The data file named by '{path.name}'")
            raw = data_path.read_bytes()
        except UnsafePathError as exc:
            raise ImageReadError(str(exc)) from exc
        except OSError as exc:
            raise ImageReadError(
                f"The data file '{data_file}' named by '{path.name}' is missing or unreadable."
            ) from exc
    skip = int(header.get("HeaderSize", "0") or 0)
    if skip > 0:
        raw = raw[skip:]
    elif skip == -1:  # -1: the data is the last bytes of the file
        raw = raw[len(raw) - int(np.prod(dims)) * channels * dtype.itemsize:]
    if header.get("CompressedData", "False").lower() == "true":
        try:
            # never inflate past what the header says (a small file may expand to gigabytes)
            want = int(np.prod(dims)) * channels * dtype.itemsize
            raw = zlib.decompressobj().decompress(raw, want)
        except zlib.error as exc:
            raise ImageReadError(f"The compressed data of '{path.name}' is corrupt.") from exc
    count = int(np.prod(dims)) * channels
    if len(raw) < count * dtype.itemsize:
        raise ImageReadError(
            f"'{path.name}' is truncated: its data holds {len(raw)} bytes, "
            f"{count * dtype.itemsize} expected."
        )
    arr = np.frombuffer(raw, dtype, count).astype(dtype.newbyteorder("="))
    shape = list(reversed(dims)) + ([channels] if channels > 1 else [])
    arr = arr.reshape(shape)  # x varies fastest: numpy order is (z, y, x[, c])
    frames = 1
    if len(dims) == 3:
        frames = dims[2]
        arr = _pick_frame(arr, frame, path, default=frames // 2)
    elif len(dims) != 2:
        raise ImageReadError(f"'{path.name}' holds {len(dims)}-D data; USGen opens 2-D or 3-D.")
    elif frame not in (None, 0):
        raise ImageReadError(f"'{path.name}' has only one slice; slice {frame} does not exist.")
    spacing = None
    sp = header.get("ElementSpacing") or header.get("ElementSize")
    if sp:
        try:
            vals = [float(x) for x in sp.split()]
            if len(vals) >= 2 and vals[0] > 0 and vals[1] > 0:
                spacing = (vals[1], vals[0])  # header is (x, y); ours is (row, column)
        except ValueError:
            spacing = None
    return RawImage(np.ascontiguousarray(arr), spacing, {"frames": frames, "format": "metaimage"})


def write_metaimage(path: Path, pixels: np.ndarray,
                    spacing: tuple[float, float] | None = None) -> None:
    """Write a 2-D image or (z, y, x) volume as ``.mhd`` + ``.raw`` (or one ``.mha`` file): used by tests/tools."""
    path = Path(path)
    arr = np.ascontiguousarray(pixels)
    # A volume is stored (z, y, x) in numpy order; the header lists x first.
    dims = [int(d) for d in reversed(arr.shape)]
    row, col = spacing or (1.0, 1.0)
    local = path.suffix.lower() == ".mha"
    data_name = "LOCAL" if local else path.with_suffix(".raw").name
    lines = [
        "ObjectType = Image",
        f"NDims = {len(dims)}",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        "CompressedData = False",
        f"ElementSpacing = {col} {row}" + (" 1" if len(dims) == 3 else ""),
        f"DimSize = {' '.join(str(d) for d in dims)}",
        f"ElementType = {_NAMES[arr.dtype.newbyteorder('=')]}",
        f"ElementDataFile = {data_name}",
    ]
    head = ("\n".join(lines) + "\n").encode("ascii")
    body = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    if local:
        path.write_bytes(head + body)
    else:
        path.write_bytes(head)
        path.with_suffix(".raw").write_bytes(body)
