"""Fine-tune Stable Diffusion for ultrasound with a LoRA (and optionally a textual-inversion
token), the recipe of ``seeds/002_*``: class prompts, the segmentation ControlNet frozen and fed
the coloured label map, only the LoRA matrices (and the token's embedding row) trained.

Output folder: ``pytorch_lora_weights.safetensors`` (diffusers LoRA format, loads with
``load_lora_weights``), ``learned_embeds.safetensors`` when a token was learned, and
``usgen_lora.json`` describing the run. Everything is read with ``local_files_only=True``.

Under ``torchrun`` / ``accelerate launch`` the processes share the work like ``train_sdm``'s:
every rank draws the global batch's choices from the same streams and keeps its slice, the
trainable weights' gradients are averaged after each backward pass, and rank 0 alone writes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from usgen_desktop.core.labels import LabelSchema
from usgen_desktop.core.tasks import CancelToken, Progress, ProgressFn, no_progress
from usgen_desktop.errors import DatasetError, ModelError, UsgenError
from usgen_desktop.synthesis.training import distributed
from usgen_desktop.synthesis.training.data import Triple, augment, prepare

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
TI_WEIGHTS = "learned_embeds.safetensors"


@dataclass
class LoraConfig:
    steps: int = 500
    batch: int = 1
    size: int = 512
    rank: int = 8
    lr: float = 1e-4
    ti_lr: float = 5e-4
    token: str | None = None  # e.g. "<us>": also learn this word's embedding
    init_word: str = "ultrasound"
    device: str = "auto"
    seed: int = 0
    augment: bool = True


@dataclass
class LoraResult:
    out_dir: Path
    step: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    cancelled: bool = False

    @property
    def final_loss(self) -> float:
        tail = self.losses[-20:]
        return float(np.mean(tail)) if tail else float("nan")


def train_lora(
    data: Sequence[Triple],
    schema: LabelSchema | None,
    base_dir: str | Path,
    out_dir: str | Path,
    config: LoraConfig | None = None,
    controlnet_dir: str | Path | None = None,
    progress: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
) -> LoraResult:
    """Train a LoRA on (image, label map, class) triples; returns what was done (a cancel keeps
    and saves the LoRA trained so far)."""
    import torch
    import torch.nn.functional as F

    from usgen_desktop.core.labels import default_schema_for
    from usgen_desktop.synthesis.backends.controlnet import (
        check_controlnet_folder,
        check_sd_folder,
        class_prompt,
        colourise,
    )

    config = config or LoraConfig()
    cancel = cancel or CancelToken()
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    check_sd_folder(base_dir)
    if controlnet_dir is not None:
        controlnet_dir = check_controlnet_folder(controlnet_dir)
    if config.steps < 1 or config.batch < 1:
        raise UsgenError("Training needs at least one step and a batch of at least one.")
    if config.size % 8:
        raise UsgenError("The LoRA training size must be a multiple of 8.")
    prep = prepare(list(data), (config.size, config.size))
    if len(prep) == 0:
        raise DatasetError("The training set holds no image/label pairs.")
    schema = schema or default_schema_for(max(1, int(prep.labels.max())))
    dist, device = distributed.init(config.device)
    part = distributed.shard(dist, config.batch)
    if not dist.is_main:
        progress = no_progress
    comps = _load_components(base_dir, controlnet_dir, device)
    tok, text, vae, unet, sched, cn = comps
    torch.manual_seed(config.seed)
    from peft import LoraConfig as PeftLora

    unet.requires_grad_(False)
    vae.requires_grad_(False)
    text.requires_grad_(False)
    if cn is not None:
        cn.requires_grad_(False)
    unet.add_adapter(PeftLora(r=config.rank, lora_alpha=config.rank, init_lora_weights="gaussian",
                              target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    lora_params = [p for p in unet.parameters() if p.requires_grad]
    groups: list[dict[str, Any]] = [{"params": lora_params, "lr": config.lr}]
    token_id = None
    if config.token:
        token_id = _add_token(tok, text, config.token, config.init_word)
        emb = text.get_input_embeddings()
        emb.weight.requires_grad_(True)
        groups.append({"params": [emb.weight], "lr": config.ti_lr, "weight_decay": 0.0})
        orig_emb = emb.weight.detach().clone()
    opt = torch.optim.AdamW(groups)
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator("cpu").manual_seed(config.seed)
    losses: list[float] = []
    t0 = time.perf_counter()
    step = 0
    cancelled = False
    unet.train()
    while step < config.steps:
        if distributed.any_true(dist, cancel.cancelled, device):
            cancelled = True
            break
        # the global batch's choices from the shared streams; this rank makes its slice
        idx = rng.integers(0, len(prep), config.batch)
        seeds = rng.integers(0, 2**63 - 1, config.batch)
        imgs, ctrls, prompts = [], [], []
        for i, seed in zip(idx[part], seeds[part], strict=True):
            img, lab = prep.images[i], prep.labels[i]
            if config.augment:
                img, lab = augment(img, lab, np.random.default_rng(int(seed)))
            imgs.append(np.repeat(img[None].astype(np.float32) / 127.5 - 1.0, 3, axis=0))
            ctrls.append(colourise(lab, schema).transpose(2, 0, 1).astype(np.float32) / 255.0)
            k = int(prep.class_idx[i])
            klass = prep.classes[k] if k < len(prep.classes) else None
            prompts.append(class_prompt(klass, config.token))
        x = torch.from_numpy(np.stack(imgs)).to(device)
        ids = tok(prompts, padding="max_length", max_length=tok.model_max_length,
                  truncation=True, return_tensors="pt").input_ids.to(device)
        with torch.no_grad():
            post = vae.encode(x).latent_dist
            shape = (config.batch, *post.mean.shape[1:])
            eps = torch.randn(shape, generator=gen)[part].to(device)
            latents = (post.mean + post.std * eps) * vae.config.scaling_factor
        noise = torch.randn(shape, generator=gen)[part].to(device)
        t = torch.randint(0, sched.config.num_train_timesteps, (config.batch,), generator=gen)
        t = t[part].to(device)
        noisy = sched.add_noise(latents, noise, t)
        hidden = text(ids)[0]
        kwargs = {}
        if cn is not None:
            ctrl = torch.from_numpy(np.stack(ctrls)).to(device)
            down, mid = cn(noisy, t, encoder_hidden_states=hidden, controlnet_cond=ctrl,
                           return_dict=False)
            kwargs = {"down_block_additional_residuals": down,
                      "mid_block_additional_residual": mid}
        pred = unet(noisy, t, encoder_hidden_states=hidden, **kwargs).sample
        target = (sched.get_velocity(latents, noise, t)
                  if sched.config.prediction_type == "v_prediction" else noise)
        loss = F.mse_loss(pred.float(), target.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients(dist, [p for g in groups for p in g["params"]])
        opt.step()
        if token_id is not None:
            # only the new token's row learns: put every other row back
            with torch.no_grad():
                keep = torch.ones(orig_emb.shape[0], dtype=torch.bool)
                keep[token_id] = False
                text.get_input_embeddings().weight[keep] = orig_emb[keep]
        step += 1
        lv = distributed.mean(dist, float(loss.detach()), device)  # the global batch's loss
        if not np.isfinite(lv):
            raise UsgenError(f"LoRA training diverged at step {step}; lower the learning rate.")
        losses.append(lv)
        progress(Progress(step, config.steps, f"step {step} of {config.steps}, loss {lv:.4f}",
                          {"loss": lv, "step": step, "sample": None}))
    if step > 0 and dist.is_main:
        _save(out_dir, unet, text, token_id, config, base_dir, controlnet_dir, step, losses,
              time.perf_counter() - t0)
    distributed.barrier(dist)
    return LoraResult(out_dir, step, losses, time.perf_counter() - t0, cancelled)


def _load_components(base: Path, cn_dir: Path | None, device: str):
    from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from usgen_desktop.synthesis.weights import require_safetensors

    require_safetensors(base, ("unet", "vae", "text_encoder"), "Stable Diffusion")
    if cn_dir is not None:
        require_safetensors(cn_dir, what="ControlNet")
    try:
        tok = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer", local_files_only=True)
        text = CLIPTextModel.from_pretrained(base, subfolder="text_encoder",
                                             local_files_only=True, use_safetensors=True)
        vae = AutoencoderKL.from_pretrained(base, subfolder="vae", local_files_only=True,
                                            use_safetensors=True)
        unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet", local_files_only=True,
                                                    use_safetensors=True)
        sched = DDPMScheduler.from_pretrained(base, subfolder="scheduler", local_files_only=True)
        cn = (ControlNetModel.from_pretrained(cn_dir, local_files_only=True, use_safetensors=True)
              if cn_dir is not None else None)
    except Exception as exc:
        raise ModelError(
            f"The Stable Diffusion folder '{base}' cannot be loaded ({type(exc).__name__}); a "
            "file is missing or damaged."
        ) from exc
    for m in (text, vae, unet, cn):
        if m is not None:
            m.to(device)
    return tok, text, vae, unet, sched, cn


def _add_token(tok, text, token: str, init_word: str) -> int:
    if tok.add_tokens(token) == 0:
        raise UsgenError(f"The token '{token}' is already a word of the model; choose another.")
    text.resize_token_embeddings(len(tok))
    token_id = tok.convert_tokens_to_ids(token)
    init = tok.encode(init_word, add_special_tokens=False)
    emb = text.get_input_embeddings().weight
    with __import__("torch").no_grad():
        emb[token_id] = emb[init].mean(0) if init else emb.mean(0)
    return int(token_id)


def _save(out_dir: Path, unet, text, token_id, config: LoraConfig, base: Path,
          cn_dir: Path | None, step: int, losses: list[float], seconds: float) -> None:
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(out_dir, unet_lora_layers=layers,
                                              safe_serialization=True)
    if token_id is not None:
        vec = text.get_input_embeddings().weight[token_id].detach().cpu().clone()
        save_file({config.token: vec}, str(out_dir / TI_WEIGHTS))
    meta = {"kind": "lora", "base": str(base), "controlnet": str(cn_dir) if cn_dir else None,
            "config": asdict(config), "steps_done": step, "seconds": round(seconds, 1),
            "final_loss": float(np.mean(losses[-20:])) if losses else None}
    (out_dir / "usgen_lora.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
