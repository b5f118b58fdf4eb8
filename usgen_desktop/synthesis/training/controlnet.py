"""Train a segmentation ControlNet for Stable Diffusion on the user's image/label pairs, the
recipe of ``seeds/000_*``: the ControlNet starts as a copy of the base UNet's encoder with zero
convolutions (``ControlNetModel.from_unet``, as the ControlNet paper does) or from a ControlNet
folder the user has, is fed the label map in the schema's colours and a class prompt, and
learns while Stable Diffusion stays frozen; optionally a LoRA on the UNet learns in the same run
(``lora_rank`` > 0).

``train_controlnet(...)`` is a plain long task: ``Progress(step, steps, message,
preview={"loss", "step", "sample": None})`` per step, and a cancel stops at the next step after
writing a checkpoint. Checkpoints (``out_dir/checkpoints/step_NNNNNNN/``: ControlNet and LoRA
weights, optimizer and RNG states as safetensors, the rest JSON; nothing pickled) are written
under a temporary name and renamed; ``resume=True`` continues from the newest with the same
random streams, so a resumed run ends with the weights of the run never interrupted. Mixed
precision and gradient checkpointing are used on CUDA only.

The output folder is a ControlNet folder the ``controlnet`` backend loads (``controlnet_dir``):
``config.json`` + ``diffusion_pytorch_model.safetensors``, with ``pytorch_lora_weights.safetensors``
beside it when a LoRA was trained (the backend's ``lora``), and ``usgen_controlnet.json``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from usgen_desktop.core.labels import LabelSchema
from usgen_desktop.core.tasks import CancelToken, Progress, ProgressFn, no_progress
from usgen_desktop.errors import DatasetError, ModelError, UsgenError
from usgen_desktop.synthesis.devices import pick_device
from usgen_desktop.synthesis.training.data import Triple, augment, prepare
from usgen_desktop.synthesis.training.sdm import (
    latest_checkpoint,
    read_checkpoint,
    write_checkpoint,
)

META = "usgen_controlnet.json"


@dataclass
class ControlNetConfig:
    """Training recipe. The defaults suit SD 1.5 at 512² on a GPU."""

    steps: int = 1000
    batch: int = 1
    size: int = 512
    lr: float = 1e-5
    lora_rank: int = 0  # > 0: also train a LoRA of this rank on the UNet's attention
    lora_lr: float = 1e-4
    prompt_dropout: float = 0.1  # empty prompt: the ControlNet learns from the label map alone
    grad_clip: float = 1.0
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    seed: int = 0
    augment: bool = True
    device: str = "auto"
    mixed_precision: bool = True  # CUDA only
    gradient_checkpointing: bool = True  # CUDA only


@dataclass
class ControlNetResult:
    out_dir: Path
    step: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    cancelled: bool = False

    @property
    def final_loss(self) -> float:
        tail = self.losses[-20:]
        return float(np.mean(tail)) if tail else float("nan")


def _cond_channels(vae_blocks: int) -> tuple[int, ...]:
    """The conditioning encoder must shrink the control image as much as the VAE shrinks the
    image (8x in SD 1.5: four stages); tiny test models shrink less."""
    full = (16, 32, 96, 256)
    return full if vae_blocks >= len(full) else full[:max(1, vae_blocks)]


def load_sd_parts(base: Path, device: str):
    """Tokenizer, text encoder, VAE, UNet and DDPM scheduler of a local SD folder (safetensors
    only; a damaged folder is one ModelError)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from usgen_desktop.synthesis.backends.controlnet import check_sd_folder

    check_sd_folder(base)
    try:
        tok = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer", local_files_only=True)
        text = CLIPTextModel.from_pretrained(base, subfolder="text_encoder",
                                             local_files_only=True, use_safetensors=True)
        vae = AutoencoderKL.from_pretrained(base, subfolder="vae", local_files_only=True,
                                            use_safetensors=True)
        unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet", local_files_only=True,
                                                    use_safetensors=True)
        sched = DDPMScheduler.from_pretrained(base, subfolder="scheduler", local_files_only=True)
    except Exception as exc:
        raise ModelError(
            f"The Stable Diffusion folder '{base}' cannot be loaded ({type(exc).__name__}); a "
            "file is missing or damaged."
        ) from exc
    for m in (text, vae, unet):
        m.to(device)
    return tok, text, vae, unet, sched


def _init_controlnet(unet, vae, init_from: Path | None):
    from diffusers import ControlNetModel

    from usgen_desktop.synthesis.backends.controlnet import check_controlnet_folder

    if init_from is None:
        return ControlNetModel.from_unet(
            unet, conditioning_embedding_out_channels=_cond_channels(
                len(vae.config.block_out_channels)))
    folder = check_controlnet_folder(init_from)
    try:
        return ControlNetModel.from_pretrained(folder, local_files_only=True,
                                               use_safetensors=True)
    except Exception as exc:
        raise ModelError(
            f"The ControlNet folder '{folder}' cannot be loaded ({type(exc).__name__}); a file "
            "is missing or damaged."
        ) from exc


def train_controlnet(
    data: Sequence[Triple],
    schema: LabelSchema | None,
    base_dir: str | Path,
    out_dir: str | Path,
    config: ControlNetConfig | None = None,
    init_from: str | Path | None = None,
    progress: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
    resume: bool = False,
    info: dict[str, Any] | None = None,
) -> ControlNetResult:
    """Train (or resume) a ControlNet (and optional UNet LoRA) on (image, label map, class)
    triples; ``init_from`` a ControlNet folder to start from instead of the base UNet. A cancel
    keeps and saves what was trained so far."""
    import torch
    import torch.nn.functional as F

    from usgen_desktop.core.labels import default_schema_for
    from usgen_desktop.synthesis.backends.controlnet import class_prompt, colourise

    config = config or ControlNetConfig()
    cancel = cancel or CancelToken()
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    init = Path(init_from) if init_from else None
    if config.steps < 1 or config.batch < 1:
        raise UsgenError("Training needs at least one step and a batch of at least one.")
    if config.size < 8 or config.size % 8:
        raise UsgenError("The ControlNet training size must be a multiple of 8.")
    if not (np.isfinite(config.lr) and np.isfinite(config.lora_lr)) or config.lr <= 0 \
            or config.lora_lr <= 0 or config.lora_rank < 0:
        raise UsgenError("The learning rates must be numbers above 0 and the LoRA rank 0 or more.")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsgenError(f"'{out_dir}' is a file; choose a folder for the ControlNet.")
    last = latest_checkpoint(out_dir)
    if last is not None and not resume:
        raise UsgenError(
            f"The folder '{out_dir}' already holds a training run; resume it or choose another."
        )
    prep = prepare(list(data), (config.size, config.size))
    if len(prep) == 0:
        raise DatasetError("The training set holds no image/label pairs.")
    schema = schema or default_schema_for(max(1, int(prep.labels.max())))
    device = str(pick_device(config.device))
    cuda = device.startswith("cuda")
    torch.manual_seed(config.seed)
    tok, text, vae, unet, sched = load_sd_parts(base_dir, device)
    cn = _init_controlnet(unet, vae, init).to(device)
    use_amp = cuda and config.mixed_precision
    amp_dtype = torch.bfloat16 if (use_amp and torch.cuda.is_bf16_supported()) else torch.float16
    vae.requires_grad_(False)
    text.requires_grad_(False)
    unet.requires_grad_(False)
    if use_amp:  # frozen parts in half precision: half the memory, and they get no updates
        vae.to(dtype=amp_dtype)
        text.to(dtype=amp_dtype)
        if config.lora_rank == 0:
            unet.to(dtype=amp_dtype)
    cn.train()
    if cuda and config.gradient_checkpointing:
        cn.enable_gradient_checkpointing()
        unet.enable_gradient_checkpointing()
    groups: list[dict[str, Any]] = [{"params": list(cn.parameters()), "lr": config.lr}]
    if config.lora_rank > 0:
        from peft import LoraConfig as PeftLora

        unet.add_adapter(PeftLora(r=config.lora_rank, lora_alpha=config.lora_rank,
                                  init_lora_weights="gaussian",
                                  target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
        unet.train()
        groups.append({"params": [p for p in unet.parameters() if p.requires_grad],
                       "lr": config.lora_lr})
    params = [p for g in groups for p in g["params"]]
    opt = torch.optim.AdamW(groups)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    rng = np.random.default_rng(config.seed)
    tgen = torch.Generator("cpu").manual_seed(config.seed)
    losses: list[float] = []
    start, elapsed0 = 0, 0.0
    if resume and last is not None:
        state = _load_checkpoint(last, cn, unet if config.lora_rank else None, opt, tgen)
        if state.get("train_config", {}).get("size") != config.size or \
                state.get("train_config", {}).get("lora_rank") != config.lora_rank:
            raise UsgenError(
                "The saved run used another size or LoRA rank; resume it with the same settings."
            )
        rng.bit_generator.state = state["numpy_rng"]
        start = int(state["step"])
        losses = list(state.get("losses", []))
        elapsed0 = float(state.get("seconds", 0.0))
    training_info = {"base": str(base_dir), "init_from": str(init) if init else None,
                     "pairs": len(prep), "device": device, "classes": list(prep.classes),
                     **(info or {})}
    t0 = time.perf_counter()

    def seconds() -> float:
        return elapsed0 + time.perf_counter() - t0

    def checkpoint(step: int) -> None:
        st = {"train_config": asdict(config), "losses": losses, "seconds": seconds(),
              "training_info": training_info}
        try:
            _save_checkpoint(out_dir, step, cn, unet if config.lora_rank else None, opt, tgen,
                             rng, st, config.keep_checkpoints)
        except OSError as exc:
            raise UsgenError(
                f"Could not write a checkpoint to '{out_dir}' ({exc.strerror or exc})."
            ) from exc

    null_ids = tok([""], padding="max_length", max_length=tok.model_max_length,
                   truncation=True, return_tensors="pt").input_ids
    step = start
    cancelled = False
    progress(Progress(step, config.steps, "starting", {"loss": None, "step": step}))
    while step < config.steps:
        if cancel.cancelled:
            cancelled = True
            break
        idx = rng.integers(0, len(prep), config.batch)
        imgs, ctrls, prompts = [], [], []
        for i in idx:
            img, lab = prep.images[i], prep.labels[i]
            if config.augment:
                img, lab = augment(img, lab, rng)
            imgs.append(np.repeat(img[None].astype(np.float32) / 127.5 - 1.0, 3, axis=0))
            ctrls.append(colourise(lab, schema).transpose(2, 0, 1).astype(np.float32) / 255.0)
            k = int(prep.class_idx[i])
            klass = prep.classes[k] if k < len(prep.classes) else None
            drop = rng.random() < config.prompt_dropout
            prompts.append("" if drop else class_prompt(klass, None, None, schema))
        ids = tok(prompts, padding="max_length", max_length=tok.model_max_length,
                  truncation=True, return_tensors="pt").input_ids
        ids = torch.where(torch.tensor([p == "" for p in prompts])[:, None], null_ids, ids)
        x = torch.from_numpy(np.stack(imgs)).to(device, dtype=vae.dtype)
        ctrl = torch.from_numpy(np.stack(ctrls)).to(device)
        with torch.no_grad():
            latents = vae.encode(x).latent_dist.sample(generator=tgen).float()
            latents = latents * vae.config.scaling_factor
            hidden = text(ids.to(device))[0].float()
        noise = torch.randn(latents.shape, generator=tgen).to(device)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), generator=tgen)
        t = t.to(device)
        noisy = sched.add_noise(latents, noise, t)
        target = (sched.get_velocity(latents, noise, t)
                  if sched.config.prediction_type == "v_prediction" else noise)
        with torch.autocast("cuda", dtype=amp_dtype, enabled=use_amp):
            down, mid = cn(noisy, t, encoder_hidden_states=hidden, controlnet_cond=ctrl,
                           return_dict=False)
            pred = unet(noisy, t, encoder_hidden_states=hidden,
                        down_block_additional_residuals=down,
                        mid_block_additional_residual=mid).sample
        loss = F.mse_loss(pred.float(), target.float())
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        scaler.step(opt)
        scaler.update()
        step += 1
        lv = float(loss.detach())
        if not np.isfinite(lv):
            raise UsgenError(
                f"ControlNet training diverged at step {step}; lower the learning rate."
            )
        losses.append(lv)
        if config.checkpoint_every and step % config.checkpoint_every == 0:
            checkpoint(step)
        progress(Progress(step, config.steps, f"step {step} of {config.steps}, loss {lv:.4f}",
                          {"loss": lv, "step": step, "sample": None}))
    if step > start:
        ck = latest_checkpoint(out_dir)
        if ck is None or int(json.loads((ck / "state.json").read_text("utf-8"))["step"]) != step:
            checkpoint(step)
    if step > 0:
        try:
            _save_model(out_dir, cn, unet if config.lora_rank else None, config, training_info,
                        step, losses, seconds())
        except OSError as exc:
            raise UsgenError(
                f"Could not write the ControlNet to '{out_dir}' ({exc.strerror or exc})."
            ) from exc
    return ControlNetResult(out_dir, step, losses, seconds(), cancelled)


def evaluate_loss(data: Sequence[Triple], schema: LabelSchema | None, base_dir: str | Path,
                  controlnet_dir: str | Path | None, size: int, repeats: int = 4,
                  seed: int = 1234, device: str = "cpu") -> float:
    """The mean denoising loss of a ControlNet (None: a fresh one made from the base UNet, which
    adds nothing) over every pair, with fixed noise and timesteps: unlike the training losses,
    two ControlNets are compared on exactly the same problems."""
    import torch
    import torch.nn.functional as F

    from usgen_desktop.core.labels import default_schema_for
    from usgen_desktop.synthesis.backends.controlnet import class_prompt, colourise

    prep = prepare(list(data), (size, size))
    schema = schema or default_schema_for(max(1, int(prep.labels.max())))
    tok, text, vae, unet, sched = load_sd_parts(Path(base_dir), device)
    cn = _init_controlnet(unet, vae, Path(controlnet_dir) if controlnet_dir else None)
    cn.to(device).eval()
    gen = torch.Generator("cpu").manual_seed(seed)
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(len(prep)):
            k = int(prep.class_idx[i])
            klass = prep.classes[k] if k < len(prep.classes) else None
            ids = tok([class_prompt(klass, None, None, schema)] * repeats, padding="max_length",
                      max_length=tok.model_max_length, truncation=True,
                      return_tensors="pt").input_ids.to(device)
            img = np.repeat(prep.images[i][None].astype(np.float32) / 127.5 - 1.0, 3, axis=0)
            x = torch.from_numpy(np.stack([img] * repeats)).to(device)
            ctrl = colourise(prep.labels[i], schema).transpose(2, 0, 1).astype(np.float32) / 255.0
            c = torch.from_numpy(np.stack([ctrl] * repeats)).to(device)
            lat = vae.encode(x).latent_dist.sample(generator=gen) * vae.config.scaling_factor
            noise = torch.randn(lat.shape, generator=gen).to(device)
            t = torch.randint(0, sched.config.num_train_timesteps, (repeats,), generator=gen)
            t = t.to(device)
            noisy = sched.add_noise(lat, noise, t)
            hidden = text(ids)[0]
            down, mid = cn(noisy, t, encoder_hidden_states=hidden, controlnet_cond=c,
                           return_dict=False)
            pred = unet(noisy, t, encoder_hidden_states=hidden,
                        down_block_additional_residuals=down,
                        mid_block_additional_residual=mid).sample
            target = (sched.get_velocity(lat, noise, t)
                      if sched.config.prediction_type == "v_prediction" else noise)
            total += float(F.mse_loss(pred.float(), target.float())) * repeats
            n += repeats
    return total / max(1, n)


# --------------------------------------------------------------------------------------------
# Checkpoints and the output folder
# --------------------------------------------------------------------------------------------
def _lora_state(unet) -> dict[str, Any]:
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(unet)


def _save_checkpoint(out_dir: Path, step: int, cn, unet, opt, tgen, rng, state: dict,
                     keep: int) -> Path:
    weights = {"controlnet": cn.state_dict()}
    if unet is not None:
        weights["lora"] = _lora_state(unet)
    return write_checkpoint(out_dir, step, weights, opt, tgen, rng, state, keep)


def _load_checkpoint(path: Path, cn, unet, opt, tgen) -> dict:
    from safetensors.torch import load_file

    try:
        cn.load_state_dict(load_file(str(path / "controlnet.safetensors")))
        if unet is not None:
            from peft.utils import set_peft_model_state_dict

            set_peft_model_state_dict(unet, load_file(str(path / "lora.safetensors")))
        return read_checkpoint(path, opt, tgen)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise UsgenError(
            f"The checkpoint '{path}' is damaged or from other settings, so the run cannot "
            "resume from it."
        ) from exc


def _save_model(out_dir: Path, cn, unet, config: ControlNetConfig, info: dict, step: int,
                losses: list[float], seconds: float) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    cn.save_pretrained(out_dir, safe_serialization=True)
    if unet is not None:
        from diffusers import StableDiffusionPipeline
        from diffusers.utils import convert_state_dict_to_diffusers

        layers = convert_state_dict_to_diffusers(_lora_state(unet))
        StableDiffusionPipeline.save_lora_weights(out_dir, unet_lora_layers=layers,
                                                  safe_serialization=True)
    meta = {"kind": "controlnet", **info, "config": asdict(config), "steps_done": step,
            "seconds": round(seconds, 1),
            "final_loss": float(np.mean(losses[-20:])) if losses else None,
            "lora": "pytorch_lora_weights.safetensors" if unet is not None else None}
    tmp = out_dir / (META + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    os.replace(tmp, out_dir / META)
