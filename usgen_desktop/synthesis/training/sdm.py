"""Fit the ``sdm`` backend to the user's own image/label pairs.

``train_sdm(data, out_dir, config, progress, cancel)`` is a plain long task like every other: it
reports ``Progress(step, steps, message, preview={"loss": float, "step": int, "sample": uint8
grid or None})`` so the Train panel can draw a live loss curve and show samples, and it stops at
the next step when cancelled, writing a checkpoint first so nothing is lost.

Checkpoints live in ``out_dir/checkpoints/step_NNNNNN/`` (weights, EMA weights, optimizer state
and RNG states as safetensors, the rest as JSON: nothing is pickled) and are written to a temporary
name and renamed, so a kill at any moment leaves the last complete one. ``resume=True`` continues
from it to the same step count with the same random streams, so a resumed run follows the run that
was never interrupted. At the end ``out_dir`` is a model folder the backend loads (``unet/``,
``ema/``, ``usgen_model.json``).

Several processes (``torchrun --nproc-per-node N -m usgen_desktop.cli.main train sdm ...`` or
``accelerate launch``) train one model with DistributedDataParallel: every rank draws the whole
global batch's choices (examples, per-example augmentation seeds, noise, timesteps) from the same
random streams and keeps its slice (``distributed.shard``), so ``batch`` stays the global batch,
the learning rate is unchanged, the run follows the one-process run up to floating-point sums,
and a checkpoint resumes on any number of processes. Only rank 0 writes.

torch is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from usgen_desktop.core.labels import LabelSchema
from usgen_desktop.core.overlays import IGNORE_BIT
from usgen_desktop.core.tasks import CancelToken, Progress, ProgressFn, no_progress
from usgen_desktop.errors import UsgenError
from usgen_desktop.synthesis.training import distributed
from usgen_desktop.synthesis.training.data import PreparedData, Triple, augment, prepare

CKPT_DIR = "checkpoints"
LATEST = "latest.json"


@dataclass
class TrainConfig:
    """Training recipe. The defaults are the default model's: small enough for a CPU."""

    size: int = 128
    steps: int = 2000
    batch: int = 8
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    label_dropout: float = 0.1  # drop some label channels: sample from partial label maps
    class_dropout: float = 0.1  # null class + no labels: the unconditional branch for CFG
    checkpoint_every: int = 250
    sample_every: int = 500
    sample_steps: int = 20
    keep_checkpoints: int = 2
    seed: int = 0
    augment: bool = True
    device: str = "auto"
    mixed_precision: bool = True  # used on CUDA only
    # the default model's shape: 2.7M parameters, ~0.7 s per batch-8 step at 128² on one free
    # CPU core; (32, 64, 128, 128) x 2 layers learns more per step but costs ~4x on a CPU
    block_out_channels: tuple[int, ...] = (16, 32, 64, 128)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    attention_head_dim: int = 8

    def arch(self) -> dict[str, Any]:
        return {
            "block_out_channels": list(self.block_out_channels),
            "layers_per_block": self.layers_per_block,
            "norm_num_groups": self.norm_num_groups,
            "attention_head_dim": self.attention_head_dim,
        }


@dataclass
class TrainResult:
    model_dir: Path
    step: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    cancelled: bool = False

    @property
    def final_loss(self) -> float:
        tail = self.losses[-50:]
        return float(np.mean(tail)) if tail else float("nan")


SampleCallback = Callable[[int, np.ndarray], None]


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------
def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete checkpoint folder of a run, or None."""
    ck = Path(out_dir) / CKPT_DIR
    ptr = ck / LATEST
    if ptr.is_file():
        try:
            d = ck / json.loads(ptr.read_text(encoding="utf-8"))["dir"]
            if (d / "state.json").is_file():
                return d
        except (OSError, ValueError, KeyError):
            pass  # fall back to scanning: the pointer may predate a crash
    found = sorted(p for p in ck.glob("step_*") if (p / "state.json").is_file()
                   and not p.name.endswith(".tmp"))
    return found[-1] if found else None


def optimizer_tensors(opt) -> tuple[dict[str, Any], list]:
    """An optimizer's state as flat tensors for safetensors (``"<param id>.<name>"``) and its
    param groups (JSON). :func:`restore_optimizer` undoes it."""
    import torch

    osd = opt.state_dict()
    tensors = {}
    for pid, st in osd["state"].items():
        for name, val in st.items():
            t = val if torch.is_tensor(val) else torch.tensor(val)
            tensors[f"{pid}.{name}"] = t.detach().contiguous().cpu()
    return tensors, osd["param_groups"]


def restore_optimizer(opt, flat: dict[str, Any], param_groups: list) -> None:
    """Load into ``opt`` what :func:`optimizer_tensors` wrote."""
    ostate: dict[int, dict[str, Any]] = {}
    for key, val in flat.items():
        pid, name = key.split(".", 1)
        ostate.setdefault(int(pid), {})[name] = val
    opt.load_state_dict({"state": ostate, "param_groups": param_groups})


def write_checkpoint(out_dir: Path, step: int, weights: dict[str, dict], opt, tgen, rng,
                     state: dict, keep: int) -> Path:
    """Write ``out_dir/checkpoints/step_NNNNNNN/``: each of ``weights`` (file stem -> state
    dict) as safetensors, the optimizer state, the torch and numpy random streams and
    ``state`` as JSON; to a temporary name, then renamed, so a kill leaves the last complete
    one. ``keep`` checkpoints stay. Every trainer's checkpoints have this layout."""
    import torch
    from safetensors.torch import save_file

    ck = Path(out_dir) / CKPT_DIR
    ck.mkdir(parents=True, exist_ok=True)
    final = ck / f"step_{step:07d}"
    tmp = ck / f"step_{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for stem, sd in weights.items():
        save_file({k: v.detach().contiguous().cpu() for k, v in sd.items()},
                  str(tmp / f"{stem}.safetensors"))
    tensors, groups = optimizer_tensors(opt)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    save_file({"torch_generator": tgen.get_state(), "torch_global": torch.get_rng_state()},
              str(tmp / "rng.safetensors"))
    full = dict(state, step=step, numpy_rng=rng.bit_generator.state, param_groups=groups)
    (tmp / "state.json").write_text(json.dumps(full), encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    ptr_tmp = ck / (LATEST + ".tmp")
    ptr_tmp.write_text(json.dumps({"dir": final.name, "step": step}), encoding="utf-8")
    os.replace(ptr_tmp, ck / LATEST)
    olds = sorted(p for p in ck.glob("step_*") if not p.name.endswith(".tmp") and p != final)
    for p in olds[: max(0, len(olds) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def read_checkpoint(path: Path, opt, tgen) -> dict:
    """The JSON state of a checkpoint written by :func:`write_checkpoint`, with the optimizer
    and the torch random streams restored (the weights are the caller's to load)."""
    import torch
    from safetensors.torch import load_file

    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    restore_optimizer(opt, load_file(str(path / "optimizer.safetensors")), state["param_groups"])
    rng = load_file(str(path / "rng.safetensors"))
    tgen.set_state(rng["torch_generator"])
    torch.set_rng_state(rng["torch_global"])
    return state


def _save_checkpoint(out_dir: Path, step: int, unet, ema, opt, tgen, rng, state: dict,
                     keep: int) -> Path:
    return write_checkpoint(out_dir, step, {"model": unet.state_dict(), "ema": ema.state_dict()},
                            opt, tgen, rng, state, keep)


def _load_checkpoint(path: Path, unet, ema, opt, tgen) -> dict:
    from safetensors.torch import load_file

    unet.load_state_dict(load_file(str(path / "model.safetensors")))
    ema.load_state_dict(load_file(str(path / "ema.safetensors")))
    return read_checkpoint(path, opt, tgen)


def _damaged(ckpt: Path, exc: BaseException) -> str:
    return (f"The checkpoint '{ckpt}' is damaged ({type(exc).__name__}); delete that folder to "
            "resume from an earlier checkpoint, or train into an empty folder.")


def load_training_state(path: Path) -> dict:
    return json.loads((Path(path) / "state.json").read_text(encoding="utf-8"))


def export_checkpoint(ckpt: Path, dest: Path, use_ema: bool = True, info: dict | None = None) -> Path:
    """Turn a checkpoint into a model folder (``unet/`` holds the EMA weights by default and no
    ``ema/`` is written, which halves the size of a shipped model)."""
    from safetensors.torch import load_file

    from usgen_desktop.synthesis.backends.sdm import SdmConfig, build_unet, save_model

    state = load_training_state(ckpt)
    cfg = SdmConfig.from_dict(state["model_config"])
    cfg.training = dict(cfg.training, **state.get("training_info", {}), steps_done=state["step"],
                        seconds=round(float(state.get("seconds", 0.0)), 1),
                        weights="ema" if use_ema else "raw", **(info or {}))
    unet = build_unet(cfg, **state["arch"])
    unet.load_state_dict(load_file(str(Path(ckpt) / ("ema.safetensors" if use_ema
                                                       else "model.safetensors"))))
    save_model(unet, cfg, Path(dest))
    return Path(dest)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
def _start_from(config: TrainConfig, classes: Sequence[str] | None, folder: Path
                ) -> tuple[TrainConfig, list[str]]:
    """The recipe and classes of a run that starts from the model in ``folder``: its size and
    shape (blocks, layers, groups) replace the recipe's, and its classes are the run's (data of
    another class trains the unconditional branch). UsgenError when the folder holds no sdm model
    or the caller asks for other classes."""
    from usgen_desktop.synthesis.backends.sdm import read_config, weights_folder

    other = read_config(folder)
    try:
        unet_cfg = json.loads((weights_folder(folder) / "config.json").read_text("utf-8"))
        shape = dict(block_out_channels=tuple(int(c) for c in unet_cfg["block_out_channels"]),
                     layers_per_block=int(unet_cfg["layers_per_block"]),
                     norm_num_groups=int(unet_cfg["norm_num_groups"]),
                     attention_head_dim=int(unet_cfg["attention_head_dim"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsgenError(
            f"The model in '{folder}' has no readable UNet description (unet/config.json), so "
            "training cannot start from it."
        ) from exc
    if classes is not None and list(classes) != list(other.classes):
        raise UsgenError(
            f"The model in '{folder}' knows the classes {', '.join(other.classes) or 'none'}; "
            "a run that starts from it must use the same ones."
        )
    if other.size[0] != other.size[1]:
        raise UsgenError(f"The model in '{folder}' is not square, so training cannot start from it.")
    return replace(config, size=int(other.size[0]), **shape), list(other.classes)


def _init_weights(unet, cfg, folder: Path) -> None:
    """Copy a model folder's weights (EMA when it has them) into ``unet``; UsgenError when its
    labels are not this run's."""
    from usgen_desktop.synthesis.backends.sdm import load_unet, read_config

    other = read_config(folder)
    if list(other.label_ids) != list(cfg.label_ids):
        raise UsgenError(
            f"The model in '{folder}' was made for the label ids "
            f"{', '.join(map(str, other.label_ids))}, not these data's "
            f"{', '.join(map(str, cfg.label_ids))}, so training cannot start from it."
        )
    src, _ = load_unet(folder)
    unet.load_state_dict(src.state_dict())


def _sample_rows(prep: PreparedData, n: int) -> list[int]:
    """Indices of a few fixed examples, one per class first, for the sample grids."""
    rows: list[int] = []
    for c in sorted(set(prep.class_idx.tolist())):
        rows.append(int(np.flatnonzero(prep.class_idx == c)[0]))
    for i in range(len(prep)):
        if len(rows) >= n:
            break
        if i not in rows:
            rows.append(i)
    return rows[:n]


def sample_grid(unet, cfg, prep: PreparedData, rows: Sequence[int], steps: int, device: str,
                seed: int = 0) -> np.ndarray:
    """Real image | generated image, one row per example (uint8)."""
    from usgen_desktop.synthesis.backends.sdm import model_to_uint8, one_hot, sample

    cond = np.stack([one_hot(prep.labels[i], cfg.label_ids) for i in rows])
    out = sample(unet, cfg, cond, [int(prep.class_idx[i]) for i in rows],
                 [seed + k for k in range(len(rows))], steps=steps, sampler="ddim", device=device)
    pairs = [np.concatenate([prep.images[i], model_to_uint8(o)], axis=1) for i, o in zip(rows, out, strict=True)]
    return np.concatenate(pairs, axis=0)


def train_sdm(
    data: Iterable[Triple] | PreparedData,
    out_dir: str | Path,
    config: TrainConfig | None = None,
    progress: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
    on_sample: SampleCallback | None = None,
    schema: LabelSchema | None = None,
    classes: Sequence[str] | None = None,
    resume: bool = False,
    info: dict[str, Any] | None = None,
    init_from: str | Path | None = None,
) -> TrainResult:
    """Train (or resume) an sdm model on (image uint8, label map, class) triples.
    ``init_from``: a model folder (``usgen_model.json`` + weights) to start from instead of
    random weights, for fine-tuning: its size, shape and classes become the run's, and its label
    ids must be the data's. A resumed run takes its weights from its own checkpoint."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    from usgen_desktop.synthesis.backends.sdm import (
        SdmConfig,
        build_unet,
        image_to_model,
        one_hot,
        save_model,
    )
    from usgen_desktop.synthesis.training.data import schema_from_labels

    config = config or TrainConfig()
    if init_from is not None:
        config, classes = _start_from(config, classes, Path(init_from))
    cancel = cancel or CancelToken()
    out_dir = Path(out_dir)
    if config.steps < 1 or config.batch < 1:
        raise UsgenError("Training needs at least one step and a batch of at least one.")
    last = latest_checkpoint(out_dir)
    if last is not None and not resume:
        raise UsgenError(
            f"The folder '{out_dir}' already holds a training run; resume it or choose another."
        )
    # after every rank has looked at out_dir (rank 0 writes there only after the barrier)
    dist, device = distributed.init(config.device)
    part = distributed.shard(dist, config.batch)
    distributed.barrier(dist)
    if not dist.is_main:
        progress, on_sample = no_progress, None
    size = (int(config.size), int(config.size))
    prep = data if isinstance(data, PreparedData) else prepare(data, size, classes)
    if schema is None:
        schema = schema_from_labels(prep.labels)
    cfg = SdmConfig(size=size, schema=schema, classes=list(prep.classes))
    state: dict[str, Any] = {}
    torch.manual_seed(config.seed)
    unet = build_unet(cfg, **config.arch())
    if init_from is not None and not (resume and last is not None):
        _init_weights(unet, cfg, Path(init_from))
    ema = build_unet(cfg, **config.arch())
    ema.load_state_dict(unet.state_dict())
    unet.to(device).train()
    model = distributed.wrap(dist, unet, device)  # forward through DDP: gradients averaged
    ema.to(device).eval().requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    tgen = torch.Generator("cpu").manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    losses: list[float] = []
    start = 0
    elapsed0 = 0.0
    if resume and last is not None:
        try:
            state = load_training_state(last)
            same = (state["arch"] == config.arch()
                    and state["model_config"]["size"] == list(size))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UsgenError(_damaged(last, exc)) from exc
        if not same:
            raise UsgenError(
                "The saved run used another model size or shape; resume it with the same settings."
            )
        try:
            _load_checkpoint(last, unet, ema, opt, tgen)
            rng.bit_generator.state = state["numpy_rng"]
            start = int(state["step"])
            losses = [float(v) for v in state.get("losses", [])]
            elapsed0 = float(state.get("seconds", 0.0))
        except Exception as exc:  # safetensors, torch and numpy each raise their own kinds
            raise UsgenError(_damaged(last, exc)) from exc
    sched = DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps,
                          beta_schedule=cfg.beta_schedule, prediction_type=cfg.prediction_type)
    use_amp = device.startswith("cuda") and config.mixed_precision
    amp_dtype = torch.bfloat16 if (use_amp and torch.cuda.is_bf16_supported()) else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    training_info = {
        "steps": config.steps, "batch": config.batch, "lr": config.lr, "size": config.size,
        "ema_decay": config.ema_decay, "label_dropout": config.label_dropout,
        "class_dropout": config.class_dropout, "pairs": len(prep), "device": device,
        "parameters": int(sum(p.numel() for p in unet.parameters())), "processes": dist.world,
        "batch_per_process": part.stop - part.start,
        **(info or {}),
    }
    if init_from is not None:
        training_info["init_from"] = Path(init_from).name
    cfg.training = training_info
    ema_params = list(ema.parameters())
    params = list(unet.parameters())
    rows = _sample_rows(prep, 4)
    n_lab = len(cfg.label_ids)
    t_start = time.perf_counter()

    def seconds() -> float:
        return elapsed0 + time.perf_counter() - t_start

    def checkpoint(step: int) -> None:
        st = {"model_config": cfg.to_dict(), "arch": config.arch(), "train_config": asdict(config),
              "losses": losses, "seconds": seconds(), "training_info": training_info}
        if dist.is_main:
            _save_checkpoint(out_dir, step, unet, ema, opt, tgen, rng, st,
                             config.keep_checkpoints)

    step = start
    cancelled = False
    progress(Progress(step, config.steps, "starting", {"loss": None, "step": step}))
    while step < config.steps:
        if distributed.any_true(dist, cancel.cancelled, device):
            cancelled = True
            break
        # -- a batch: augment, one-hot, dropouts --------------------------------------------
        # The global batch's examples and per-example seeds come from the shared stream; this
        # rank makes only its slice, so the batch is the same on any number of processes.
        idx = rng.integers(0, len(prep), config.batch)
        seeds = rng.integers(0, 2**63 - 1, config.batch)
        imgs, conds, cls, keep = [], [], [], []
        for i, seed in zip(idx[part], seeds[part], strict=True):
            ex_rng = np.random.default_rng(int(seed))
            img, lab = prep.images[i], prep.labels[i]
            if config.augment:
                img, lab = augment(img, lab, ex_rng)
            # pixels marked as screen overlays (core.overlays) teach nothing: out of the loss
            ignore = lab >= IGNORE_BIT
            if ignore.any():
                lab = lab & (IGNORE_BIT - 1)
            keep.append(~ignore)
            oh = one_hot(lab, cfg.label_ids)
            c = int(prep.class_idx[i])
            r = ex_rng.random()
            if r < config.class_dropout:
                oh[:] = 0.0
                c = cfg.null_class
            elif r < config.class_dropout + config.label_dropout:
                oh[ex_rng.random(n_lab) < 0.5] = 0.0
            imgs.append(image_to_model(img)[None])
            conds.append(oh)
            cls.append(c)
        x0 = torch.from_numpy(np.stack(imgs))
        cond = torch.from_numpy(np.stack(conds))
        noise = torch.randn((config.batch, *x0.shape[1:]), generator=tgen)[part]
        t = torch.randint(0, cfg.num_train_timesteps, (config.batch,), generator=tgen)[part]
        xt = sched.add_noise(x0, noise, t)
        target = sched.get_velocity(x0, noise, t) if cfg.prediction_type == "v_prediction" else noise
        inp = torch.cat([xt, cond], dim=1).to(device)
        lr = config.lr * min(1.0, (step + 1) / max(1, config.warmup))
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast("cuda", dtype=amp_dtype, enabled=use_amp):
            pred = model(inp, t.to(device), class_labels=torch.tensor(cls, device=device)).sample
        weight = torch.from_numpy(np.stack(keep)[:, None].astype(np.float32)).to(device)
        if bool((weight < 1).any()):
            err = (pred.float() - target.to(device)) ** 2
            loss = (err * weight).sum() / weight.sum().clamp(min=1.0)
        else:
            loss = F.mse_loss(pred.float(), target.to(device))
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        scaler.step(opt)
        scaler.update()
        # EMA with a warm-up so early samples are not dominated by the random init
        decay = min(config.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_mul_(ema_params, decay)
            torch._foreach_add_(ema_params, [p.detach() for p in params], alpha=1 - decay)
        step += 1
        lv = distributed.mean(dist, float(loss.detach()), device)  # the global batch's loss
        if not np.isfinite(lv):
            raise UsgenError(
                f"Training diverged at step {step} (loss is not a number); lower the learning rate."
            )
        losses.append(lv)
        sample_img = None
        if dist.is_main and config.sample_every and step % config.sample_every == 0:
            sample_img = sample_grid(ema, cfg, prep, rows, config.sample_steps, device)
            _write_png(out_dir / "samples" / f"step_{step:07d}.png", sample_img)
            if on_sample is not None:
                on_sample(step, sample_img)
        if config.checkpoint_every and step % config.checkpoint_every == 0:
            checkpoint(step)
        progress(Progress(step, config.steps, f"step {step} of {config.steps}, loss {lv:.4f}",
                          {"loss": lv, "step": step, "sample": sample_img}))
    # keep what was done: a checkpoint for resume, and a model folder the backend can load
    if dist.is_main:
        if step > start and (latest_checkpoint(out_dir) is None or
                             int(load_training_state(latest_checkpoint(out_dir))["step"]) != step):
            checkpoint(step)
        cfg.training = dict(training_info, steps_done=step, seconds=round(seconds(), 1),
                            final_loss=float(np.mean(losses[-50:])) if losses else None)
        save_model(unet, cfg, out_dir, ema_unet=ema)
    distributed.barrier(dist)  # no rank reports done before the model folder is complete
    return TrainResult(out_dir, step, losses, seconds(), cancelled)


def _write_png(path: Path, img: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    cv2.imwrite(str(tmp), img)
    os.replace(tmp, path)
