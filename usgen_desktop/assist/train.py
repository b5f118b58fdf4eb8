"""Training and fine-tuning the click-to-mask network with simulated clicks (RITM recipe).

Each step takes a batch of augmented samples, places the first click near the object's interior
centre (sometimes with a few random extra clicks), then lets the network run 0-3 times without
gradients, each time feeding its thresholded mask back as the previous mask and adding the
simulated user's next click at the centre of the largest error region (``clicks.next_click``).
The loss (binary cross-entropy + soft Dice over the image area) is taken on the last pass, so
the network learns both to segment from a first click and to correct its own mistakes.

Runs are resumable: ``out_dir/checkpoint/`` holds the weights, the optimiser state and the step
(safetensors + json), written every ``checkpoint_every`` steps and when cancelled; it is itself a
model folder the Smart tool can load. The run's model folder (``out_dir/model.safetensors`` +
``usgen_model.json``) is written at the end.
The learning rate follows a cosine over the planned steps, or over the time budget when one is set
(so a run on a shared CPU finishes on time with its learning rate annealed).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from usgen_desktop.assist.clicks import grid_click_maps, next_click
from usgen_desktop.assist.data import Sample, augment, zoom_crop
from usgen_desktop.assist.model import AssistConfig, AssistNet, load_model, save_model
from usgen_desktop.core.tasks import CancelToken, Progress, ProgressFn, no_progress
from usgen_desktop.errors import Cancelled, DatasetError
from usgen_desktop.synthesis.training.sdm import optimizer_tensors, restore_optimizer

CKPT = "checkpoint"


@dataclass
class TrainOptions:
    """How long and how hard to train; saved with the run so ``resume`` continues the same."""

    steps: int = 2000
    batch: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    time_budget_s: float | None = None  # stop (annealed) after this many seconds of training
    max_corrections: int = 3  # simulated correction passes without gradients (0..this)
    augment: float = 1.0
    seed: int = 0
    checkpoint_every: int = 200
    balance_sources: bool = True  # draw each source (busi, hc18, ...) equally often
    zoom_crops: float = 0.5  # share of samples cropped around the object (the zoom-in's view)


@dataclass
class TrainResult:
    """What a run did: steps done, seconds, and the loss curve (mean per logging window)."""

    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    model_dir: Path | None = None


def _first_clicks(gt: np.ndarray, valid: np.ndarray, rng: np.random.Generator
                  ) -> list[tuple[float, float, bool]]:
    """Where a user would click first: near the interior centre, sometimes with extra clicks."""
    dt = cv2.distanceTransform(np.pad(gt.astype(np.uint8), 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    if dt.max() <= 0:
        return []
    near = np.argwhere(dt >= dt.max() * rng.uniform(0.5, 0.95))
    y, x = near[rng.integers(len(near))]
    pts = [(float(x), float(y), True)]
    if rng.random() < 0.3:  # a user who clicks a second point inside straight away
        inner = np.argwhere(dt >= 3)
        if len(inner):
            y, x = inner[rng.integers(len(inner))]
            pts.append((float(x), float(y), True))
    if rng.random() < 0.3:  # or marks something nearby that is not the object
        out_dt = cv2.distanceTransform((~gt).astype(np.uint8), cv2.DIST_L2, 5)
        band = np.argwhere((out_dt > 4) & (out_dt < 30) & (valid > 0))
        for _ in range(int(rng.integers(1, 3))):
            if len(band):
                y, x = band[rng.integers(len(band))]
                pts.append((float(x), float(y), False))
    return pts


def _inputs(imgs: np.ndarray, points: list[list[tuple[float, float, bool]]], prev: np.ndarray,
            valids: np.ndarray, radius: float) -> torch.Tensor:
    size = imgs.shape[-1]
    maps = np.stack([grid_click_maps(np.array(p, dtype=np.float32).reshape(-1, 3), size, radius)
                     for p in points])
    x = np.concatenate([imgs[:, None], maps, prev[:, None], valids[:, None]], axis=1)
    return torch.from_numpy(x.astype(np.float32))


def seg_loss(logits: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy over the image area plus soft Dice per image."""
    bce = nn.functional.binary_cross_entropy_with_logits(logits, gt, reduction="none")
    bce = (bce * valid).sum() / valid.sum().clamp_min(1.0)
    p = torch.sigmoid(logits) * valid
    inter = (p * gt).sum(dim=(1, 2, 3))
    dice = 1.0 - (2 * inter + 1.0) / (p.sum(dim=(1, 2, 3)) + gt.sum(dim=(1, 2, 3)) + 1.0)
    return bce + dice.mean()


def _save_checkpoint(out_dir: Path, model: AssistNet, opt: torch.optim.Optimizer,
                     state: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    final = out_dir / CKPT
    tmp = out_dir / (CKPT + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(model, tmp)
    tensors, groups = optimizer_tensors(opt)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps(dict(state, param_groups=groups)),
                                    encoding="utf-8")
    old = out_dir / (CKPT + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(out_dir: Path, opt_factory) -> tuple[AssistNet, Any, dict[str, Any]]:
    from safetensors.torch import load_file

    ck = out_dir / CKPT
    model = load_model(ck).train()
    opt = opt_factory(model)
    state = json.loads((ck / "state.json").read_text(encoding="utf-8"))
    restore_optimizer(opt, load_file(str(ck / "optimizer.safetensors")),
                      state.pop("param_groups"))
    return model, opt, state


def has_checkpoint(out_dir: Path) -> bool:
    """True when ``out_dir`` holds a run that ``resume`` can continue."""
    return (Path(out_dir) / CKPT / "state.json").is_file()


def train_assist(samples: Sequence[Sample], out_dir: Path, options: TrainOptions | None = None,
                 config: AssistConfig | None = None, init_from: Path | None = None,
                 resume: bool = False, progress: ProgressFn = no_progress,
                 cancel: CancelToken | None = None, log_every: int = 20) -> TrainResult:
    """Train (or fine-tune from ``init_from``) on ``samples``; writes a model folder ``out_dir``.

    ``resume`` continues the run in ``out_dir`` from its checkpoint with its saved options.
    Cancelling writes a checkpoint and the model folder, then raises Cancelled."""
    out_dir = Path(out_dir)
    if not samples:
        raise DatasetError("There is nothing to train on: no image has a painted label.")
    torch.manual_seed(0)

    def make_opt(m: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(m.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)

    if resume and has_checkpoint(out_dir):
        saved = json.loads((out_dir / CKPT / "state.json").read_text(encoding="utf-8"))
        opts = TrainOptions(**saved["options"])
        model, opt, state = _load_checkpoint(out_dir, make_opt)
        step, elapsed, losses = int(state["step"]), float(state["elapsed"]), state["losses"]
        rng = np.random.default_rng()
        rng.bit_generator.state = state["numpy_rng"]
    else:
        opts = options or TrainOptions()
        if init_from is not None:
            model = load_model(Path(init_from)).train()
        else:
            model = AssistNet(config or AssistConfig()).train()
        opt = make_opt(model)
        step, elapsed, losses = 0, 0.0, []
        rng = np.random.default_rng(opts.seed)
    cfg = model.config
    if opts.zoom_crops > 0:
        cfg.zoom_in = True  # it has seen the crops the zoom-in shows it
    cfg.training = dict(cfg.training, samples=len(samples),
                        sources=sorted({s.source for s in samples}),
                        init_from=str(init_from) if init_from else cfg.training.get("init_from"))
    by_source: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_source.setdefault(s.source if opts.balance_sources else "all", []).append(i)
    sources = sorted(by_source)

    def state_now() -> dict[str, Any]:
        return {"step": step, "elapsed": elapsed, "losses": losses, "options": asdict(opts),
                "numpy_rng": rng.bit_generator.state}

    def fraction_done() -> float:
        f = step / max(1, opts.steps)
        if opts.time_budget_s:
            f = max(f, elapsed / opts.time_budget_s) if opts.steps else elapsed / opts.time_budget_s
        return min(1.0, f)

    def finished() -> bool:
        if opts.time_budget_s and elapsed >= opts.time_budget_s:
            return True
        return step >= opts.steps

    window: list[float] = []
    warmup = min(100, max(1, opts.steps // 20))
    try:
        while not finished():
            if cancel is not None and cancel.cancelled:
                raise Cancelled("Cancelled by the user; the run can resume from its checkpoint.")
            t0 = time.perf_counter()
            f = fraction_done()
            lr = opts.lr * 0.5 * (1 + np.cos(np.pi * f)) * min(1.0, (step + 1) / warmup)
            for g in opt.param_groups:
                g["lr"] = lr
            idx = []
            for _ in range(opts.batch):
                src = sources[int(rng.integers(len(sources)))]
                idx.append(by_source[src][int(rng.integers(len(by_source[src])))])
            batch = [augment(zoom_crop(samples[i], rng) if rng.random() < opts.zoom_crops
                             else samples[i], cfg.size, rng, opts.augment) for i in idx]
            imgs = np.stack([b[0] for b in batch])
            gts = np.stack([b[1] for b in batch])
            valids = np.stack([b[2] for b in batch])
            points = [_first_clicks(g, v, rng) for g, v in zip(gts, valids, strict=True)]
            prev = np.zeros_like(valids)
            for _ in range(int(rng.integers(0, opts.max_corrections + 1))):
                with torch.no_grad():
                    logits = model(_inputs(imgs, points, prev, valids, cfg.click_radius))
                prev = (torch.sigmoid(logits[:, 0]).numpy() > cfg.threshold).astype(np.float32)
                prev *= valids
                for b in range(len(points)):
                    c = next_click(gts[b], prev[b] > 0, valids[b])
                    if c is not None:
                        points[b].append((float(c[0]), float(c[1]), c[2]))
            logits = model(_inputs(imgs, points, prev, valids, cfg.click_radius))
            loss = seg_loss(logits, torch.from_numpy(gts[:, None].astype(np.float32)),
                            torch.from_numpy(valids[:, None]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            elapsed += time.perf_counter() - t0
            window.append(float(loss.detach()))
            if len(window) >= log_every:
                losses.append(float(np.mean(window)))
                window = []
            total = opts.steps
            progress(Progress(step, total, f"step {step}: loss {float(loss.detach()):.3f}"))
            if opts.checkpoint_every and step % opts.checkpoint_every == 0:
                _save_checkpoint(out_dir, model, opt, state_now())
    except Cancelled:
        _save_checkpoint(out_dir, model, opt, state_now())
        _write_model(model, out_dir, step, elapsed)
        raise
    if window:
        losses.append(float(np.mean(window)))
    _save_checkpoint(out_dir, model, opt, state_now())
    _write_model(model, out_dir, step, elapsed)
    return TrainResult(step, elapsed, losses, out_dir)


def _write_model(model: AssistNet, out_dir: Path, step: int, elapsed: float) -> None:
    model.config.training = dict(model.config.training, steps=step, seconds=round(elapsed, 1))
    save_model(model.eval(), out_dir)
    model.train()
