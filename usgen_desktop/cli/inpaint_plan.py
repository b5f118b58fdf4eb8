"""What `usgen generate --add-lesion` and `--inpaint` make: per request label map, the source
image to keep, the region to regenerate and the manifest's record of both.

``--add-lesion CLASS`` takes every normal scan of the dataset (an image whose mask has no label
but background or the fan), proposes ``K`` lesions of CLASS on it (``core.lesions``: learned
from the dataset's own masks of that class when it has enough, else the statistics shipped for
its labels), each at a place this class's lesions usually sit, inside the tissue, and asks the
sdm backend to inpaint the image there; the new mask is the scan's mask plus the lesion.
Proposal ``r`` of scan ``m`` is item ``m * K + r`` with seed ``seed_for(--seed, item)``, like
every other item, so shards and resumes agree.

``--inpaint`` regenerates the labelled region (grown by ``--margin``) of each image that has
one, keeping the rest of the source image: inpainting for masks the user painted.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from usgen_desktop.errors import UsgenError


@dataclass
class InpaintPlan:
    """Request maps with their sources; item ``i`` of the request (``count`` per map) is case
    ``f"{base[m]}_{first[m] + i % count:03d}"`` with ``m = i // count``."""

    label_maps: list[Any]
    init_images: list[np.ndarray]
    inpaint_masks: list[np.ndarray]
    docs: list[Any]  # the source document of each map
    classes: list[str | None]
    base: list[str]  # case name stem of each map
    first: list[int]  # repeat number of each map's first item
    records: list[dict[str, Any]]  # the manifest's "inpaint" entry of each map
    count: int = 1
    skipped: list[str] = field(default_factory=list)

    def case(self, item: int) -> tuple[int, str]:
        m, r = divmod(item, self.count)
        return m, f"{self.base[m]}_{self.first[m] + r:03d}"


def _other_labels(labels: np.ndarray, sector_id: int | None) -> bool:
    data = np.asarray(labels)
    fg = data != 0
    if sector_id is not None:
        fg &= data != sector_id
    return bool(fg.any())


def plan_add_lesion(docs: list[Any], cases: list[str], schema: Any, klass: str, per_scan: int,
                    seed: int, margin: int) -> InpaintPlan:
    """``per_scan`` proposed lesions of ``klass`` on every normal scan of ``docs``."""
    from usgen_desktop.core.labels import LabelMap
    from usgen_desktop.core.lesions import (
        allowed_region,
        inpaint_region,
        lesion_label,
        lesion_model_for,
    )
    from usgen_desktop.synthesis.request import seed_for

    sid = schema.sector_id
    normal = [(d, c) for d, c in zip(docs, cases, strict=True)
              if d.image is not None and not _other_labels(d.labels.data, sid)]
    if not normal:
        raise UsgenError("The dataset has no normal scans (images whose masks are empty) to "
                         "add a lesion to; --inpaint regenerates painted regions instead.")
    own = [(d.labels.data, d.klass) for d in docs if _other_labels(d.labels.data, sid)]
    model = lesion_model_for(schema, own, klass)
    label = lesion_label(schema)
    plan = InpaintPlan([], [], [], [], [], [], [], [], count=1)
    for m, (doc, case) in enumerate(normal):
        image = doc.image.to_uint8()
        allowed = allowed_region(doc.labels.data, sid, image)
        for r in range(per_scan):
            item = m * per_scan + r
            item_seed = seed_for(seed, item)
            try:
                prop = model.propose(doc.labels.shape, klass, item_seed, allowed=allowed)
            except UsgenError as exc:
                raise UsgenError(f"'{doc.name}': {exc}") from None
            data = doc.labels.data.copy()
            data[prop.mask] = label
            plan.label_maps.append(LabelMap(data))
            plan.init_images.append(image)
            plan.inpaint_masks.append(inpaint_region(prop.mask, None, margin))
            plan.docs.append(doc)
            plan.classes.append(klass)
            plan.base.append(case)
            plan.first.append(r)
            plan.records.append({
                "mode": "add-lesion", "class": klass, "label": label,
                "lesion_seed": item_seed, "shape_model": model.source,
                "lesion": prop.region(), "margin": margin,
                "region": _summary(plan.inpaint_masks[-1]),
            })
    return plan


def plan_inpaint(docs: list[Any], cases: list[str], schema: Any, classes: list[str | None],
                 per_map: int, margin: int) -> InpaintPlan:
    """Regenerate the labelled region of every document with an image and a labelled region."""
    from usgen_desktop.core.lesions import inpaint_region

    plan = InpaintPlan([], [], [], [], [], [], [], [], count=per_map)
    for doc, case, klass in zip(docs, cases, classes, strict=True):
        region = inpaint_region(doc.labels.data, schema.sector_id, margin)
        if doc.image is None or not region.any():
            plan.skipped.append(doc.name)
            continue
        plan.label_maps.append(doc.labels)
        plan.init_images.append(doc.image.to_uint8())
        plan.inpaint_masks.append(region)
        plan.docs.append(doc)
        plan.classes.append(klass)
        plan.base.append(case)
        plan.first.append(0)
        plan.records.append({"mode": "painted", "margin": margin, "region": _summary(region)})
    if not plan.label_maps:
        raise UsgenError("No image of the dataset has a painted region to inpaint; paint the "
                         "regions to regenerate in its masks first.")
    if plan.skipped:
        print(f"usgen: {len(plan.skipped)} images have no painted region (or no image) and "
              "are left out of --inpaint.", file=sys.stderr)
    return plan


def _summary(region: np.ndarray) -> dict[str, Any]:
    from usgen_desktop.core.lesions import region_summary

    return region_summary(region)
