"""The ``sdm`` backend: a label-map-conditioned diffusion model in pixel space.

In the spirit of the Semantic Diffusion Model of "Echo from noise" (``seeds/004_*``): a diffusers
``UNet2DModel`` takes the noisy image (1 channel) concatenated with the one-hot label map (one
channel per label of the model's schema, sector included) and a class embedding (one extra class
index means "unconditional", for classifier-free guidance). Cosine schedule, v-prediction, and two
fast samplers: DDIM and DPM-Solver++ (with thresholding, which the cosine schedule needs: without
it the multistep solver diverges, see REFERENCE.md).

A model folder looks like a diffusers folder::

    MODEL_DIR/usgen_model.json   kind "sdm", size, schema, classes, prediction type, training info
    MODEL_DIR/unet/              UNet2DModel.save_pretrained (safetensors)
    MODEL_DIR/ema/               optional: EMA weights, preferred for sampling when present

Noise is drawn with a CPU generator seeded by the item seed and then moved to the device, so a seed
gives the same image on any device. This module may import torch (it is a backend module); the
rest of the package reaches it only through ``load``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from usgen_desktop.core.labels import LabelMap, LabelSchema
from usgen_desktop.core.tasks import CancelToken, Progress, ProgressFn, no_progress
from usgen_desktop.errors import MissingSectorError, ModelError, OutOfMemoryError, UsgenError
from usgen_desktop.synthesis import devices

CONFIG_NAME = "usgen_model.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
SAMPLERS = ("dpm++", "ddim")
# The settings this backend takes in ``request.params`` (any other key is refused).
PARAMS: dict[str, str] = {
    "sampler": "dpm++ (default) or ddim",
    "weights": "ema (default) or raw",
    "fp16": "half precision on CUDA, 1 (default) or 0",
    "refine": "the texture refiner at the label map's size, 1 (default) or 0",
}
DEFAULT_MODEL_NAME = "sdm-default"


# --------------------------------------------------------------------------------------------
# Model description
# --------------------------------------------------------------------------------------------
@dataclass
class SdmConfig:
    """What ``usgen_model.json`` holds: everything needed to condition and sample the UNet."""

    size: tuple[int, int]
    schema: LabelSchema
    classes: list[str] = field(default_factory=list)
    prediction_type: str = "v_prediction"
    beta_schedule: str = "squaredcos_cap_v2"
    num_train_timesteps: int = 1000
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def label_ids(self) -> list[int]:
        """Channel order of the one-hot label map: the schema's ids, ascending."""
        return sorted(self.schema.ids)

    @property
    def null_class(self) -> int:
        """The class index meaning "no class": also the unconditional branch of CFG."""
        return len(self.classes)

    @property
    def num_class_embeds(self) -> int:
        return len(self.classes) + 1

    def class_index(self, klass: str | None) -> int:
        # a model trained without classes has nothing to condition on: an image's own class
        # tag (HC18's folder name "head", say) is ignored rather than refused
        if klass is None or klass == "" or not self.classes:
            return self.null_class
        if klass not in self.classes:
            known = ", ".join(self.classes) if self.classes else "none"
            raise UsgenError(f"This sdm model knows no class '{klass}' (known: {known}).")
        return self.classes.index(klass)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "sdm",
            "format_version": 1,
            "size": list(self.size),
            "schema": self.schema.to_dict(),
            "classes": list(self.classes),
            "label_ids": self.label_ids,
            "prediction_type": self.prediction_type,
            "beta_schedule": self.beta_schedule,
            "num_train_timesteps": self.num_train_timesteps,
            "training": self.training,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SdmConfig:
        size = d["size"]
        if isinstance(size, int):
            size = [size, size]
        if (not isinstance(size, (list, tuple)) or len(size) != 2
                or not all(isinstance(v, int) and 8 <= v <= 2048 and v % 8 == 0 for v in size)):
            raise ModelError(
                f"its size {json.dumps(size)[:40]} is not two multiples of 8 from 8 to 2048"
            )
        return cls(
            size=(int(size[0]), int(size[1])),
            schema=LabelSchema.from_dict(d["schema"]),
            classes=[str(c) for c in d.get("classes", [])],
            prediction_type=str(d.get("prediction_type", "v_prediction")),
            beta_schedule=str(d.get("beta_schedule", "squaredcos_cap_v2")),
            num_train_timesteps=int(d.get("num_train_timesteps", 1000)),
            training=dict(d.get("training", {})),
        )


def build_unet(
    config: SdmConfig,
    block_out_channels: Sequence[int] = (16, 32, 64, 128),
    layers_per_block: int = 1,
    norm_num_groups: int = 8,
    attention_head_dim: int = 8,
):
    """A fresh UNet2DModel for ``config``: attention only at the lowest level (cheap on a CPU)."""
    from diffusers import UNet2DModel

    n = len(block_out_channels)
    down = ["DownBlock2D"] * (n - 1) + ["AttnDownBlock2D"]
    up = ["AttnUpBlock2D"] + ["UpBlock2D"] * (n - 1)
    return UNet2DModel(
        sample_size=int(config.size[0]),
        in_channels=1 + len(config.label_ids),
        out_channels=1,
        block_out_channels=tuple(int(c) for c in block_out_channels),
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        layers_per_block=int(layers_per_block),
        norm_num_groups=int(norm_num_groups),
        attention_head_dim=int(attention_head_dim),
        class_embed_type=None,
        num_class_embeds=config.num_class_embeds,
    )


def save_model(unet, config: SdmConfig, folder: Path, ema_unet=None) -> None:
    """Write a model folder (``unet/`` + optional ``ema/`` + ``usgen_model.json``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    if ema_unet is not None:
        ema_unet.save_pretrained(folder / "ema", safe_serialization=True)
    tmp = folder / (CONFIG_NAME + ".tmp")
    tmp.write_text(json.dumps(config.to_dict(), indent=2), encoding="utf-8")
    tmp.replace(folder / CONFIG_NAME)


def read_config(folder: Path) -> SdmConfig:
    """The model's ``usgen_model.json``, or a ModelError saying what is wrong with it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"The sdm model folder '{folder}' does not exist.")
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise ModelError(f"The folder '{folder}' is not an sdm model: it has no {CONFIG_NAME}.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"The model description {path} cannot be read ({exc}).") from exc
    if not isinstance(data, dict) or data.get("kind") != "sdm":
        raise ModelError(f"The folder '{folder}' holds a model of another kind, not 'sdm'.")
    try:
        return SdmConfig.from_dict(data)
    except (KeyError, TypeError, ValueError, IndexError, UsgenError) as exc:
        raise ModelError(f"The model description {path} is incomplete ({exc}).") from exc


def weights_folder(folder: Path, prefer_ema: bool = True) -> Path:
    """``ema/`` when present (and wanted), else ``unet/``; ModelError when neither has weights."""
    folder = Path(folder)
    candidates = (["ema"] if prefer_ema else []) + ["unet"]
    for name in candidates:
        sub = folder / name
        if (sub / WEIGHTS_NAME).is_file() and (sub / "config.json").is_file():
            return sub
    from usgen_desktop.synthesis.weights import require_safetensors

    require_safetensors(folder, candidates, "sdm model")  # a pickle-only folder says so
    raise ModelError(
        f"The sdm model folder '{folder}' has no weights: unet/{WEIGHTS_NAME} is missing."
    )


def file_hash(path: Path) -> str:
    """Short sha256 of a weights file (the model hash recorded with every image)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def load_unet(folder: Path, prefer_ema: bool = True):
    """Load the UNet of a model folder from local files only; ModelError when broken."""
    from diffusers import UNet2DModel

    sub = weights_folder(folder, prefer_ema)
    try:
        unet = UNet2DModel.from_pretrained(sub, local_files_only=True, use_safetensors=True)
    except Exception as exc:  # diffusers raises many kinds for a damaged file
        raise ModelError(
            f"The sdm weights in '{sub}' cannot be loaded; the file is damaged or incomplete."
        ) from exc
    return unet, sub


# --------------------------------------------------------------------------------------------
# Conditioning helpers (shared with training)
# --------------------------------------------------------------------------------------------
def one_hot(labels: np.ndarray, label_ids: Sequence[int]) -> np.ndarray:
    """(C, H, W) float32 one-hot of a label map; ids the model does not know become all zero
    ("unknown"), which is also what label dropout and the unconditional branch use."""
    out = np.zeros((len(label_ids), *labels.shape), np.float32)
    for c, i in enumerate(label_ids):
        out[c] = labels == i
    return out


def image_to_model(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float32) / 127.5 - 1.0


def model_to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip((x + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    if labels.shape == tuple(size):
        return labels
    return cv2.resize(labels, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


def resize_image(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    if img.shape[:2] == tuple(size):
        return img
    shrinking = size[0] * size[1] < img.shape[0] * img.shape[1]
    # enlarging the 128² output to the label map's size: bicubic keeps the speckle that bilinear
    # blurs (real BUSI images sent 320 -> 128 -> 320 -> 128 are told from untouched ones at
    # realism AUC 0.73 with bilinear, 0.58 with bicubic; N = 200, training split only)
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(img, (size[1], size[0]), interpolation=interp)


def make_scheduler(config: SdmConfig, sampler: str):
    """DDIM (clips x0 by default) or DPM-Solver++ (thresholding on: the cosine schedule needs it)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    common = dict(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        prediction_type=config.prediction_type,
        # start sampling at the last training step: with v-prediction and the cosine schedule,
        # skipping the noisiest steps leaves a grey cast on every image
        timestep_spacing="trailing",
    )
    if sampler == "ddim":
        return DDIMScheduler(clip_sample=True, set_alpha_to_one=True, **common)
    if sampler in ("dpm++", "dpmsolver++", "dpm"):
        return DPMSolverMultistepScheduler(
            algorithm_type="dpmsolver++", solver_order=2, thresholding=True,
            sample_max_value=1.0, **common,
        )
    raise UsgenError(f"Unknown sampler '{sampler}' (choose one of {', '.join(SAMPLERS)}).")


def _predict_x0(scheduler, x: torch.Tensor, out: torch.Tensor, t: int, kind: str) -> torch.Tensor:
    ac = scheduler.alphas_cumprod[int(t)].to(x.device, torch.float32)
    a, s = ac.sqrt(), (1 - ac).sqrt()
    if kind == "v_prediction":
        return a * x - s * out
    if kind == "epsilon":
        return (x - s * out) / a
    return out


@torch.no_grad()
def sample(
    unet,
    config: SdmConfig,
    cond: np.ndarray,
    class_idx: Sequence[int],
    seeds: Sequence[int],
    steps: int = 25,
    sampler: str = "dpm++",
    guidance: float = 1.0,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    step: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
    known: np.ndarray | None = None,
    known_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Denoise a batch. ``cond`` (B, C, H, W) one-hot at the model's size; returns (B, H, W) in
    [-1, 1]. Each item's noise comes from a CPU generator seeded with its own seed. ``known``
    (B, H, W) in [-1, 1] with ``known_mask`` (B, H, W, 1 = regenerate) asks for inpainting: at
    every step the region outside the mask is replaced by the known image noised to that level
    (RePaint-style), so only the masked region is invented."""
    cancel = cancel or CancelToken()
    scheduler = make_scheduler(config, sampler)
    scheduler.set_timesteps(int(steps))
    h, w = cond.shape[-2:]
    gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    noise = torch.cat([torch.randn((1, 1, h, w), generator=g) for g in gens])
    x = noise.to(device, torch.float32) * float(scheduler.init_noise_sigma)
    c = torch.from_numpy(np.ascontiguousarray(cond)).to(device, dtype)
    cls = torch.tensor(list(class_idx), dtype=torch.long, device=device)
    use_cfg = guidance > 1.0
    if use_cfg:
        c = torch.cat([c, torch.zeros_like(c)])
        cls = torch.cat([cls, torch.full_like(cls, config.null_class)])
    if known is not None:
        k = torch.from_numpy(known[:, None].astype(np.float32)).to(device)
        m = torch.from_numpy(known_mask[:, None].astype(np.float32)).to(device)
    timesteps = list(scheduler.timesteps)
    for i, t in enumerate(timesteps):
        cancel.raise_if_cancelled()
        xin = torch.cat([x, x]) if use_cfg else x
        inp = torch.cat([scheduler.scale_model_input(xin, t).to(dtype), c], dim=1)
        out = unet(inp, t, class_labels=cls).sample.float()
        if use_cfg:
            cond_out, uncond_out = out.chunk(2)
            out = uncond_out + float(guidance) * (cond_out - uncond_out)
        x0 = _predict_x0(scheduler, x, out, int(t), config.prediction_type)
        x = scheduler.step(out, t, x).prev_sample
        if known is not None:
            if i + 1 < len(timesteps):
                t_prev = timesteps[i + 1]
                kn = torch.cat([torch.randn((1, 1, h, w), generator=g) for g in gens])
                k_t = scheduler.add_noise(k, kn.to(device), torch.tensor([int(t_prev)]))
            else:
                k_t = k
            x = m * x + (1 - m) * k_t
            x0 = m * x0 + (1 - m) * k
        preview = model_to_uint8(x0[0, 0].clamp(-1, 1).cpu().numpy())
        step(Progress(i + 1, len(timesteps), f"step {i + 1} of {len(timesteps)}", preview))
    return x[:, 0].clamp(-1, 1).cpu().numpy()


# --------------------------------------------------------------------------------------------
# The backend
# --------------------------------------------------------------------------------------------
def default_model_dir() -> Path:
    from usgen_desktop.paths import models_dir

    return models_dir() / DEFAULT_MODEL_NAME


_CACHE: dict[tuple, tuple] = {}
_CACHE_LOCK = threading.Lock()


class SdmBackend:
    """Loaded once per request by ``request.run``; generates one image per call."""

    name = "sdm"

    def __init__(self, folder: Path, device: str = "auto", prefer_ema: bool = True,
                 fp16: bool = True, refine: bool = True, steps: int = 25) -> None:
        self.folder = Path(folder)
        self.config = read_config(self.folder)
        self.device = str(devices.pick_device(device))
        # fp16 only on CUDA: on the CPU it is slow or crashes, on MPS it gives NaNs on some Macs
        self.dtype = torch.float16 if (self.device.startswith("cuda") and fp16) else torch.float32
        sub = weights_folder(self.folder, prefer_ema)
        key = (str(sub.resolve()), (sub / WEIGHTS_NAME).stat().st_mtime_ns, self.device,
               str(self.dtype))
        with _CACHE_LOCK:
            cached = _CACHE.get(key)
        if cached is None:
            unet, sub = load_unet(self.folder, prefer_ema)
            self._check(unet)
            try:
                # torch's own Module.to: diffusers' override warns about "modules that should
                # be kept in float32: []" on every load when a dtype is passed (0.42)
                unet = torch.nn.Module.to(unet, self.device, self.dtype).eval()
            except Exception as exc:
                if devices.is_oom(exc):
                    raise OutOfMemoryError(
                        "The sdm model does not fit in the GPU's memory; choose the CPU device."
                    ) from exc
                raise
            cached = (unet, file_hash(sub / WEIGHTS_NAME))
            with _CACHE_LOCK:
                _CACHE.clear()  # keep one model (and its refiner): they are small, GPUs are not
                _CACHE[key] = cached
        self.unet, self.model_hash = cached
        self.weights = sub.name
        self.refiner = None
        self.extra_provenance: dict[str, Any] = {}
        if refine:
            self._load_refiner()
        self.steps_per_item = steps + (self.refiner[1].steps if self.refiner else 0)

    def _load_refiner(self) -> None:
        """The model's texture refiner (``refiner/``), cached like the UNet; absent is fine."""
        from usgen_desktop.synthesis.backends import refiner as rf

        folder = rf.find_refiner(self.folder)
        if folder is None:
            return
        weights = folder / "unet" / rf.WEIGHTS_NAME
        if not weights.is_file():
            raise ModelError(
                f"The texture refiner in '{folder}' has no weights: unet/{rf.WEIGHTS_NAME} is missing."
            )
        cfg_file = folder / rf.CONFIG_NAME
        key = ("refiner", str(weights.resolve()), weights.stat().st_mtime_ns,
               cfg_file.stat().st_mtime_ns if cfg_file.is_file() else 0, self.device,
               str(self.dtype))
        with _CACHE_LOCK:
            cached = _CACHE.get(key)
        if cached is None:
            unet, config = rf.load_refiner(folder)
            unet = torch.nn.Module.to(unet, self.device, self.dtype).eval()
            cached = (unet, config, file_hash(weights))
            with _CACHE_LOCK:
                _CACHE[key] = cached
        self.refiner = cached[:2]
        self.extra_provenance = {"refiner_hash": cached[2], "refiner_gain": cached[1].gain}

    def _check(self, unet) -> None:
        want = 1 + len(self.config.label_ids)
        if int(unet.config.in_channels) != want:
            raise ModelError(
                f"The sdm model in '{self.folder}' is inconsistent: its UNet takes "
                f"{unet.config.in_channels} channels but its schema needs {want}."
            )

    # -- conditioning -------------------------------------------------------------------
    def condition(self, label_map: LabelMap) -> np.ndarray:
        """The label map at the model's size as a one-hot (C, H, W)."""
        small = resize_labels(label_map.data, self.config.size)
        return one_hot(small, self.config.label_ids)

    def generate(
        self,
        label_map: LabelMap,
        klass: str | None,
        seed: int,
        request: Any,
        map_index: int,
        step: ProgressFn,
        cancel: CancelToken,
    ) -> np.ndarray:
        params = request.params or {}
        sampler = str(params.get("sampler", "dpm++")).lower()
        cond = self.condition(label_map)[None]
        known = known_mask = None
        init = _pick(request.init_images, map_index)
        mask = _pick(request.inpaint_masks, map_index)
        if init is not None or mask is not None:
            init, mask = self._check_inpaint(init, mask, label_map)
            known = image_to_model(resize_image(init, self.config.size))[None]
            known_mask = (resize_labels((mask > 0).astype(np.uint8), self.config.size) > 0)
            known_mask = known_mask.astype(np.float32)[None]
        try:
            out = sample(
                self.unet, self.config, cond, [self.config.class_index(klass)], [seed],
                steps=request.steps, sampler=sampler, guidance=float(request.guidance),
                device=self.device, dtype=self.dtype, step=step, cancel=cancel,
                known=known, known_mask=known_mask,
            )
        except Exception as exc:
            if devices.is_oom(exc):
                raise OutOfMemoryError(
                    "The GPU ran out of memory while generating; try the CPU device or close "
                    "other programs using the GPU."
                ) from exc
            raise
        img = resize_image(model_to_uint8(out[0]), label_map.shape)
        if self.refiner is not None:
            img = self._refine(img, label_map, seed, request, step, cancel)
        if known is not None:
            # outside the painted region the user's own pixels come back untouched; inside, a
            # ramp a few pixels wide blends into them so no seam marks the region's edge
            alpha = feather(mask)
            img = np.clip(alpha * img + (1.0 - alpha) * init + 0.5, 0, 255).astype(np.uint8)
        return img

    def _refine(self, img: np.ndarray, label_map: LabelMap, seed: int, request: Any,
                step: ProgressFn, cancel: CancelToken) -> np.ndarray:
        """The enlarged image with the fine texture of its size drawn in by the refiner; the
        outside of the probe's fan (label 0 of a model with a sector) stays exactly black."""
        from usgen_desktop.synthesis.backends.refiner import refine

        unet, config = self.refiner
        keep = None
        sid = getattr(self.config.schema, "sector_id", None)
        if sid is not None and sid in self.config.label_ids:
            keep = label_map.data == 0
        offset = int(request.steps)

        def sub(p: Progress) -> None:
            step(Progress(offset + p.done, offset + config.steps, p.message))

        try:
            return refine(unet, config, img, seed, device=self.device, dtype=self.dtype,
                          step=sub, cancel=cancel, keep=keep)
        except Exception as exc:
            if devices.is_oom(exc):
                raise OutOfMemoryError(
                    "The GPU ran out of memory while refining the texture at full size; try "
                    "the CPU device, a smaller image, or turn the refiner off (refine=0)."
                ) from exc
            raise

    @staticmethod
    def _check_inpaint(init, mask, label_map: LabelMap) -> tuple[np.ndarray, np.ndarray]:
        if init is None or mask is None:
            raise UsgenError("Inpainting needs both an image and a painted region.")
        init = np.asarray(init)
        if init.ndim == 3:
            init = init[..., :3].mean(axis=2)
        init = init.astype(np.uint8) if init.dtype != np.uint8 else init
        mask = np.asarray(mask)
        h, w = label_map.shape
        if init.shape != (h, w) or mask.shape != (h, w):
            raise UsgenError(
                f"The image and painted region for inpainting must be {w}x{h} like the label map."
            )
        if not np.any(mask):
            raise UsgenError("The region to regenerate is empty; paint where the change goes.")
        return init, mask


def feather(mask: np.ndarray, fraction: float = 0.02) -> np.ndarray:
    """Blend weights for an inpainted region: 0 outside the mask, rising to 1 over
    ``fraction`` of the image's longer side inside it."""
    import cv2

    m = (np.asarray(mask) > 0).astype(np.uint8)
    ramp = max(1.0, fraction * max(m.shape))
    dist = cv2.distanceTransform(m, cv2.DIST_L2, 3)
    return np.clip(dist / ramp, 0.0, 1.0).astype(np.float32)


def _pick(seq: Sequence | None, i: int):
    if seq is None or i >= len(seq):
        return None
    return seq[i]


def load(request: Any) -> SdmBackend:
    """Entry point used by ``request.run``: the model folder of the request or the default."""
    folder = Path(request.model_dir) if request.model_dir else default_model_dir()
    if not request.model_dir and not folder.exists():
        raise ModelError(
            "No sdm model folder was given and the default model is not installed."
        )
    params = request.params or {}
    backend = SdmBackend(
        folder, device=request.device, prefer_ema=params.get("weights", "ema") != "raw",
        fp16=bool(params.get("fp16", True)), refine=_flag(params.get("refine", True)),
        steps=int(request.steps),
    )
    check_sector(backend.config, request.label_maps, getattr(request, "names", None))
    return backend


def _flag(value: Any) -> bool:
    """A yes/no parameter as given on the command line ("0", "false", "no" mean no)."""
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off", "")
    return bool(value)


def check_sector(config: SdmConfig, label_maps: Sequence[LabelMap], names=None) -> None:
    """A model trained on label maps that carry the probe's fan (HC18: label 2) draws every
    pixel outside a labelled sector as the black outside of the fan; a map without any sector
    pixel would come out as a head floating in black. Refuse it with the fix instead."""
    sid = getattr(config.schema, "sector_id", None)
    if sid is None or sid not in config.label_ids:
        return
    for i, lm in enumerate(label_maps):
        data = lm.data if isinstance(lm, LabelMap) else np.asarray(lm)
        if not (data == sid).any():
            which = (f"'{names[i]}'" if names and i < len(names) else
                     "This label map" if len(label_maps) == 1 else f"Label map {i + 1}")
            found = config.schema.get(sid)
            label = found.name if found is not None else f"label {sid}"
            # short: the GUI puts a "Detect the fan" button beside it, the CLI adds its hint
            raise MissingSectorError(
                f"{which} has no '{label}' region (the probe's fan), which this model needs."
            )


# type of the per-step callback used by training to draw sample grids
SampleFn = Callable[[int, np.ndarray], None]
