"""The click-to-mask network and its model folder (safetensors weights + ``usgen_model.json``).

A compact U-Net (RITM / DeepGrow family). Input channels, in order: the letterboxed image
(standardised over the image area), the positive click map, the negative click map, the previous
mask (0/1) and the valid map (1 on the image, 0 on the letterbox padding). Output: one channel of
mask logits on the same grid. Everything the caller needs to rebuild it is in ``AssistConfig``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from usgen_desktop.errors import ModelError

CONFIG_NAME = "usgen_model.json"
WEIGHTS_NAME = "model.safetensors"
IN_CHANNELS = 5  # image, positive clicks, negative clicks, previous mask, valid


@dataclass
class AssistConfig:
    """Everything that fixes the network's shape and how inputs are drawn."""

    size: int = 256  # square working grid (pixels)
    channels: tuple[int, ...] = (16, 32, 48, 64, 96)  # per U-Net level, finest first
    click_radius: float = 5.0  # disk radius of a click on the grid (pixels)
    threshold: float = 0.5  # probability above which a pixel is in the mask
    zoom_in: bool = False  # after the first click, look at a crop around the answer (trained so)
    # average each answer with that of the left-right mirrored view (a folder that does not say
    # so keeps the single view it was measured with)
    flip_average: bool = True
    # with zoom_in: answer the first click twice, on the whole image and then on the crop around
    # that answer (a folder that does not say so keeps the one look it was measured with)
    refine_first: bool = True
    training: dict[str, Any] = field(default_factory=dict)  # provenance, free-form

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return {"kind": "assist", "format_version": 1, **d}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> AssistConfig:
        return cls(size=int(d["size"]), channels=tuple(int(c) for c in d["channels"]),
                   click_radius=float(d["click_radius"]), threshold=float(d["threshold"]),
                   zoom_in=bool(d.get("zoom_in", False)),
                   flip_average=bool(d.get("flip_average", False)),
                   refine_first=bool(d.get("refine_first", False)),
                   training=dict(d.get("training", {})))


class _Block(nn.Sequential):
    """Two 3x3 convolutions, each with batch norm and ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True),
        )


class AssistNet(nn.Module):
    """U-Net: ``len(channels)`` levels, max-pool down, bilinear up, skip concatenation.

    The deepest level has a dilated convolution so a click near one side of a fetal head still
    sees the far side (the receptive field covers the whole 256 grid)."""

    def __init__(self, config: AssistConfig) -> None:
        super().__init__()
        self.config = config
        ch = list(config.channels)
        self.down = nn.ModuleList()
        cin = IN_CHANNELS
        for c in ch:
            self.down.append(_Block(cin, c))
            cin = c
        self.context = nn.Sequential(
            nn.Conv2d(ch[-1], ch[-1], 3, padding=4, dilation=4, bias=False),
            nn.BatchNorm2d(ch[-1]), nn.ReLU(True))
        self.up = nn.ModuleList()
        for i in range(len(ch) - 1, 0, -1):
            self.up.append(_Block(ch[i] + ch[i - 1], ch[i - 1]))
        self.head = nn.Conv2d(ch[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            if i > 0:
                x = nn.functional.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        x = x + self.context(x)
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="bilinear",
                                          align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


def build_model(config: AssistConfig) -> AssistNet:
    """A freshly initialised network (eval mode)."""
    return AssistNet(config).eval()


def save_model(model: AssistNet, folder: Path) -> None:
    """Write ``folder/model.safetensors`` and ``folder/usgen_model.json``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_NAME))
    (folder / CONFIG_NAME).write_text(json.dumps(model.config.to_json(), indent=2) + "\n")


def is_assist_folder(folder: Path) -> bool:
    """True when ``folder`` holds an assist model (its json says kind 'assist')."""
    try:
        return json.loads((folder / CONFIG_NAME).read_text()).get("kind") == "assist"
    except (OSError, ValueError, AttributeError):
        return False


def load_model(folder: Path, device: str = "cpu") -> AssistNet:
    """The network saved in ``folder``, in eval mode, or a ModelError naming what is wrong."""
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg_path = folder / CONFIG_NAME
    if not cfg_path.is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise ModelError(f"'{folder}' is not an assist model folder "
                         f"(it needs {CONFIG_NAME} and {WEIGHTS_NAME}).")
    try:
        raw = json.loads(cfg_path.read_text())
    except ValueError as exc:
        raise ModelError(f"'{cfg_path}' is not valid JSON ({exc}).") from exc
    if raw.get("kind") != "assist":
        raise ModelError(f"'{folder}' holds a '{raw.get('kind')}' model, not an assist model.")
    try:
        config = AssistConfig.from_json(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"'{cfg_path}' is missing or has a bad field ({exc}).") from exc
    model = AssistNet(config)
    try:
        model.load_state_dict(load_file(str(folder / WEIGHTS_NAME)))
    except (RuntimeError, OSError) as exc:
        raise ModelError(f"The weights in '{folder}' do not fit its config ({exc}).") from exc
    return model.to(device).eval()
