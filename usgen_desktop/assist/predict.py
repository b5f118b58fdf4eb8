"""One interactive click-to-mask session on one image: add clicks, get the mask after each.

The image is letterboxed and standardised once when the session opens; each click then costs one
forward pass of the small network on its grid (tens of milliseconds on a CPU) plus resizing the
probabilities back to the image. The previous mask fed to the network is the session's own last
answer, as in training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from usgen_desktop.assist.clicks import Click, Letterbox, click_maps
from usgen_desktop.assist.data import normalise_image, to_gray_u8
from usgen_desktop.assist.model import AssistNet, load_model


@dataclass
class AssistSession:
    """Clicks on one image and the network's answer to them."""

    model: AssistNet
    image: np.ndarray  # (h, w) any dtype; converted to grayscale uint8
    clicks: list[Click] = field(default_factory=list)
    keep_clicked: bool = True  # drop blobs that hold no inside click (see keep_clicked_parts)

    def __post_init__(self) -> None:
        gray = to_gray_u8(self.image)
        cfg = self.model.config
        self.box = Letterbox(gray.shape, cfg.size)
        self._valid = self.box.valid()
        self._grid = normalise_image(self.box.image_to_grid(gray), self._valid)
        self._prev = np.zeros_like(self._valid)
        self._history: list[np.ndarray] = []
        self.device = next(self.model.parameters()).device

    def probabilities(self, clicks: list[Click], prev_grid: np.ndarray) -> np.ndarray:
        """The network's mask probabilities on the grid for these clicks and previous mask."""
        pos, neg = click_maps(clicks, self.box, self.model.config.click_radius)
        x = np.stack([self._grid, pos, neg, prev_grid, self._valid])[None]
        with torch.inference_mode():
            logits = self.model(torch.from_numpy(x).to(self.device))
        return torch.sigmoid(logits[0, 0]).float().cpu().numpy()

    def add_click(self, click: Click) -> np.ndarray:
        """Add a click; the new mask (bool, image size)."""
        self.clicks.append(click)
        prob = self.probabilities(self.clicks, self._prev)
        self._history.append(self._prev)
        self._prev = (prob > self.model.config.threshold).astype(np.float32) * self._valid
        mask = self.box.grid_to_image(prob) > self.model.config.threshold
        return keep_clicked_parts(mask, self.clicks) if self.keep_clicked else mask

    def undo_click(self) -> np.ndarray:
        """Drop the last click; the mask as it was before it (bool, image size)."""
        if self.clicks:
            self.clicks.pop()
            self._prev = self._history.pop()
        return self.box.grid_to_image(self._prev) > 0.5

    def reset(self) -> None:
        self.clicks.clear()
        self._history.clear()
        self._prev = np.zeros_like(self._valid)


def keep_clicked_parts(mask: np.ndarray, clicks: list[Click]) -> np.ndarray:
    """The connected parts of ``mask`` that hold an inside click (all of it when none does).

    A user who clicked one lesion wants that lesion, not a look-alike blob elsewhere; a second
    lesion is kept as soon as it gets its own click. The network still sees its raw mask."""
    inside = [c for c in clicks if c.inside]
    if not inside or not mask.any():
        return mask
    n, comp = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if n <= 2:
        return mask
    h, w = mask.shape
    keep = {int(comp[min(h - 1, max(0, round(c.y))), min(w - 1, max(0, round(c.x)))])
            for c in inside} - {0}
    if not keep:
        return mask
    return np.isin(comp, list(keep))


def open_model(folder: Path, device: str = "cpu") -> AssistNet:
    """The model in ``folder`` on ``device`` (a ModelError when the folder is not one)."""
    return load_model(Path(folder), device=device)


def segment(model: AssistNet, image: np.ndarray, clicks: list[Click]) -> np.ndarray:
    """The mask after the clicks, given one at a time in order (bool, image size)."""
    session = AssistSession(model, image)
    mask = np.zeros(session.box.shape, bool)
    for c in clicks:
        mask = session.add_click(c)
    return mask
