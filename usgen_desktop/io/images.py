"""Reading ultrasound images: PNG, JPEG, BMP, TIFF, DICOM (incl. cine), NIfTI and MetaImage.

``read_array`` returns the stored pixels as they are (channels last, RGB order) and what the
header says about spacing; ``read_image`` turns them into an :class:`UltrasoundImage`. Masks
use ``read_array`` too (see ``masks.py``), so every format works for both.

Frames: a DICOM cine loop or a multi-page TIFF opens at its first frame unless ``frame`` says
otherwise; a 3-D NIfTI/MetaImage volume opens at its middle slice (slice 0 of a volume is
usually empty). ``meta["frames"]`` tells the caller how many there are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from usgen_desktop.core.image import UltrasoundImage
from usgen_desktop.errors import ImageReadError, UnsupportedFormatError

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
META_SUFFIXES = (".mhd", ".mha")
IMAGE_SUFFIXES = RASTER_SUFFIXES + TIFF_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES + META_SUFFIXES

# The largest image (one frame) USGen decodes: 100 megapixels, far above any ultrasound
# scanner's output, far below what a forged header can claim (a 30000 x 30000 PNG header is a
# few hundred bytes but would take 0.9-3.6 GB to decode). Checked from the header first.
MAX_PIXELS = 100_000_000


@dataclass
class RawImage:
    """Pixels as stored (HxW or HxWxC, RGB order) plus header facts."""

    pixels: np.ndarray
    pixel_spacing: tuple[float, float] | None = None  # (row, column) in mm
    meta: dict[str, Any] = field(default_factory=dict)


def suffix_of(path: Path) -> str:
    """The format suffix, lower case, with ``.nii.gz`` kept whole."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def is_image_file(path: Path) -> bool:
    """True for files whose name says they are an image USGen reads (hidden files excluded)."""
    p = Path(path)
    if p.name.startswith(".") or not p.is_file():
        return False
    suffix = suffix_of(p)
    if suffix in IMAGE_SUFFIXES:
        return True
    # Scanners and PACS exports often write DICOM files without an extension (IM0001).
    return suffix == "" and _looks_like_dicom(p)


def _looks_like_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def check_pixel_count(path: Path, width: int, height: int, what: str = "image") -> None:
    """Refuse, from the header's claim alone, an image too large to decode safely."""
    width, height = int(width), int(height)
    if width < 1 or height < 1:
        raise ImageReadError(
            f"'{Path(path).name}' claims an impossible size of {width}x{height} pixels."
        )
    if width * height > MAX_PIXELS:
        raise ImageReadError(
            f"'{Path(path).name}' claims to be a {width}x{height} pixel {what}, too large to "
            f"open (USGen opens images of up to {MAX_PIXELS // 1_000_000} million pixels)."
        )


def check_regular_file(path: Path) -> None:
    """Refuse what is not a plain file (a pipe, a device, a socket) before opening it: reading
    a FIFO named ``x.png`` would wait forever, a device would never end."""
    import stat

    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ImageReadError(f"The file '{path}' does not exist.") from None
    except OSError as exc:
        raise ImageReadError(f"Could not read '{path.name}' ({exc.strerror or exc}).") from exc
    if stat.S_ISDIR(mode):
        raise ImageReadError(f"'{path.name}' is a folder, not an image file.")
    if not stat.S_ISREG(mode):
        raise ImageReadError(
            f"'{path.name}' is not a regular file (a pipe, device or socket); USGen reads "
            "image files only."
        )


def read_array(path: Path, frame: int | None = None) -> RawImage:
    """The stored pixels of one 2-D image (or one frame/slice) of any supported format."""
    path = Path(path)
    check_regular_file(path)
    raw = _read_any(path, frame)
    px = raw.pixels
    if px.ndim == 3 and px.shape[2] > 4:
        raise ImageReadError(
            f"'{path.name}' has {px.shape[2]} channels; USGen reads gray, gray + alpha, RGB and "
            "RGBA images."
        )
    return raw


def _read_any(path: Path, frame: int | None) -> RawImage:
    suffix = suffix_of(path)
    if suffix in RASTER_SUFFIXES:
        return _read_raster(path, frame)
    if suffix in TIFF_SUFFIXES:
        return _read_tiff(path, frame)
    if suffix in DICOM_SUFFIXES or _looks_like_dicom(path):
        return _read_dicom(path, frame)
    if suffix in NIFTI_SUFFIXES:
        return _read_nifti(path, frame)
    if suffix in META_SUFFIXES:
        from usgen_desktop.io.metaimage import read_metaimage

        return read_metaimage(path, frame)
    raise UnsupportedFormatError(
        f"'{path.name}' is not a format USGen reads (PNG, JPEG, BMP, TIFF, DICOM, NIfTI, MHD)."
    )


def read_image(path: Path, frame: int | None = None) -> UltrasoundImage:
    """An :class:`UltrasoundImage` from a file; RGB becomes gray with ``was_color`` set.

    An RGB file whose three channels are identical (BUSI stores gray images as RGB) is gray,
    not colour: ``was_color`` marks only real colour such as Doppler overlays.
    """
    path = Path(path)
    raw = read_array(path, frame)
    if raw.pixel_spacing is not None and not all(
            math.isfinite(v) and 0 < v < 1000 for v in raw.pixel_spacing):
        raw.pixel_spacing = None  # a header's NaN, infinite or negative spacing means "unknown"
    px = raw.pixels
    was_color = False
    if px.ndim == 3:
        px, was_color = _collapse_channels(px, path)
    if px.ndim != 2 or px.shape[0] < 2 or px.shape[1] < 2:
        raise ImageReadError(f"'{path.name}' does not hold a 2-D image (its shape is {px.shape}).")
    px = _storable(px)
    try:
        image = UltrasoundImage(
            px, source=path, was_color=was_color, pixel_spacing=raw.pixel_spacing,
            meta=raw.meta,
        )
    except ImageReadError as exc:
        raise ImageReadError(f"'{path.name}' could not be used as an image: {exc}") from exc
    return image


def _collapse_channels(px: np.ndarray, path: Path) -> tuple[np.ndarray, bool]:
    """Gray pixels from HxWxC; True when the channels really differed (colour)."""
    c = px.shape[2]
    if c == 1:
        return px[..., 0], False
    if c == 2:  # gray + alpha
        return px[..., 0], False
    if c not in (3, 4):
        raise ImageReadError(f"'{path.name}' has {c} channels; USGen reads gray or RGB images.")
    rgb = px[..., :3]
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        return rgb[..., 0], False
    from usgen_desktop.core.image import to_gray

    return to_gray(rgb), True


def _storable(px: np.ndarray) -> np.ndarray:
    """uint8/uint16 where the values allow it exactly; other data goes to UltrasoundImage."""
    if px.dtype in (np.uint8, np.uint16):
        return px
    if px.dtype == bool:
        return px.astype(np.uint8) * 255
    if px.size and np.issubdtype(px.dtype, np.number):
        lo, hi = px.min(), px.max()
        integral = np.issubdtype(px.dtype, np.integer) or bool(np.all(np.mod(px, 1) == 0))
        if integral and lo >= 0 and hi <= 255:
            return px.astype(np.uint8)
        if integral and lo >= 0 and hi <= 65535:
            return px.astype(np.uint16)
        if np.issubdtype(px.dtype, np.signedinteger) and lo >= -32768 and hi <= 32767:
            # Signed data (some DICOM/NIfTI): shift into the unsigned range, keep every level.
            return (px.astype(np.int32) - int(lo)).astype(np.uint16)
    return px  # UltrasoundImage rescales floats to uint16


def _pick_frame(stack: np.ndarray, frame: int | None, path: Path, default: int = 0) -> np.ndarray:
    n = stack.shape[0]
    index = default if frame is None else int(frame)
    if not 0 <= index < n:
        raise ImageReadError(
            f"'{path.name}' has {n} frames (0-{n - 1}); frame {index} does not exist."
        )
    return stack[index]


# -- PNG / JPEG / BMP ------------------------------------------------------------------
def _quiet_cv2():
    """OpenCV with its own log lines switched off: USGen says what is wrong in one sentence
    (a truncated BMP made OpenCV print ``[ERROR:0@...]`` on the terminal first)."""
    import cv2

    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:  # pragma: no cover - builds without the logging module
        pass
    return cv2


def _read_raster(path: Path, frame: int | None) -> RawImage:
    cv2 = _quiet_cv2()

    try:
        data = np.fromfile(path, np.uint8)
    except OSError as exc:
        raise ImageReadError(f"Could not read '{path.name}' ({exc.strerror or exc}).") from exc
    if data.size == 0:
        raise ImageReadError(f"'{path.name}' is empty (0 bytes).")
    size = _raster_size(data)
    if size is not None:
        check_pixel_count(path, *size)
    _check_complete(path, data)
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if arr is None:
        arr = _read_with_pillow(path)
    if arr.ndim == 3 and arr.shape[2] >= 3:
        # OpenCV gives BGR(A); the rest of USGen thinks in RGB.
        arr = arr[..., [2, 1, 0, *range(3, arr.shape[2])]]
    if frame not in (None, 0):
        raise ImageReadError(f"'{path.name}' has only one frame; frame {frame} does not exist.")
    return RawImage(arr, meta={"frames": 1, "format": suffix_of(path).lstrip(".")})


def _raster_size(data: np.ndarray) -> tuple[int, int] | None:
    """(width, height) as a PNG, BMP or JPEG header states it, without decoding; None when the
    header says nothing (the decoder then judges the file)."""
    import struct

    head = data[:32].tobytes()
    if head.startswith(b"\x89PNG") and len(head) >= 24 and head[12:16] == b"IHDR":
        w, h = struct.unpack(">II", head[16:24])
        return w, h
    if head.startswith(b"BM") and len(head) >= 26:
        (hsize,) = struct.unpack("<I", head[14:18])
        if hsize == 12:
            w, h = struct.unpack("<HH", head[18:22])
        else:
            w, h = struct.unpack("<ii", head[18:26])
        return abs(w) or 0, abs(h) or 0
    if head.startswith(b"\xff\xd8"):
        blob = data.tobytes()
        pos = 2
        while pos + 9 < len(blob):
            if blob[pos] != 0xFF:
                return None
            marker = blob[pos + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                pos += 2
                continue
            (length,) = struct.unpack(">H", blob[pos + 2: pos + 4])
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack(">HH", blob[pos + 5: pos + 9])
                return w, h
            pos += 2 + length
    return None


def _check_complete(path: Path, data: np.ndarray) -> None:
    """Catch truncated PNG/JPEG/BMP files, which decoders would otherwise show half grey (or
    complain about on the terminal before USGen could say anything)."""
    head = data[:8].tobytes()
    tail = data[-64:].tobytes()
    if head.startswith(b"BM") and data.size >= 14:
        import struct

        (declared,) = struct.unpack("<I", data[2:6].tobytes())
        (offset,) = struct.unpack("<I", data[10:14].tobytes())
        if data.size < 54 or declared > data.size or offset >= data.size:
            raise ImageReadError(f"'{path.name}' is truncated (the BMP file ends early).")
    if head.startswith(b"\x89PNG"):
        if b"IEND" not in tail:
            raise ImageReadError(f"'{path.name}' is truncated (the PNG file ends early).")
        blob = data.tobytes()
        if not _png_checksums_ok(blob):
            # Caught here because libpng would print its own error to the terminal first.
            raise ImageReadError(f"'{path.name}' is corrupt (its PNG checksums do not match).")
        if not _png_data_complete(blob):
            # Same reason: libpng prints "Not enough image data" before OpenCV returns.
            raise ImageReadError(
                f"'{path.name}' is truncated or corrupt (its PNG image data is incomplete)."
            )
    if head.startswith(b"\xff\xd8"):
        if b"\xff\xd9" not in tail:
            raise ImageReadError(f"'{path.name}' is truncated (the JPEG file ends early).")


def _png_data_complete(blob: bytes) -> bool:
    """False when the compressed image data (IDAT) is too short to hold the pixels the header
    claims: deflate packs at most about 1032 bytes into one, so fewer IDAT bytes than
    1/1032 of the raw size cannot be a whole image. A cheap bound (no inflating) that catches
    forged headers before libpng prints "Not enough image data" on the terminal."""
    import struct

    width, height, depth, colour = struct.unpack(">IIBB", blob[16:26])
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour, 1)
    need = height * (1 + (width * channels * depth + 7) // 8)
    have, pos = 0, 8
    while pos + 12 <= len(blob):
        (length,) = struct.unpack(">I", blob[pos: pos + 4])
        if blob[pos + 4: pos + 8] == b"IDAT":
            have += length
        pos += 12 + length
    return have * 1032 + 64 >= need


def _png_checksums_ok(blob: bytes) -> bool:
    """Walk the PNG chunks and verify each CRC (fast: zlib.crc32 runs at GB/s)."""
    import struct
    import zlib

    pos, end = 8, len(blob)
    while pos + 12 <= end:
        (length,) = struct.unpack(">I", blob[pos : pos + 4])
        stop = pos + 8 + length
        if stop + 4 > end:
            return False
        (crc,) = struct.unpack(">I", blob[stop : stop + 4])
        if zlib.crc32(blob[pos + 4 : stop]) != crc:
            return False
        if blob[pos + 4 : pos + 8] == b"IEND":
            return True
        pos = stop + 4
    return False


def _read_with_pillow(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif im.mode == "1":
                im = im.convert("L")
            return np.asarray(im)
    except Image.DecompressionBombError as exc:
        raise ImageReadError(
            f"'{path.name}' claims to be too large an image to open safely."
        ) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(
            f"'{path.name}' is corrupt or not really a {suffix_of(path).lstrip('.').upper()} "
            "file."
        ) from exc


# -- TIFF --------------------------------------------------------------------------------
def _read_tiff(path: Path, frame: int | None) -> RawImage:
    try:
        import tifffile
    except ImportError:  # pragma: no cover - tifffile is a dependency
        arr = _read_with_pillow(path)
        return RawImage(arr, meta={"frames": 1, "format": "tiff"})
    try:
        with tifffile.TiffFile(path) as tif:
            n_pages = len(tif.pages)
            series = tif.series[0] if tif.series else None
            _check_tiff_page(path, tif.pages[0])
            if n_pages > 1:
                index = 0 if frame is None else int(frame)
                if not 0 <= index < n_pages:
                    raise ImageReadError(
                        f"'{path.name}' has {n_pages} frames (0-{n_pages - 1}); frame {index} "
                        "does not exist."
                    )
                _check_tiff_page(path, tif.pages[index])
                arr = tif.pages[index].asarray()
            else:
                if series is not None and int(np.prod(series.shape)) > 4 * MAX_PIXELS:
                    raise ImageReadError(
                        f"'{path.name}' holds {series.shape} values, too many to open."
                    )
                arr = series.asarray() if series is not None else tif.pages[0].asarray()
                if arr.ndim == 3 and arr.shape[-1] not in (1, 2, 3, 4):
                    n_pages = arr.shape[0]  # one page holding a stack of frames
                    arr = _pick_frame(arr, frame, path)
                elif frame not in (None, 0):
                    raise ImageReadError(
                        f"'{path.name}' has only one frame; frame {frame} does not exist."
                    )
            spacing = _tiff_spacing(tif.pages[0])
    except ImageReadError:
        raise
    except Exception as exc:  # tifffile raises many types on damaged files
        # Compressed TIFFs (LZW, JPEG, ...) need imagecodecs in tifffile; OpenCV's libtiff
        # decodes them without it.
        arr, n_pages = _read_tiff_cv2(path, frame)
        if arr is None:
            raise ImageReadError(
                f"'{path.name}' is corrupt or not a TIFF file USGen can read."
            ) from exc
        spacing = None
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar RGB
    return RawImage(arr, spacing, {"frames": max(1, n_pages), "format": "tiff"})


def _check_tiff_page(path: Path, page: Any) -> None:
    """Size and channel count of one TIFF page from its tags, before any pixel is decoded."""
    width, height = int(getattr(page, "imagewidth", 0)), int(getattr(page, "imagelength", 0))
    check_pixel_count(path, width, height)
    samples = int(getattr(page, "samplesperpixel", 1) or 1)
    if samples > 4:
        raise ImageReadError(
            f"'{path.name}' has {samples} channels; USGen reads gray, gray + alpha, RGB and "
            "RGBA images."
        )


def _read_tiff_cv2(path: Path, frame: int | None) -> tuple[np.ndarray | None, int]:
    cv2 = _quiet_cv2()

    try:
        ok, pages = cv2.imreadmulti(str(path), flags=cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None, 0
    if not ok or not pages:
        return None, 0
    index = 0 if frame is None else int(frame)
    if not 0 <= index < len(pages):
        raise ImageReadError(
            f"'{path.name}' has {len(pages)} frames (0-{len(pages) - 1}); frame {index} "
            "does not exist."
        )
    arr = pages[index]
    if arr.ndim == 3 and arr.shape[2] >= 3:
        arr = arr[..., [2, 1, 0, *range(3, arr.shape[2])]]  # BGR(A) -> RGB(A)
    return arr, len(pages)


def _tiff_spacing(page: Any) -> tuple[float, float] | None:
    """Pixel spacing in mm from TIFF resolution tags, only when the unit is physical."""
    try:
        tags = page.tags
        unit = tags.get("ResolutionUnit")
        xres, yres = tags.get("XResolution"), tags.get("YResolution")
        if unit is None or xres is None or yres is None:
            return None
        per_mm = {2: 25.4, 3: 10.0}.get(int(unit.value))
        if per_mm is None:
            return None
        xs = xres.value[0] / xres.value[1]
        ys = yres.value[0] / yres.value[1]
        if xs <= 0 or ys <= 0:
            return None
        return (per_mm / ys, per_mm / xs)
    except Exception:  # a broken optional tag must not stop the image from opening
        return None


# -- DICOM -------------------------------------------------------------------------------
def _read_dicom(path: Path, frame: int | None) -> RawImage:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError) as exc:
        raise ImageReadError(f"'{path.name}' is corrupt or not a DICOM file.") from exc
    if "PixelData" not in ds:
        raise ImageReadError(f"'{path.name}' is a DICOM file without an image in it.")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        raise ImageReadError(f"'{path.name}' is a DICOM file without a valid image size.") \
            from None
    check_pixel_count(path, cols, rows)
    n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    index = 0 if frame is None else int(frame)
    if not 0 <= index < n_frames:
        if n_frames == 1:
            raise ImageReadError(f"'{path.name}' has only one frame; frame {index} does not exist.")
        raise ImageReadError(
            f"'{path.name}' has {n_frames} frames (0-{n_frames - 1}); frame {index} does not exist."
        )
    try:
        if n_frames > 1:
            try:
                from pydicom.pixels import pixel_array  # pydicom >= 3: decode one frame only
            except ImportError:
                arr = ds.pixel_array[index]
            else:
                arr = pixel_array(ds, index=index)
        else:
            arr = ds.pixel_array
    except Exception as exc:  # missing codec, truncated pixel data, ...
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", "an unknown encoding")
        raise ImageReadError(
            f"The pixels of '{path.name}' could not be decoded ({name}); the file may be "
            "truncated or use a compression USGen cannot read."
        ) from exc
    if str(getattr(ds, "PhotometricInterpretation", "")) == "MONOCHROME1":
        # MONOCHROME1 stores white as 0; flip so bright echoes stay bright.
        if np.issubdtype(arr.dtype, np.unsignedinteger):
            top = (1 << int(getattr(ds, "BitsStored", arr.dtype.itemsize * 8))) - 1
            arr = (top - arr.astype(np.int64)).clip(0, top).astype(arr.dtype)
        else:
            arr = arr.max() - arr
    meta = {
        "frames": n_frames,
        "format": "dicom",
        "modality": str(getattr(ds, "Modality", "")),
    }
    return RawImage(np.asarray(arr), _dicom_spacing(ds), meta)


def _dicom_spacing(ds: Any) -> tuple[float, float] | None:
    """(row, column) mm from PixelSpacing, else from the ultrasound region calibration."""
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        value = getattr(ds, key, None)
        if value is not None and len(value) == 2:
            try:
                row, col = float(value[0]), float(value[1])
            except (TypeError, ValueError):
                continue
            if row > 0 and col > 0:
                return (row, col)
    regions = getattr(ds, "SequenceOfUltrasoundRegions", None)
    if regions:
        reg = regions[0]
        # Units code 3 = cm; the deltas are cm per pixel.
        if (int(getattr(reg, "PhysicalUnitsXDirection", 0)) == 3
                and int(getattr(reg, "PhysicalUnitsYDirection", 0)) == 3):
            dx = float(getattr(reg, "PhysicalDeltaX", 0) or 0)
            dy = float(getattr(reg, "PhysicalDeltaY", 0) or 0)
            if dx > 0 and dy > 0:
                return (abs(dy) * 10.0, abs(dx) * 10.0)
    return None


# -- NIfTI -------------------------------------------------------------------------------
def _read_nifti(path: Path, frame: int | None) -> RawImage:
    import logging
    import warnings

    import nibabel as nib

    # nibabel reports header oddities (a negative or zero pixel size, say) on its own logger
    # and as warnings; the user gets USGen's one sentence instead, or nothing when it opens
    logging.getLogger("nibabel").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = nib.load(str(path))
        shape = tuple(int(n) for n in img.shape)
    except Exception as exc:  # nibabel raises ImageFileError, EOFError, zlib errors, ...
        raise ImageReadError(f"'{path.name}' is corrupt or not a NIfTI file.") from exc
    if len(shape) >= 2:
        check_pixel_count(path, shape[0], shape[1])
    if int(np.prod(shape)) > 4 * MAX_PIXELS:
        raise ImageReadError(f"'{path.name}' holds {shape} values, too many to open.")
    try:
        data = np.asanyarray(img.dataobj)
        zooms = img.header.get_zooms()
    except Exception as exc:  # nibabel raises ImageFileError, EOFError, zlib errors, ...
        raise ImageReadError(f"'{path.name}' is corrupt or not a NIfTI file.") from exc
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 4 and data.shape[2] == 1:
        data = data[:, :, 0, :]  # 2-D + time: frames along the last axis
    frames = 1
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[:, :, 0]
    elif data.ndim == 3:
        frames = data.shape[2]
        data = _pick_frame(np.moveaxis(data, 2, 0), frame, path, default=frames // 2)
    elif data.ndim != 2:
        raise ImageReadError(
            f"'{path.name}' holds {data.ndim}-D data; USGen opens 2-D images or slices of 3-D."
        )
    elif frame not in (None, 0):
        raise ImageReadError(f"'{path.name}' has only one slice; slice {frame} does not exist.")
    # NIfTI indexes (x, y): x runs along a row. Transpose to (row, column) as written by
    # ITK/SimpleITK and nnU-Net from a 2-D array.
    pixels = np.ascontiguousarray(np.asarray(data).T)
    spacing = None
    if len(zooms) >= 2 and zooms[0] > 0 and zooms[1] > 0:
        spacing = (float(zooms[1]), float(zooms[0]))
    return RawImage(pixels, spacing, {"frames": frames, "format": "nifti"})
