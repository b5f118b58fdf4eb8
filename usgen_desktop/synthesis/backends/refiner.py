"""The texture refiner: the second stage of ``sdm``, which brings a generated image to the label
map's own size with ultrasound's fine grain.

The base model samples at its own small size (128²) and the app enlarges the result to the
label map's size. Enlarging cannot invent what a small image does not hold: at 1:1 the image
looks smooth and "painted", and real images sent through the same round trip are told from
untouched ones. The refiner is a small conditional diffusion model at the output size (cascaded
super-resolution): it takes the enlarged image and draws the *residual* it lacks (the speckle
grain, small reflectors, sharp layer boundaries), as residual diffusion does. It is trained on
real images only, no labels: a real image is sent through the app's own resize path
(:func:`degrade`) and the model learns to add back what that took away. Any unlabelled scans a
user has can therefore teach it their scanner's texture.

It sees the image through a 2x2 pixel unshuffle (4 channels at half size), which keeps every pixel
but makes a step at 512² cost about what a 256² step costs; it has no attention, so it runs on
any size and aspect ratio. The label map's geometry comes from the enlarged image it is
conditioned on, which already follows the map.

A refiner folder (``MODEL_DIR/refiner/`` of an sdm model, or a folder of its own)::

    usgen_model.json   kind "sdm-refiner", base size, residual scale, schedule, training info
    unet/              UNet2DModel.save_pretrained (safetensors)

Noise comes from a CPU generator seeded by the item's seed, so a seed gives the same image on any
device and in any shard. torch is imported here (a backend module).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from usgen_desktop.core.tasks import CancelToken, Progress, ProgressFn, no_progress
from usgen_desktop.errors import ModelError, UsgenError

KIND = "sdm-refiner"
CONFIG_NAME = "usgen_model.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
SUBFOLDER = "refiner"
UNSHUFFLE = 2
# the noise seed of the refiner is the item seed moved by this, so its noise is not the base
# model's noise again (which would correlate the two stages)
SEED_OFFSET = 7919


@dataclass
class RefinerConfig:
    """What ``usgen_model.json`` of a refiner holds."""

    base_size: tuple[int, int] = (128, 128)
    residual_scale: float = 4.0  # residual (in [-1, 1] image units) times this has std ~1
    prediction_type: str = "v_prediction"
    beta_schedule: str = "squaredcos_cap_v2"
    num_train_timesteps: int = 1000
    steps: int = 12  # sampler steps recommended
    # the drawn texture times this: a few-step sampler of a small model draws the finest grain
    # weaker than real (it regresses toward the mean); ``calibrate_gain`` measures by how much
    gain: float = 1.0
    training: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "format_version": 1,
            "base_size": list(self.base_size),
            "residual_scale": float(self.residual_scale),
            "prediction_type": self.prediction_type,
            "beta_schedule": self.beta_schedule,
            "num_train_timesteps": int(self.num_train_timesteps),
            "unshuffle": UNSHUFFLE,
            "recommended": {"steps": int(self.steps), "gain": float(self.gain)},
            "training": self.training,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RefinerConfig:
        base = d.get("base_size", [128, 128])
        if isinstance(base, int):
            base = [base, base]
        cfg = cls(
            base_size=(int(base[0]), int(base[1])),
            residual_scale=float(d.get("residual_scale", 4.0)),
            prediction_type=str(d.get("prediction_type", "v_prediction")),
            beta_schedule=str(d.get("beta_schedule", "squaredcos_cap_v2")),
            num_train_timesteps=int(d.get("num_train_timesteps", 1000)),
            steps=int((d.get("recommended") or {}).get("steps", 8)),
            gain=float((d.get("recommended") or {}).get("gain", 1.0)),
            training=dict(d.get("training", {})),
        )
        if min(cfg.base_size) < 8 or max(cfg.base_size) > 4096:
            raise ValueError(f"base size {cfg.base_size} is out of range")
        if not (np.isfinite(cfg.residual_scale) and cfg.residual_scale > 0):
            raise ValueError("residual_scale must be a positive number")
        if not (np.isfinite(cfg.gain) and 0.25 <= cfg.gain <= 4.0):
            raise ValueError("gain must be a number from 0.25 to 4")
        if int(d.get("unshuffle", UNSHUFFLE)) != UNSHUFFLE:
            raise ValueError(f"unshuffle must be {UNSHUFFLE}")
        return cfg


def build_unet(block_out_channels: Sequence[int] = (32, 64, 96), layers_per_block: int = 1,
               norm_num_groups: int = 8):
    """A fresh refiner UNet: (noisy residual, enlarged image) unshuffled 2x2 in, residual out."""
    from diffusers import UNet2DModel

    n = len(block_out_channels)
    k = UNSHUFFLE * UNSHUFFLE
    return UNet2DModel(
        sample_size=64,
        in_channels=2 * k,
        out_channels=k,
        block_out_channels=tuple(int(c) for c in block_out_channels),
        down_block_types=("DownBlock2D",) * n,
        up_block_types=("UpBlock2D",) * n,
        layers_per_block=int(layers_per_block),
        norm_num_groups=int(norm_num_groups),
        add_attention=False,
    )


def multiple(unet) -> int:
    """Sizes the UNet takes without padding: the unshuffle times its down-sampling."""
    return UNSHUFFLE * 2 ** (len(unet.config.block_out_channels) - 1)


def save_refiner(unet, config: RefinerConfig, folder: Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    tmp = folder / (CONFIG_NAME + ".tmp")
    tmp.write_text(json.dumps(config.to_dict(), indent=2), encoding="utf-8")
    tmp.replace(folder / CONFIG_NAME)


def is_refiner(folder: Path) -> bool:
    """True when ``folder`` has a refiner description (weights not checked)."""
    try:
        data = json.loads((Path(folder) / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and data.get("kind") == KIND


def find_refiner(model_dir: Path) -> Path | None:
    """The refiner that goes with an sdm model folder (its ``refiner/``), or None."""
    sub = Path(model_dir) / SUBFOLDER
    return sub if is_refiner(sub) else None


def read_config(folder: Path) -> RefinerConfig:
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise ModelError(f"The folder '{folder}' is not a texture refiner: it has no {CONFIG_NAME}.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"The refiner description {path} cannot be read ({exc}).") from exc
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise ModelError(f"The folder '{folder}' holds a model of another kind, not a refiner.")
    try:
        return RefinerConfig.from_dict(data)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ModelError(f"The refiner description {path} is invalid ({exc}).") from exc


def load_refiner(folder: Path):
    """(unet, config) of a refiner folder, from local safetensors only; ModelError when broken."""
    from diffusers import UNet2DModel

    folder = Path(folder)
    config = read_config(folder)
    sub = folder / "unet"
    if not (sub / WEIGHTS_NAME).is_file() or not (sub / "config.json").is_file():
        raise ModelError(f"The refiner folder '{folder}' has no weights: unet/{WEIGHTS_NAME} is missing.")
    try:
        unet = UNet2DModel.from_pretrained(sub, local_files_only=True, use_safetensors=True)
    except Exception as exc:  # diffusers raises many kinds for a damaged file
        raise ModelError(
            f"The refiner weights in '{sub}' cannot be loaded; the file is damaged or incomplete."
        ) from exc
    k = UNSHUFFLE * UNSHUFFLE
    if int(unet.config.in_channels) != 2 * k or int(unet.config.out_channels) != k:
        raise ModelError(f"The refiner in '{folder}' has the wrong number of channels.")
    return unet.eval(), config


# --------------------------------------------------------------------------------------------
# The app's resize path, shared by training, sampling and the evaluation's control
# --------------------------------------------------------------------------------------------
def enlarge(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The base model's output taken to ``size`` (H, W) as the app does (bicubic)."""
    from usgen_desktop.synthesis.backends.sdm import resize_image

    return resize_image(img, size)


def degrade(img: np.ndarray, base_size: tuple[int, int], blur: float = 0.0) -> np.ndarray:
    """A real image as the base model would give it: shrunk to ``base_size`` (area), softened by
    a Gaussian of ``blur`` pixels at that size (the base model's output is a little softer than
    a shrunk real image), and enlarged back as the app enlarges (bicubic). uint8 in, uint8 out."""
    import cv2

    from usgen_desktop.synthesis.backends.sdm import resize_image

    small = resize_image(np.asarray(img, np.uint8), base_size)
    if blur > 0.05:
        small = cv2.GaussianBlur(small, (0, 0), float(blur), borderType=cv2.BORDER_REFLECT_101)
    return enlarge(small, img.shape[:2])


# --------------------------------------------------------------------------------------------
# Model input/output around the 2x2 unshuffle
# --------------------------------------------------------------------------------------------
def to_unet(x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """(B,1,H,W) noisy residual and (B,1,H,W) enlarged image -> (B,8,H/2,W/2)."""
    f = torch.nn.functional.pixel_unshuffle
    return torch.cat([f(x, UNSHUFFLE), f(cond, UNSHUFFLE)], dim=1)


def from_unet(out: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.pixel_shuffle(out, UNSHUFFLE)


def make_scheduler(config: RefinerConfig):
    """DPM-Solver++ (2nd order): with few steps it is close to many-step quality. No
    thresholding: diffusers' thresholding rescales the sample into [-1, 1], which suits images
    but would shrink a residual whose standard deviation is 1; v-prediction keeps it stable."""
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(
        num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule,
        prediction_type=config.prediction_type, timestep_spacing="trailing",
        algorithm_type="dpmsolver++", solver_order=2,
    )


def _pad(a: np.ndarray, m: int) -> tuple[np.ndarray, tuple[int, int]]:
    h, w = a.shape
    ph, pw = (-h) % m, (-w) % m
    if ph or pw:
        a = np.pad(a, ((0, ph), (0, pw)), mode="reflect" if min(h, w) > max(ph, pw) else "edge")
    return a, (h, w)


@torch.no_grad()
def refine(
    unet,
    config: RefinerConfig,
    enlarged: np.ndarray,
    seed: int,
    steps: int | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    step: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
    keep: np.ndarray | None = None,
    gain: float | None = None,
) -> np.ndarray:
    """Add the fine texture to an enlarged image (uint8 HxW, any size and aspect); returns uint8
    of the same size. Deterministic per ``seed``. ``keep`` (HxW bool) marks pixels left exactly as
    they are (outside the probe's fan, say). ``gain`` scales the drawn texture (default: the
    config's calibrated gain)."""
    cancel = cancel or CancelToken()
    steps = int(steps or config.steps)
    if steps < 1:
        raise UsgenError("The refiner needs at least one step.")
    img = np.asarray(enlarged)
    if img.ndim != 2 or min(img.shape) < 2:
        raise UsgenError("The refiner takes a grayscale image of at least 2x2 pixels.")
    padded, (h, w) = _pad(img.astype(np.float32) / 127.5 - 1.0, multiple(unet))
    ph, pw = padded.shape
    cond = torch.from_numpy(np.ascontiguousarray(padded))[None, None].to(device, dtype)
    gen = torch.Generator("cpu").manual_seed(int(seed) + SEED_OFFSET)
    x = torch.randn((1, 1, ph, pw), generator=gen).to(device, torch.float32)
    scheduler = make_scheduler(config)
    scheduler.set_timesteps(steps)
    x = x * float(scheduler.init_noise_sigma)
    timesteps = list(scheduler.timesteps)
    for i, t in enumerate(timesteps):
        cancel.raise_if_cancelled()
        inp = to_unet(scheduler.scale_model_input(x, t).to(dtype), cond)
        out = from_unet(unet(inp, t).sample.float())
        x = scheduler.step(out, t, x).prev_sample
        step(Progress(i + 1, len(timesteps), f"refining, step {i + 1} of {len(timesteps)}"))
    g = float(config.gain if gain is None else gain)
    residual = x[0, 0, :h, :w].cpu().numpy() * (g / float(config.residual_scale))
    out = np.clip((padded[:h, :w] + residual + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    if keep is not None:
        out = np.where(np.asarray(keep, bool), img.astype(np.uint8), out)
    return out


# --------------------------------------------------------------------------------------------
# Calibration of the drawn texture's strength
# --------------------------------------------------------------------------------------------
GAINS = tuple(round(0.8 + 0.05 * k, 2) for k in range(25))  # 0.80 .. 2.00


def calibrate_gain(real: Sequence[np.ndarray], enlarged: Sequence[np.ndarray],
                   refined: Sequence[np.ndarray], seed: int = 0) -> tuple[float, dict[str, Any]]:
    """The gain that gives refined images real power in the finest octave (¼–½ cycle per pixel).

    ``enlarged`` are the refiner's inputs as the app makes them (the base model's output on
    *training* label maps, enlarged), ``refined`` the refiner's answers at gain 1, ``real`` real
    images of the same training set. The refiner draws grain in proportion to the detail of its
    input; the base model's output is softer than the real images it learned from, so the pair
    falls short of real power in the finest octave, and this measures by how much. Returns the
    gain (one of ``GAINS``, the closest to real power) and the finest-octave ratio per gain."""
    from usgen_desktop.evaluation.fullsize import octaves

    if not real or len(enlarged) != len(refined) or not refined:
        raise UsgenError("Calibrating the refiner needs real images and refined ones.")
    crop = min(128, *(min(np.asarray(i).shape[:2]) for i in (*real, *refined)))
    ratios = {}
    for g in GAINS:
        scaled = [np.clip(np.asarray(c, np.float32) + g * (np.asarray(o, np.float32)
                                                           - np.asarray(c, np.float32)) + 0.5,
                          0, 255).astype(np.uint8) for c, o in zip(enlarged, refined, strict=True)]
        ratios[g] = float(octaves(real, scaled, crop=crop, seed=seed)["ratio"][-1])
    best = min(GAINS, key=lambda g: abs(np.log(max(ratios[g], 1e-6))))
    return float(best), {"finest_octave_ratio": {str(k): round(v, 4) for k, v in ratios.items()},
                         "images": len(refined)}
