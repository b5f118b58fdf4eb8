"""The few named errors a user can cause. Each carries one clear sentence for the user.

The GUI shows ``str(error)`` in a dialog; the CLI prints it on one line and exits with 2.
Anything else that escapes is a bug in USGen, not the user's fault.
"""

from __future__ import annotations


class UsgenError(Exception):
    """Base of every error a user can cause; ``str()`` is one sentence meant for them."""


class ImageReadError(UsgenError):
    """A file could not be read as an image (corrupt, truncated, unknown format)."""


class UnsupportedFormatError(ImageReadError):
    """The file's format is not one USGen reads."""


class MaskMismatchError(UsgenError):
    """A mask does not fit its image (size or content)."""


class DatasetError(UsgenError):
    """A folder is not a dataset USGen recognises, or holds no pairs."""


class ExportError(UsgenError):
    """An export could not be written (target exists, not writable, disk full)."""


class ModelError(UsgenError):
    """A model folder is missing, incomplete or broken."""


class OutOfMemoryError(UsgenError):
    """The device ran out of memory; the message says what to try instead."""


class Cancelled(UsgenError):
    """The user cancelled a long task; what was finished is kept."""


class UnsafePathError(UsgenError):
    """A name or path taken from data would reach outside the folder it belongs in."""


class MissingSectorError(UsgenError):
    """A label map has no fan (sector) region and the model needs one. ``str()`` is the short
    sentence the GUI shows beside a "Detect the fan" button; ``cli_hint`` is what the command
    line adds (the GUI has the button instead)."""

    cli_hint = ("Detect it first: `usgen sector detect DATASET --out DIR --labels-out DIR`, "
                "then generate from DIR; or use --backend speckle.")
