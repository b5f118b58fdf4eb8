"""Mask fidelity: does a synthetic image show what its label map says?

A segmenter trained on real images only is applied to each synthetic image; the Dice between
its prediction and the label map the image was generated from is the score. Put it beside the
same segmenter's Dice on held-out real images: a synthetic set scoring far below that draws
anatomy the real-trained model cannot find where the label map put it.
"""

from __future__ import annotations

from typing import Any

from usgen_desktop.core.tasks import CancelToken
from usgen_desktop.evaluation.dice import set_dice
from usgen_desktop.evaluation.prepare import EvalSet
from usgen_desktop.evaluation.segmentation import TrainedSegmenter, predict


def mask_fidelity(segmenter: TrainedSegmenter, synthetic: EvalSet,
                  cancel: CancelToken | None = None) -> dict[str, Any]:
    """Dice of the real-trained segmenter's predictions on synthetic images against the
    label maps they were generated from, overall and per image class."""
    labels = list(range(1, segmenter.n_classes))
    pred = predict(segmenter, synthetic.images, cancel=cancel)
    out = set_dice(pred, synthetic.masks, labels)
    out["n_images"] = int(len(synthetic))
    by_class: dict[str, Any] = {}
    for klass in sorted({c for c in synthetic.classes if c}):
        idx = [i for i, c in enumerate(synthetic.classes) if c == klass]
        by_class[klass] = set_dice(pred[idx], synthetic.masks[idx], labels)["mean"]
    if by_class:
        out["by_class"] = by_class
    return out
