"""The ``speckle`` backend: a physics simulator that needs no weights (the default).

Settings come from ``request.params`` (``probe``, ``frequency_mhz``, ``depth_mm``,
``aperture_mm``, ``cycles``, ``dynamic_range_db``, ``gain_db``, ``heterogeneity``, ``zones``,
``compounding``, ``skin``, ``smooth_px``; see ``physics.simulate.SpeckleParams``); tissue comes
from the label schema's presets. One image per call, a single "step"; CPU, no weights, no torch.
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

import numpy as np

from usgen_desktop.core.labels import LabelMap, LabelSchema
from usgen_desktop.core.tasks import CancelToken, Progress, ProgressFn
from usgen_desktop.synthesis.physics.simulate import (
    SIM_VERSION,
    SpeckleOutput,
    SpeckleParams,
    simulate,
)
from usgen_desktop.synthesis.request import hash_folder

# The settings this backend takes in ``request.params`` (any other key is refused).
PARAMS: dict[str, str] = {
    f.name: "simulator setting (see physics.simulate.SpeckleParams)"
    for f in fields(SpeckleParams)
}


def model_hash(schema: LabelSchema) -> str:
    """Identifies the simulator version and the tissue presets it was given."""
    d = schema.to_dict()
    tissue = {"labels": {lab["id"]: lab["tissue"] for lab in d["labels"]},
              "class_tissue": d["class_tissue"], "probe": d["probe"],
              "sector_id": d["sector_id"]}
    return hash_folder([SIM_VERSION, json.dumps(tissue, sort_keys=True)])


class SpeckleBackend:
    """Simulates B-mode images; CPU only, deterministic in the seed."""

    name = "speckle"
    device = "cpu"
    steps_per_item = 1

    def __init__(self, schema: LabelSchema, params: dict[str, Any] | None = None) -> None:
        self.schema = schema
        self.params = SpeckleParams.from_dict(params)  # bad settings fail before any work
        self.model_hash = model_hash(schema)

    def simulate(self, label_map: LabelMap, klass: str | None, seed: int) -> SpeckleOutput:
        """The image and its intermediates (envelope before log compression) for tests."""
        return simulate(label_map.data, self.schema, klass, seed, self.params)

    def generate(self, label_map: LabelMap, klass: str | None, seed: int, request: Any,
                 map_index: int, step: ProgressFn, cancel: CancelToken) -> np.ndarray:
        cancel.raise_if_cancelled()
        out = self.simulate(label_map, klass, seed)
        step(Progress(1, 1, "simulated", out.image))
        return out.image


def load(request: Any) -> SpeckleBackend:
    """The backend for ``request`` (its schema and ``params``); no model folder is used."""
    return SpeckleBackend(request.schema, getattr(request, "params", None))
