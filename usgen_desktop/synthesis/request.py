"""One interface for every backend: a GenerationRequest in, Results out.

``run(request, progress, cancel)`` loads the backend once, then generates ``count`` images for
each label map. Item ``i`` (label map ``i // count``, repeat ``i % count``) always gets the seed
``seed_for(request.seed, i)``, so a batch split into shards gives the same images as one run.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from usgen_desktop.core.labels import LabelMap, LabelSchema
from usgen_desktop.core.tasks import CancelToken, Progress, ProgressFn, no_progress
from usgen_desktop.errors import UsgenError

BACKENDS = {
    "speckle": "usgen_desktop.synthesis.backends.speckle",
    "sdm": "usgen_desktop.synthesis.backends.sdm",
    "controlnet": "usgen_desktop.synthesis.backends.controlnet",
}
DEFAULT_BACKEND = "speckle"


def seed_for(base_seed: int, index: int) -> int:
    """The seed of item ``index`` of a batch with ``base_seed`` (stable across runs/shards)."""
    digest = hashlib.sha256(f"{int(base_seed)}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass
class GenerationRequest:
    """What to generate. ``classes`` gives one class (or None) per label map; ``prompt`` is
    for text-conditioned backends. ``size`` (height, width) resizes label maps
    (nearest-neighbour) before generation; None keeps each label map's own size.
    ``init_image`` + ``inpaint_mask`` (same size as the label map) ask for inpainting:
    keep the image, regenerate only where the mask is set. ``params`` holds backend-specific
    options (sampler, probe frequency, lora path, offload...)."""

    label_maps: Sequence[LabelMap]
    schema: LabelSchema
    backend: str = DEFAULT_BACKEND
    model_dir: str | None = None
    classes: Sequence[str | None] | None = None
    prompt: str | None = None
    seed: int = 0
    steps: int = 25
    guidance: float = 1.0
    strength: float = 0.3
    size: tuple[int, int] | None = None
    count: int = 1
    device: str = "auto"
    init_images: Sequence[np.ndarray | None] | None = None
    inpaint_masks: Sequence[np.ndarray | None] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    # the sub-range of items to make (for shards and resume); None = all
    items: Sequence[int] | None = None
    # one name per label map (document or file), so that an error can say which one
    names: Sequence[str] | None = None
    # torch CPU threads; None lets the program choose (the cores no other job is busy on)
    threads: int | None = None

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise UsgenError(
                f"Unknown backend '{self.backend}' (choose one of {', '.join(BACKENDS)})."
            )
        if not self.label_maps:
            raise UsgenError("There are no label maps to generate from.")
        if self.count < 1:
            raise UsgenError("The number of images per label map must be at least 1.")
        if self.steps < 1:
            raise UsgenError("The number of steps must be at least 1.")
        if not 0.0 <= self.strength <= 1.0:
            raise UsgenError("Strength must lie between 0 and 1.")
        if self.classes is not None and len(self.classes) != len(self.label_maps):
            raise UsgenError("Give one class per label map (or none).")
        if self.names is not None and len(self.names) != len(self.label_maps):
            raise UsgenError("Give one name per label map (or none).")
        if self.threads is not None and int(self.threads) < 1:
            raise UsgenError("The number of CPU threads must be at least 1.")
        if not math.isfinite(float(self.guidance)) or self.guidance < 0:
            raise UsgenError(f"Guidance must be a finite number of at least 0 (got {self.guidance}).")

    @property
    def total(self) -> int:
        return len(self.label_maps) * self.count

    def item_indices(self) -> list[int]:
        return list(self.items) if self.items is not None else list(range(self.total))

    def class_of(self, map_index: int) -> str | None:
        return None if self.classes is None else self.classes[map_index]


@dataclass
class Result:
    """A generated image (uint8 HxW), the exact label map it matches, and how it was made."""

    image: np.ndarray
    label_map: LabelMap
    provenance: dict[str, Any]
    index: int  # item index in the request
    source_index: int  # which label map of the request


class Backend(Protocol):
    """What every backend module's ``load(request) -> Backend`` returns."""

    name: str
    model_hash: str
    device: str

    def generate(
        self,
        label_map: LabelMap,
        klass: str | None,
        seed: int,
        request: GenerationRequest,
        map_index: int,
        step: ProgressFn,
        cancel: CancelToken,
    ) -> np.ndarray:
        """One uint8 image the size of ``label_map``; calls ``step`` once per sampler step."""
        ...


def backend_params(backend: str) -> dict[str, str] | None:
    """The settings (``request.params`` keys -> what they do) a backend declares in its
    module's ``PARAMS``; None when the module declares none (then any key passes)."""
    try:
        module = importlib.import_module(BACKENDS[backend])
    except ModuleNotFoundError as exc:
        if exc.name != BACKENDS[backend]:
            raise
        raise UsgenError(f"The '{backend}' backend is not part of this installation of USGen.") \
            from exc
    declared = getattr(module, "PARAMS", None)
    return dict(declared) if declared is not None else None


def check_params(backend: str, params: dict[str, Any]) -> None:
    """Refuse a setting the backend does not take, naming the ones it does: a typo such as
    ``dynamic_range=10`` would otherwise be ignored while the manifest records it as applied."""
    import difflib

    accepted = backend_params(backend)
    if accepted is None:
        return
    unknown = [k for k in params if k not in accepted]
    if not unknown:
        return
    key = unknown[0]
    close = difflib.get_close_matches(key, list(accepted), n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    takes = ", ".join(sorted(accepted)) if accepted else "no settings"
    raise UsgenError(
        f"The {backend} backend has no setting '{key}'{hint}; it takes: {takes}."
    )


def load_backend(request: GenerationRequest) -> Backend:
    try:
        module = importlib.import_module(BACKENDS[request.backend])
    except ModuleNotFoundError as exc:
        if exc.name != BACKENDS[request.backend]:
            raise  # a dependency of the backend is missing: the backend says which
        raise UsgenError(
            f"The '{request.backend}' backend is not part of this installation of USGen."
        ) from exc
    # Here rather than in validate(): a diffusion backend's module imports torch, which must
    # not happen on the GUI thread. Still before any image is made or any folder written.
    if request.params:
        check_params(request.backend, request.params)
    return module.load(request)


def _resize_map(lm: LabelMap, size: tuple[int, int] | None) -> LabelMap:
    if size is None or lm.shape == tuple(size):
        return lm
    import cv2

    h, w = size
    return LabelMap(cv2.resize(lm.data, (w, h), interpolation=cv2.INTER_NEAREST))


def run(
    request: GenerationRequest,
    progress: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
    on_result: Any = None,
) -> list[Result]:
    """Generate every item of ``request``. ``on_result(result)`` is called as each finishes,
    so a caller can save it at once; a cancel keeps (and returns) what was finished."""
    from usgen_desktop.errors import Cancelled

    request.validate()
    cancel = cancel or CancelToken()
    if request.backend != "speckle":  # the simulator is numpy: torch threads do not matter
        from usgen_desktop.synthesis.devices import set_threads

        set_threads(request.threads)
    backend = load_backend(request)
    items = request.item_indices()
    results: list[Result] = []
    steps_per_item = max(1, int(getattr(backend, "steps_per_item", request.steps)))
    total_steps = len(items) * steps_per_item
    for n, item in enumerate(items):
        if cancel.cancelled:
            break
        map_index, repeat = divmod(item, request.count)
        lm = _resize_map(request.label_maps[map_index], request.size)
        seed = seed_for(request.seed, item)
        klass = request.class_of(map_index)
        t0 = time.perf_counter()

        def step(p: Progress, n: int = n) -> None:
            done = n * steps_per_item + min(p.done, steps_per_item)
            progress(Progress(done, total_steps, f"image {n + 1} of {len(items)}", p.preview))

        try:
            image = backend.generate(lm, klass, seed, request, map_index, step, cancel)
        except Cancelled:
            break
        prov = {
            "backend": request.backend,
            "model_hash": backend.model_hash,
            "model_dir": request.model_dir,
            "seed": seed,
            "base_seed": request.seed,
            "item": item,
            "repeat": repeat,
            "class": klass,
            "prompt": request.prompt,
            "steps": request.steps,
            "guidance": request.guidance,
            "strength": request.strength,
            "params": dict(request.params),
            "device": backend.device,
            "seconds": round(time.perf_counter() - t0, 4),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            # what the backend actually used where it differs from the request (e.g. the
            # controlnet backend's strength from params, its text-to-image mode)
            **dict(getattr(backend, "extra_provenance", None) or {}),
        }
        region = _inpainted_region(request, map_index)
        if region is not None:
            prov["inpaint"] = {"region": region}
        res = Result(image=image, label_map=lm, provenance=prov, index=item, source_index=map_index)
        results.append(res)
        if on_result is not None:
            on_result(res)
        progress(Progress((n + 1) * steps_per_item, total_steps, f"finished {n + 1} of {len(items)}",
                          image))
    return results


def _inpainted_region(request: GenerationRequest, map_index: int) -> dict[str, Any] | None:
    """The region an sdm item regenerated (bbox + area), for its provenance; None when the
    whole image was generated (other backends do not inpaint)."""
    masks = request.inpaint_masks
    if request.backend != "sdm" or masks is None or map_index >= len(masks):
        return None
    if masks[map_index] is None:
        return None
    from usgen_desktop.core.lesions import region_summary

    return region_summary(np.asarray(masks[map_index]) > 0)


def model_recommendations(model_dir: str | None) -> dict[str, Any]:
    """The sampler settings a model folder recommends (``usgen_model.json`` → ``recommended``,
    e.g. ``{"guidance": 3.0, "steps": 25}``); empty when it names none. Reads JSON only, so the
    GUI thread may call it."""
    import json
    from pathlib import Path

    if not model_dir:
        return {}
    try:
        data = json.loads((Path(model_dir).expanduser() / "usgen_model.json").read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    rec = data.get("recommended") if isinstance(data, dict) else None
    return dict(rec) if isinstance(rec, dict) else {}


SHIPPED_WEIGHTS = ("unet", "diffusion_pytorch_model.safetensors")
SHIPPED_DEFAULT = "sdm-default"


def shipped_model_for(schema: LabelSchema | None) -> Path | None:
    """The shipped ``sdm`` model (a folder under ``paths.models_dir()``) made for ``schema``:
    its ``usgen_model.json`` has kind "sdm", the same schema name and the same label ids, and
    its UNet weights are there. ``sdm-default`` wins when several match; None when none does
    (no models folder, a broken description or missing weights never raise). Reads JSON and
    file names only (no torch), so the GUI thread may call it."""
    import json

    from usgen_desktop.paths import models_dir

    if schema is None:
        return None
    try:
        folders = sorted(p for p in models_dir().iterdir() if p.is_dir())
    except OSError:
        return None
    folders.sort(key=lambda p: p.name != SHIPPED_DEFAULT)  # stable: the default, then by name
    want = sorted(schema.ids)
    for folder in folders:
        try:
            data = json.loads((folder / "usgen_model.json").read_text("utf-8"))
            if not isinstance(data, dict) or data.get("kind") != "sdm":
                continue
            desc = data.get("schema")
            if not isinstance(desc, dict) or desc.get("name") != schema.name:
                continue
            ids = data.get("label_ids")
            if ids is None:
                ids = [lab["id"] for lab in desc.get("labels", [])]
            if sorted(int(i) for i in ids) != want:
                continue
            if not folder.joinpath(*SHIPPED_WEIGHTS).is_file():
                continue
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            continue  # a broken model folder is no match; the next one may be
        return folder
    return None


def default_sdm_model(schema: LabelSchema | None) -> Path | None:
    """The folder ``sdm`` uses when the user names none: the shipped model made for ``schema``
    (sdm-hc18 for HC18), else ``sdm-default`` when it is installed, else None. JSON and file
    names only, so the GUI thread may call it."""
    from usgen_desktop.paths import models_dir

    shipped = shipped_model_for(schema)
    if shipped is not None:
        return shipped
    folder = models_dir() / SHIPPED_DEFAULT
    return folder if folder.is_dir() else None


def hash_folder(files: Sequence[str | bytes]) -> str:
    """A short content hash identifying a model (over its weight files' bytes or names)."""
    h = hashlib.sha256()
    for f in files:
        h.update(f if isinstance(f, bytes) else str(f).encode())
    return h.hexdigest()[:16]
