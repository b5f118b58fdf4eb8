"""The ``controlnet`` backend: Stable Diffusion 1.5 + a segmentation ControlNet, from local
folders only, with an img2img refinement pass (the hybrid recipe of ``seeds/002_*``: LoRA,
textual-inversion token, img2img at strength 0.3) and class prompts as in ``seeds/000_*``.

Parameters (``request.params``): ``controlnet_dir`` (required), ``lora`` (folder or
``.safetensors`` file), ``ti_token`` + ``ti_embedding``, ``low_memory`` (attention slicing, VAE
tiling, model CPU offload on CUDA), ``resolution`` (generation size, default 512), ``negative``.
The model folder (``request.model_dir``) is a diffusers Stable Diffusion folder; without
``controlnet_dir`` its ``controlnet/`` subfolder is used when present. Nothing is ever
fetched from the network (``local_files_only=True``); noise comes from a CPU generator so a seed
gives the same image on any device; fp16 on CUDA only.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from usgen_desktop.core.labels import LabelMap, LabelSchema
from usgen_desktop.core.tasks import CancelToken, Progress, ProgressFn
from usgen_desktop.errors import Cancelled, ModelError, OutOfMemoryError, UsgenError
from usgen_desktop.synthesis import devices

CLASS_PROMPTS = {
    "benign": "ultrasound image of breast with a benign lesion",
    "malignant": "ultrasound image of breast with a malignant lesion",
    "normal": "ultrasound image of normal breast tissue",
    None: "ultrasound image",
}
SD_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
# The settings this backend takes in ``request.params`` (any other key is refused).
PARAMS: dict[str, str] = {
    "controlnet_dir": "the ControlNet folder", "lora": "a LoRA folder or .safetensors file",
    "ti_token": "the textual-inversion token", "ti_embedding": "its .safetensors file",
    "low_memory": "attention slicing, VAE tiling, CPU offload", "resolution": "generation size",
    "negative": "negative prompt",
}

_CACHE: dict[tuple, Any] = {}
_LOCK = threading.Lock()


def class_prompt(klass: str | None, token: str | None = None, prompt: str | None = None) -> str:
    """The request's prompt, or the class prompt; a textual-inversion token goes first."""
    text = prompt or CLASS_PROMPTS.get(klass) or f"ultrasound image, {klass}"
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


def check_controlnet_folder(folder: Path | None) -> Path:
    if not folder:
        raise ModelError("The controlnet backend needs a ControlNet folder (controlnet_dir).")
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ModelError(f"'{folder}' is not a ControlNet folder: config.json is missing.")
    return folder


def _weights_hash(*folders: Path) -> str:
    from usgen_desktop.synthesis.backends.sdm import file_hash
    from usgen_desktop.synthesis.request import hash_folder

    parts: list[str] = []
    for f in folders:
        for w in sorted(Path(f).rglob("*.safetensors")) + sorted(Path(f).rglob("*.bin")):
            parts.append(file_hash(w))
    return hash_folder(parts)


class ControlNetBackend:
    """Loaded once per request by ``request.run``; one image per ``generate`` call."""

    name = "controlnet"

    def __init__(self, request: Any) -> None:
        params = request.params or {}
        if not request.model_dir:
            raise ModelError("The controlnet backend needs a Stable Diffusion model folder.")
        self.sd_dir = Path(request.model_dir)
        check_sd_folder(self.sd_dir)
        cn = params.get("controlnet_dir")
        if not cn and (self.sd_dir / "controlnet" / "config.json").is_file():
            cn = self.sd_dir / "controlnet"  # a model folder may carry its ControlNet inside
        self.cn_dir = check_controlnet_folder(cn)
        self.device = str(devices.pick_device(request.device))
        self.dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        self.low_memory = bool(params.get("low_memory", False))
        self.resolution = int(params.get("resolution", 512))
        self.token = params.get("ti_token")
        self.strength = float(request.strength)
        self.steps_per_item = int(request.steps) + (
            int(int(request.steps) * self.strength) if self.strength > 0 else 0)
        lora = params.get("lora")
        ti = params.get("ti_embedding")
        key = (str(self.sd_dir.resolve()), str(self.cn_dir.resolve()), str(lora), str(ti),
               str(self.token), self.device, self.low_memory)
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
                raise ModelError(
                    f"The models in '{self.sd_dir}' and '{self.cn_dir}' cannot be loaded "
                    f"({type(exc).__name__}); a file is missing or damaged."
                ) from exc
            with _LOCK:
                _CACHE.clear()  # one pipeline at a time: they are large
                _CACHE[key] = cached
        self.pipe, self.refiner, self.model_hash = cached

    def _load(self, lora: str | None, ti: str | None):
        from diffusers import (
            ControlNetModel,
            StableDiffusionControlNetPipeline,
            StableDiffusionImg2ImgPipeline,
        )

        from usgen_desktop.synthesis.weights import require_safetensors

        require_safetensors(self.cn_dir, what="ControlNet")
        require_safetensors(self.sd_dir, ("unet", "vae", "text_encoder"), "Stable Diffusion")
        cn = ControlNetModel.from_pretrained(self.cn_dir, local_files_only=True,
                                             dtype=self.dtype, use_safetensors=True)
        pipe = StableDiffusionControlNetPipeline.from_pretrained(
            self.sd_dir, controlnet=cn, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False, local_files_only=True, dtype=self.dtype,
            use_safetensors=True,
        )
        if lora:
            lp = Path(lora)
            if not lp.exists():
                raise ModelError(f"The LoRA file '{lp}' does not exist.")
            if lp.is_file() and lp.suffix != ".safetensors":
                raise ModelError(f"The LoRA file '{lp}' is not a .safetensors file; USGen loads "
                                 "safetensors only.")
            if lp.is_file():
                pipe.load_lora_weights(str(lp.parent), weight_name=lp.name, local_files_only=True)
            else:
                pipe.load_lora_weights(str(lp), weight_name="pytorch_lora_weights.safetensors",
                                       local_files_only=True)
        if ti:
            if not self.token:
                raise UsgenError("A textual-inversion embedding needs its token (ti_token).")
            tp = Path(ti)
            if not tp.is_file():
                raise ModelError(f"The textual-inversion file '{tp}' does not exist.")
            from safetensors.torch import load_file

            emb = load_file(str(tp))
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
        return pipe, refiner, _weights_hash(self.sd_dir, self.cn_dir,
                                            *([Path(lora)] if lora else []))

    def generate(self, label_map: LabelMap, klass: str | None, seed: int, request: Any,
                 map_index: int, step: ProgressFn, cancel: CancelToken) -> np.ndarray:
        import cv2
        from PIL import Image

        params = request.params or {}
        h, w = label_map.shape
        # keep the aspect, longer side at the resolution, both sides multiples of 8
        scale = self.resolution / max(h, w)
        gh, gw = (max(8, int(round(h * scale / 8)) * 8), max(8, int(round(w * scale / 8)) * 8))
        small = cv2.resize(label_map.data, (gw, gh), interpolation=cv2.INTER_NEAREST)
        control = Image.fromarray(colourise(small, request.schema))
        prompt = class_prompt(klass, self.token, request.prompt)
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
        try:
            out = self.pipe(
                prompt, image=control, height=gh, width=gw, num_inference_steps=int(request.steps),
                guidance_scale=float(request.guidance), negative_prompt=negative, generator=gen,
                output_type="np", callback_on_step_end=callback,
            ).images[0]
            cancel.raise_if_cancelled()
            if self.strength > 0 and int(int(request.steps) * self.strength) > 0:
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
