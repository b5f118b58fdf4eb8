"""The ``controlnet`` backend: Stable Diffusion 1.5, with a segmentation ControlNet when one is
given and from a class prompt alone when not, then an img2img refinement pass (the hybrid recipe
of ``seeds/002_*``: LoRA, textual-inversion token, text-to-image, img2img at strength 0.3) and
class prompts as in ``seeds/000_*``.

Parameters (``request.params``; every key is in ``PARAMS``, any other is refused):
``controlnet_dir`` (a ControlNet folder; without it the model folder's ``controlnet/`` subfolder
is used when present, else the run is text-to-image and the image does not follow the label
map), ``lora`` (folder or ``.safetensors`` file), ``ti_token`` + ``ti_embedding`` (a
``.safetensors`` file; a LoRA folder's ``learned_embeds.safetensors`` is used when the token is
given alone), ``strength`` (img2img strength 0-1, overrides ``request.strength``; 0 = no
refinement), ``low_memory`` (attention slicing, VAE tiling, model CPU offload on CUDA),
``resolution`` (generation size, default 512), ``negative`` (negative prompt).
The model folder (``request.model_dir``) is a diffusers Stable Diffusion folder. Nothing is ever
fetched from the network (``local_files_only=True``) and only safetensors are read (a folder of
pickles is refused); noise comes from a CPU generator so a seed gives the same image on any
device; fp16 on CUDA only.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from usgen_desktop.core.labels import DEFAULT_PROMPTS, LabelMap, LabelSchema
from usgen_desktop.core.tasks import CancelToken, Progress, ProgressFn
from usgen_desktop.errors import Cancelled, ModelError, OutOfMemoryError, UsgenError
from usgen_desktop.synthesis import devices

CLASS_PROMPTS = DEFAULT_PROMPTS  # the built-in class prompts (core.labels, torch-free)
SD_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
WEIGHT_PARTS = ("unet", "vae", "text_encoder")  # the SD parts that hold weights
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
TI_WEIGHTS = "learned_embeds.safetensors"
# every key this backend reads from request.params; any other is refused with one sentence
PARAMS: dict[str, str] = {
    "controlnet_dir": "ControlNet folder (none: text-to-image from the class prompt)",
    "lora": "LoRA folder or .safetensors file",
    "ti_token": "textual-inversion token, e.g. <us>",
    "ti_embedding": "textual-inversion embedding (.safetensors)",
    "strength": "img2img refinement strength 0-1 (0: none)",
    "low_memory": "true: attention slicing, VAE tiling, CPU offload on CUDA",
    "resolution": "generation size in pixels, a multiple of 8 (default 512)",
    "negative": "negative prompt",
}

_CACHE: dict[tuple, Any] = {}
_LOCK = threading.Lock()


def class_prompt(klass: str | None, token: str | None = None, prompt: str | None = None,
                 schema: LabelSchema | None = None) -> str:
    """The request's prompt, else the schema's prompt for the class, else the built-in class
    prompt; a textual-inversion token goes first."""
    own = schema.prompt_for(klass) if schema is not None else None
    text = prompt or own or CLASS_PROMPTS.get(klass) or f"ultrasound image, {klass}"
    return f"{token} {text}" if token and token not in text else text


def colourise(labels: np.ndarray, schema: LabelSchema) -> np.ndarray:
    """The control image: each label id in its schema colour (RGB uint8), id 0 black."""
    table = np.zeros((256, 3), np.uint8)
    for lab in schema.labels:
        if lab.id != 0:
            table[lab.id] = lab.color
    return table[labels]


def check_sd_folder(folder: Path) -> None:
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"The Stable Diffusion folder '{folder}' does not exist.")
    if not (folder / "model_index.json").is_file():
        raise ModelError(
            f"'{folder}' is not a Stable Diffusion folder in diffusers layout: "
            "model_index.json is missing."
        )
    missing = [p for p in SD_PARTS if not (folder / p).is_dir()]
    if missing:
        raise ModelError(f"The Stable Diffusion folder '{folder}' lacks {', '.join(missing)}/.")


    for part in WEIGHT_PARTS:
        require_safetensors(folder / part, f"The Stable Diffusion folder '{folder}' ({part}/)")


def check_controlnet_folder(folder: Path | None) -> Path:
    if not folder:
        raise ModelError("The controlnet backend needs a ControlNet folder (controlnet_dir).")
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ModelError(f"'{folder}' is not a ControlNet folder: config.json is missing.")
    require_safetensors(folder, f"The ControlNet folder '{folder}'", recursive=False)
    return folder


def require_safetensors(path: Path, what: str, recursive: bool = True) -> None:
    """Refuse weights that are pickles only (a pickle can run code when loaded): ``path`` is a
    folder that must hold a ``.safetensors`` file when it holds pickles, or a file that must be
    ``.safetensors``."""
    path = Path(path)
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ModelError(f"{what} is not a .safetensors file; USGen loads safetensors only.")
        return
    if not path.is_dir():
        return
    files = list(path.rglob("*") if recursive else path.iterdir())
    if any(f.suffix == ".safetensors" for f in files):
        return
    pickles = [f for f in files if f.suffix in PICKLE_SUFFIXES]
    if pickles:
        raise ModelError(
            f"{what} holds only pickled weights ({pickles[0].name}); USGen loads safetensors "
            "only, so convert them (save_pretrained with safe_serialization=True)."
        )


def check_params(params: dict[str, Any]) -> None:
    """Refuse a key this backend does not take, or a value it cannot use, in one sentence."""
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise UsgenError(
            f"The controlnet backend does not take the setting '{unknown[0]}' (it takes "
            f"{', '.join(PARAMS)})."
        )
    if "strength" in params:
        try:
            st = float(params["strength"])
        except (TypeError, ValueError):
            st = float("nan")
        if not 0.0 <= st <= 1.0:
            raise UsgenError(f"strength must be a number from 0 to 1, not '{params['strength']}'.")
    if "resolution" in params:
        res = params["resolution"]
        if isinstance(res, bool) or not isinstance(res, int) or not 8 <= res <= 4096 or res % 8:
            raise UsgenError(
                f"resolution must be a whole number of pixels from 8 to 4096 and a multiple of 8, "
                f"not '{res}'."
            )
    if "low_memory" in params and not isinstance(params["low_memory"], bool):
        raise UsgenError(f"low_memory must be true or false, not '{params['low_memory']}'.")
    for key in ("ti_token", "negative"):
        if key in params and not isinstance(params[key], str):
            raise UsgenError(f"{key} must be text, not '{params[key]}'.")
    for key in ("controlnet_dir", "lora", "ti_embedding"):
        if key in params and params[key] is not None and not isinstance(params[key], str):
            raise UsgenError(f"{key} must be a path, not '{params[key]}'.")
    if params.get("ti_embedding") and not params.get("ti_token"):
        raise UsgenError("A textual-inversion embedding (ti_embedding) needs its token (ti_token).")


def _weights_hash(*folders: Path) -> str:
    from usgen_desktop.synthesis.backends.sdm import file_hash
    from usgen_desktop.synthesis.request import hash_folder

    parts: list[str] = []
    for f in folders:
        f = Path(f)
        files = [f] if f.is_file() else sorted(p for p in f.rglob("*.safetensors")
                                               if "checkpoints" not in p.relative_to(f).parts)
        for w in files:
            parts.append(file_hash(w))
    return hash_folder(parts)


class ControlNetBackend:
    """Loaded once per request by ``request.run``; one image per ``generate`` call. Without a
    ControlNet it makes the image from the prompt alone (``mode`` "text-to-image")."""

    name = "controlnet"

    def __init__(self, request: Any) -> None:
        params = dict(request.params or {})
        check_params(params)
        if not request.model_dir:
            raise ModelError("The controlnet backend needs a Stable Diffusion model folder.")
        self.sd_dir = Path(request.model_dir)
        check_sd_folder(self.sd_dir)
        cn = params.get("controlnet_dir")
        if not cn and (self.sd_dir / "controlnet" / "config.json").is_file():
            cn = self.sd_dir / "controlnet"  # a model folder may carry its ControlNet inside
        self.cn_dir = check_controlnet_folder(cn) if cn else None
        self.mode = "controlnet" if self.cn_dir is not None else "text-to-image"
        self.device = str(devices.pick_device(request.device))
        self.dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        self.low_memory = bool(params.get("low_memory", False))
        self.resolution = int(params.get("resolution", 512))
        self.token = params.get("ti_token") or None
        self.strength = float(params.get("strength", request.strength))
        self.steps_per_item = int(request.steps) + self._refine_steps(int(request.steps))
        # what the manifest records beside the request: the strength used and the mode
        self.extra_provenance = {"strength": self.strength, "mode": self.mode}
        lora = params.get("lora") or None
        ti = params.get("ti_embedding") or None
        if lora:
            lp = Path(lora)
            if not lp.exists():
                raise ModelError(f"The LoRA file '{lp}' does not exist.")
            if lp.is_dir() and not (lp / LORA_WEIGHTS).is_file():
                raise ModelError(f"The LoRA folder '{lp}' has no {LORA_WEIGHTS}.")
            require_safetensors(lp, f"The LoRA '{lp}'")
            if self.token and not ti and lp.is_dir() and (lp / TI_WEIGHTS).is_file():
                ti = str(lp / TI_WEIGHTS)  # the token learned beside the LoRA
        if ti:
            tp = Path(ti)
            if not tp.is_file():
                raise ModelError(f"The textual-inversion file '{tp}' does not exist.")
            require_safetensors(tp, f"The textual-inversion file '{tp}'")
        elif self.token:
            raise UsgenError(
                f"The token '{self.token}' needs its embedding (ti_embedding, a .safetensors "
                "file)."
            )
        key = (str(self.sd_dir.resolve()), str(self.cn_dir.resolve()) if self.cn_dir else None,
               str(lora), str(ti), str(self.token), self.device, self.low_memory)
        with _LOCK:
            cached = _CACHE.get(key)
        if cached is None:
            try:
                cached = self._load(lora, ti)
            except UsgenError:
                raise
            except Exception as exc:
                if devices.is_oom(exc):
                    raise OutOfMemoryError(
                        "Stable Diffusion does not fit in the GPU's memory; turn on low-memory "
                        "mode or choose the CPU."
                    ) from exc
                where = f"'{self.sd_dir}'" + (f" and '{self.cn_dir}'" if self.cn_dir else "")
                raise ModelError(
                    f"The models in {where} cannot be loaded ({type(exc).__name__}); a file is "
                    "missing or damaged."
                ) from exc
            with _LOCK:
                _CACHE.clear()  # one pipeline at a time: they are large
                _CACHE[key] = cached
        self.pipe, self.refiner, self.model_hash = cached

    def _refine_steps(self, steps: int) -> int:
        return int(steps * self.strength) if self.strength > 0 else 0

    def _load(self, lora: str | None, ti: str | None):
        from diffusers import (
            ControlNetModel,
            StableDiffusionControlNetPipeline,
            StableDiffusionImg2ImgPipeline,
            StableDiffusionPipeline,
        )

        common = dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False,
                      local_files_only=True, use_safetensors=True, dtype=self.dtype)
        if self.cn_dir is not None:
            cn = ControlNetModel.from_pretrained(self.cn_dir, local_files_only=True,
                                                 use_safetensors=True, dtype=self.dtype)
            pipe = StableDiffusionControlNetPipeline.from_pretrained(self.sd_dir, controlnet=cn,
                                                                     **common)
        else:
            pipe = StableDiffusionPipeline.from_pretrained(self.sd_dir, **common)
        if lora:
            lp = Path(lora)
            if not lp.exists():
                raise ModelError(f"The LoRA file '{lp}' does not exist.")
            if lp.is_file() and lp.suffix != ".safetensors":
                raise ModelError(f"The LoRA file '{lp}' is not a .safetensors file; USGen loads "
                                 "safetensors only.")
            folder, name = (lp.parent, lp.name) if lp.is_file() else (lp, LORA_WEIGHTS)
            pipe.load_lora_weights(str(folder), weight_name=name, local_files_only=True,
                                   use_safetensors=True)
        if ti:
            from safetensors.torch import load_file

            emb = load_file(str(ti))
            if not emb:
                raise ModelError(f"The textual-inversion file '{ti}' holds no embedding.")
            vec = emb.get(self.token, next(iter(emb.values())))
            pipe.load_textual_inversion({self.token: vec}, token=self.token)
        pipe.set_progress_bar_config(disable=True)
        refiner = StableDiffusionImg2ImgPipeline(
            vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
            scheduler=pipe.scheduler, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False,
        )
        refiner.set_progress_bar_config(disable=True)
        if self.low_memory:
            pipe.enable_attention_slicing()
            pipe.vae.enable_tiling()
        if self.low_memory and self.device.startswith("cuda"):
            pipe.enable_model_cpu_offload()
            refiner.enable_model_cpu_offload()
        else:
            pipe.to(self.device)
            refiner.to(self.device)
        folders = [self.sd_dir] + ([self.cn_dir] if self.cn_dir else [])
        folders += [Path(p) for p in (lora, ti) if p]
        return pipe, refiner, _weights_hash(*folders)

    def generate(self, label_map: LabelMap, klass: str | None, seed: int, request: Any,
                 map_index: int, step: ProgressFn, cancel: CancelToken) -> np.ndarray:
        import cv2
        from PIL import Image

        params = request.params or {}
        h, w = label_map.shape
        # keep the aspect, longer side at the resolution, both sides multiples of 8
        scale = self.resolution / max(h, w)
        gh, gw = (max(8, int(round(h * scale / 8)) * 8), max(8, int(round(w * scale / 8)) * 8))
        prompt = class_prompt(klass, self.token, request.prompt, request.schema)
        negative = params.get("negative")
        total = self.steps_per_item
        done = [0]

        def callback(pipe, i, t, kw):
            done[0] += 1
            step(Progress(min(done[0], total), total, f"step {done[0]} of {total}"))
            if cancel.cancelled:
                pipe._interrupt = True  # diffusers skips the remaining steps
            return kw

        gen = torch.Generator("cpu").manual_seed(int(seed))
        kwargs: dict[str, Any] = {}
        if self.cn_dir is not None:
            small = cv2.resize(label_map.data, (gw, gh), interpolation=cv2.INTER_NEAREST)
            kwargs["image"] = Image.fromarray(colourise(small, request.schema))
        try:
            out = self.pipe(
                prompt, height=gh, width=gw, num_inference_steps=int(request.steps),
                guidance_scale=float(request.guidance), negative_prompt=negative, generator=gen,
                output_type="np", callback_on_step_end=callback, **kwargs,
            ).images[0]
            cancel.raise_if_cancelled()
            if self._refine_steps(int(request.steps)) > 0:
                out = self.refiner(
                    prompt, image=out[None], strength=self.strength,
                    num_inference_steps=int(request.steps), guidance_scale=float(request.guidance),
                    negative_prompt=negative, generator=gen, output_type="np",
                    callback_on_step_end=callback,
                ).images[0]
                cancel.raise_if_cancelled()
        except Cancelled:
            raise
        except Exception as exc:
            if devices.is_oom(exc):
                raise OutOfMemoryError(
                    "The GPU ran out of memory while generating; turn on low-memory mode or "
                    "choose the CPU."
                ) from exc
            raise
        gray = np.clip(np.asarray(out, np.float32).mean(axis=-1) * 255.0 + 0.5, 0, 255)
        gray = np.nan_to_num(gray).astype(np.uint8)
        return cv2.resize(gray, (w, h), interpolation=cv2.INTER_LINEAR)


def load(request: Any) -> ControlNetBackend:
    return ControlNetBackend(request)
