"""Fit the texture refiner (the second stage of ``sdm``) to real images: no labels needed.

``train_refiner(images, out_dir, config, progress, cancel)`` is a long task like ``train_sdm``:
``Progress(step, steps, message, preview={"loss", "step", "sample"})``, a checkpoint before it
stops on Cancel, ``resume=True`` continues to the same step count with the same random streams
(the checkpoint format and its atomic writes are ``training.sdm``'s). Each step takes random
crops of real images at their own size, sends the whole image through the app's resize path
(``refiner.degrade``: shrink to the base model's size, a random softening, bicubic back) and
teaches the model the residual that path took away. At the end ``out_dir`` is a refiner folder
(``usgen_model.json`` + ``unet/``), to be put in an sdm model folder as ``refiner/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from usgen_desktop.core.tasks import CancelToken, Progress, ProgressFn, no_progress
from usgen_desktop.errors import DatasetError, UsgenError
from usgen_desktop.synthesis.devices import pick_device
from usgen_desktop.synthesis.training.data import _gray
from usgen_desktop.synthesis.training.sdm import (
    _load_checkpoint,
    _save_checkpoint,
    _write_png,
    latest_checkpoint,
    load_training_state,
)


@dataclass
class RefinerTrainConfig:
    """Training recipe. The defaults fit a CPU core: ~0.6 s per step."""

    base_size: int = 128  # the sdm model's size: what the app enlarges from
    patch: int = 128  # crops at the images' own pixels
    steps: int = 8000
    batch: int = 8
    lr: float = 3e-4
    warmup: int = 200
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    blur_max: float = 0.8  # softening at the base size, up to this sigma (px)
    blur_prob: float = 0.75
    checkpoint_every: int = 250
    sample_every: int = 500
    sample_steps: int = 12  # the recommended sampler steps written into the refiner
    keep_checkpoints: int = 2
    seed: int = 0
    device: str = "auto"
    block_out_channels: tuple[int, ...] = (32, 64, 96)
    layers_per_block: int = 1
    norm_num_groups: int = 8

    def arch(self) -> dict[str, Any]:
        return {"block_out_channels": list(self.block_out_channels),
                "layers_per_block": self.layers_per_block,
                "norm_num_groups": self.norm_num_groups}


@dataclass
class RefinerTrainResult:
    model_dir: Path
    step: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    cancelled: bool = False


def prepare_images(images: Sequence[np.ndarray], patch: int) -> list[np.ndarray]:
    """Grayscale uint8 copies; images smaller than a crop on either side are left out."""
    out = [_gray(np.asarray(i)) for i in images]
    out = [i for i in out if min(i.shape[:2]) >= max(8, patch // 2)]
    if not out:
        raise DatasetError(
            f"No image is large enough to train the refiner on (crops are {patch} px)."
        )
    return out


def _crop_pair(img: np.ndarray, base: tuple[int, int], patch: int, blur: float,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(real crop, degraded crop) at the same place, flipped left-right at random."""
    from usgen_desktop.synthesis.backends.refiner import degrade

    low = degrade(img, base, blur)
    h, w = img.shape
    ph, pw = min(patch, h - h % 2), min(patch, w - w % 2)
    y = int(rng.integers(0, h - ph + 1))
    x = int(rng.integers(0, w - pw + 1))
    hr, lr = img[y:y + ph, x:x + pw], low[y:y + ph, x:x + pw]
    if rng.random() < 0.5:
        hr, lr = hr[:, ::-1], lr[:, ::-1]
    if (ph, pw) != (patch, patch):  # a small image: reflect to the crop size
        pad = ((0, patch - ph), (0, patch - pw))
        hr, lr = np.pad(hr, pad, mode="reflect"), np.pad(lr, pad, mode="reflect")
    return np.ascontiguousarray(hr), np.ascontiguousarray(lr)


def residual_std(images: Sequence[np.ndarray], base: tuple[int, int], seed: int = 0,
                 n: int = 64) -> float:
    """Standard deviation of what the resize path takes away, in [-1, 1] image units."""
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n):
        img = images[int(rng.integers(0, len(images)))]
        hr, lr = _crop_pair(img, base, 64, 0.0, rng)
        vals.append((hr.astype(np.float32) - lr.astype(np.float32)) / 127.5)
    return float(np.std(np.stack(vals))) or 1.0


def train_refiner(
    images: Sequence[np.ndarray],
    out_dir: str | Path,
    config: RefinerTrainConfig | None = None,
    progress: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
    resume: bool = False,
    info: dict[str, Any] | None = None,
    init_from: str | Path | None = None,
) -> RefinerTrainResult:
    """Train (or resume) a refiner on real images (uint8, any sizes). ``init_from``: a refiner
    folder (or an sdm model folder with ``refiner/``) to start from: its shape and residual scale
    are kept, so a user's scans can teach it their scanner's grain in fewer steps."""
    import time

    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    from usgen_desktop.synthesis.backends import refiner as rf

    config = config or RefinerTrainConfig()
    cancel = cancel or CancelToken()
    out_dir = Path(out_dir)
    if config.steps < 1 or config.batch < 1:
        raise UsgenError("Training needs at least one step and a batch of at least one.")
    if config.patch < 16 or config.patch % 8:
        raise UsgenError("The refiner's crop size must be a multiple of 8, at least 16.")
    last = latest_checkpoint(out_dir)
    if last is not None and not resume:
        raise UsgenError(
            f"The folder '{out_dir}' already holds a training run; resume it or choose another."
        )
    imgs = prepare_images(images, config.patch)
    base = (int(config.base_size), int(config.base_size))
    init_unet = None
    if init_from is not None:
        src = Path(init_from)
        src = rf.find_refiner(src) or src
        init_unet, init_cfg = rf.load_refiner(src)
        scale = init_cfg.residual_scale
        base = tuple(init_cfg.base_size)
        config = _with_arch(config, init_unet)
    else:
        scale = 1.0 / residual_std(imgs, base, config.seed)
    # the texture's gain belongs to the pair (base model, refiner): a refiner fine-tuned from
    # another keeps its calibration (scripts/calibrate_refiner.py measures it again)
    cfg = rf.RefinerConfig(base_size=base, residual_scale=round(float(scale), 4),
                           steps=config.sample_steps,
                           gain=init_cfg.gain if init_unet is not None else 1.0)
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    unet = rf.build_unet(**config.arch())
    if init_unet is not None and not (resume and last is not None):
        unet.load_state_dict(init_unet.state_dict())
    ema = rf.build_unet(**config.arch())
    ema.load_state_dict(unet.state_dict())
    unet.to(device).train()
    ema.to(device).eval().requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=config.lr)
    tgen = torch.Generator("cpu").manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    losses: list[float] = []
    start, elapsed0 = 0, 0.0
    if resume and last is not None:
        state = load_training_state(last)
        if state.get("arch") != config.arch():
            raise UsgenError(
                "The saved run used another model shape; resume it with the same settings."
            )
        _load_checkpoint(last, unet, ema, opt, tgen)
        rng.bit_generator.state = state["numpy_rng"]
        start = int(state["step"])
        losses = list(state.get("losses", []))
        elapsed0 = float(state.get("seconds", 0.0))
        cfg = rf.RefinerConfig.from_dict(state["model_config"])
    sched = DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps,
                          beta_schedule=cfg.beta_schedule, prediction_type=cfg.prediction_type)
    training_info = {
        "steps": config.steps, "batch": config.batch, "lr": config.lr, "patch": config.patch,
        "blur_max": config.blur_max, "images": len(imgs), "device": device,
        "parameters": int(sum(p.numel() for p in unet.parameters())), **(info or {}),
    }
    if init_from is not None:
        training_info["init_from"] = Path(init_from).name
    cfg.training = training_info
    params, ema_params = list(unet.parameters()), list(ema.parameters())
    sample_rng = np.random.default_rng(config.seed + 1)
    fixed = [_crop_pair(imgs[int(sample_rng.integers(0, len(imgs)))], base, config.patch, 0.0,
                        sample_rng) for _ in range(3)]
    t_start = time.perf_counter()

    def seconds() -> float:
        return elapsed0 + time.perf_counter() - t_start

    def checkpoint(step: int) -> None:
        st = {"model_config": cfg.to_dict(), "arch": config.arch(), "train_config": asdict(config),
              "losses": losses, "seconds": seconds(), "training_info": training_info}
        _save_checkpoint(out_dir, step, unet, ema, opt, tgen, rng, st, config.keep_checkpoints)

    step, cancelled = start, False
    progress(Progress(step, config.steps, "starting", {"loss": None, "step": step}))
    while step < config.steps:
        if cancel.cancelled:
            cancelled = True
            break
        hrs, lrs = [], []
        for _ in range(config.batch):
            img = imgs[int(rng.integers(0, len(imgs)))]
            blur = rng.uniform(0.0, config.blur_max) if rng.random() < config.blur_prob else 0.0
            hr, lr = _crop_pair(img, base, config.patch, blur, rng)
            hrs.append(hr)
            lrs.append(lr)
        hr_t = torch.from_numpy(np.stack(hrs).astype(np.float32) / 127.5 - 1.0)[:, None]
        lr_t = torch.from_numpy(np.stack(lrs).astype(np.float32) / 127.5 - 1.0)[:, None]
        x0 = (hr_t - lr_t) * float(cfg.residual_scale)
        noise = torch.randn(x0.shape, generator=tgen)
        t = torch.randint(0, cfg.num_train_timesteps, (config.batch,), generator=tgen)
        xt = sched.add_noise(x0, noise, t)
        target = sched.get_velocity(x0, noise, t) if cfg.prediction_type == "v_prediction" else noise
        lr_now = config.lr * min(1.0, (step + 1) / max(1, config.warmup))
        for g in opt.param_groups:
            g["lr"] = lr_now
        pred = rf.from_unet(unet(rf.to_unet(xt.to(device), lr_t.to(device)), t.to(device)).sample)
        loss = F.mse_loss(pred.float(), target.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        opt.step()
        decay = min(config.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_mul_(ema_params, decay)
            torch._foreach_add_(ema_params, [p.detach() for p in params], alpha=1 - decay)
        step += 1
        lv = float(loss.detach())
        if not np.isfinite(lv):
            raise UsgenError(
                f"Training diverged at step {step} (loss is not a number); lower the learning rate."
            )
        losses.append(lv)
        sample_img = None
        if config.sample_every and step % config.sample_every == 0:
            sample_img = sample_grid(ema, cfg, fixed, config.sample_steps, device)
            _write_png(out_dir / "samples" / f"step_{step:07d}.png", sample_img)
        if config.checkpoint_every and step % config.checkpoint_every == 0:
            checkpoint(step)
        progress(Progress(step, config.steps, f"step {step} of {config.steps}, loss {lv:.4f}",
                          {"loss": lv, "step": step, "sample": sample_img}))
    done = latest_checkpoint(out_dir)
    if step > start and (done is None or int(load_training_state(done)["step"]) != step):
        checkpoint(step)
    cfg.training = dict(training_info, steps_done=step, seconds=round(seconds(), 1),
                        final_loss=float(np.mean(losses[-100:])) if losses else None,
                        weights="ema")
    rf.save_refiner(ema, cfg, out_dir)
    return RefinerTrainResult(out_dir, step, losses, seconds(), cancelled)


def _with_arch(config: RefinerTrainConfig, unet) -> RefinerTrainConfig:
    from dataclasses import replace

    return replace(config, block_out_channels=tuple(int(c) for c in unet.config.block_out_channels),
                   layers_per_block=int(unet.config.layers_per_block),
                   norm_num_groups=int(unet.config.norm_num_groups))


def sample_grid(unet, cfg, pairs, steps: int, device: str) -> np.ndarray:
    """Enlarged | refined | real, one row per fixed crop (uint8)."""
    from usgen_desktop.synthesis.backends.refiner import refine

    rows = []
    for k, (hr, lr) in enumerate(pairs):
        out = refine(unet, cfg, lr, seed=k, steps=steps, device=device)
        rows.append(np.concatenate([lr, out, hr], axis=1))
    return np.concatenate(rows, axis=0)


def export_checkpoint(ckpt: Path, dest: Path, use_ema: bool = True, info: dict | None = None) -> Path:
    """A refiner folder from a checkpoint (EMA weights by default)."""
    from safetensors.torch import load_file

    from usgen_desktop.synthesis.backends import refiner as rf

    state = load_training_state(ckpt)
    cfg = rf.RefinerConfig.from_dict(state["model_config"])
    cfg.training = dict(cfg.training, **state.get("training_info", {}), steps_done=state["step"],
                        seconds=round(float(state.get("seconds", 0.0)), 1),
                        weights="ema" if use_ema else "raw", **(info or {}))
    arch = state["arch"]
    unet = rf.build_unet(**arch)
    unet.load_state_dict(load_file(str(Path(ckpt) / ("ema.safetensors" if use_ema
                                                       else "model.safetensors"))))
    rf.save_refiner(unet, cfg, Path(dest))
    return Path(dest)


def calibrate_model(model_dir: Path, examples: Sequence[tuple[np.ndarray, Any, str | None]],
                    seed: int = 0, steps: int = 25, guidance: float | None = None,
                    device: str = "cpu",
                    progress: ProgressFn = no_progress, cancel: CancelToken | None = None,
                    write: bool = True) -> tuple[float, dict[str, Any]]:
    """Calibrate the texture gain of the refiner in the sdm model folder ``model_dir``.

    ``examples`` are (real image, label map, class) of the *training* set: the base model draws
    each label map as the app does, the image is enlarged, the refiner adds its texture at gain
    1, and ``refiner.calibrate_gain`` picks the gain that gives the finest octave real power
    against the real images. ``guidance`` None: the base model's recommended guidance (what the
    app draws with; a softer layout wants more gain). ``write`` stores the gain
    (``recommended.gain``) in the refiner."""
    import json

    from usgen_desktop.core.labels import LabelMap
    from usgen_desktop.synthesis.backends import refiner as rf
    from usgen_desktop.synthesis.backends.sdm import (
        SdmBackend,
        model_to_uint8,
        resize_image,
        sample,
    )
    from usgen_desktop.synthesis.request import model_recommendations, seed_for

    if guidance is None:
        guidance = float(model_recommendations(str(model_dir)).get("guidance", 2.0))

    cancel = cancel or CancelToken()
    if not examples:
        raise DatasetError("Calibrating the refiner needs labelled training images.")
    backend = SdmBackend(Path(model_dir), device=device, steps=steps, refine=False)
    folder = rf.find_refiner(Path(model_dir))
    if folder is None:
        raise UsgenError(f"The model folder '{model_dir}' has no texture refiner to calibrate.")
    unet, cfg = rf.load_refiner(folder)
    unet = unet.to(device)
    sid = getattr(backend.config.schema, "sector_id", None)
    real, enlarged, refined = [], [], []
    for i, (img, lab, klass) in enumerate(examples):
        cancel.raise_if_cancelled()
        lm = lab if isinstance(lab, LabelMap) else LabelMap(np.asarray(lab, np.uint8))
        s = seed_for(seed, i)
        x = sample(backend.unet, backend.config, backend.condition(lm)[None],
                   [backend.config.class_index(klass)], [s], steps=steps, guidance=guidance,
                   device=device, dtype=backend.dtype)
        base = resize_image(model_to_uint8(x[0]), lm.shape)
        keep = lm.data == 0 if sid is not None and sid in backend.config.label_ids else None
        refined.append(rf.refine(unet, cfg, base, s, gain=1.0, keep=keep, device=device))
        enlarged.append(base)
        real.append(_gray(np.asarray(img)))
        progress(Progress(i + 1, len(examples),
                          f"calibrating the texture, image {i + 1} of {len(examples)}"))
    gain, info = rf.calibrate_gain(real, enlarged, refined)
    if write:
        path = folder / rf.CONFIG_NAME
        d = json.loads(path.read_text(encoding="utf-8"))
        d.setdefault("recommended", {})["gain"] = gain
        d.setdefault("training", {})["calibration"] = {
            "gain": gain, "maps": len(examples), **info,
            "how": f"base {steps} DPM++ steps, guidance {guidance}, refiner at gain 1"}
        rf.RefinerConfig.from_dict(d)  # still a valid config before it is written
        path.write_text(json.dumps(d, indent=2) + "\n", encoding="utf-8")
    return gain, info
