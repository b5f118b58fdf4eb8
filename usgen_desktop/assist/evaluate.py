"""The standard measure of interactive segmentation: clicks until the mask is good enough.

For one image, the simulated user (``clicks.next_click``) places up to ``max_clicks`` clicks, each
at the centre of the largest error region of the current mask, all in image pixels; after each
click the IoU with the true mask is recorded. NoC@t is the number of clicks at which the IoU first
reaches t (``max_clicks`` when it never does). Any method that turns a list of clicks into a mask
can be measured: the network (``NetworkMethod``) or the no-learning GrabCut baseline.
Numpy/OpenCV only; the network method imports torch through ``predict`` when it is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from usgen_desktop.assist.clicks import Click, iou, next_click


class InteractiveMethod(Protocol):
    """Something a simulated user can click on: ``start`` an image, then ``click`` repeatedly."""

    def start(self, image: np.ndarray) -> None: ...

    def click(self, click: Click) -> np.ndarray: ...


class NetworkMethod:
    """The click-to-mask network through an ``AssistSession`` (what the GUI runs)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.session: Any = None

    def start(self, image: np.ndarray) -> None:
        from usgen_desktop.assist.predict import AssistSession

        self.session = AssistSession(self.model, image)

    def click(self, click: Click) -> np.ndarray:
        return self.session.add_click(click)


class GrabCutMethod:
    """GrabCut (Rother et al. 2004) from the same clicks: no learning, only colour statistics.

    Positive clicks are sure foreground (disks of ``radius`` px) with a probable-foreground disk
    of ``reach`` x the image's longer side around each; negative clicks are sure background;
    everything else probable background. Recomputed from all clicks after each click. Works on
    the image shrunk to ``max_side`` pixels (None: full size) for speed; the mask comes back at
    the image's size."""

    def __init__(self, radius: int = 5, reach: float = 0.12, iterations: int = 5,
                 max_side: int | None = None) -> None:
        self.radius, self.reach, self.iterations = radius, reach, iterations
        self.max_side = max_side
        self.image: np.ndarray | None = None
        self.shape: tuple[int, int] = (0, 0)
        self.scale = 1.0
        self.clicks: list[Click] = []

    def start(self, image: np.ndarray) -> None:
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        self.shape = gray.shape[:2]
        self.scale = 1.0
        if self.max_side and max(self.shape) > self.max_side:
            self.scale = self.max_side / max(self.shape)
            size = (max(1, round(self.shape[1] * self.scale)),
                    max(1, round(self.shape[0] * self.scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        self.image = cv2.cvtColor(gray.astype(np.uint8), cv2.COLOR_GRAY2BGR)
        self.clicks = []

    def click(self, click: Click) -> np.ndarray:
        assert self.image is not None
        s = self.scale
        self.clicks.append(Click((click.x + 0.5) * s - 0.5, (click.y + 0.5) * s - 0.5,
                                 click.inside))
        mask = self._segment()
        if s == 1.0:
            return mask
        h, w = self.shape
        return cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0

    def _segment(self) -> np.ndarray:
        assert self.image is not None
        h, w = self.image.shape[:2]
        mask = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
        big = max(self.radius + 1, int(round(self.reach * max(h, w))))
        for c in self.clicks:
            if c.inside:
                cv2.circle(mask, (int(round(c.x)), int(round(c.y))), big, cv2.GC_PR_FGD, -1)
        for c in self.clicks:
            if not c.inside:
                cv2.circle(mask, (int(round(c.x)), int(round(c.y))), big // 2, cv2.GC_PR_BGD, -1)
        for c in self.clicks:
            value = cv2.GC_FGD if c.inside else cv2.GC_BGD
            cv2.circle(mask, (int(round(c.x)), int(round(c.y))), self.radius, value, -1)
        if not (mask == cv2.GC_FGD).any():
            return np.zeros((h, w), bool)
        bgd = np.zeros((1, 65), np.float64)
        fgd = np.zeros((1, 65), np.float64)
        try:
            cv2.grabCut(self.image, mask, None, bgd, fgd, self.iterations, cv2.GC_INIT_WITH_MASK)
        except cv2.error:  # degenerate colour model (e.g. a flat image): keep the sure pixels
            pass
        return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


@dataclass
class CurveResult:
    """IoU after each click (length ``max_clicks``) for one image."""

    name: str
    ious: list[float]

    def noc(self, threshold: float) -> int:
        for k, v in enumerate(self.ious, start=1):
            if v >= threshold:
                return k
        return len(self.ious)


def click_curve(method: InteractiveMethod, image: np.ndarray, gt: np.ndarray, name: str = "",
                max_clicks: int = 20, stop_at: float = 1.01, min_clicks: int = 5
                ) -> CurveResult:
    """Run the simulated user on one image; IoU after each of ``max_clicks`` clicks.

    Once the IoU reaches ``stop_at`` after at least ``min_clicks`` clicks (or no error is
    left) the rest of the curve repeats it, as in RITM's protocol: a user stops clicking when
    the mask is right. NoC up to ``stop_at`` and IoU up to ``min_clicks`` are unaffected."""
    gt = gt.astype(bool)
    method.start(image)
    pred = np.zeros_like(gt)
    ious: list[float] = []
    while len(ious) < max_clicks:
        c = next_click(gt, pred)
        if c is None:
            break
        pred = method.click(Click(float(c[0]), float(c[1]), c[2]))
        ious.append(iou(pred, gt))
        if ious[-1] >= stop_at and len(ious) >= min_clicks:
            break
    last = ious[-1] if ious else 1.0
    ious += [last] * (max_clicks - len(ious))
    return CurveResult(name, ious)


def summarise(curves: Sequence[CurveResult], thresholds: Sequence[float] = (0.85, 0.90),
              at: Sequence[int] = (1, 3, 5)) -> dict[str, float]:
    """Mean NoC@t (keys 'noc85', 'noc90'), mean IoU after k clicks ('iou@1', ...), and the
    share of images that never reach 0.90 within the click limit ('fail90')."""
    out: dict[str, float] = {"n": float(len(curves))}
    for t in thresholds:
        out[f"noc{round(t * 100)}"] = float(np.mean([c.noc(t) for c in curves]))
    for k in (k for k in at if curves and k <= len(curves[0].ious)):
        out[f"iou@{k}"] = float(np.mean([c.ious[k - 1] for c in curves]))
    out["fail90"] = float(np.mean([max(c.ious) < 0.90 for c in curves]))
    return out
