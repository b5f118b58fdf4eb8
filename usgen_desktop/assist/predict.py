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
from usgen_desktop.assist.data import normalise_image, object_box, to_gray_u8
from usgen_desktop.assist.model import AssistNet, load_model


@dataclass
class AssistSession:
    """Clicks on one image and the network's answer to them.

    With a model trained for it (``config.zoom_in``), every click after the first looks at a crop
    around the last answer and all clicks (RITM's zoom-in), so a small lesion fills the grid; the
    first click, and any answer that covers most of the image, use the whole image. With
    ``refine_first`` the first click's answer is computed twice: on the whole image, then again
    on the crop around that answer (one more forward pass on the first click only). With
    ``flip_average`` each answer is the mean of the network's probabilities for the view and for
    its left-right mirror image (one batch of two; test-time augmentation)."""

    model: AssistNet
    image: np.ndarray  # (h, w) any dtype; converted to grayscale uint8
    clicks: list[Click] = field(default_factory=list)
    keep_clicked: bool = True  # drop blobs that hold no inside click (see keep_clicked_parts)
    zoom_in: bool | None = None  # None: as the model's config says
    flip_average: bool | None = None  # None: as the model's config says
    refine_first: bool | None = None  # None: as the model's config says

    def __post_init__(self) -> None:
        self._gray = to_gray_u8(self.image)
        if self.zoom_in is None:
            self.zoom_in = bool(getattr(self.model.config, "zoom_in", False))
        if self.flip_average is None:
            self.flip_average = bool(getattr(self.model.config, "flip_average", False))
        if self.refine_first is None:
            self.refine_first = bool(self.zoom_in
                                     and getattr(self.model.config, "refine_first", False))
        self._views: dict[tuple[int, int, int, int] | None, tuple[Letterbox, np.ndarray,
                                                                    np.ndarray]] = {}
        self.box, self._grid, self._valid = self._view(None)
        self._roi: tuple[int, int, int, int] | None = None  # where the last answer was computed
        self._prev = np.zeros_like(self._valid)  # the last answer on that view's grid
        self._prev_image = np.zeros(self._gray.shape, bool)  # the same at image size
        self._history: list[tuple] = []
        self.device = next(self.model.parameters()).device

    def _view(self, roi: tuple[int, int, int, int] | None
              ) -> tuple[Letterbox, np.ndarray, np.ndarray]:
        """(letterbox, standardised grid image, valid map) of the image or of a crop of it."""
        if roi not in self._views:
            gray = self._gray if roi is None else self._gray[roi[1]:roi[3], roi[0]:roi[2]]
            box = Letterbox(gray.shape, self.model.config.size)
            valid = box.valid()
            self._views[roi] = (box, normalise_image(box.image_to_grid(gray), valid), valid)
        return self._views[roi]

    def probabilities(self, clicks: list[Click], prev_grid: np.ndarray,
                      roi: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """The network's mask probabilities on the grid of the view ``roi`` (None: the image)
        for these clicks (image coordinates) and previous mask (on that grid)."""
        box, grid, valid = self._view(roi)
        if roi is not None:
            clicks = [Click(c.x - roi[0], c.y - roi[1], c.inside) for c in clicks]
        pos, neg = click_maps(clicks, box, self.model.config.click_radius)
        x = np.stack([grid, pos, neg, prev_grid, valid])[None]
        ih, iw = box.inner
        if self.flip_average:  # the image mirrored left-right inside its letterbox, batched
            mirrored = x.copy()
            mirrored[..., :ih, :iw] = x[..., :ih, :iw][..., ::-1]
            x = np.concatenate([x, mirrored])
        with torch.inference_mode():
            prob = torch.sigmoid(self.model(torch.from_numpy(x).to(self.device))[:, 0])
        prob = prob.float().cpu().numpy()
        if not self.flip_average:
            return prob[0]
        out = prob[0].copy()
        out[:ih, :iw] = 0.5 * (prob[0][:ih, :iw] + prob[1][:ih, :iw][:, ::-1])
        return out

    def add_click(self, click: Click) -> np.ndarray:
        """Add a click; the new mask (bool, image size)."""
        self.clicks.append(click)
        self._history.append((self._roi, self._prev, self._prev_image))
        self._answer(self._next_roi())
        if self.refine_first and len(self.clicks) == 1:
            roi = self._next_roi()
            if roi is not None:  # look again, closer: the crop around the first answer
                self._answer(roi)
        mask = self._prev_image
        return keep_clicked_parts(mask, self.clicks) if self.keep_clicked else mask

    def _next_roi(self) -> tuple[int, int, int, int] | None:
        """Where the next answer looks: the zoom-in crop around the last answer and the clicks,
        or None for the whole image."""
        if self.zoom_in and self._prev_image.any():
            return object_box(self._prev_image, [(c.x, c.y) for c in self.clicks])
        return None

    def _answer(self, roi: tuple[int, int, int, int] | None) -> None:
        """Run the network on the view ``roi`` with the current clicks and the last answer, and
        make its output the last answer."""
        box, _, valid = self._view(roi)
        if roi == self._roi:
            prev = self._prev
        else:  # the last answer, seen through the new view
            h, w = self._gray.shape
            x0, y0, x1, y1 = roi if roi is not None else (0, 0, w, h)
            crop = self._prev_image[y0:y1, x0:x1].astype(np.float32)
            prev = (box.image_to_grid(crop) > 0.5).astype(np.float32) * valid
        prob = self.probabilities(self.clicks, prev, roi)
        self._roi = roi
        self._prev = (prob > self.model.config.threshold).astype(np.float32) * valid
        if roi is None:
            mask = box.grid_to_image(prob) > self.model.config.threshold
        else:
            mask = np.zeros(self._gray.shape, bool)
            x0, y0, x1, y1 = roi
            mask[y0:y1, x0:x1] = box.grid_to_image(prob) > self.model.config.threshold
        self._prev_image = mask

    def undo_click(self) -> np.ndarray:
        """Drop the last click; the mask as it was before it (bool, image size)."""
        if self.clicks:
            self.clicks.pop()
            self._roi, self._prev, self._prev_image = self._history.pop()
        mask = self._prev_image.copy()
        return keep_clicked_parts(mask, self.clicks) if self.keep_clicked else mask

    def reset(self) -> None:
        self.clicks.clear()
        self._history.clear()
        self._roi = None
        self._prev = np.zeros_like(self._valid)
        self._prev_image = np.zeros(self._gray.shape, bool)


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
