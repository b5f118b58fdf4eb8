"""Reading masks into label maps, filling outline annotations, and ITK-SNAP label files.

Masks come as binary 0/255 (or 0/1) images, index PNGs (ids kept), or as the BUSI download has
them: 1-bit, RGB and RGBA files of the same 0/255 mask. Any of the image formats works.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from usgen_desktop.core.labels import Label, LabelMap, LabelSchema
from usgen_desktop.errors import ImageReadError, MaskMismatchError, UsgenError
from usgen_desktop.io.images import read_array


def mask_to_ids(arr: np.ndarray, name: str = "the mask",
                schema: LabelSchema | None = None, notes: list[str] | None = None) -> np.ndarray:
    """uint8 label ids from a stored mask array (any channels, 8/16-bit, bool).

    A colour-coded mask (channels differ) maps each colour to the schema label of that colour;
    colours the schema lacks get the next free ids in a fixed (sorted) order.

    A gray mask whose brightest value is 255 and that holds a few other gray levels (such as
    0/128/255) is read by this rule: when every level covers solid regions, the levels are
    separate structures and become labels 1, 2, ... in order of brightness, with a sentence in
    ``notes`` (or a warning when ``notes`` is None) saying so; when the extra levels only line
    thin edges (resampling, JPEG), it is one blurred binary mask and is thresholded at 128.
    """
    a = np.asarray(arr)
    if a.ndim == 3:
        c = a.shape[2]
        color = a[..., : min(c, 3)]
        if c >= 3 and a.dtype == np.uint8 and not (
            np.array_equal(color[..., 0], color[..., 1])
            and np.array_equal(color[..., 1], color[..., 2])
        ):
            return _colours_to_ids(color, name, schema)
        gray = color.max(axis=2)
        if c in (2, 4) and not gray.any():
            gray = a[..., -1]  # a mask drawn only into the alpha channel
        a = gray
    if a.ndim != 2:
        raise MaskMismatchError(f"{name} is not a 2-D mask (its shape is {a.shape}).")
    if a.dtype == bool:
        return a.astype(np.uint8)
    if not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.isfinite(a)):
            raise MaskMismatchError(f"{name} holds values that are not numbers.")
        if np.all(np.mod(a, 1) == 0):
            a = a.astype(np.int64)
        else:
            # A float mask (e.g. probabilities or resampled labels): binarise at half its max.
            return (a > 0.5 * float(a.max())).astype(np.uint8) if a.max() > 0 else \
                np.zeros(a.shape, np.uint8)
    if a.size and a.min() < 0:
        raise MaskMismatchError(f"{name} holds negative values; label ids start at 0.")
    if a.dtype == np.uint8 or (a.size and a.max() <= 255):
        a = a.astype(np.uint8, copy=False)
    else:
        values = np.unique(a)
        if len(values) == 2 and values[0] == 0:
            return (a > 0).astype(np.uint8)  # a 16-bit binary mask (0/65535)
        raise MaskMismatchError(f"{name} holds values above 255; label ids must fit in 0-255.")
    counts = np.bincount(a.ravel(), minlength=256)
    present = np.flatnonzero(counts)
    nonzero = present[present > 0]
    if len(nonzero) == 0:
        return a
    if nonzero[-1] == 255:
        if len(nonzero) == 1:
            return (a == 255).astype(np.uint8)  # the usual 0/255 binary mask
        if len(nonzero) <= 8 and _levels_are_regions(a, nonzero):
            lut = np.zeros(256, np.uint8)
            lut[nonzero] = np.arange(1, len(nonzero) + 1)
            levels = ", ".join(str(int(v)) for v in present)
            ids = ", ".join(str(i) for i in range(1, len(nonzero) + 1))
            _note(notes, f"{name} holds {len(present)} gray levels ({levels}); they were read "
                  f"as labels {ids} in order of brightness (background 0).")
            return lut[a]
        lossy = len(nonzero) > 8 or bool(((nonzero >= 128) & (nonzero < 255)).any())
        if lossy:
            # A binary mask whose edges were blurred by resampling or JPEG: threshold it.
            return (a >= 128).astype(np.uint8)
    return a


def _levels_are_regions(a: np.ndarray, levels: np.ndarray) -> bool:
    """True when every gray level holds pixels with all 8 neighbours at that level too (a solid
    region); blurred edges of a binary mask are only a pixel or two wide."""
    import cv2

    kernel = np.ones((3, 3), np.uint8)
    for v in levels.tolist():
        if not cv2.erode((a == v).astype(np.uint8), kernel, borderType=cv2.BORDER_REPLICATE).any():
            return False
    return True


def _note(notes: list[str] | None, sentence: str) -> None:
    if notes is not None:
        notes.append(sentence)
    else:
        import warnings

        warnings.warn(sentence, UserWarning, stacklevel=3)


def _colours_to_ids(rgb: np.ndarray, name: str, schema: LabelSchema | None) -> np.ndarray:
    code = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) \
        | rgb[..., 2].astype(np.uint32)
    colours, inverse = np.unique(code.ravel(), return_inverse=True)
    if len(colours) > 256:
        raise MaskMismatchError(
            f"{name} holds {len(colours)} colours; a colour-coded mask can have at most 256."
        )
    by_colour = {}
    if schema is not None:
        for lab in schema.labels:
            r, g, b = lab.color
            by_colour.setdefault((r << 16) | (g << 8) | b, lab.id)
    by_colour.setdefault(0, 0)  # black is background
    unknown = [c for c in colours.tolist() if c not in by_colour]
    if len(unknown) == 1 and len(colours) - (0 in colours) == 1:
        # One colour on black is a binary mask drawn in colour (e.g. red): label 1.
        by_colour[unknown[0]] = 1
    taken = set(by_colour.values())
    lut = np.zeros(len(colours), np.uint8)
    next_id = 1
    for k, colour in enumerate(colours.tolist()):
        if colour in by_colour:
            lut[k] = by_colour[colour]
            continue
        while next_id in taken:
            next_id += 1
        if next_id > 255:
            raise MaskMismatchError(f"{name} holds more colours than there are label ids.")
        lut[k] = next_id
        taken.add(next_id)
    return lut[inverse].reshape(code.shape)


def read_mask(path: Path, shape: tuple[int, int] | None = None, frame: int | None = None,
              schema: LabelSchema | None = None, notes: list[str] | None = None) -> LabelMap:
    """A label map from a mask file; ``shape`` (height, width) is checked when given.

    ``schema`` lets a colour-coded mask map its colours to the right label ids; ``notes``
    collects sentences about how an unusual mask was read (see ``mask_to_ids``).
    """
    from usgen_desktop.io.images import check_regular_file

    path = Path(path)
    check_regular_file(path)  # before anything opens it: a FIFO would block the open
    indices = _palette_indices(path)
    pixels = indices if indices is not None else read_array(path, frame).pixels
    labels = LabelMap(mask_to_ids(pixels, f"The mask '{path.name}'", schema, notes))
    if shape is not None and labels.shape != tuple(shape):
        raise MaskMismatchError(
            f"The mask '{path.name}' is {labels.shape[1]}x{labels.shape[0]} pixels but its image "
            f"is {shape[1]}x{shape[0]}."
        )
    return labels


def _palette_indices(path: Path) -> np.ndarray | None:
    """The indices of a palette PNG (labelme, PASCAL VOC style label maps), else None.

    Decoders expand a palette to colours; for a label map the index is the label id.
    """
    if path.suffix.lower() != ".png":
        return None
    try:
        with open(path, "rb") as fh:
            head = fh.read(26)
    except OSError:
        return None
    # IHDR colour type (byte 25) 3 = indexed colour.
    if len(head) < 26 or not head.startswith(b"\x89PNG") or head[25] != 3:
        return None
    from PIL import Image

    try:
        with Image.open(path) as im:
            from usgen_desktop.io.images import check_pixel_count

            check_pixel_count(path, *im.size)
            return np.asarray(im) if im.mode == "P" else None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None  # the normal reader gives the one-sentence error


def read_masks_or(paths: Sequence[Path], shape: tuple[int, int] | None = None,
                  label: int = 1) -> LabelMap:
    """OR several binary masks of one image into one label map (BUSI's ``_mask_1``, ...)."""
    if not paths:
        raise ValueError("no mask paths")
    result: np.ndarray | None = None
    for p in paths:
        m = read_mask(p, shape).data > 0
        if result is not None and m.shape != result.shape:
            raise MaskMismatchError(
                f"The mask '{Path(p).name}' is {m.shape[1]}x{m.shape[0]} pixels but the other "
                f"masks of its image are {result.shape[1]}x{result.shape[0]}."
            )
        result = m if result is None else (result | m)
    assert result is not None
    return LabelMap(result.astype(np.uint8) * label)


def fill_outline(outline: np.ndarray) -> np.ndarray:
    """A filled region (bool) from a drawn closed outline such as HC18's head ellipse.

    Fills the holes the outline encloses; when the outline has a gap (fill would leak), an
    ellipse fitted to the outline pixels is filled instead.
    """
    import cv2
    from scipy import ndimage

    line = np.asarray(outline) > 0
    if not line.any():
        return line
    filled = ndimage.binary_fill_holes(line)
    if filled.sum() > 2 * line.sum():
        return filled
    ys, xs = np.nonzero(line)
    if len(xs) < 5:
        return filled
    (cx, cy), (w, h), angle = cv2.fitEllipse(np.stack([xs, ys], 1).astype(np.float32))
    out = np.zeros(line.shape, np.uint8)
    cv2.ellipse(out, ((cx, cy), (w, h), angle), 1, -1)
    return out.astype(bool) | line


# -- ITK-SNAP label description files ----------------------------------------------------
_ITK_HEADER = """\
################################################
# ITK-SnAP Label Description File
# File format:
# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL
# Fields:
#    IDX:   Zero-based index
#    -R-:   Red color component (0..255)
#    -G-:   Green color component (0..255)
#    -B-:   Blue color component (0..255)
#    -A-:   Label transparency (0.00 .. 1.00)
#    VIS:   Label visibility (0 or 1)
#    MSH:   Label mesh visibility (0 or 1)
#  LABEL:   Label description
################################################
"""


def read_itksnap_labels(path: Path) -> LabelSchema:
    """A label schema from an ITK-SNAP label description file (``IDX R G B A VIS MSH "LABEL"``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ImageReadError(f"Could not read '{path.name}' ({exc.strerror or exc}).") from exc
    labels: dict[int, Label] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            parts = shlex.split(line)
            idx = int(parts[0])
            r, g, b = (int(float(x)) for x in parts[1:4])
            vis = int(float(parts[5])) != 0 if len(parts) > 5 else True
            name = parts[7] if len(parts) > 7 else f"label {idx}"
        except (ValueError, IndexError) as exc:
            raise UsgenError(
                f"Line {n} of the ITK-SNAP label file '{path.name}' is not valid."
            ) from exc
        if not 0 <= idx <= 255:
            raise UsgenError(
                f"The ITK-SNAP label file '{path.name}' uses id {idx}; USGen supports 0-255."
            )
        if idx == 0 and name.strip().lower() == "clear label":
            name = "background"
        color = tuple(max(0, min(255, c)) for c in (r, g, b))
        labels[idx] = Label(idx, name, color, visible=vis)  # type: ignore[arg-type]
    if not labels:
        raise UsgenError(f"The ITK-SNAP label file '{path.name}' lists no labels.")
    labels.setdefault(0, Label(0, "background", (0, 0, 0)))
    return LabelSchema(name=path.stem, labels=tuple(labels[i] for i in sorted(labels)))


def write_itksnap_labels(schema: LabelSchema, path: Path) -> None:
    """Write ``schema`` as an ITK-SNAP label description file (id 0 is "Clear Label")."""
    from usgen_desktop.io.atomic import write_text_atomic

    lines = [_ITK_HEADER.rstrip("\n"), '    0     0    0    0        0  0  0    "Clear Label"']
    for lab in schema.labels:
        if lab.id == 0:
            continue
        r, g, b = lab.color
        name = lab.name.replace('"', "'")
        lines.append(
            f"{lab.id:5d} {r:5d} {g:4d} {b:4d} {1.0:8.2f} {int(lab.visible):2d} "
            f"{int(lab.visible):2d}    \"{name}\""
        )
    write_text_atomic(Path(path), "\n".join(lines) + "\n", fsync=False)
