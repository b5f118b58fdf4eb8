"""A corpus of bad inputs, made in code: hostile and broken files, dataset layouts, command-line
values, model folders and project files, each with what USGen must do with it.

Every case builds its inputs in its own folder, runs ``usgen`` in-process (``cli.main``) or one
reader/writer call, and is judged on: no traceback, the expected sentence, exit code 2 (or 0
where the bad part is skipped and counted), nothing written outside the folder the user chose,
the good data beside the bad kept, and no hang. ``tests/e2e/test_bad_inputs.py`` runs it in CI;
``python -m tests.e2e.bad_inputs`` prints the counts (used for the before/after in issue 14).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import struct
import sys
import tempfile
import threading
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

# -- what a case is --------------------------------------------------------------------------


@dataclass
class Spec:
    """What to run and what must come of it.

    ``argv``: a ``usgen`` command line run in-process; else ``call``: a function whose
    UsgenError counts as exit 2 and whose return value (a string or a list of strings, e.g. the
    problems of an import) is searched for ``expect`` with exit 0.
    ``expect``: a regex the error output (or the returned text) must match.
    ``check``: returns None when the result is right, else what is wrong (a silent wrong result).
    ``allowed``: the folders the run may write to (default: ``<world>/out``).
    """

    argv: list[str] | None = None
    call: Callable[[], Any] | None = None
    expect: str = ""
    rc: int = 2
    check: Callable[[], str | None] | None = None
    allowed: list[Path] = field(default_factory=list)
    timeout: float = 60.0
    after: Callable[[], None] | None = None  # unblocks a hung call (FIFO)


@dataclass
class Case:
    id: str
    area: str
    build: Callable[[Path], Spec]


CASES: list[Case] = []


def case(area: str, name: str | None = None):
    def deco(fn: Callable[[Path], Spec]) -> Callable[[Path], Spec]:
        CASES.append(Case(name or fn.__name__.removeprefix("c_"), area, fn))
        return fn
    return deco


# -- making files ----------------------------------------------------------------------------
def blob_pair(h: int = 40, w: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    r = np.random.default_rng(seed)
    img = np.clip(r.rayleigh(60, (h, w)), 0, 255).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (w // 2, h // 2), (w // 5, h // 6), 10, 0, 360, 255, -1)
    img[mask > 0] //= 3
    return img, mask


def write_png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def good_pairs(root: Path, n: int = 2, prefix: str = "good") -> list[str]:
    """images/ + masks/ with n good pairs; returns their stems."""
    stems = []
    for i in range(n):
        img, mask = blob_pair(seed=i)
        write_png(root / "images" / f"{prefix}{i}.png", img)
        write_png(root / "masks" / f"{prefix}{i}.png", mask)
        stems.append(f"{prefix}{i}")
    return stems


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(path: Path, w: int, h: int) -> Path:
    """A valid-looking PNG whose header claims w x h pixels (a few hundred bytes on disk)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + \
        _chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def bomb_bmp(path: Path, w: int, h: int) -> Path:
    pixels = b"\x00" * 64
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    head = b"BM" + struct.pack("<IHHI", 14 + 40 + len(pixels), 0, 0, 54)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head + info + pixels)
    return path


def bomb_tiff(path: Path, w: int, h: int) -> Path:
    entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8 + 2 + 12 * 10 + 4), (277, 3, 1, 1), (278, 4, 1, h),
               (279, 4, 1, 16), (284, 3, 1, 1)]
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        packed = struct.pack("<HHI", tag, typ, count)
        packed += struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value)
        ifd += packed
    ifd += struct.pack("<I", 0)
    data = b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 16
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def bomb_jpeg(path: Path, w: int, h: int) -> Path:
    ok, buf = cv2.imencode(".jpg", np.zeros((16, 16), np.uint8))
    data = bytearray(buf.tobytes())
    k = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, k + 5, h, w)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def truncated(path: Path, ext: str, keep: float = 0.5) -> Path:
    img, _ = blob_pair(64, 64)
    ok, buf = cv2.imencode(ext, img)
    data = buf.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def five_channel_tiff(path: Path) -> Path:
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.zeros((80, 80, 5), np.uint8), photometric="minisblack",
                     planarconfig="contig")
    return path


def manifest_dataset(root: Path, names: list[Any]) -> None:
    """A label-map dataset (masks/ only) whose manifest.jsonl renames each map."""
    lines = []
    for i, name in enumerate(names):
        _, mask = blob_pair(seed=i)
        write_png(root / "masks" / f"m{i}.png", mask)
        lines.append(json.dumps({"case": f"m{i}", "name": name}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def image_manifest_dataset(root: Path, names: list[Any]) -> None:
    """images/ + masks/ pairs whose manifest.jsonl renames each document."""
    lines = []
    for i, name in enumerate(names):
        img, mask = blob_pair(seed=i)
        write_png(root / "images" / f"m{i}.png", img)
        write_png(root / "masks" / f"m{i}.png", mask)
        lines.append(json.dumps({"case": f"m{i}", "name": name}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def count_pairs(folder: Path) -> int:
    try:
        lines = (folder / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return 0
    return sum(1 for ln in lines if ln.strip())


def expect_pairs(folder: Path, n: int) -> Callable[[], str | None]:
    def check() -> str | None:
        got = count_pairs(folder)
        return None if got == n else f"{got} pairs in {folder.name}, expected {n}"
    return check


def expect_files(folder: Path, pattern: str, n: int) -> Callable[[], str | None]:
    def check() -> str | None:
        got = len(list(folder.glob(pattern))) if folder.is_dir() else 0
        return None if got == n else f"{got} files {pattern} in {folder}, expected {n}"
    return check


def unchanged(path: Path) -> Callable[[], str | None]:
    before = path.read_bytes()

    def check() -> str | None:
        return None if path.is_file() and path.read_bytes() == before else f"{path} changed"
    return check


def all_of(*checks: Callable[[], str | None] | None) -> Callable[[], str | None]:
    def check() -> str | None:
        for c in checks:
            if c is not None and (msg := c()):
                return msg
        return None
    return check


# -- running one case ------------------------------------------------------------------------
@dataclass
class Outcome:
    id: str
    area: str
    kind: str  # clean | traceback | hang | escape | silent | unclear
    detail: str = ""
    rc: int | None = None
    err: str = ""


_NOISE = re.compile(r"\[ERROR:|\[ WARN:|libpng|libtiff|Corrupt JPEG|Premature end", re.I)


def _snapshot(root: Path) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for n in filenames + dirnames:
            out.add(os.path.join(dirpath, n))
    return out


def run_case(c: Case, base: Path) -> Outcome:
    world = base / c.id / "a" / "b" / "world"
    (world / "in").mkdir(parents=True)
    try:
        spec = c.build(world)
    except Exception:  # a broken case is a bug of the corpus: report it loudly
        return Outcome(c.id, c.area, "traceback", "case setup failed:\n" + traceback.format_exc())
    allowed = [Path(p) for p in (spec.allowed or [world / "out"])]
    before = _snapshot(base / c.id)
    result: dict[str, Any] = {}

    def target() -> None:
        from usgen_desktop.errors import UsgenError

        try:
            if spec.argv is not None:
                from usgen_desktop.cli.main import main

                try:
                    result["rc"] = main([str(a) for a in spec.argv])
                except SystemExit as exc:  # argparse
                    result["rc"] = exc.code if isinstance(exc.code, int) else 2
            else:
                assert spec.call is not None
                try:
                    value = spec.call()
                except UsgenError as exc:
                    if str(exc):  # a subprocess case has printed its own error already
                        print(f"usgen: error: {exc}", file=sys.stderr)
                    result["rc"] = 2
                else:
                    result["rc"] = 0
                    if isinstance(value, (list, tuple)):
                        value = "\n".join(str(v) for v in value)
                    if value:
                        print(str(value), file=sys.stderr)
        except BaseException:
            result["tb"] = traceback.format_exc()

    err_file = tempfile.TemporaryFile()
    sys.stderr.flush()
    saved_fd = os.dup(2)
    saved_err, saved_out = sys.stderr, sys.stdout
    text_err = io.StringIO()
    os.dup2(err_file.fileno(), 2)
    sys.stderr, sys.stdout = text_err, io.StringIO()
    try:
        th = threading.Thread(target=target, daemon=True)
        th.start()
        th.join(spec.timeout)
        hung = th.is_alive()
        if hung and spec.after is not None:
            spec.after()
            th.join(5)
    finally:
        sys.stderr, sys.stdout = saved_err, saved_out
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
    err_file.seek(0)
    fd_err = err_file.read().decode("utf-8", "replace")
    err_file.close()
    err = text_err.getvalue() + fd_err
    rc = result.get("rc")
    new = _snapshot(base / c.id) - before
    escaped = sorted(p for p in new if not any(
        Path(p) == a or a in Path(p).parents for a in allowed)
        and not Path(p).is_relative_to(world / "in"))
    if hung:
        return Outcome(c.id, c.area, "hang", "did not finish", rc, err)
    if "tb" in result or "Traceback (most recent call last)" in err:
        return Outcome(c.id, c.area, "traceback", result.get("tb", err)[-1500:], rc, err)
    if escaped:
        return Outcome(c.id, c.area, "escape", f"wrote {escaped[:3]}", rc, err)
    wrong = spec.check() if spec.check is not None else None
    if rc == 0 and spec.rc != 0:
        return Outcome(c.id, c.area, "silent", f"exit 0, expected {spec.rc}", rc, err)
    if wrong:
        return Outcome(c.id, c.area, "silent", wrong, rc, err)
    if rc != spec.rc:
        return Outcome(c.id, c.area, "unclear", f"exit {rc}, expected {spec.rc}", rc, err)
    if spec.expect and not re.search(spec.expect, err, re.I | re.S):
        kind = "silent" if spec.rc == 0 else "unclear"
        return Outcome(c.id, c.area, kind, f"no /{spec.expect}/ in: {err[-400:]!r}", rc, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if spec.rc == 2:
        errors = [ln for ln in lines if "error:" in ln]
        if len(errors) != 1:
            return Outcome(c.id, c.area, "unclear", f"{len(errors)} error lines: {err[-400:]!r}",
                           rc, err)
    if any(_NOISE.search(ln) for ln in lines):
        return Outcome(c.id, c.area, "unclear", f"decoder noise on stderr: {err[-300:]!r}", rc, err)
    return Outcome(c.id, c.area, "clean", "", rc, err)


# ================================ the cases =================================================
def _reader(world: Path, path: Path, expect: str) -> Spec:
    from usgen_desktop.io import read_image

    return Spec(call=lambda: read_image(path), expect=expect)


def _mask_reader(world: Path, path: Path, expect: str) -> Spec:
    from usgen_desktop.io import read_mask

    return Spec(call=lambda: read_mask(path), expect=expect)


_BIG = r"(too large|pixels)"

# -- readers: resource limits ---------------------------------------------------------------
for _w, _h in ((30000, 30000), (100000, 100000), (60000, 2000)):
    for _kind, _maker, _ext in (("png", bomb_png, ".png"), ("bmp", bomb_bmp, ".bmp"),
                                ("tiff", bomb_tiff, ".tif"), ("jpeg", bomb_jpeg, ".jpg")):
        if _kind == "jpeg" and max(_w, _h) > 65535:
            continue

        def _build(world: Path, maker=_maker, ext=_ext, w=_w, h=_h) -> Spec:
            return _reader(world, maker(world / "in" / f"bomb{ext}", w, h), _BIG)
        case("reader", f"bomb_{_kind}_{_w}x{_h}")(_build)


@case("reader")
def c_bomb_png_as_mask(world: Path) -> Spec:
    return _mask_reader(world, bomb_png(world / "in" / "m.png", 30000, 30000), _BIG)


@case("reader")
def c_bomb_nifti_header(world: Path) -> Spec:
    import nibabel as nib

    img = nib.Nifti1Image(np.zeros((4, 4), np.uint8), np.eye(4))
    path = world / "in" / "big.nii"
    nib.save(img, str(path))
    data = bytearray(path.read_bytes())
    struct.pack_into("<hhh", data, 40, 2, 30000, 30000)  # dim[0..2]
    path.write_bytes(bytes(data))
    return _reader(world, path, _BIG)


@case("reader")
def c_bomb_metaimage_header(world: Path) -> Spec:
    path = world / "in" / "big.mhd"
    path.write_text("ObjectType = Image\nNDims = 2\nDimSize = 30000 30000\n"
                    "ElementType = MET_UCHAR\nElementDataFile = big.raw\n")
    (world / "in" / "big.raw").write_bytes(b"\x00" * 64)
    return _reader(world, path, _BIG)


@case("reader")
def c_bomb_dicom_header(world: Path) -> Spec:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    meta.MediaStorageSOPInstanceUID = "1.2.3"
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.Rows, ds.Columns = 30000, 30000
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = b"\x00" * 64
    path = world / "in" / "big.dcm"
    ds.save_as(str(path), enforce_file_format=True)
    return _reader(world, path, _BIG)


# -- readers: not regular files -------------------------------------------------------------
def _fifo(world: Path, name: str) -> tuple[Path, Callable[[], None]]:
    path = world / "in" / name
    os.mkfifo(path)

    def release() -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:
            pass
    return path, release


@case("reader")
def c_fifo_png(world: Path) -> Spec:
    path, release = _fifo(world, "x.png")
    s = _reader(world, path, r"not a regular file|not an image file|FIFO|pipe")
    s.timeout, s.after = 10, release
    return s


@case("reader")
def c_fifo_tif(world: Path) -> Spec:
    path, release = _fifo(world, "x.tif")
    s = _reader(world, path, r"not a regular file|not an image file|FIFO|pipe")
    s.timeout, s.after = 10, release
    return s


@case("reader")
def c_fifo_dcm(world: Path) -> Spec:
    path, release = _fifo(world, "x.dcm")
    s = _reader(world, path, r"not a regular file|not an image file|FIFO|pipe")
    s.timeout, s.after = 10, release
    return s


@case("reader")
def c_fifo_mask(world: Path) -> Spec:
    path, release = _fifo(world, "m.png")
    s = _mask_reader(world, path, r"not a regular file|not an image file|FIFO|pipe")
    s.timeout, s.after = 10, release
    return s


@case("reader")
def c_device_symlink(world: Path) -> Spec:
    path = world / "in" / "dev.png"
    os.symlink("/dev/zero", path)
    s = _reader(world, path, r"not a regular file|device")
    s.timeout = 10
    return s


@case("reader")
def c_folder_named_png(world: Path) -> Spec:
    (world / "in" / "dir.png").mkdir()
    return _reader(world, world / "in" / "dir.png", r"folder")


@case("reader")
def c_missing_file(world: Path) -> Spec:
    return _reader(world, world / "in" / "nope.png", r"does not exist")


# -- readers: damaged and odd files ---------------------------------------------------------
for _ext in (".png", ".jpg", ".bmp", ".tif"):
    def _build_t(world: Path, ext=_ext) -> Spec:
        return _reader(world, truncated(world / "in" / f"cut{ext}", ext),
                       r"truncated|corrupt|damaged|ends early")
    case("reader", f"truncated_{_ext[1:]}")(_build_t)


@case("reader")
def c_truncated_bmp_header_only(world: Path) -> Spec:
    return _reader(world, truncated(world / "in" / "cut2.bmp", ".bmp", keep=0.02),
                   r"truncated|corrupt|damaged")


@case("reader")
def c_empty_png(world: Path) -> Spec:
    (world / "in" / "e.png").write_bytes(b"")
    return _reader(world, world / "in" / "e.png", r"empty")


@case("reader")
def c_text_as_png(world: Path) -> Spec:
    (world / "in" / "t.png").write_text("hello, not an image")
    return _reader(world, world / "in" / "t.png", r"corrupt|not really")


@case("reader")
def c_garbage_tif(world: Path) -> Spec:
    (world / "in" / "g.tif").write_bytes(os.urandom(300))
    return _reader(world, world / "in" / "g.tif", r"corrupt|not a TIFF")


@case("reader")
def c_garbage_dcm(world: Path) -> Spec:
    (world / "in" / "g.dcm").write_bytes(b"\x00" * 128 + b"DICM" + os.urandom(50))
    return _reader(world, world / "in" / "g.dcm", r"corrupt|DICOM|decoded")


@case("reader")
def c_garbage_nii(world: Path) -> Spec:
    (world / "in" / "g.nii").write_bytes(os.urandom(400))
    return _reader(world, world / "in" / "g.nii", r"corrupt|NIfTI")


@case("reader")
def c_unknown_suffix(world: Path) -> Spec:
    (world / "in" / "x.gif").write_bytes(b"GIF89a")
    return _reader(world, world / "in" / "x.gif", r"not a format")


@case("reader")
def c_five_channel_tiff(world: Path) -> Spec:
    return _reader(world, five_channel_tiff(world / "in" / "five.tif"), r"5 channels")


@case("reader")
def c_five_channel_tiff_mask(world: Path) -> Spec:
    return _mask_reader(world, five_channel_tiff(world / "in" / "five.tif"), r"5 channels")


@case("reader")
def c_one_pixel_png(world: Path) -> Spec:
    return _reader(world, write_png(world / "in" / "one.png", np.zeros((1, 1), np.uint8)),
                   r"2-D image|too small")


@case("reader")
def c_tiff_frame_out_of_range(world: Path) -> Spec:
    import tifffile

    path = world / "in" / "stack.tif"
    tifffile.imwrite(path, np.zeros((3, 20, 20), np.uint8))
    from usgen_desktop.io import read_image

    return Spec(call=lambda: read_image(path, frame=7), expect=r"frame 7 does not exist")


def _gray_mask(world: Path, values: tuple[int, ...]) -> Path:
    m = np.zeros((30, 40), np.uint8)
    for k, v in enumerate(values):
        m[:, k * 10: k * 10 + 10] = v
    return write_png(world / "in" / "levels.png", m)


@case("reader")
def c_mask_0_128_255(world: Path) -> Spec:
    """Two structures stored as gray levels must not merge into one label without a word."""
    from usgen_desktop.io import read_mask

    path = _gray_mask(world, (0, 128, 255, 0))
    out: dict[str, Any] = {}

    def call() -> Any:
        import warnings

        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            lm = read_mask(path)
        out["ids"] = lm.ids()
        return [str(w.message) for w in got]

    def check() -> str | None:
        return None if len(out.get("ids", [])) == 3 else f"ids {out.get('ids')} (merged)"
    return Spec(call=call, rc=0, expect=r"gray levels|levels", check=check)


@case("dataset")
def c_dataset_mask_0_128_255(world: Path) -> Spec:
    good_pairs(world / "in")
    m = np.zeros((40, 48), np.uint8)
    m[5:15, 5:15], m[20:30, 20:30] = 128, 255
    write_png(world / "in" / "masks" / "good0.png", m)
    return Spec(argv=["export", "--from", world / "in", "--out", world / "out", "-q"], rc=0,
                expect=r"good0.*gray levels|gray levels.*good0",
                check=expect_pairs(world / "out", 2))


# -- datasets: a bad file among good ones ----------------------------------------------------
def _mixed(world: Path, bad: Callable[[Path], Any], expect: str, n_good: int = 2,
           argv: list[str] | None = None) -> Spec:
    good_pairs(world / "in", n_good)
    bad(world / "in" / "images")
    return Spec(argv=argv or ["export", "--from", world / "in", "--out", world / "out", "-q"],
                rc=0, expect=expect, check=expect_pairs(world / "out", n_good))


_DATASET_BAD = {
    "bomb_png": (lambda d: bomb_png(d / "bomb.png", 30000, 30000), _BIG),
    "bomb_png_huge": (lambda d: bomb_png(d / "bomb.png", 100000, 100000), _BIG),
    "bomb_bmp": (lambda d: bomb_bmp(d / "bomb.bmp", 30000, 30000), _BIG),
    "bomb_tiff": (lambda d: bomb_tiff(d / "bomb.tif", 30000, 30000), _BIG),
    "bomb_jpeg": (lambda d: bomb_jpeg(d / "bomb.jpg", 30000, 30000), _BIG),
    "truncated_png": (lambda d: truncated(d / "cut.png", ".png"), r"cut\.png.*truncated"),
    "truncated_bmp": (lambda d: truncated(d / "cut.bmp", ".bmp"), r"cut\.bmp"),
    "truncated_jpg": (lambda d: truncated(d / "cut.jpg", ".jpg"), r"cut\.jpg.*truncated"),
    "five_channel_tiff": (lambda d: five_channel_tiff(d / "five.tif"), r"5 channels"),
    "empty_png": (lambda d: (d / "e.png").write_bytes(b""), r"empty"),
    "text_png": (lambda d: (d / "t.png").write_text("x"), r"t\.png"),
}

for _name, (_bad, _exp) in _DATASET_BAD.items():
    def _build_m(world: Path, bad=_bad, exp=_exp) -> Spec:
        return _mixed(world, bad, exp)
    case("dataset", f"mixed_{_name}")(_build_m)


@case("dataset")
def c_mixed_fifo(world: Path) -> Spec:
    good_pairs(world / "in")
    os.mkfifo(world / "in" / "images" / "pipe.png")
    return Spec(argv=["export", "--from", world / "in", "--out", world / "out", "-q"], rc=0,
                check=expect_pairs(world / "out", 2), timeout=20)


@case("dataset")
def c_mixed_bomb_mask(world: Path) -> Spec:
    good_pairs(world / "in", 2)
    img, _ = blob_pair(seed=5)
    write_png(world / "in" / "images" / "b.png", img)
    bomb_png(world / "in" / "masks" / "b.png", 30000, 30000)
    return Spec(argv=["export", "--from", world / "in", "--out", world / "out", "-q"], rc=0,
                expect=_BIG, check=expect_pairs(world / "out", 2))


@case("dataset")
def c_only_bad_file_one_sentence(world: Path) -> Spec:
    bomb_png(world / "in" / "bomb.png", 30000, 30000)
    return Spec(argv=["export", "--from", world / "in" / "bomb.png", "--out", world / "out"],
                expect=_BIG)


@case("dataset")
def c_all_bad_folder_one_sentence(world: Path) -> Spec:
    bomb_png(world / "in" / "images" / "a.png", 30000, 30000)
    truncated(world / "in" / "images" / "b.png", ".png")
    return Spec(argv=["export", "--from", world / "in", "--out", world / "out"],
                expect=r"could be read|none of")


@case("dataset")
def c_deform_with_bomb_mask(world: Path) -> Spec:
    manifest_dataset(world / "in", ["a", "b"])
    bomb_png(world / "in" / "masks" / "zz.png", 30000, 30000)
    return Spec(argv=["deform", "--masks", world / "in", "--out", world / "out", "--n", "1",
                      "-q"], rc=0, expect=_BIG,
                check=expect_files(world / "out" / "masks", "*.png", 2))


@case("dataset")
def c_gui_import_good_and_bomb(world: Path) -> Spec:
    """The GUI's multi-file import: the good file imports, the bomb is one problem."""
    good = write_png(world / "in" / "good.png", blob_pair()[0])
    bomb = bomb_png(world / "in" / "bomb.png", 30000, 30000)
    out: dict[str, Any] = {}

    def call() -> Any:
        from usgen_desktop.core.labels import load_preset
        from usgen_desktop.core.tasks import CancelToken
        from usgen_desktop.gui.project_io import documents_from_files

        docs, problems = documents_from_files([good, bomb], load_preset("busi"),
                                              lambda p: None, CancelToken())
        out["docs"] = [d.name for d in docs]
        return problems

    return Spec(call=call, rc=0, expect=r"bomb\.png.*" + _BIG,
                check=lambda: None if out.get("docs") == ["good"] else f"docs {out.get('docs')}")


# -- datasets: reads outside the dataset root (Decathlon) -----------------------------------
def _decathlon(world: Path, entries: list[Any]) -> Path:
    root = world / "in" / "ds"
    for i in range(2):
        img, mask = blob_pair(seed=i)
        write_png(root / "imagesTr" / f"c{i}.png", img)
        write_png(root / "labelsTr" / f"c{i}.png", (mask > 0).astype(np.uint8))
    outside_img, outside_mask = blob_pair(seed=9)
    write_png(world / "in" / "secret.png", outside_img)
    write_png(world / "in" / "secret_label.png", (outside_mask > 0).astype(np.uint8))
    training = [{"image": f"./imagesTr/c{i}.png", "label": f"./labelsTr/c{i}.png"}
                for i in range(2)] + entries
    (root / "dataset.json").write_text(json.dumps({
        "name": "x", "labels": {"0": "background", "1": "lesion"}, "modality": {"0": "US"},
        "training": training}))
    return root


def _no_secret(world: Path) -> Callable[[], str | None]:
    def check() -> str | None:
        man = world / "out" / "manifest.jsonl"
        if man.is_file() and "secret" in man.read_text(encoding="utf-8"):
            return "a file outside the dataset root was imported and exported"
        return None
    return check


_DECATHLON_BAD = {
    "dotdot_image": [{"image": "../secret.png", "label": "./labelsTr/c0.png"}],
    "dotdot_label": [{"image": "./imagesTr/c1.png", "label": "../secret_label.png"}],
    "absolute_image": [{"image": "@ABS@/secret.png", "label": "./labelsTr/c0.png"}],
    "nul_image": [{"image": "./imagesTr/c0\u0000.png", "label": "./labelsTr/c0.png"}],
    "number_image": [{"image": 5, "label": "./labelsTr/c0.png"}],
    "list_label": [{"image": "./imagesTr/c0.png", "label": ["a", "b"]}],
    "deep_dotdot": [{"image": "./imagesTr/../../secret.png", "label": None}],
}

for _name, _entries in _DECATHLON_BAD.items():
    def _build_d(world: Path, entries=_entries) -> Spec:
        entries = json.loads(json.dumps(entries).replace("@ABS@", str(world / "in")))
        root = _decathlon(world, entries)
        return Spec(argv=["export", "--from", root, "--out", world / "out", "-q"], rc=0,
                    expect=r"outside the dataset|not a valid|not a file name|skipped",
                    check=all_of(expect_pairs(world / "out", 2), _no_secret(world)))
    case("dataset", f"decathlon_{_name}")(_build_d)


@case("dataset")
def c_decathlon_not_json(world: Path) -> Spec:
    root = _decathlon(world, [])
    (root / "dataset.json").write_text("{ not json")
    return Spec(argv=["export", "--from", root, "--out", world / "out"], expect=r"not valid JSON")


@case("dataset")
def c_decathlon_json_list(world: Path) -> Spec:
    root = _decathlon(world, [])
    (root / "dataset.json").write_text("[1, 2]")
    return Spec(argv=["export", "--from", root, "--out", world / "out"], expect=r"dataset\.json")


@case("dataset")
def c_decathlon_training_entries_not_dicts(world: Path) -> Spec:
    root = _decathlon(world, ["just a string", 7, None])
    return Spec(argv=["export", "--from", root, "--out", world / "out", "-q"], rc=0,
                check=expect_pairs(world / "out", 2))


@case("dataset")
def c_sidecar_not_json(world: Path) -> Spec:
    good_pairs(world / "in")
    (world / "in" / "usgen.json").write_text("{")
    return Spec(argv=["export", "--from", world / "in", "--out", world / "out"],
                expect=r"usgen\.json.*not valid JSON")


@case("dataset")
def c_sidecar_unknown_preset(world: Path) -> Spec:
    good_pairs(world / "in")
    (world / "in" / "usgen.json").write_text(json.dumps({"schema": "no-such-preset"}))
    return Spec(argv=["export", "--from", world / "in", "--out", world / "out"],
                expect=r"no-such-preset")


@case("dataset")
def c_sidecar_schema_garbage(world: Path) -> Spec:
    good_pairs(world / "in")
    (world / "in" / "usgen.json").write_text(json.dumps({"schema": {"labels": "x"}}))
    return Spec(argv=["export", "--from", world / "in", "--out", world / "out"],
                expect=r"usgen\.json|schema|label")


@case("dataset")
def c_sidecar_classes_list(world: Path) -> Spec:
    good_pairs(world / "in")
    (world / "in" / "usgen.json").write_text(json.dumps({"classes": ["a"]}))
    return Spec(argv=["export", "--from", world / "in", "--out", world / "out"],
                expect=r"classes")


@case("dataset")
def c_manifest_lines_missing_keys(world: Path) -> Spec:
    good_pairs(world / "in")
    (world / "in" / "manifest.jsonl").write_text(
        '{"name": "no case"}\n[1,2]\n"str"\n{"case": "good0"}\n{"case": "good1", "name": 7}\n'
        '{"case": "good0", "tags": "notadict", "provenance": 5}\n')
    return Spec(argv=["export", "--from", world / "in", "--out", world / "out", "-q"], rc=0,
                check=expect_pairs(world / "out", 2))


for _val in ("-1", "nan", "inf", "0", "abc"):
    def _build_pm(world: Path, val=_val) -> Spec:
        good_pairs(world / "in")
        (world / "in" / "manifest.csv").write_text(f"image,pixel_mm\ngood0.png,{val}\n")

        def check() -> str | None:
            text = (world / "out" / "manifest.jsonl").read_text(encoding="utf-8") \
                if (world / "out" / "manifest.jsonl").is_file() else ""
            for line in text.splitlines():
                try:
                    rec = json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(
                        ValueError(c)))
                except ValueError:
                    return "manifest.jsonl is not JSON (NaN or Infinity written)"
                sp = rec.get("pixel_spacing")
                if sp and not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0
                                  for v in sp):
                    return f"pixel spacing {sp} written"
            return None
        return Spec(argv=["export", "--from", world / "in", "--out", world / "out", "-q"],
                    rc=0, expect=r"pixel_mm|pixel size", check=all_of(
                        check, expect_pairs(world / "out", 2)))
    case("dataset", f"pixel_mm_{_val}")(_build_pm)


# -- names from data: no write may leave the output folder ----------------------------------
_HOSTILE = {
    "dotdot": "../../ESCAPED",
    "dotdot_deep": "../../../../ESCAPED",
    "absolute": "@ABS@/ESCAPED_ABS",
    "nul": "bad\u0000name",
    "long": "x" * 300,
    "dot": ".",
    "dotdot_only": "..",
    "empty": "",
    "slashes": "a/b/c",
    "backslash": "..\\..\\ESCAPED",
    "unicode": "échographie_日本語_🙂",
    "number": 12345,
    "dict": {"a": 1},
    "newline": "line\nbreak",
    "hidden": ".hidden",
}


def _hostile(world: Path, name: Any) -> Any:
    return name.replace("@ABS@", str(world.parent)) if isinstance(name, str) else name


for _key, _name in _HOSTILE.items():
    def _build_def(world: Path, name=_name) -> Spec:
        manifest_dataset(world / "in", [_hostile(world, name), "plain"])
        return Spec(argv=["deform", "--masks", world / "in", "--out", world / "out", "--n", "1",
                          "-q"], rc=0, check=expect_files(world / "out" / "masks", "*.png", 2))
    case("names", f"deform_name_{_key}")(_build_def)

    def _build_sec(world: Path, name=_name) -> Spec:
        image_manifest_dataset(world / "in", [_hostile(world, name), "plain"])
        return Spec(argv=["sector", "detect", world / "in", "--out", world / "out"], rc=0,
                    check=expect_files(world / "out", "*_sector.png", 2))
    case("names", f"sector_name_{_key}")(_build_sec)


for _key in ("dotdot", "absolute", "nul", "long"):
    def _build_exp(world: Path, name=_HOSTILE[_key]) -> Spec:
        image_manifest_dataset(world / "in", [_hostile(world, name), "plain"])
        return Spec(argv=["export", "--from", world / "in", "--out", world / "out", "-q"], rc=0,
                    check=expect_pairs(world / "out", 2))
    case("names", f"export_name_{_key}")(_build_exp)

    def _build_gen(world: Path, name=_HOSTILE[_key]) -> Spec:
        manifest_dataset(world / "in", [_hostile(world, name), "plain"])
        return Spec(argv=["generate", "--masks", world / "in", "--out", world / "out",
                          "--backend", "speckle", "--no-progress"], rc=0,
                    check=expect_pairs(world / "out", 2))
    case("names", f"generate_name_{_key}")(_build_gen)

    def _build_lab(world: Path, name=_HOSTILE[_key]) -> Spec:
        image_manifest_dataset(world / "in", [_hostile(world, name), "plain"])
        return Spec(argv=["sector", "detect", world / "in", "--out", world / "out",
                          "--labels-out", world / "out" / "lab", "--sector-id", "9"], rc=0,
                    check=expect_files(world / "out" / "lab" / "masks", "*.png", 2))
    case("names", f"sector_labels_name_{_key}")(_build_lab)


def _long_file_dataset(world: Path) -> Path:
    stem = "L" * 240
    img, mask = blob_pair()
    write_png(world / "in" / "images" / f"{stem}.png", img)
    write_png(world / "in" / "masks" / f"{stem}.png", mask)
    return world / "in"


@case("names")
def c_long_file_name_deform(world: Path) -> Spec:
    src = _long_file_dataset(world)
    return Spec(argv=["deform", "--masks", src, "--out", world / "out", "--n", "1", "-q"], rc=0,
                check=expect_files(world / "out" / "masks", "*.png", 1))


@case("names")
def c_long_file_name_sector(world: Path) -> Spec:
    src = _long_file_dataset(world)
    return Spec(argv=["sector", "detect", src, "--out", world / "out"], rc=0,
                check=expect_files(world / "out", "*_sector.png", 1))


@case("names")
def c_long_file_name_export(world: Path) -> Spec:
    src = _long_file_dataset(world)
    return Spec(argv=["export", "--from", src, "--out", world / "out", "-q"], rc=0,
                check=expect_pairs(world / "out", 1))


@case("names")
def c_long_file_name_generate(world: Path) -> Spec:
    src = _long_file_dataset(world)
    return Spec(argv=["generate", "--masks", src, "--out", world / "out", "--backend", "speckle",
                      "--no-progress"], rc=0, check=expect_pairs(world / "out", 1))


# -- projects ---------------------------------------------------------------------------------
def _project(world: Path, mutate: Callable[[dict], None]) -> Path:
    from usgen_desktop.core.document import Document
    from usgen_desktop.core.image import UltrasoundImage
    from usgen_desktop.core.labels import LabelMap, load_preset
    from usgen_desktop.io.project import Project

    folder = world / "out" / "proj"
    schema = load_preset("busi")
    proj = Project.create(folder, schema, "p")
    for i in range(2):
        img, mask = blob_pair(seed=i)
        proj.add([Document(labels=LabelMap((mask > 0).astype(np.uint8)), schema=schema,
                           image=UltrasoundImage(img), name=f"doc{i}")])
    proj.save()
    meta = json.loads((folder / "project.json").read_text(encoding="utf-8"))
    mutate(meta)
    (folder / "project.json").write_text(json.dumps(meta), encoding="utf-8")
    write_png(world / "in" / "secret.png", blob_pair(seed=7)[0])
    return folder


def _open_and_save(folder: Path, n_docs: int) -> Spec:
    from usgen_desktop.io.project import Project

    out: dict[str, Any] = {}

    def call() -> Any:
        proj = Project.open(folder)
        for d in proj.documents:  # an edit, so save writes every label map again
            d.labels.data[0, 0] = 1
            d.revision += 1
        proj.save()
        out["n"] = len(proj.documents)
        return proj.problems

    return Spec(call=call, rc=0,
                check=lambda: None if out.get("n") == n_docs else f"{out.get('n')} documents")


def _set_uid(value: Any) -> Callable[[dict], None]:
    def mutate(meta: dict) -> None:
        meta["documents"][0]["uid"] = value
    return mutate


for _key, _uid in (("dotdot", "../../PROJ_ESCAPED"), ("absolute", "@ABS@/PROJ_ABS"),
                   ("nul", "a\u0000b"), ("long", "u" * 400), ("slash", "a/b"),
                   ("number", 17), ("empty", "")):
    def _build_p(world: Path, uid=_uid) -> Spec:
        uid = uid.replace("@ABS@", str(world.parent)) if isinstance(uid, str) else uid
        return _open_and_save(_project(world, _set_uid(uid)), 2)
    case("project", f"project_uid_{_key}")(_build_p)


@case("project")
def c_project_image_path_outside(world: Path) -> Spec:
    def mutate(meta: dict) -> None:
        meta["documents"][0]["image"] = "../../../in/secret.png"
    folder = _project(world, mutate)
    from usgen_desktop.io.project import Project

    return Spec(call=lambda: Project.open(folder).problems, rc=0,
                expect=r"points outside")


@case("project")
def c_project_labels_path_absolute(world: Path) -> Spec:
    def mutate(meta: dict) -> None:
        meta["documents"][0]["labels"] = str(world / "in" / "secret.png")
    folder = _project(world, mutate)
    from usgen_desktop.io.project import Project

    return Spec(call=lambda: Project.open(folder).problems, rc=0,
                expect=r"points outside")


@case("project")
def c_project_documents_not_list(world: Path) -> Spec:
    def mutate(meta: dict) -> None:
        meta["documents"] = {"a": 1}
    folder = _project(world, mutate)
    return Spec(argv=["export", "--from", folder, "--out", world / "out" / "exp"],
                expect=r"damaged|no documents|project")


@case("project")
def c_project_entries_not_dicts(world: Path) -> Spec:
    def mutate(meta: dict) -> None:
        meta["documents"] += ["x", 5, None]
    folder = _project(world, mutate)
    return Spec(argv=["export", "--from", folder, "--out", world / "out" / "exp", "-q"], rc=0,
                expect=r"could not be loaded|damaged", check=expect_pairs(world / "out" / "exp", 2))


@case("project")
def c_project_json_garbage(world: Path) -> Spec:
    folder = _project(world, lambda m: None)
    (folder / "project.json").write_text("{{{")
    return Spec(argv=["export", "--from", folder, "--out", world / "out" / "exp"],
                expect=r"damaged")


@case("project")
def c_project_newer_version(world: Path) -> Spec:
    folder = _project(world, lambda m: m.update(version=99))
    return Spec(argv=["export", "--from", folder, "--out", world / "out" / "exp"],
                expect=r"newer USGen")


@case("project")
def c_project_bad_spacing(world: Path) -> Spec:
    def mutate(meta: dict) -> None:
        meta["documents"][0]["pixel_spacing"] = [-1, "nan"]
    folder = _project(world, mutate)
    return Spec(argv=["export", "--from", folder, "--out", world / "out" / "exp", "-q"], rc=0,
                check=expect_pairs(world / "out" / "exp", 2))


@case("project")
def c_project_autosave_hostile_uid(world: Path) -> Spec:
    folder = _project(world, lambda m: None)
    adir = folder / ".autosave"
    (adir / "labels").mkdir(parents=True)
    (adir / "autosave.json").write_text(json.dumps({
        "version": 1, "labels": ["../../../../in/secret"],
        "new_documents": [{"uid": "../../AUTO_ESCAPED", "name": "x", "image": None,
                           "labels": "../../../../in/secret.png", "shape": [4, 4]}],
        "removed": [], "order": []}))
    from usgen_desktop.io.project import Project

    out: dict[str, Any] = {}

    def call() -> Any:
        proj = Project.open(folder)
        proj.restore_autosave()
        proj.save()
        out["n"] = len(proj.documents)
        return proj.problems
    return Spec(call=call, rc=0, check=lambda: None if out.get("n") == 2 else
                f"{out.get('n')} documents after restoring a hostile autosave")


def _replace_labels(folder: Path, make: Callable[[Path], Any]) -> None:
    meta = json.loads((folder / "project.json").read_text(encoding="utf-8"))
    target = folder / meta["documents"][0]["labels"]
    target.unlink()
    make(target)


@case("project")
def c_project_label_bomb(world: Path) -> Spec:
    folder = _project(world, lambda m: None)
    _replace_labels(folder, lambda p: bomb_png(p, 30000, 30000))
    return Spec(argv=["export", "--from", folder, "--out", world / "out" / "exp", "-q"], rc=0,
                expect=_BIG, check=expect_pairs(world / "out" / "exp", 1))


@case("project")
def c_project_label_fifo(world: Path) -> Spec:
    folder = _project(world, lambda m: None)
    _replace_labels(folder, lambda p: os.mkfifo(p))
    return Spec(argv=["export", "--from", folder, "--out", world / "out" / "exp", "-q"], rc=0,
                expect=r"not a regular file", check=expect_pairs(world / "out" / "exp", 1),
                timeout=20)


@case("reader")
def c_nifti_infinite_spacing(world: Path) -> Spec:
    import nibabel as nib

    img, mask = blob_pair()
    nii = nib.Nifti1Image(img.T.copy(), np.eye(4))
    nii.header["pixdim"][1:3] = [np.inf, -1.0]
    (world / "in" / "images").mkdir(parents=True, exist_ok=True)
    nib.save(nii, str(world / "in" / "images" / "scan.nii"))
    # with its mask: export writes annotated images only (an image that never had a mask is
    # left out, the one rule of the GUI and the CLI)
    write_png(world / "in" / "masks" / "scan.png", mask)

    def check() -> str | None:
        text = (world / "out" / "manifest.jsonl").read_text(encoding="utf-8")
        rec = json.loads(text.splitlines()[0], parse_constant=lambda c: float("nan"))
        sp = rec.get("pixel_spacing")
        return None if sp is None else f"pixel spacing {sp} written"
    return Spec(argv=["export", "--from", world / "in", "--out", world / "out",
                      "-q"], rc=0, check=check)


@case("dataset")
def c_export_resume_hostile_manifest(world: Path) -> Spec:
    """An unfinished export folder whose manifest lists files outside it: nothing outside is
    taken as 'finished' or touched, and every pair is written."""
    good_pairs(world / "in", 2)
    out = world / "out"
    from usgen_desktop.cli.main import main

    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        assert main(["export", "--from", str(world / "in"), "--out", str(out), "-q"]) == 0
    write_png(world / "victim.png", blob_pair()[0])
    marker = json.loads((out / ".usgen-export.json").read_text(encoding="utf-8"))
    marker["complete"] = False
    (out / ".usgen-export.json").write_text(json.dumps(marker), encoding="utf-8")
    recs = [json.loads(ln) for ln in (out / "manifest.jsonl").read_text().splitlines()]
    recs[0]["image"] = recs[0]["label"] = "../victim.png"
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (out / "images" / f"{recs[0]['case']}.png").unlink()
    return Spec(argv=["export", "--from", world / "in", "--out", out, "-q"], rc=0,
                check=all_of(expect_pairs(out, 2), expect_files(out / "images", "*.png", 2),
                             lambda: None if (world / "victim.png").is_file() else "victim gone"))


# -- command line: numeric values -------------------------------------------------------------
def _deform_argv(world: Path, *extra: str) -> list[Any]:
    manifest_dataset(world / "in", ["a"])
    return ["deform", "--masks", world / "in", "--out", world / "out", "-q", *extra]


_DEFORM_BAD = {
    "grid_huge": (["--grid", "100000"], r"--grid"),
    "grid_small": (["--grid", "2"], r"--grid"),
    "rotation_nan": (["--rotation", "nan"], r"--rotation"),
    "rotation_inf": (["--rotation", "inf"], r"--rotation"),
    "rotation_neg": (["--rotation", "-5"], r"--rotation"),
    "max_disp_inf": (["--max-disp", "inf"], r"--max-disp"),
    "max_disp_nan": (["--max-disp", "nan"], r"--max-disp"),
    "translate_big": (["--translate", "1.5"], r"--translate"),
    "scale_min_zero": (["--scale-min", "0"], r"--scale-min"),
    "scale_max_nan": (["--scale-max", "nan"], r"--scale-max"),
    "shear_90": (["--shear", "90"], r"--shear"),
    "n_zero": (["--n", "0"], r"--n"),
    "n_huge": (["--n", "10000000"], r"--n"),
    "n_text": (["--n", "five"], r"--n"),
    "seed_neg": (["--seed", "-3"], r"--seed"),
}
for _key, (_extra, _exp) in _DEFORM_BAD.items():
    def _build_da(world: Path, extra=_extra, exp=_exp) -> Spec:
        return Spec(argv=_deform_argv(world, *extra), expect=exp)
    case("cli", f"deform_{_key}")(_build_da)


@case("cli")
def c_deform_out_is_file(world: Path) -> Spec:
    argv = _deform_argv(world)
    (world / "out").write_text("keep me")
    return Spec(argv=argv, expect=r"is a file|not a folder", check=unchanged(world / "out"))


@case("cli")
def c_deform_missing_masks(world: Path) -> Spec:
    return Spec(argv=["deform", "--masks", world / "in" / "nope", "--out", world / "out"],
                expect=r"does not exist")


@case("cli")
def c_sector_out_is_file(world: Path) -> Spec:
    image_manifest_dataset(world / "in", ["a"])
    (world / "out").write_text("keep me")
    return Spec(argv=["sector", "detect", world / "in", "--out", world / "out"],
                expect=r"is a file|not a folder", check=unchanged(world / "out"))


for _v in ("0", "300", "-1"):
    def _build_sid(world: Path, v=_v) -> Spec:
        image_manifest_dataset(world / "in", ["a"])
        return Spec(argv=["sector", "detect", world / "in", "--out", world / "out",
                          "--labels-out", world / "out" / "l", "--sector-id", v],
                    expect=r"--sector-id")
    case("cli", f"sector_id_{_v}")(_build_sid)


@case("cli")
def c_export_out_is_file(world: Path) -> Spec:
    good_pairs(world / "in")
    (world / "out").write_text("keep me")
    return Spec(argv=["export", "--from", world / "in", "--out", world / "out"],
                expect=r"is a file", check=unchanged(world / "out"))


for _v in ("-1", "0", "1000"):
    def _build_id(world: Path, v=_v) -> Spec:
        good_pairs(world / "in")
        return Spec(argv=["export", "--from", world / "in", "--out", world / "out",
                          "--format", "nnunet", "--id", v], expect=r"--id")
    case("cli", f"export_id_{_v}")(_build_id)


@case("cli")
def c_export_missing_source(world: Path) -> Spec:
    return Spec(argv=["export", "--from", world / "in" / "nope", "--out", world / "out"],
                expect=r"does not exist")


def _gen_argv(world: Path, *extra: Any) -> list[Any]:
    manifest_dataset(world / "in", ["a"])
    return ["generate", "--masks", world / "in", "--out", world / "out", "--no-progress", *extra]


_GEN_BAD = {
    "param_bogus": (["--backend", "speckle", "--param", "bogus=1"], r"bogus.*frequency_mhz"),
    "param_typo": (["--backend", "speckle", "--param", "dynamic_range=10"],
                   r"dynamic_range.*dynamic_range_db"),
    "param_strength_speckle": (["--backend", "speckle", "--param", "strength=0"], r"strength"),
    "param_sdm_unknown": (["--backend", "sdm", "--param", "nope=1"], r"nope.*sampler"),
    "param_no_equals": (["--backend", "speckle", "--param", "novalue"], r"KEY=VALUE"),
    "per_mask_zero": (["--per-mask", "0"], r"--per-mask"),
    "per_mask_huge": (["--per-mask", "100000000"], r"--per-mask"),
    "steps_zero": (["--steps", "0"], r"--steps"),
    "steps_neg": (["--steps", "-1"], r"--steps"),
    "guidance_nan": (["--guidance", "nan"], r"--guidance"),
    "guidance_inf": (["--guidance", "inf"], r"--guidance"),
    "size_zero": (["--size", "0x0"], r"--size"),
    "size_text": (["--size", "big"], r"--size"),
    "size_huge": (["--size", "100000x100000"], r"--size"),
    "shard_zero": (["--shard", "0/3"], r"--shard"),
    "shard_over": (["--shard", "4/3"], r"--shard"),
    "shard_text": (["--shard", "a/b"], r"--shard"),
    "format_bad": (["--format", "zip"], r"format .zip."),
    "backend_bad": (["--backend", "gan"], r"--backend|backend"),
    "seed_neg": (["--seed", "-1"], r"--seed"),
}
for _key, (_extra, _exp) in _GEN_BAD.items():
    def _build_g(world: Path, extra=_extra, exp=_exp) -> Spec:
        return Spec(argv=_gen_argv(world, *extra), expect=exp)
    case("cli", f"generate_{_key}")(_build_g)


@case("cli")
def c_generate_out_is_file(world: Path) -> Spec:
    argv = _gen_argv(world, "--backend", "speckle")
    (world / "out").write_text("keep me")
    return Spec(argv=argv, expect=r"is a file|not a folder", check=unchanged(world / "out"))


@case("cli")
def c_generate_resume_line_without_item(world: Path) -> Spec:
    argv = _gen_argv(world, "--backend", "speckle", "--per-mask", "2")
    from usgen_desktop.cli.main import main

    with contextlib.redirect_stderr(io.StringIO()):
        assert main([str(a) for a in argv] + ["--shard", "1/2"]) == 0
    man = world / "out" / "manifest.jsonl"
    lines = man.read_text(encoding="utf-8").splitlines()
    rec = json.loads(lines[0])
    rec.pop("item")
    man.write_text(json.dumps(rec) + "\n" + '{"image": 5}\n' + "[1]\n", encoding="utf-8")
    return Spec(argv=argv, rc=0, expect=r"item|skipped|ignored",
                check=expect_files(world / "out" / "images", "*.png", 2))


# model folders
def _sdm_model(world: Path, mutate: Callable[[dict], None] | None = None,
               weights: str = "safetensors") -> Path:
    folder = world / "in" / "model"
    src = Path(__file__).resolve().parents[2] / "models" / "sdm-default"
    (folder / "unet").mkdir(parents=True)
    meta = json.loads((src / "usgen_model.json").read_text(encoding="utf-8"))
    if mutate:
        mutate(meta)
    (folder / "usgen_model.json").write_text(json.dumps(meta))
    (folder / "unet" / "config.json").write_text((src / "unet" / "config.json").read_text())
    if weights == "bin":
        (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04not a pickle")
    elif weights == "truncated":
        data = (src / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
        (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(data[:5000])
    return folder


_MODEL_BAD = {
    "size_negative": (lambda m: m.update(size=[-5, 0]), "safetensors", r"size"),
    "size_absurd": (lambda m: m.update(size=[100000, 100000]), "safetensors", r"size"),
    "size_text": (lambda m: m.update(size="big"), "safetensors", r"size|incomplete"),
    "kind_other": (lambda m: m.update(kind="gan"), "safetensors", r"another kind"),
    "schema_missing": (lambda m: m.pop("schema"), "safetensors", r"incomplete|schema"),
    "only_bin": (None, "bin", r"safetensors"),
    "truncated_weights": (None, "truncated", r"damaged|cannot be loaded|truncated"),
}
for _key, (_mut, _w, _exp) in _MODEL_BAD.items():
    def _build_mod(world: Path, mut=_mut, w=_w, exp=_exp) -> Spec:
        model = _sdm_model(world, mut, w)
        return Spec(argv=_gen_argv(world, "--backend", "sdm", "--model", model, "--steps", "1",
                                   "--device", "cpu"), expect=exp, timeout=120)
    case("model", f"sdm_model_{_key}")(_build_mod)


@case("model")
def c_sdm_model_json_garbage(world: Path) -> Spec:
    model = _sdm_model(world)
    (model / "usgen_model.json").write_text("{")
    return Spec(argv=_gen_argv(world, "--backend", "sdm", "--model", model),
                expect=r"cannot be read")


@case("model")
def c_sdm_model_missing(world: Path) -> Spec:
    return Spec(argv=_gen_argv(world, "--backend", "sdm", "--model", world / "in" / "nope"),
                expect=r"does not exist")


def _sd_folder_with_bins(world: Path) -> Path:
    sd = world / "in" / "sd"
    (sd / "model_index.json").parent.mkdir(parents=True)
    (sd / "model_index.json").write_text("{}")
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "controlnet"):
        (sd / part).mkdir()
        (sd / part / "config.json").write_text("{}")
        if part not in ("tokenizer", "scheduler"):
            (sd / part / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    return sd


@case("model")
def c_controlnet_only_pickles(world: Path) -> Spec:
    sd = _sd_folder_with_bins(world)
    return Spec(argv=_gen_argv(world, "--backend", "controlnet", "--model", sd, "--steps", "1",
                               "--device", "cpu"), expect=r"safetensors", timeout=120)


@case("model")
def c_lora_base_only_pickles(world: Path) -> Spec:
    sd = _sd_folder_with_bins(world)
    good_pairs(world / "in" / "data")
    return Spec(argv=["train", "lora", "--base", sd, "--controlnet", sd / "controlnet",
                      "--data", world / "in" / "data", "--out", world / "out", "--steps", "1",
                      "--device", "cpu", "-q"], expect=r"safetensors", timeout=120)


# train
def _train_argv(world: Path, *extra: Any) -> list[Any]:
    good_pairs(world / "in" / "data")
    return ["train", "sdm", "--data", world / "in" / "data", "--out", world / "out", "-q",
            "--device", "cpu", *extra]


_TRAIN_BAD = {
    "blocks_zero": (["--blocks", "0,0"], r"--blocks"),
    "blocks_odd": (["--blocks", "3,5"], r"--blocks"),
    "blocks_text": (["--blocks", "a,b"], r"--blocks"),
    "blocks_huge": (["--blocks", "100000,200000"], r"--blocks"),
    "lr_nan": (["--lr", "nan"], r"--lr"),
    "lr_inf": (["--lr", "inf"], r"--lr"),
    "lr_zero": (["--lr", "0"], r"--lr"),
    "layers_zero": (["--layers-per-block", "0"], r"--layers-per-block"),
    "steps_zero": (["--steps", "0"], r"--steps"),
    "batch_zero": (["--batch", "0"], r"--batch"),
    "size_zero": (["--size", "0"], r"--size"),
    "size_huge": (["--size", "100000"], r"--size"),
    "checkpoint_zero": (["--checkpoint-every", "0"], r"--checkpoint-every"),
    "sample_neg": (["--sample-every", "-1"], r"--sample-every"),
}
for _key, (_extra, _exp) in _TRAIN_BAD.items():
    def _build_t2(world: Path, extra=_extra, exp=_exp) -> Spec:
        return Spec(argv=_train_argv(world, *extra), expect=exp)
    case("cli", f"train_sdm_{_key}")(_build_t2)


_LORA_BAD = {"rank_zero": (["--rank", "0"], r"--rank"), "lr_nan": (["--lr", "nan"], r"--lr"),
             "steps_zero": (["--steps", "0"], r"--steps"), "size_odd": (["--size", "7"], r"--size")}
for _key, (_extra, _exp) in _LORA_BAD.items():
    def _build_lo(world: Path, extra=_extra, exp=_exp) -> Spec:
        good_pairs(world / "in" / "data")
        return Spec(argv=["train", "lora", "--base", world / "in" / "sd", "--data",
                          world / "in" / "data", "--out", world / "out", *extra], expect=exp)
    case("cli", f"train_lora_{_key}")(_build_lo)


@case("cli")
def c_train_out_is_file(world: Path) -> Spec:
    argv = _train_argv(world, "--steps", "1", "--blocks", "8,16", "--size", "16")
    (world / "out").write_text("keep me")
    return Spec(argv=argv, expect=r"is a file|not a folder", check=unchanged(world / "out"),
                timeout=120)


def _broken_checkpoint(world: Path, breakage: str) -> list[Any]:
    """A run folder whose latest checkpoint is damaged the way ``breakage`` says."""
    argv = _train_argv(world, "--steps", "2", "--blocks", "8,16", "--size", "16",
                       "--checkpoint-every", "1", "--sample-every", "0")
    from usgen_desktop.cli.main import main

    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        assert main([str(a) for a in argv]) == 0
    ck = sorted((world / "out" / "checkpoints").glob("step_*"))[-1]
    if breakage == "weights":
        data = (ck / "model.safetensors").read_bytes()
        (ck / "model.safetensors").write_bytes(data[: len(data) // 3])
    elif breakage == "state":
        (ck / "state.json").write_text('{"step": 2, "arch"')
    elif breakage == "state_fields":
        (ck / "state.json").write_text('{"step": "x"}')
    return [*argv[:argv.index("--steps")], "--steps", "4", *argv[argv.index("--steps") + 2:],
            "--resume"]


for _br in ("weights", "state", "state_fields"):
    def _build_ck(world: Path, br=_br) -> Spec:
        argv = _broken_checkpoint(world, br)
        return Spec(argv=argv, expect=r"checkpoint|damaged|cannot be", timeout=180)
    case("model", f"train_resume_broken_{_br}")(_build_ck)


# evaluate
def _eval_argv(world: Path, *extra: Any) -> list[Any]:
    good_pairs(world / "in" / "real")
    good_pairs(world / "in" / "syn")
    return ["evaluate", "--real", world / "in" / "real", "--synthetic", world / "in" / "syn",
            "--out", world / "out", "--quiet", *extra]


_EVAL_BAD = {
    "batch_zero": (["--batch-size", "0"], r"--batch-size"),
    "steps_neg": (["--steps", "-1"], r"--steps"),
    "test_fraction_big": (["--test-fraction", "1.5"], r"--test-fraction"),
    "test_fraction_zero": (["--test-fraction", "0"], r"--test-fraction"),
    "test_fraction_nan": (["--test-fraction", "nan"], r"--test-fraction"),
    "folds_zero": (["--folds", "0"], r"--folds"),
    "folds_one": (["--folds", "1"], r"--folds"),
    "realism_epochs_zero": (["--realism-epochs", "0"], r"--realism-epochs"),
    "repeats_zero": (["--repeats", "0"], r"--repeats"),
    "threads_zero": (["--threads", "0"], r"--threads"),
    "real_fraction_zero": (["--real-fraction", "0"], r"--real-fraction"),
    "size_odd": (["--size", "7"], r"--size"),
    "epochs_zero": (["--epochs", "0"], r"--epochs"),
}
for _key, (_extra, _exp) in _EVAL_BAD.items():
    def _build_e(world: Path, extra=_extra, exp=_exp) -> Spec:
        return Spec(argv=_eval_argv(world, *extra), expect=exp)
    case("cli", f"evaluate_{_key}")(_build_e)


@case("cli")
def c_evaluate_dev_split_missing(world: Path) -> Spec:
    return Spec(argv=_eval_argv(world, "--dev-split", world / "in" / "nope.txt"),
                expect=r"nope\.txt")


# -- a few as real subprocesses: what a terminal shows ------------------------------------------
def _sub(world: Path, argv: list[Any], expect: str, rc: int = 2,
         check: Callable[[], str | None] | None = None) -> Spec:
    import subprocess

    repo = Path(__file__).resolve().parents[2]

    def call() -> Any:
        proc = subprocess.run([sys.executable, "-m", "usgen_desktop.cli.main",
                               *[str(a) for a in argv]], capture_output=True, text=True,
                              timeout=120, cwd=repo,
                              env={**os.environ, "PYTHONPATH": str(repo)})
        sys.stderr.write(proc.stderr)
        if proc.returncode == 2:
            from usgen_desktop.errors import UsgenError

            raise UsgenError("")
        if proc.returncode != 0:
            raise RuntimeError(f"exit {proc.returncode}")
        return ""
    return Spec(call=call, expect=expect, rc=rc, check=check, timeout=150)


@case("subprocess")
def c_sub_truncated_bmp_dataset(world: Path) -> Spec:
    good_pairs(world / "in")
    truncated(world / "in" / "images" / "cut.bmp", ".bmp")
    return _sub(world, ["export", "--from", world / "in", "--out", world / "out", "-q"],
                r"cut\.bmp", rc=0, check=expect_pairs(world / "out", 2))


@case("subprocess")
def c_sub_bomb_single(world: Path) -> Spec:
    bomb_png(world / "in" / "bomb.png", 100000, 100000)
    return _sub(world, ["export", "--from", world / "in" / "bomb.png", "--out", world / "out"],
                _BIG)


@case("subprocess")
def c_sub_deform_grid(world: Path) -> Spec:
    return _sub(world, _deform_argv(world, "--grid", "100000"), r"--grid")


@case("subprocess")
def c_sub_train_blocks(world: Path) -> Spec:
    return _sub(world, _train_argv(world, "--blocks", "0,0"), r"--blocks")


@case("subprocess")
def c_sub_generate_param(world: Path) -> Spec:
    return _sub(world, _gen_argv(world, "--backend", "speckle", "--param", "bogus=1"),
                r"bogus")


# -- running the whole corpus -----------------------------------------------------------------
def run_all(base: Path, only: str | None = None) -> list[Outcome]:
    outs = []
    for c in CASES:
        if only and not re.search(only, c.id):
            continue
        outs.append(run_case(c, base))
    return outs


def summary(outs: list[Outcome]) -> dict[str, int]:
    counts = {"cases": len(outs)}
    for k in ("clean", "unclear", "traceback", "hang", "silent", "escape"):
        counts[k] = sum(o.kind == k for o in outs)
    return counts


if __name__ == "__main__":
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    only = sys.argv[1] if len(sys.argv) > 1 else None
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        os.environ["USGEN_DATA_DIR"] = str(Path(tmp) / "_data")
        os.environ["USGEN_CONFIG_DIR"] = str(Path(tmp) / "_cfg")
        outcomes = []
        for c in CASES:
            if only and not re.search(only, c.id):
                continue
            o = run_case(c, Path(tmp))
            outcomes.append(o)
            last = o.detail.splitlines()[-1] if o.detail.strip() else ""
            print(f"{o.kind:9s} {o.area:10s} {o.id}: {last}"[:240], flush=True)
    print(json.dumps(summary(outcomes)))
    by_area: dict[str, dict[str, int]] = {}
    for o in outcomes:
        by_area.setdefault(o.area, {}).setdefault(o.kind, 0)
        by_area[o.area][o.kind] += 1
    print(json.dumps(by_area))
