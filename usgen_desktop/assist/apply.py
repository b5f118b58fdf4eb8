"""Where a click-to-mask result may go in a document: inside the probe's field of view.

Qt-free and torch-free, shared by the Smart tool and ``usgen assist``.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def sector_region(doc: Any) -> np.ndarray | None:
    """The field of view of ``doc`` (bool, image size), or None when it has no sector.

    The sector drawn or detected for the image (its ``sector`` tag) wins; else, in a schema
    with a sector label, every labelled pixel (the fan and what lies in it)."""
    from usgen_desktop.core.sector import Sector

    tag = doc.tags.get("sector") if isinstance(doc.tags, dict) else None
    if isinstance(tag, dict):
        try:
            return Sector.from_dict(tag).rasterize(doc.shape)
        except (TypeError, ValueError, KeyError):
            pass
    sid = doc.schema.sector_id
    if sid is not None:
        data = doc.labels.data
        if (data == sid).any():
            return data != 0
    return None


def clip_to_sector(mask: np.ndarray, doc: Any) -> np.ndarray:
    """``mask`` with everything outside the document's field of view removed."""
    region = sector_region(doc)
    return mask if region is None else mask & region
